//! The domain: cards, amounts, decisions and account state.
//!
//! **The domain does no I/O** and imports neither actix nor tokio, so it is tested and
//! benchmarked alone. The actors in `crate::actors` only move messages to and from it.

pub mod ledger;
pub mod pan;
pub mod request;
pub mod response;

pub use ledger::{Balances, LedgerShard, Outcome};
pub use pan::{CardToken, Pan, Tokenizer};
pub use request::{Kind, OriginalKey, Posting, Request, RequestIdentity, TxnKey};
pub use response::ResponseCode;

/// An amount in minor units of its currency (cents for USD). Never a float.
pub type Minor = u64;
