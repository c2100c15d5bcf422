//! Protocol v1 frames: every frame is one JSON object with a `type`.
//!
//! Client frames are parsed in two steps: serde reads a permissive [`RawFrame`] (so the
//! `ref` can be echoed even when a field is wrong), then [`parse_client_frame`] validates
//! it into a [`Request`]. Unknown fields are ignored, for forward compatibility.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{ClientMsgId, RoomId, Seq, UserId};
use crate::limits::{
    DEFAULT_HISTORY_LIMIT, MAX_BODY_BYTES, MAX_FRAME_BYTES, MAX_HISTORY_LIMIT, MAX_PRESENCE_USERS,
    MAX_REF_CHARS,
};
use crate::message::{Message, Timestamp};

/// A validated client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Join {
        room: RoomId,
        since: Option<Seq>,
    },
    Leave {
        room: RoomId,
    },
    Send {
        room: RoomId,
        body: String,
        client_id: ClientMsgId,
    },
    History {
        room: RoomId,
        before: Option<Seq>,
        limit: u32,
    },
    Typing {
        room: RoomId,
    },
    Presence {
        users: Vec<UserId>,
    },
    Ping,
    /// A fresh access token for the connection (renewal before its current one expires).
    Auth {
        token: String,
    },
}

/// Longest token an `auth` frame may carry (the gateway refuses longer tokens anyway).
pub const MAX_AUTH_TOKEN_BYTES: usize = 4096;

/// A client frame: the request plus the client's optional correlation `ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub reference: Option<String>,
    pub request: Request,
}

/// A refused client frame: the `error` frame to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The request's `ref`, when it could be read.
    pub reference: Option<String>,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reference,
        }
    }
}

/// The permissive first parsing step: every field any request may carry.
#[derive(Debug, Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(borrow)]
    room: Option<std::borrow::Cow<'a, str>>,
    since: Option<Seq>,
    body: Option<String>,
    #[serde(borrow)]
    client_id: Option<std::borrow::Cow<'a, str>>,
    before: Option<Seq>,
    limit: Option<u32>,
    users: Option<Vec<std::borrow::Cow<'a, str>>>,
    token: Option<String>,
}

/// Only the `ref`, read from a frame whose other fields failed to parse.
#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// Parses and validates one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::new(
            ErrorCode::TooLarge,
            format!(
                "frame is {} bytes, the limit is {MAX_FRAME_BYTES}",
                text.len()
            ),
            None,
        ));
    }
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| {
        let reference = serde_json::from_str::<RefOnly>(text)
            .ok()
            .and_then(|r| r.reference)
            .filter(|r| r.chars().count() <= MAX_REF_CHARS);
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid frame"
        };
        FrameError::new(ErrorCode::BadRequest, format!("{what}: {e}"), reference)
    })?;
    if let Some(r) = &raw.reference
        && r.chars().count() > MAX_REF_CHARS
    {
        return Err(FrameError::new(
            ErrorCode::BadRequest,
            format!("ref must be at most {MAX_REF_CHARS} characters"),
            None,
        ));
    }
    let reference = raw.reference.clone();
    let request =
        validate(raw).map_err(|(code, msg)| FrameError::new(code, msg, reference.clone()))?;
    Ok(ClientFrame { reference, request })
}

type Invalid = (ErrorCode, String);

fn bad(msg: impl Into<String>) -> Invalid {
    (ErrorCode::BadRequest, msg.into())
}

fn room(raw: &RawFrame<'_>) -> Result<RoomId, Invalid> {
    let s = raw
        .room
        .as_deref()
        .ok_or_else(|| bad("missing field `room`"))?;
    RoomId::parse(s).map_err(|e| bad(format!("invalid room: {e}")))
}

