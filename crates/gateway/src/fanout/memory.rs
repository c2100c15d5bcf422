//! In-process fan-out: the single-machine default. Every gateway attached to the same
//! [`InProcessBus`] receives the events of the rooms it subscribed to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytestring::ByteString;
use chat_model::RoomId;
use tokio::sync::mpsc;

use super::{FanOut, FanOutError, SIGNAL_QUEUE, Signal};
use crate::counts::RefCounts;

/// The shared bus; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct InProcessBus {
    members: Arc<Mutex<Vec<Arc<Member>>>>,
}

#[derive(Debug)]
struct Member {
    subscriptions: RefCounts<RoomId>,
    signals: mpsc::Sender<Signal>,
    /// Set while a resync for dropped events is on its way, so a burst of drops queues
    /// one resync, not one per event.
    resync_pending: AtomicBool,
}

impl InProcessBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches one gateway: its fan-out handle and the signals it receives.
    pub fn attach(&self) -> (InProcessFanOut, mpsc::Receiver<Signal>) {
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        let member = Arc::new(Member {
            subscriptions: RefCounts::default(),
            signals: tx,
            resync_pending: AtomicBool::new(false),
        });
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(member.clone());
        let fanout = InProcessFanOut {
            bus: self.clone(),
            me: member,
        };
        (fanout, rx)
    }
}

/// One gateway's handle on an [`InProcessBus`].
#[derive(Debug)]
pub struct InProcessFanOut {
    bus: InProcessBus,
    me: Arc<Member>,
}

impl InProcessFanOut {
    /// A gateway on a bus of its own.
    pub fn standalone() -> (Self, mpsc::Receiver<Signal>) {
        InProcessBus::new().attach()
    }
}

impl Drop for InProcessFanOut {
    fn drop(&mut self) {
        let mut members = self.bus.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|m| !Arc::ptr_eq(m, &self.me));
    }
}

#[async_trait]
impl FanOut for InProcessFanOut {
    async fn subscribe(&self, room: &RoomId) -> Result<(), FanOutError> {
        self.me.subscriptions.add(room);
        Ok(())
    }

    async fn unsubscribe(&self, room: &RoomId) -> Result<(), FanOutError> {
        self.me.subscriptions.remove(room);
        Ok(())
    }

    async fn publish(&self, room: &RoomId, payload: ByteString) -> Result<(), FanOutError> {
        let members: Vec<Arc<Member>> = self
            .bus
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for member in members {
            if !member.subscriptions.contains(room) {
                continue;
            }
            let event = Signal::Event {
                room: room.clone(),
                payload: payload.clone(),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = member.signals.try_send(event)
                && !member.resync_pending.swap(true, Ordering::AcqRel)
            {
                // The receiving gateway is behind: drop, and make sure it resyncs once it
                // catches up. A full queue cannot take the resync either, so spawn it.
                let member = member.clone();
                tokio::spawn(async move {
                    let _ = member.signals.send(Signal::Resync).await;
                    member.resync_pending.store(false, Ordering::Release);
                });
            }
        }
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }
}
