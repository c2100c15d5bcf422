//! The process's open-file limit (`RLIMIT_NOFILE`) against `CHAT_MAX_CONNECTIONS`.
//!
//! Every WebSocket holds a file descriptor. Many environments start processes with a
//! soft limit of 1024 and a far higher hard limit (systemd, containerd 2, Kubernetes,
//! which has no ulimit setting of its own); past the soft limit `accept` fails with
//! `EMFILE` and the gateway refuses connections it was configured to take. So the
//! gateway raises its soft limit to the hard one at start (no privilege needed), logs
//! the result, and warns when it is still too low.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors the gateway needs besides its WebSockets: listeners, connections to
/// Redis, history and presence, HTTP requests, logs.
pub const SPARE_FILES: u64 = 1024;

/// The open-file limit after [`raise_open_file_limit`]: `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The limit in force: what `accept` runs into.
    pub soft: Option<u64>,
    /// The ceiling an unprivileged process may raise `soft` to.
    pub hard: Option<u64>,
}

impl OpenFileLimit {
    /// Whether `max_connections` WebSockets and [`SPARE_FILES`] fit under the limit.
    pub fn fits(&self, max_connections: usize) -> bool {
        self.soft
            .is_none_or(|soft| soft >= (max_connections as u64).saturating_add(SPARE_FILES))
    }
}

/// Raises the soft open-file limit to the hard limit, then logs the limit in force: at
/// info level when `max_connections` fit, as a warning naming the fix when they do not.
/// A failure to raise (some sandboxes refuse) is logged and leaves the limit as it was.
pub fn raise_open_file_limit(max_connections: usize) -> OpenFileLimit {
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit to the hard limit");
        }
    }
    let now = getrlimit(Resource::Nofile);
    let limit = OpenFileLimit {
        soft: now.current,
        hard: now.maximum,
    };
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    if limit.fits(max_connections) {
        tracing::info!(
            soft = %show(limit.soft),
            hard = %show(limit.hard),
            max_connections,
            "open-file limit"
        );
    } else {
        tracing::warn!(
            soft = %show(limit.soft),
            hard = %show(limit.hard),
            max_connections,
            "open-file limit below CHAT_MAX_CONNECTIONS + {SPARE_FILES}: connections past it \
             fail with 'too many open files'; raise nofile (compose `ulimits`, systemd \
             LimitNOFILE, the container runtime) or lower CHAT_MAX_CONNECTIONS"
        );
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::{OpenFileLimit, SPARE_FILES, raise_open_file_limit};

    #[test]
    fn fits_counts_the_spare_descriptors() {
        let limit = |soft| OpenFileLimit { soft, hard: soft };
        assert!(limit(None).fits(usize::MAX));
        assert!(limit(Some(100_000 + SPARE_FILES)).fits(100_000));
        assert!(!limit(Some(100_000)).fits(100_000));
        assert!(!limit(Some(1024)).fits(100_000));
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_open_file_limit(10);
        assert_eq!(limit.soft, limit.hard);
    }
}