fn validate(raw: RawFrame<'_>) -> Result<Request, Invalid> {
    Ok(match &*raw.kind {
        "join" => Request::Join {
            room: room(&raw)?,
            since: raw.since,
        },
        "leave" => Request::Leave { room: room(&raw)? },
        "send" => {
            let room = room(&raw)?;
            let client_id = raw
                .client_id
                .as_deref()
                .ok_or_else(|| bad("missing field `client_id`"))
                .and_then(|c| {
                    ClientMsgId::parse(c).map_err(|e| bad(format!("invalid client_id: {e}")))
                })?;
            let body = raw.body.ok_or_else(|| bad("missing field `body`"))?;
            if body.len() > MAX_BODY_BYTES {
                return Err((
                    ErrorCode::TooLarge,
                    format!(
                        "body is {} bytes, the limit is {MAX_BODY_BYTES}",
                        body.len()
                    ),
                ));
            }
            Request::Send {
                room,
                body,
                client_id,
            }
        }
        "history" => {
            let limit = raw.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
            if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
                return Err(bad(format!("limit must be 1 to {MAX_HISTORY_LIMIT}")));
            }
            Request::History {
                room: room(&raw)?,
                before: raw.before,
                limit,
            }
        }
        "typing" => Request::Typing { room: room(&raw)? },
        "presence" => {
            let users = raw.users.ok_or_else(|| bad("missing field `users`"))?;
            if users.len() > MAX_PRESENCE_USERS {
                return Err(bad(format!("at most {MAX_PRESENCE_USERS} users per query")));
            }
            let users = users
                .iter()
                .map(|u| UserId::parse(u).map_err(|e| bad(format!("invalid user {u:?}: {e}"))))
                .collect::<Result<_, _>>()?;
            Request::Presence { users }
        }
        "ping" => Request::Ping,
        "auth" => {
            let token = raw.token.ok_or_else(|| bad("missing field `token`"))?;
            if token.is_empty() {
                return Err(bad("empty token"));
            }
            if token.len() > MAX_AUTH_TOKEN_BYTES {
                return Err((
                    ErrorCode::TooLarge,
                    format!(
                        "token is {} bytes, the limit is {MAX_AUTH_TOKEN_BYTES}",
                        token.len()
                    ),
                ));
            }
            Request::Auth { token }
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(format!("unknown frame type {shown:?}")));
        }
    })
}

