//! A fault-injecting TCP proxy: put it between two services (a gateway and Redis, a
//! gateway and history, history and MongoDB) and break the link the way networks break,
//! since this kernel has no `netem`:
//!
//! - [`Fault::Blackhole`]: nothing is forwarded in either direction and nothing is closed
//!   or reset, like a dropped conntrack entry or a cloud network blip. Bytes already in
//!   flight are held, not lost, and flow on when the link heals (TCP retransmission
//!   would deliver them too); new connections are accepted by the kernel but carry
//!   nothing.
//! - [`Fault::Reset`]: every open connection is reset (RST) and new ones are reset at
//!   once, like a restarted middlebox.
//! - [`Fault::Latency`]: every chunk is delayed by the given time in each direction,
//!   order kept.
//! - [`FaultProxy::flap`]: blackhole and pass in turn, for link flapping.
//!
//! The proxy listens on a free loopback port; point the client at
//! [`FaultProxy::addr`] instead of the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Forward nothing, close nothing; held bytes flow on after the heal.
    Blackhole,
    /// Reset every connection, open or new.
    Reset,
    /// Forward every chunk after this delay, in each direction.
    Latency(Duration),
}

/// Chunks read but not yet written, per direction: bounded, so a blackholed link stops
/// reading (and the sender's TCP window closes) instead of buffering without end.
const IN_FLIGHT_CHUNKS: usize = 64;
/// Size of one read.
const CHUNK: usize = 16 * 1024;

/// A running proxy; stops (and resets its connections) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicU64>,
    accept_task: JoinHandle<()>,
    flap_task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free loopback port, passing everything.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept(
            listener,
            upstream,
            fault.subscribe(),
            accepted.clone(),
        ));
        Ok(Self {
            addr,
            upstream,
            fault,
            accepted,
            accept_task,
            flap_task: None,
        })
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server behind the proxy.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Connections accepted so far (reconnect storms show here).
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Applies `fault` to every open and future connection (and stops flapping).
    pub fn set(&mut self, fault: Fault) {
        if let Some(task) = self.flap_task.take() {
            task.abort();
        }
        self.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Blackholes the link for `cut`, passes for `up`, and so on until `total` has
    /// passed, then passes. [`FaultProxy::set`] stops it early.
    pub fn flap(&mut self, cut: Duration, up: Duration, total: Duration) {
        self.set(Fault::Pass);
        let fault = self.fault.clone();
        self.flap_task = Some(tokio::spawn(async move {
            let end = Instant::now() + total;
            while Instant::now() < end {
                fault.send_replace(Fault::Blackhole);
                tokio::time::sleep_until((Instant::now() + cut).min(end)).await;
                fault.send_replace(Fault::Pass);
                tokio::time::sleep_until((Instant::now() + up).min(end)).await;
            }
            fault.send_replace(Fault::Pass);
        }));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(task) = self.flap_task.take() {
            task.abort();
        }
        // Connections watch the sender: dropping it (with the struct) ends them.
        self.fault.send_replace(Fault::Reset);
        self.accept_task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    accepted: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(client, upstream, fault.clone()));
    }
}

/// One proxied connection: connects upstream (once the link lets it), then pumps both
/// directions until either side closes or a reset is ordered.
async fn connection(client: TcpStream, upstream: SocketAddr, mut fault: watch::Receiver<Fault>) {
    // Reset, not FIN, whenever the proxy drops a socket: a broken link, not a goodbye.
    let _ = client.set_zero_linger();
    let _ = client.set_nodelay(true);
    if !wait_forwarding(&mut fault).await {
        return;
    }
    let server = tokio::select! {
        connected = TcpStream::connect(upstream) => match connected {
            Ok(server) => server,
            Err(_) => return,
        },
        () = reset_ordered(fault.clone()) => return,
    };
    let mut client = client;
    let mut server = server;
    let _ = server.set_zero_linger();
    let _ = server.set_nodelay(true);
    // Borrowed halves: dropping them sends nothing (owned write halves would send a FIN
    // on drop), so a reset is a reset when the streams themselves drop.
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let pumps = async {
        tokio::join!(
            pump(client_read, server_write, fault.clone()),
            pump(server_read, client_write, fault.clone()),
        )
    };
    tokio::select! {
        _ = pumps => {}
        () = reset_ordered(fault.clone()) => {}
    }
}

/// Completes when the fault becomes [`Fault::Reset`] (or the proxy is gone).
async fn reset_ordered(mut fault: watch::Receiver<Fault>) {
    let _ = fault.wait_for(|f| *f == Fault::Reset).await;
}

