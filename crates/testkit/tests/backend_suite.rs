//! `backend_suite!` itself: each generated test opens its own backend's fixture, hands it
//! to its own case, and runs under that backend's test attribute.

use tokio::runtime::{Handle, RuntimeFlavor};

/// What a test was given: which opener made it.
struct Fixture {
    backend: &'static str,
}

async fn open_plain() -> Fixture {
    Fixture { backend: "plain" }
}

async fn open_threaded() -> Fixture {
    Fixture {
        backend: "threaded",
    }
}

/// The test harness names each test's thread after the test's path.
fn test_name() -> String {
    std::thread::current()
        .name()
        .expect("a named test thread")
        .to_owned()
}

async fn gets_its_own_backend(fx: Fixture) {
    assert_eq!(test_name(), format!("{}::gets_its_own_backend", fx.backend));
}

async fn runs_under_its_backends_attribute(fx: Fixture) {
    let expected = match fx.backend {
        "plain" => RuntimeFlavor::CurrentThread,
        _ => RuntimeFlavor::MultiThread,
    };
    assert_eq!(Handle::current().runtime_flavor(), expected);
    assert_eq!(
        test_name(),
        format!("{}::runs_under_its_backends_attribute", fx.backend)
    );
}

chat_testkit::backend_suite! {
    backends: {
        #[tokio::test]
        plain => open_plain,
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        threaded => open_threaded,
    },
    cases: [gets_its_own_backend, runs_under_its_backends_attribute],
}
