//! Accounts' access tokens on live WebSockets: renewal with an `auth` frame, the 4001
//! close of an unrenewed socket, and the 4003 close of revoked sessions (in-process in
//! the all-in-one, and through Redis between gateways). Tokens come from the accounts
//! service over gRPC, as the gateway's HTTP API would get them.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat::AllInOne;
use chat_proto::accounts::accounts_client::AccountsClient;
use chat_proto::accounts::{
    AuthReply, BearerRequest, ChangePasswordRequest, LogInRequest, LogOutRequest, SignUpRequest,
};
use chat_proto::auth::{AttachToken, InternalToken};
use chat_testkit::ws::{Closed, WsClient};
use common::Store;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "violet lantern quietly orbits";
const INTERNAL: &str = "tokens-test-internal-token-0123456789";

type Client = AccountsClient<InterceptedService<Channel, AttachToken>>;

/// A running all-in-one with short-lived access tokens.
struct World {
    http: SocketAddr,
    accounts: Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn client(addr: SocketAddr, internal: Option<&InternalToken>) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("accounts reachable");
    AccountsClient::with_interceptor(channel, AttachToken::new(internal))
}

/// The all-in-one, access tokens valid `ttl`, sockets closed `grace` after `exp`.
async fn world(ttl: Duration, grace: Duration) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let internal = InternalToken::parse(INTERNAL).expect("token");
    let mut gateway = common::all_in_one_gateway();
    gateway.auth_mode = chat_gateway::AuthMode::Jwt;
    gateway.internal_token = Some(internal.clone());
    gateway.limits.token_expiry_grace = grace;
    let history = chat_history::Settings {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let aio = AllInOne::build(
        history,
        chat_presence::Settings::default(),
        common::cheap_accounts(dir.path(), ttl),
        gateway,
        shutdown.clone(),
    )
    .await
    .expect("all-in-one builds");
    let http = aio.http_addr().expect("bound");
    let accounts = client(aio.accounts_addr(), Some(&internal)).await;
    tokio::spawn(aio.run());
    World {
        http,
        accounts,
        shutdown,
        _dir: dir,
    }
}

