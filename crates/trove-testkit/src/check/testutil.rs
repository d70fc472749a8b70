//! Builds histories by hand for the checkers' unit tests.

use crate::history::{Op, OpKind, OpResult};

/// A hand-written history: each method appends one operation of client 1.
#[derive(Default)]
pub(crate) struct H {
    pub ops: Vec<Op>,
}

impl H {
    fn push(&mut self, key: &str, kind: OpKind, call: u64, ret: u64, result: OpResult) {
        let id = self.ops.len() as u64 + 1;
        let ret = if matches!(result, OpResult::Unknown { .. }) {
            call + 1
        } else {
            ret
        };
        self.ops
            .push(Op::new(id, 1, id, key, kind, call, ret, result));
    }

    fn unknown() -> OpResult {
        OpResult::Unknown {
            error: "timeout".into(),
        }
    }

    /// A put acknowledged at `rev`, or unknown (`None`).
    pub fn put(&mut self, key: &str, value: &str, call: u64, ret: u64, rev: Option<u64>) {
        let result = rev.map_or_else(H::unknown, |revision| OpResult::Written { revision });
        let kind = OpKind::Put {
            value: value.into(),
        };
        self.push(key, kind, call, ret, result);
    }

    /// A read that found `(value, rev)` or nothing.
    pub fn get(&mut self, key: &str, call: u64, ret: u64, found: Option<(&str, u64)>) {
        let result = match found {
            Some((v, r)) => OpResult::Found {
                value: v.into(),
                revision: r,
            },
            None => OpResult::NotFound,
        };
        self.push(key, OpKind::Get, call, ret, result);
    }

    /// A compare-and-set: `Ok(rev)` written, `Err(current)` mismatch.
    pub fn cas(
        &mut self,
        key: &str,
        expected: u64,
        value: &str,
        call: u64,
        ret: u64,
        res: Result<u64, u64>,
    ) {
        let result = match res {
            Ok(revision) => OpResult::Written { revision },
            Err(current) => OpResult::Mismatch { current },
        };
        let kind = OpKind::Cas {
            expected,
            value: value.into(),
        };
        self.push(key, kind, call, ret, result);
    }

    /// A delete acknowledged at `rev`.
    pub fn delete(&mut self, key: &str, call: u64, ret: u64, rev: Option<u64>) {
        let result = rev.map_or_else(H::unknown, |revision| OpResult::Written { revision });
        self.push(key, OpKind::Delete, call, ret, result);
    }

    /// A delete with unknown outcome.
    pub fn delete_unknown(&mut self, key: &str, call: u64) {
        self.push(key, OpKind::Delete, call, 0, H::unknown());
    }

    /// A delete that found no record.
    pub fn delete_not_found(&mut self, key: &str, call: u64, ret: u64) {
        self.push(key, OpKind::Delete, call, ret, OpResult::NotFound);
    }

    /// A blob upload acknowledged at `rev`, or unknown.
    pub fn blob_put(&mut self, key: &str, sha: &str, call: u64, ret: u64, rev: Option<u64>) {
        let result = rev.map_or_else(H::unknown, |revision| OpResult::Written { revision });
        let kind = OpKind::BlobPut {
            size: 1,
            sha256: sha.into(),
        };
        self.push(key, kind, call, ret, result);
    }

    /// A blob download that read bytes with SHA-256 `sha` at `rev`, or found nothing.
    pub fn blob_get(&mut self, key: &str, call: u64, ret: u64, found: Option<(&str, u64)>) {
        let result = match found {
            Some((v, r)) => OpResult::Found {
                value: v.into(),
                revision: r,
            },
            None => OpResult::NotFound,
        };
        self.push(key, OpKind::BlobGet, call, ret, result);
    }
}
