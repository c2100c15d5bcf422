//! The web client as the all-in-one serves it: the page at `/` and its files under
//! `/assets/`, with their types, caching and security headers, and `If-None-Match`
//! revalidation. (Its behaviour in a real browser: `tests/browser/`.)

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common;

/// An all-in-one on port 0 with its store in a temporary directory; stops when dropped.
struct Running {
    base: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let chat = chat::AllInOne::build_embedded(
            dir.path(),
            common::all_in_one_gateway(),
            shutdown.clone(),
        )
        .await?;
        let base = format!("http://{}", chat.http_addr()?);
        let task = tokio::spawn(chat.run());
        Ok(Self {
            base,
            shutdown,
            task,
            _dir: dir,
        })
    }

    async fn get(&self, path: &str, if_none_match: Option<&str>) -> anyhow::Result<Fetched> {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let response = request.send().await?;
        Ok(Fetched {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await?,
        })
    }

    /// Stops it and returns how `run` ended (a clean drain is `Ok`).
    async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        (&mut self.task).await?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Fetched {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// The files the page loads, with the type each must be served with.
const ASSETS: [(&str, &str); 7] = [
    ("/assets/app.js", "text/javascript; charset=utf-8"),
    ("/assets/auth.js", "text/javascript; charset=utf-8"),
    ("/assets/users.js", "text/javascript; charset=utf-8"),
    ("/assets/connection.js", "text/javascript; charset=utf-8"),
    ("/assets/rooms.js", "text/javascript; charset=utf-8"),
    ("/assets/app.css", "text/css; charset=utf-8"),
    ("/assets/icon.svg", "image/svg+xml"),
];

fn assert_common_headers(path: &str, got: &Fetched) {
    assert_eq!(got.header(header::CACHE_CONTROL), "no-cache", "{path}");
    let etag = got.header(header::ETAG);
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{path}: strong ETag, got {etag:?}"
    );
    let csp = got.header(header::CONTENT_SECURITY_POLICY);
    assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
    assert!(csp.contains("connect-src 'self' ws: wss:"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert_eq!(
        got.header(header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_assets_are_served_with_type_cache_and_security_headers() -> anyhow::Result<()> {
    let chat = Running::start().await?;

    let page = chat.get("/", None).await?;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header(header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_common_headers("/", &page);
    assert!(page.body.starts_with("<!doctype html>"), "{}", page.body);
    assert!(
        page.body
            .contains(r#"<script type="module" src="/assets/app.js"></script>"#)
    );

    let mut tags = vec![page.header(header::ETAG).to_owned()];
    for (path, content_type) in ASSETS {
        let asset = chat.get(path, None).await?;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert_eq!(asset.header(header::CONTENT_TYPE), content_type, "{path}");
        assert_common_headers(path, &asset);
        assert!(!asset.body.is_empty(), "{path}");
        tags.push(asset.header(header::ETAG).to_owned());
    }
    let count = tags.len();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), count, "every file has its own ETag");

    // The API still answers next to the client.
    assert_eq!(chat.get("/healthz", None).await?.status, StatusCode::OK);
    chat.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_revalidates_with_304() -> anyhow::Result<()> {
    let chat = Running::start().await?;
    for path in std::iter::once("/").chain(ASSETS.iter().map(|(p, _)| *p)) {
        let first = chat.get(path, None).await?;
        let etag = first.header(header::ETAG).to_owned();

        let again = chat.get(path, Some(&etag)).await?;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.body.is_empty(), "{path}: 304 has no body");
        assert_eq!(again.header(header::ETAG), etag, "{path}");
        assert_eq!(again.header(header::CACHE_CONTROL), "no-cache", "{path}");

        // Weak comparison, lists, and `*` (RFC 9110).
        for hit in [
            format!("W/{etag}"),
            format!("\"older\", {etag}"),
            "*".to_owned(),
        ] {
            let got = chat.get(path, Some(&hit)).await?;
            assert_eq!(got.status, StatusCode::NOT_MODIFIED, "{path} with {hit}");
        }
        let stale = chat.get(path, Some("\"0000000000000000\"")).await?;
        assert_eq!(stale.status, StatusCode::OK, "{path}: another version");
        assert_eq!(stale.body, first.body, "{path}");
    }
    chat.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_assets_are_404_and_head_has_no_body() -> anyhow::Result<()> {
    let chat = Running::start().await?;
    for path in [
        "/assets/nope.js",
        "/assets/",
        "/assets/..%2FCargo.toml",
        "/index.html",
    ] {
        let got = chat.get(path, None).await?;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{path}");
    }

    let head = reqwest::Client::new()
        .head(format!("{}/", chat.base))
        .send()
        .await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.headers().contains_key(header::ETAG));
    assert_eq!(head.bytes().await?.len(), 0);
    chat.stop().await
}
