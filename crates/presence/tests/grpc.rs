//! The gRPC surface, end to end: a real `PresenceServer` on port 0 over the in-memory
//! store, driven by the generated tonic client.

use std::sync::Arc;
use std::time::Duration;

use chat_metrics::Metrics;
use chat_presence::store::memory::MemoryPresence;
use chat_presence::{PresenceServer, PresenceStore};
use chat_proto::presence::presence_client::PresenceClient;
use chat_proto::presence::presence_server::SERVICE_NAME as SERVICE;
use chat_proto::presence::{
    HeartbeatRequest, QueryRequest, RoomExit, RoomRequest, TakeExitsRequest, UserRequest,
};
use chat_testkit::grpc::{self, Served};
use tonic::Code;
use tonic::transport::Channel;

/// The lease of the test server.
const TTL: Duration = Duration::from_millis(600);

/// A `PresenceServer` over `store` on port 0, served until dropped.
async fn serve(store: Arc<dyn PresenceStore>) -> Served {
    let mut metrics = Metrics::new("test");
    let bound = PresenceServer::bind(([127, 0, 0, 1], 0).into(), store, &mut metrics);
    let server = bound.await.expect("bind");
    grpc::serve(server.local_addr(), |stop| server.run(stop))
}

/// A running server over a memory store.
struct Running {
    served: Served,
}

impl Running {
    async fn start() -> Self {
        Self {
            served: serve(Arc::new(MemoryPresence::new(TTL))).await,
        }
    }

