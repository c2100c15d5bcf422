//! The three client protocols, as far as the bench needs them: URLs, the frames it
//! sends, and what a received text frame means.
//!
//! Every message body is `<sender>:<counter>:<sent_at_us>:` padded with `x`, so any
//! receiver can compute end-to-end latency and, on protocols without seqs, check order
//! per sender. Bodies never need JSON escaping.

use std::borrow::Cow;

use serde::Deserialize;

use chat_model::{ClientMsgId, Message, RoomId, Timestamp, UserId};

use crate::plan::{Auth, Plan, Protocol};

/// The message the benches measure: a 64-byte body (see [`body`]) in a room with a
/// realistic name, seq and id.
pub fn sample_message() -> Message {
    Message {
        room: RoomId::parse("bench-room-7").expect("valid room"),
        seq: 123_456,
        id: "019ad2c4-8b7e-7c3a-9f1e-2b3c4d5e6f70".into(),
        from: UserId::parse("bench-u42").expect("valid user"),
        body: body(42, 1000, 1_796_009_028_123_456, 64),
        ts: Timestamp(1_796_009_028_123),
        client_id: ClientMsgId::parse("42-1000").expect("valid client id"),
    }
}

/// The URL connection `conn` opens; `room` is its only room (used by the raw protocol,
/// whose room is the path).
pub fn url(plan: &Plan, conn: u32, room: Option<u32>) -> anyhow::Result<String> {
    let base = plan.targets[plan.target(conn)].trim_end_matches('/');
    let user = plan.user(conn);
    let auth = match &plan.auth {
        Auth::Dev => format!("user={user}"),
        Auth::Jwt { secret } => format!("token={}", token(secret, &user)?),
    };
    Ok(match plan.protocol {
        Protocol::Chat => format!("{base}/v1/ws?{auth}"),
        Protocol::Raw => {
            let room = room.ok_or_else(|| anyhow::anyhow!("raw connections need one room"))?;
            format!("{base}/ws/{}?{auth}", plan.room_name(room))
        }
        Protocol::Socketio => format!("{base}/socket.io/?EIO=4&transport=websocket&{auth}"),
    })
}

/// An HS256 token for `user`, valid for a day.
pub fn token(secret: &str, user: &str) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let exp = crate::now_micros() / 1_000_000 + 86_400;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims { sub: user, exp },
        &key,
    )?)
}

/// A message body: the header, padded to `size` bytes.
pub fn body(sender: u32, counter: u64, sent_at_us: u64, size: usize) -> String {
    let mut body = format!("{sender}:{counter}:{sent_at_us}:");
    if body.len() < size {
        body.extend(std::iter::repeat_n('x', size - body.len()));
    }
    body
}

/// The header of a body made by [`body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHeader {
    pub sender: u32,
    pub counter: u64,
    pub sent_at_us: u64,
}

/// Reads the header of a body made by [`body`].
pub fn parse_body(body: &str) -> Option<BodyHeader> {
    let mut parts = body.splitn(4, ':');
    Some(BodyHeader {
        sender: parts.next()?.parse().ok()?,
        counter: parts.next()?.parse().ok()?,
        sent_at_us: parts.next()?.parse().ok()?,
    })
}

/// The text frame that sends `body` to `room_name`.
pub fn send_frame(protocol: Protocol, room_name: &str, body: &str, client_id: &str) -> String {
    match protocol {
        Protocol::Chat => format!(
            r#"{{"type":"send","room":"{room_name}","body":"{body}","client_id":"{client_id}"}}"#
        ),
        Protocol::Raw => body.to_owned(),
        Protocol::Socketio => format!(r#"42["msg","{room_name}","{body}"]"#),
    }
}

/// The text frame that joins `room_name`, correlated by `reference`.
pub fn join_frame(protocol: Protocol, room_name: &str, reference: u32) -> Option<String> {
    match protocol {
        Protocol::Chat => Some(format!(
            r#"{{"type":"join","room":"{room_name}","ref":"j{reference}"}}"#
        )),
        Protocol::Raw => None,
        Protocol::Socketio => Some(format!(r#"42{reference}["join","{room_name}"]"#)),
    }
}

/// What a received text frame means to the bench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A room message. `room` is `None` when the frame does not name it (raw protocol).
    Delivery {
        room: Option<Cow<'a, str>>,
        seq: Option<u64>,
        body: Cow<'a, str>,
    },
    /// The chat server stored one of our sends.
    Ack {
        room: Option<Cow<'a, str>>,
        seq: u64,
    },
    /// A reply to a join: the chat `joined` (with the room's last seq) or a Socket.IO ack.
    Joined { reference: u32, last_seq: u64 },
    /// An error frame from the chat server.
    Error { code: String },
    /// The client must answer with this frame (engine.io ping).
    Answer(&'static str),
    /// Anything else (hello, typing, engine.io noise).
    Other,
}

#[derive(Deserialize)]
struct ChatFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    seq: Option<u64>,
    last_seq: Option<u64>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

/// Interprets one received text frame.
pub fn parse_inbound(protocol: Protocol, text: &str) -> Inbound<'_> {
    match protocol {
        Protocol::Chat => parse_chat(text),
        Protocol::Raw => Inbound::Delivery {
            room: None,
            seq: None,
            body: Cow::Borrowed(text),
        },
        Protocol::Socketio => parse_socketio(text),
    }
}

fn parse_chat(text: &str) -> Inbound<'_> {
    let Ok(frame) = serde_json::from_str::<ChatFrame<'_>>(text) else {
        return Inbound::Error {
            code: "unparseable".into(),
        };
    };
    match &*frame.kind {
        "message" => match (frame.room, frame.body) {
            (Some(room), Some(body)) => Inbound::Delivery {
                room: Some(room),
                seq: frame.seq,
                body,
            },
            _ => Inbound::Other,
        },
        "ack" => match frame.seq {
            Some(seq) => Inbound::Ack {
                room: frame.room,
                seq,
            },
            None => Inbound::Other,
        },
        "joined" => match frame
            .reference
            .as_deref()
            .and_then(|r| r.strip_prefix('j'))
            .and_then(|r| r.parse().ok())
        {
            Some(reference) => Inbound::Joined {
                reference,
                last_seq: frame.last_seq.unwrap_or(0),
            },
            None => Inbound::Other,
        },
        "error" => Inbound::Error {
            code: frame.code.map_or_else(String::new, Cow::into_owned),
        },
        _ => Inbound::Other,
    }
}