/// Waits while the link is blackholed; `false` when it is reset or the proxy is gone.
async fn wait_forwarding(fault: &mut watch::Receiver<Fault>) -> bool {
    match fault.wait_for(|f| *f != Fault::Blackhole).await {
        Ok(f) => *f != Fault::Reset,
        Err(_) => false,
    }
}

/// One direction: a reader that stamps each chunk with when it may be written, and a
/// writer that holds it until then and while the link is blackholed.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    fault: watch::Receiver<Fault>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let mut read_fault = fault.clone();
    let reader = async move {
        let mut buf = vec![0_u8; CHUNK];
        loop {
            if !wait_forwarding(&mut read_fault).await {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = match *read_fault.borrow() {
                Fault::Latency(delay) => delay,
                _ => Duration::ZERO,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let mut write_fault = fault;
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if !wait_forwarding(&mut write_fault).await {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The reader saw the end of the stream: pass the FIN on.
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0_u8; msg.len()];
        tokio::time::timeout(within, s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf)
    }

    #[tokio::test]
    async fn blackhole_holds_bytes_and_heals() {
        let mut proxy = FaultProxy::start(echo().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let short = Duration::from_millis(300);
        assert_eq!(
            round_trip(&mut s, b"one", short).await.as_deref(),
            Some(&b"one"[..])
        );
        proxy.set(Fault::Blackhole);
        assert_eq!(round_trip(&mut s, b"two", short).await, None, "blackholed");
        proxy.set(Fault::Pass);
        // "two" was held, not lost, and comes back first.
        let mut buf = [0_u8; 3];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("healed in time")
            .expect("read");
        assert_eq!(&buf, b"two");
        assert_eq!(
            round_trip(&mut s, b"three", short).await.as_deref(),
            Some(&b"three"[..])
        );
    }

    #[tokio::test]
    async fn new_connections_carry_nothing_while_blackholed() {
        let mut proxy = FaultProxy::start(echo().await).await.expect("proxy");
        proxy.set(Fault::Blackhole);
        let mut s = TcpStream::connect(proxy.addr())
            .await
            .expect("kernel accepts");
        assert_eq!(
            round_trip(&mut s, b"hi", Duration::from_millis(300)).await,
            None
        );
        proxy.set(Fault::Pass);
        let mut buf = [0_u8; 2];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("healed in time")
            .expect("read");
        assert_eq!(&buf, b"hi");
    }

    #[tokio::test]
    async fn reset_breaks_open_and_new_connections() {
        let mut proxy = FaultProxy::start(echo().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let within = Duration::from_secs(2);
        assert!(round_trip(&mut s, b"x", within).await.is_some());
        proxy.set(Fault::Reset);
        let mut buf = [0_u8; 1];
        let read = tokio::time::timeout(within, s.read(&mut buf))
            .await
            .expect("the reset arrives at once");
        match read {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            Ok(n) => panic!("expected a reset, read {n} bytes"),
        }
        let mut fresh = TcpStream::connect(proxy.addr())
            .await
            .expect("kernel accepts");
        assert_eq!(round_trip(&mut fresh, b"y", within).await, None);
        proxy.set(Fault::Pass);
        let mut healed = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(round_trip(&mut healed, b"z", within).await.is_some());
        assert_eq!(proxy.connections_accepted(), 3);
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let mut proxy = FaultProxy::start(echo().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        proxy.set(Fault::Latency(Duration::from_millis(150)));
        let start = Instant::now();
        assert!(
            round_trip(&mut s, b"slow", Duration::from_secs(3))
                .await
                .is_some()
        );
        let took = start.elapsed();
        // 150 ms out and 150 ms back.
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn flapping_alternates_and_ends_passing() {
        let mut proxy = FaultProxy::start(echo().await).await.expect("proxy");
        let mut seen = watch_faults(&proxy);
        proxy.flap(
            Duration::from_millis(100),
            Duration::from_millis(100),
            Duration::from_millis(700),
        );
        let mut cuts = 0;
        // Each phase lasts 100 ms: 300 ms without a change means the flapping is over.
        while let Ok(changed) =
            tokio::time::timeout(Duration::from_millis(300), seen.changed()).await
        {
            changed.expect("proxy alive");
            if *seen.borrow_and_update() == Fault::Blackhole {
                cuts += 1;
            }
        }
        assert!((3..=4).contains(&cuts), "{cuts} cuts");
        assert_eq!(proxy.fault(), Fault::Pass);
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(
            round_trip(&mut s, b"ok", Duration::from_secs(2))
                .await
                .is_some()
        );
    }

    fn watch_faults(proxy: &FaultProxy) -> watch::Receiver<Fault> {
        proxy.fault.subscribe()
    }
}
