//! The switch engine: domain, actors, ledger, configuration. The `switch` binary is `main.rs`.
#![forbid(unsafe_code)]

pub mod actors;
pub mod config;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod iso;
pub mod recovery;
pub mod risk;
pub mod routing;
pub mod server;
pub mod session;
pub mod snapshotter;
pub mod wal;
