//! What `trove bench --local` reads about each node process from Linux's /proc: peak
//! resident memory (`VmHWM`), CPU time (user + system) and bytes the process caused to be
//! written to storage (`write_bytes` in /proc/<pid>/io).

use std::path::PathBuf;

use anyhow::{Context, Result};

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    pub disk_write_bytes: u64,
}

/// Reads process `pid` now.
pub fn sample(pid: u32) -> Result<Sample> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(dir.join("status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(dir.join("stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let io = std::fs::read_to_string(dir.join("io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    Ok(Sample {
        peak_rss_bytes: field(&status, "VmHWM:").unwrap_or(0) * 1024,
        cpu_seconds: cpu_seconds(&stat).unwrap_or(0.0),
        disk_write_bytes: field(&io, "write_bytes:").unwrap_or(0),
    })
}

/// Resets process `pid`'s peak resident memory to its current one (writing 5 to
/// /proc/<pid>/clear_refs, Linux 4.0 and later), so that the next [`sample`]'s peak is
/// the highest of the stretch in between, not of the process's whole life.
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS in /proc/{pid}/clear_refs"))
}

/// The first number after `name` on its line.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime from /proc/<pid>/stat, in seconds (fields 14 and 15, counted after the
/// parenthesised command name, which may itself contain spaces).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some(ticks as f64 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields() {
        let status = "Name:\ttrove\nVmPeak:\t  200 kB\nVmHWM:\t   81920 kB\nVmRSS:\t 4 kB\n";
        assert_eq!(field(status, "VmHWM:"), Some(81920));
        let io = "rchar: 1\nwchar: 2\nread_bytes: 3\nwrite_bytes: 4096\n";
        assert_eq!(field(io, "write_bytes:"), Some(4096));
        // Field 2 holds a command name with a space and a parenthesis.
        let stat = "42 (tro ve)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64;
        assert_eq!(cpu_seconds(stat), Some(300.0 / hz));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.peak_rss_bytes > 0);
    }

    #[test]
    fn reset_peak_forgets_memory_already_returned() {
        const MIB: u64 = 1024 * 1024;
        let pid = std::process::id();
        // 128 MiB touched page by page and freed: glibc maps and unmaps a block this size.
        let big = vec![1u8; (128 * MIB) as usize];
        assert_eq!(
            big.iter().step_by(4096).map(|b| u64::from(*b)).sum::<u64>(),
            32 * 1024
        );
        drop(big);
        let before = sample(pid).unwrap().peak_rss_bytes;
        reset_peak(pid).unwrap();
        let after = sample(pid).unwrap().peak_rss_bytes;
        assert!(
            after + 64 * MIB <= before,
            "peak {} MiB before the reset, {} MiB after",
            before / MIB,
            after / MIB
        );
    }
}
