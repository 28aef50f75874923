//! The parts of `loadtest` that other crates' tests use in-process: the issuer simulator.

pub mod sim;
