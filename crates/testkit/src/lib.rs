//! Test harness shared by the workspace's integration tests.
//!
//! Real servers, really started, each on a free port and torn down on drop:
//!
//! - [`redis::RedisServer`]: a private `redis-server` process.
//! - [`redis_cluster::RedisCluster`]: a private Redis Cluster (several `redis-server`
//!   masters joined with `redis-cli --cluster create`).
//! - [`mongo::MongoServer`]: a MongoDB wire-protocol server (`nx-27017`, see
//!   `docs/testing.md`), or the server named by `CHAT_TEST_MONGODB_URL`.
//! - [`prometheus::PrometheusServer`]: a private Prometheus (the real server) and its
//!   HTTP API; [`prometheus::sample`] reads one sample of a `/metrics` text.
//! - [`ws::WsClient`]: a protocol-v1 WebSocket client for driving gateways.
//! - [`fault_proxy::FaultProxy`]: a TCP proxy that blackholes, resets, delays or
//!   flaps the link it sits on (this kernel has no `netem`).
//! - [`grpc::serve`]: a bound gRPC server of the workspace served until dropped, a
//!   connected channel to it, and its health status.
//! - [`accounts_http::AccountsHttp`]: a client of a gateway's accounts HTTP API.
//! - [`process`]: free ports, child processes killed on drop, polling with a deadline.
//!
//! And [`backend_suite!`]: the one way a behaviour suite runs the same cases against
//! every backend of a trait (see [`suite`]).

pub mod accounts_http;
pub mod fault_proxy;
pub mod grpc;
pub mod mongo;
pub mod process;
pub mod prometheus;
pub mod redis;
pub mod redis_cluster;
pub mod suite;
pub mod ws;
