//! The accounts service's one Redis connection (`CHAT_REDIS_URL`), shared by the
//! throttle ([`crate::throttle::RedisThrottle`]) and the revocations
//! ([`crate::revocations::RedisRevocations`]).

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::Builder;
use fred::types::config::{Config, ReconnectPolicy};

/// How long one Redis command may take before it fails. Short: a throttle check is on
/// the path of every log-in, and the throttle fails open (see
/// [`crate::throttle::RedisThrottle`]).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to `url`: `redis://host:port[/db]` for one server, or
/// `redis-cluster://host:port[?node=host2:port2&...]` for a Redis Cluster (one reachable
/// node is enough); `rediss` forms where fred was built with TLS. Fails when Redis is
/// unreachable now; later outages are retried forever (50 ms doubling up to 2 s), and
/// commands meanwhile fail.
pub async fn connect(url: &str) -> Result<Client, fred::error::Error> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = COMMAND_TIMEOUT;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
        })
        // max_attempts 0 = retry forever.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    let client = builder.build()?;
    client.init().await?;
    Ok(client)
}

/// Reports `client`'s connection in `metrics` (`chat_accounts_redis_connected`,
/// `_reconnects_total`); call once connected.
pub fn watch_connection(client: &Client, metrics: &chat_metrics::RedisConnectionMetrics) {
    use fred::interfaces::EventInterface;
    let probe = client.clone();
    if metrics.watch(move || probe.is_connected()) {
        metrics.count_reconnects(client.reconnect_rx());
    }
}
