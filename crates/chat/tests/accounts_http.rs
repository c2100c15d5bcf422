//! The accounts HTTP API of the gateway (docs/protocol.md, "Accounts HTTP API"), driven
//! from outside on the all-in-one: sign-up, log-in, refresh rotation, the browser
//! cookie, log-outs, password change, the profile, users, search, deletion, the JWKS, a
//! WebSocket with an accounts token, and the error shapes (throttling included).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chat::AllInOne;
use chat_accounts::password::HashParams;
use chat_testkit::accounts_http::{AccountsHttp, Reply, access_token, refresh_token};
use chat_testkit::ws::WsClient;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "violet lantern quietly orbits";
/// The refresh-token reuse grace of these tests (short, so that passing it is quick).
const GRACE: Duration = Duration::from_secs(2);

/// A running all-in-one with cheap password hashing; stops when dropped.
struct World {
    api: AccountsHttp,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    /// A different client address per sign-up (sign-ups are throttled per address).
    next_addr: AtomicU32,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn world() -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let history = chat_history::Settings {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let mut accounts = chat_accounts::Settings {
        hash_params: HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        hash_threads: 2,
        refresh_reuse_grace: GRACE,
        ..Default::default()
    };
    accounts.store.data_dir = dir.path().to_owned();
    let mut gateway = common::all_in_one_gateway();
    gateway.auth_mode = chat_gateway::AuthMode::Jwt;
    // The test client is its own "proxy": X-Forwarded-For picks the client address.
    gateway.trusted_proxies = chat_gateway::client_addr::TrustedProxies::parse("127.0.0.1")
        .map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    let chat = AllInOne::build(
        history,
        chat_presence::Settings::default(),
        accounts,
        gateway,
        shutdown.clone(),
    )
    .await?;
    let addr = chat.http_addr()?;
    tokio::spawn(chat.run());
    Ok(World {
        api: AccountsHttp::new(format!("http://{addr}")),
        addr,
        shutdown,
        next_addr: AtomicU32::new(1),
        _dir: dir,
    })
}

impl World {
    /// Signs `username` up from a fresh client address; the reply's body.
    async fn sign_up(&self, username: &str) -> anyhow::Result<Value> {
        let n = self.next_addr.fetch_add(1, Ordering::Relaxed);
        let from = format!("198.51.100.{n}");
        let body = json!({ "username": username, "password": PASSWORD });
        Ok(self
            .api
            .call(
                Method::POST,
                "/v1/auth/signup",
                None,
                Some(&body),
                &[("X-Forwarded-For", &from)],
            )
            .await?
            .expect(201)?
            .body)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn me(&self, token: &str) -> anyhow::Result<Reply> {
        self.api.get("/v1/users/me", Some(token)).await
    }

    /// `POST path` with `body`, which must be refused with `status` and `code`.
    async fn refused(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: Value,
        status: u16,
        code: &str,
    ) -> anyhow::Result<()> {
        assert_error(&self.api.post(path, bearer, &body).await?, status, code);
        Ok(())
    }
}

fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.error_code(), code, "{}", reply.body);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_log_in_and_refresh_rotation() -> anyhow::Result<()> {
    let w = world().await?;
    let signed = w.sign_up("Alice").await?;
    let id = signed["user"]["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("u_"), "{signed}");
    assert_eq!(signed["user"]["username"], "alice");
    assert_eq!(signed["user"]["display_name"], "alice");
    assert_eq!(signed["token_type"], "Bearer");
    assert_eq!(signed["expires_in"], 600);
    assert!(refresh_token(&signed)?.contains('.'));

    // Refusals of sign-up.
    w.refused(
        "/v1/auth/signup",
        None,
        json!({"username": "alice", "password": PASSWORD}),
        409,
        "username_taken",
    )
    .await?;
    w.refused(
        "/v1/auth/signup",
        None,
        json!({"username": "bob", "password": "password1"}),
        400,
        "weak_password",
    )
    .await?;
    w.refused(
        "/v1/auth/signup",
        None,
        json!({"username": "x!", "password": PASSWORD}),
        400,
        "bad_request",
    )
    .await?;
    for raw in [
        "not json",
        "{\"username\":\"bob\"}",
        "[1,2]",
        "{\"username\":1,\"password\":\"p\"}",
    ] {
        let reply = post_raw(&w, "/v1/auth/signup", raw).await?;
        assert_error(&reply, 400, "bad_request");
    }
    let huge = format!(
        "{{\"username\":\"bob\",\"password\":\"{}\"}}",
        "a".repeat(10_000)
    );
    assert_error(
        &post_raw(&w, "/v1/auth/signup", &huge).await?,
        413,
        "too_large",
    );

    // Log-in.
    let logged = w.api.log_in("ALICE", PASSWORD).await?;
    assert_eq!(logged["user"]["id"], id.as_str());
    w.refused(
        "/v1/auth/login",
        None,
        json!({"username": "alice", "password": NEW_PASSWORD}),
        401,
        "invalid_credentials",
    )
    .await?;
    w.refused(
        "/v1/auth/login",
        None,
        json!({"username": "nobody", "password": PASSWORD}),
        401,
        "invalid_credentials",
    )
    .await?;

    // Refresh rotates; the retired token within the grace gets the same new one.
    let first = refresh_token(&logged)?;
    let refreshed = w
        .api
        .post("/v1/auth/refresh", None, &json!({"refresh_token": first}))
        .await?
        .expect(200)?;
    assert_eq!(refreshed.header("cache-control"), Some("no-store"));
    let second = refresh_token(&refreshed.body)?;
    assert_ne!(first, second);
    let access = access_token(&refreshed.body)?;
    w.me(&access).await?.expect(200)?;
    let again = w
        .api
        .post("/v1/auth/refresh", None, &json!({"refresh_token": first}))
        .await?
        .expect(200)?;
    assert_eq!(refresh_token(&again.body)?, second);

    // After the grace the retired token is a reuse: refused, and the session ends.
    tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
    let reused = w
        .api
        .post("/v1/auth/refresh", None, &json!({"refresh_token": first}))
        .await?;
    assert_error(&reused, 401, "invalid_token");
    let after = w
        .api
        .post("/v1/auth/refresh", None, &json!({"refresh_token": second}))
        .await?;
    assert_error(&after, 401, "invalid_token");
    assert_error(&w.me(&access).await?, 401, "invalid_token");
    // The sign-up's own session is another one, untouched.
    w.me(&access_token(&signed)?).await?.expect(200)?;
    let nothing = w.api.post("/v1/auth/refresh", None, &json!({})).await?;
    assert_error(&nothing, 401, "invalid_token");
    Ok(())
}

/// `POST path` with a raw body.
async fn post_raw(w: &World, path: &str, body: &str) -> anyhow::Result<Reply> {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", w.addr))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    Ok(Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

/// The value of the `chat_refresh` cookie set by `reply`, and its attributes.
fn refresh_cookie(reply: &Reply) -> (String, Vec<String>) {
    let cookies = reply.set_cookies();
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("chat_refresh="))
        .unwrap_or_else(|| panic!("no chat_refresh cookie in {cookies:?}"));
    let mut parts = cookie.split(';').map(|p| p.trim().to_owned());
    let value = parts
        .next()
        .and_then(|p| p.strip_prefix("chat_refresh=").map(str::to_owned))
        .unwrap_or_default();
    (value, parts.collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_keep_the_refresh_token_in_a_cookie() -> anyhow::Result<()> {
    let w = world().await?;
    w.sign_up("carol").await?;
    let origin = w.origin();
    let login = json!({"username": "carol", "password": PASSWORD});
    let reply = w
        .api
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&login),
            &[("Origin", &origin)],
        )
        .await?
        .expect(200)?;
    assert!(reply.body.get("refresh_token").is_none(), "{}", reply.body);
    let access = access_token(&reply.body)?;
    let (cookie, attributes) = refresh_cookie(&reply);
    assert!(cookie.contains('.'), "{cookie}");
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/v1/auth"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "{wanted} in {attributes:?}"
        );
    }
    let max_age: u64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .expect("Max-Age");
    assert!(max_age > 24 * 3600, "{max_age}");
    assert!(
        !attributes.iter().any(|a| a == "Secure"),
        "plain http: {attributes:?}"
    );

