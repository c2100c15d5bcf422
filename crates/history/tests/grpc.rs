//! The gRPC surface, end to end: a real `HistoryServer` on port 0 over an embedded store,
//! driven by the generated tonic client.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_history::store::embedded::EmbeddedStore;
use chat_history::store::mongo::MongoStore;
use chat_history::{HistoryServer, MessageStore};
use chat_metrics::Metrics;
use chat_proto::history::history_client::HistoryClient;
use chat_proto::history::history_server::SERVICE_NAME as SERVICE;
use chat_proto::history::{AppendRequest, ListRequest};
use chat_testkit::fault_proxy::{Fault, FaultProxy};
use chat_testkit::grpc::{self, Served};
use chat_testkit::mongo::{MongoServer, unique_db_name};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// A `HistoryServer` over `store` on port 0, served until dropped.
async fn serve(store: Arc<dyn MessageStore>) -> Served {
    let mut metrics = Metrics::new("test");
    let bound = HistoryServer::bind(([127, 0, 0, 1], 0).into(), store, &mut metrics);
    let server = bound.await.expect("bind");
    grpc::serve(server.local_addr(), |stop| server.run(stop))
}

/// A running server over a store in a temp dir.
struct Running {
    served: Served,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        Self {
            served: serve(store).await,
            _dir: dir,
        }
    }

    async fn channel(&self) -> Channel {
        self.served.channel().await
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

fn append(room: &str, sender: &str, client_id: &str, body: &str) -> AppendRequest {
    AppendRequest {
        room: room.into(),
        sender: sender.into(),
        client_id: client_id.into(),
        body: body.into(),
    }
}

fn list(room: &str, before: Option<u64>, after: Option<u64>, limit: u32) -> ListRequest {
    ListRequest {
        room: room.into(),
        before,
        after,
        limit,
    }
}

#[tokio::test]
async fn append_list_and_duplicates() {
    let server = Running::start().await;
    let mut client = HistoryClient::new(server.channel().await);

    let first = client
        .append(append("general", "alice", "c1", "hello ✓"))
        .await
        .expect("append")
        .into_inner();
    assert!(!first.duplicate);
    let stored = first.message.expect("message");
    assert_eq!(stored.seq, 1);
    assert_eq!(stored.sender, "alice");
    assert_eq!(stored.body, "hello ✓");
    assert!(!stored.id.is_empty());
    assert!(stored.ts_ms > 0);

    let again = client
        .append(append("general", "alice", "c1", "resent"))
        .await
        .expect("resend")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.message.as_ref(), Some(&stored));

    for i in 2..=60 {
        let reply = client
            .append(append("general", "bob", &format!("c{i}"), "x"))
            .await
            .expect("append")
            .into_inner();
        assert_eq!(reply.message.expect("message").seq, i);
    }

    // limit 0 means 50, newest first page returned oldest first.
    let latest = client
        .list(list("general", None, None, 0))
        .await
        .expect("list")
        .into_inner();
    let seqs: Vec<u64> = latest.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (11..=60).collect::<Vec<_>>());
    assert!(latest.has_more);
    assert_eq!(latest.last_seq, 60);

    let back = client
        .list(list("general", Some(11), None, 20))
        .await
        .expect("list before")
        .into_inner();
    assert_eq!(back.messages.first().map(|m| m.seq), Some(1));
    assert_eq!(back.messages.len(), 10);
    assert!(!back.has_more);
    assert_eq!(back.messages[0], stored);

    let catch_up = client
        .list(list("general", None, Some(55), 1000))
        .await
        .expect("list after")
        .into_inner();
    let seqs: Vec<u64> = catch_up.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![56, 57, 58, 59, 60]);
    assert!(!catch_up.has_more);

    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument() {
    let server = Running::start().await;
    let mut client = HistoryClient::new(server.channel().await);

    let bad_appends = [
        append("", "alice", "c1", "x"),
        append("no spaces", "alice", "c1", "x"),
        append("dm:bob:alice", "alice", "c1", "x"),
        append("general", "", "c1", "x"),
        append("general", "al ice", "c1", "x"),
        append("general", "alice", "", "x"),
        append("general", "alice", &"c".repeat(65), "x"),
        append(
            "general",
            "alice",
            "c1",
            &"x".repeat(chat_model::limits::MAX_BODY_BYTES + 1),
        ),
    ];
    for req in bad_appends {
        let what = format!(
            "{:?}",
            (&req.room, &req.sender, &req.client_id, req.body.len())
        );
        let status = client.append(req).await.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(!status.message().is_empty());
    }

    let bad_lists = [
        list("", None, None, 10),
        list("general", Some(5), Some(1), 10),
        list("general", None, None, 1001),
    ];
    for req in bad_lists {
        let what = format!("{req:?}");
        let status = client.list(req).await.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    // The largest allowed page is fine, also on an empty room.
    let empty = client
        .list(list("general", None, None, 1000))
        .await
        .expect("max limit")
        .into_inner();
    assert!(empty.messages.is_empty());
    assert_eq!(empty.last_seq, 0);

    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let server = Running::start().await;
    grpc::assert_health_serving(&server.channel().await, SERVICE).await;
    server.stop().await;
}

#[tokio::test]
async fn health_follows_the_store() {
    if std::env::var_os("CHAT_TEST_MONGODB_URL").is_some() {
        // An external server cannot be stopped by the test.
        return;
    }
    let mongo = chat_testkit::mongo::MongoServer::start()
        .await
        .expect("start MongoDB server");
    let db = chat_testkit::mongo::unique_db_name();
    let store = chat_history::store::mongo::MongoStore::connect(&mongo.url(), &db)
        .await
        .expect("connect");
    let served = serve(Arc::new(store)).await;
    // Killing the database makes pings fail (within the 2 s server selection timeout).
    grpc::assert_health_follows(&served.channel().await, SERVICE, mongo, "MongoDB").await;
    served.join().await;
}

/// The gateway's deadline on a history call (`CALL_TIMEOUT`, crates/gateway/src/history.rs).
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// `message` with the gateway's call deadline (sent as `grpc-timeout`).
fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

/// The outcome of `call` and how long it took; fails the test if it outlives the
/// deadline by a second (the server did not answer in time and nothing cut it short).
async fn timed<T>(
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> (Result<T, tonic::Status>, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(CALL_DEADLINE + Duration::from_secs(1), call)
        .await
        .expect("the call hung past its deadline");
    (outcome, started.elapsed())
}

/// A silent cut between history and MongoDB (docs/architecture.md, "Failure modes:
/// silent partitions"): nothing forwarded either way, nothing reset. Appends and reads
/// answer UNAVAILABLE within the gateway's call deadline (the driver's own server checks
/// end them: not a hang, not INTERNAL), health turns NOT_SERVING, SERVING again within
/// 5 s of the heal, and the sends resent after the heal are stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_cut_answers_unavailable_and_heals() {
    let mongo = MongoServer::start().await.expect("start MongoDB server");
    let Some(upstream) = mongo.addr() else {
        eprintln!("skipped: no proxy can be put in front of CHAT_TEST_MONGODB_URL");
        return;
    };
    let mut proxy = FaultProxy::start(upstream).await.expect("proxy");
    let url = format!("mongodb://{}", proxy.addr());
    let store = MongoStore::connect(&url, &unique_db_name())
        .await
        .expect("connect");
    let served = serve(Arc::new(store)).await;
    let channel = served.channel().await;
    let health = |want, within| grpc::wait_health(&channel, SERVICE, want, within);
    health(ServingStatus::Serving, Duration::from_secs(10))
        .await
        .expect("serving");
    let mut client = HistoryClient::new(channel.clone());
    let send = |id: &str| with_deadline(append("cut", "alice", id, "hi"));
    let first = client
        .append(send("c1"))
        .await
        .expect("append before the cut");
    assert_eq!(first.into_inner().message.map(|m| m.seq), Some(1));

    proxy.set(Fault::Blackhole);
    let cut = Instant::now();
    // c2 goes out on a pooled connection that fell silent, c3 once the driver has
    // marked the server unreachable, then a read.
    let mut took = Vec::new();
    for id in ["c2", "c3"] {
        let (outcome, elapsed) = timed(client.append(send(id))).await;
        let status = outcome.expect_err("the store is cut off");
        assert_eq!(status.code(), Code::Unavailable, "append {id}: {status:?}");
        took.push(elapsed);
    }
    let (outcome, elapsed) = timed(client.list(with_deadline(list("cut", None, None, 10)))).await;
    let status = outcome.expect_err("the store is cut off");
    assert_eq!(status.code(), Code::Unavailable, "list: {status:?}");
    took.push(elapsed);
    for elapsed in &took {
        assert!(
            *elapsed < CALL_DEADLINE,
            "answered after {elapsed:?}: {took:?}"
        );
    }
    health(ServingStatus::NotServing, Duration::from_secs(10))
        .await
        .expect("NOT_SERVING while the store is cut off");
    let detected = cut.elapsed();

    proxy.set(Fault::Pass);
    let healed = Instant::now();
    health(ServingStatus::Serving, Duration::from_secs(5))
        .await
        .expect("SERVING within 5 s of the heal");
    let recovered = healed.elapsed();
    // The clients resend after `unavailable`: each message stored once (an insert held
    // by the cut and applied after the heal makes its resend a duplicate).
    let mut seqs = Vec::new();
    for id in ["c2", "c3"] {
        let reply = client.append(send(id)).await.expect("acked after the heal");
        seqs.extend(reply.into_inner().message.map(|m| m.seq));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [2, 3]);
    let page = client
        .list(list("cut", None, None, 10))
        .await
        .expect("list after the heal")
        .into_inner();
    let ids: Vec<_> = page.messages.iter().map(|m| m.client_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    eprintln!(
        "history <-> MongoDB cut: unavailable after {took:?} (append on a silent \
         connection, append, list), NOT_SERVING {detected:?} after the cut, SERVING \
         {recovered:?} after the heal"
    );
    served.join().await;
}

/// Guarantee 8 (docs/architecture.md) for history: on shutdown it reports NOT_SERVING
/// first and keeps serving for a moment, so health-checking clients move away before
/// connections are refused.
#[tokio::test]
async fn shutdown_reports_not_serving_before_it_stops_serving() {
    let server = Running::start().await;
    let channel = server.channel().await;
    let health = |want, within| grpc::wait_health(&channel, SERVICE, want, within);
    health(ServingStatus::Serving, Duration::from_secs(10))
        .await
        .expect("serving");

    server.served.cancel();
    health(ServingStatus::NotServing, Duration::from_secs(5))
        .await
        .expect("NOT_SERVING reported while still answering");
    // Still serving calls during the lead time.
    let mut client = HistoryClient::new(channel.clone());
    let reply = client
        .append(append("drain", "alice", "c1", "still stored"))
        .await
        .expect("calls still served after NOT_SERVING");
    assert_eq!(reply.into_inner().message.map(|m| m.seq), Some(1));
    server.stop().await;
}
