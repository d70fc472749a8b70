//! Chunk repair and the scrubber: a chunk that fails verification on this node is
//! fetched again from a peer, verified and rewritten, so one node's damaged disk never
//! costs data while another node holds an intact copy.
//!
//! - **On read** ([`read_chunk`]): a chunk file whose bytes do not match their SHA-256
//!   is quarantined by the chunk store (never served); a missing one is reported as
//!   missing. Either way the read asks the other members (peer RPC `FetchChunk`, which
//!   only ever sends bytes that verified on the sender), verifies the answer against
//!   the hash, stores it durably and serves it. The client sees the right bytes.
//! - **Scrubber** ([`scrub`]): walks every chunk the state refers to, reading and
//!   verifying each at a bounded rate ([`crate::Tuning::scrub_rate_bytes_per_sec`]),
//!   and repairs what it finds the same way. A pass starts every
//!   [`crate::Tuning::scrub_interval_secs`] and whenever `trove scrub start` asks.
//! - What was checked, found and repaired is kept in [`ScrubStats`], answered by the
//!   `Scrub` RPC (`trove scrub status`) and exported as `trove_scrub_*` and
//!   `trove_chunks_*` metrics.
//!
//! A chunk no peer can supply intact is counted as unrepairable and its reads fail
//! with `DATA_LOSS`; it is tried again on the next pass.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use trove_proto::v1::ScrubResponse;
use trove_storage::StorageError;
use trove_types::{Sha256Digest, TroveError, metrics as m};

use crate::node::{Node, NodeRef};

/// How many chunk hashes the scrubber reads from the state at a time.
const PAGE: usize = 256;
/// How long one `FetchChunk` may take (a chunk is at most a few MiB).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters and progress of this node's chunk verification (since it started).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStats {
    pub running: bool,
    pub passes_completed: u64,
    pub pass_checked: u64,
    pub pass_total: u64,
    pub last_pass_finished_unix: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub corrupt_found: u64,
    pub missing_found: u64,
    pub repaired: u64,
    pub unrepairable: u64,
    pub last_problem: String,
}

impl ScrubStats {
    /// Fraction of the running (or last) pass done: 0 before the first pass.
    pub fn progress(&self) -> f64 {
        if self.pass_total == 0 {
            return if self.passes_completed > 0 { 1.0 } else { 0.0 };
        }
        (self.pass_checked as f64 / self.pass_total as f64).min(1.0)
    }
}

/// This node's scrubber settings and what it has found.
pub struct ChunkHealth {
    rate_bytes_per_sec: u64,
    interval: Duration,
    stats: Mutex<ScrubStats>,
    start: tokio::sync::Notify,
}

/// What a bad chunk turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    Corrupt,
    Missing,
}

impl ChunkHealth {
    /// Scrubbing at `rate_bytes_per_sec` (0: only passes started on request, unthrottled),
    /// a pass every `interval` (zero: none scheduled).
    pub fn new(rate_bytes_per_sec: u64, interval: Duration) -> ChunkHealth {
        ChunkHealth {
            rate_bytes_per_sec,
            interval,
            stats: Mutex::new(ScrubStats::default()),
            start: tokio::sync::Notify::new(),
        }
    }

