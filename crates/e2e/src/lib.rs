//! End-to-end harness: the real service binaries (`chat-gateway`, `chat-history`,
//! `chat-presence`, `chat-probe`) as child processes (killed, restarted on the same
//! address, or signalled by the chaos tests), real nginx in front of them, and clients
//! that keep a ledger of everything they were acked and received, checked for loss,
//! duplicates and order at the end by [`check`] and by chat-bench's checker
//! ([`bench_check`]).
//!
//! The binaries are not built by `cargo test` for this package (cargo only builds the
//! binaries of the package under test): `scripts/test.sh` runs `cargo build --bins` first.
//! They are looked up in `CHAT_BIN_DIR`, else next to the test executable
//! (`target/<profile>/`).
//!
//! # Layout
//!
//! - [`harness`]: finding the binaries and nginx; [`Harness`], one test's directory of
//!   configs and logs, which starts [`Service`] processes and [`Nginx`].
//! - [`http`]: plain HTTP requests to running services ([`http_get`], [`http_status`],
//!   [`metric`], [`presence`], [`stored_messages`]), [`wait_ready`], [`probe`]
//!   (`chat-probe`), and [`jwt`], a client's token.
//! - [`participant`]: the ledger client, [`Participant`], with its [`Ack`]s and live
//!   [`Progress`].
//! - [`topology`]: [`Topology`], the one way to declare and start a set of service
//!   processes (gateways, history on a [`Store`], presence, [`Redis`], nginx, gateway
//!   [`Link`]s through a fault proxy) and get each of them back ([`Running`]).
//! - [`verdict`]: the checkers over the ledgers, [`check`] (giving a [`Verdict`]) and
//!   [`bench_check`].
//!
//! Every public name is also exported at the crate root.

pub mod harness;
pub mod http;
pub mod participant;
pub mod topology;
pub mod verdict;

pub use harness::{Harness, Nginx, Service, bin_dir, binary, nginx_binary, repo_root};
pub use http::{http_get, http_status, jwt, metric, presence, probe, stored_messages, wait_ready};
pub use participant::{Ack, InFlight, Participant, Progress};
pub use topology::{Link, Redis, Running, Store, Topology};
pub use verdict::{Verdict, bench_check, check};
