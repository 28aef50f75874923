//! The ledger: shards, each the single owner of a disjoint set of accounts.
//!
//! - [`shard`]: the plain shard logic (accounts, holds, postings, completions, reversals,
//!   expiry) and its image for snapshots. **It does no I/O** and imports neither actix nor
//!   tokio: the money rules are tested and benchmarked alone.
//! - [`cold`]: the transactions beyond a shard's hot window, on disk (fjall), behind the
//!   shard's [`ColdTier`]; derived from the log, rolled back to a snapshot's version at
//!   recovery.
//! - [`fetch`]: reads of the store off the shard's thread, and the requests that wait for
//!   them.
//! - [`actor`]: the shard actor: reserve a place in the log, apply, submit the record with
//!   the waiting answer; expiry steps; its part of snapshots.

pub mod actor;
pub mod cold;
pub mod fetch;
pub mod parted;
pub mod shard;

pub use shard::{
    Account, ColdReader, ColdState, ColdTier, Expiry, ExpiryStep, LedgerShard, Part, Queue, Record,
    ShardImage, ShardLimits, Span, State, reshard, shard_of,
};