async fn sign_up(accounts: &Client, username: &str) -> AuthReply {
    accounts
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

async fn log_in(accounts: &Client, username: &str) -> AuthReply {
    accounts
        .clone()
        .log_in(LogInRequest {
            username: username.into(),
            password: PASSWORD.into(),
            client_addr: "192.0.2.1".into(),
        })
        .await
        .expect("log in")
        .into_inner()
}

fn user_id(reply: &AuthReply) -> String {
    reply.user.as_ref().expect("user").id.clone()
}

fn ws_url(addr: SocketAddr, token: &str) -> String {
    format!("ws://{addr}/v1/ws?token={token}")
}

async fn connect(addr: SocketAddr, token: &str) -> WsClient {
    WsClient::connect(&ws_url(addr, token))
        .await
        .expect("connects")
}

/// Waits for the close and returns it with how long it took.
async fn closed(ws: &mut WsClient) -> (Closed, Duration) {
    let start = Instant::now();
    let closed = ws.closed().await.expect("closed");
    (closed, start.elapsed())
}

/// The socket still answers.
async fn alive(ws: &mut WsClient) {
    let pong = ws.request(json!({"type": "ping"})).await.expect("open");
    assert_eq!(pong["type"], "pong", "{pong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_socket_past_its_first_expiry() {
    let w = world(Duration::from_secs(2), Duration::from_secs(1)).await;
    let alice = sign_up(&w.accounts, "alice").await;
    let mut ws = connect(w.http, &alice.access_token).await;
    assert_eq!(ws.hello["user"], user_id(&alice));
    let first_exp = approx_exp(&alice);
    // Renew three times, each time with a token of the same session obtained by refresh.
    let mut refresh = alice.refresh_token.clone();
    for _ in 0..3 {
        // Time passing is the point here: each renewal comes before the current exp.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let renewed = w
            .accounts
            .clone()
            .refresh(chat_proto::accounts::RefreshRequest {
                refresh_token: refresh.clone(),
            })
            .await
            .expect("refresh")
            .into_inner();
        refresh = renewed.refresh_token.clone();
        let authed = ws
            .request(json!({"type": "auth", "token": renewed.access_token}))
            .await
            .expect("reply");
        assert_eq!(authed["type"], "authed", "{authed}");
        let exp = authed["exp"].as_u64().expect("exp");
        assert!(exp.abs_diff(approx_exp(&renewed)) <= 1, "{authed}");
    }
    // Wait until past the first token's exp + grace (whole seconds: up to a second more
    // than the renewals took; the last renewed token is good for two more): still open.
    while common::now() <= first_exp + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alive(&mut ws).await;
}

/// The access token's `exp`, give or take a second: issued now, valid `expires_in`.
fn approx_exp(reply: &AuthReply) -> u64 {
    common::now() + u64::from(reply.expires_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_user_is_refused_and_changes_nothing() {
    let w = world(Duration::from_secs(600), Duration::from_secs(30)).await;
    let alice = sign_up(&w.accounts, "alice").await;
    let bob = sign_up(&w.accounts, "bob").await;
    let mut ws = connect(w.http, &alice.access_token).await;
    let refused = ws
        .request(json!({"type": "auth", "token": bob.access_token}))
        .await
        .expect("reply");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let garbage = ws
        .request(json!({"type": "auth", "token": "not.a.jwt"}))
        .await
        .expect("reply");
    assert_eq!(garbage["code"], "forbidden", "{garbage}");
    // Still alice's socket.
    let joined = ws.join("general", None).await.expect("join");
    assert_eq!(joined["type"], "joined");
    let ack = ws.send_message("general", "hi", "c1").await.expect("ack");
    assert_eq!(ack["type"], "ack", "{ack}");
    let message = ws.next_message("general").await.expect("own message");
    assert_eq!(message["from"], user_id(&alice));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenewed_socket_closes_with_4001_after_exp_and_grace() {
    let w = world(Duration::from_secs(2), Duration::from_secs(1)).await;
    let alice = sign_up(&w.accounts, "alice").await;
    let exp = approx_exp(&alice);
    let mut ws = connect(w.http, &alice.access_token).await;
    let (closed, _) = closed(&mut ws).await;
    assert_eq!(closed.code, Some(4001), "{closed}");
    assert_eq!(closed.reason, "token expired");
    // Not before exp + grace (1 s; `exp` known to a second).
    assert!(
        common::now() >= exp,
        "closed at {} for exp {exp}",
        common::now()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_closes_that_session_only() {
    let w = world(Duration::from_secs(600), Duration::from_secs(30)).await;
    let first = sign_up(&w.accounts, "alice").await;
    let second = log_in(&w.accounts, "alice").await;
    let mut a = connect(w.http, &first.access_token).await;
    let mut a_again = connect(w.http, &first.access_token).await;
    let mut b = connect(w.http, &second.access_token).await;
    w.accounts
        .clone()
        .log_out(LogOutRequest {
            access_token: first.access_token.clone(),
            refresh_token: String::new(),
        })
        .await
        .expect("log out");
    for ws in [&mut a, &mut a_again] {
        let (closed, took) = closed(ws).await;
        assert_eq!(closed.code, Some(4003), "{closed}");
        assert_eq!(closed.reason, "signed out");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    alive(&mut b).await;
    // The revoked token opens nothing any more.
    assert_eq!(
        WsClient::refused_status(&ws_url(w.http, &first.access_token))
            .await
            .expect("answered"),
        Some(401)
    );
    // Nor renews a socket of the session it named.
    let refused = b
        .request(json!({"type": "auth", "token": first.access_token}))
        .await
        .expect("reply");
    assert_eq!(refused["type"], "error", "{refused}");
    alive(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_all_closes_every_session_of_the_user_only() {
    let w = world(Duration::from_secs(600), Duration::from_secs(30)).await;
    let first = sign_up(&w.accounts, "alice").await;
    let second = log_in(&w.accounts, "alice").await;
    let bob = sign_up(&w.accounts, "bob").await;
    let mut a1 = connect(w.http, &first.access_token).await;
    let mut a2 = connect(w.http, &second.access_token).await;
    let mut b = connect(w.http, &bob.access_token).await;
    w.accounts
        .clone()
        .log_out_all(BearerRequest {
            access_token: second.access_token.clone(),
        })
        .await
        .expect("log out everywhere");
    for ws in [&mut a1, &mut a2] {
        let (closed, took) = closed(ws).await;
        assert_eq!(closed.code, Some(4003), "{closed}");
        assert_eq!(closed.reason, "signed out everywhere");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    alive(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_closes_the_other_sessions_and_keeps_the_changers() {
    let w = world(Duration::from_secs(600), Duration::from_secs(30)).await;
    let changer = sign_up(&w.accounts, "alice").await;
    let other = log_in(&w.accounts, "alice").await;
    let mut kept = connect(w.http, &changer.access_token).await;
    let mut ended = connect(w.http, &other.access_token).await;
    w.accounts
        .clone()
        .change_password(ChangePasswordRequest {
            access_token: changer.access_token.clone(),
            current_password: PASSWORD.into(),
            new_password: NEW_PASSWORD.into(),
        })
        .await
        .expect("change password");
    let (closed, took) = closed(&mut ended).await;
    assert_eq!(closed.code, Some(4003), "{closed}");
    assert_eq!(closed.reason, "password changed; sign in again");
    assert!(took < Duration::from_secs(2), "{took:?}");
    alive(&mut kept).await;
    // The changer's token still opens sockets.
    let mut again = connect(w.http, &changer.access_token).await;
    alive(&mut again).await;
}

/// Accounts (tokens valid 10 minutes, revocations through the cluster's Redis) and two
/// gateways that verify its tokens; a client of accounts.
async fn two_gateways_on_accounts() -> (common::Cluster, Client) {
    let mut cluster = common::Cluster::start(Store::Embedded, 0)
        .await
        .expect("cluster");
    let accounts_addr = cluster
        .start_accounts(Duration::from_secs(600))
        .await
        .expect("accounts");
    let mut settings = cluster.gateway_settings();
    settings.accounts_url = Some(format!("http://{accounts_addr}"));
    cluster.add_gateway_with(&settings).await.expect("gw 0");
    cluster.add_gateway_with(&settings).await.expect("gw 1");
    (cluster, client(accounts_addr, None).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_redis_closes_a_socket_on_another_gateway() {
    let (cluster, accounts) = two_gateways_on_accounts().await;
    let first = sign_up(&accounts, "alice").await;
    let second = log_in(&accounts, "alice").await;
    let mut on_0 = connect(cluster.gateways[0].addr, &first.access_token).await;
    let mut on_1 = connect(cluster.gateways[1].addr, &first.access_token).await;
    let mut other = connect(cluster.gateways[1].addr, &second.access_token).await;
    accounts
        .clone()
        .log_out(LogOutRequest {
            access_token: first.access_token.clone(),
            refresh_token: String::new(),
        })
        .await
        .expect("log out");
    for ws in [&mut on_0, &mut on_1] {
        let (closed, took) = closed(ws).await;
        assert_eq!(closed.code, Some(4003), "{closed}");
        assert_eq!(closed.reason, "signed out");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    alive(&mut other).await;
    for gw in 0..2 {
        assert_eq!(
            WsClient::refused_status(&ws_url(cluster.gateways[gw].addr, &first.access_token))
                .await
                .expect("answered"),
            Some(401),
            "gateway {gw}"
        );
    }
}

/// The `kid` in an access token's header.
fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a kid")
}

/// Rotating the signing key with two gateways running: tokens of the old key stay good
/// on both (until their `exp`), and a token of the new key is accepted on both at once,
/// without a restart (each gateway refetches the keys on the unknown `kid`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_with_two_gateways_running() {
    let (cluster, accounts) = two_gateways_on_accounts().await;
    let old = sign_up(&accounts, "alice").await;
    // Both gateways have the first key (read at start, or on this first connect).
    for gw in &cluster.gateways {
        connect(gw.addr, &old.access_token).await.close().await;
    }
    let keys = accounts
        .clone()
        .rotate_signing_key(chat_proto::accounts::Empty {})
        .await
        .expect("rotate")
        .into_inner()
        .keys;
    let active: Vec<&str> = keys
        .iter()
        .filter(|k| k.active)
        .map(|k| k.kid.as_str())
        .collect();
    assert_eq!(active.len(), 1, "{keys:?}");
    assert_ne!(active[0], kid(&old.access_token), "a new key signs");
    assert_eq!(keys.len(), 2, "the old key stays published: {keys:?}");
    let new = log_in(&accounts, "alice").await;
    assert_eq!(kid(&new.access_token), active[0]);
    for gw in &cluster.gateways {
        let mut fresh = connect(gw.addr, &new.access_token).await;
        alive(&mut fresh).await;
        let mut kept = connect(gw.addr, &old.access_token).await;
        alive(&mut kept).await;
    }
}

/// SigningKeys calls accounts has served, from the all-in-one's `/metrics`.
async fn signing_key_reads(http: SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with("grpc_server_requests_total{") && l.contains("SigningKeys"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Tokens naming unknown `kid`s (forgeries, or a flood of them) cost accounts at most
/// one key read per cooldown, however many arrive at once, and are all refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_accounts_one_read() {
    let w = world(Duration::from_secs(600), Duration::from_secs(30)).await;
    // The gateway has read the keys once (start) before the flood.
    let alice = sign_up(&w.accounts, "alice").await;
    connect(w.http, &alice.access_token).await.close().await;
    let before = signing_key_reads(w.http).await;
    // PKCS#8 of an Ed25519 key nobody published: the fixed prefix, then its 32 bytes.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[0x5a; 32]);
    let signing = jsonwebtoken::EncodingKey::from_ed_der(&der);
    let claims = json!({
        "sub": "mallory", "sid": "s1", "iss": "chat-accounts", "aud": "chat",
        "iat": common::now(), "exp": common::now() + 600,
    });
    let mut refusals = Vec::new();
    for i in 0..30 {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(format!("forged-{i}"));
        let token = jsonwebtoken::encode(&header, &claims, &signing).expect("signs");
        refusals.push(tokio::spawn(async move {
            WsClient::refused_status(&ws_url(w.http, &token)).await
        }));
    }
    for refusal in refusals {
        assert_eq!(refusal.await.expect("task").expect("answered"), Some(401));
    }
    let reads = signing_key_reads(w.http).await - before;
    assert!(
        (1..=2).contains(&reads),
        "30 unknown kids made {reads} key reads"
    );
}