fn parse_socketio(text: &str) -> Inbound<'_> {
    // engine.io packet type, then (for "4" = message) the socket.io packet type.
    if text == "2" {
        return Inbound::Answer("3");
    }
    if let Some(event) = text.strip_prefix("42") {
        if let Ok((name, room, body)) =
            serde_json::from_str::<(Cow<'_, str>, Cow<'_, str>, Cow<'_, str>)>(event)
            && name == "msg"
        {
            return Inbound::Delivery {
                room: Some(room),
                seq: None,
                body,
            };
        }
        return Inbound::Other;
    }
    if let Some(ack) = text.strip_prefix("43") {
        let digits = ack.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(reference) = ack[..digits].parse() {
            return Inbound::Joined {
                reference,
                last_seq: 0,
            };
        }
    }
    if text.starts_with("44") {
        return Inbound::Error {
            code: "socket.io connect_error".into(),
        };
    }
    Inbound::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let b = body(7, 42, 1_700_000_000_000_000, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(
            parse_body(&b),
            Some(BodyHeader {
                sender: 7,
                counter: 42,
                sent_at_us: 1_700_000_000_000_000
            })
        );
        assert!(body(1, 1, 1, 0).len() > 4);
        assert_eq!(parse_body("hello"), None);
    }

    #[test]
    fn chat_frames() {
        let m = r#"{"type":"message","room":"b-1","seq":3,"id":"x","from":"u","body":"1:2:3:","ts":"t","client_id":"c"}"#;
        assert_eq!(
            parse_inbound(Protocol::Chat, m),
            Inbound::Delivery {
                room: Some("b-1".into()),
                seq: Some(3),
                body: "1:2:3:".into()
            }
        );
        assert_eq!(
            parse_inbound(
                Protocol::Chat,
                r#"{"type":"ack","room":"r","client_id":"c","seq":9,"id":"i","ts":"t","duplicate":false}"#
            ),
            Inbound::Ack {
                room: Some("r".into()),
                seq: 9
            }
        );
        assert_eq!(
            parse_inbound(
                Protocol::Chat,
                r#"{"type":"joined","room":"r","last_seq":4,"ref":"j2"}"#
            ),
            Inbound::Joined {
                reference: 2,
                last_seq: 4
            }
        );
        let send = send_frame(Protocol::Chat, "b-1", "1:2:3:", "1-2");
        let parsed: serde_json::Value = serde_json::from_str(&send).expect("json");
        assert_eq!(parsed["client_id"], "1-2");
    }

    #[test]
    fn socketio_frames() {
        assert_eq!(parse_inbound(Protocol::Socketio, "2"), Inbound::Answer("3"));
        assert_eq!(
            parse_inbound(Protocol::Socketio, r#"42["msg","b-3","1:2:3:x"]"#),
            Inbound::Delivery {
                room: Some("b-3".into()),
                seq: None,
                body: "1:2:3:x".into()
            }
        );
        assert_eq!(
            parse_inbound(Protocol::Socketio, "4317[]"),
            Inbound::Joined {
                reference: 17,
                last_seq: 0
            }
        );
        assert_eq!(
            join_frame(Protocol::Socketio, "r", 5).as_deref(),
            Some(r#"425["join","r"]"#)
        );
    }
}
