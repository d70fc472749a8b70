//! The spare segment: a file of zeros that a background thread writes and fdatasyncs
//! ahead of time, and that the next segment is made from.
//!
//! An fdatasync after an append that grows a file must also make the new size durable,
//! which costs a journal commit on ext4 and XFS on top of the data's own flush. After
//! writes into blocks that are already allocated and written, only the data is flushed.
//! Measured with `dd bs=4k oflag=dsync` on one ext4 disk, three writers at once (a
//! local cluster): 557 µs per write when appending, 219 µs when overwriting. So a
//! segment starts out as `segment_size_bytes` of written zeros and appends overwrite
//! them. (`fallocate` is no substitute: its blocks are marked unwritten, and the first
//! write into each one is again a metadata change.)
//!
//! Zeros past the last record are no record: an all-zero record header never verifies,
//! because its CRC field is 0 and the CRC32C of twelve zero bytes is not. `open` takes
//! zeros at the end of the last segment as its unused tail; a rollover cuts the finished
//! segment to its records first, so no other segment ever ends in zeros.
//!
//! Each spare has a name of its own (`spare-<pid>-<n>.tmp`), so that a thread of an
//! earlier `SegmentLog` on the same directory can never write into a file a later one
//! has made a segment; `open` deletes spares left by earlier runs.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Zeros written per `pwrite` while preparing a spare: one page. The page cache keeps a
/// file's pages in folios as large as the writes that made them (Linux 6.18 on ext4
/// gave 1 MiB folios to 1 MiB writes), and an append later dirties, and an fdatasync
/// writes back, its whole folio: with 1 MiB writes every 350-byte record cost a 1 MiB
/// disk write. Page-sized writes keep the folios at one page.
const ZERO_WRITE_BYTES: usize = 4096;
/// A spare is fdatasynced after each this many bytes, not once at the end: the disk then
/// never has more than this of it in flight, which an fdatasync of the log running
/// meanwhile (a device cache flush) would wait for.
const ZERO_SYNC_EVERY_BYTES: u64 = 4 << 20;

/// Spares made by this process, for unique names.
static MADE: AtomicU64 = AtomicU64::new(0);

/// Whether `name` is a spare's file name.
pub(super) fn is_spare_name(name: &str) -> bool {
    name.starts_with("spare-") && name.ends_with(".tmp")
}

/// Deletes the spares earlier runs left in `dir`.
pub(super) fn remove_stale(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_spare_name) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

enum State {
    /// No spare and none being made.
    Idle,
    /// The thread is writing one.
    Preparing,
    /// A spare, all zeros and durable, at this path.
    Ready(File, PathBuf),
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Set when the log is dropped: the thread stops and deletes its partial file.
    stop: AtomicBool,
}

impl Shared {
    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        self.changed.notify_all();
    }

    /// Deletes the spare if one is ready (nobody will take it: the log is gone).
    fn discard_ready(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let State::Ready(_, path) = std::mem::replace(&mut *state, State::Idle) {
            let _ = fs::remove_file(path);
        }
    }
}

/// The spare of one log directory and the thread that makes it.
pub(super) struct Spare {
    shared: Arc<Shared>,
    wake: SyncSender<()>,
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spare")
    }
}

impl Spare {
    /// Starts the thread that makes spares of `size` bytes in `dir` (one per `refill`).
    pub(super) fn start(dir: &Path, size: u64) -> io::Result<Spare> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Idle),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (wake, rx) = sync_channel(1);
        let (s2, dir) = (shared.clone(), dir.to_path_buf());
        std::thread::Builder::new()
            .name("log-spare".into())
            .spawn(move || spare_loop(&s2, &dir, size, &rx))?;
        Ok(Spare { shared, wake })
    }

    /// The spare, if one is ready; the caller names it (and then calls `refill`).
    pub(super) fn take(&self) -> Option<(File, PathBuf)> {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, State::Idle) {
            State::Ready(file, path) => Some((file, path)),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Has the thread make a spare unless one is ready or being made.
    pub(super) fn refill(&self) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, State::Idle) && self.wake.try_send(()).is_ok() {
            *state = State::Preparing;
        }
    }

    /// Waits up to `timeout` for the spare being made; whether one is ready.
    pub(super) fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| matches!(s, State::Preparing))
            .unwrap_or_else(PoisonError::into_inner);
        matches!(*state, State::Ready(..))
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // A spare nobody took is deleted; one being made is deleted by its thread.
        self.shared.discard_ready();
    }
}

fn spare_loop(shared: &Shared, dir: &Path, size: u64, rx: &Receiver<()>) {
    while rx.recv().is_ok() {
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("spare-{}-{n}.tmp", std::process::id()));
        match prepare(shared, &path, size) {
            Ok(Some(file)) => shared.set(State::Ready(file, path)),
            Ok(None) => {
                let _ = fs::remove_file(&path);
                return;
            }
            Err(e) => {
                // Not a failure of the log: the next segment is made the slow way.
                tracing::warn!(path = %path.display(), error = %e,
                    "could not prepare a spare log segment; the next one grows as it is written");
                let _ = fs::remove_file(&path);
                shared.set(State::Idle);
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            shared.discard_ready();
            return;
        }
    }
}

/// Writes `size` bytes of zeros to a new file at `path` and fdatasyncs it. `None` if the
/// log was dropped meanwhile.
fn prepare(shared: &Shared, path: &Path, size: u64) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let zeros = vec![0u8; ZERO_WRITE_BYTES];
    let mut offset = 0;
    while offset < size {
        if shared.stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        let n = (size - offset).min(ZERO_WRITE_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
        if offset % ZERO_SYNC_EVERY_BYTES == 0 || offset == size {
            file.sync_data()?;
        }
    }
    if size == 0 {
        file.sync_data()?;
    }
    Ok(Some(file))
}
