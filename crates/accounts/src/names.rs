//! The rules for usernames and display names, and the server-generated ids.

use chat_model::UserId;

use crate::error::AccountsError;

/// Shortest username.
pub const USERNAME_MIN: usize = 3;
/// Longest username.
pub const USERNAME_MAX: usize = 32;
/// Longest display name, in characters.
pub const DISPLAY_NAME_MAX: usize = 64;

/// A username as stored: lower-cased, then 3-32 of `[a-z0-9_.-]`.
pub fn username(raw: &str) -> Result<String, AccountsError> {
    let name = raw.to_ascii_lowercase();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&name.len()) {
        return Err(AccountsError::BadRequest(format!(
            "a username is {USERNAME_MIN} to {USERNAME_MAX} characters long"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(AccountsError::BadRequest(
            "a username may only contain letters a-z, digits, '_', '.' and '-'".into(),
        ));
    }
    Ok(name)
}

/// A display name: 1-64 characters after trimming surrounding white space, no control
/// characters.
pub fn display_name(raw: &str) -> Result<String, AccountsError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > DISPLAY_NAME_MAX {
        return Err(AccountsError::BadRequest(format!(
            "a display name is 1 to {DISPLAY_NAME_MAX} characters long"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AccountsError::BadRequest(
            "a display name may not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AccountsError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| AccountsError::Internal(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// A new user id: `u_` and 32 hex digits (128 random bits), a valid chat user id.
pub fn new_user_id() -> Result<UserId, AccountsError> {
    let id = format!("u_{}", crate::hex::encode(&random_bytes::<16>()?));
    UserId::parse(&id).map_err(|e| AccountsError::Internal(format!("generated user id: {e}")))
}

/// A new session id: `s_` and 32 hex digits (128 random bits).
pub fn new_session_id() -> Result<String, AccountsError> {
    Ok(format!("s_{}", crate::hex::encode(&random_bytes::<16>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username("Alice_01").expect("valid"), "alice_01");
        assert_eq!(username("a.b-c").expect("valid"), "a.b-c");
        assert_eq!(username(&"x".repeat(32)).expect("valid").len(), 32);
        for bad in ["ab", "", &"x".repeat(33), "al ice", "älice", "a/b", "a:b"] {
            assert!(
                matches!(username(bad), Err(AccountsError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name("  Zoë 🎉 ").expect("valid"), "Zoë 🎉");
        assert!(display_name(&"é".repeat(64)).is_ok());
        for bad in [
            "",
            "   ",
            &"é".repeat(65),
            "a\u{0}b",
            "line\nbreak",
            "bell\u{7}",
        ] {
            assert!(
                matches!(display_name(bad), Err(AccountsError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = new_user_id().expect("id");
        let b = new_user_id().expect("id");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 34);
        assert!(new_session_id().expect("id").starts_with("s_"));
    }
}