/// A frame the server sends. Serialise with [`ServerFrame::to_json`].
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Hello {
        user: &'a UserId,
        conn: &'a str,
        gateway: &'a str,
        protocol: u32,
    },
    Joined {
        room: &'a RoomId,
        last_seq: Seq,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Left {
        room: &'a RoomId,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Message(&'a Message),
    Ack {
        room: &'a RoomId,
        client_id: &'a ClientMsgId,
        seq: Seq,
        id: &'a str,
        ts: Timestamp,
        duplicate: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    History {
        room: &'a RoomId,
        messages: &'a [Message],
        has_more: bool,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Typing {
        room: &'a RoomId,
        user: &'a UserId,
    },
    /// Reply to a `presence` query.
    #[serde(rename = "presence")]
    PresenceReply {
        users: &'a BTreeMap<UserId, bool>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// A member of a joined room came online or went offline.
    #[serde(rename = "presence")]
    PresenceEvent {
        room: &'a RoomId,
        user: &'a UserId,
        online: bool,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// Reply to `auth`: the connection now runs on the new token, which expires at `exp`
    /// (seconds since the Unix epoch; absent for a token without `exp`).
    Authed {
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string and no value
        // has a failing Serialize impl.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialisation failed"}"#.to_owned()
        })
    }
}

impl FrameError {
    /// The `error` frame answering this refusal.
    pub fn to_frame(&self) -> ServerFrame<'_> {
        ServerFrame::Error {
            code: self.code,
            message: &self.message,
            reference: self.reference.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, (ErrorCode, Option<String>)> {
        parse_client_frame(text)
            .map(|f| f.request)
            .map_err(|e| (e.code, e.reference))
    }

    #[test]
    fn parses_every_request() {
        assert_eq!(
            parse(r#"{"type":"join","room":"general","since":4}"#),
            Ok(Request::Join {
                room: RoomId::parse("general").expect("valid"),
                since: Some(4)
            })
        );
        assert!(matches!(
            parse(r#"{"type":"send","room":"r","body":"hi","client_id":"c1","extra":1}"#),
            Ok(Request::Send { .. })
        ));
        assert_eq!(
            parse(r#"{"type":"history","room":"r"}"#),
            Ok(Request::History {
                room: RoomId::parse("r").expect("valid"),
                before: None,
                limit: DEFAULT_HISTORY_LIMIT
            })
        );
        assert!(matches!(
            parse(r#"{"type":"leave","room":"r"}"#),
            Ok(Request::Leave { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"typing","room":"r"}"#),
            Ok(Request::Typing { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"presence","users":["a","b"]}"#),
            Ok(Request::Presence { users }) if users.len() == 2
        ));
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(Request::Ping));
        assert_eq!(
            parse(r#"{"type":"auth","token":"a.b.c"}"#),
            Ok(Request::Auth {
                token: "a.b.c".into()
            })
        );
    }

    #[test]
    fn refuses_bad_auth_frames() {
        assert_eq!(
            parse(r#"{"type":"auth","ref":"a1"}"#),
            Err((ErrorCode::BadRequest, Some("a1".into())))
        );
        assert_eq!(
            parse(r#"{"type":"auth","token":""}"#),
            Err((ErrorCode::BadRequest, None))
        );
        assert_eq!(
            parse(r#"{"type":"auth","token":7,"ref":"a2"}"#),
            Err((ErrorCode::BadRequest, Some("a2".into())))
        );
        let long = format!(
            r#"{{"type":"auth","token":"{}"}}"#,
            "t".repeat(MAX_AUTH_TOKEN_BYTES + 1)
        );
        assert_eq!(parse(&long), Err((ErrorCode::TooLarge, None)));
        // `null` counts as absent.
        assert_eq!(
            parse(r#"{"type":"auth","token":null}"#),
            Err((ErrorCode::BadRequest, None))
        );
    }

    #[test]
    fn refuses_bad_input_with_the_right_code_and_ref() {
        assert_eq!(parse("{not json"), Err((ErrorCode::BadRequest, None)));
        assert_eq!(parse("[]"), Err((ErrorCode::BadRequest, None)));
        assert_eq!(
            parse(r#"{"type":"fly","ref":"r1"}"#),
            Err((ErrorCode::BadRequest, Some("r1".into())))
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"bad room","ref":"r2"}"#),
            Err((ErrorCode::BadRequest, Some("r2".into())))
        );
        assert_eq!(
            parse(r#"{"type":"join","room":"r","since":"x","ref":"r3"}"#),
            Err((ErrorCode::BadRequest, Some("r3".into())))
        );
        assert_eq!(
            parse(r#"{"type":"send","room":"r","client_id":"c"}"#),
            Err((ErrorCode::BadRequest, None))
        );
        let body = "x".repeat(MAX_BODY_BYTES + 1);
        let big = format!(r#"{{"type":"send","room":"r","client_id":"c","body":"{body}"}}"#);
        assert_eq!(parse(&big), Err((ErrorCode::TooLarge, None)));
        let frame = format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(parse(&frame), Err((ErrorCode::TooLarge, None)));
        assert_eq!(
            parse(r#"{"type":"history","room":"r","limit":201}"#),
            Err((ErrorCode::BadRequest, None))
        );
        let long_ref = format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65));
        assert_eq!(parse(&long_ref), Err((ErrorCode::BadRequest, None)));
    }

    #[test]
    fn server_frames_match_the_protocol() {
        let user = UserId::parse("alice").expect("valid");
        let room = RoomId::parse("general").expect("valid");
        assert_eq!(
            ServerFrame::Hello {
                user: &user,
                conn: "c1",
                gateway: "g1",
                protocol: 1
            }
            .to_json(),
            r#"{"type":"hello","user":"alice","conn":"c1","gateway":"g1","protocol":1}"#
        );
        assert_eq!(
            ServerFrame::Joined {
                room: &room,
                last_seq: 3,
                reference: Some("x")
            }
            .to_json(),
            r#"{"type":"joined","room":"general","last_seq":3,"ref":"x"}"#
        );
        assert_eq!(
            ServerFrame::Pong { reference: None }.to_json(),
            r#"{"type":"pong"}"#
        );
        let mut users = BTreeMap::new();
        users.insert(user.clone(), true);
        assert_eq!(
            ServerFrame::PresenceReply {
                users: &users,
                reference: None
            }
            .to_json(),
            r#"{"type":"presence","users":{"alice":true}}"#
        );
        let msg = Message {
            room: room.clone(),
            seq: 1,
            id: "m".into(),
            from: user.clone(),
            body: "b".into(),
            ts: Timestamp(0),
            client_id: ClientMsgId::parse("c").expect("valid"),
        };
        assert_eq!(
            ServerFrame::Message(&msg).to_json(),
            r#"{"type":"message","room":"general","seq":1,"id":"m","from":"alice","body":"b","ts":"1970-01-01T00:00:00.000Z","client_id":"c"}"#
        );
        assert_eq!(
            ServerFrame::Error {
                code: ErrorCode::NotJoined,
                message: "join first",
                reference: None
            }
            .to_json(),
            r#"{"type":"error","code":"not_joined","message":"join first"}"#
        );
        assert_eq!(
            ServerFrame::Authed {
                exp: Some(1_800_000_000),
                reference: Some("a")
            }
            .to_json(),
            r#"{"type":"authed","exp":1800000000,"ref":"a"}"#
        );
        assert_eq!(
            ServerFrame::Authed {
                exp: None,
                reference: None
            }
            .to_json(),
            r#"{"type":"authed"}"#
        );
    }
}
