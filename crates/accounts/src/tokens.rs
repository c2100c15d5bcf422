//! Issuing tokens: the signing keys every replica shares (with their rotation), access
//! tokens signed with them, and opaque refresh tokens.
//!
//! # Signing keys
//!
//! Ed25519 keys live in the store with a generation number the store keeps unique. On
//! start a replica creates generation 1 if there is no key (two replicas starting at once
//! both try; one wins, the other reads the winner's). The newest generation signs. A
//! rotation stores generation newest + 1; every replica re-reads the keys every
//! [`KEY_RELOAD_INTERVAL`] and signs with the newest from then on. A superseded key stays
//! published for [`RETIRED_KEY_PUBLISHED`] after its successor was created: long enough
//! for the replicas to notice the rotation and for the last token signed with it to
//! expire (at most [`crate::settings::MAX_ACCESS_TOKEN_TTL`]); then it is deleted.
//!
//! # Refresh tokens
//!
//! `<session id>.<64 hex digits>`: 256 random bits, stored only as a SHA-256 digest.
//! Carrying the session id lets any earlier token of a session be recognised as a
//! reuse (it names the session but is not its current token), not only the last one.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chat_model::UserId;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest as _, Sha256};

use crate::error::AccountsError;
use crate::settings::MAX_ACCESS_TOKEN_TTL;
use crate::store::{AccountStore, Digest, Millis, SigningKeyRecord};
use crate::verify::{ALG, AccessClaims, PublicKey, Verified, Verifier, VerifyError};

/// How often every replica re-reads the signing keys (and so starts signing with a key
/// another replica rotated to).
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// How long a superseded key stays published after its successor was created: two
/// reload intervals (replicas still signing with it) plus the longest access-token
/// lifetime, plus a minute for clocks.
pub const RETIRED_KEY_PUBLISHED: Duration =
    Duration::from_secs(2 * KEY_RELOAD_INTERVAL.as_secs() + MAX_ACCESS_TOKEN_TTL.as_secs() + 60);

/// After an unknown `kid`, the keys are re-read at most this often.
const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(5);

/// Milliseconds in a duration, saturating.
pub fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// The key new tokens are signed with.
struct Signer {
    kid: String,
    encoding: EncodingKey,
}

/// A published key and whether it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The key.
    pub key: PublicKey,
    /// True for the newest generation.
    pub active: bool,
}

/// What the replica currently signs and verifies with.
struct Loaded {
    signer: Signer,
    verifier: Verifier,
}

/// The signing keys of this replica, and token issue and verification with them.
pub struct Keys {
    store: Arc<dyn AccountStore>,
    loaded: RwLock<Arc<Loaded>>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    /// When the keys were last re-read for an unknown `kid`.
    last_unknown_reload: Mutex<Option<Instant>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

/// A new key of `generation`.
fn generate(generation: u64, now: Millis) -> Result<SigningKeyRecord, AccountsError> {
    let secret = crate::names::random_bytes::<32>()?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
    let suffix = crate::hex::encode(&crate::names::random_bytes::<4>()?);
    Ok(SigningKeyRecord {
        generation,
        kid: format!("{generation}-{suffix}"),
        private_key: secret.to_vec(),
        public_key: signing.verifying_key().to_bytes().to_vec(),
        created_at: now,
    })
}

fn public(record: &SigningKeyRecord) -> PublicKey {
    PublicKey {
        kid: record.kid.clone(),
        alg: ALG.into(),
        key: record.public_key.clone(),
    }
}

/// The keys still published at `now`, newest first, and the generations to delete.
fn sort_out(mut keys: Vec<SigningKeyRecord>, now: Millis) -> (Vec<SigningKeyRecord>, Vec<u64>) {
    keys.sort_by_key(|k| std::cmp::Reverse(k.generation));
    let mut published = Vec::new();
    let mut expired = Vec::new();
    let mut successor_created: Option<Millis> = None;
    for key in keys {
        let created_at = key.created_at;
        match successor_created {
            Some(at) if now >= at.saturating_add(millis(RETIRED_KEY_PUBLISHED)) => {
                expired.push(key.generation);
            }
            _ => published.push(key),
        }
        successor_created = Some(created_at);
    }
    (published, expired)
}

impl Keys {
    /// Reads the keys, creating the first one if there is none.
    pub async fn load(
        store: Arc<dyn AccountStore>,
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
        now: Millis,
    ) -> Result<Self, AccountsError> {
        if store.signing_keys().await?.is_empty()
            && store.insert_signing_key(&generate(1, now)?).await?
        {
            tracing::info!("created the first access-token signing key");
        }
        let loaded = Self::read(&store, issuer, audience, now).await?;
        Ok(Self {
            store,
            loaded: RwLock::new(Arc::new(loaded)),
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl,
            last_unknown_reload: Mutex::new(None),
        })
    }

