//! Test-only fault injection for the log store, compiled only with the `failpoints`
//! cargo feature (never part of a default or release build). It exists so that the chaos
//! suite can prove its checkers catch a server that acknowledges writes before they are
//! durable (`tests/it/chaos.rs`).
//!
//! - `TROVE_FAILPOINT_ACK_BEFORE_FSYNC=1` plants the bug: the flusher fires openraft's
//!   `IOFlushed` callbacks without syncing the log.
//! - Power-cut simulation. SIGKILL keeps the page cache, so unsynced data survives it and
//!   the bug above would go unnoticed. Therefore, after every successful log sync, the
//!   highest durable index is written (not synced: it only has to survive SIGKILL) to
//!   `<raft dir>/failpoint-synced-index`, and a node started with
//!   `TROVE_FAILPOINT_LOSE_UNSYNCED=1` first cuts its log after that index, as a power
//!   cut would. For a correct server this loses nothing that was acknowledged (every
//!   callback fires after its sync was recorded); with the bug it loses acknowledged
//!   entries.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use trove_storage::log::SegmentLog;

const ACK_BEFORE_FSYNC_ENV: &str = "TROVE_FAILPOINT_ACK_BEFORE_FSYNC";
const LOSE_UNSYNCED_ENV: &str = "TROVE_FAILPOINT_LOSE_UNSYNCED";
const SYNCED_FILE: &str = "failpoint-synced-index";

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The failpoints of one log store.
pub(crate) struct Failpoints {
    ack_before_fsync: bool,
    synced: Mutex<File>,
}

impl Failpoints {
    /// Opens the synced-index file in `dir` and, when asked to, cuts `log` after the last
    /// index recorded as synced (simulating a power cut).
    pub(crate) fn open(dir: &Path, log: &SegmentLog) -> io::Result<Failpoints> {
        let path = dir.join(SYNCED_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if env_on(LOSE_UNSYNCED_ENV) {
            let mut buf = [0u8; 8];
            match file.read_exact_at(&mut buf, 0) {
                Ok(()) => {
                    let synced = u64::from_be_bytes(buf);
                    let last = log.last_index();
                    let lost = last.map_or(0, |l| l.saturating_sub(synced));
                    if lost > 0 {
                        log.truncate_after(Some(synced)).map_err(io::Error::other)?;
                    }
                    tracing::warn!(
                        synced,
                        last,
                        lost,
                        "failpoint: power cut simulated: log entries after the last synced index discarded"
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    tracing::warn!("failpoint: no synced index recorded; log left as is");
                }
                Err(e) => return Err(e),
            }
        }
        let ack_before_fsync = env_on(ACK_BEFORE_FSYNC_ENV);
        if ack_before_fsync {
            tracing::warn!("failpoint: acknowledging log appends WITHOUT fsync (test-only bug)");
        }
        Ok(Failpoints {
            ack_before_fsync,
            synced: Mutex::new(file),
        })
    }

    /// Whether the flusher must acknowledge without syncing.
    pub(crate) fn ack_before_fsync(&self) -> bool {
        self.ack_before_fsync
    }

    /// Records that everything up to `last` is durable. Must run before the callbacks
    /// that this sync covers fire.
    pub(crate) fn synced(&self, last: Option<u64>) {
        let Some(last) = last else { return };
        let file = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all_at(&last.to_be_bytes(), 0) {
            tracing::error!(error = %e, "failpoint: cannot record the synced index");
        }
    }
}
