//! The split stack with accounts: two `chat-accounts` replicas on one MongoDB-wire store
//! and two gateways, each on its own replica, as real processes. A user signed up
//! through gateway 1 is the same user on gateway 2: the access token opens a WebSocket
//! and reads the profile there, the refresh token is rotated there, and log-in works
//! there.

use std::time::Duration;

use chat_e2e::{Harness, Store, Topology};
use chat_testkit::accounts_http::{AccountsHttp, access_token, refresh_token};
use chat_testkit::ws::WsClient;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_works_on_every_gateway() -> anyhow::Result<()> {
    Harness::run("accounts", Duration::from_secs(120), scenario).await
}

async fn scenario(h: &Harness) -> anyhow::Result<()> {
    let running = Topology::new()
        .gateways(2)
        .accounts(2, Store::Mongo)
        .internal_token("e2e-internal-token-0123456789abcdef")
        .start(h)
        .await?;
    let (one, two) = (&running.gateways[0], &running.gateways[1]);
    let api_one = AccountsHttp::new(one.url());
    let api_two = AccountsHttp::new(two.url());

    let methods = api_two
        .get("/v1/auth/methods", None)
        .await?
        .expect(200)?
        .body;
    assert_eq!(
        methods,
        json!({"accounts": true, "dev": false, "external_tokens": false})
    );

    let signed = api_one.sign_up("alice", PASSWORD).await?;
    let id = signed["user"]["id"].as_str().expect("id").to_owned();
    let token = access_token(&signed)?;

    // Gateway 2 verifies gateway 1's token (accounts-1 publishes the same keys).
    let ws = WsClient::connect(&format!("ws://{}/v1/ws?token={token}", two.addr)).await?;
    assert_eq!(ws.hello["user"], id.as_str(), "{}", ws.hello);
    assert_eq!(ws.hello["gateway"], "gw-1");
    ws.close().await;
    let me = api_two
        .get("/v1/users/me", Some(&token))
        .await?
        .expect(200)?;
    assert_eq!(me.body["username"], "alice");

    // The refresh token rotates through the other gateway's replica.
    let refreshed = api_two
        .post(
            "/v1/auth/refresh",
            None,
            &json!({"refresh_token": refresh_token(&signed)?}),
        )
        .await?
        .expect(200)?;
    assert_ne!(refresh_token(&refreshed.body)?, refresh_token(&signed)?);

    // Log-in through gateway 2; the name is taken on gateway 2 too.
    let logged = api_two.log_in("alice", PASSWORD).await?;
    assert_eq!(logged["user"]["id"], id.as_str());
    let taken = api_two
        .post(
            "/v1/auth/signup",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await?;
    assert_eq!(taken.status, 409, "{}", taken.body);
    assert_eq!(taken.error_code(), "username_taken");

    // A log-out on gateway 2 ends the session for gateway 1's API too.
    api_two
        .post("/v1/auth/logout", Some(&access_token(&logged)?), &json!({}))
        .await?
        .expect(204)?;
    let ended = api_one
        .get("/v1/users/me", Some(&access_token(&logged)?))
        .await?;
    assert_eq!(ended.status, 401, "{}", ended.body);
    Ok(())
}
