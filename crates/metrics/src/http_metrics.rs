//! The HTTP families of the eight compatibility metrics (docs/observability.md):
//! `http_requests_total{method,endpoint,status}` and
//! `http_request_duration_seconds{method,endpoint}` (a histogram; the original design had
//! a summary, which `prometheus-client` lacks and which cannot be aggregated across
//! replicas).
//!
//! `endpoint` is the route template (`/v1/rooms/{room}/messages`), never the raw path,
//! and `unmatched` for requests no route took (404s), so scanners cannot create series.
//! `method` is one of the standard methods or `other`, for the same reason.

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::buckets::http_histogram;

/// The endpoint label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Labels of `http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `POST`, ... or `other`.
    pub method: &'static str,
    /// The route template, or `unmatched`.
    pub endpoint: Cow<'static, str>,
    /// The HTTP status code of the response.
    pub status: u16,
}

/// Labels of `http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `POST`, ... or `other`.
    pub method: &'static str,
    /// The route template, or `unmatched`.
    pub endpoint: Cow<'static, str>,
}

/// The HTTP families; cheap to clone (clones share the series).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    /// Families registered nowhere (for components built without a registry).
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(http_histogram),
        }
    }
}

impl HttpMetrics {
    /// Registers both families in `registry` (the root registry: the compatibility
    /// metrics carry no prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from receiving an HTTP request to having its response, by method and route template",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        metrics
    }

    /// Records one answered request. `endpoint` is the route template, `None` when no
    /// route matched.
    pub fn observe(&self, method: &str, endpoint: Option<&str>, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let endpoint: Cow<'static, str> = match endpoint {
            Some(route) => Cow::Owned(route.to_owned()),
            None => Cow::Borrowed(UNMATCHED),
        };
        self.duration
            .get_or_create(&RouteLabels {
                method,
                endpoint: endpoint.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                endpoint,
                status,
            })
            .inc();
    }

    /// Creates the series of a route that will surely be requested (at 0), so the
    /// families are present in the very first scrape.
    pub fn declare(&self, method: &str, endpoint: &'static str, status: u16) {
        let method = method_label(method);
        let endpoint = Cow::Borrowed(endpoint);
        let _ = self.duration.get_or_create(&RouteLabels {
            method,
            endpoint: endpoint.clone(),
        });
        let _ = self.requests.get_or_create(&RequestLabels {
            method,
            endpoint,
            status,
        });
    }
}

/// A bounded method label.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines() {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        http.observe(
            "GET",
            Some("/v1/rooms/{room}/messages"),
            200,
            Duration::from_millis(30),
        );
        http.observe("BREW", None, 404, Duration::from_millis(1));
        let text = crate::exposition(&registry);
        let expected = r#"# HELP http_requests_total HTTP requests answered, by method, route template and status code.
# TYPE http_requests_total counter
http_requests_total{method="GET",endpoint="/v1/rooms/{room}/messages",status="200"} 1
http_requests_total{method="other",endpoint="unmatched",status="404"} 1
# HELP http_request_duration_seconds Time from receiving an HTTP request to having its response, by method and route template.
# TYPE http_request_duration_seconds histogram
"#;
        assert_eq!(
            crate::missing_lines(&text, expected),
            Vec::<&str>::new(),
            "{text}"
        );
        for (le, n) in [
            ("0.005", 0),
            ("0.01", 0),
            ("0.025", 0),
            ("0.05", 1),
            ("0.1", 1),
            ("0.25", 1),
            ("0.5", 1),
            ("1", 1),
            ("2.5", 1),
            ("5", 1),
            ("10", 1),
            ("+Inf", 1),
        ] {
            let line = format!(
                r#"http_request_duration_seconds_bucket{{method="GET",endpoint="/v1/rooms/{{room}}/messages",le="{le}"}} {n}"#
            );
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        assert!(text.contains(r#"http_request_duration_seconds_count{method="GET",endpoint="/v1/rooms/{room}/messages"} 1"#));
    }
}
