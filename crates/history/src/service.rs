//! The gRPC face of the store: `chat.history.v1.History`.
//!
//! Requests come from other services, so every field is validated back into model types
//! here; the store only ever sees valid values.

use std::sync::Arc;

use chat_model::limits::{DEFAULT_HISTORY_LIMIT, MAX_BODY_BYTES};
use chat_model::{ClientMsgId, RoomId, UserId};
use chat_proto::history::history_server::History;
use chat_proto::history::{AppendReply, AppendRequest, ListReply, ListRequest, StoredMessage};
use tonic::{Request, Response, Status};

use crate::store::{MessageStore, NewMessage, Page};

/// Largest `limit` a `List` request may ask for (the proto's contract). Larger values are
/// refused with `INVALID_ARGUMENT` rather than clamped, so a caller never mistakes a short
/// page for the end of a room.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Implements the generated `History` trait on any [`MessageStore`].
#[derive(Debug, Clone)]
pub struct HistoryService {
    /// The backend chosen at start-up.
    store: Arc<dyn MessageStore>,
}

impl HistoryService {
    /// Serves `store`.
    pub fn new(store: Arc<dyn MessageStore>) -> Self {
        Self { store }
    }
}

fn room(s: &str) -> Result<RoomId, Status> {
    RoomId::parse(s).map_err(|e| Status::invalid_argument(format!("invalid room: {e}")))
}

/// Validates an `Append` request into the message to store.
fn new_message(req: AppendRequest) -> Result<NewMessage, Status> {
    let room = room(&req.room)?;
    let from = UserId::parse(&req.sender)
        .map_err(|e| Status::invalid_argument(format!("invalid sender: {e}")))?;
    let client_id = ClientMsgId::parse(&req.client_id)
        .map_err(|e| Status::invalid_argument(format!("invalid client_id: {e}")))?;
    // The gateway enforces the same limit; history enforces it again because it is the
    // store's last line of defence against oversized documents.
    if req.body.len() > MAX_BODY_BYTES {
        return Err(Status::invalid_argument(format!(
            "body is {} bytes, the limit is {MAX_BODY_BYTES}",
            req.body.len()
        )));
    }
    Ok(NewMessage {
        room,
        from,
        client_id,
        body: req.body,
    })
}

/// Validates a `List` request into the room, page and page size.
fn list_query(req: &ListRequest) -> Result<(RoomId, Page, u32), Status> {
    let room = room(&req.room)?;
    let page = match (req.before, req.after) {
        (None, None) => Page::Latest,
        (Some(before), None) => Page::Before(before),
        (None, Some(after)) => Page::After(after),
        (Some(_), Some(_)) => {
            return Err(Status::invalid_argument(
                "at most one of before and after may be set",
            ));
        }
    };
    let limit = match req.limit {
        0 => DEFAULT_HISTORY_LIMIT,
        n if n <= MAX_LIST_LIMIT => n,
        n => {
            return Err(Status::invalid_argument(format!(
                "limit is {n}, it must be 1 to {MAX_LIST_LIMIT} (0 means {DEFAULT_HISTORY_LIMIT})"
            )));
        }
    };
    Ok((room, page, limit))
}

#[tonic::async_trait]
impl History for HistoryService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendReply>, Status> {
        let msg = new_message(request.into_inner())?;
        let appended = self.store.append(msg).await?;
        Ok(Response::new(AppendReply {
            message: Some(StoredMessage::from(&appended.message)),
            duplicate: appended.duplicate,
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let (room, page, limit) = list_query(request.get_ref())?;
        let listed = self.store.list(&room, page, limit).await?;
        Ok(Response::new(ListReply {
            messages: listed.messages.iter().map(StoredMessage::from).collect(),
            has_more: listed.has_more,
            last_seq: listed.last_seq,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(before: Option<u64>, after: Option<u64>, limit: u32) -> ListRequest {
        ListRequest {
            room: "general".into(),
            before,
            after,
            limit,
        }
    }

    #[test]
    fn list_limits() {
        let (_, page, limit) = list_query(&list(None, None, 0)).expect("valid");
        assert_eq!((page, limit), (Page::Latest, DEFAULT_HISTORY_LIMIT));
        let (_, page, limit) = list_query(&list(Some(9), None, 1000)).expect("valid");
        assert_eq!((page, limit), (Page::Before(9), 1000));
        let (_, page, _) = list_query(&list(None, Some(3), 1)).expect("valid");
        assert_eq!(page, Page::After(3));
        let err = list_query(&list(None, None, 1001)).expect_err("too large");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = list_query(&list(Some(1), Some(1), 10)).expect_err("both");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn append_validation() {
        let ok = AppendRequest {
            room: "general".into(),
            sender: "alice".into(),
            client_id: "c1".into(),
            body: "hi".into(),
        };
        assert!(new_message(ok.clone()).is_ok());
        for bad in [
            AppendRequest {
                room: "a/b".into(),
                ..ok.clone()
            },
            AppendRequest {
                sender: String::new(),
                ..ok.clone()
            },
            AppendRequest {
                client_id: "a\nb".into(),
                ..ok.clone()
            },
            AppendRequest {
                body: "x".repeat(MAX_BODY_BYTES + 1),
                ..ok.clone()
            },
        ] {
            let err = new_message(bad).expect_err("invalid");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
    }
}
