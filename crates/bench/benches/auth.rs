//! What verifying a client's token costs the gateway on every connect: an accounts
//! access token (EdDSA, checked with the published public key by
//! `chat_proto::verify::Verifier`, which the gateway's key cache calls) against an
//! external issuer's HS256 token (one HMAC), the one the gateway verified before accounts.

use std::hint::black_box;

use chat_proto::verify::{PublicKey, Verifier};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

const ISSUER: &str = "chat-accounts";
const AUDIENCE: &str = "chat";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn verify(c: &mut Criterion) {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let der = signing.to_pkcs8_der().expect("encodes");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let exp = now() + 3600;
    let claims = serde_json::json!({
        "sub": "u0196d7c3a1b2", "sid": "s0196d7c3a1b2c3d4", "iss": ISSUER, "aud": AUDIENCE,
        "iat": now(), "exp": exp,
    });
    let eddsa = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes()))
        .expect("signs");
    let verifier = Verifier::new(
        ISSUER,
        AUDIENCE,
        [PublicKey {
            kid: "k1".into(),
            alg: "EdDSA".into(),
            key: signing.verifying_key().to_bytes().to_vec(),
        }],
    );
    verifier.verify(&eddsa).expect("a valid token");

    let secret = b"bench-secret-0123456789abcdef0123";
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("signs");
    let key = DecodingKey::from_secret(secret).expect("key");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<serde_json::Value>(&hs256, &key, &validation).expect("valid");

    let mut g = c.benchmark_group("verify_token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("accounts_eddsa", |b| {
        b.iter(|| verifier.verify(black_box(&eddsa)))
    });
    g.bench_function("external_hs256", |b| {
        b.iter(|| jsonwebtoken::decode::<serde_json::Value>(black_box(&hs256), &key, &validation))
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
