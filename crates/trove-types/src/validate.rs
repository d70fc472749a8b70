//! Validation of user input against the limits; every check returns an
//! `InvalidArgument` error with a message a person can act on.

use crate::error::TroveError;
use crate::limits::*;

/// Checks a record key: 1..=1024 bytes of UTF-8 (already guaranteed UTF-8 by `&str`).
pub fn record_key(key: &str) -> Result<(), TroveError> {
    if key.is_empty() {
        return Err(TroveError::invalid("record key must not be empty"));
    }
    if key.len() > MAX_RECORD_KEY_BYTES {
        return Err(TroveError::invalid(format!(
            "record key is {} bytes; the limit is {MAX_RECORD_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a record value: 1 byte to 1 MiB. An empty value is rejected so that "exists with
/// no value" and "missing" can never be confused by tools.
pub fn record_value(value: &[u8]) -> Result<(), TroveError> {
    if value.is_empty() {
        return Err(TroveError::invalid("record value must not be empty"));
    }
    if value.len() > MAX_RECORD_VALUE_BYTES {
        return Err(TroveError::invalid(format!(
            "record value is {} bytes; the limit is {MAX_RECORD_VALUE_BYTES} (1 MiB); store large data as an object",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a bucket name: 3..=63 of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn bucket_name(name: &str) -> Result<(), TroveError> {
    let bad = |why: &str| {
        Err(TroveError::invalid(format!(
            "invalid bucket name {name:?}: {why} (use 3 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        )))
    };
    if name.len() < MIN_BUCKET_NAME_LEN || name.len() > MAX_BUCKET_NAME_LEN {
        return bad("wrong length");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("invalid character");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad("must start and end with a letter or digit");
    }
    Ok(())
}

/// Checks an object key: 1..=1024 bytes of UTF-8.
pub fn object_key(key: &str) -> Result<(), TroveError> {
    if key.is_empty() {
        return Err(TroveError::invalid("object key must not be empty"));
    }
    if key.len() > MAX_OBJECT_KEY_BYTES {
        return Err(TroveError::invalid(format!(
            "object key is {} bytes; the limit is {MAX_OBJECT_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a client id of a request id: 1..=64 bytes.
pub fn client_id(id: &str) -> Result<(), TroveError> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_BYTES {
        return Err(TroveError::invalid(format!(
            "request_id.client_id must be 1..={MAX_CLIENT_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Clamps a requested list page size to the limits (0 means the default).
pub fn list_limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket-1", "a1b", &"a".repeat(63)] {
            assert!(bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            "a.b",
            &"a".repeat(64),
            "",
        ] {
            assert!(bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_values() {
        assert!(record_key("").is_err());
        assert!(record_key(&"k".repeat(1024)).is_ok());
        assert!(record_key(&"k".repeat(1025)).is_err());
        assert!(record_value(&[]).is_err());
        assert!(record_value(&vec![0; MAX_RECORD_VALUE_BYTES]).is_ok());
        assert!(record_value(&vec![0; MAX_RECORD_VALUE_BYTES + 1]).is_err());
        assert!(object_key(&"o".repeat(1025)).is_err());
        assert_eq!(list_limit(0), DEFAULT_LIST_LIMIT);
        assert_eq!(list_limit(u32::MAX), MAX_LIST_LIMIT);
    }
}
