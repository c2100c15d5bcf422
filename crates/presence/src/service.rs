//! The gRPC face of the store: `chat.presence.v1.Presence`.
//!
//! Requests come from gateways, so every id is validated back into model types here (and
//! gateway ids with [`check_gateway_id`]); the store only ever sees valid values.

use std::sync::Arc;

use chat_model::limits::MAX_PRESENCE_USERS;
use chat_model::{RoomId, UserId};
use chat_proto::presence::presence_server::Presence;
use chat_proto::presence::{
    HeartbeatReply, HeartbeatRequest, QueryReply, QueryRequest, RoomRequest, RoomTransition,
    TakeExitsReply, TakeExitsRequest, Transition, UserRequest,
};
use tonic::{Request, Response, Status};

use crate::store::{PresenceError, PresenceStore, check_gateway_id};

/// Most users one `Query` may ask about (the gateway's `presence` frame limit). More are
/// refused with `INVALID_ARGUMENT` rather than truncated.
pub const MAX_QUERY_USERS: usize = MAX_PRESENCE_USERS;

/// Offline events one `TakeExits` reply carries at most (about 0.5 MiB with the longest
/// ids, far below the 4 MiB message limit); the rest goes to the next claim.
pub const MAX_EXITS_PER_CLAIM: usize = 10_000;

/// The one place where store errors become gRPC statuses.
impl From<PresenceError> for Status {
    fn from(e: PresenceError) -> Self {
        match e {
            PresenceError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "presence store unavailable");
                Status::unavailable(msg)
            }
            PresenceError::Internal(msg) => {
                tracing::error!(error = %msg, "presence store failure");
                Status::internal(msg)
            }
        }
    }
}

/// Implements the generated `Presence` trait on any [`PresenceStore`].
#[derive(Debug, Clone)]
pub struct PresenceService {
    /// The backend chosen at start-up.
    store: Arc<dyn PresenceStore>,
}

impl PresenceService {
    /// Serves `store`.
    pub fn new(store: Arc<dyn PresenceStore>) -> Self {
        Self { store }
    }
}

fn gateway(s: &str) -> Result<&str, Status> {
    check_gateway_id(s).map_err(|e| Status::invalid_argument(format!("invalid gateway: {e}")))?;
    Ok(s)
}

fn user(s: &str) -> Result<UserId, Status> {
    UserId::parse(s).map_err(|e| Status::invalid_argument(format!("invalid user {s:?}: {e}")))
}

fn room(s: &str) -> Result<RoomId, Status> {
    RoomId::parse(s).map_err(|e| Status::invalid_argument(format!("invalid room: {e}")))
}

fn users(list: &[String]) -> Result<Vec<UserId>, Status> {
    list.iter().map(|u| user(u)).collect()
}

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn attach(&self, request: Request<UserRequest>) -> Result<Response<Transition>, Status> {
        let req = request.get_ref();
        let (gw, user) = (gateway(&req.gateway)?, user(&req.user)?);
        let changed = self.store.connect(gw, &user).await?;
        Ok(Response::new(Transition {
            changed,
            rooms: Vec::new(),
        }))
    }

    async fn detach(&self, request: Request<UserRequest>) -> Result<Response<Transition>, Status> {
        let req = request.get_ref();
        let (gw, user) = (gateway(&req.gateway)?, user(&req.user)?);
        let offline = self.store.disconnect(gw, &user).await?;
        Ok(Response::new(Transition {
            changed: offline.is_some(),
            rooms: offline
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }))
    }

    async fn enter_room(
        &self,
        request: Request<RoomRequest>,
    ) -> Result<Response<RoomTransition>, Status> {
        let req = request.get_ref();
        let (gw, user, room) = (gateway(&req.gateway)?, user(&req.user)?, room(&req.room)?);
        let changed = self.store.enter_room(gw, &user, &room).await?;
        Ok(Response::new(RoomTransition { changed }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let req = request.get_ref();
        let gw = gateway(&req.gateway)?;
        let users = users(&req.users)?;
        let lease_lost = self.store.heartbeat(gw, &users).await?;
        // No sweep here: the caller has a short deadline, and the sweep of a huge dead
        // gateway would not fit in it. The server's sweeper runs it in the background.
        Ok(Response::new(HeartbeatReply {
            ttl_ms: u64::try_from(self.store.ttl().as_millis()).unwrap_or(u64::MAX),
            lease_lost,
        }))
    }

    async fn take_exits(
        &self,
        request: Request<TakeExitsRequest>,
    ) -> Result<Response<TakeExitsReply>, Status> {
        let req = request.get_ref();
        let gw = gateway(&req.gateway)?;
        // One bounded step (about a millisecond in Redis), so that exits of a gateway
        // that just expired are handed out without waiting for the background sweeper;
        // it does the rest. A failure here must not fail the claim.
        if let Err(e) = self.store.sweep().await {
            tracing::warn!(error = %e, "sweeping expired gateways failed");
        }
        let batch = self
            .store
            .take_exits(gw, req.ack, MAX_EXITS_PER_CLAIM)
            .await?;
        if !batch.exits.is_empty() {
            tracing::info!(
                gateway = gw,
                exits = batch.exits.len(),
                claim = batch.claim,
                "handed out offline events of expired gateways"
            );
        }
        Ok(Response::new(TakeExitsReply {
            claim: batch.claim,
            exits: batch
                .exits
                .into_iter()
                .map(|exit| chat_proto::presence::RoomExit {
                    room: exit.room.to_string(),
                    user: exit.user.to_string(),
                })
                .collect(),
        }))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        let req = request.get_ref();
        if req.users.len() > MAX_QUERY_USERS {
            return Err(Status::invalid_argument(format!(
                "{} users asked, at most {MAX_QUERY_USERS} per query",
                req.users.len()
            )));
        }
        let users = users(&req.users)?;
        let online = self.store.online(&users).await?;
        Ok(Response::new(QueryReply { online }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(gateway("gw-1a2b3c4d").is_ok());
        assert!(gateway("pod.ns:1").is_ok());
        for bad in ["", "a b", "a|b", "ü", &"g".repeat(65)] {
            let err = gateway(bad).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
        assert!(users(&["alice".into(), "bob".into()]).is_ok());
        assert!(users(&["alice".into(), "b b".into()]).is_err());
        assert!(room("dm:bob:alice").is_err());
    }

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(
            Status::from(PresenceError::Unavailable("down".into())).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            Status::from(PresenceError::Internal("bug".into())).code(),
            tonic::Code::Internal
        );
    }
}