    /// A copy of the current figures.
    pub fn stats(&self) -> ScrubStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update<T>(&self, f: impl FnOnce(&mut ScrubStats) -> T) -> T {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Asks the scrubber to start a pass now (no effect while one runs).
    pub fn request_pass(&self) {
        self.start.notify_one();
    }

    /// The `Scrub` RPC's answer for node `node_id`.
    pub fn response(&self, node_id: u64) -> ScrubResponse {
        let s = self.stats();
        ScrubResponse {
            node_id,
            running: s.running,
            rate_bytes_per_sec: self.rate_bytes_per_sec,
            interval_secs: self.interval.as_secs(),
            passes_completed: s.passes_completed,
            pass_checked: s.pass_checked,
            pass_total: s.pass_total,
            last_pass_finished_unix: s.last_pass_finished_unix,
            chunks_checked: s.chunks_checked,
            bytes_checked: s.bytes_checked,
            corrupt_found: s.corrupt_found,
            missing_found: s.missing_found,
            repaired: s.repaired,
            unrepairable: s.unrepairable,
            last_problem: s.last_problem,
        }
    }

    fn found(&self, hash: &Sha256Digest, damage: Damage, detail: &str) {
        let (kind, counter) = match damage {
            Damage::Corrupt => ("corrupt", m::SCRUB_CORRUPT_FOUND),
            Damage::Missing => ("missing", m::SCRUB_MISSING_FOUND),
        };
        metrics::counter!(counter).increment(1);
        tracing::error!(chunk = %hex::encode(hash), kind, detail, "bad chunk on this node; repairing from a peer");
        self.update(|s| {
            match damage {
                Damage::Corrupt => s.corrupt_found += 1,
                Damage::Missing => s.missing_found += 1,
            }
            s.last_problem = format!("chunk {} {kind}: {detail}", hex::encode(hash));
        });
    }

    fn repaired(&self, hash: &Sha256Digest, from: u64) {
        metrics::counter!(m::CHUNKS_REPAIRED).increment(1);
        tracing::warn!(chunk = %hex::encode(hash), peer = from, "chunk repaired from a peer");
        self.update(|s| s.repaired += 1);
    }

    fn unrepairable(&self, hash: &Sha256Digest, why: &str) {
        metrics::counter!(m::CHUNKS_UNREPAIRABLE).increment(1);
        tracing::error!(chunk = %hex::encode(hash), why, "no peer could supply an intact copy of a chunk");
        self.update(|s| {
            s.unrepairable += 1;
            s.last_problem = format!("chunk {} unrepairable: {why}", hex::encode(hash));
        });
    }
}

/// Reads the chunk `hash`, verified; repairs it from a peer if this node's copy is
/// corrupt or missing. `DataLoss` only if no peer has an intact copy either.
pub async fn read_chunk(node: &NodeRef, hash: Sha256Digest) -> Result<Bytes, TroveError> {
    let n = node.clone();
    let local = tokio::task::spawn_blocking(move || n.store().chunks().get(&hash))
        .await
        .map_err(|e| TroveError::internal(e.to_string()))?;
    let damage = match &local {
        Ok(_) => None,
        Err(StorageError::Corrupt { .. }) => Some(Damage::Corrupt),
        Err(StorageError::NotFound(_)) => Some(Damage::Missing),
        Err(_) => None,
    };
    match (local, damage) {
        (Ok(data), _) => Ok(data),
        (Err(e), Some(Damage::Missing)) if !still_referenced(node, hash).await? => {
            // Deleted (its object removed or replaced) since the caller looked it up.
            Err(TroveError::NotFound(format!(
                "chunk {}: its object was deleted or replaced meanwhile ({e})",
                hex::encode(hash)
            )))
        }
        (Err(e), Some(damage)) => {
            node.chunk_health.found(&hash, damage, &e.to_string());
            repair(node, hash).await
        }
        (Err(e), None) => Err(TroveError::internal(format!(
            "reading chunk {}: {e}",
            hex::encode(hash)
        ))),
    }
}

/// For a chunk the state refers to but whose file is gone (met by a snapshot build):
/// counts it and fetches it from a peer.
pub async fn restore_missing(node: &NodeRef, hash: Sha256Digest) -> Result<(), TroveError> {
    node.chunk_health
        .found(&hash, Damage::Missing, "met by a snapshot build");
    repair(node, hash).await.map(|_| ())
}

async fn still_referenced(node: &NodeRef, hash: Sha256Digest) -> Result<bool, TroveError> {
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.store().is_chunk_referenced(&hash))
        .await
        .map_err(|e| TroveError::internal(e.to_string()))?
        .map_err(|e| TroveError::internal(e.to_string()))
}

/// Fetches `hash` from the other members in turn, verifies it and stores it.
async fn repair(node: &NodeRef, hash: Sha256Digest) -> Result<Bytes, TroveError> {
    let peers: Vec<(u64, String)> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != node.id)
        .map(|(id, n)| (*id, n.peer_addr.clone()))
        .collect();
    let mut why = Vec::new();
    for (peer, addr) in peers {
        let data = match fetch(node, peer, &addr, &hash).await {
            Ok(d) => d,
            Err(e) => {
                why.push(format!("node {peer}: {e}"));
                continue;
            }
        };
        if trove_storage::chunks::sha256(&data) != hash {
            // A peer never sends bytes that failed its own check; this is the wire
            // or a bug. Do not store it, try the next peer.
            why.push(format!("node {peer} sent bytes that do not match the hash"));
            continue;
        }
        let n = node.clone();
        let stored = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || n.store().chunks().put(&hash, &data))
                .await
                .map_err(|e| TroveError::internal(e.to_string()))?
        };
        stored.map_err(|e| {
            TroveError::internal(format!(
                "chunk {} fetched from node {peer} but not stored: {e}",
                hex::encode(hash)
            ))
        })?;
        node.chunk_health.repaired(&hash, peer);
        // The current snapshot may hard-link the same damaged file.
        let n = node.clone();
        match tokio::task::spawn_blocking(move || n.sm.repair_snapshot_chunk(&hash)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(chunk = %hex::encode(hash), error = %e, "cannot repair the snapshot's copy of a chunk")
            }
            Err(e) => tracing::warn!(error = %e, "snapshot chunk repair task failed"),
        }
        return Ok(data);
    }
    let why = if why.is_empty() {
        "no other member to ask".to_string()
    } else {
        why.join("; ")
    };
    node.chunk_health.unrepairable(&hash, &why);
    Err(TroveError::DataLoss(format!(
        "chunk {} is damaged on node {} and no peer supplied an intact copy ({why})",
        hex::encode(hash),
        node.id
    )))
}

