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

/// Formats event time as RFC 3339 UTC with milliseconds, e.g. `2026-01-05T10:02:00.000Z`.
pub fn fmt_time(ms: TimeMs) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
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
}
