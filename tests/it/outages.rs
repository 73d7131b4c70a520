//! An outage the series comes back from, through `faultline run`'s pipeline from a JSON-lines file: with the default
//! `[detector.level-shift] revert-within`, the return undoes the shift (counted in the run summary) and a burst after
//! it is caught; with `revert-within = "0s"` the outage is learned and hides the burst. A restart in the middle of
//! the outage (`engine.state-dir`) changes neither.

use faultline::config::Config;

use crate::support::run;

/// One-minute points of a queue's depth at 100 (pseudo-noise of ±2), +10 from minute 3,000 for 100 minutes, and a
/// burst of +12 for three minutes 40 minutes after the outage; replayed with `extra` TOML, stopped and started again
/// at minute `restart` with the models saved in a state directory, on `engine.backend` `backend`. Returns the number of
/// anomaly events at the burst (and the 3 minutes after it) and the shifts the runs undid.
pub(crate) fn replay_on(backend: &str, extra: &str, restart: Option<i64>) -> (usize, u64) {
    const END: i64 = 3_100;
    let tag = format!("{}-{backend}-{}-{}", std::process::id(), extra.len(), restart.unwrap_or(0));
    let dir = std::env::temp_dir().join(format!("faultline-outages-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state").display().to_string();
    let mut parts: Vec<(i64, i64)> = vec![(0, END + 60)];
    if let Some(at) = restart {
        parts = vec![(0, at), (at, END + 60)];
    }
    let (mut at_burst, mut reverted) = (0, 0);
    for (from, to) in parts {
        let (burst, undone) = replay_part(&dir, backend, extra, restart.map(|_| state.as_str()), from, to);
        at_burst += burst;
        reverted += undone;
    }
    std::fs::remove_dir_all(&dir).unwrap();
    (at_burst, reverted)
}

/// One run of [`replay_on`] over minutes `from..to`.
fn replay_part(
    dir: &std::path::Path,
    backend: &str,
    extra: &str,
    state: Option<&str>,
    from: i64,
    to: i64,
) -> (usize, u64) {
    const START: i64 = 3_000;
    const END: i64 = 3_100;
    let points = dir.join("points.jsonl");
    let mut lines = String::new();
    for i in from..to {
        let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let noise = ((h >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0;
        let outage = if (START..END).contains(&i) { 10.0 } else { 0.0 };
        let burst = if (END + 40..END + 43).contains(&i) { 12.0 } else { 0.0 };
        let (t, value) = (i * 60_000, 100.0 + noise + outage + burst);
        lines.push_str(&format!("{{\"time\":{t},\"service\":\"queue\",\"metric\":\"depth\",\"value\":{value}}}\n"));
    }
    std::fs::write(&points, lines).unwrap();
    let state = state.map(|d| format!("state-dir = {d:?}\n")).unwrap_or_default();
    let toml = format!(
        "{extra}[engine]\nshards = 1\nbackend = \"{backend}\"\n{state}[source]\nkind = \"jsonl\"\npath = {:?}\n[[sinks]]\nkind = \"jsonl\"\n\
         path = \"-\"\n",
        points.display().to_string()
    );
    let cfg = Config::from_layers(Some(("outages.toml", &toml)), std::iter::empty()).unwrap();
    let out = run(&cfg);
    let at_burst = out
        .anomalies
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["time_ms"].as_i64().unwrap() / 60_000)
        .filter(|m| (END + 40..END + 46).contains(m))
        .count();
    (at_burst, out.summary.shifts_reverted)
}

#[test]
fn an_outage_the_series_comes_back_from_hides_no_later_burst() {
    let replay = |extra, restart| replay_on("cpu", extra, restart);
    let (burst, reverted) = replay("", None);
    assert_eq!(reverted, 1, "the run summary counts the shift undone");
    assert!(burst > 0, "the burst 40 minutes after the outage is caught");
    let (burst, reverted) = replay("[detector.level-shift]\nrevert-within = \"0s\"\n", None);
    assert_eq!(reverted, 0);
    assert_eq!(burst, 0, "without revert-within the outage, learned, hides the burst");
}

/// Stopped 50 minutes into the outage and started again with the saved models: the model's record from before the
/// shift came back with them, so the series' return after the restart undoes the shift and the burst is caught.
#[test]
fn a_restart_inside_an_outage_still_undoes_it() {
    let (burst, reverted) = replay_on("cpu", "", Some(3_050));
    assert_eq!(reverted, 1, "the second run's summary counts the shift undone");
    assert!(burst > 0, "the burst 40 minutes after the outage is caught");
}