    async fn channel(&self) -> Channel {
        self.served.channel().await
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

fn user_req(gateway: &str, user: &str) -> UserRequest {
    UserRequest {
        gateway: gateway.into(),
        user: user.into(),
    }
}

fn room_req(gateway: &str, user: &str, room: &str) -> RoomRequest {
    RoomRequest {
        gateway: gateway.into(),
        user: user.into(),
        room: room.into(),
    }
}

fn heartbeat(gateway: &str, users: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        gateway: gateway.into(),
        users: users.iter().map(|u| (*u).to_owned()).collect(),
    }
}

/// Who of `users` is online, by a Query that must succeed (else fails saying `what`).
async fn who_is_online(
    client: &mut PresenceClient<Channel>,
    users: &[&str],
    what: &str,
) -> Vec<bool> {
    let reply = client.query(query(users)).await.expect(what);
    reply.into_inner().online
}

fn query(users: &[&str]) -> QueryRequest {
    QueryRequest {
        users: users.iter().map(|u| (*u).to_owned()).collect(),
    }
}

#[tokio::test]
async fn transitions_queries_and_expiry() {
    let server = Running::start().await;
    let mut client = PresenceClient::new(server.channel().await);

    let changed = |r: Result<tonic::Response<chat_proto::presence::Transition>, tonic::Status>| {
        r.expect("call").into_inner().changed
    };
    assert!(changed(client.attach(user_req("gw1", "alice")).await));
    assert!(!changed(client.attach(user_req("gw2", "alice")).await));
    assert!(changed(client.attach(user_req("gw2", "bob")).await));
    let online = who_is_online(&mut client, &["alice", "bob", "carol"], "query").await;
    assert_eq!(online, vec![true, true, false]);

    let room_changed = |r: Result<
        tonic::Response<chat_proto::presence::RoomTransition>,
        tonic::Status,
    >| { r.expect("call").into_inner().changed };
    assert!(room_changed(
        client.enter_room(room_req("gw1", "alice", "general")).await
    ));
    assert!(!room_changed(
        client.enter_room(room_req("gw2", "alice", "general")).await
    ));
    assert!(room_changed(
        client.enter_room(room_req("gw2", "bob", "general")).await
    ));

    assert!(!changed(client.detach(user_req("gw2", "alice")).await));
    let reply = client
        .heartbeat(heartbeat("gw2", &["bob"]))
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(reply.ttl_ms, 600);
    let take = |ack| TakeExitsRequest {
        gateway: "gw2".into(),
        ack,
    };
    let batch = client.take_exits(take(0)).await.expect("take").into_inner();
    assert!(batch.exits.is_empty());
    assert_eq!(batch.claim, 0);

    // gw1 goes silent; gw2 keeps heartbeating and is handed alice's exit, again until it
    // acknowledges it.
    let mut tick = tokio::time::interval(TTL / 3);
    let deadline = tokio::time::Instant::now() + TTL * 4;
    let batch = loop {
        tick.tick().await;
        assert!(tokio::time::Instant::now() < deadline, "no exit handed out");
        client
            .heartbeat(heartbeat("gw2", &["bob"]))
            .await
            .expect("heartbeat");
        let batch = client.take_exits(take(0)).await.expect("take").into_inner();
        if !batch.exits.is_empty() {
            break batch;
        }
    };
    assert_eq!(
        batch.exits,
        vec![RoomExit {
            room: "general".into(),
            user: "alice".into()
        }]
    );
    let again = client.take_exits(take(0)).await.expect("take").into_inner();
    assert_eq!(again, batch, "not acknowledged: handed out again");
    let after = client
        .take_exits(take(batch.claim))
        .await
        .expect("ack")
        .into_inner();
    assert!(after.exits.is_empty(), "acknowledged: handed out once");
    let online = who_is_online(&mut client, &["alice", "bob"], "query").await;
    assert_eq!(online, vec![false, true]);
    let gone = client
        .detach(user_req("gw2", "bob"))
        .await
        .expect("detach")
        .into_inner();
    assert!(gone.changed);
    assert_eq!(gone.rooms, vec!["general".to_owned()]);

    server.stop().await;
}

/// The gateway's heartbeat chunk, 5,000 users with 64-character ids (the longest), fits
/// in one call (it is far below the 4 MiB message limit) and registers them all.
#[tokio::test]
async fn heartbeat_chunk_of_5000_long_ids() {
    let server = Running::start().await;
    let mut client = PresenceClient::new(server.channel().await);
    let names: Vec<String> = (0..5000).map(|i| format!("{i:0>64}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    client
        .heartbeat(heartbeat("gw1", &refs))
        .await
        .expect("one chunk");
    let online = who_is_online(&mut client, &refs[..500], "query").await;
    assert!(online.iter().all(|o| *o));
    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument() {
    let server = Running::start().await;
    let mut client = PresenceClient::new(server.channel().await);

    for req in [
        user_req("", "alice"),
        user_req("gw 1", "alice"),
        user_req("gw|1", "alice"),
        user_req(&"g".repeat(65), "alice"),
        user_req("gw1", ""),
        user_req("gw1", "al ice"),
    ] {
        let what = format!("{req:?}");
        let status = client.attach(req.clone()).await.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let status = client.detach(req).await.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    for req in [
        room_req("gw1", "alice", ""),
        room_req("gw1", "alice", "no spaces"),
        room_req("gw1", "alice", "dm:bob:alice"),
        room_req("gw1", "a b", "general"),
        room_req("", "alice", "general"),
    ] {
        let what = format!("{req:?}");
        let status = client.enter_room(req).await.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    for req in [heartbeat("", &[]), heartbeat("gw1", &["ok", "not ok"])] {
        let what = format!("{req:?}");
        let status = client.heartbeat(req).await.expect_err(&what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let status = client
        .take_exits(TakeExitsRequest {
            gateway: "gw 1".into(),
            ack: 0,
        })
        .await
        .expect_err("bad gateway");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client.query(query(&["a", ""])).await.expect_err("empty id");
    assert_eq!(status.code(), Code::InvalidArgument);

    // 500 users is the limit; 501 is refused, not truncated.
    let names: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let online = who_is_online(&mut client, &refs[..500], "500 users").await;
    assert_eq!(online.len(), 500);
    let status = client.query(query(&refs)).await.expect_err("501 users");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("500"), "{status:?}");

    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let server = Running::start().await;
    grpc::assert_health_serving(&server.channel().await, SERVICE).await;
    server.stop().await;
}

#[tokio::test]
async fn health_follows_redis() {
    let redis = chat_testkit::redis::RedisServer::start()
        .await
        .expect("start redis-server");
    let store = chat_presence::store::redis::RedisPresence::connect(&redis.url(), TTL)
        .await
        .expect("connect");
    let served = serve(Arc::new(store)).await;
    // Pings fail (after the 5 s command timeout at most) once Redis is gone.
    grpc::assert_health_follows(&served.channel().await, SERVICE, redis, "Redis").await;
    served.join().await;
}

/// A presence replica whose whole Redis Cluster was killed still stops promptly on
/// shutdown: its sweeper and stats tasks, waiting on the dead cluster, are told to stop
/// (and at worst aborted) instead of being awaited past the drain.
#[tokio::test]
async fn stops_promptly_after_its_redis_cluster_died() {
    let cluster = chat_testkit::redis_cluster::RedisCluster::start(3)
        .await
        .expect("start redis cluster");
    let store = chat_presence::store::redis::RedisPresence::connect(&cluster.url(), TTL)
        .await
        .expect("connect to the cluster");
    let served = serve(Arc::new(store)).await;
    drop(cluster);
    // The sweeper runs every 60 ms (a tenth of the lease): by now it waits on the dead
    // cluster, as do the health pings.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    served.join().await;
    let took = started.elapsed();
    // Nothing is in flight, so serving ends NOT_SERVING_LEAD after the cancel; the
    // background tasks then stop at once.
    let bound = chat_presence::server::NOT_SERVING_LEAD + Duration::from_millis(700);
    assert!(took < bound, "stopped after {took:?}, more than {bound:?}");
}
