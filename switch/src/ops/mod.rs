//! Operations over HTTP: health, readiness and Prometheus metrics (the admin API to come).

pub mod admin;
pub mod http;
pub mod journal;
pub mod metrics;
