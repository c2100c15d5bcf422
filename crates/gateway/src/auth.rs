//! Who is connecting: an access token of the accounts service (EdDSA, verified with its
//! published keys), an external issuer's JWT (HS256, `CHAT_JWT_SECRET`), or a plain
//! `?user=` (dev mode, opt-in).

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::header;
use chat_model::UserId;
use chat_proto::verify::VerifyError;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::accounts::KeyCache;
use crate::revocations::Revocations;

/// Longest token accepted; anything larger is refused before any parsing.
const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `exp`, in seconds: none. docs/protocol.md says `exp` is
/// honoured and an expired token is refused; a token that expired a second ago is
/// expired. Keep the issuer's clock in sync (NTP) rather than widening this.
const EXP_LEEWAY_SECS: u64 = 0;

/// Who a request or socket speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: UserId,
    /// The accounts session (`sid`) of an accounts token; `None` for external tokens
    /// and dev mode.
    pub session: Option<String>,
    /// The token's `exp` (seconds since the Unix epoch), when it has one.
    pub expires_at: Option<u64>,
}

impl Identity {
    fn dev(user: UserId) -> Self {
        Self {
            user,
            session: None,
            expires_at: None,
        }
    }
}

/// An external issuer's HS256 key and the checks its tokens pass.
#[derive(Clone)]
struct Hs256 {
    /// `Debug` never prints it.
    key: DecodingKey,
    validation: Box<Validation>,
}

/// How clients prove who they are.
#[derive(Clone)]
pub struct Authenticator {
    /// `?user=` accepted without a token.
    dev: bool,
    /// `CHAT_JWT_SECRET`.
    hs256: Option<Hs256>,
    /// The accounts service's keys (`CHAT_ACCOUNTS_URL`).
    accounts: Option<Arc<KeyCache>>,
    /// Recently revoked accounts sessions, whose tokens are refused.
    revoked: Option<Arc<Revocations>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("dev", &self.dev)
            .field("hs256", &self.hs256.as_ref().map(|_| "<secret>"))
            .field("accounts", &self.accounts.is_some())
            .field("revoked", &self.revoked.is_some())
            .finish()
    }
}

/// Why a client was refused (always HTTP 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: pass ?token=<JWT> or an Authorization: Bearer header")]
    Missing,
    #[error("token too large")]
    TooLarge,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("invalid user id in token: {0}")]
    BadSubject(String),
    #[error("session ended: sign in again")]
    Revoked,
}

impl From<VerifyError> for AuthError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Expired => Self::Expired,
            other => Self::Invalid(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: Option<u64>,
}

impl Authenticator {
    /// An authenticator: `dev` accepts `?user=`; tokens are verified with `secret`
    /// (HS256, refused when empty) and `accounts`' keys, whichever are given.
    pub fn new(
        dev: bool,
        secret: Option<&[u8]>,
        accounts: Option<Arc<KeyCache>>,
    ) -> Result<Self, AuthError> {
        let hs256 = secret
            .map(|secret| {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.set_required_spec_claims(&["sub"]);
                validation.validate_exp = true;
                validation.leeway = EXP_LEEWAY_SECS;
                // The protocol names no audience; a token that carries one (many
                // identity providers add `aud`) is not refused for it.
                validation.validate_aud = false;
                let key = DecodingKey::from_secret(secret)
                    .map_err(|e| AuthError::Invalid(format!("unusable JWT secret: {e}")))?;
                Ok::<_, AuthError>(Hs256 {
                    key,
                    validation: Box::new(validation),
                })
            })
            .transpose()?;
        Ok(Self {
            dev,
            hs256,
            accounts,
            revoked: None,
        })
    }

    /// Refuses the tokens of the sessions `revoked` remembers.
    pub fn with_revocations(mut self, revoked: Arc<Revocations>) -> Self {
        self.revoked = Some(revoked);
        self
    }

    /// Tokens of an external HS256 issuer only.
    pub fn jwt(secret: &[u8]) -> Result<Self, AuthError> {
        Self::new(false, Some(secret), None)
    }

    /// Dev mode; tokens are still verified when a secret is given.
    pub fn dev(secret: Option<&[u8]>) -> Result<Self, AuthError> {
        Self::new(true, secret, None)
    }

    /// Whether `?user=` is accepted.
    pub fn is_dev(&self) -> bool {
        self.dev
    }

    /// Authenticates an HTTP request (the WebSocket upgrade or an HTTP endpoint): the
    /// `Authorization: Bearer` token, else `?token=`, else (dev mode) `?user=`.
    pub async fn authenticate(&self, req: &HttpRequest) -> Result<Identity, AuthError> {
        let query = QueryAuth::from_request(req);
        match (bearer(req).or(query.token), query.user) {
            (Some(token), _) => self.verify(&token).await,
            (None, Some(user)) if self.dev => UserId::parse(&user)
                .map(Identity::dev)
                .map_err(|e| AuthError::BadSubject(e.to_string())),
            (None, _) => Err(AuthError::Missing),
        }
    }

