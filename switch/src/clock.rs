//! The wall clock, read in one place. Whatever time changes in the ledger is taken from here
//! once and then travels in the WAL record, so replay never reads the clock.

/// Seconds since 1970-01-01 UTC (0 if the clock is before it).
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since 1970-01-01 UTC (0 if the clock is before it), for windows finer than a
/// second (risk velocity).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
