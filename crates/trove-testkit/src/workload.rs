//! The clients of a chaos run: each is an SDK client of its own, paced to its share of
//! the total rate, doing record get (linearizable) / put / compare-and-set / delete over
//! a fixed set of keys with unique values (`c<client>:<seq>`), and blob uploads (unique
//! object keys, 4 KiB to 2 MiB, log-uniform sizes, SHA-256 recorded) and downloads.
//!
//! Per-attempt deadlines are short and the retry budget small, so an operation ends as
//! ok, fail or unknown within a few seconds of a fault. Every choice comes from the
//! client's own generator, seeded from the run's seed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use tokio_util::sync::CancellationToken;
use trove_client::{Client, ClientConfig, Consistency};
use trove_types::Sha256;

use crate::error::{Result, TestkitError};
use crate::history::{Op, OpKind, OpResult, Recorder, result_of_error};

/// The bucket the blobs go to.
pub const BUCKET: &str = "chaos";
/// Smallest blob.
pub const BLOB_MIN_BYTES: u64 = 4 * 1024;
/// Largest blob.
pub const BLOB_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// Relative weights of the operations.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub get: u32,
    pub put: u32,
    pub cas: u32,
    pub delete: u32,
    pub blob_put: u32,
    pub blob_get: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            get: 35,
            put: 28,
            cas: 19,
            delete: 9,
            blob_put: 3,
            blob_get: 6,
        }
    }
}

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// The run's seed (each client derives its own generator).
    pub seed: u64,
    pub clients: u32,
    /// Target operations per second, all clients together.
    pub rate: f64,
    /// Number of record keys.
    pub keys: u32,
    pub mix: Mix,
    /// Client addresses of the nodes.
    pub endpoints: Vec<String>,
    /// Per-attempt deadline of the SDK.
    pub request_timeout: Duration,
    /// Retry budget of the SDK.
    pub retry_budget: Duration,
}

impl WorkloadConfig {
    /// The record keys.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys).map(|k| format!("k{k:03}")).collect()
    }

    /// The SDK configuration of client `client`.
    pub fn client_config(&self, client: u32) -> ClientConfig {
        ClientConfig {
            request_timeout: self.request_timeout,
            connect_timeout: Duration::from_millis(500),
            retry_budget: self.retry_budget,
            client_id: format!("chaos-{}-{client}", self.seed),
            ..ClientConfig::new(self.endpoints.iter().cloned())
        }
    }
}

/// Object keys whose upload was attempted (shared by the clients for downloads).
pub type BlobKeys = Arc<Mutex<Vec<String>>>;

enum Choice {
    Get,
    Put,
    Cas,
    Delete,
    BlobPut,
    BlobGet,
}

fn choose(mix: &Mix, rng: &mut StdRng) -> Choice {
    let table = [
        (mix.get, Choice::Get),
        (mix.put, Choice::Put),
        (mix.cas, Choice::Cas),
        (mix.delete, Choice::Delete),
        (mix.blob_put, Choice::BlobPut),
        (mix.blob_get, Choice::BlobGet),
    ];
    let total: u32 = table.iter().map(|(w, _)| *w).sum::<u32>().max(1);
    let mut x = rng.random_range(0..total);
    for (w, c) in table {
        if x < w {
            return c;
        }
        x -= w;
    }
    Choice::Get
}

/// A log-uniform size in [`BLOB_MIN_BYTES`, `BLOB_MAX_BYTES`].
fn blob_size(rng: &mut StdRng) -> usize {
    let (lo, hi) = ((BLOB_MIN_BYTES as f64).ln(), (BLOB_MAX_BYTES as f64).ln());
    (rng.random_range(lo..=hi).exp() as u64).clamp(BLOB_MIN_BYTES, BLOB_MAX_BYTES) as usize
}

/// A blob of random bytes of a log-uniform size.
fn blob(rng: &mut StdRng) -> Bytes {
    let mut data = vec![0u8; blob_size(rng)];
    rng.fill_bytes(&mut data);
    Bytes::from(data)
}

/// One client's state.
struct Worker {
    id: u32,
    cfg: Arc<WorkloadConfig>,
    client: Client,
    rng: StdRng,
    keys: Vec<String>,
    recorder: Arc<Recorder>,
    blobs: BlobKeys,
    /// Jepsen process number within this client.
    incarnation: u64,
    seq: u64,
    /// Last revision this client saw per key (0: absent), for compare-and-set.
    last_seen: HashMap<String, u64>,
}

/// Runs client `id` until `stop` is cancelled (the operation in flight completes).
pub async fn run_client(
    cfg: Arc<WorkloadConfig>,
    id: u32,
    recorder: Arc<Recorder>,
    blobs: BlobKeys,
    stop: CancellationToken,
) -> Result<()> {
    let client = Client::new(cfg.client_config(id))
        .map_err(|e| TestkitError::client(format!("workload client {id}"), e))?;
    let period = Duration::from_secs_f64(f64::from(cfg.clients.max(1)) / cfg.rate.max(0.1));
    let mut w = Worker {
        id,
        rng: StdRng::seed_from_u64(
            cfg.seed ^ (u64::from(id) + 1).wrapping_mul(0xA076_1D64_78BD_642F),
        ),
        keys: cfg.key_names(),
        cfg,
        client,
        recorder,
        blobs,
        incarnation: 0,
        seq: 0,
        last_seen: HashMap::new(),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        w.one().await;
    }
}

impl Worker {
    fn process(&self) -> u64 {
        (u64::from(self.id) << 32) | self.incarnation
    }

