//! A stored room message.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::ids::{ClientMsgId, RoomId, Seq, UserId};

/// A message as stored by history and delivered to members. Serialises to the fields of
/// the protocol's `message` frame (without `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The room it was posted to.
    pub room: RoomId,
    /// Its position in the room, assigned by history.
    pub seq: Seq,
    /// Globally unique id, assigned by history.
    pub id: String,
    /// The authenticated sender.
    pub from: UserId,
    /// The text, at most [`crate::limits::MAX_BODY_BYTES`] bytes.
    pub body: String,
    /// When history stored it.
    pub ts: Timestamp,
    /// The sender's idempotency key.
    pub client_id: ClientMsgId,
}

/// A server time in milliseconds since the Unix epoch. On the wire it is RFC 3339 UTC with
/// exactly three fractional digits, e.g. `2026-11-30T03:23:48.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const RFC3339_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        // i64 milliseconds cover the next 292 million years.
        Self((nanos / 1_000_000) as i64)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The RFC 3339 form used on the wire.
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(RFC3339_MILLIS).ok())
            // Only timestamps beyond year 9999 fail; they cannot come from `now()`.
            .unwrap_or_else(|| "9999-12-31T23:59:59.999Z".to_owned())
    }

    /// Parses any RFC 3339 time (the wire form included), truncated to milliseconds.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_millisecond_rfc3339_form() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_796_009_028_123).to_rfc3339(),
            "2026-11-30T03:23:48.123Z"
        );
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse_rfc3339(&now.to_rfc3339()), Some(now));
    }

    #[test]
    fn message_serialises_to_protocol_fields() {
        let msg = Message {
            room: RoomId::parse("general").expect("valid"),
            seq: 7,
            id: "m1".into(),
            from: UserId::parse("alice").expect("valid"),
            body: "hi".into(),
            ts: Timestamp(0),
            client_id: ClientMsgId::parse("c1").expect("valid"),
        };
        let json = serde_json::to_string(&msg).expect("serialises");
        assert_eq!(
            json,
            r#"{"room":"general","seq":7,"id":"m1","from":"alice","body":"hi","ts":"1970-01-01T00:00:00.000Z","client_id":"c1"}"#
        );
        let back: Message = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, msg);
    }
}
