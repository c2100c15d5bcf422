//! The gRPC surface, end to end: a real `AccountsServer` on port 0 over an embedded
//! store, driven by the generated tonic client, with the real argon2id parameters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_accounts::revocations::NoRevocations;
use chat_accounts::store::embedded::EmbeddedStore;
use chat_accounts::throttle::{MemoryThrottle, Policies, Policy};
use chat_accounts::verify::{PublicKey, Verifier, VerifyError};
use chat_accounts::{AccountsServer, Settings};
use chat_proto::accounts::accounts_client::AccountsClient;
use chat_proto::accounts::error_detail::Reason;
use chat_proto::accounts::{
    AuthReply, BearerRequest, ChangePasswordRequest, DeleteAccountRequest, Empty, ErrorDetail,
    GetUsersRequest, LogInRequest, LogOutRequest, RefreshRequest, SearchUsersRequest,
    SignUpRequest, SigningKeysReply, UpdateDisplayNameRequest,
};
use chat_testkit::grpc::{self, Served};
use tonic::transport::Channel;

const PASSWORD: &str = "correct horse battery staple";
const GRACE: Duration = Duration::from_millis(1500);

/// A running server and a client of it; stopped on drop of the token.
struct Running {
    client: AccountsClient<Channel>,
    served: Served,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(policies: Policies) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            service: chat_runtime::env::ServiceSettings {
                grpc_addr: ([127, 0, 0, 1], 0).into(),
                ..Settings::default().service
            },
            refresh_reuse_grace: GRACE,
            // The timing test compares the hashes' own cost, not the scheduler's.
            hash_priority: chat_accounts::password::HashPriority::Normal,
            ..Settings::default()
        };
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let throttle = Arc::new(MemoryThrottle::new(policies));
        let server = AccountsServer::bind(
            &settings,
            store,
            throttle,
            Arc::new(NoRevocations),
            &mut chat_metrics::Metrics::new("test"),
        )
        .await
        .expect("bind");
        let served = grpc::serve(server.local_addr(), |shutdown| server.run(shutdown));
        Self {
            client: AccountsClient::new(served.channel().await),
            served,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.served.stop().await;
    }

    async fn sign_up(&self, username: &str) -> AuthReply {
        self.client
            .clone()
            .sign_up(SignUpRequest {
                username: username.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                client_addr: "192.0.2.1".into(),
            })
            .await
            .expect("sign up")
            .into_inner()
    }

    async fn log_in(&self, username: &str, password: &str) -> Result<AuthReply, tonic::Status> {
        self.client
            .clone()
            .log_in(LogInRequest {
                username: username.into(),
                password: password.into(),
                client_addr: "192.0.2.7".into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn refresh(&self, token: &str) -> Result<AuthReply, tonic::Status> {
        self.client
            .clone()
            .refresh(RefreshRequest {
                refresh_token: token.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn me(&self, access_token: &str) -> Result<String, tonic::Status> {
        let reply = self
            .client
            .clone()
            .get_user(BearerRequest {
                access_token: access_token.into(),
            })
            .await?;
        Ok(reply.into_inner().user.expect("user").display_name)
    }

    async fn keys(&self) -> SigningKeysReply {
        self.client
            .clone()
            .signing_keys(Empty {})
            .await
            .expect("keys")
            .into_inner()
    }
}

/// The reason of a refusal, and its retry-after.
fn reason(status: &tonic::Status) -> (Reason, u32) {
    let detail =
        ErrorDetail::from_status(status).unwrap_or_else(|| panic!("no detail: {status:?}"));
    (detail.reason(), detail.retry_after_secs)
}

fn verifier(keys: &SigningKeysReply) -> Verifier {
    Verifier::new(
        "chat-accounts",
        "chat",
        keys.keys.iter().map(|k| PublicKey {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            key: k.public_key.clone(),
        }),
    )
}

/// No throttling in the way of tests about something else.
fn lenient() -> Policies {
    let never = Policy {
        free: u32::MAX,
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        forget_after: Duration::from_secs(1),
    };
    Policies {
        log_in_user: never,
        log_in_addr: never,
        sign_up_addr: never,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_journey() {
    let server = Running::start(lenient()).await;
    let mut client = server.client.clone();

    // Sign up: a user with a server-made id that is a valid chat user id.
    let first = server.sign_up("Alice").await;
    let alice = first.user.clone().expect("user");
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.display_name, "alice");
    chat_model::UserId::parse(&alice.id).expect("a valid chat user id");
    assert_eq!(first.expires_in, 600);
    assert!(first.refresh_expires_in > 29 * 24 * 3600);
    let shown = format!("{first:?}");
    assert!(!shown.contains(&first.access_token) && !shown.contains(&first.refresh_token));
    let verified = verifier(&server.keys().await)
        .verify(&first.access_token)
        .expect("a token the published keys verify");
    assert_eq!(verified.user.as_str(), alice.id);
    assert_eq!(server.me(&first.access_token).await.expect("me"), "alice");

    // A second device logs in (any case of the name): its own session.
    let phone = server.log_in("ALICE", PASSWORD).await.expect("log in");
    assert_eq!(phone.user.as_ref().map(|u| &u.id), Some(&alice.id));
    assert_ne!(phone.refresh_token, first.refresh_token);

    // Refresh rotates; the retired token within the grace gets the same new one (two
    // tabs at once), after the grace it ends the whole session.
    let rotated = server.refresh(&phone.refresh_token).await.expect("refresh");
    assert_ne!(rotated.refresh_token, phone.refresh_token);
    let again = server
        .refresh(&phone.refresh_token)
        .await
        .expect("within grace");
    assert_eq!(again.refresh_token, rotated.refresh_token);
    let next = server
        .refresh(&rotated.refresh_token)
        .await
        .expect("refresh");
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    let reused = server
        .refresh(&rotated.refresh_token)
        .await
        .expect_err("reused");
    assert_eq!(reason(&reused).0, Reason::InvalidToken);
    let ended = server
        .refresh(&next.refresh_token)
        .await
        .expect_err("session ended");
    assert_eq!(reason(&ended).0, Reason::InvalidToken);
    let ended = server
        .me(&next.access_token)
        .await
        .expect_err("session ended");
    assert_eq!(reason(&ended).0, Reason::InvalidToken);
    // The first device is untouched.
    assert_eq!(server.me(&first.access_token).await.expect("me"), "alice");

    // Log-out ends that session only, and checks the refresh token belongs to it.
    let laptop = server.log_in("alice", PASSWORD).await.expect("log in");
    let wrong = client
        .log_out(LogOutRequest {
            access_token: laptop.access_token.clone(),
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .expect_err("another session's token");
    assert_eq!(reason(&wrong).0, Reason::InvalidToken);
    client
        .log_out(LogOutRequest {
            access_token: laptop.access_token.clone(),
            refresh_token: laptop.refresh_token.clone(),
        })
        .await
        .expect("log out");
    assert!(server.refresh(&laptop.refresh_token).await.is_err());
    assert!(server.me(&laptop.access_token).await.is_err());
    assert!(server.me(&first.access_token).await.is_ok());

    // Rename.
    let renamed = client
        .update_display_name(UpdateDisplayNameRequest {
            access_token: first.access_token.clone(),
            display_name: "  Alice Liddell ".into(),
        })
        .await
        .expect("rename")
        .into_inner();
    assert_eq!(renamed.user.expect("user").display_name, "Alice Liddell");

    // Find people: by id and by prefix of the display name.
    let bob = server.sign_up("bob").await;
    let bob_id = bob.user.expect("user").id;
    let found = client
        .get_users(GetUsersRequest {
            access_token: bob.access_token.clone(),
            ids: vec![alice.id.clone(), "u_nobody".into(), bob_id.clone()],
        })
        .await
        .expect("users")
        .into_inner();
    let ids: Vec<&str> = found.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, [alice.id.as_str(), bob_id.as_str()]);
    for (query, want) in [("ALICE L", 1), ("lidd", 0)] {
        let found = client
            .search_users(SearchUsersRequest {
                access_token: bob.access_token.clone(),
                query: query.into(),
                limit: 0,
            })
            .await
            .expect("search")
            .into_inner();
        assert_eq!(
            found.users.len(),
            want,
            "{query}: a prefix, not a substring"
        );
    }

    // Password change ends every other session, keeps the caller's.
    let other = server.log_in("alice", PASSWORD).await.expect("log in");
    let new_password = "purple elephant sings opera";
    let wrong = client
        .change_password(ChangePasswordRequest {
            access_token: first.access_token.clone(),
            current_password: "not it at all".into(),
            new_password: new_password.into(),
        })
        .await
        .expect_err("wrong current password");
    assert_eq!(reason(&wrong).0, Reason::InvalidCredentials);
    let weak = client
        .change_password(ChangePasswordRequest {
            access_token: first.access_token.clone(),
            current_password: PASSWORD.into(),
            new_password: "password1".into(),
        })
        .await
        .expect_err("weak");
    assert_eq!(reason(&weak).0, Reason::WeakPassword);
    client
        .change_password(ChangePasswordRequest {
            access_token: first.access_token.clone(),
            current_password: PASSWORD.into(),
            new_password: new_password.into(),
        })
        .await
        .expect("change password");
    assert!(server.me(&other.access_token).await.is_err());
    assert!(server.refresh(&other.refresh_token).await.is_err());
    assert!(server.me(&first.access_token).await.is_ok());
    let old = server
        .log_in("alice", PASSWORD)
        .await
        .expect_err("old password");
    assert_eq!(reason(&old).0, Reason::InvalidCredentials);
    server
        .log_in("alice", new_password)
        .await
        .expect("new password");

    // Delete: every session ends, the name stays reserved.
    client
        .delete_account(DeleteAccountRequest {
            access_token: first.access_token.clone(),
            password: new_password.into(),
        })
        .await
        .expect("delete");
    assert!(server.me(&first.access_token).await.is_err());
    let gone = server
        .log_in("alice", new_password)
        .await
        .expect_err("disabled");
    assert_eq!(reason(&gone).0, Reason::InvalidCredentials);
    let taken = client
        .sign_up(SignUpRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            client_addr: String::new(),
        })
        .await
        .expect_err("name reserved");
    assert_eq!(reason(&taken).0, Reason::UsernameTaken);
    let found = client
        .get_users(GetUsersRequest {
            access_token: bob.access_token.clone(),
            ids: vec![alice.id.clone()],
        })
        .await
        .expect("users")
        .into_inner();
    assert!(found.users.is_empty());

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated() {
    let server = Running::start(lenient()).await;
    let mut client = server.client.clone();
    let sign_up = |username: &str, password: &str, display_name: &str| SignUpRequest {
        username: username.into(),
        password: password.into(),
        display_name: display_name.into(),
        client_addr: String::new(),
    };
    for (req, want) in [
        (sign_up("ab", PASSWORD, ""), Reason::BadRequest),
        (sign_up("al ice", PASSWORD, ""), Reason::BadRequest),
        (sign_up("alice", PASSWORD, "bell\u{7}"), Reason::BadRequest),
        (sign_up("alice", "short", ""), Reason::WeakPassword),
        (sign_up("alice", "alice2024", ""), Reason::WeakPassword),
        (
            SignUpRequest {
                client_addr: "not an address".into(),
                ..sign_up("alice", PASSWORD, "")
            },
            Reason::BadRequest,
        ),
    ] {
        let what = format!("{req:?}");
        let status = client.sign_up(req).await.expect_err(&what);
        assert_eq!(reason(&status).0, want, "{what}: {status:?}");
        assert!(!status.message().is_empty());
    }
    let bob = server.sign_up("bob").await;
    let too_many = client
        .get_users(GetUsersRequest {
            access_token: bob.access_token.clone(),
            ids: (0..501).map(|i| format!("u_{i}")).collect(),
        })
        .await
        .expect_err("501 ids");
    assert_eq!(reason(&too_many).0, Reason::BadRequest);
    for (query, limit) in [("", 10), ("bo", 51)] {
        let status = client
            .search_users(SearchUsersRequest {
                access_token: bob.access_token.clone(),
                query: query.into(),
                limit,
            })
            .await
            .expect_err("bad search");
        assert_eq!(reason(&status).0, Reason::BadRequest);
    }
    let found = client
        .search_users(SearchUsersRequest {
            access_token: bob.access_token.clone(),
            query: "BO".into(),
            limit: 50,
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.users.len(), 1);
    // Bearer calls without a valid token.
    for token in ["", "nope", &bob.refresh_token] {
        let status = client
            .get_user(BearerRequest {
                access_token: token.into(),
            })
            .await
            .expect_err("no token");
        assert_eq!(reason(&status).0, Reason::InvalidToken);
    }
    for token in ["", "s_x.00", "garbage"] {
        let status = server.refresh(token).await.expect_err("bad refresh token");
        assert_eq!(reason(&status).0, Reason::InvalidToken);
    }
    server.stop().await;
}

/// Forged tokens a verifier must refuse, built on the real published key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_refuses_forgeries_and_follows_rotation() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    let server = Running::start(lenient()).await;
    let alice = server.sign_up("alice").await;
    let keys = server.keys().await;
    assert_eq!(keys.keys.len(), 1);
    let key = &keys.keys[0];
    assert!(key.active);
    assert_eq!(key.alg, "EdDSA");
    assert_eq!(key.public_key.len(), 32);
    let published = verifier(&keys);
    let valid = published.verify(&alice.access_token).expect("valid");

    let claims = |aud: &str, exp: u64| {
        serde_json::json!({
            "sub": valid.user.as_str(), "sid": valid.session, "iss": "chat-accounts",
            "aud": aud, "iat": exp - 600, "exp": exp,
        })
    };
    let exp = valid.expires_at;
    // HS256 "signed" with the public key's bytes, under the real kid.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims("chat", exp),
        &EncodingKey::from_secret(&key.public_key).expect("hmac key"),
    )
    .expect("encode");
    assert!(matches!(
        published.verify(&confused),
        Err(VerifyError::WrongAlgorithm(_))
    ));
    // alg none, with the real kid and the real signature stripped.
    let b64 = |v: &serde_json::Value| {
        use std::fmt::Write as _;
        // base64url without padding, written out here to need no extra crate.
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = v.to_string().into_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                let _ = write!(
                    out,
                    "{}",
                    ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
                );
            }
        }
        out
    };
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "kid": key.kid, "typ": "JWT"})),
        b64(&claims("chat", exp))
    );
    assert!(published.verify(&none).is_err());
    // A tampered payload under a real signature.
    let parts: Vec<&str> = alice.access_token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims("chat", exp + 3600)),
        parts[2]
    );
    assert!(matches!(
        published.verify(&tampered),
        Err(VerifyError::Invalid(_))
    ));

    // Tokens signed with a key of the test's own, which one verifier trusts as "own-1".
    let own = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let der = {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        own.to_pkcs8_der().expect("der")
    };
    let sign = |kid: &str, claims: serde_json::Value| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes()))
            .expect("sign")
    };
    let trusting = Verifier::new(
        "chat-accounts",
        "chat",
        [PublicKey {
            kid: "own-1".into(),
            alg: "EdDSA".into(),
            key: own.verifying_key().to_bytes().to_vec(),
        }],
    );
    let now = chat_model::Timestamp::now().millis() as u64 / 1000;
    trusting
        .verify(&sign("own-1", claims("chat", now + 60)))
        .expect("the control token verifies");
    assert!(matches!(
        published.verify(&sign("own-1", claims("chat", now + 60))),
        Err(VerifyError::UnknownKey(_))
    ));
    assert!(matches!(
        trusting.verify(&sign("own-1", claims("chat", now - 1))),
        Err(VerifyError::Expired)
    ));
    assert!(matches!(
        trusting.verify(&sign("own-1", claims("other-service", now + 60))),
        Err(VerifyError::Invalid(_))
    ));
    let mut no_sid = claims("chat", now + 60);
    no_sid.as_object_mut().expect("object").remove("sid");
    assert!(trusting.verify(&sign("own-1", no_sid)).is_err());
    assert!(trusting.verify(&format!("{}x", "a".repeat(4096))).is_err());

    // Rotation: the new key signs, the old one stays published, so tokens of both verify.
    let rotated = server
        .client
        .clone()
        .rotate_signing_key(Empty {})
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(rotated.keys.len(), 2);
    assert!(rotated.keys[0].active && !rotated.keys[1].active);
    assert_eq!(rotated.keys[1].kid, key.kid);
    let fresh = server.log_in("alice", PASSWORD).await.expect("log in");
    let header = jsonwebtoken::decode_header(&fresh.access_token).expect("header");
    assert_eq!(header.kid.as_deref(), Some(rotated.keys[0].kid.as_str()));
    let both = verifier(&server.keys().await);
    both.verify(&alice.access_token)
        .expect("old token still good");
    both.verify(&fresh.access_token).expect("new token good");
    assert!(matches!(
        published.verify(&fresh.access_token),
        Err(VerifyError::UnknownKey(_))
    ));
    // The server itself accepts both at once.
    server.me(&alice.access_token).await.expect("old token");
    server.me(&fresh.access_token).await.expect("new token");
    server.stop().await;
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// An unknown user costs the same hash as a wrong password: the answers are alike and
/// take about the same time. Compared in adjacent pairs (the order alternating), and the
/// median of the pairs' ratios must be within 25%: the other tests of this binary hash
/// at the same time, and a pair's two attempts share whatever load there is, where two
/// medians taken over the whole run would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_take_about_the_same_time() {
    const PAIRS: usize = 15;
    let server = Running::start(lenient()).await;
    server.sign_up("alice").await;
    // Warm up both paths.
    let _ = server.log_in("nobody", "wrong password!").await;
    let _ = server.log_in("alice", "wrong password!").await;
    let mut ratios = Vec::new();
    let (mut unknown_all, mut wrong_all) = (Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let unknown_user = format!("nobody{i}");
        let order = if i % 2 == 0 {
            [unknown_user.as_str(), "alice"]
        } else {
            ["alice", unknown_user.as_str()]
        };
        let mut took = [Duration::ZERO; 2];
        for user in order {
            let start = Instant::now();
            let status = server
                .log_in(user, "wrong password!")
                .await
                .expect_err("refused");
            let slot = usize::from(user == "alice");
            took[slot] = start.elapsed();
            assert_eq!(reason(&status).0, Reason::InvalidCredentials);
            assert_eq!(status.message(), "wrong username or password");
        }
        ratios.push(took[0].as_secs_f64() / took[1].as_secs_f64());
        unknown_all.push(took[0]);
        wrong_all.push(took[1]);
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let (unknown, wrong) = (median(unknown_all), median(wrong_all));
    eprintln!(
        "log-in refusal: unknown user median {unknown:?}, wrong password median {wrong:?}, \
         median pair ratio {ratio:.3}"
    );
    assert!(
        (0.8..=1.25).contains(&ratio),
        "median unknown/wrong ratio {ratio:.3} (unknown {unknown:?}, wrong {wrong:?})"
    );
    server.stop().await;
}

