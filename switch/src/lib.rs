//! The switch engine. The `switch` binary is `main.rs`; README.md's code map says which room
//! holds what.
#![forbid(unsafe_code)]

pub mod acquirer;
pub mod clock;
pub mod config;
pub mod domain;
pub mod issuer;
pub mod ledger;
pub mod limits;
pub mod ops;
pub mod pipeline;
pub mod recovery;
pub mod risk;
pub mod routing;
pub mod server;
pub mod wal;
