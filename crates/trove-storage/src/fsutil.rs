//! Small filesystem helpers shared by the storage modules: durable file creation,
//! directory fsync, and a thread that closes files off the caller's path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StorageError};

/// The directory containing `path`; `.` for a bare relative name (whose `parent()` is
/// the empty path).
pub fn parent_dir(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let f = File::open(dir).map_err(|e| StorageError::io(dir, e))?;
    f.sync_all().map_err(|e| StorageError::io(dir, e))
}

/// Writes `bytes` to `path` atomically and durably: a temp file in the same directory,
/// fsync, rename over `path`, fsync the directory.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path)
        .ok_or_else(|| StorageError::Invalid(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| StorageError::Invalid(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StorageError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| StorageError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StorageError::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))?;
    sync_dir(dir)
}

/// Removes the file at `path` and fsyncs its directory so the removal is durable.
pub fn remove_file_durable(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
    match parent_dir(path) {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Creates a directory (and parents) and fsyncs its parent so the creation is durable.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    if let Some(parent) = parent_dir(dir) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Name of the file that records which on-disk format a storage directory uses.
pub const FORMAT_FILE: &str = "FORMAT";

/// Reads `dir/FORMAT` (one line: `<kind> <version>`) and refuses a directory written by
/// another kind of store or by a format version other than `supported`, without modifying
/// anything. Returns whether the file exists (a missing file means a new directory).
pub fn check_format_file(dir: &Path, kind: &str, supported: u32) -> Result<bool> {
    Ok(read_format_file(dir, kind, supported, supported)?.is_some())
}

/// Reads `dir/FORMAT` like [`check_format_file`], accepting any version from `oldest`
/// to `newest` (older ones are migrated by their store's `open`); returns it, `None` if
/// the file does not exist.
pub fn read_format_file(dir: &Path, kind: &str, oldest: u32, newest: u32) -> Result<Option<u32>> {
    let path = dir.join(FORMAT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    let mut words = text.split_whitespace();
    let (found_kind, version) = match (words.next(), words.next(), words.next()) {
        (Some(k), Some(v), None) => (k, v),
        _ => {
            return Err(StorageError::corrupt(
                &path,
                format!("unreadable format line {text:?}"),
            ));
        }
    };
    if found_kind != kind {
        return Err(StorageError::corrupt(
            &path,
            format!("this is a {found_kind:?} directory, expected {kind:?}"),
        ));
    }
    let found: u32 = version.parse().map_err(|_| {
        StorageError::corrupt(&path, format!("unreadable format version {version:?}"))
    })?;
    if !(oldest..=newest).contains(&found) {
        return Err(StorageError::UnsupportedVersion {
            path,
            found,
            supported: newest,
        });
    }
    Ok(Some(found))
}

/// Writes `dir/FORMAT` durably (see [`check_format_file`]).
pub fn write_format_file(dir: &Path, kind: &str, version: u32) -> Result<()> {
    write_file_atomic(
        &dir.join(FORMAT_FILE),
        format!("{kind} {version}\n").as_bytes(),
    )
}

/// Drops values (open files of unlinked segments) on a background thread. The last close
/// of an unlinked file frees its blocks, and a filesystem mounted with `discard` trims
/// them right there, synchronously: tens of milliseconds or more for a 64 MiB file on
/// some disks, which would stall whoever happened to close it (the log's writer).
/// Bounded: when the thread is behind, or gone, the value is dropped in place.
#[derive(Debug)]
pub struct Closer {
    tx: std::sync::mpsc::SyncSender<Box<dyn Send>>,
}

/// Values a [`Closer`] holds at most before dropping in the caller's thread.
const CLOSER_QUEUE: usize = 16;

impl Closer {
    /// Starts the thread (named `name`); it ends once the `Closer` is dropped and its
    /// queue is empty.
    pub fn spawn(name: &str) -> std::io::Result<Closer> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Box<dyn Send>>(CLOSER_QUEUE);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || while rx.recv().is_ok() {})?;
        Ok(Closer { tx })
    }

    /// Drops `value` on the background thread (in place if its queue is full).
    pub fn close<T: Send + 'static>(&self, value: T) {
        // `try_send` hands the value back on failure; it is dropped right here then.
        let _ = self.tx.try_send(Box::new(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Reports the name of the thread that drops it.
    struct Witness(mpsc::Sender<Option<String>>);

    impl Drop for Witness {
        fn drop(&mut self) {
            let name = std::thread::current().name().map(str::to_owned);
            let _ = self.0.send(name);
        }
    }

    #[test]
    fn the_closer_drops_on_its_own_thread_and_in_place_when_full() {
        let closer = Closer::spawn("test-closer").unwrap();
        let (tx, rx) = mpsc::channel();
        closer.close(Witness(tx.clone()));
        let dropped_by = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(dropped_by.as_deref(), Some("test-closer"));

        // A closer whose queue is full (here: a rendezvous channel nobody receives on)
        // drops in place.
        let (full_tx, _rx_kept) = mpsc::sync_channel::<Box<dyn Send>>(0);
        let stuck = Closer { tx: full_tx };
        stuck.close(Witness(tx));
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(rx.try_recv().unwrap(), here);
    }
}
