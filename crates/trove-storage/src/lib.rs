//! Trove's durable storage. Knows nothing of Raft or gRPC.
//!
//! - [`log`]: an append-only, checksummed, segmented log of `(index, bytes)` records,
//!   with explicit `sync` (fdatasync) so the caller can group commits.
//! - [`meta`]: a small two-slot, checksummed, versioned file for the vote, the commit
//!   index and other tiny pieces of durable state.
//! - [`chunks`]: content-addressed chunk files (name = SHA-256 of the bytes), written to
//!   a temp name, fsynced, renamed, directory fsynced; verified on every read.
//! - [`state`]: the state machine in sled: records, buckets, objects, uploads, chunk
//!   reference counts, and the deduplication table. Apply is deterministic.
//! - [`snapshot`]: point-in-time export of the state (plus hard links to its chunks) to a
//!   directory, verification, and import.

pub mod chunks;
pub mod error;
pub mod fsutil;
pub mod log;
pub mod meta;
pub mod snapshot;
pub mod state;

pub use error::StorageError;
