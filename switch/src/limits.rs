//! Every bound of the switch in one place: the compile-time ones below, related by `const`
//! assertions, and the configured ones ([`Limits`], `[limits]` in `config/switch.toml`, with
//! the per-subsystem bounds `ledger.*` and `wal.*` checked in `crate::config`).
//!
//! Why bounds: a queue, table or buffer without one is memory set by rate × time, and a switch
//! runs for days. Over a bound the switch sheds load with a fast answer (91 or 96) or applies
//! backpressure; it never grows.

use crate::wal::format::RECORD_BODY_MAX;

// Acquirer sessions.

/// Bytes a session asks the socket for at a time.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Room a response frame is given at first: the encoder reserves twice a usual 0110's fields
/// (about 130 bytes) before it writes, so this much takes no second allocation.
pub const RESPONSE_BYTES_USUAL: usize = 512;
/// A session's writer flushes once this much is gathered, even if more responses are ready.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// On-us transactions a worker hands a ledger shard in one message, at most: what its readers
/// took in one turn of the worker's loop goes to each shard at once (one wake-up of the shard
/// thread per turn, not one per request).
pub const POST_BATCH_MAX: usize = 256;
/// Connections waiting to be accepted at most (the kernel's queue).
pub const ACCEPT_BACKLOG: u32 = 1024;
/// Identical retransmissions that may wait for one undecided request, unless configured.
pub const WAITERS_PER_IDENTITY_DEFAULT: usize = 8;

// Ledger.

/// Shards at most (`ledger.shards`).
pub const SHARDS_MAX: usize = 256;
/// Threads serving acquirer connections, at most (`acquirer_link.workers`).
pub const WORKERS_MAX: usize = 256;
/// Demo accounts at most (`demo.accounts`).
pub const DEMO_ACCOUNTS_MAX: u64 = 50_000_000;
/// Holds (and, separately, postings) one expiry step takes off at most: about a millisecond
/// of a shard's time in memory, and one small record, however much falls due at once.
pub const EXPIRY_PIECE_MAX: u32 = 4_096;
/// The fewest an expiry step takes when its pieces are slow (read from disk).
pub const EXPIRY_PIECE_MIN: u32 = 64;
/// What one expiry step may take of a shard's thread: a slower full piece halves the next, a
/// much faster one doubles it (between the two bounds above). After a piece the shard pauses
/// as long as the piece took before the next (one chain of pieces at a time), so expiry takes
/// about half of its time at most while holds keep falling due. From disk that is roughly
/// 50,000 holds a second per shard on this machine: holds falling due faster are released
/// late, not lost.
pub const EXPIRY_PIECE_MICROS: u64 = 2_000;

const _: () = assert!(EXPIRY_PIECE_MIN >= 1 && EXPIRY_PIECE_MIN <= EXPIRY_PIECE_MAX);
/// Transactions a shard moves from memory to disk at a time, at most (twice this when it is
/// catching up): one write batch of about 60 KiB, a fraction of a millisecond.
pub const SPILL_PIECE: usize = 512;
/// Requests a shard keeps waiting for reads of the store made off its thread, at most; with
/// more, it reads on its own thread (slower for everyone, never lost). Also the read queue's
/// bound.
pub const PARKED_MAX: usize = 4_096;
/// Transactions on disk that recovery reads back into memory to split them over a changed
/// number of shards; with more, it refuses to start (`ledger.shards` must stay as it was).
pub const RESHARD_IN_MEMORY_MAX: u64 = 4_000_000;
/// At most 1/this of a shard's transaction table holds reversals that came before their
/// original: they need no funds, so they must not crowd out real transactions.
pub const REVERSED_FIRST_SHARE: usize = 8;

// Issuer channels.

/// Remote approvals each issuer channel remembers at most (`issuers.originals_max`; about 100
/// bytes each in memory, 40 in a snapshot), so that an acquirer's reversal or completion of one
/// reaches the issuer with a field 90 naming the switch's request; older ones are answered 25.
pub const REMOTE_ORIGINALS_MAX: usize = 50_000_000;
/// Malformed or unmatched frames in a row after which an issuer link is closed and reopened.
pub const ISSUER_GARBAGE_MAX: u32 = 16;
/// Queued advices in flight to one issuer at once (the rest wait their turn).
pub const ADVICES_IN_FLIGHT_MAX: usize = 64;

// Write-ahead log and recovery.

/// The largest message queued for an issuer: an issuer link's largest frame.
pub const ISSUER_MESSAGE_BYTES_MAX: usize = 8 * 1024;
/// The largest entry the switch writes: a `Remote` entry with its sealed advice (the message,
/// a 16-byte tag, the issuer's name and a few keys). An `Applied` record is about 100 bytes,
/// an `Expire` record about 40.
pub const ENTRY_BYTES_MAX: usize = ISSUER_MESSAGE_BYTES_MAX + 512;
/// Entries handed to a shard's replay thread at a time, and batches queued for it at most:
/// recovery's memory is bounded by their product, not by the log's length.
pub const REPLAY_BATCH: usize = 4_096;
pub const REPLAY_BATCHES_QUEUED: usize = 16;
/// The largest `wal.segment_bytes` whose next segment is written ahead with zeros
/// (`wal::writer::ZeroFilled`): the next segment's file on disk besides the one being
/// written, written in the background; larger segments start empty and grow.
pub const ZEROED_SEGMENT_MAX: u64 = 1 << 30;

const _: () = assert!(
    ENTRY_BYTES_MAX + 8 <= RECORD_BODY_MAX,
    "every entry fits a record, with its LSN"
);
const _: () = assert!(
    WRITE_BATCH_BYTES >= READ_CHUNK_BYTES,
    "a session writes at least what it reads at once"
);
const _: () = assert!(
    REVERSED_FIRST_SHARE >= 2,
    "early reversals take at most half of a table"
);
const _: () = assert!(
    SHARDS_MAX <= u32::MAX as usize,
    "shard indexes are logged as u32"
);
const _: () = assert!(
    REPLAY_BATCH * REPLAY_BATCHES_QUEUED <= 1 << 20,
    "replay holds at most a million entries per shard in flight"
);

/// Limits of the running switch; see `config/switch.toml` for what each one bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub connections_max: usize,
    pub inflight_per_connection: usize,
    pub idle_timeout_seconds: u64,
    pub mailbox_capacity: usize,
    pub idempotency_entries_max: usize,
    pub idempotency_retention_seconds: u64,
    /// Answers the idempotency table let go of early, kept on disk (0: none kept).
    pub idempotency_archive_entries_max: u64,
    pub shutdown_drain_seconds: u64,
    /// A connection whose peer takes longer than this to accept a write is closed.
    pub write_timeout_seconds: u64,
    /// How long a retransmission waits for its original's decision before it is answered 91.
    pub retransmission_wait_seconds: u64,
    /// Retransmissions that may wait for one undecided request; more are answered 91.
    pub retransmission_waiters_max: usize,
    /// Recent decisions kept for operators (the admin API's explanations and histories).
    pub decisions_kept: usize,
}
