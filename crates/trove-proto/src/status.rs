//! The one mapping between [`TroveError`] and `tonic::Status`, in both directions.
//!
//! Rich details: a leader hint travels as a `google.rpc.ErrorInfo` with reason
//! `NOT_LEADER`; a compare-and-set mismatch carries the current revision both as an
//! `ErrorInfo` (reason `REVISION_MISMATCH`) and as the `trove-current-revision` metadata
//! key, so clients without rich-error support can still read it.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use trove_types::{LeaderHint, TroveError};

const DOMAIN: &str = "trove.v1";
/// Metadata key carrying the current revision on a compare-and-set mismatch.
pub const CURRENT_REVISION_KEY: &str = "trove-current-revision";

/// Maps a domain error to a gRPC status. The only place that does so.
pub fn status_from_error(e: TroveError) -> Status {
    let msg = e.to_string();
    match e {
        TroveError::InvalidArgument(_) => Status::invalid_argument(msg),
        TroveError::NotFound(_) => Status::not_found(msg),
        TroveError::AlreadyExists(_) => Status::already_exists(msg),
        TroveError::FailedPrecondition {
            current_revision, ..
        } => match current_revision {
            Some(rev) => {
                let mut md = HashMap::new();
                md.insert("current_revision".to_string(), rev.to_string());
                let details = ErrorDetails::with_error_info("REVISION_MISMATCH", DOMAIN, md);
                let mut st = Status::with_error_details(Code::FailedPrecondition, msg, details);
                if let Ok(v) = rev.to_string().parse() {
                    st.metadata_mut().insert(CURRENT_REVISION_KEY, v);
                }
                st
            }
            None => Status::failed_precondition(msg),
        },
        TroveError::Unavailable { leader, .. } => match leader {
            Some(l) => {
                let mut md = HashMap::new();
                md.insert("leader_id".to_string(), l.id.to_string());
                md.insert("leader_addr".to_string(), l.client_addr.clone());
                let details = ErrorDetails::with_error_info("NOT_LEADER", DOMAIN, md);
                Status::with_error_details(Code::Unavailable, msg, details)
            }
            None => Status::unavailable(msg),
        },
        TroveError::DeadlineExceeded(_) => Status::deadline_exceeded(msg),
        TroveError::ResourceExhausted(_) => Status::resource_exhausted(msg),
        TroveError::DataLoss(_) => Status::data_loss(msg),
        TroveError::Cancelled(_) => Status::cancelled(msg),
        TroveError::Internal(_) => Status::internal(msg),
    }
}

/// Maps a gRPC status back to a domain error (used by the SDK).
pub fn error_from_status(st: &Status) -> TroveError {
    let message = strip_prefix(st.message());
    let info = st.get_details_error_info();
    match st.code() {
        Code::InvalidArgument | Code::OutOfRange => TroveError::InvalidArgument(message),
        Code::NotFound => TroveError::NotFound(message),
        Code::AlreadyExists => TroveError::AlreadyExists(message),
        Code::FailedPrecondition | Code::Aborted => {
            let from_info = info
                .as_ref()
                .and_then(|i| i.metadata.get("current_revision"))
                .and_then(|v| v.parse().ok());
            let from_md = st
                .metadata()
                .get(CURRENT_REVISION_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            TroveError::FailedPrecondition {
                message,
                current_revision: from_info.or(from_md),
            }
        }
        Code::Unavailable => {
            let leader = info.as_ref().and_then(|i| {
                let id = i.metadata.get("leader_id")?.parse().ok()?;
                let client_addr = i.metadata.get("leader_addr")?.clone();
                Some(LeaderHint { id, client_addr })
            });
            TroveError::Unavailable { message, leader }
        }
        Code::DeadlineExceeded => TroveError::DeadlineExceeded(message),
        Code::ResourceExhausted => TroveError::ResourceExhausted(message),
        Code::DataLoss => TroveError::DataLoss(message),
        Code::Cancelled => TroveError::Cancelled(message),
        _ => TroveError::Internal(format!("{}: {}", st.code(), st.message())),
    }
}

/// Our statuses carry the error's Display, which starts with the kind ("not found: ...");
/// strip it so a round trip does not repeat it.
fn strip_prefix(m: &str) -> String {
    const PREFIXES: [&str; 10] = [
        "invalid argument: ",
        "not found: ",
        "already exists: ",
        "failed precondition: ",
        "unavailable: ",
        "deadline exceeded: ",
        "resource exhausted: ",
        "data loss: ",
        "cancelled: ",
        "internal error: ",
    ];
    for p in PREFIXES {
        if let Some(rest) = m.strip_prefix(p) {
            return rest.to_string();
        }
    }
    m.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases = vec![
            TroveError::invalid("bad key"),
            TroveError::NotFound("record k".into()),
            TroveError::AlreadyExists("bucket b".into()),
            TroveError::FailedPrecondition {
                message: "revision mismatch".into(),
                current_revision: Some(42),
            },
            TroveError::Unavailable {
                message: "not leader".into(),
                leader: Some(LeaderHint {
                    id: 2,
                    client_addr: "127.0.0.1:7002".into(),
                }),
            },
            TroveError::DataLoss("chunk".into()),
        ];
        for e in cases {
            let st = status_from_error(e.clone());
            assert_eq!(error_from_status(&st), e);
        }
    }
}
