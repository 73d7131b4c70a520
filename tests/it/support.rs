//! Shared helpers: run a config through the engine into memory, and compare against golden files.

use std::path::{Path, PathBuf};

use faultline::config::Config;
use faultline::sink::{JsonlSink, SharedBuf, Sink};
use faultline::source::DeadLetters;
use faultline::{app, pipeline};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repo root").to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// The engine's output for a config, as JSON lines: (anomaly events, root-cause reports).
pub struct Output {
    pub anomalies: String,
    pub reports: String,
    pub summary: faultline::metrics::RunSummary,
}

pub fn load(fixture_name: &str, env: &[(&str, &str)]) -> Config {
    let path = fixture(fixture_name);
    let text = std::fs::read_to_string(&path).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_layers(Some((&path.display().to_string(), &text)), env).unwrap()
}

pub fn run(cfg: &Config) -> Output {
    let (mut source, graph) = app::build_source(cfg).unwrap();
    let (a, r) = (SharedBuf::default(), SharedBuf::default());
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(JsonlSink::new("anomalies", Box::new(a.clone()), true, false)),
        Box::new(JsonlSink::new("reports", Box::new(r.clone()), false, true)),
    ];
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    let summary = pipeline::run(cfg, source.as_mut(), graph, sinks, &mut dead).unwrap();
    Output {
        anomalies: String::from_utf8(a.contents()).unwrap(),
        reports: String::from_utf8(r.contents()).unwrap(),
        summary,
    }
}

/// Compares `actual` with `tests/golden/<name>`; with `UPDATE_GOLDEN=1` rewrites the file instead.
pub fn check(name: &str, actual: &str) {
    let path = repo_root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1 to create it", path.display()));
    if expected != actual {
        let (el, al): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        let first = el.iter().zip(&al).position(|(e, a)| e != a).unwrap_or(el.len().min(al.len()));
        panic!(
            "{} differs from the engine's output ({} vs {} lines); first difference at line {}:\n  expected: {}\n  actual:   {}\n\
             If the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff.",
            path.display(),
            el.len(),
            al.len(),
            first + 1,
            el.get(first).unwrap_or(&"<end>"),
            al.get(first).unwrap_or(&"<end>")
        );
    }
}

/// 2026-03-08T07:00:00Z: 2 a.m. in New York, when its clocks go forward from UTC−5 to UTC−4.
pub const NEW_YORK_DST_2026: i64 = 1_772_953_200_000;

/// 2026-03-17T18:00:00Z (2 p.m. in New York, a week after the change): an hour for the requests to surge in.
pub const NEW_YORK_SURGE: std::ops::Range<i64> = 1_773_770_400_000..1_773_774_000_000;

/// Whether an event at `t` (ms) belongs to the [`NEW_YORK_SURGE`]: in its hour or the 10 minutes after (M-of-N).
pub fn in_new_york_surge(t: i64) -> bool {
    (NEW_YORK_SURGE.start..NEW_YORK_SURGE.end + 600_000).contains(&t)
}

/// A business day's request rate on New York's clock at `t` (ms since 1970, UTC), times `scale`: 100 at night, a ramp
/// to 1000 from 7 to 9 a.m., 1000 through the working day, down to 100 from 5 to 8 p.m., every day (no weekends);
/// 3 % noise from `noise` (a uniform draw in [0, 1)). The clock's offset is written out (UTC−5 before
/// [`NEW_YORK_DST_2026`], UTC−4 from it; valid from February to October 2026), independent of any time zone library.
pub fn new_york_business_day(t: i64, scale: f64, noise: f64) -> f64 {
    let offset_h = if t < NEW_YORK_DST_2026 { -5 } else { -4 };
    let local_ms = (t + offset_h * 3_600_000).rem_euclid(86_400_000);
    let h = local_ms as f64 / 3_600_000.0;
    let base = match h {
        h if h < 7.0 => 100.0,
        h if h < 9.0 => 100.0 + 450.0 * (h - 7.0),
        h if h < 17.0 => 1000.0,
        h if h < 20.0 => 1000.0 - 300.0 * (h - 17.0),
        _ => 100.0,
    };
    scale * base * (1.0 + 0.06 * (noise - 0.5))
}
