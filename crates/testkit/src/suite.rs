//! Behaviour suites: one list of cases run against every backend of a trait.
//!
//! A backend trait (`MessageStore`, `PresenceStore`, `FanOut`) promises the same
//! behaviour from each implementation, so its integration test names each case once and
//! each backend once, and [`backend_suite!`](crate::backend_suite) generates one test per
//! (backend, case). A case cannot be added to one backend only: there is one list.

use crate::mongo::{MongoServer, unique_db_name};

/// Generates one test per (backend, case): for each backend a module named after it,
/// holding one test per case named after the case, so a test's path is
/// `<backend>::<case>`.
///
/// Each backend is given as its test attributes (at least one, e.g.
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`), its name, and its
/// async opener: an expression callable with no arguments whose future yields the
/// backend's fixture (a store plus whatever must outlive it, such as the server it runs
/// on). Each case is an `async fn` in the invoking module taking that fixture by value;
/// every test opens a fresh fixture and hands it to its case. The openers and cases are
/// resolved in the invoking module.
///
/// Cases that only make sense on some backends (a Redis restart, a file reopened) do not
/// belong in the list: write them as plain tests beside the suite.
///
/// ```no_run
/// struct Fixture(Vec<u32>);
///
/// async fn open_small() -> Fixture {
///     Fixture(vec![1])
/// }
///
/// async fn open_large() -> Fixture {
///     Fixture((0..1000).collect())
/// }
///
/// async fn is_not_empty(fx: Fixture) {
///     assert!(!fx.0.is_empty());
/// }
///
/// async fn starts_at_zero_or_one(fx: Fixture) {
///     assert!(fx.0[0] <= 1);
/// }
///
/// // Four tests: small::is_not_empty, small::starts_at_zero_or_one,
/// // large::is_not_empty, large::starts_at_zero_or_one.
/// chat_testkit::backend_suite! {
///     backends: {
///         #[tokio::test]
///         small => open_small,
///         #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///         large => open_large,
///     },
///     cases: [
///         is_not_empty,
///         starts_at_zero_or_one,
///     ],
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! backend_suite {
    (
        backends: {
            $( $(#[$attr:meta])+ $backend:ident => $open:expr ),+ $(,)?
        },
        cases: $cases:tt $(,)?
    ) => {
        $(
            $crate::backend_suite!(@backend { $(#[$attr])+ } $backend, $open, $cases);
        )+
    };
    (@backend $attrs:tt $backend:ident, $open:expr, [$($case:ident),+ $(,)?]) => {
        mod $backend {
            // The opener is resolved in the invoking module; cases are called by their
            // full path, as the tests here bear their names.
            #[allow(unused_imports)]
            use super::*;

            $(
                $crate::backend_suite!(@case $attrs $case, $open);
            )+
        }
    };
    (@case { $(#[$attr:meta])+ } $case:ident, $open:expr) => {
        $(#[$attr])+
        async fn $case() {
            super::$case(($open)().await).await;
        }
    };
}

/// The fixture of a store suite whose backends are an embedded store in a temporary
/// directory and a Mongo store on a fresh database of a [`MongoServer`]: the store plus
/// whatever must outlive it.
pub struct StoreFixture<S: ?Sized> {
    pub store: std::sync::Arc<S>,
    /// The temporary directory of an embedded store (its data in `data` inside it).
    pub dir: Option<tempfile::TempDir>,
    /// The server and database of a Mongo store.
    pub mongo: Option<(MongoServer, String)>,
}

impl<S: ?Sized> StoreFixture<S> {
    /// An embedded store opened by `open` on `data` in a fresh temporary directory.
    pub fn embedded(open: impl FnOnce(&std::path::Path) -> std::sync::Arc<S>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            store: open(&dir.path().join("data")),
            dir: Some(dir),
            mongo: None,
        }
    }

    /// Where an embedded store keeps its data (to reopen it).
    pub fn data_path(&self) -> std::path::PathBuf {
        let dir = self.dir.as_ref().expect("embedded fixture");
        dir.path().join("data")
    }

    /// A Mongo store connected by `connect(url, db)` to a fresh database of a fresh
    /// MongoDB-wire server.
    pub async fn mongo<F, Fut>(connect: F) -> Self
    where
        F: FnOnce(String, String) -> Fut,
        Fut: std::future::Future<Output = std::sync::Arc<S>>,
    {
        let server = MongoServer::start().await.expect("start MongoDB server");
        let db = unique_db_name();
        Self {
            store: connect(server.url(), db.clone()).await,
            dir: None,
            mongo: Some((server, db)),
        }
    }
}

impl<S: ?Sized> std::fmt::Debug for StoreFixture<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFixture")
            .field("dir", &self.dir)
            .field("mongo_db", &self.mongo.as_ref().map(|(_, db)| db))
            .finish_non_exhaustive()
    }
}

/// A store suite: declares its `Fixture` (a [`StoreFixture`] of `dyn $trait`) and two
/// openers, `open_embedded` (with `$open(path)`, e.g. `EmbeddedStore::open`) and
/// `open_mongo` (with `$connect(url, db).await`, e.g. `MongoStore::connect`), and runs
/// the cases on both backends with [`backend_suite!`](crate::backend_suite), each test
/// on a two-worker runtime.
#[macro_export]
macro_rules! store_suite {
    (
        store: $trait:path,
        embedded: $open:path,
        mongo: $connect:path,
        cases: $cases:tt $(,)?
    ) => {
        $crate::backend_suite! {
            backends: {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                embedded => open_embedded,
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                mongo => open_mongo,
            },
            cases: $cases,
        }

        /// A store plus whatever must outlive it.
        type Fixture = $crate::suite::StoreFixture<dyn $trait>;

        async fn open_embedded() -> Fixture {
            Fixture::embedded(|data| std::sync::Arc::new($open(data).expect("open embedded store")))
        }

        async fn open_mongo() -> Fixture {
            Fixture::mongo(|url, db| async move {
                let store = $connect(&url, &db).await.expect("connect mongo store");
                std::sync::Arc::new(store) as std::sync::Arc<dyn $trait>
            })
            .await
        }
    };
}
