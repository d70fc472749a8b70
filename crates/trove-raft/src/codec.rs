//! Trove's own versioned binary encoding of openraft values, for disk and wire.
//!
//! Every encoded value starts with a one-byte format version, then postcard. Decoding
//! refuses unknown versions, so a newer format is never misread as an older one.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The only encoding version this binary writes and reads. Version 2 is taken: raft log
/// records use it for a chunk entry stored by name (`log_store/records.rs`), so a new
/// version of this encoding must be 3 or later.
pub const FORMAT_VERSION: u8 = 1;

/// Encoding/decoding failures.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty buffer")]
    Empty,
    #[error("unsupported encoding version {0} (this binary reads version {FORMAT_VERSION})")]
    Version(u8),
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("unsupported encoding version {0} (this binary reads log records of versions 1 and 2)")]
    RecordVersion(u8),
    #[error("a chunk of {0} bytes is too large to store")]
    TooLarge(usize),
    #[error("a record stored as a chunk entry holds another kind of entry")]
    NotAChunk,
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Encodes a value: version byte + postcard.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    postcard::to_io(v, &mut out).map_err(CodecError::Postcard)?;
    Ok(out)
}

/// Checks only the version byte of an encoded value (for read-only start-up checks).
pub fn check_version(buf: &[u8]) -> Result<(), CodecError> {
    match buf.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_VERSION) => Ok(()),
        Some(&v) => Err(CodecError::Version(v)),
    }
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<T, CodecError> {
    match buf.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_VERSION) => Ok(postcard::from_bytes(&buf[1..])?),
        Some(&v) => Err(CodecError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let v = (1u64, "x".to_string(), vec![1u8, 2, 3]);
        let b = encode(&v).expect("encode");
        let back: (u64, String, Vec<u8>) = decode(&b).expect("decode");
        assert_eq!(back, v);
        let mut bad = b.clone();
        bad[0] = 9;
        assert!(matches!(
            decode::<(u64, String, Vec<u8>)>(&bad),
            Err(CodecError::Version(9))
        ));
    }
}
