//! Who is connecting: JWT HS256 (production) or a plain `?user=` (dev mode, opt-in).

use actix_web::HttpRequest;
use actix_web::http::header;
use chat_model::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Longest token accepted; anything larger is refused before any parsing.
const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `exp`, in seconds: none. docs/protocol.md says `exp` is
/// honoured and an expired token is refused; a token that expired a second ago is
/// expired. Keep the issuer's clock in sync (NTP) rather than widening this.
const EXP_LEEWAY_SECS: u64 = 0;

/// How clients prove who they are.
#[derive(Clone)]
pub enum Authenticator {
    /// `?token=` or `Authorization: Bearer`, HS256 only; `sub` is the user id, `exp` is
    /// checked when present.
    Jwt {
        /// The HS256 key; `Debug` never prints it.
        key: DecodingKey,
        validation: Box<Validation>,
    },
    /// Trust `?user=<id>` (JWTs are still accepted). Only for the single-machine default
    /// and tests.
    Dev {
        /// Present when a secret is configured too, so tokens keep working in dev mode.
        jwt: Option<Box<Authenticator>>,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Jwt { .. } => f.write_str("Authenticator::Jwt(<secret>)"),
            Self::Dev { jwt } => write!(f, "Authenticator::Dev {{ jwt: {} }}", jwt.is_some()),
        }
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
    #[error("invalid user id in token: {0}")]
    BadSubject(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    /// JWT mode with an HS256 secret (refused when empty).
    pub fn jwt(secret: &[u8]) -> Result<Self, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["sub"]);
        validation.validate_exp = true;
        validation.leeway = EXP_LEEWAY_SECS;
        // The protocol names no audience; a token that carries one (many identity
        // providers add `aud`) is not refused for it.
        validation.validate_aud = false;
        let key = DecodingKey::from_secret(secret)
            .map_err(|e| AuthError::Invalid(format!("unusable JWT secret: {e}")))?;
        Ok(Self::Jwt {
            key,
            validation: Box::new(validation),
        })
    }

    /// Dev mode; tokens are still verified when a secret is given.
    pub fn dev(secret: Option<&[u8]>) -> Result<Self, AuthError> {
        let jwt = secret.map(Self::jwt).transpose()?.map(Box::new);
        Ok(Self::Dev { jwt })
    }

    /// Whether `?user=` is accepted.
    pub fn is_dev(&self) -> bool {
        matches!(self, Self::Dev { .. })
    }

    /// Authenticates an HTTP request (the WebSocket upgrade or an HTTP endpoint).
    pub fn authenticate(&self, req: &HttpRequest) -> Result<UserId, AuthError> {
        let query = QueryAuth::from_request(req);
        let token = bearer(req).or(query.token);
        match self {
            Self::Jwt { .. } => self.verify(token.ok_or(AuthError::Missing)?.as_str()),
            Self::Dev { jwt } => match (token, query.user, jwt) {
                (Some(token), _, Some(jwt)) => jwt.verify(&token),
                (_, Some(user), _) => {
                    UserId::parse(&user).map_err(|e| AuthError::BadSubject(e.to_string()))
                }
                (Some(_), None, None) => Err(AuthError::Invalid(
                    "dev mode without CHAT_JWT_SECRET cannot verify tokens; use ?user=".into(),
                )),
                (None, None, _) => Err(AuthError::Missing),
            },
        }
    }

    /// Verifies a JWT and returns its subject.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let Self::Jwt { key, validation } = self else {
            return Err(AuthError::Invalid("no JWT secret configured".into()));
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        UserId::parse(&data.claims.sub).map_err(|e| AuthError::BadSubject(e.to_string()))
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

    #[test]
    fn jwt_mode() {
        let auth = Authenticator::jwt(b"s3cret").expect("valid secret");
        let good = token(
            serde_json::json!({"sub": "alice", "exp": now() + 60}),
            Algorithm::HS256,
            b"s3cret",
        );
        let req = TestRequest::get()
            .uri(&format!("/v1/ws?token={good}"))
            .to_http_request();
        assert_eq!(auth.authenticate(&req).expect("valid").as_str(), "alice");
        let req = TestRequest::get()
            .insert_header(("Authorization", format!("Bearer {good}")))
            .to_http_request();
        assert_eq!(auth.authenticate(&req).expect("valid").as_str(), "alice");
        // An audience claim is not a reason to refuse.
        let with_aud = token(
            serde_json::json!({"sub": "alice", "aud": "chat", "exp": now() + 60}),
            Algorithm::HS256,
            b"s3cret",
        );
        let req = TestRequest::get()
            .uri(&format!("/v1/ws?token={with_aud}"))
            .to_http_request();
        assert_eq!(auth.authenticate(&req).expect("valid").as_str(), "alice");

        let refused = |t: String| {
            let req = TestRequest::get()
                .uri(&format!("/v1/ws?token={t}"))
                .to_http_request();
            auth.authenticate(&req).is_err()
        };
        assert!(refused(token(
            serde_json::json!({"sub": "alice", "exp": now() - 3600}),
            Algorithm::HS256,
            b"s3cret"
        )));
        // Expired a few seconds ago: no leeway.
        assert!(refused(token(
            serde_json::json!({"sub": "alice", "exp": now() - 2}),
            Algorithm::HS256,
            b"s3cret"
        )));
        assert!(refused(token(
            serde_json::json!({"sub": "alice"}),
            Algorithm::HS256,
            b"wrong"
        )));
        assert!(refused(token(
            serde_json::json!({"sub": "alice"}),
            Algorithm::HS384,
            b"s3cret"
        )));
        assert!(refused(token(
            serde_json::json!({"exp": now() + 60}),
            Algorithm::HS256,
            b"s3cret"
        )));
        assert!(refused(token(
            serde_json::json!({"sub": "al/ice"}),
            Algorithm::HS256,
            b"s3cret"
        )));
        // alg none: header {"alg":"none"}, no signature.
        assert!(refused("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.".into()));
        assert!(refused("x".repeat(MAX_TOKEN_BYTES + 1)));
        let dev = TestRequest::get()
            .uri("/v1/ws?user=alice")
            .to_http_request();
        assert!(matches!(auth.authenticate(&dev), Err(AuthError::Missing)));
    }

    #[test]
    fn dev_mode() {
        let auth = Authenticator::dev(None).expect("no secret needed");
        let req = TestRequest::get().uri("/v1/ws?user=bob").to_http_request();
        assert_eq!(auth.authenticate(&req).expect("valid").as_str(), "bob");
        let req = TestRequest::get()
            .uri("/v1/ws?user=b%20ob")
            .to_http_request();
        assert!(auth.authenticate(&req).is_err());
        let req = TestRequest::get().uri("/v1/ws").to_http_request();
        assert!(auth.authenticate(&req).is_err());
    }
}
