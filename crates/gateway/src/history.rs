//! The gateway's client of the history service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_metrics::{GrpcMetrics, Metered};
use chat_model::{ClientMsgId, Message, RoomId, Seq, UserId};
use chat_proto::auth::{AttachToken, InternalToken};
use chat_proto::history::history_client::HistoryClient as Grpc;
use chat_proto::history::{AppendRequest, ListRequest, StoredMessage};
use chat_runtime::grpc::{LocalService, Transport};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

use crate::error::{Backend, GatewayError};

/// How long one history call may take before the client is told `unavailable`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an HTTP/2 PING checks a connection to a backend service, also while idle:
/// a link that drops packets silently is otherwise found only by the next call's
/// deadline, and every call in between waits that deadline out.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A PING unanswered this long closes the connection; the channel connects again
/// (within `CONNECT_TIMEOUT` per attempt), so calls after a heal find a fresh one.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt to connect to a backend service may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The channel settings every gRPC client of the gateway uses (history, presence): a
/// call deadline, no Nagle, keep-alive PINGs that find a dead link in
/// [`KEEP_ALIVE_INTERVAL`] + [`KEEP_ALIVE_TIMEOUT`]. Connects lazily.
fn backend_endpoint(
    url: &str,
    call_timeout: Duration,
) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(call_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// How the gateway reaches a backend service: `local` when the service runs in this
/// process (the all-in-one), else a channel to `url` ([`backend_endpoint`]). Calls end
/// after `call_timeout` either way.
pub fn transport(
    url: &str,
    local: Option<&LocalService>,
    call_timeout: Duration,
) -> Result<Transport, tonic::transport::Error> {
    Ok(match local {
        Some(service) => Transport::Local {
            service: service.clone(),
            timeout: call_timeout,
        },
        None => Transport::Remote(backend_endpoint(url, call_timeout)?.connect_lazy()),
    })
}

/// A page read from history, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub messages: Vec<Message>,
    pub has_more: bool,
    pub last_seq: Seq,
}

/// A channel whose calls carry the internal token, if there is one.
pub type AuthChannel<C> = InterceptedService<C, AttachToken>;

/// What the gateway's gRPC clients call through: the internal token on every call, every
/// call counted and timed (`grpc_client_*`), over the network or in process.
pub type BackendChannel = AuthChannel<Metered<Transport>>;

/// Calls the history service; cheap to clone (one shared HTTP/2 channel, or the
/// service in this process).
#[derive(Debug, Clone)]
pub struct HistoryClient {
    /// Every call carries the internal token and is counted and timed (`grpc_client_*`).
    grpc: Grpc<BackendChannel>,
    /// Kept for health checks on the same connection.
    transport: Transport,
    /// The token, also on health checks: history answers a wrong one `UNAUTHENTICATED`,
    /// so `/readyz` notices it.
    token: AttachToken,
    /// Whether history's last answer to a History call was `UNAUTHENTICATED`. The health
    /// check cannot tell a *missing* token (health answers callers without one, for
    /// probes), so `/readyz` reads this too.
    token_refused: Arc<AtomicBool>,
}

impl HistoryClient {
    /// A client calling through `transport` ([`transport`]: a channel connects lazily
    /// and reconnects by itself, so the gateway starts even while history is still
    /// starting), recording every call in `metrics` and sending `token`
    /// (`CHAT_INTERNAL_TOKEN`) on every call.
    pub fn new(transport: Transport, metrics: &GrpcMetrics, token: Option<&InternalToken>) -> Self {
        let token = AttachToken::new(token);
        Self {
            grpc: Grpc::new(InterceptedService::new(
                metrics.client_channel(transport.clone()),
                token.clone(),
            )),
            transport,
            token,
            token_refused: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether history refused this gateway's internal token (missing or different) on
    /// its last History call.
    pub fn token_refused(&self) -> bool {
        self.token_refused.load(Ordering::Relaxed)
    }

    /// Notes whether a call's outcome says the token was refused, and makes a failure the
    /// client's error, naming history.
    fn note<T>(&self, result: Result<T, tonic::Status>) -> Result<T, GatewayError> {
        let refused = matches!(&result, Err(s) if s.code() == tonic::Code::Unauthenticated);
        self.token_refused.store(refused, Ordering::Relaxed);
        result.map_err(|status| GatewayError::from_status(Backend::History, &status))
    }

    /// Stores a message; returns it and whether it was a duplicate.
    pub async fn append(
        &self,
        room: &RoomId,
        from: &UserId,
        client_id: &ClientMsgId,
        body: &str,
    ) -> Result<(Message, bool), GatewayError> {
        let reply = self
            .note(
                self.grpc
                    .clone()
                    .append(AppendRequest {
                        room: room.to_string(),
                        sender: from.to_string(),
                        client_id: client_id.to_string(),
                        body: body.to_owned(),
                    })
                    .await,
            )?
            .into_inner();
        let message = reply
            .message
            .ok_or_else(|| GatewayError::Internal("history returned no message".into()))
            .and_then(convert)?;
        Ok((message, reply.duplicate))
    }

    /// Reads a page: `after` for catch-up (ascending from `after + 1`), `before` for
    /// paging back, neither for the newest messages.
    pub async fn list(
        &self,
        room: &RoomId,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: u32,
    ) -> Result<Page, GatewayError> {
        let reply = self
            .note(
                self.grpc
                    .clone()
                    .list(ListRequest {
                        room: room.to_string(),
                        before,
                        after,
                        limit,
                    })
                    .await,
            )?
            .into_inner();
        Ok(Page {
            messages: reply
                .messages
                .into_iter()
                .map(convert)
                .collect::<Result<_, _>>()?,
            has_more: reply.has_more,
            last_seq: reply.last_seq,
        })
    }

    /// The channel with the internal token attached, for health checks.
    pub fn channel(&self) -> AuthChannel<Transport> {
        InterceptedService::new(self.transport.clone(), self.token.clone())
    }
}

fn convert(m: StoredMessage) -> Result<Message, GatewayError> {
    Message::try_from(m).map_err(|e| GatewayError::Internal(e.to_string()))
}
