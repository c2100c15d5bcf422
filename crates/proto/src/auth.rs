//! Shared-secret authentication of the internal gRPC calls (gateway → history,
//! gateway → presence).
//!
//! A service given a token ([`TOKEN_VAR`]) accepts a call of its own service only when it
//! carries the metadata `authorization: Bearer <token>`; anything else ends
//! `UNAUTHENTICATED` before reaching the service, and is counted as such in
//! `grpc_server_requests_total{code="UNAUTHENTICATED"}` (the metrics layer wraps the
//! router, which routes before the check, so the labels stay the known methods).
//!
//! The standard health service (`grpc.health.v1.Health`) stays open to callers without
//! a token, so Kubernetes gRPC probes and `chat-probe` need no secret. A caller that does
//! present a token there must present the right one: the gateway sends its token on its
//! readiness check, so a gateway with a wrong token reports itself not ready.
//!
//! Tokens are compared in constant time (only their length can leak). They are never
//! printed: [`InternalToken`]'s `Debug` is redacted, the header value is marked
//! sensitive, and rejections say what was wrong without echoing what was sent.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The environment variable holding the token, on the services and on the gateway.
pub const TOKEN_VAR: &str = "CHAT_INTERNAL_TOKEN";

/// The shortest token accepted, in bytes. `openssl rand -hex 32` gives 64.
pub const MIN_TOKEN_LEN: usize = 16;

/// The metadata key the token travels in.
const AUTHORIZATION: &str = "authorization";

/// A rejected caller is logged at most this often (the metric counts every one).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a token was refused. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "too short ({len} bytes); use at least {MIN_TOKEN_LEN}, e.g. the output of `openssl rand -hex 32`"
    )]
    TooShort { len: usize },
    #[error(
        "must be printable ASCII without spaces (it is sent in an HTTP header); character {position} is not"
    )]
    InvalidCharacter { position: usize },
}

/// The shared secret of the internal gRPC calls. Never printed.
#[derive(Clone)]
pub struct InternalToken {
    /// The token itself, compared with what callers present.
    token: Box<str>,
    /// `Bearer <token>`, as callers send it; marked sensitive, so HTTP/2 and tonic never
    /// index or print it.
    header: MetadataValue<Ascii>,
}

/// How the example secrets of `.example_env` and `deploy/k8s/config.yaml` begin; a
/// secret that still does gets a warning at start (see [`is_placeholder`]).
pub const PLACEHOLDER_PREFIX: &str = "change-me";

/// Whether `secret` is still one of the shipped placeholders, which anyone who has read
/// the repository knows.
pub fn is_placeholder(secret: &str) -> bool {
    secret.trim().starts_with(PLACEHOLDER_PREFIX)
}

impl InternalToken {
    /// Validates a token: surrounding whitespace is dropped (a trailing newline from a
    /// secret file is a common slip), then it must be at least [`MIN_TOKEN_LEN`] bytes of
    /// printable ASCII without spaces.
    pub fn parse(value: &str) -> Result<Self, TokenError> {
        let token = value.trim();
        if let Some(position) = token.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(TokenError::InvalidCharacter {
                position: position + 1,
            });
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len: token.len() });
        }
        if is_placeholder(token) {
            tracing::warn!(
                "{TOKEN_VAR} is still a placeholder of .example_env or deploy/k8s: anyone who \
                 has read them can call history and presence; generate one with `openssl rand -hex 32`"
            );
        }
        let mut header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| TokenError::InvalidCharacter { position: 1 })?;
        header.set_sensitive(true);
        Ok(Self {
            token: token.into(),
            header,
        })
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        self.token.as_bytes().ct_eq(presented).into()
    }
}

impl PartialEq for InternalToken {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.token.as_bytes())
    }
}

impl Eq for InternalToken {}

impl fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InternalToken(<redacted>)")
    }
}

/// Client side: puts `authorization: Bearer <token>` on every call; passes calls through
/// untouched when there is no token.
#[derive(Clone, Default)]
pub struct AttachToken {
    header: Option<MetadataValue<Ascii>>,
}

