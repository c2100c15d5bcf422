//! The public accounts API, served on the gateway's port in front of the accounts
//! service (`CHAT_ACCOUNTS_URL`): sign-up, log-in, refresh, log-out, password change
//! (`/v1/auth/*`), the caller's profile and other users (`/v1/users/*`), the public keys
//! of the access tokens (`/.well-known/jwks.json`) and which ways of signing in this
//! gateway offers (`/v1/auth/methods`). docs/protocol.md, "Accounts HTTP API", is the
//! contract.
//!
//! The gateway checks the shape of requests (JSON bodies of at most [`MAX_BODY_BYTES`],
//! query parameters), forwards the caller's Bearer token as it received it (accounts
//! verifies it and that its session is open), and turns accounts' refusals into the
//! public `{"error":{"code","message"}}` with the status of the table in
//! `proto/accounts.proto`.
//!
//! Browsers (requests with an `Origin` header) get the refresh token in an HttpOnly
//! cookie ([`REFRESH_COOKIE`]) instead of the body, so that scripts on the page never
//! see it.

use std::future::Future;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use chat_model::limits::MAX_PRESENCE_USERS;
use chat_model::{Timestamp, UserId};
use chat_proto::accounts::error_detail::Reason;
use chat_proto::accounts::{
    AuthReply, BearerRequest, ChangePasswordRequest, DeleteAccountRequest, ErrorDetail,
    GetUsersRequest, LogInRequest, LogOutRequest, RefreshRequest, SearchUsersRequest,
    SignUpRequest, UpdateDisplayNameRequest, User,
};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::accounts::{AccountsClient, AccountsGrpc};
use crate::error::{Backend, GatewayError};
use crate::state::AppState;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// The cookie that carries a browser's refresh token.
pub const REFRESH_COOKIE: &str = "chat_refresh";
/// The path the refresh cookie is sent to (refresh and log-out).
const COOKIE_PATH: &str = "/v1/auth";
/// Most ids of one `GET /v1/users?ids=`.
pub const MAX_USER_IDS: usize = MAX_PRESENCE_USERS;
/// Most results of one `GET /v1/users/search`.
pub const MAX_SEARCH_LIMIT: u32 = 50;
/// How long clients may cache `/.well-known/jwks.json`.
const JWKS_MAX_AGE: Duration = Duration::from_secs(60);

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/auth/methods", web::get().to(methods))
        .route("/v1/auth/signup", web::post().to(signup))
        .route("/v1/auth/login", web::post().to(login))
        .route("/v1/auth/refresh", web::post().to(refresh))
        .route("/v1/auth/logout", web::post().to(logout))
        .route("/v1/auth/logout-all", web::post().to(logout_all))
        .route("/v1/auth/password", web::post().to(change_password))
        .route("/v1/users/me", web::get().to(get_me))
        .route("/v1/users/me", web::patch().to(patch_me))
        .route("/v1/users/me", web::delete().to(delete_me))
        .route("/v1/users/search", web::get().to(search_users))
        .route("/v1/users", web::get().to(get_users))
        .route("/.well-known/jwks.json", web::get().to(jwks));
}

// ---------------------------------------------------------------------------------------
// Request bodies