    // Over https (as a trusted proxy says), the cookie is Secure.
    let https = w
        .api
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&login),
            &[
                ("Origin", "https://chat.example"),
                ("X-Forwarded-Proto", "https"),
            ],
        )
        .await?
        .expect(200)?;
    assert!(refresh_cookie(&https).1.iter().any(|a| a == "Secure"));

    // Refresh with the cookie from the gateway's own origin: a new cookie, no token in
    // the body.
    let cookie_header = format!("chat_refresh={cookie}");
    let refreshed = w
        .api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            None,
            &[("Origin", &origin), ("Cookie", &cookie_header)],
        )
        .await?
        .expect(200)?;
    assert!(refreshed.body.get("refresh_token").is_none());
    let (rotated, _) = refresh_cookie(&refreshed);
    assert_ne!(rotated, cookie);

    // Behind a trusted proxy that forwards the Host without its port (nginx's $host),
    // the page's origin still counts as the gateway's own.
    let proxied = w
        .api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": "s_x.00"})),
            &[
                ("Origin", "http://chat.example:8080"),
                ("Host", "chat.example"),
            ],
        )
        .await?;
    assert_error(&proxied, 401, "invalid_token");
    let other_scheme = w
        .api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": "s_x.00"})),
            &[
                ("Origin", "https://chat.example:8080"),
                ("Host", "chat.example"),
            ],
        )
        .await?;
    assert_error(&other_scheme, 403, "forbidden");

    // Another site may not refresh with the browser's cookie.
    let rotated_header = format!("chat_refresh={rotated}");
    let cross = w
        .api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            None,
            &[
                ("Origin", "https://evil.example"),
                ("Cookie", &rotated_header),
            ],
        )
        .await?;
    assert_error(&cross, 403, "forbidden");

    // Log-out ends the cookie's session and clears the cookie.
    let out = w
        .api
        .call(
            Method::POST,
            "/v1/auth/logout",
            Some(&access_token(&refreshed.body)?),
            None,
            &[("Origin", &origin), ("Cookie", &rotated_header)],
        )
        .await?
        .expect(204)?;
    let (cleared, attributes) = refresh_cookie(&out);
    assert_eq!(cleared, "");
    assert!(
        attributes.iter().any(|a| a == "Max-Age=0"),
        "{attributes:?}"
    );
    let gone = w
        .api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            None,
            &[("Origin", &origin), ("Cookie", &rotated_header)],
        )
        .await?;
    assert_error(&gone, 401, "invalid_token");
    assert_error(&w.me(&access).await?, 401, "invalid_token");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_outs_and_password_change_end_sessions() -> anyhow::Result<()> {
    let w = world().await?;
    let signed = w.sign_up("dave").await?;
    // Log-out with the refresh token in the body.
    let out = w
        .api
        .post(
            "/v1/auth/logout",
            Some(&access_token(&signed)?),
            &json!({"refresh_token": refresh_token(&signed)?}),
        )
        .await?;
    out.expect(204)?;
    assert_error(&w.me(&access_token(&signed)?).await?, 401, "invalid_token");
    assert_error(
        &w.api.post("/v1/auth/logout", None, &json!({})).await?,
        401,
        "unauthorized",
    );

    // Log-out-all ends every session.
    let a = access_token(&w.api.log_in("dave", PASSWORD).await?)?;
    let b = access_token(&w.api.log_in("dave", PASSWORD).await?)?;
    w.api
        .post("/v1/auth/logout-all", Some(&a), &json!({}))
        .await?
        .expect(204)?;
    assert_error(&w.me(&a).await?, 401, "invalid_token");
    assert_error(&w.me(&b).await?, 401, "invalid_token");

    // A password change ends the other sessions, not the caller's.
    let a = access_token(&w.api.log_in("dave", PASSWORD).await?)?;
    let b = access_token(&w.api.log_in("dave", PASSWORD).await?)?;
    w.refused(
        "/v1/auth/password",
        Some(&a),
        json!({"current_password": NEW_PASSWORD, "new_password": NEW_PASSWORD}),
        401,
        "invalid_credentials",
    )
    .await?;
    w.refused(
        "/v1/auth/password",
        Some(&a),
        json!({"current_password": PASSWORD, "new_password": "password1"}),
        400,
        "weak_password",
    )
    .await?;
    w.api
        .post(
            "/v1/auth/password",
            Some(&a),
            &json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await?
        .expect(204)?;
    w.me(&a).await?.expect(200)?;
    assert_error(&w.me(&b).await?, 401, "invalid_token");
    w.refused(
        "/v1/auth/login",
        None,
        json!({"username": "dave", "password": PASSWORD}),
        401,
        "invalid_credentials",
    )
    .await?;
    w.api.log_in("dave", NEW_PASSWORD).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_users_search_and_deletion() -> anyhow::Result<()> {
    let w = world().await?;
    let erin = w.sign_up("erin").await?;
    let token = access_token(&erin)?;
    let erin_id = erin["user"]["id"].as_str().expect("id").to_owned();
    let frank_id = w.sign_up("frank").await?["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let me = w.me(&token).await?.expect(200)?.body;
    assert_eq!(me["id"], erin_id.as_str());
    assert_eq!(me["username"], "erin");
    let created = me["created_at"].as_str().expect("created_at");
    assert!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );
    let renamed = w
        .api
        .call(
            Method::PATCH,
            "/v1/users/me",
            Some(&token),
            Some(&json!({"display_name": "Erin E."})),
            &[],
        )
        .await?
        .expect(200)?;
    assert_eq!(renamed.body["display_name"], "Erin E.");
    assert_eq!(w.me(&token).await?.body["display_name"], "Erin E.");
    let bad = w
        .api
        .call(
            Method::PATCH,
            "/v1/users/me",
            Some(&token),
            Some(&json!({"display_name": "tab\there"})),
            &[],
        )
        .await?;
    assert_error(&bad, 400, "bad_request");
    assert_error(&w.api.get("/v1/users/me", None).await?, 401, "unauthorized");
    assert_error(&w.me("not-a-token").await?, 401, "invalid_token");

    // Users by id: unknown ones left out, request order kept.
    let unknown = "u_00000000000000000000000000000000";
    let users = w
        .api
        .get(
            &format!("/v1/users?ids={frank_id},{unknown},{erin_id}"),
            Some(&token),
        )
        .await?
        .expect(200)?
        .body;
    assert_eq!(
        users,
        json!({"users": [
            {"id": frank_id, "username": "frank", "display_name": "frank"},
            {"id": erin_id, "username": "erin", "display_name": "Erin E."},
        ]})
    );
    let many = vec!["u_1"; 501].join(",");
    assert_error(
        &w.api
            .get(&format!("/v1/users?ids={many}"), Some(&token))
            .await?,
        400,
        "bad_request",
    );
    assert_error(
        &w.api.get("/v1/users?ids=a/b", Some(&token)).await?,
        400,
        "bad_request",
    );
    assert_error(
        &w.api.get("/v1/users?ids=u_1", None).await?,
        401,
        "unauthorized",
    );

    // Search by prefix of the username or the display name.
    let found = w
        .api
        .get("/v1/users/search?q=FR", Some(&token))
        .await?
        .expect(200)?
        .body;
    assert_eq!(found["users"][0]["username"], "frank", "{found}");
    assert_eq!(found["users"].as_array().map(Vec::len), Some(1));
    let found = w
        .api
        .get("/v1/users/search?q=Erin%20E&limit=5", Some(&token))
        .await?
        .expect(200)?
        .body;
    assert_eq!(found["users"][0]["id"], erin_id.as_str(), "{found}");
    for query in ["q=&limit=5", "q=e&limit=0", "q=e&limit=51", "q=e&limit=x"] {
        let reply = w
            .api
            .get(&format!("/v1/users/search?{query}"), Some(&token))
            .await?;
        assert_error(&reply, 400, "bad_request");
    }

    // Deletion: password checked, sessions end, the name stays taken.
    let refused = w
        .api
        .call(
            Method::DELETE,
            "/v1/users/me",
            Some(&token),
            Some(&json!({"password": NEW_PASSWORD})),
            &[],
        )
        .await?;
    assert_error(&refused, 401, "invalid_credentials");
    let deleted = w
        .api
        .call(
            Method::DELETE,
            "/v1/users/me",
            Some(&token),
            Some(&json!({"password": PASSWORD})),
            &[],
        )
        .await?
        .expect(204)?;
    assert_eq!(refresh_cookie(&deleted).0, "");
    assert_error(&w.me(&token).await?, 401, "invalid_token");
    w.refused(
        "/v1/auth/login",
        None,
        json!({"username": "erin", "password": PASSWORD}),
        401,
        "invalid_credentials",
    )
    .await?;
    w.refused(
        "/v1/auth/signup",
        None,
        json!({"username": "erin", "password": PASSWORD}),
        409,
        "username_taken",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_verifies_tokens_and_websockets_take_them() -> anyhow::Result<()> {
    let w = world().await?;
    let methods = w.api.get("/v1/auth/methods", None).await?.expect(200)?.body;
    assert_eq!(
        methods,
        json!({"accounts": true, "dev": false, "external_tokens": false})
    );
    let signed = w.sign_up("grace").await?;
    let token = access_token(&signed)?;
    let id = signed["user"]["id"].as_str().expect("id").to_owned();

    let jwks = w
        .api
        .get("/.well-known/jwks.json", None)
        .await?
        .expect(200)?;
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=60"));
    let keys = jwks.body["keys"].as_array().expect("keys").clone();
    assert!(!keys.is_empty());
    let kid = jsonwebtoken::decode_header(&token)?.kid.expect("kid");
    let key = keys
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {keys:?}"));
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    let x = key["x"].as_str().expect("x");
    assert!(
        !x.contains('=') && !x.contains('+') && !x.contains('/'),
        "{x}"
    );
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(x)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["chat"]);
    validation.set_issuer(&["chat-accounts"]);
    let claims = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)?.claims;
    assert_eq!(claims["sub"], id.as_str());
    // A tampered token does not verify with it.
    let mut forged = token.clone();
    forged.push('A');
    assert!(jsonwebtoken::decode::<Value>(&forged, &decoding, &validation).is_err());

    // The access token opens a WebSocket as the user.
    let ws = WsClient::connect(&format!("ws://{}/v1/ws?token={token}", w.addr)).await?;
    assert_eq!(ws.hello["user"], id.as_str(), "{}", ws.hello);
    ws.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_attempts_say_when_to_retry() -> anyhow::Result<()> {
    let w = world().await?;
    w.sign_up("heidi").await?;
    let wrong = json!({"username": "heidi", "password": NEW_PASSWORD});
    let mut limited = None;
    for _ in 0..10 {
        let reply = w.api.post("/v1/auth/login", None, &wrong).await?;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_error(&reply, 401, "invalid_credentials");
    }
    let limited = limited.expect("failed log-ins are throttled within 10 attempts");
    assert_error(&limited, 429, "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");

    // Sign-ups are counted per client address, as X-Forwarded-For from a trusted proxy
    // says it.
    let mut refused = None;
    for i in 0..10 {
        let body = json!({"username": format!("user{i}"), "password": PASSWORD});
        let reply = w
            .api
            .call(
                Method::POST,
                "/v1/auth/signup",
                None,
                Some(&body),
                &[("X-Forwarded-For", "203.0.113.50")],
            )
            .await?;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        reply.expect(201)?;
    }
    let refused = refused.expect("sign-ups from one address are throttled");
    assert_error(&refused, 429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    // Another address is not.
    w.sign_up("ivan").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_accounts_says_so() -> anyhow::Result<()> {
    let cluster = common::Cluster::start(common::Store::Embedded, 1).await?;
    let api = AccountsHttp::new(cluster.http_url(0));
    let reply = api
        .post(
            "/v1/auth/login",
            None,
            &json!({"username": "a", "password": "b"}),
        )
        .await?;
    assert_error(&reply, 404, "not_found");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("CHAT_ACCOUNTS_URL")),
        "{}",
        reply.body
    );
    assert_error(&api.get("/v1/users/me", Some("x")).await?, 404, "not_found");
    let methods = api.get("/v1/auth/methods", None).await?.expect(200)?.body;
    assert_eq!(
        methods,
        json!({"accounts": false, "dev": false, "external_tokens": true})
    );
    let jwks = api
        .get("/.well-known/jwks.json", None)
        .await?
        .expect(200)?
        .body;
    assert_eq!(jwks, json!({"keys": []}));
    Ok(())
}
