//! Lower-case hex: refresh tokens on the wire, and the byte fields of stored records
//! (readable in both stores, and a plain string in MongoDB filters).

use std::fmt::Write as _;

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The bytes of a hex string (either case); `None` if it is not one.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `#[serde(with = "crate::hex::serde")]` for byte fields (`Vec<u8>`, `[u8; N]`).
pub mod serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Writes the bytes as hex.
    pub fn serialize<T: AsRef<[u8]>, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(value.as_ref()))
    }

    /// Reads hex back into bytes of the field's type.
    pub fn deserialize<'de, T: TryFrom<Vec<u8>>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = super::decode(&s).ok_or_else(|| D::Error::custom("not hex"))?;
        T::try_from(bytes).map_err(|_| D::Error::custom("wrong length"))
    }
}

/// `#[serde(with = "crate::hex::option")]` for optional byte fields.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Writes the bytes as hex, or null.
    pub fn serialize<T: AsRef<[u8]>, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(&super::encode(v.as_ref())),
            None => s.serialize_none(),
        }
    }

    /// Reads hex (or null) back.
    pub fn deserialize<'de, T: TryFrom<Vec<u8>>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                let bytes = super::decode(&s).ok_or_else(|| D::Error::custom("not hex"))?;
                T::try_from(bytes).map_err(|_| D::Error::custom("wrong length"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::encode(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(super::decode("0001ABff"), Some(vec![0, 1, 0xab, 0xff]));
        for bad in ["0", "zz", "é1"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
    }
}
