//! The only module that reads wall time, plus event-time formatting and parsing.
//!
//! Models and incidents read event time only, so replaying the same input gives byte-identical output. Wall time is
//! used for throughput and latency measurements, never for a decision.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::model::TimeMs;

/// A monotonic wall-clock instant, for measurements only.
#[inline]
pub fn now() -> Instant {
    Instant::now()
}

/// Nanoseconds elapsed since `t`, saturating.
#[inline]
pub fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The latest event time accepted: 9999-12-31T23:59:59.999Z, the last instant RFC 3339 text can express.
pub const MAX_TIME_MS: TimeMs = 253_402_300_799_999;

/// Event times must lie in 1970-01-01 ..= 9999-12-31 (Unix milliseconds `0..=MAX_TIME_MS`): sources reject others.
pub fn check_time(ms: TimeMs) -> Result<(), String> {
    if (0..=MAX_TIME_MS).contains(&ms) { Ok(()) } else { Err(format!("{ms} ms is outside 1970-01-01 .. 9999-12-31")) }
}

/// Formats event time as RFC 3339 UTC with milliseconds, e.g. `2026-01-05T10:02:00.000Z`. Sources only admit
/// times that [`check_time`] accepts; anything else is clamped into that range rather than panicking.
pub fn fmt_time(ms: TimeMs) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, MAX_TIME_MS) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Short `HH:MM` form of an event time, for terminal summaries.
pub fn fmt_hhmm(ms: TimeMs) -> String {
    let s = fmt_time(ms);
    s.get(11..16).unwrap_or(&s).to_string()
}

/// Parses an RFC 3339 timestamp, also accepting a space for `T` and a missing zone (taken as UTC), as in
/// `2015-09-01 13:45:00`.
pub fn parse_time(s: &str) -> Result<TimeMs, String> {
    let t = humantime::parse_rfc3339_weak(s.trim()).map_err(|e| format!("bad timestamp {s:?}: {e}"))?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).map_err(|_| format!("timestamp {s:?} out of range")),
        Err(e) => {
            i64::try_from(e.duration().as_millis()).map(|v| -v).map_err(|_| format!("timestamp {s:?} out of range"))
        }
    }
}

/// Wall-clock time as Unix milliseconds, for metadata such as report generation time in logs. Never used by models.
pub fn wall_ms() -> TimeMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as TimeMs).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_event_time() {
        let ms = parse_time("2026-01-05T10:02:00Z").unwrap();
        assert_eq!(fmt_time(ms), "2026-01-05T10:02:00.000Z");
        assert_eq!(parse_time("2026-01-05 10:02:00").unwrap(), ms);
        assert_eq!(fmt_hhmm(ms), "10:02");
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
    }

    #[test]
    fn out_of_range_times_are_rejected_and_never_panic() {
        assert!(check_time(0).is_ok() && check_time(MAX_TIME_MS).is_ok());
        assert!(check_time(-1).unwrap_err().contains("outside 1970-01-01"));
        assert!(check_time(MAX_TIME_MS + 1).is_err());
        assert_eq!(fmt_time(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt_time(i64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