/// One `FetchChunk` to `peer`.
async fn fetch(node: &Node, peer: u64, addr: &str, hash: &Sha256Digest) -> Result<Bytes, String> {
    let mut c = node.network.raw_client(addr)?;
    let env = node.peer_envelope(peer, hash)?;
    crate::node::peer_reply::<Vec<u8>, _>(Some(FETCH_TIMEOUT), c.fetch_chunk(env))
        .await
        .map(Bytes::from)
}

/// Serves a peer's `FetchChunk`: this node's copy, only if it verifies (a corrupt copy
/// is quarantined by the read and never sent).
pub async fn serve_fetch(node: &NodeRef, from: u64, hash: Sha256Digest) -> Result<Bytes, String> {
    let n = node.clone();
    let res = tokio::task::spawn_blocking(move || n.store().chunks().get(&hash))
        .await
        .map_err(|e| e.to_string())?;
    res.map_err(|e| {
        tracing::warn!(peer = from, chunk = %hex::encode(hash), error = %e, "cannot supply a chunk to a peer");
        e.to_string()
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The scrubber: a pass every `interval` and on request, until `stop`.
pub async fn scrub(node: NodeRef, mut stop: tokio::sync::watch::Receiver<bool>) {
    let health = node.chunk_health.clone();
    loop {
        let scheduled = async {
            if health.interval.is_zero() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(health.interval).await
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = health.start.notified() => {}
            _ = scheduled => {}
        }
        tokio::select! {
            _ = stop.changed() => return,
            r = pass(&node) => if let Err(e) = r {
                tracing::warn!(error = %e, "scrub pass stopped early");
                health.update(|s| s.last_problem = format!("scrub pass stopped early: {e}"));
            },
        }
        health.update(|s| s.running = false);
    }
}

/// One pass over every chunk the state refers to.
async fn pass(node: &NodeRef) -> Result<(), TroveError> {
    let health = &node.chunk_health;
    let n = node.clone();
    let total = tokio::task::spawn_blocking(move || n.store().referenced_chunk_count())
        .await
        .map_err(|e| TroveError::internal(e.to_string()))?
        .map_err(|e| TroveError::internal(e.to_string()))?;
    health.update(|s| {
        s.running = true;
        s.pass_checked = 0;
        s.pass_total = total;
    });
    tracing::info!(node = node.id, chunks = total, "scrub pass started");
    let started = Instant::now();
    let mut after: Option<Sha256Digest> = None;
    loop {
        let n = node.clone();
        let page =
            tokio::task::spawn_blocking(move || n.store().referenced_chunks(after.as_ref(), PAGE))
                .await
                .map_err(|e| TroveError::internal(e.to_string()))?
                .map_err(|e| TroveError::internal(e.to_string()))?;
        let Some(last) = page.last().copied() else {
            break;
        };
        for hash in page {
            let t0 = Instant::now();
            let len = check_one(node, hash).await;
            metrics::counter!(m::SCRUB_CHUNKS_CHECKED).increment(1);
            metrics::counter!(m::SCRUB_BYTES_CHECKED).increment(len);
            health.update(|s| {
                s.chunks_checked += 1;
                s.bytes_checked += len;
                s.pass_checked += 1;
            });
            // Throttle: this chunk's share of a second at the configured rate.
            if health.rate_bytes_per_sec > 0 {
                let due = Duration::from_secs_f64(len as f64 / health.rate_bytes_per_sec as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        after = Some(last);
    }
    let finished = unix_now();
    health.update(|s| {
        s.passes_completed += 1;
        s.last_pass_finished_unix = finished;
    });
    metrics::counter!(m::SCRUB_PASSES).increment(1);
    let s = health.stats();
    tracing::info!(
        node = node.id,
        chunks = s.pass_checked,
        seconds = started.elapsed().as_secs_f64(),
        corrupt_found = s.corrupt_found,
        missing_found = s.missing_found,
        repaired = s.repaired,
        unrepairable = s.unrepairable,
        "scrub pass finished"
    );
    Ok(())
}

/// Verifies (and if needed repairs) one chunk; returns the bytes checked.
async fn check_one(node: &NodeRef, hash: Sha256Digest) -> u64 {
    match read_chunk(node, hash).await {
        Ok(data) => data.len() as u64,
        // Counted and logged by `read_chunk`; a chunk deleted since the page was read
        // is not a problem, only a race with a delete.
        Err(_) => 0,
    }
}
