//! Client frame parsing and validation: any text either parses into a request whose
//! fields satisfy the protocol's rules, or is refused with an error frame. Never panics.

#![no_main]

use chat_model::frame::{MAX_AUTH_TOKEN_BYTES, Request, ServerFrame, parse_client_frame};
use chat_model::limits::{MAX_BODY_BYTES, MAX_HISTORY_LIMIT, MAX_PRESENCE_USERS, MAX_REF_CHARS};
use chat_model::{ClientMsgId, RoomId, UserId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_client_frame(text) {
        Ok(frame) => {
            if let Some(r) = &frame.reference {
                assert!(r.chars().count() <= MAX_REF_CHARS);
            }
            // Every id in a valid request re-validates: validation is the only way in.
            let check_room = |room: &RoomId| assert_eq!(RoomId::parse(room.as_str()).as_ref(), Ok(room));
            match &frame.request {
                Request::Join { room, .. } | Request::Leave { room } | Request::Typing { room } => check_room(room),
                Request::Send { room, body, client_id } => {
                    check_room(room);
                    assert!(body.len() <= MAX_BODY_BYTES);
                    assert_eq!(ClientMsgId::parse(client_id.as_str()).as_ref(), Ok(client_id));
                }
                Request::History { room, limit, .. } => {
                    check_room(room);
                    assert!((1..=MAX_HISTORY_LIMIT).contains(limit));
                }
                Request::Presence { users } => {
                    assert!(users.len() <= MAX_PRESENCE_USERS);
                    for u in users {
                        assert_eq!(UserId::parse(u.as_str()).as_ref(), Ok(u));
                    }
                }
                Request::Ping => {}
                Request::Auth { token } => assert!(!token.is_empty() && token.len() <= MAX_AUTH_TOKEN_BYTES),
            }
        }
        Err(refused) => {
            // The error frame is valid JSON with the code and the (bounded) ref.
            let json = refused.to_frame().to_json();
            let value: serde_json::Value = serde_json::from_str(&json).expect("error frame is JSON");
            assert_eq!(value["type"], "error");
            assert!(refused.reference.as_ref().is_none_or(|r| r.chars().count() <= MAX_REF_CHARS));
        }
    }
    // Server frames built from arbitrary strings never fail to serialise.
    if let Ok(user) = UserId::parse(text) {
        let _ = ServerFrame::Hello { user: &user, conn: text, gateway: text, protocol: 1 }.to_json();
    }
});
