//! The web client: static files from `crates/gateway/web/`, embedded in the binary and
//! served at `/` (the page) and `/assets/{file}` (scripts, styles, icon).
//!
//! File names carry no content hash (there is no build step), so every response says
//! `Cache-Control: no-cache` and carries a strong `ETag`: browsers revalidate on each load
//! and get a body-less 304 while the binary is unchanged. The tags are hashes of the
//! embedded bytes, computed once per process. Every response also carries a
//! Content-Security-Policy that only allows this origin (and WebSockets to it), so even
//! a bug in the client's rendering cannot load or run foreign code.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

/// Scripts, styles, images and connections from this origin only; WebSockets to any
/// host because CSP 'self' does not cover ws:/wss: in every browser; no plugins, no
/// framing, no `<base>` tricks.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Every asset must be revalidated: names are not fingerprinted.
const CACHE_CONTROL: &str = "no-cache";

/// One embedded file.
#[derive(Debug)]
struct Asset {
    /// Path under `/assets/` (the page itself is served at `/` only).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page, served at `/`.
const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../web/index.html"),
};

/// Files served under `/assets/`.
const ASSETS: [Asset; 7] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        name: "connection.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/connection.js"),
    },
    Asset {
        name: "auth.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/auth.js"),
    },
    Asset {
        name: "users.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/users.js"),
    },
    Asset {
        name: "rooms.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/rooms.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../web/icon.svg"),
    },
];

/// An asset with its entity tag.
#[derive(Debug)]
struct Served {
    asset: &'static Asset,
    /// Quoted strong entity tag, ready for the `ETag` header.
    etag: String,
}

impl Served {
    fn new(asset: &'static Asset) -> Self {
        Self {
            asset,
            etag: format!("\"{:016x}\"", fnv1a64(asset.body)),
        }
    }
}

static SERVED_INDEX: LazyLock<Served> = LazyLock::new(|| Served::new(&INDEX));
static SERVED_ASSETS: LazyLock<Vec<Served>> =
    LazyLock::new(|| ASSETS.iter().map(Served::new).collect());

/// Registers `GET`/`HEAD` `/` and `/assets/{file}`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Hash now rather than on the first request.
    LazyLock::force(&SERVED_INDEX);
    LazyLock::force(&SERVED_ASSETS);
    cfg.service(
        web::resource("/")
            .route(web::get().to(index))
            .route(web::head().to(index)),
    )
    .service(
        web::resource("/assets/{file}")
            .route(web::get().to(asset))
            .route(web::head().to(asset)),
    );
}

async fn index(req: HttpRequest) -> HttpResponse {
    respond(&req, &SERVED_INDEX)
}

async fn asset(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    match SERVED_ASSETS.iter().find(|s| s.asset.name == file.as_str()) {
        Some(served) => respond(&req, served),
        None => with_security_headers(HttpResponse::NotFound())
            .content_type("text/plain; charset=utf-8")
            .body("not found"),
    }
}

/// 304 when the client already holds this version, else the file.
fn respond(req: &HttpRequest, served: &Served) -> HttpResponse {
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| if_none_match_hits(v, &served.etag));
    let mut response = with_security_headers(if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    });
    response
        .insert_header((header::ETAG, served.etag.as_str()))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL));
    if fresh {
        response.finish()
    } else {
        response
            .content_type(served.asset.content_type)
            .body(served.asset.body)
    }
}

fn with_security_headers(
    mut builder: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    builder
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag
/// equal to ours once a `W/` prefix is ignored.
fn if_none_match_hits(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// FNV-1a, 64 bits: tiny, dependency-free, and plenty to tell versions of a few files
/// apart (this is a cache validator, not a security boundary).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let tag = "\"0123456789abcdef\"";
        let hits = |v: &'static str| if_none_match_hits(&HeaderValue::from_static(v), tag);
        assert!(hits("\"0123456789abcdef\""));
        assert!(hits("W/\"0123456789abcdef\""));
        assert!(hits("\"other\", \"0123456789abcdef\""));
        assert!(hits("*"));
        assert!(!hits("\"other\""));
        assert!(!hits("0123456789abcdef"));
        assert!(!hits(""));
    }

    #[test]
    fn every_asset_has_a_distinct_tag_and_a_type() {
        let mut tags: Vec<&str> = SERVED_ASSETS.iter().map(|s| s.etag.as_str()).collect();
        tags.push(&SERVED_INDEX.etag);
        let count = tags.len();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), count);
        for served in SERVED_ASSETS.iter() {
            assert!(
                !served.asset.body.is_empty(),
                "{} is empty",
                served.asset.name
            );
            assert!(!served.asset.content_type.is_empty());
        }
    }

    /// The file names that follow each `marker` in `text`.
    fn referenced<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
        text.split(marker)
            .skip(1)
            .map(|rest| {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn the_page_and_its_modules_reference_only_embedded_assets() {
        let page = std::str::from_utf8(INDEX.body).unwrap_or_default();
        let mut names = referenced(page, "/assets/");
        assert!(names.contains(&"app.js"), "the page loads app.js");
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let module = std::str::from_utf8(asset.body).unwrap_or_default();
            names.extend(referenced(module, "from './"));
        }
        for name in names {
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "/assets/{name} is referenced but not embedded"
            );
        }
    }
}
