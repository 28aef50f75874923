//! The ledger: shards, each the single owner of a disjoint set of accounts.
//!
//! - [`shard`]: the plain shard logic (accounts, holds, postings, completions, reversals,
//!   expiry) and its image for snapshots. **It does no I/O** and imports neither actix nor
//!   tokio: the money rules are tested and benchmarked alone.
//! - [`actor`]: the shard actor: reserve a place in the log, apply, submit the record with
//!   the waiting answer; expiry steps; its part of snapshots.

pub mod actor;
pub mod shard;

pub use shard::{
    Account, Expiry, ExpiryStep, LedgerShard, Part, Record, ShardImage, ShardLimits, State,
    reshard, shard_of,
};
