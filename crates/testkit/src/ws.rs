//! A protocol-v1 WebSocket client for tests.
//!
//! Replies are matched by `ref`; frames that arrive while waiting for a reply (room
//! messages, typing, presence events) are kept in order and handed out by
//! [`WsClient::recv`] and [`WsClient::next_message`].

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long a test waits for any one frame.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(15);

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected client that has received `hello`.
#[derive(Debug)]
pub struct WsClient {
    stream: Stream,
    /// The `hello` frame.
    pub hello: Value,
    /// Frames received but not yet handed out.
    backlog: VecDeque<Value>,
    next_ref: u64,
}

/// An upgrade the server refused with an HTTP error.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
}

/// What ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code, when the server sent a close frame.
    pub code: Option<u16>,
    pub reason: String,
}

impl Closed {
    fn from_frame(frame: Option<CloseFrame>) -> Self {
        match frame {
            Some(CloseFrame { code, reason }) => Self {
                code: Some(code.into()),
                reason: reason.to_string(),
            },
            None => Self {
                code: None,
                reason: String::new(),
            },
        }
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "connection closed with code {code} ({:?})", self.reason),
            None => write!(f, "connection closed without a code ({:?})", self.reason),
        }
    }
}

/// Reading a frame fails with this error (inside `anyhow::Error`) when the server closed
/// the connection with a close frame.
impl std::error::Error for Closed {}

