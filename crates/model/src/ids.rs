//! Validated identifiers. Constructing one is the only way to get one, so code that holds
//! a `RoomId` never re-checks it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Per-room message sequence number: the first message of a room is 1, each next one is
/// exactly 1 more. 0 means "before the first message".
pub type Seq = u64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be 1 to {max} characters long")]
    Length { what: &'static str, max: usize },
    #[error("{what} may only contain {allowed}")]
    Charset {
        what: &'static str,
        allowed: &'static str,
    },
    #[error("a dm room must be dm:<a>:<b> with two valid user ids and a < b byte-wise")]
    MalformedDm,
}

const USER_MAX: usize = 64;
const ROOM_MAX: usize = 128;
const CLIENT_MSG_ID_MAX: usize = 64;
const DM_PREFIX: &str = "dm:";

fn is_user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn is_room_byte(b: u8) -> bool {
    is_user_byte(b) || b == b':'
}

fn check_ascii(
    s: &str,
    what: &'static str,
    max: usize,
    allowed: &'static str,
    ok: fn(u8) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::Length { what, max });
    }
    if !s.bytes().all(ok) {
        return Err(IdError::Charset { what, allowed });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // Arc<str>: ids are cloned into every fan-out event and room table; cloning must
        // not allocate.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// An authenticated user: 1-64 characters of `[A-Za-z0-9_.-]`.
    UserId
);
string_id!(
    /// A room: 1-128 characters of `[A-Za-z0-9_.:-]`. Rooms starting with `dm:` must be
    /// well-formed direct conversations (see [`RoomId::dm_members`]).
    RoomId
);
string_id!(
    /// The sender's own id for a message, the idempotency key of `send`: 1-64 characters,
    /// no control characters.
    ClientMsgId
);

impl UserId {
    /// Validates a user id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_ascii(s, "user id", USER_MAX, "[A-Za-z0-9_.-]", is_user_byte)?;
        Ok(Self(s.into()))
    }
}

impl RoomId {
    /// Validates a room id, including the shape of `dm:` rooms.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_ascii(s, "room id", ROOM_MAX, "[A-Za-z0-9_.:-]", is_room_byte)?;
        if s.starts_with(DM_PREFIX) {
            parse_dm(s).ok_or(IdError::MalformedDm)?;
        }
        Ok(Self(s.into()))
    }

    /// The direct room of two distinct users, with the ids in the canonical order.
    pub fn dm(a: &UserId, b: &UserId) -> Option<Self> {
        let (lo, hi) = match a.as_str().cmp(b.as_str()) {
            std::cmp::Ordering::Less => (a, b),
            std::cmp::Ordering::Greater => (b, a),
            std::cmp::Ordering::Equal => return None,
        };
        Some(Self(format!("{DM_PREFIX}{lo}:{hi}").into()))
    }

    /// The two members of a `dm:` room, or `None` for an open room.
    pub fn dm_members(&self) -> Option<(&str, &str)> {
        parse_dm(&self.0)
    }

    /// Whether `user` may join, send to and read this room: everybody for open rooms,
    /// only the two members for a `dm:` room.
    pub fn admits(&self, user: &UserId) -> bool {
        match self.dm_members() {
            None => true,
            Some((a, b)) => user.as_str() == a || user.as_str() == b,
        }
    }
}

fn parse_dm(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix(DM_PREFIX)?;
    let (a, b) = rest.split_once(':')?;
    let valid = |u: &str| check_ascii(u, "", USER_MAX, "", is_user_byte).is_ok();
    (valid(a) && valid(b) && a.as_bytes() < b.as_bytes()).then_some((a, b))
}

impl ClientMsgId {
    /// Validates a client message id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let chars = s.chars().count();
        if chars == 0 || chars > CLIENT_MSG_ID_MAX {
            return Err(IdError::Length {
                what: "client_id",
                max: CLIENT_MSG_ID_MAX,
            });
        }
        if s.chars().any(char::is_control) {
            return Err(IdError::Charset {
                what: "client_id",
                allowed: "non-control characters",
            });
        }
        Ok(Self(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("a.b-c_9").is_ok());
        assert!(UserId::parse(&"x".repeat(64)).is_ok());
        assert!(UserId::parse(&"x".repeat(65)).is_err());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a:b").is_err());
        assert!(UserId::parse("al ice").is_err());
        assert!(UserId::parse("élise").is_err());
    }

    #[test]
    fn room_ids() {
        assert!(RoomId::parse("general").is_ok());
        assert!(RoomId::parse("team:eng.backend-1").is_ok());
        assert!(RoomId::parse(&"r".repeat(128)).is_ok());
        assert!(RoomId::parse(&"r".repeat(129)).is_err());
        assert!(RoomId::parse("a/b").is_err());
        assert!(RoomId::parse("").is_err());
    }

    #[test]
    fn dm_rooms_must_be_canonical() {
        let room = RoomId::parse("dm:alice:bob").expect("valid dm");
        assert_eq!(room.dm_members(), Some(("alice", "bob")));
        assert_eq!(RoomId::parse("dm:bob:alice"), Err(IdError::MalformedDm));
        assert_eq!(RoomId::parse("dm:alice:alice"), Err(IdError::MalformedDm));
        assert_eq!(RoomId::parse("dm:alice"), Err(IdError::MalformedDm));
        assert_eq!(RoomId::parse("dm:a:b:c"), Err(IdError::MalformedDm));
        // Byte-wise order: upper case sorts before lower case.
        assert!(RoomId::parse("dm:Zed:alice").is_ok());
    }

    #[test]
    fn dm_admits_only_members() {
        let alice = UserId::parse("alice").expect("valid");
        let bob = UserId::parse("bob").expect("valid");
        let carol = UserId::parse("carol").expect("valid");
        let room = RoomId::dm(&bob, &alice).expect("distinct users");
        assert_eq!(room.as_str(), "dm:alice:bob");
        assert!(room.admits(&alice) && room.admits(&bob));
        assert!(!room.admits(&carol));
        assert!(RoomId::parse("general").expect("valid").admits(&carol));
        assert!(RoomId::dm(&alice, &alice).is_none());
    }

    #[test]
    fn client_msg_ids() {
        assert!(ClientMsgId::parse("c-1").is_ok());
        assert!(ClientMsgId::parse(&"é".repeat(64)).is_ok());
        assert!(ClientMsgId::parse(&"é".repeat(65)).is_err());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("a\nb").is_err());
    }
}