    fn next_value(&mut self) -> String {
        self.seq += 1;
        format!("c{}:{}", self.id, self.seq)
    }

    async fn one(&mut self) {
        match choose(&self.cfg.mix, &mut self.rng) {
            Choice::BlobPut => self.blob_put().await,
            Choice::BlobGet => self.blob_get().await,
            choice => {
                let key = self.keys.choose(&mut self.rng).cloned().unwrap_or_default();
                let kind = match choice {
                    Choice::Get => OpKind::Get,
                    Choice::Put => OpKind::Put {
                        value: self.next_value(),
                    },
                    Choice::Cas => OpKind::Cas {
                        expected: self.last_seen.get(&key).copied().unwrap_or(0),
                        value: self.next_value(),
                    },
                    _ => OpKind::Delete,
                };
                self.record_op(key, kind).await;
            }
        }
    }

    async fn record_op(&mut self, key: String, kind: OpKind) {
        let invoke = self.recorder.now_ns();
        let c = &self.client;
        let result = match &kind {
            OpKind::Get => match c.get_record(&key, Consistency::Linearizable).await {
                Ok(r) => OpResult::Found {
                    value: String::from_utf8_lossy(&r.value).into_owned(),
                    revision: r.revision,
                },
                Err(e) => result_of_error(&e),
            },
            OpKind::Put { value } => written(c.put_record(&key, value.clone(), None).await),
            OpKind::Cas { expected, value } => {
                written(c.put_record(&key, value.clone(), Some(*expected)).await)
            }
            _ => written(c.delete_record(&key, None).await),
        };
        let complete = self.recorder.now_ns();
        match (&kind, &result) {
            (OpKind::Delete, OpResult::Written { .. } | OpResult::NotFound)
            | (OpKind::Get, OpResult::NotFound) => {
                self.last_seen.insert(key.clone(), 0);
            }
            (_, OpResult::Written { revision } | OpResult::Found { revision, .. }) => {
                self.last_seen.insert(key.clone(), *revision);
            }
            _ => {
                self.last_seen.remove(&key);
            }
        }
        self.finish(key, kind, invoke, complete, result).await;
    }

    async fn finish(
        &mut self,
        key: String,
        kind: OpKind,
        invoke: u64,
        complete: u64,
        result: OpResult,
    ) {
        let op = Op::new(
            self.recorder.next_id(),
            self.id,
            self.process(),
            key,
            kind,
            invoke,
            complete,
            result,
        );
        let unknown = matches!(op.result, OpResult::Unknown { .. });
        self.recorder.record(op).await;
        if unknown {
            // Jepsen: a process with an operation of unknown outcome is replaced.
            self.incarnation += 1;
        }
    }

    async fn blob_put(&mut self) {
        self.seq += 1;
        let key = format!("b/c{}/{}", self.id, self.seq);
        let data = blob(&mut self.rng);
        let sha = hex::encode(Sha256::digest(&data));
        let kind = OpKind::BlobPut {
            size: data.len() as u64,
            sha256: sha,
        };
        self.blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.clone());
        let invoke = self.recorder.now_ns();
        let result = match self.client.put_object_bytes(BUCKET, &key, data).await {
            Ok(info) => OpResult::Written {
                revision: info.revision,
            },
            Err(e) => result_of_error(&e),
        };
        let complete = self.recorder.now_ns();
        self.finish(key, kind, invoke, complete, result).await;
    }

    async fn blob_get(&mut self) {
        let key = {
            let keys = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
            keys.choose(&mut self.rng).cloned()
        };
        let Some(key) = key else {
            return;
        };
        let invoke = self.recorder.now_ns();
        let result = read_blob(&self.client, &key).await;
        let complete = self.recorder.now_ns();
        self.finish(key, OpKind::BlobGet, invoke, complete, result)
            .await;
    }
}

fn written(r: trove_client::Result<u64>) -> OpResult {
    match r {
        Ok(revision) => OpResult::Written { revision },
        Err(e) => result_of_error(&e),
    }
}

/// Downloads an object; the result's value is the SHA-256 (hex) of the bytes read.
pub async fn read_blob(client: &Client, key: &str) -> OpResult {
    match client.get_object_bytes(BUCKET, key).await {
        Ok((info, data)) => OpResult::Found {
            value: hex::encode(Sha256::digest(&data)),
            revision: info.revision,
        },
        Err(e) => result_of_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_have_bounded_log_uniform_sizes() {
        let mut rng = StdRng::seed_from_u64(1);
        let sizes: Vec<u64> = (0..500).map(|_| blob_size(&mut rng) as u64).collect();
        assert!((BLOB_MIN_BYTES..=BLOB_MAX_BYTES).contains(&(blob(&mut rng).len() as u64)));
        assert!(
            sizes
                .iter()
                .all(|s| (BLOB_MIN_BYTES..=BLOB_MAX_BYTES).contains(s))
        );
        let small = sizes.iter().filter(|s| **s < 64 * 1024).count();
        assert!(small > 100 && small < 400, "{small} small blobs of 500");
    }

    #[test]
    fn the_mix_follows_its_weights() {
        let mut rng = StdRng::seed_from_u64(2);
        let mix = Mix {
            get: 1,
            put: 0,
            cas: 0,
            delete: 0,
            blob_put: 1,
            blob_get: 0,
        };
        let mut gets = 0;
        for _ in 0..1000 {
            match choose(&mix, &mut rng) {
                Choice::Get => gets += 1,
                Choice::BlobPut => {}
                _ => panic!("weight 0 chosen"),
            }
        }
        assert!((400..600).contains(&gets), "{gets}");
    }
}
