//! Wall-clock time as stored: unix seconds.

/// Seconds since the unix epoch; 0 if the clock is before it (never fails).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
