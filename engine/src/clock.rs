//! The only module that reads wall time (and the process's CPU time and the CPU's energy counters), plus event-time
//! formatting and parsing.
//!
//! Models and incidents read event time only, so replaying the same input gives byte-identical output. Wall time, CPU
//! time and energy are used for throughput, latency and cost measurements, never for a decision.

use std::path::PathBuf;
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

/// CPU time this process has used so far, user and system, all threads (`getrusage(RUSAGE_SELF)`): what a run
/// costs in CPU, whatever the machine's other load. `None` where the platform does not say.
pub fn process_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `getrusage` writes one `rusage` through the pointer, which points to one, and keeps nothing.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: zeroed (a valid `rusage`: integers only) and then filled by the successful call.
        let usage = unsafe { usage.assume_init() };
        let time = |t: libc::timeval| {
            Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
        };
        Some(time(usage.ru_utime) + time(usage.ru_stime))
    }
    #[cfg(not(unix))]
    None
}

/// The CPU packages' energy counters (Linux powercap RAPL, `/sys/class/powercap/intel-rapl:N`, on Intel and AMD), read
/// at one instant: [`EnergyMeter::joules_since`] gives the energy used since. Package-wide: it counts every process
/// on the machine, so it measures a run only on an otherwise idle one. Often readable by root only.
#[derive(Debug, Clone)]
pub struct EnergyMeter {
    /// Each package's counter file, its wrap-around range and its reading, in microjoules.
    packages: Vec<(PathBuf, u64, u64)>,
}

impl EnergyMeter {
    /// Reads every package counter; `None` when there is none, or one cannot be read (the reason is not needed: the
    /// summary says energy was not measured).
    pub fn start() -> Option<Self> {
        Self::start_at(std::path::Path::new("/sys/class/powercap"))
    }

    fn start_at(root: &std::path::Path) -> Option<Self> {
        let mut packages = Vec::new();
        for entry in std::fs::read_dir(root).ok()?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Packages are `intel-rapl:N`; their sub-domains (`intel-rapl:N:M`) are parts of them.
            if name.strip_prefix("intel-rapl:").is_none_or(|n| n.contains(':')) {
                continue;
            }
            let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).ok()?.trim().parse::<u64>().ok();
            packages.push((entry.path().join("energy_uj"), read("max_energy_range_uj")?, read("energy_uj")?));
        }
        packages.sort();
        (!packages.is_empty()).then_some(Self { packages })
    }

    /// Joules used by the packages since [`EnergyMeter::start`] (one wrap-around of each counter allowed).
    pub fn joules_since(&self) -> Option<f64> {
        let mut uj = 0u64;
        for (path, range, start) in &self.packages {
            let now = std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok()?;
            uj += if now >= *start { now - start } else { range - start + now };
        }
        Some(uj as f64 / 1e6)
    }
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

/// Parses an RFC 3339 timestamp, in UTC (`2026-01-05T10:02:00Z`) or with its offset from UTC
/// (`2026-01-05T12:02:00+02:00`; `+0200` too), with a space or a lower-case `t` for `T`. A timestamp with no zone at
/// all is taken as UTC, as in `2015-09-01 13:45:00` (what a spreadsheet, or `pandas.to_csv` of naive times, writes).
/// Fractions of a millisecond are dropped.
///
/// Times in UTC (`Z`) or with no zone go through `humantime` (about 390 instructions a timestamp), offsets through
/// `chrono`'s RFC 3339 parser (about 530), and the looser forms (`+0200`, a lower-case `t`) through `chrono`'s format
/// strings (about 3,000: the format is read on every call). `humantime` is not given an offset: it refuses most, and
/// after a fraction of a second it drops them (`…00.250+02:00` read as UTC).
pub fn parse_time(s: &str) -> Result<TimeMs, String> {
    let text = s.trim();
    let b = text.as_bytes();
    // The zone is whatever follows the date and time (19 bytes) and a fraction of a second.
    let rest = b.get(19..).unwrap_or_default();
    let frac = match rest.first() {
        Some(b'.') => 1 + rest[1..].iter().take_while(|c| c.is_ascii_digit()).count(),
        _ => 0,
    };
    let zone = &rest[frac..];
    if !(zone.is_empty() || zone == b"Z") || b.get(10) == Some(&b't') {
        return parse_zoned(s, text, zone.is_empty());
    }
    let t = humantime::parse_rfc3339_weak(text).map_err(|e| format!("bad timestamp {s:?}: {e}"))?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).map_err(|_| format!("timestamp {s:?} out of range")),
        Err(e) => {
            i64::try_from(e.duration().as_millis()).map(|v| -v).map_err(|_| format!("timestamp {s:?} out of range"))
        }
    }
}