    /// Verifies a token: an EdDSA one with accounts' keys, any other with the HS256
    /// secret; refused when the matching verifier is not configured.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("not a JWT: {e}")))?;
        if header.alg == Algorithm::EdDSA || header.kid.is_some() {
            let Some(accounts) = &self.accounts else {
                return Err(AuthError::Invalid(
                    "an accounts token, and this gateway has no CHAT_ACCOUNTS_URL".into(),
                ));
            };
            let verified = accounts.verify(token).await?;
            // Every authentication (connect, `auth` frame, HTTP) passes here.
            if self
                .revoked
                .as_ref()
                .is_some_and(|r| r.is_revoked(&verified.session))
            {
                return Err(AuthError::Revoked);
            }
            return Ok(Identity {
                user: verified.user,
                session: Some(verified.session),
                expires_at: Some(verified.expires_at),
            });
        }
        let Some(hs256) = &self.hs256 else {
            return Err(AuthError::Invalid(if self.accounts.is_some() {
                "not an accounts token (alg EdDSA with a kid)".into()
            } else if self.dev {
                "dev mode without CHAT_JWT_SECRET cannot verify tokens; use ?user=".into()
            } else {
                "no JWT secret configured".into()
            }));
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, &hs256.key, &hs256.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                    _ => AuthError::Invalid(e.to_string()),
                }
            })?;
        let user =
            UserId::parse(&data.claims.sub).map_err(|e| AuthError::BadSubject(e.to_string()))?;
        Ok(Identity {
            user,
            session: None,
            expires_at: data.claims.exp,
        })
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

#[derive(Deserialize, Default)]
struct QueryAuth {
    token: Option<String>,
    user: Option<String>,
}

impl QueryAuth {
    fn from_request(req: &HttpRequest) -> Self {
        actix_web::web::Query::<Self>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use jsonwebtoken::{EncodingKey, Header};

    fn token(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret).expect("non-empty secret"),
        )
        .expect("encodes")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    #[actix_web::test]
    async fn jwt_mode() {
        let auth = Authenticator::jwt(b"s3cret").expect("valid secret");
        let good = token(
            serde_json::json!({"sub": "alice", "exp": now() + 60}),
            Algorithm::HS256,
            b"s3cret",
        );
        let req = TestRequest::get()
            .uri(&format!("/v1/ws?token={good}"))
            .to_http_request();
        assert_eq!(
            auth.authenticate(&req).await.expect("valid").user.as_str(),
            "alice"
        );
        let req = TestRequest::get()
            .insert_header(("Authorization", format!("Bearer {good}")))
            .to_http_request();
        assert_eq!(
            auth.authenticate(&req).await.expect("valid").user.as_str(),
            "alice"
        );
        // An audience claim is not a reason to refuse.
        let with_aud = token(
            serde_json::json!({"sub": "alice", "aud": "chat", "exp": now() + 60}),
            Algorithm::HS256,
            b"s3cret",
        );
        let req = TestRequest::get()
            .uri(&format!("/v1/ws?token={with_aud}"))
            .to_http_request();
        assert_eq!(
            auth.authenticate(&req).await.expect("valid").user.as_str(),
            "alice"
        );

        let refused = async |t: String| {
            let req = TestRequest::get()
                .uri(&format!("/v1/ws?token={t}"))
                .to_http_request();
            auth.authenticate(&req).await.is_err()
        };
        assert!(
            refused(token(
                serde_json::json!({"sub": "alice", "exp": now() - 3600}),
                Algorithm::HS256,
                b"s3cret"
            ))
            .await
        );
        // Expired a few seconds ago: no leeway.
        assert!(
            refused(token(
                serde_json::json!({"sub": "alice", "exp": now() - 2}),
                Algorithm::HS256,
                b"s3cret"
            ))
            .await
        );
        assert!(
            refused(token(
                serde_json::json!({"sub": "alice"}),
                Algorithm::HS256,
                b"wrong"
            ))
            .await
        );
        assert!(
            refused(token(
                serde_json::json!({"sub": "alice"}),
                Algorithm::HS384,
                b"s3cret"
            ))
            .await
        );
        assert!(
            refused(token(
                serde_json::json!({"exp": now() + 60}),
                Algorithm::HS256,
                b"s3cret"
            ))
            .await
        );
        assert!(
            refused(token(
                serde_json::json!({"sub": "al/ice"}),
                Algorithm::HS256,
                b"s3cret"
            ))
            .await
        );
        // alg none: header {"alg":"none"}, no signature.
        assert!(refused("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.".into()).await);
        assert!(refused("x".repeat(MAX_TOKEN_BYTES + 1)).await);
        let dev = TestRequest::get()
            .uri("/v1/ws?user=alice")
            .to_http_request();
        assert!(matches!(
            auth.authenticate(&dev).await,
            Err(AuthError::Missing)
        ));
    }

    #[actix_web::test]
    async fn dev_mode() {
        let auth = Authenticator::dev(None).expect("no secret needed");
        let req = TestRequest::get().uri("/v1/ws?user=bob").to_http_request();
        assert_eq!(
            auth.authenticate(&req).await.expect("valid").user.as_str(),
            "bob"
        );
        let req = TestRequest::get()
            .uri("/v1/ws?user=b%20ob")
            .to_http_request();
        assert!(auth.authenticate(&req).await.is_err());
        let req = TestRequest::get().uri("/v1/ws").to_http_request();
        assert!(auth.authenticate(&req).await.is_err());
    }
}
