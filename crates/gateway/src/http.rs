//! HTTP routes: the WebSocket upgrade, the history endpoint, health and readiness,
//! `/metrics`, and the web client (see [`crate::web`]); and the middleware that counts
//! every request in `http_requests_total` / `http_request_duration_seconds`.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use chat_model::limits::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, MAX_PRESENCE_USERS};
use chat_model::{ErrorCode, RoomId, Seq, UserId};
use serde::Deserialize;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::conn::{Conn, ConnBody};
use crate::error::{GatewayError, json_error};
use crate::lane::Lane;
use crate::metrics::Refusal;
use crate::state::AppState;

/// The gRPC service name history reports in its health service.
const HISTORY_HEALTH_SERVICE: &str = "chat.history.v1.History";
/// How long `/readyz` waits for a backend.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/ws", web::get().to(websocket))
        .route("/v1/rooms/{room}/messages", web::get().to(room_messages))
        .route("/v1/presence", web::get().to(presence))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .configure(crate::account_api::routes)
        .configure(crate::web::routes);
}

/// Middleware: counts and times every request by method, route template (`unmatched`
/// when no route took it) and status. A WebSocket upgrade counts when it is answered
/// (101), not when the connection ends.
pub async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let http = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.http.clone());
    let method = req.method().clone();
    let result = next.call(req).await;
    if let Some(http) = http {
        let (endpoint, status) = match &result {
            Ok(res) => (res.request().match_pattern(), res.status()),
            Err(e) => (None, e.as_response_error().status_code()),
        };
        http.observe(
            method.as_str(),
            endpoint.as_deref(),
            status.as_u16(),
            start.elapsed(),
        );
    }
    result
}

/// `GET /metrics`: the registry in the Prometheus text format.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(chat_metrics::serve::CONTENT_TYPE)
        .body(chat_metrics::encode(&state.registry))
}

impl actix_web::ResponseError for crate::auth::AuthError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        tracing::debug!(error = %self, "authentication refused");
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(serde_json::json!({ "error": { "code": "unauthorized", "message": self.to_string() } }))
    }
}

async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    // Who first: a missing or bad token is a 401 whatever the origin (docs/protocol.md).
    let identity = state.auth.authenticate(&req).await?;
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("<not text>"));
    if !state.limits.origin_allowed(origin) {
        state.metrics.sessions.upgrade_refused(Refusal::Origin);
        return Ok(HttpResponse::Forbidden().json(json_error(
            ErrorCode::Forbidden,
            "this origin may not open a WebSocket here (CHAT_ALLOWED_ORIGINS)",
        )));
    }
    if state.shutdown.is_cancelled() {
        state
            .metrics
            .sessions
            .upgrade_refused(Refusal::ShuttingDown);
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json_error(ErrorCode::Unavailable, "gateway shutting down")));
    }
    let Some(admitted) = state.admit() else {
        state.metrics.sessions.upgrade_refused(Refusal::AtCapacity);
        let message = format!(
            "gateway at its limit of {} connections; retry, or connect to another instance",
            state.limits.max_connections
        );
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json_error(ErrorCode::Unavailable, &message)));
    };
    // actix-ws's `Session` is not used: pings and pongs go through the connection's own
    // queue, written by `ConnBody`.
    let (response, _, stream) = actix_ws::handle(&req, body)?;
    let conn = Conn::new(
        state.next_conn_id(),
        identity.user.clone(),
        Lane::for_this_worker(),
    );
    let metrics = state.metrics.ws.clone();
    let response = response
        .map_body(|_, closed_signal| ConnBody::new(conn.clone(), closed_signal, metrics))
        .map_into_boxed_body();
    actix_web::rt::spawn(crate::session::serve(
        state.into_inner(),
        identity,
        conn,
        stream,
        admitted,
    ));
    Ok(response)
}

/// `?before=&limit=`: read as text so an empty value (`before=`, as the protocol's own
/// template writes it) means absent instead of failing to parse.
#[derive(Deserialize)]
struct PageQuery {
    before: Option<String>,
    limit: Option<String>,
}

/// A query parameter's value; `None` when absent or empty.
fn query_number<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
) -> Result<Option<T>, GatewayError>
where
    T::Err: std::fmt::Display,
{
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| GatewayError::BadRequest(format!("invalid {name} {v:?}: {e}"))),
    }
}

async fn room_messages(
    req: HttpRequest,
    room: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let user = state.auth.authenticate(&req).await?.user;
    let query = web::Query::<PageQuery>::from_query(req.query_string())
        .map_err(|e| GatewayError::BadRequest(format!("invalid query: {e}")))?;
    let room =
        RoomId::parse(&room).map_err(|e| GatewayError::BadRequest(format!("invalid room: {e}")))?;
    if !room.admits(&user) {
        return Err(GatewayError::forbidden_room(&room).into());
    }
    let before: Option<Seq> = query_number("before", query.before.as_deref())?;
    let limit = query_number("limit", query.limit.as_deref())?.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(
            GatewayError::BadRequest(format!("limit must be 1 to {MAX_HISTORY_LIMIT}")).into(),
        );
    }
    let page = state
        .hub
        .history()
        .list(&room, before, None, limit)
        .await
        .map_err(actix_web::Error::from)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "messages": page.messages,
        "has_more": page.has_more,
    })))
}

#[derive(Deserialize)]
struct PresenceQuery {
    users: Option<String>,
}

/// `GET /v1/presence?users=a,b` -> `{"users":{"a":true,"b":false}}`.
async fn presence(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    state.auth.authenticate(&req).await?;
    let query = web::Query::<PresenceQuery>::from_query(req.query_string())
        .map_err(|e| GatewayError::BadRequest(format!("invalid query: {e}")))?;
    let listed = query.users.as_deref().unwrap_or_default();
    let users = listed
        .split(',')
        .filter(|u| !u.is_empty())
        .map(|u| {
            UserId::parse(u)
                .map_err(|e| GatewayError::BadRequest(format!("invalid user {u:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if users.len() > MAX_PRESENCE_USERS {
        return Err(GatewayError::BadRequest(format!(
            "at most {MAX_PRESENCE_USERS} users per query"
        ))
        .into());
    }
    let online = state.presence.query(&users).await?;
    let answer: std::collections::BTreeMap<_, _> = users.into_iter().zip(online).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "users": answer })))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when not shutting down, history reports SERVING and took this gateway's token on
/// its last call, and fan-out is connected.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut problems = Vec::new();
    if state.shutdown.is_cancelled() {
        problems.push("shutting down".to_owned());
    }
    if !state.hub.fanout().is_connected() {
        problems.push("fan-out backend disconnected".to_owned());
    }
    if state.hub.history().token_refused() {
        problems.push(
            "history refused this gateway's internal token on its last call \
             (CHAT_INTERNAL_TOKEN missing or different)"
                .to_owned(),
        );
    }
    let mut health = HealthClient::new(state.hub.history().channel());
    let check = health.check(HealthCheckRequest {
        service: HISTORY_HEALTH_SERVICE.to_owned(),
    });
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32 => {}
        Ok(Ok(_)) => problems.push("history not serving".to_owned()),
        Ok(Err(status)) => problems.push(format!("history: {}", status.message())),
        Err(_) => problems.push("history: timed out".to_owned()),
    }
    if problems.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "not ready", "problems": problems }))
    }
}
