//! The internal token (`CHAT_INTERNAL_TOKEN`) on a real `PresenceServer`: Presence calls
//! need it, the health service does not (but refuses a wrong one), and refusals are
//! counted and never echo a token.

use std::sync::Arc;
use std::time::Duration;

use chat_metrics::Metrics;
use chat_presence::PresenceServer;
use chat_presence::store::memory::MemoryPresence;
use chat_proto::auth::{AttachToken, InternalToken};
use chat_proto::presence::presence_client::PresenceClient;
use chat_proto::presence::{QueryRequest, UserRequest};
use chat_testkit::grpc;
use chat_testkit::process::eventually;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TOKEN: &str = "presence-auth-test-token-3b8e61d0";
const WRONG: &str = "presence-auth-wrong-token-a4c7e912";

/// `channel` with `token` (or none) on every call.
fn with_token(channel: &Channel, value: Option<&str>) -> InterceptedService<Channel, AttachToken> {
    let token = value.map(|v| InternalToken::parse(v).expect("valid token"));
    InterceptedService::new(channel.clone(), AttachToken::new(token.as_ref()))
}

fn attach(user: &str) -> UserRequest {
    UserRequest {
        gateway: "gw1".into(),
        user: user.into(),
    }
}

/// Fails unless `result` is `UNAUTHENTICATED` saying `what` (without any token in it).
fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    grpc::assert_unauthenticated(result, what, &[TOKEN, WRONG]);
}

#[tokio::test]
async fn presence_calls_need_the_token_health_does_not() -> anyhow::Result<()> {
    let store = Arc::new(MemoryPresence::new(Duration::from_secs(30)));
    let mut metrics = Metrics::new("presence");
    let server = PresenceServer::bind(([127, 0, 0, 1], 0).into(), store, &mut metrics)
        .await?
        .with_internal_token(Some(InternalToken::parse(TOKEN)?));
    let served = grpc::serve(server.local_addr(), |shutdown| server.run(shutdown));
    let channel = served.channel().await;

    // Health without a token: probes (kubelet, chat-probe) carry none.
    eventually(Duration::from_secs(10), "SERVING without a token", || {
        grpc::health_is(&channel, "", ServingStatus::Serving)
    })
    .await?;
    assert_refused(
        HealthClient::new(with_token(&channel, Some(WRONG)))
            .check(grpc::health_check(""))
            .await,
        "wrong",
    );

    // No token, a wrong token: refused, and the store never saw alice.
    assert_refused(
        PresenceClient::new(channel.clone())
            .attach(attach("alice"))
            .await,
        "missing",
    );
    assert_refused(
        PresenceClient::new(with_token(&channel, Some(WRONG)))
            .attach(attach("alice"))
            .await,
        "wrong",
    );
    let mut client = PresenceClient::new(with_token(&channel, Some(TOKEN)));
    let online = client
        .query(QueryRequest {
            users: vec!["alice".into()],
        })
        .await?
        .into_inner()
        .online;
    assert_eq!(online, vec![false], "refused attaches changed nothing");

    // The right token: served.
    assert!(client.attach(attach("alice")).await?.into_inner().changed);

    let text = chat_metrics::exposition(&metrics.registry);
    let missing = chat_metrics::missing_lines(
        &text,
        r#"grpc_server_requests_total{service="chat.presence.v1.Presence",method="Attach",code="UNAUTHENTICATED"} 2
grpc_server_requests_total{service="grpc.health.v1.Health",method="Check",code="UNAUTHENTICATED"} 1
grpc_server_requests_total{service="chat.presence.v1.Presence",method="Attach",code="OK"} 1"#,
    );
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");

    served.stop().await;
    Ok(())
}
