//! Operations over HTTP: health and readiness now; metrics and the admin API to come.

pub mod http;