impl AttachToken {
    /// Attaches `token`, or nothing when `None`.
    pub fn new(token: Option<&InternalToken>) -> Self {
        Self {
            header: token.map(|t| t.header.clone()),
        }
    }
}

impl fmt::Debug for AttachToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.header.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("AttachToken")
            .field("token", &token)
            .finish()
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

/// What a call presented, when it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    Wrong,
}

impl Refusal {
    fn status(self) -> Status {
        Status::unauthenticated(match self {
            Self::Missing => {
                "missing internal token: this service requires `authorization: Bearer <token>`; set CHAT_INTERNAL_TOKEN on the caller to the service's value"
            }
            Self::Wrong => {
                "wrong internal token: the caller's CHAT_INTERNAL_TOKEN differs from this service's"
            }
        })
    }
}

/// Server side: refuses calls without the right token (see the module doc). With no
/// token configured every call passes.
#[derive(Clone, Debug)]
pub struct RequireToken {
    /// `None`: authentication is off.
    expected: Option<InternalToken>,
    /// Calls without any token pass (the health service); a wrong token never does.
    optional: bool,
    /// Shared by every clone, so one misconfigured caller makes one log line a minute.
    log: Arc<RefusalLog>,
}

impl RequireToken {
    /// Requires `expected` on every call, or nothing when `None`.
    pub fn new(expected: Option<InternalToken>) -> Self {
        Self {
            expected,
            optional: false,
            log: Arc::default(),
        }
    }

    /// The check of the health service: calls without a token pass, calls with one must
    /// present the right one.
    pub fn for_health(&self) -> Self {
        Self {
            optional: true,
            ..self.clone()
        }
    }

    /// Checks a call's metadata.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        self.refusal(metadata).map_or(Ok(()), |r| Err(r.status()))
    }

    fn refusal(&self, metadata: &MetadataMap) -> Option<Refusal> {
        let expected = self.expected.as_ref()?;
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return (!self.optional).then_some(Refusal::Missing);
        };
        let presented = value.as_encoded_bytes();
        let scheme = b"bearer ";
        let is_bearer = presented.len() > scheme.len()
            && presented[..scheme.len()].eq_ignore_ascii_case(scheme);
        if is_bearer && expected.matches(presented[scheme.len()..].trim_ascii()) {
            None
        } else {
            Some(Refusal::Wrong)
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self.refusal(request.metadata()) {
            None => Ok(request),
            Some(refusal) => {
                self.log.refused(refusal, request.remote_addr());
                Err(refusal.status())
            }
        }
    }
}

