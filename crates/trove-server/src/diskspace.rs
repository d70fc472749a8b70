//! Free disk space at start-up.
//!
//! A node whose disk filled up stops: a failed log write or fsync poisons the log
//! (`trove-storage::log`), Raft stops, the process exits with the path and a hint. A
//! supervisor restarting it on a disk that is still full would only crash-loop: every
//! start replays the log, rejoins, and fails again at the next write. So before opening
//! anything, [`wait_for_space`] waits (logging what it waits for) until the data
//! directory's filesystem has at least [`MIN_FREE_BYTES_TO_START`] free; the node then
//! starts by itself once space returns and catches up from its peers.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// Free space a node needs before it starts: two full log segments (the one being
/// written and its spare, a file of zeros the log makes ahead of time), so that a freshly
/// started node does not fail at its first write. A node that stopped on a full disk
/// deleted its spare on the way out: the space that frees is no sign that the disk has
/// room again.
pub const MIN_FREE_BYTES_TO_START: u64 = 2 * trove_storage::log::DEFAULT_SEGMENT_SIZE_BYTES;
/// How often the free space is checked while waiting.
const POLL: Duration = Duration::from_secs(1);
/// How often the wait is logged.
const LOG_EVERY: Duration = Duration::from_secs(15);

/// Bytes available to this process on the filesystem holding `path` (or, if `path` does
/// not exist yet, its nearest existing ancestor).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => {
                p = Path::new(".");
                break;
            }
        }
    }
    let st = nix::sys::statvfs::statvfs(p).map_err(io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Returns once the filesystem of `dir` has at least `min` bytes free, logging a warning
/// (what is free, what is needed, what to do) while it waits. If the free space cannot
/// be determined, returns at once: opening the stores will then report the real problem.
pub async fn wait_for_space(dir: &Path, min: u64) {
    let mut last_log: Option<Instant> = None;
    loop {
        let free = match free_bytes(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot determine free disk space; starting anyway");
                return;
            }
        };
        if free >= min {
            if last_log.is_some() {
                tracing::info!(dir = %dir.display(), free_bytes = free, "enough free disk space again; starting");
            }
            return;
        }
        if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            last_log = Some(Instant::now());
            tracing::warn!(
                dir = %dir.display(),
                free_bytes = free,
                needed_bytes = min,
                "waiting for free space: the data directory's filesystem has {free} bytes free, \
                 the node needs {min} to start; free space on it and the node starts by itself"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_of_a_missing_path_uses_its_ancestor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let here = free_bytes(dir.path()).expect("free bytes");
        let missing = free_bytes(&dir.path().join("a/b/c")).expect("free bytes");
        assert!(here > 0);
        // Same filesystem; other processes may write meanwhile, so compare loosely.
        assert!(missing.abs_diff(here) < (here / 10).max(64 << 20));
    }

    #[tokio::test]
    async fn returns_at_once_when_there_is_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        tokio::time::timeout(Duration::from_secs(5), wait_for_space(dir.path(), 1))
            .await
            .expect("no wait with enough space");
    }
}
