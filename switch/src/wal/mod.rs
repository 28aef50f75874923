//! The write-ahead log: every decision of the ledger is on stable storage before its answer is
//! sent (DESIGN §3.3).
//!
//! - [`format`]: the on-disk format, byte by byte.
//! - [`scan`]: reading a log back: verification, torn tails, corruption.
//! - [`snapshot`]: snapshot files, and pruning the log behind them.
//! - [`snapshotter`]: the thread that gathers every shard's image and writes the snapshot.
//! - [`writer`]: the writer thread with group commit.

pub mod format;
pub mod scan;
pub mod snapshot;
pub mod snapshotter;
pub mod writer;