/// Rate-limits the log line of refused calls.
#[derive(Debug, Default)]
struct RefusalLog {
    /// When the last line was written, and how many refusals went unlogged since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn refused(&self, refusal: Refusal, peer: Option<std::net::SocketAddr>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, unlogged) = &mut *state;
        if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            *unlogged += 1;
            return;
        }
        let reason = match refusal {
            Refusal::Missing => "no internal token",
            Refusal::Wrong => "wrong internal token",
        };
        let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        tracing::warn!(
            %peer,
            earlier_unlogged = *unlogged,
            "refused a gRPC call: {reason} (the caller's {TOKEN_VAR} must equal this service's)"
        );
        *last = Some(Instant::now());
        *unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-test-token";

    fn token() -> InternalToken {
        InternalToken::parse(TOKEN).expect("valid token")
    }

    fn with_header(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            AUTHORIZATION,
            MetadataValue::try_from(value).expect("ascii"),
        );
        metadata
    }

    /// The values of `key` in a `.env` file (`KEY=value`) or a manifest (`KEY: value`).
    fn values_of(text: &str, key: &str) -> Vec<String> {
        text.lines()
            .filter_map(|line| {
                let rest = line.trim().strip_prefix(key)?;
                let value = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?;
                Some(value.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn shipped_secrets_are_recognised_as_placeholders() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in [".example_env", "deploy/k8s/config.yaml"] {
            let text = std::fs::read_to_string(root.join(file)).expect("shipped file");
            let values = values_of(&text, TOKEN_VAR);
            assert_eq!(values.len(), 1, "{TOKEN_VAR} in {file}: {values:?}");
            assert!(
                is_placeholder(&values[0]),
                "{TOKEN_VAR} in {file} ({:?}) would start without the placeholder warning",
                values[0]
            );
            // An external issuer's secret is optional (accounts signs the tokens): it
            // ships empty or absent, never as a value anyone could mint tokens with.
            for value in values_of(&text, "CHAT_JWT_SECRET") {
                assert!(
                    value.is_empty() || is_placeholder(&value),
                    "CHAT_JWT_SECRET in {file} ships a usable value"
                );
            }
        }
        assert!(!is_placeholder(
            "3f6c1e0a9b7d4c2e8f1a5b6c7d8e9f00112233445566778899aabbccddeeff00"
        ));
    }

    #[test]
    fn validation() {
        assert_eq!(
            InternalToken::parse("short").expect_err("short"),
            TokenError::TooShort { len: 5 }
        );
        assert_eq!(
            InternalToken::parse("0123456789 abcdef").expect_err("space"),
            TokenError::InvalidCharacter { position: 11 }
        );
        for bad in [
            "0123456789abcdef\u{7f}",
            "0123456789abcdéf",
            "0123456789\tabcdef",
        ] {
            assert!(
                matches!(
                    InternalToken::parse(bad),
                    Err(TokenError::InvalidCharacter { .. })
                ),
                "{bad:?}"
            );
        }
        // A trailing newline (from `echo` into a secret) is not part of the token.
        assert_eq!(
            InternalToken::parse(&format!("  {TOKEN}\n")).expect("trimmed"),
            token()
        );
        assert_ne!(
            InternalToken::parse("another-token-0123456789").expect("valid"),
            token()
        );
        let message = TokenError::TooShort { len: 5 }.to_string();
        assert!(message.contains("openssl rand -hex 32"), "{message}");
    }

    #[test]
    fn never_printed() {
        let attach = AttachToken::new(Some(&token()));
        let require = RequireToken::new(Some(token()));
        for printed in [
            format!("{:?}", token()),
            format!("{attach:?}"),
            format!("{require:?}"),
            format!("{:?}", token().header),
            format!("{:?}", with_header_of(&attach)),
        ] {
            assert!(!printed.contains(TOKEN), "{printed}");
            assert!(!printed.contains("0123456789"), "{printed}");
        }
    }

    /// The metadata `attach` puts on a request.
    fn with_header_of(attach: &AttachToken) -> MetadataMap {
        let mut attach = attach.clone();
        attach
            .call(Request::new(()))
            .expect("attaching never fails")
            .into_parts()
            .0
    }

    #[test]
    fn checks() {
        let required = RequireToken::new(Some(token()));
        let health = required.for_health();
        let off = RequireToken::new(None);
        let right = with_header_of(&AttachToken::new(Some(&token())));
        let wrong = with_header(&format!("Bearer {TOKEN}x"));
        let none = MetadataMap::new();

        assert!(required.check(&right).is_ok());
        assert!(
            required
                .check(&with_header(&format!("bearer  {TOKEN}")))
                .is_ok()
        );
        for (metadata, what) in [
            (&none, "missing"),
            (&wrong, "wrong"),
            (&with_header(TOKEN), "wrong"),
            (&with_header(&format!("Basic {TOKEN}")), "wrong"),
            (&with_header("Bearer "), "wrong"),
        ] {
            let status = required.check(metadata).expect_err(what);
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().starts_with(what), "{}", status.message());
            assert!(status.message().contains(TOKEN_VAR));
            assert!(!status.message().contains(TOKEN));
        }

        assert!(health.check(&none).is_ok());
        assert!(health.check(&right).is_ok());
        assert!(health.check(&wrong).is_err());

        for metadata in [&none, &right, &wrong] {
            assert!(off.check(metadata).is_ok());
        }
        assert!(with_header_of(&AttachToken::new(None)).is_empty());
    }
}
