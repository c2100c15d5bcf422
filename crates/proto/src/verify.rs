//! Verifying access tokens with the published public keys: what the accounts service
//! does for its Bearer calls, and what a gateway does on every connect (it needs only
//! this module and the keys of `SigningKeys`, no store).
//!
//! The algorithm is pinned per key: a key is published with `alg` `EdDSA` and a token
//! naming it must say `EdDSA` in its header, so `alg: none`, an HS256 token "signed"
//! with the public key's bytes, or any other algorithm is refused before its signature
//! is looked at; so is a token without a `kid` or with one no published key has (the
//! caller may then refetch the keys: [`VerifyError::UnknownKey`]). `iss`, `aud`, `exp`,
//! `iat`, `sub` and `sid` are required; `exp` is enforced with no leeway.

use std::collections::HashMap;
use std::fmt;

use chat_model::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The only algorithm accounts signs with.
pub const ALG: &str = "EdDSA";

/// The longest token looked at (the gateway's JWT limit).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// Issuer (`CHAT_TOKEN_ISSUER`).
    pub iss: String,
    /// Audience (`CHAT_TOKEN_AUDIENCE`).
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// A public key as `SigningKeys` publishes it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The JWT `kid`.
    pub kid: String,
    /// The algorithm tokens with this kid must use ([`ALG`]).
    pub alg: String,
    /// The raw Ed25519 public key.
    pub key: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl From<crate::accounts::SigningKey> for PublicKey {
    fn from(key: crate::accounts::SigningKey) -> Self {
        Self {
            kid: key.kid,
            alg: key.alg,
            key: key.public_key,
        }
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `sub`, a valid user id.
    pub user: UserId,
    /// `sid`.
    pub session: String,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Why a token was refused. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, too long, or without a `kid`.
    #[error("malformed token")]
    Malformed,
    /// No published key has this `kid` (a key newer than the caller's copy, or a forgery).
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The header's `alg` is not the key's.
    #[error("algorithm {0} not allowed for this key")]
    WrongAlgorithm(String),
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Bad signature, issuer, audience or claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// A published key ready to verify with.
struct Key {
    alg: Algorithm,
    decoding: DecodingKey,
}

/// Verifies access tokens against a set of published keys.
pub struct Verifier {
    keys: HashMap<String, Key>,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Verifier")
            .field("kids", &kids)
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .finish()
    }
}

impl Verifier {
    /// A verifier of tokens from `issuer` for `audience`, with `keys`. Keys with another
    /// algorithm than [`ALG`] or not 32 bytes long are left out (logged).
    pub fn new(issuer: &str, audience: &str, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 0;
        let keys = keys
            .into_iter()
            .filter_map(|key| {
                if key.alg != ALG || key.key.len() != 32 {
                    tracing::warn!(kid = %key.kid, alg = %key.alg, "unusable signing key left out");
                    return None;
                }
                let decoding = DecodingKey::from_ed_der(&key.key);
                Some((
                    key.kid,
                    Key {
                        alg: Algorithm::EdDSA,
                        decoding,
                    },
                ))
            })
            .collect();
        Self { keys, validation }
    }

    /// Whether a key with this `kid` is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Checks `token` and returns whom it speaks for.
    pub fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let kid = header.kid.ok_or(VerifyError::Malformed)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.chars().take(64).collect()))?;
        if header.alg != key.alg {
            return Err(VerifyError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => VerifyError::Expired,
                kind => VerifyError::Invalid(format!("{kind:?}")),
            })?;
        let claims = data.claims;
        let user =
            UserId::parse(&claims.sub).map_err(|e| VerifyError::Invalid(format!("sub: {e}")))?;
        if claims.sid.is_empty() {
            return Err(VerifyError::Invalid("empty sid".into()));
        }
        Ok(Verified {
            user,
            session: claims.sid,
            expires_at: claims.exp,
        })
    }
}