/// Log-in delays grow per username and reset on success; sign-ups are throttled per
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_grows_and_resets_on_success() {
    let second = Duration::from_secs(1);
    let policy = |free| Policy {
        free,
        first_delay: second,
        max_delay: 4 * second,
        forget_after: Duration::from_secs(3600),
    };
    let server = Running::start(Policies {
        log_in_user: policy(2),
        log_in_addr: policy(100),
        sign_up_addr: policy(1),
    })
    .await;
    server.sign_up("alice").await;

    let attempt = |password: &'static str| server.log_in("alice", password);
    for _ in 0..3 {
        let status = attempt("wrong password!").await.expect_err("wrong");
        assert_eq!(reason(&status).0, Reason::InvalidCredentials);
    }
    // Three failures, two free: the next attempt waits a second, even with the right
    // password, and is not counted.
    let limited = attempt(PASSWORD).await.expect_err("throttled");
    assert_eq!(reason(&limited), (Reason::RateLimited, 1));
    tokio::time::sleep(second).await;
    let status = attempt("wrong password!").await.expect_err("wrong");
    assert_eq!(reason(&status).0, Reason::InvalidCredentials);
    // Four failures: now two seconds.
    let limited = attempt(PASSWORD).await.expect_err("throttled");
    assert_eq!(reason(&limited), (Reason::RateLimited, 2));
    tokio::time::sleep(2 * second).await;
    attempt(PASSWORD)
        .await
        .expect("the right password after the wait");
    // The success reset the count: two more failures are free again.
    for _ in 0..2 {
        let status = attempt("wrong password!").await.expect_err("wrong");
        assert_eq!(reason(&status).0, Reason::InvalidCredentials);
    }
    attempt(PASSWORD)
        .await
        .expect("not throttled after the reset");

    // Sign-ups from one address: alice was the first, one more is free, then a wait.
    server.sign_up("bob").await;
    let limited = server
        .client
        .clone()
        .sign_up(SignUpRequest {
            username: "carol".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            client_addr: "192.0.2.1".into(),
        })
        .await
        .expect_err("throttled");
    assert_eq!(reason(&limited), (Reason::RateLimited, 1));
    server.stop().await;
}
