//! A client of a gateway's accounts HTTP API (`/v1/auth/*`, `/v1/users/*`; the contract
//! is docs/protocol.md, "Accounts HTTP API"), for tests that drive it from outside.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// What the gateway answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// `body.error.code`.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// Fails unless the status is `status`, showing the body.
    pub fn expect(self, status: u16) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.status == status,
            "expected HTTP {status}, got {} {}",
            self.status,
            self.body
        );
        Ok(self)
    }
}

/// Requests to one gateway (`http://host:port`).
#[derive(Debug, Clone)]
pub struct AccountsHttp {
    base: String,
    http: reqwest::Client,
}

impl AccountsHttp {
    /// A client of the gateway at `base` (`http://127.0.0.1:8000`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    /// Any request: `bearer` as `Authorization: Bearer`, `body` as JSON, extra
    /// `headers`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok(Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// `POST path` with a JSON body and optional Bearer token.
    pub async fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Reply> {
        self.call(Method::POST, path, bearer, Some(body), &[]).await
    }

    /// `GET path` with an optional Bearer token.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, bearer, None, &[]).await
    }

    /// Signs `username` up (201 expected); the reply's body.
    pub async fn sign_up(&self, username: &str, password: &str) -> anyhow::Result<Value> {
        let body = serde_json::json!({ "username": username, "password": password });
        Ok(self
            .post("/v1/auth/signup", None, &body)
            .await?
            .expect(201)?
            .body)
    }

    /// Logs `username` in (200 expected); the reply's body.
    pub async fn log_in(&self, username: &str, password: &str) -> anyhow::Result<Value> {
        let body = serde_json::json!({ "username": username, "password": password });
        Ok(self
            .post("/v1/auth/login", None, &body)
            .await?
            .expect(200)?
            .body)
    }
}

/// The `access_token` of a sign-up, log-in or refresh reply.
pub fn access_token(reply: &Value) -> anyhow::Result<String> {
    field(reply, "access_token")
}

/// The `refresh_token` of a sign-up, log-in or refresh reply.
pub fn refresh_token(reply: &Value) -> anyhow::Result<String> {
    field(reply, "refresh_token")
}

fn field(reply: &Value, name: &str) -> anyhow::Result<String> {
    reply[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {name} in {reply}"))
}