/// `POST /v1/auth/signup`.
#[derive(Deserialize)]
pub struct SignUpBody {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /v1/auth/login`.
#[derive(Deserialize)]
pub struct LogInBody {
    pub username: String,
    pub password: String,
}

/// `POST /v1/auth/refresh` and `POST /v1/auth/logout` (both fields optional: the cookie
/// may carry the token instead).
#[derive(Deserialize, Default)]
pub struct RefreshBody {
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// `POST /v1/auth/password`.
#[derive(Deserialize)]
pub struct PasswordBody {
    pub current_password: String,
    pub new_password: String,
}

/// `PATCH /v1/users/me`.
#[derive(Deserialize)]
pub struct DisplayNameBody {
    pub display_name: String,
}

/// `DELETE /v1/users/me`.
#[derive(Deserialize)]
pub struct DeleteBody {
    pub password: String,
}

macro_rules! no_secrets_debug {
    ($($ty:ident),+) => {
        $(impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        })+
    };
}
no_secrets_debug!(
    SignUpBody,
    LogInBody,
    RefreshBody,
    PasswordBody,
    DisplayNameBody,
    DeleteBody
);

/// Parses a JSON request body as `T`. An empty body reads as `{}` (which only the types
/// whose fields are all optional accept). The error is a sentence for the client.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(format!("request body over {MAX_BODY_BYTES} bytes"));
    }
    // JSON is UTF-8 (RFC 8259); serde_json checks it only in the fields it keeps, so a
    // body with a broken string in an ignored field would otherwise pass (the fuzzer's
    // find).
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(format!("the request body is not UTF-8: {e}"));
    }
    let bytes: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        // serde reads a struct from an array too (fields by position): refuse it.
        Some(b'{') => bytes,
        Some(_) => return Err("the request body must be a JSON object".into()),
    };
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            format!("invalid request body: {e}")
        } else {
            format!("the request body must be a JSON object: {e}")
        }
    })
}

/// Reads the request body, at most [`MAX_BODY_BYTES`], and parses it as `T`.
async fn read_body<T: DeserializeOwned>(mut payload: web::Payload) -> Result<T, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body over {MAX_BODY_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    parse_body(&body).map_err(ApiError::bad_request)
}

// ---------------------------------------------------------------------------------------
// Errors

/// A refusal: `{"error":{"code","message"}}` with its HTTP status, and a `Retry-After`
/// when the client may try again later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// A failed accounts call, by the table of `proto/accounts.proto`: a status with an
    /// `ErrorDetail` is a refusal of the accounts logic (its reason is the public code);
    /// without one, what [`GatewayError::from_status`] calls `unavailable` (unreachable,
    /// killed mid-call, overloaded, timed out, or refusing this gateway's internal token)
    /// is 503 with `Retry-After: 1`, anything else is a bug (500).
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Some(detail) = ErrorDetail::from_status(status) {
            let reason = detail.reason();
            let http = match reason {
                Reason::BadRequest | Reason::WeakPassword => StatusCode::BAD_REQUEST,
                Reason::UsernameTaken => StatusCode::CONFLICT,
                Reason::InvalidCredentials | Reason::InvalidToken => StatusCode::UNAUTHORIZED,
                Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                Reason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                Reason::Unspecified => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let error = Self::new(http, reason.public_code(), status.message());
            return match reason {
                Reason::RateLimited | Reason::Unavailable => {
                    error.retry_after(detail.retry_after_secs)
                }
                _ => error,
            };
        }
        // Not from the accounts logic: the same rule as every backend call
        // (`GatewayError::from_status`): a broken or cancelled call (accounts killed
        // mid-call), overload, a deadline or a refused internal token is `unavailable`,
        // anything else a bug.
        if status.code() == tonic::Code::Unauthenticated {
            tracing::warn!("accounts refused this gateway's internal token");
        }
        match GatewayError::from_status(Backend::Accounts, status) {
            GatewayError::Unavailable(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(1)
            }
            other => {
                tracing::error!(code = ?status.code(), message = status.message(), "accounts call failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }

    fn no_accounts() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this gateway has no accounts service (CHAT_ACCOUNTS_URL is not set)",
        )
    }

    fn missing_bearer() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing access token: send an Authorization: Bearer header",
        )
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn accounts(state: &AppState) -> Result<&AccountsClient, ApiError> {
    state.accounts.as_ref().ok_or_else(ApiError::no_accounts)
}

/// The `Authorization: Bearer` token, as sent.
fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .filter(|token| !token.is_empty())
        .ok_or_else(ApiError::missing_bearer)
}

/// The client's address for accounts' throttling (empty when unknown).
fn client_addr(state: &AppState, req: &HttpRequest) -> String {
    state
        .trusted_proxies
        .client_addr_of(req)
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// Whether the request comes from a browser (it carries an `Origin` header).
fn origin(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("<not text>"))
}

/// Whether `origin` is this gateway's own (the scheme the client used and the `Host` it
/// asked for) or one of `CHAT_ALLOWED_ORIGINS`. Behind a trusted proxy that forwards a
/// `Host` without the port (nginx's `$host`), the origin's port is not compared.
fn origin_trusted(state: &AppState, req: &HttpRequest, origin: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    let proxies = &state.trusted_proxies;
    let scheme = if proxies.is_https(req) {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = origin
        .split_once("://")
        .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
        .is_some_and(|(_, authority)| {
            let from_proxy = req.peer_addr().is_some_and(|p| proxies.contains(p.ip()));
            !host.is_empty()
                && (authority.eq_ignore_ascii_case(host)
                    || (from_proxy
                        && without_port(host) == host
                        && without_port(authority).eq_ignore_ascii_case(host)))
        });
    own || state
        .limits
        .allowed_origins
        .as_ref()
        .is_some_and(|allowed| allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)))
}

/// `host[:port]` or `[v6][:port]` without the port.
fn without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _)| host)
}

/// The refresh token of the [`REFRESH_COOKIE`], if the request carries one.
fn cookie_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// `Set-Cookie` for the refresh cookie: `token` for `max_age_secs`, or (with `None`)
/// the cookie's removal.
fn refresh_cookie(token: Option<&str>, max_age_secs: u32, secure: bool) -> HeaderValue {
    let (value, max_age) = match token {
        Some(token) => (token, max_age_secs),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{REFRESH_COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; \
         SameSite=Strict{secure}"
    );
    // A refresh token is `<sid>.<hex>`; anything else cannot be a header value, and
    // then no cookie is better than a broken response.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| {
        HeaderValue::from_static("chat_refresh=; Path=/v1/auth; Max-Age=0; HttpOnly")
    })
}

fn clear_cookie(state: &AppState, req: &HttpRequest, response: &mut HttpResponseBuilder) {
    let secure = state.trusted_proxies.is_https(req);
    response.append_header((header::SET_COOKIE, refresh_cookie(None, 0, secure)));
}

fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
    })
}

fn profile_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "created_at": Timestamp(user.created_at_ms).to_rfc3339(),
    })
}

/// The answer to a sign-up, log-in or refresh: the tokens, and for a browser the refresh
/// token in the cookie instead of the body.
fn auth_response(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    reply: AuthReply,
) -> HttpResponse {
    let mut body = serde_json::json!({
        "user": reply.user.as_ref().map(user_json),
        "access_token": reply.access_token,
        "token_type": "Bearer",
        "expires_in": reply.expires_in,
    });
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    if origin(req).is_some() {
        let secure = state.trusted_proxies.is_https(req);
        response.append_header((
            header::SET_COOKIE,
            refresh_cookie(Some(&reply.refresh_token), reply.refresh_expires_in, secure),
        ));
    } else {
        body["refresh_token"] = reply.refresh_token.into();
    }
    response.json(body)
}

fn no_content(state: &AppState, req: &HttpRequest, clear: bool) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    if clear {
        clear_cookie(state, req, &mut response);
    }
    response.finish()
}

/// A request made in a signed-in user's name: the accounts client and the request's
/// access token, both checked before the body is read.
struct AsBearer {
    grpc: AccountsGrpc,
    access_token: String,
}

impl AsBearer {
    /// 503 without accounts, 401 without a bearer token.
    fn of(state: &AppState, req: &HttpRequest) -> Result<Self, ApiError> {
        Ok(Self {
            grpc: accounts(state)?.grpc(),
            access_token: bearer(req)?,
        })
    }

    /// Makes the call; a refusal becomes the public error.
    async fn call<R, F>(self, call: impl FnOnce(AccountsGrpc, String) -> F) -> Result<R, ApiError>
    where
        F: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        Ok(call(self.grpc, self.access_token)
            .await
            .map_err(status_err)?
            .into_inner())
    }
}

fn status_err(status: tonic::Status) -> ApiError {
    ApiError::from_status(&status)
}

// ---------------------------------------------------------------------------------------
// Handlers

/// `GET /v1/auth/methods`: which sign-in forms a client should offer.
async fn methods(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "accounts": state.accounts.is_some(),
        "dev": state.auth.is_dev(),
        "external_tokens": state.auth.accepts_external_tokens(),
    }))
}

async fn signup(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let accounts = accounts(&state)?;
    let body: SignUpBody = read_body(payload).await?;
    let reply = accounts
        .grpc()
        .sign_up(SignUpRequest {
            username: body.username,
            password: body.password,
            display_name: body.display_name.unwrap_or_default(),
            client_addr: client_addr(&state, &req),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    Ok(auth_response(&state, &req, StatusCode::CREATED, reply))
}

async fn login(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let accounts = accounts(&state)?;
    let body: LogInBody = read_body(payload).await?;
    let reply = accounts
        .grpc()
        .log_in(LogInRequest {
            username: body.username,
            password: body.password,
            client_addr: client_addr(&state, &req),
        })
        .await
        .map_err(status_err)?
        .into_inner();
    Ok(auth_response(&state, &req, StatusCode::OK, reply))
}

async fn refresh(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let accounts = accounts(&state)?;
    if let Some(origin) = origin(&req)
        && !origin_trusted(&state, &req, origin)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "refresh from another origin (not this gateway's, not in CHAT_ALLOWED_ORIGINS)",
        ));
    }
    let body: RefreshBody = read_body(payload).await?;
    let Some(token) = body.refresh_token.or_else(|| cookie_token(&req)) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            format!("no refresh token: send {{\"refresh_token\"}} or the {REFRESH_COOKIE} cookie"),
        ));
    };
    let reply = accounts
        .grpc()
        .refresh(RefreshRequest {
            refresh_token: token,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    Ok(auth_response(&state, &req, StatusCode::OK, reply))
}

async fn logout(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    let body: RefreshBody = read_body(payload).await?;
    let refresh_token = body
        .refresh_token
        .or_else(|| cookie_token(&req))
        .unwrap_or_default();
    as_user
        .call(|mut grpc, access_token| async move {
            grpc.log_out(LogOutRequest {
                access_token,
                refresh_token,
            })
            .await
        })
        .await?;
    Ok(no_content(&state, &req, true))
}

async fn logout_all(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    as_user
        .call(|mut grpc, access_token| async move {
            grpc.log_out_all(BearerRequest { access_token }).await
        })
        .await?;
    Ok(no_content(&state, &req, true))
}

async fn change_password(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    let body: PasswordBody = read_body(payload).await?;
    as_user
        .call(|mut grpc, access_token| async move {
            grpc.change_password(ChangePasswordRequest {
                access_token,
                current_password: body.current_password,
                new_password: body.new_password,
            })
            .await
        })
        .await?;
    Ok(no_content(&state, &req, false))
}

async fn get_me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    let reply = as_user
        .call(|mut grpc, access_token| async move {
            grpc.get_user(BearerRequest { access_token }).await
        })
        .await?;
    profile(reply.user)
}

async fn patch_me(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    let body: DisplayNameBody = read_body(payload).await?;
    let reply = as_user
        .call(|mut grpc, access_token| async move {
            grpc.update_display_name(UpdateDisplayNameRequest {
                access_token,
                display_name: body.display_name,
            })
            .await
        })
        .await?;
    profile(reply.user)
}

fn profile(user: Option<User>) -> Result<HttpResponse, ApiError> {
    let user = user.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "accounts answered without the user",
        )
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(profile_json(&user)))
}

async fn delete_me(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    let body: DeleteBody = read_body(payload).await?;
    as_user
        .call(|mut grpc, access_token| async move {
            grpc.delete_account(DeleteAccountRequest {
                access_token,
                password: body.password,
            })
            .await
        })
        .await?;
    Ok(no_content(&state, &req, true))
}

#[derive(Deserialize)]
struct IdsQuery {
    ids: Option<String>,
}

/// `GET /v1/users?ids=a,b`: the users among `ids` (unknown ones left out), in order.
async fn get_users(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    let query = web::Query::<IdsQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let ids = query
        .ids
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|id| !id.is_empty())
        .map(|id| {
            UserId::parse(id)
                .map(|_| id.to_owned())
                .map_err(|e| ApiError::bad_request(format!("invalid user id {id:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() > MAX_USER_IDS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_USER_IDS} ids per request"
        )));
    }
    let reply = as_user
        .call(|mut grpc, access_token| async move {
            grpc.get_users(GetUsersRequest { access_token, ids }).await
        })
        .await?;
    Ok(users_response(&reply.users))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/users/search?q=&limit=`.
async fn search_users(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let as_user = AsBearer::of(&state, &req)?;
    let query = web::Query::<SearchQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let q = query.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::bad_request(
            "q must be the beginning of a username or display name",
        ));
    }
    let limit = match query
        .limit
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        None => 0,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_SEARCH_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be 1 to {MAX_SEARCH_LIMIT}"))
            })?,
    };
    let query = q.to_owned();
    let reply = as_user
        .call(|mut grpc, access_token| async move {
            grpc.search_users(SearchUsersRequest {
                access_token,
                query,
                limit,
            })
            .await
        })
        .await?;
    Ok(users_response(&reply.users))
}