    async fn read(
        store: &Arc<dyn AccountStore>,
        issuer: &str,
        audience: &str,
        now: Millis,
    ) -> Result<Loaded, AccountsError> {
        let (published, _) = sort_out(store.signing_keys().await?, now);
        let newest = published
            .first()
            .ok_or_else(|| AccountsError::Internal("no signing key stored".into()))?;
        let der = ed25519_dalek::SigningKey::try_from(newest.private_key.as_slice())
            .map_err(|e| AccountsError::Internal(format!("stored signing key: {e}")))?
            .to_pkcs8_der()
            .map_err(|e| AccountsError::Internal(format!("encoding the signing key: {e}")))?;
        Ok(Loaded {
            signer: Signer {
                kid: newest.kid.clone(),
                encoding: EncodingKey::from_ed_der(der.as_bytes()),
            },
            verifier: Verifier::new(issuer, audience, published.iter().map(public)),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a complete value (it is only ever replaced whole).
        Arc::clone(&self.loaded.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the keys: signs with the newest from now on, and deletes the ones whose
    /// publication ended.
    pub async fn reload(&self, now: Millis) -> Result<(), AccountsError> {
        let (_, expired) = sort_out(self.store.signing_keys().await?, now);
        for generation in expired {
            self.store.delete_signing_key(generation).await?;
            tracing::info!(generation, "retired signing key deleted");
        }
        let loaded = Self::read(&self.store, &self.issuer, &self.audience, now).await?;
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Makes a new key the signing one (see the module documentation); returns the keys
    /// now published.
    pub async fn rotate(&self, now: Millis) -> Result<Vec<Published>, AccountsError> {
        let newest = self
            .store
            .signing_keys()
            .await?
            .iter()
            .map(|k| k.generation)
            .max()
            .unwrap_or(0);
        let key = generate(newest + 1, now)?;
        if self.store.insert_signing_key(&key).await? {
            tracing::info!(kid = %key.kid, "signing key rotated");
        } else {
            tracing::info!("another replica rotated the signing key at the same time");
        }
        self.reload(now).await?;
        self.published(now).await
    }

    /// The keys a verifier needs now, newest (the signing one) first.
    pub async fn published(&self, now: Millis) -> Result<Vec<Published>, AccountsError> {
        let (published, _) = sort_out(self.store.signing_keys().await?, now);
        Ok(published
            .iter()
            .enumerate()
            .map(|(i, key)| Published {
                key: public(key),
                active: i == 0,
            })
            .collect())
    }

    /// The access-token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// An access token for `user` in `session`, issued at `now`.
    pub fn sign(&self, user: &UserId, session: &str, now: Millis) -> Result<String, AccountsError> {
        let loaded = self.current();
        let iat = u64::try_from(now / 1000).unwrap_or(0);
        let claims = AccessClaims {
            sub: user.to_string(),
            sid: session.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + self.access_ttl.as_secs(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(loaded.signer.kid.clone());
        jsonwebtoken::encode(&header, &claims, &loaded.signer.encoding)
            .map_err(|e| AccountsError::Internal(format!("signing an access token: {e}")))
    }

    /// Verifies an access token with the published keys; a `kid` this replica does not
    /// know (another replica rotated) re-reads the keys once (at most every few seconds).
    pub async fn verify(&self, token: &str, now: Millis) -> Result<Verified, VerifyError> {
        match self.current().verifier.verify(token) {
            Err(VerifyError::UnknownKey(kid)) => {
                let due = {
                    let mut last = self
                        .last_unknown_reload
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_COOLDOWN);
                    if due {
                        *last = Some(Instant::now());
                    }
                    due
                };
                if !due {
                    return Err(VerifyError::UnknownKey(kid));
                }
                if let Err(e) = self.reload(now).await {
                    tracing::warn!(error = %e, "re-reading the signing keys failed");
                }
                self.current().verifier.verify(token)
            }
            other => other,
        }
    }
}

/// An opaque refresh token. `Debug` never prints its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    session: String,
    secret: [u8; 32],
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// What keys the sealing of a rotated token (see [`RefreshToken::seal`]).
const SEAL_CONTEXT: &[u8] = b"chat-accounts refresh grace v1";

impl RefreshToken {
    /// A new token of `session`.
    pub fn generate(session: &str) -> Result<Self, AccountsError> {
        Ok(Self {
            session: session.to_owned(),
            secret: crate::names::random_bytes()?,
        })
    }

    /// Reads a token; `None` if it is not one.
    pub fn parse(token: &str) -> Option<Self> {
        let (session, secret) = token.split_once('.')?;
        if !session.starts_with("s_") || session.len() > 64 {
            return None;
        }
        let secret = crate::hex::decode(secret)?.try_into().ok()?;
        Some(Self {
            session: session.to_owned(),
            secret,
        })
    }

    /// The token as the client holds it.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.session, crate::hex::encode(&self.secret))
    }

    /// Its session.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// What the store keeps: SHA-256 of the secret (the secret has 256 random bits, so a
    /// fast hash is enough).
    pub fn digest(&self) -> Digest {
        Sha256::digest(self.secret).into()
    }

    /// The key only a holder of this token can derive, for its successor's secret.
    fn seal_key(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(SEAL_CONTEXT);
        hasher.update(self.secret);
        hasher.finalize().into()
    }

    /// `next`'s secret, encrypted with a key derived from this token (a one-time pad:
    /// each token seals exactly one successor). Stored with the rotation, so presenting
    /// this token again within the reuse grace yields the same successor, and a copy of
    /// the store yields nothing.
    pub fn seal(&self, next: &Self) -> Vec<u8> {
        let key = self.seal_key();
        next.secret.iter().zip(key).map(|(s, k)| s ^ k).collect()
    }

    /// The successor [`RefreshToken::seal`] sealed; `None` if `sealed` is not 32 bytes.
    pub fn unseal(&self, sealed: &[u8]) -> Option<Self> {
        let key = self.seal_key();
        let secret: [u8; 32] = sealed
            .iter()
            .zip(key)
            .map(|(s, k)| s ^ k)
            .collect::<Vec<u8>>()
            .try_into()
            .ok()?;
        Some(Self {
            session: self.session.clone(),
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_round_trip_and_seal() {
        let token = RefreshToken::generate("s_0123").expect("token");
        let text = token.encode();
        assert!(text.starts_with("s_0123."));
        assert_eq!(text.len(), "s_0123.".len() + 64);
        assert_eq!(RefreshToken::parse(&text), Some(token.clone()));
        for bad in [
            "",
            "s_1",
            "x_1.00",
            "s_1.zz",
            &format!("s_1.{}", "0".repeat(62)),
        ] {
            assert_eq!(RefreshToken::parse(bad), None, "{bad}");
        }
        assert!(!format!("{token:?}").contains(&text[7..]));
        let next = RefreshToken::generate("s_0123").expect("token");
        let sealed = token.seal(&next);
        assert_ne!(sealed, next.secret.to_vec());
        assert_eq!(token.unseal(&sealed), Some(next.clone()));
        assert_ne!(next.unseal(&sealed), Some(next));
        assert_ne!(
            token.digest(),
            RefreshToken::generate("s_0123").expect("t").digest()
        );
    }

    fn key(generation: u64, created_at: Millis) -> SigningKeyRecord {
        generate(generation, created_at).expect("key")
    }

    #[test]
    fn superseded_keys_stay_published_for_a_while() {
        let retire = millis(RETIRED_KEY_PUBLISHED);
        let keys = vec![key(1, 0), key(3, 2_000_000), key(2, 1_000_000)];
        let (published, expired) = sort_out(keys.clone(), 1_000_000 + retire - 1);
        let generations: Vec<u64> = published.iter().map(|k| k.generation).collect();
        assert_eq!(generations, [3, 2, 1]);
        assert!(expired.is_empty());
        let (published, expired) = sort_out(keys.clone(), 1_000_000 + retire);
        assert_eq!(
            published.iter().map(|k| k.generation).collect::<Vec<_>>(),
            [3, 2]
        );
        assert_eq!(expired, [1]);
        let (published, expired) = sort_out(keys, 2_000_000 + retire);
        assert_eq!(
            published.iter().map(|k| k.generation).collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(expired, [2, 1]);
    }
}
