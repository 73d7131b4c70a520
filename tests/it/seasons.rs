//! Seasonal profiles: on a civil clock (`detector.seasonal.timezone`), a daily pattern of local time keeps its phase
//! across a daylight-saving change; a season just found has a band of its own residuals; and the default week holds
//! a working day's ramps against a quiet weekend.

use faultline::config::Config;

use crate::support::{NEW_YORK_DST_2026, NEW_YORK_SURGE as SURGE, in_new_york_surge, new_york_business_day, run};

/// Five-minute points of one service's request rate on New York's business day over `[start, end)` (ms), `surge`
/// times its level in the [`SURGE`] hour, with weekends at 30 % of the day's swing where `weekends` (every day a
/// working day otherwise), replayed through `faultline run`'s pipeline from a JSON-lines file with the seasonal
/// profiles in `timezone`; returns the anomaly events' times (ms) and what they expected.
fn replay(timezone: &str, start: i64, end: i64, surge: f64, weekends: bool) -> Vec<(i64, f64)> {
    let dir = std::env::temp_dir().join(format!(
        "faultline-seasons-{}-{}-{start}",
        std::process::id(),
        timezone.replace('/', "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let points = dir.join("points.jsonl");
    let step = 300_000;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut lines = String::new();
    for t in (start..end).step_by(step) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let surge = if SURGE.contains(&t) { surge } else { 1.0 };
        let mut value = new_york_business_day(t, 1.0, (rng >> 11) as f64 / (1u64 << 53) as f64);
        if weekends && new_york_weekend(t) {
            value = 100.0 + (value - 100.0) * 0.3;
        }
        let value = surge * value;
        lines.push_str(&format!("{{\"time\":{t},\"service\":\"shop\",\"metric\":\"requests\",\"value\":{value}}}\n"));
    }
    std::fs::write(&points, lines).unwrap();
    let toml = format!(
        "[engine]\nshards = 1\n[source]\nkind = \"jsonl\"\npath = {:?}\n[detector.seasonal]\ntimezone = {timezone:?}\n\
         [[sinks]]\nkind = \"jsonl\"\npath = \"-\"\n",
        points.display().to_string()
    );
    let cfg = Config::from_layers(Some(("seasons.toml", &toml)), std::iter::empty()).unwrap();
    let out = run(&cfg);
    std::fs::remove_dir_all(&dir).unwrap();
    out.anomalies
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            (e["time_ms"].as_i64().unwrap(), e["expected"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn a_local_business_day_keeps_its_phase_across_daylight_saving_on_its_own_clock() {
    const WEEK: i64 = 7 * 86_400_000;
    // Events in the three weeks before the change, and after it apart from the surge's hour (and 10 minutes).
    let count = |events: &[(i64, f64)]| {
        let n = |f: &dyn Fn(i64) -> bool| events.iter().filter(|e| f(e.0)).count();
        (
            n(&|t| (NEW_YORK_DST_2026 - 3 * WEEK..NEW_YORK_DST_2026).contains(&t)),
            n(&|t| (NEW_YORK_DST_2026..NEW_YORK_DST_2026 + 3 * WEEK).contains(&t) && !in_new_york_surge(t)),
        )
    };
    // 2026-02-08 to 2026-03-29: New York's clocks go forward on 2026-03-08.
    let (start, end) = (1_770_508_800_000, 1_774_742_400_000);
    let (utc, local) = (replay("UTC", start, end, 3.0, false), replay("America/New_York", start, end, 3.0, false));
    eprintln!("events before the change and after it: UTC profiles {:?}, New York's {:?}", count(&utc), count(&local));
    // Learned, the season raises nothing in the weeks before the change on either clock.
    assert_eq!((count(&utc).0, count(&local).0), (0, 0));
    // In UTC every ramp comes an hour early from the change on, until the profile has learned it again.
    assert!(count(&utc).1 >= 20, "UTC profiles: {} events after the change", count(&utc).1);
    // On New York's clock nothing moved: no event after the change but the surge's, judged against the working day's
    // level (1000 at 2 p.m.; a profile out of phase or no season would expect something else).
    assert_eq!(count(&local).1, 0, "New York's profiles: events after the change outside the surge");
    let first = local.iter().find(|e| in_new_york_surge(e.0)).expect("the surge raises an event");
    assert!((first.1 - 1000.0).abs() < 50.0, "the surge's first event expected {}", first.1);
}

/// A service seen for the first time on 2026-03-12 surges to 160 % for the [`SURGE`] hour five days later, two or
/// three days after its daily season is found. Before the season its robust model saw the whole daily swing as
/// residuals, tens of sigmas; the normal band's calibration restarts with the season, so the surge, about 30 sigmas of
/// the season's own residuals, is outside the band for its whole hour (without the restart the band still held
/// those residuals, and the surge raised nothing).
#[test]
fn a_season_just_found_judges_a_surge_by_its_own_residuals() {
    let start = SURGE.start - 5 * 86_400_000 - 14 * 3_600_000;
    let events = replay("America/New_York", start, SURGE.end + 86_400_000, 1.6, false);
    let surge = events.iter().filter(|e| in_new_york_surge(e.0)).count();
    let learning = events.iter().filter(|e| e.0 < start + 86_400_000).count();
    eprintln!("events on the first day (learning the season): {learning}; in the surge's hour: {surge}");
    assert!(surge >= 8, "{surge} events in the surge's hour of 12 points");
}

/// Whether `t` (ms) falls on a Saturday or Sunday on New York's clock (UTC−5 before [`NEW_YORK_DST_2026`], UTC−4 from
/// it, as [`new_york_business_day`] reads it).
fn new_york_weekend(t: i64) -> bool {
    let offset_h = if t < NEW_YORK_DST_2026 { -5 } else { -4 };
    // 1970-01-01 was a Thursday: Monday is 0.
    let weekday = ((t + offset_h * 3_600_000).div_euclid(86_400_000) + 3).rem_euclid(7);
    weekday >= 5
}

/// A service on New York's business day with quiet weekends (at 30 % of the swing), from Monday 2026-02-09 for six
/// weeks, with the default profiles on New York's clock: the week (84 bins of two hours) holds the working days' ramps
/// and the weekends and becomes the season once it has seen one week, so the second weekend raises few events, and
/// from the fourth week on nothing is raised but the [`SURGE`] (a Tuesday, 2 p.m., 160 %), which is judged against the
/// working day's level. With the week at 48 bins of 3.5 hours (the defaults before) the ramps did not fit, the day
/// stayed the season, and every weekend raised events: about 52 a week (`benches/business-week.py`); with
/// `min-periods = 2` (the default before) the week could not be the season before the second weekend.
#[test]
fn the_default_week_holds_a_working_day_against_a_quiet_weekend() {
    const WEEK: i64 = 7 * 86_400_000;
    // Monday 2026-02-09, midnight in New York.
    let start = 1_770_613_200_000;
    assert!(!new_york_weekend(start) && new_york_weekend(start - 1), "a Monday's first minute");
    let events = replay("America/New_York", start, start + 6 * WEEK, 1.6, true);
    let later: Vec<_> = events.iter().filter(|e| e.0 >= start + 3 * WEEK && !in_new_york_surge(e.0)).collect();
    let surge: Vec<_> = events.iter().filter(|e| in_new_york_surge(e.0)).collect();
    let second = events.iter().filter(|e| (start + WEEK..start + 2 * WEEK).contains(&e.0)).count();
    eprintln!(
        "events in the first three weeks: {}, in the second: {second}; after them: {}; in the surge's hour: {}",
        events.iter().filter(|e| e.0 < start + 3 * WEEK).count(),
        later.len(),
        surge.len()
    );
    assert!(second < 40, "the second week, its weekend like the first: {second} events");
    assert!(
        later.is_empty(),
        "weeks 4 to 6 raised {} events outside the surge, the first at {}",
        later.len(),
        later[0].0
    );
    assert!(surge.len() >= 8, "{} events in the surge's hour of 12 points", surge.len());
    assert!((surge[0].1 - 1000.0).abs() < 50.0, "the surge's first event expected {}", surge[0].1);
}
