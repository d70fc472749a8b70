//! Every size, count and time limit in Trove, in one place.
//!
//! Changing a limit here changes it everywhere; the compile-time asserts below keep
//! related limits consistent.

/// Largest record key, in bytes of UTF-8.
pub const MAX_RECORD_KEY_BYTES: usize = 1024;
/// Largest record value, in bytes.
pub const MAX_RECORD_VALUE_BYTES: usize = 1024 * 1024;
/// Largest object key, in bytes of UTF-8.
pub const MAX_OBJECT_KEY_BYTES: usize = 1024;
/// Bucket names are 3..=63 characters.
pub const MIN_BUCKET_NAME_LEN: usize = 3;
/// Bucket names are 3..=63 characters.
pub const MAX_BUCKET_NAME_LEN: usize = 63;
/// Largest object size by design (5 TiB); tested up to 1 GiB.
pub const MAX_OBJECT_SIZE_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Size of the chunks an object is stored as (and the largest data message a client
/// may send).
pub const CHUNK_SIZE_BYTES: usize = 1024 * 1024;
/// Largest client id in a request id.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

/// gRPC message limit for the public API (a 1 MiB chunk plus headroom).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// gRPC message limit between peers: an AppendEntries batch is capped at
/// [`MAX_APPEND_BATCH_BYTES`] plus framing.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Byte cap on the entries of one AppendEntries message.
pub const MAX_APPEND_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of the most recently appended log entries a node keeps in memory (their encoding,
/// plus the payload of a chunk entry whose record names its chunk file), so
/// replication and apply, which read an entry milliseconds after its append, do not read
/// it back from the file (16 chunks: four uploads' worth of chunks in flight).
pub const RECENT_LOG_ENTRY_BYTES: usize = 16 * 1024 * 1024;
/// A snapshot is also taken once this many command payload bytes (chunks, record values)
/// were applied since the last one, whatever the entry count: it bounds the log's size.
pub const SNAPSHOT_EVERY_PAYLOAD_BYTES: u64 = 512 * 1024 * 1024;
/// After a snapshot build that took D, the next is not asked for until D × this has
/// passed since it ended: builds, whose cost grows with the state, take at most about a
/// tenth of a node's time (see `trove_raft`'s `snapshot_pace`).
pub const SNAPSHOT_PACE_FACTOR: u32 = 9;
/// However slow builds are, one is made after `snapshot_every_entries` × this entries:
/// the bound on the log's length in entries.
pub const SNAPSHOT_MAX_ENTRIES_FACTOR: u64 = 10;
/// Most entries the state machine applies in one atomic state batch.
pub const MAX_APPLY_GROUP_ENTRIES: usize = 512;
/// Most command payload bytes (record values, chunk data) in one apply group.
pub const MAX_APPLY_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Largest apply group (entries) run on the Raft task itself instead of a blocking
/// thread, when it holds only record writes (see `trove_raft::state_machine`).
pub const INLINE_APPLY_MAX_ENTRIES: usize = 64;
/// Largest apply group (command payload bytes) run on the Raft task itself.
pub const INLINE_APPLY_MAX_BYTES: usize = 256 * 1024;
/// Size of one piece of a snapshot file on the wire.
pub const SNAPSHOT_PIECE_BYTES: usize = 1024 * 1024;

/// Size of one data piece of a backup stream (and of a backup file's records).
pub const BACKUP_PIECE_BYTES: usize = 1024 * 1024;
/// Largest record a backup file may hold (a piece plus framing); checked before reading.
pub const MAX_BACKUP_RECORD_BYTES: usize = 2 * 1024 * 1024;
/// Backup messages queued between the file reader and the network, per backup.
pub const BACKUP_QUEUE_MESSAGES: usize = 4;

/// HTTP/2 flow-control window per stream. The 64 KiB default would cost a round trip
/// every 64 KiB of a 1 MiB chunk or an 8 MiB AppendEntries batch.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// HTTP/2 flow-control window per connection (shared by its streams).
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
/// Largest HTTP/2 frame a server accepts (SETTINGS_MAX_FRAME_SIZE). The 16 KiB default
/// cuts a 1 MiB chunk into 64 DATA frames, each handled on its own.
pub const HTTP2_MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// Default number of keys in one list page.
pub const DEFAULT_LIST_LIMIT: u32 = 1000;
/// Largest number of keys in one list page.
pub const MAX_LIST_LIMIT: u32 = 10_000;

/// Chunks of one upload in flight through Raft at once (bounded memory per upload).
pub const UPLOAD_CHUNKS_IN_FLIGHT: usize = 4;
/// Chunk buffers the leader remembers having hashed, so their apply does not hash them
/// again (see `ChunkStore::name_chunk`): four uploads' chunks in flight, twice over. A
/// buffer whose proposal failed stays referenced until pushed out by newer ones.
pub const NAMED_CHUNKS_KEPT: usize = 8 * UPLOAD_CHUNKS_IN_FLIGHT;
/// How long an upload may stay idle (no new chunk) before its chunks are collected.
pub const UPLOAD_EXPIRY_MS: u64 = 10 * 60 * 1000;
/// How long the state machine remembers a request id for deduplication.
pub const REQUEST_ID_RETENTION_MS: u64 = 15 * 60 * 1000;
/// Default capacity of bounded channels inside a node.
pub const CHANNEL_CAPACITY: usize = 64;

/// `/readyz`: a node is ready only if it has applied all but at most this many
/// committed entries (a node catching up after a restart is not ready).
pub const READY_MAX_APPLY_LAG_ENTRIES: u64 = 1000;
/// Warnings and errors kept for the admin status page (oldest dropped first).
pub const RECENT_ERRORS_KEPT: usize = 50;
/// How often the admin port walks the data directory and the state's tables (disk use,
/// record and object counts); the walks cost IO, so not on every scrape.
pub const ADMIN_STORAGE_REFRESH_MS: u64 = 10_000;
/// Largest HTTP request the admin port accepts (it serves GETs only).
pub const MAX_ADMIN_REQUEST_BYTES: usize = 64 * 1024;
/// How long the status page waits for the leader's view before showing its own.
pub const ADMIN_LEADER_STATUS_TIMEOUT_MS: u64 = 1_000;
/// How long a follower waits for the leader's answer to a unary request it forwarded.
/// Forwarded uploads and downloads have no such limit (they may take hours).
pub const FORWARDED_CALL_TIMEOUT_MS: u64 = 60_000;
/// After a leader fails to open its replication stream to a peer, its next attempt waits
/// this long, doubling with each failure up to [`PEER_STREAM_RETRY_MAX_MS`] (reset by the
/// first stream that opens). openraft starts the next attempt at once, so a peer that is
/// down otherwise costs a connection attempt and two warnings every few hundred
/// microseconds.
pub const PEER_STREAM_RETRY_MIN_MS: u64 = 10;
/// The longest wait between attempts to open a replication stream to a peer: how late a
/// restarted peer may hear from its leader (heartbeats are separate calls).
pub const PEER_STREAM_RETRY_MAX_MS: u64 = 500;

const _: () = assert!(CHUNK_SIZE_BYTES + 64 * 1024 <= MAX_CLIENT_MESSAGE_BYTES);
const _: () = assert!(MAX_RECORD_VALUE_BYTES + 64 * 1024 <= MAX_CLIENT_MESSAGE_BYTES);
const _: () = assert!(2 * MAX_APPEND_BATCH_BYTES + CHUNK_SIZE_BYTES <= MAX_PEER_MESSAGE_BYTES);
const _: () = assert!(HTTP2_STREAM_WINDOW_BYTES as usize >= MAX_APPEND_BATCH_BYTES);
const _: () = assert!(HTTP2_CONNECTION_WINDOW_BYTES >= HTTP2_STREAM_WINDOW_BYTES);
// RFC 9113 §6.5.2: SETTINGS_MAX_FRAME_SIZE lies between 2^14 and 2^24 - 1.
const _: () = assert!(HTTP2_MAX_FRAME_BYTES >= 1 << 14 && HTTP2_MAX_FRAME_BYTES < 1 << 24);
const _: () = assert!(SNAPSHOT_PIECE_BYTES + 64 * 1024 <= MAX_PEER_MESSAGE_BYTES);
const _: () = assert!(BACKUP_PIECE_BYTES + 64 * 1024 <= MAX_BACKUP_RECORD_BYTES);
const _: () = assert!(MAX_BACKUP_RECORD_BYTES <= MAX_CLIENT_MESSAGE_BYTES);
