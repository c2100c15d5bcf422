//! Size limits of protocol v1. The gateway enforces them; clients may rely on them.

/// Largest accepted WebSocket text frame, in bytes. Larger frames are answered with
/// `too_large` and otherwise ignored.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Largest accepted message body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Longest `ref` a client may attach to a request, in characters.
pub const MAX_REF_CHARS: usize = 64;

/// Default and largest page size of a `history` request.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Largest page size of a `history` request.
pub const MAX_HISTORY_LIMIT: u32 = 200;

/// Most users one `presence` query may ask about.
pub const MAX_PRESENCE_USERS: usize = 500;
