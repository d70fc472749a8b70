//! The public gRPC services (`trove.v1`): records, objects, cluster. Each handler
//! validates its input before anything is proposed, routes to the leader when it must,
//! and maps every error through `trove_proto::status_from_error`.

pub mod cluster;
pub mod objects;
pub mod records;

use tonic::Status;
use trove_proto::v1;
use trove_types::{RequestId, TroveError};

/// Converts a request id from the wire, validating it. Absent = no deduplication.
pub fn request_id(r: Option<v1::RequestId>) -> Result<Option<RequestId>, TroveError> {
    match r {
        None => Ok(None),
        Some(r) if r.client_id.is_empty() && r.seq == 0 => Ok(None),
        Some(r) => {
            trove_types::validate::client_id(&r.client_id)?;
            Ok(Some(RequestId {
                client_id: r.client_id,
                seq: r.seq,
            }))
        }
    }
}

/// Maps a domain error to a status (the one mapping lives in trove-proto).
pub fn status(e: TroveError) -> Status {
    trove_proto::status_from_error(e)
}

/// Whether a read asks for linearizable consistency.
pub fn is_linearizable(c: i32) -> bool {
    c != v1::Consistency::Local as i32
}