impl WsClient {
    /// Connects to `url` (`ws://host:port/v1/ws?user=alice`) and reads `hello`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with_headers(url, &[])
            .await?
            .map_err(|refused| {
                anyhow::anyhow!("connecting {url}: HTTP {} {}", refused.status, refused.body)
            })
    }

    /// Connects to the gateway at `addr` as `user` with dev auth and joins `room`.
    pub async fn join_as(
        addr: std::net::SocketAddr,
        user: &str,
        room: &str,
    ) -> anyhow::Result<Self> {
        let mut client = Self::connect(&format!("ws://{addr}/v1/ws?user={user}")).await?;
        client.join(room, None).await?;
        Ok(client)
    }

    /// Connects with extra request headers (`Origin`, ...). `Err(Refused)` inside
    /// the `Ok` when the server answered the upgrade with an HTTP error.
    pub async fn connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Result<Self, Refused>> {
        use tokio_tungstenite::tungstenite::Error;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(HeaderName::try_from(*name)?, HeaderValue::try_from(*value)?);
        }
        let stream = match connect_async(request).await {
            Ok((stream, _)) => stream,
            Err(Error::Http(response)) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let body = response.body().as_deref().unwrap_or_default();
                return Ok(Err(Refused {
                    status: response.status().as_u16(),
                    retry_after: header("retry-after"),
                    body: serde_json::from_slice(body).unwrap_or(Value::Null),
                }));
            }
            Err(e) => return Err(anyhow::anyhow!("connecting {url}: {e}")),
        };
        let mut client = Self {
            stream,
            hello: Value::Null,
            backlog: VecDeque::new(),
            next_ref: 0,
        };
        let hello = client.recv().await?;
        anyhow::ensure!(hello["type"] == "hello", "expected hello, got {hello}");
        client.hello = hello;
        Ok(Ok(client))
    }

    /// The HTTP status of a refused upgrade, or `None` when the upgrade succeeded.
    pub async fn refused_status(url: &str) -> anyhow::Result<Option<u16>> {
        use tokio_tungstenite::tungstenite::Error;
        match connect_async(url).await {
            Ok(_) => Ok(None),
            Err(Error::Http(response)) => Ok(Some(response.status().as_u16())),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.stream.send(WsMessage::text(text.into())).await?;
        Ok(())
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, frame: &Value) -> anyhow::Result<()> {
        self.send_text(frame.to_string()).await
    }

    /// The next frame: from the backlog, else from the socket.
    pub async fn recv(&mut self) -> anyhow::Result<Value> {
        if let Some(frame) = self.backlog.pop_front() {
            return Ok(frame);
        }
        self.read().await
    }

    /// The next text frame from the socket, skipping control frames.
    async fn read(&mut self) -> anyhow::Result<Value> {
        loop {
            if let WsMessage::Text(text) = self.next_frame().await? {
                return Ok(serde_json::from_str(&text)?);
            }
        }
    }

    /// The next frame from the socket other than a close. A close is an error of type
    /// [`Closed`], so callers can tell it (and its code) from other failures:
    /// `e.downcast_ref::<Closed>()`.
    async fn next_frame(&mut self) -> anyhow::Result<WsMessage> {
        let item = tokio::time::timeout(RECV_TIMEOUT, self.stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("no frame within {RECV_TIMEOUT:?}"))?;
        match item {
            Some(Ok(WsMessage::Close(frame))) => Err(Closed::from_frame(frame).into()),
            Some(Ok(message)) => Ok(message),
            Some(Err(e)) => anyhow::bail!("websocket error: {e}"),
            None => anyhow::bail!("connection ended"),
        }
    }

    /// Sends a WebSocket ping carrying `payload` and returns the payload of the next pong;
    /// text frames arriving meanwhile stay in the backlog.
    pub async fn ping(&mut self, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.stream
            .send(WsMessage::Ping(payload.to_vec().into()))
            .await?;
        self.next_control(|m| match m {
            WsMessage::Pong(p) => Some(p.to_vec()),
            _ => None,
        })
        .await
    }

    /// Waits for the server's next WebSocket ping (the library answers it); text frames
    /// arriving meanwhile stay in the backlog.
    pub async fn server_ping(&mut self) -> anyhow::Result<Vec<u8>> {
        self.next_control(|m| match m {
            WsMessage::Ping(p) => Some(p.to_vec()),
            _ => None,
        })
        .await
    }

    async fn next_control<T>(
        &mut self,
        wanted: impl Fn(WsMessage) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            match self.next_frame().await? {
                WsMessage::Text(text) => self.backlog.push_back(serde_json::from_str(&text)?),
                message => {
                    if let Some(found) = wanted(message) {
                        return Ok(found);
                    }
                }
            }
        }
    }

    /// Sends `frame` with a fresh `ref` and returns the reply carrying that `ref`; frames
    /// arriving meanwhile stay in the backlog.
    pub async fn request(&mut self, mut frame: Value) -> anyhow::Result<Value> {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        frame["ref"] = json!(reference);
        self.send_json(&frame).await?;
        let mut skipped = Vec::new();
        let reply = loop {
            let next = match self.backlog.pop_front() {
                Some(f) => f,
                None => self.read().await?,
            };
            if next["ref"] == json!(reference) {
                break next;
            }
            skipped.push(next);
        };
        for f in skipped.into_iter().rev() {
            self.backlog.push_front(f);
        }
        Ok(reply)
    }

    /// Joins a room; returns the `joined` frame. Catch-up messages stay in the backlog.
    pub async fn join(&mut self, room: &str, since: Option<u64>) -> anyhow::Result<Value> {
        let mut frame = json!({"type": "join", "room": room});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        let reply = self.request(frame).await?;
        anyhow::ensure!(reply["type"] == "joined", "join {room} failed: {reply}");
        Ok(reply)
    }

    /// Sends a message; returns the reply (`ack` or `error`).
    pub async fn send_message(
        &mut self,
        room: &str,
        body: &str,
        client_id: &str,
    ) -> anyhow::Result<Value> {
        self.request(json!({"type": "send", "room": room, "body": body, "client_id": client_id}))
            .await
    }

    /// The next `message` frame of `room`, skipping other rooms' messages and ephemeral
    /// frames (`typing`, `presence`) but failing on anything else.
    pub async fn next_message(&mut self, room: &str) -> anyhow::Result<Value> {
        loop {
            let frame = self.recv().await?;
            match frame["type"].as_str() {
                Some("message") if frame["room"] == room => return Ok(frame),
                Some("message" | "typing" | "presence") => continue,
                _ => anyhow::bail!("expected a message of {room}, got {frame}"),
            }
        }
    }

    /// Every frame received so far and not handed out yet. Useful after a `ping` request:
    /// the backlog then holds everything the server sent before the `pong`.
    pub fn drain_backlog(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }

    /// Waits for the server to close the connection and returns the close frame.
    pub async fn closed(&mut self) -> anyhow::Result<Closed> {
        loop {
            let item = tokio::time::timeout(RECV_TIMEOUT, self.stream.next())
                .await
                .map_err(|_| anyhow::anyhow!("not closed within {RECV_TIMEOUT:?}"))?;
            match item {
                Some(Ok(WsMessage::Close(frame))) => return Ok(Closed::from_frame(frame)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    return Ok(Closed {
                        code: None,
                        reason: "connection dropped".into(),
                    });
                }
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