fn users_response(users: &[User]) -> HttpResponse {
    let users: Vec<_> = users.iter().map(user_json).collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "users": users }))
}

/// `GET /.well-known/jwks.json`: the public keys of accounts' access tokens, as the
/// gateway last read them (read now when it never has).
async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys = match &state.accounts {
        None => Vec::new(),
        Some(accounts) => {
            let cache = accounts.keys();
            if cache.published().is_empty() {
                cache.load().await.map_err(|e| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        e.to_string(),
                    )
                    .retry_after(1)
                })?;
            }
            cache
                .published()
                .iter()
                .map(|key| {
                    serde_json::json!({
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": base64url(&key.key),
                        "kid": key.kid,
                        "alg": key.alg,
                        "use": "sig",
                    })
                })
                .collect()
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={}", JWKS_MAX_AGE.as_secs()),
        ))
        .json(serde_json::json!({ "keys": keys })))
}

/// Base64url without padding (RFC 4648 §5), as JWKs write key bytes.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), expected);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn accounts_refusals_map_to_the_public_table() {
        let cases = [
            (Reason::BadRequest, 0, 400, "bad_request", None),
            (Reason::WeakPassword, 0, 400, "weak_password", None),
            (Reason::UsernameTaken, 0, 409, "username_taken", None),
            (
                Reason::InvalidCredentials,
                0,
                401,
                "invalid_credentials",
                None,
            ),
            (Reason::InvalidToken, 0, 401, "invalid_token", None),
            (Reason::RateLimited, 7, 429, "rate_limited", Some(7)),
            (Reason::Unavailable, 2, 503, "unavailable", Some(2)),
        ];
        for (reason, secs, http, code, retry) in cases {
            let e = ApiError::from_status(&ErrorDetail::new(reason, secs).into_status("why"));
            assert_eq!(e.status.as_u16(), http, "{reason:?}");
            assert_eq!(e.code, code);
            assert_eq!(e.message, "why");
            assert_eq!(e.retry_after_secs, retry);
        }
        let e = ApiError::from_status(&Status::unauthenticated("wrong internal token"));
        assert_eq!((e.status.as_u16(), e.code), (503, "unavailable"));
        // Cancelled and Unknown: accounts killed under the call (the chaos test found
        // these answered 500).
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::ResourceExhausted,
        ] {
            let e = ApiError::from_status(&Status::new(code, "down"));
            assert_eq!((e.status.as_u16(), e.code), (503, "unavailable"));
            assert_eq!(e.retry_after_secs, Some(1));
        }
        let e = ApiError::from_status(&Status::internal("boom"));
        assert_eq!((e.status.as_u16(), e.code), (500, "internal"));
    }

    #[test]
    fn bodies_parse_or_explain() {
        let b: SignUpBody =
            parse_body(br#"{"username":"a","password":"hunter2-secret","extra":1}"#)
                .expect("unknown fields are ignored");
        assert_eq!(b.display_name, None);
        assert!(!format!("{b:?}").contains("secret"));
        assert!(parse_body::<SignUpBody>(b"{}").is_err());
        // Invalid UTF-8 in a field the type ignores: still refused.
        assert!(parse_body::<RefreshBody>(b"{\"refresh_token\":\"t\",\"x\":\"\xf3\"}").is_err());
        assert!(
            parse_body::<SignUpBody>(b"not json")
                .expect_err("bad")
                .contains("JSON object")
        );
        assert!(parse_body::<LogInBody>(br#"{"username":1,"password":"p"}"#).is_err());
        // Found by fuzz/fuzz_targets/auth_bodies.rs: serde takes arrays for structs.
        assert!(parse_body::<RefreshBody>(b"[]").is_err());
        assert!(parse_body::<LogInBody>(br#" ["alice", "pw"]"#).is_err());
        let r: RefreshBody = parse_body(b"").expect("empty is {}");
        assert!(r.refresh_token.is_none());
        assert!(parse_body::<RefreshBody>(&vec![b' '; MAX_BODY_BYTES + 1]).is_err());
    }

    #[test]
    fn ports_come_off_authorities() {
        assert_eq!(without_port("chat.example:8080"), "chat.example");
        assert_eq!(without_port("chat.example"), "chat.example");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }

    #[test]
    fn cookies_are_read_and_written() {
        use actix_web::test::TestRequest;
        let req = TestRequest::default()
            .insert_header((header::COOKIE, "a=b; chat_refresh=s_1.abcd; c=d"))
            .to_http_request();
        assert_eq!(cookie_token(&req).as_deref(), Some("s_1.abcd"));
        let set = refresh_cookie(Some("s_1.abcd"), 60, true);
        assert_eq!(
            set.to_str().expect("text"),
            "chat_refresh=s_1.abcd; Path=/v1/auth; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        let clear = refresh_cookie(None, 60, false);
        assert_eq!(
            clear.to_str().expect("text"),
            "chat_refresh=; Path=/v1/auth; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }
}
