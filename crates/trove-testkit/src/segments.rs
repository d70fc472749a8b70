//! Reading a raft log segment file the way the fault injectors and tests need to: where
//! its records are. A segment may end in zeros (it is made from a file of zeros written
//! ahead of time), so its length says nothing about where the records end.

/// The byte offsets of the records of segment file `segment`, in order: each record
/// (index u64 | length u32 | CRC32C u32 | payload) after the 24-byte segment header, up
/// to the first that does not verify (the zeros after the last one never do).
pub fn log_record_offsets(segment: &[u8]) -> Vec<usize> {
    let le_u32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 16 <= segment.len() {
        let end = at + 16 + le_u32(&segment[at + 8..at + 12]) as usize;
        if end > segment.len() {
            break;
        }
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&segment[at..at + 12]),
            &segment[at + 16..end],
        );
        if crc != le_u32(&segment[at + 12..at + 16]) {
            break;
        }
        offsets.push(at);
        at = end;
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: u64, payload: &[u8]) -> Vec<u8> {
        let mut r = index.to_le_bytes().to_vec();
        r.extend((payload.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&r), payload);
        r.extend(crc.to_le_bytes());
        r.extend(payload);
        r
    }

    #[test]
    fn records_are_found_up_to_the_zeros_after_them() {
        let mut seg = vec![7u8; 24];
        seg.extend(record(5, b"hello"));
        seg.extend(record(6, b"world!"));
        seg.extend([0u8; 100]);
        assert_eq!(log_record_offsets(&seg), vec![24, 24 + 21]);
        seg.truncate(24 + 21 + 10);
        assert_eq!(
            log_record_offsets(&seg),
            vec![24],
            "a torn record is no record"
        );
    }
}
