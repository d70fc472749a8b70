//! Loop-mounted XFS filesystems, one per node, for the `powercut` fault: `xfs_io -x -c
//! shutdown` stops a filesystem at once and discards everything that was not fsynced, as
//! a power cut does to one machine. Needs root, `mkfs.xfs`, `xfs_io` (Debian's
//! xfsprogs), `losetup`, `mount` and `umount`. Images are sparse files: they take the
//! space their data takes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, TestkitError};

/// Size of each (sparse) image: room for long soaks of blob traffic.
const IMAGE_BYTES: u64 = 16 << 30;

struct Disk {
    mnt: PathBuf,
    dev: String,
    mounted: bool,
}

/// One XFS image per node under `root` (`disk-<id>.xfs`, kept with the run's output:
/// `mount -o loop` shows a node's data); unmounts and detaches everything on drop.
pub struct LoopDisks {
    root: PathBuf,
    disks: BTreeMap<u64, Disk>,
}

/// Why loop disks cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (loop devices and mounts)".into());
    }
    for tool in ["mkfs.xfs", "xfs_io", "losetup", "mount", "umount"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("needs {tool} (Debian: xfsprogs, mount)"));
        }
    }
    None
}

fn run(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| TestkitError::io(format!("run {tool}"), e))?;
    if !out.status.success() {
        return Err(TestkitError::Config(format!(
            "{tool} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl LoopDisks {
    pub fn new(root: &Path) -> LoopDisks {
        LoopDisks {
            root: root.to_path_buf(),
            disks: BTreeMap::new(),
        }
    }

    /// Creates, formats and mounts node `id`'s disk; returns its mount point.
    pub fn create(&mut self, id: u64) -> Result<PathBuf> {
        let image = self.root.join(format!("disk-{id}.xfs"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(IMAGE_BYTES))
            .map_err(|e| TestkitError::io(format!("create {}", image.display()), e))?;
        let image_s = image.display().to_string();
        run("mkfs.xfs", &["-q", "-f", &image_s])?;
        let mnt = self.root.join(format!("mnt-{id}"));
        std::fs::create_dir_all(&mnt)
            .map_err(|e| TestkitError::io(format!("create {}", mnt.display()), e))?;
        let dev = run("losetup", &["--find", "--show", &image_s])?
            .trim()
            .to_string();
        self.disks.insert(
            id,
            Disk {
                mnt: mnt.clone(),
                dev,
                mounted: false,
            },
        );
        self.mount(id)?;
        Ok(mnt)
    }

    fn disk(&mut self, id: u64) -> Result<&mut Disk> {
        self.disks.get_mut(&id).ok_or_else(|| TestkitError::Node {
            id,
            message: "has no loop disk".into(),
        })
    }

    fn mount(&mut self, id: u64) -> Result<()> {
        let d = self.disk(id)?;
        let (dev, mnt) = (d.dev.clone(), d.mnt.display().to_string());
        run("mount", &["-t", "xfs", &dev, &mnt])?;
        self.disk(id)?.mounted = true;
        Ok(())
    }

    /// Whether node `id` has a disk.
    pub fn has(&self, id: u64) -> bool {
        self.disks.contains_key(&id)
    }

    /// The power cut itself: the filesystem stops at once, losing whatever was not
    /// fsynced (the node's process must be killed right after: its IO now fails).
    pub fn cut(&mut self, id: u64) -> Result<()> {
        let mnt = self.disk(id)?.mnt.display().to_string();
        run("xfs_io", &["-x", "-c", "shutdown", &mnt])?;
        Ok(())
    }

    /// Power back: unmount and mount again (XFS replays its journal).
    pub fn remount(&mut self, id: u64) -> Result<()> {
        let mnt = self.disk(id)?.mnt.display().to_string();
        run("umount", &[&mnt])?;
        self.disk(id)?.mounted = false;
        self.mount(id)
    }
}

impl Drop for LoopDisks {
    fn drop(&mut self) {
        for (id, d) in &self.disks {
            let mnt = d.mnt.display().to_string();
            if d.mounted
                && run("umount", &[&mnt]).is_err()
                && let Err(e) = run("umount", &["-l", &mnt])
            {
                tracing::warn!(node = id, error = %e, "cannot unmount a loop disk");
            }
            if let Err(e) = run("losetup", &["-d", &d.dev]) {
                tracing::warn!(node = id, error = %e, "cannot detach a loop device");
            }
        }
    }
}
