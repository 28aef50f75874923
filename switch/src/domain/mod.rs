//! The domain's vocabulary: cards, amounts, requests, decisions and response codes.
//!
//! **The domain does no I/O** and imports neither actix nor tokio, so it is tested and
//! benchmarked alone; so does the ledger's shard logic (`crate::ledger::shard`) built on it.

pub mod hash;
pub mod pan;
pub mod request;
pub mod response;

pub use pan::{CardToken, Pan, Tokenizer};
pub use request::{Kind, OriginalKey, Posting, Request, RequestIdentity, TxnKey};
pub use response::{Balances, Outcome, ResponseCode};

/// An amount in minor units of its currency (cents for USD). Never a float.
pub type Minor = u64;
