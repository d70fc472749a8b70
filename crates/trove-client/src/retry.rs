//! The retry policy as pure functions: which errors are retried, how long to wait, and
//! how to turn a transport-level `tonic::Status` into a [`TroveError`].
//!
//! Kept free of IO so the policy can be tested exhaustively without a network.

use std::time::Duration;

use tonic::{Code, Status};
use trove_types::TroveError;

/// First backoff delay.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(20);
/// Largest backoff delay.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_millis(500);

/// Whether an operation may be repeated after an ambiguous failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads, and writes carrying a request id (the server deduplicates them): every
    /// retryable error is retried.
    Safe,
    /// Writes without a request id (cluster administration): retried only when the
    /// request certainly was not carried out by a leader (UNAVAILABLE), never after a
    /// deadline whose outcome is unknown.
    Unsafe,
}

/// Whether `err` should be retried for an operation of the given idempotency.
pub(crate) fn should_retry(err: &TroveError, idempotency: Idempotency) -> bool {
    match idempotency {
        Idempotency::Safe => err.is_retryable(),
        Idempotency::Unsafe => matches!(err, TroveError::Unavailable { .. }),
    }
}

/// Delay before retry number `attempt` (0-based): exponential from [`BACKOFF_BASE`],
/// capped at [`BACKOFF_CAP`], with "equal jitter": half fixed, half scaled by `jitter`
/// (a random number in `[0, 1)`), so that clients retrying together spread out.
pub(crate) fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
    let ceiling = exp.min(BACKOFF_CAP);
    let half = ceiling / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Maps a status to a domain error, recognizing failures that tonic itself produces on
/// the client side (as opposed to statuses the server sent):
/// - a client-side deadline (`CANCELLED "Timeout expired"`) is a [`TroveError::DeadlineExceeded`];
/// - a connection that failed or broke mid-request (`UNKNOWN`, or a `CANCELLED` without
///   the server's "cancelled: " prefix) is [`TroveError::Unavailable`]: the outcome is
///   unknown, and every retry carries the same request id.
pub(crate) fn map_status(st: &Status) -> TroveError {
    let msg = st.message();
    match st.code() {
        Code::Cancelled if msg.contains("Timeout expired") => {
            TroveError::DeadlineExceeded("the request timed out".into())
        }
        Code::Cancelled if !msg.starts_with("cancelled: ") => {
            TroveError::unavailable(format!("connection lost: {}", with_causes(st)))
        }
        Code::Unknown => TroveError::unavailable(format!("connection failed: {}", with_causes(st))),
        Code::Unimplemented => TroveError::Internal(format!(
            "the server does not implement this call (is it an older version?): {msg}"
        )),
        Code::Unavailable if std::error::Error::source(st).is_some() => {
            // A transport error (e.g. "tcp connect error"): say why it failed.
            match trove_proto::error_from_status(st) {
                TroveError::Unavailable { leader, .. } => TroveError::Unavailable {
                    message: with_causes(st),
                    leader,
                },
                other => other,
            }
        }
        _ => trove_proto::error_from_status(st),
    }
}

/// The status message followed by its error sources ("tcp connect error: Connection
/// refused"), skipping sources whose text is already included.
fn with_causes(st: &Status) -> String {
    let mut out = st.message().to_string();
    let mut source = std::error::Error::source(st);
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// Appends `note` to the message of a retryable error that is being given up on, so the
/// user sees how hard the client tried. Other errors are returned unchanged.
pub(crate) fn annotate(err: TroveError, note: &str) -> TroveError {
    match err {
        TroveError::Unavailable { message, leader } => TroveError::Unavailable {
            message: format!("{message} ({note})"),
            leader,
        },
        TroveError::DeadlineExceeded(m) => TroveError::DeadlineExceeded(format!("{m} ({note})")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trove_types::LeaderHint;

    #[test]
    fn backoff_grows_then_caps() {
        let fixed: Vec<_> = (0..8).map(|a| backoff_delay(a, 0.0)).collect();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(fixed[0]), 10);
        assert_eq!(ms(fixed[1]), 20);
        assert_eq!(ms(fixed[2]), 40);
        assert_eq!(ms(fixed[7]), 250);
        for a in 0..100 {
            for j in [0.0, 0.3, 0.999, 5.0, -1.0] {
                let d = backoff_delay(a, j);
                assert!(d <= BACKOFF_CAP, "{a} {j} {d:?}");
                assert!(d >= backoff_delay(a, 0.0));
            }
        }
        assert_eq!(backoff_delay(u32::MAX, 1.0), BACKOFF_CAP);
        // Monotonic in the attempt number for a fixed jitter.
        for a in 0..20 {
            assert!(backoff_delay(a, 0.5) <= backoff_delay(a + 1, 0.5));
        }
    }

    #[test]
    fn retry_decisions() {
        let unavailable = TroveError::unavailable("no leader");
        let deadline = TroveError::DeadlineExceeded("slow".into());
        let not_found = TroveError::NotFound("k".into());
        let cas = TroveError::FailedPrecondition {
            message: "mismatch".into(),
            current_revision: Some(3),
        };
        assert!(should_retry(&unavailable, Idempotency::Safe));
        assert!(should_retry(&deadline, Idempotency::Safe));
        assert!(should_retry(&unavailable, Idempotency::Unsafe));
        assert!(!should_retry(&deadline, Idempotency::Unsafe));
        for e in [&not_found, &cas, &TroveError::DataLoss("x".into())] {
            assert!(!should_retry(e, Idempotency::Safe));
            assert!(!should_retry(e, Idempotency::Unsafe));
        }
    }

    #[test]
    fn maps_client_side_statuses() {
        let timeout = Status::cancelled("Timeout expired");
        assert!(matches!(
            map_status(&timeout),
            TroveError::DeadlineExceeded(_)
        ));
        let reset = Status::cancelled("operation was canceled: connection closed");
        assert!(map_status(&reset).is_retryable());
        let server_cancel = Status::cancelled("cancelled: upload abandoned");
        assert!(matches!(
            map_status(&server_cancel),
            TroveError::Cancelled(_)
        ));
        assert!(map_status(&Status::unknown("transport error")).is_retryable());
        let refused = Status::unavailable("tcp connect error: Connection refused");
        assert!(map_status(&refused).is_retryable());
        let nf = trove_proto::status_from_error(TroveError::NotFound("record k".into()));
        assert_eq!(map_status(&nf), TroveError::NotFound("record k".into()));
    }

    #[test]
    fn annotate_keeps_variant_and_hint() {
        let hint = LeaderHint {
            id: 2,
            client_addr: "b:2".into(),
        };
        let e = TroveError::Unavailable {
            message: "not leader".into(),
            leader: Some(hint.clone()),
        };
        match annotate(e, "3 attempts") {
            TroveError::Unavailable { message, leader } => {
                assert_eq!(message, "not leader (3 attempts)");
                assert_eq!(leader, Some(hint));
            }
            other => panic!("{other:?}"),
        }
        let nf = TroveError::NotFound("x".into());
        assert_eq!(annotate(nf.clone(), "n"), nf);
    }
}