/// [`parse_time`] of a timestamp with an offset (or a `z`, or a `t` for `T`) by `chrono`; `zoneless`: nothing
/// follows the time.
fn parse_zoned(s: &str, text: &str, zoneless: bool) -> Result<TimeMs, String> {
    use chrono::{DateTime, NaiveDateTime};
    let bad = |e: chrono::ParseError| format!("bad timestamp {s:?}: {e}");
    // `t` for `T` (byte 10, after the date): ASCII, so bytes 10 and 11 are character boundaries.
    let upper;
    let text = if text.as_bytes().get(10) == Some(&b't') {
        upper = format!("{}T{}", &text[..10], &text[11..]);
        upper.as_str()
    } else {
        text
    };
    let spaced = text.as_bytes().get(10) == Some(&b' ');
    let ms = if zoneless {
        let format = if spaced { "%Y-%m-%d %H:%M:%S%.f" } else { "%Y-%m-%dT%H:%M:%S%.f" };
        NaiveDateTime::parse_from_str(text, format).map_err(bad)?.and_utc().timestamp_millis()
    } else if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        // RFC 3339 proper (`±hh:mm`): chrono's own parser, no format string.
        t.timestamp_millis()
    } else {
        let format = if spaced { "%Y-%m-%d %H:%M:%S%.f%#z" } else { "%Y-%m-%dT%H:%M:%S%.f%#z" };
        DateTime::parse_from_str(text, format).map_err(bad)?.timestamp_millis()
    };
    Ok(ms)
}

/// Wall-clock time as Unix milliseconds, for metadata such as report generation time in logs. Never used by models.
pub fn wall_ms() -> TimeMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as TimeMs).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn process_cpu_time_grows_with_work() {
        let before = process_cpu().expect("getrusage works on unix");
        let mut x = 1u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
            }
        }
        let used = process_cpu().unwrap() - before;
        assert!(used >= Duration::from_millis(20), "50 ms of busy work counted {used:?}");
    }

    #[test]
    fn energy_is_read_from_package_counters_and_wraps() {
        let root = std::env::temp_dir().join(format!("faultline-rapl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |dir: &str, file: &str, v: u64| {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join(file), format!("{v}\n")).unwrap();
        };
        assert!(EnergyMeter::start_at(&root).is_none(), "no counters: not measured");
        for (dir, at) in [("intel-rapl:0", 900), ("intel-rapl:1", 5_000), ("intel-rapl:0:0", 1)] {
            write(dir, "max_energy_range_uj", 1_000);
            write(dir, "energy_uj", at);
        }
        let meter = EnergyMeter::start_at(&root).unwrap();
        assert_eq!(meter.packages.len(), 2, "packages only, not their sub-domains");
        write("intel-rapl:0", "energy_uj", 100); // wrapped: 900 -> 1000 -> 100
        write("intel-rapl:1", "energy_uj", 5_300);
        assert_eq!(meter.joules_since(), Some(500e-6));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn round_trips_event_time() {
        let ms = parse_time("2026-01-05T10:02:00Z").unwrap();
        assert_eq!(fmt_time(ms), "2026-01-05T10:02:00.000Z");
        assert_eq!(parse_time("2026-01-05 10:02:00").unwrap(), ms);
        assert_eq!(fmt_hhmm(ms), "10:02");
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
    }

    /// RFC 3339's offsets from UTC, which exports from anywhere but UTC carry (Python's `isoformat()`, pandas), are
    /// the same instant as the UTC time; a timestamp with no zone is UTC; malformed ones name the text.
    #[test]
    fn timestamps_with_an_offset_are_the_same_instant_in_utc() {
        let utc = parse_time("2026-01-05T10:02:00Z").unwrap();
        for same in [
            "2026-01-05T10:02:00z",
            "2026-01-05t10:02:00Z",
            "2026-01-05 10:02:00Z",
            "2026-01-05T10:02:00+00:00",
            "2026-01-05T12:02:00+02:00",
            "2026-01-05 12:02:00+02:00",
            "2026-01-05T05:02:00-05:00",
            "2026-01-05T15:32:00+05:30",
            "2026-01-05T12:02:00+0200",
            "2026-01-04T23:02:00-11:00",
            "2026-01-05T10:02:00",
            "2026-01-05 10:02:00",
            "  2026-01-05T10:02:00Z  ",
        ] {
            assert_eq!(parse_time(same), Ok(utc), "{same}");
        }
        // After a fraction of a second too (`humantime` reads this one as UTC, dropping the offset).
        assert_eq!(parse_time("2026-01-05T12:02:00.250+02:00"), Ok(utc + 250));
        assert_eq!(parse_time("2026-01-05T08:02:00.250-02:00"), Ok(utc + 250));
        assert_eq!(parse_time("2026-01-05T10:02:00.123456789Z"), Ok(utc + 123));
        assert_eq!(parse_time("2026-01-05 10:02:00.5"), Ok(utc + 500));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Ok(0));
        for bad in [
            "2026-01-05T10:02:00+25:00",
            "2026-01-05T10:02:00+02:0",
            "2026-01-05T10:02:00CET",
            "2026-13-05T10:02:00Z",
            "2026-01-05T10:02",
            "2026-01-05",
            "2026-01-05T10:02:00Zjunk",
            "",
            "2026-01-05\u{e9}10:02:00",
        ] {
            let e = parse_time(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
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
