//! The `faultline` binary through its public interface: commands, config files, input files, exit codes.
//!
//! These live in the engine package, not in `tests/it`, because only here does Cargo give the binary's path
//! (`CARGO_BIN_EXE_faultline`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn faultline(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline")).args(args).current_dir(cwd).env_remove("RUST_LOG").output().unwrap()
}

/// Starts `faultline run --config run.toml` in `dir` with its standard input a pipe (a live stream), standard output
/// dropped and standard error to `stderr`.
fn run_on_stdin(dir: &Path, stderr: std::process::Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", "--config", "run.toml"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faultline-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `config` to `dir/run.toml`, runs `faultline run` on it in `dir` with its metrics to `out/metrics.json`,
/// checks it succeeded and returns the metrics.
fn run_config(dir: &Path, config: &str) -> serde_json::Value {
    std::fs::write(dir.join("run.toml"), config).unwrap();
    let out = faultline(&["run", "--config", "run.toml", "--metrics-out", "out/metrics.json"], dir);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/metrics.json")).unwrap()).unwrap()
}

#[test]
fn run_jsonl_file_dead_letters_malformed_lines_and_finds_the_fault() {
    let dir = scratch("jsonl");
    let cfg = dir.join("run.toml");
    let points = repo_root().join("tests/fixtures/points.jsonl");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"jsonl\"\npath = {:?}\n[graph]\nedges = [[\"frontend\", \"checkout\"], [\"checkout\", \"payments\"], [\"checkout\", \"cart\"]]\n\
             [rca]\nchanges = {:?}\n\
             [[sinks]]\nkind = \"jsonl\"\npath = \"out/events.jsonl\"\n[dead-letter]\npath = \"out/dead.jsonl\"\n",
            points.display().to_string(),
            repo_root().join("tests/fixtures/changes.jsonl").display().to_string()
        ),
    )
    .unwrap();
    let out = faultline(&["run", "--config", cfg.to_str().unwrap(), "--metrics-out", "out/metrics.json"], &dir);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let dead = std::fs::read_to_string(dir.join("out/dead.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["at"], "line 101");
    assert!(dead[0]["reason"].as_str().unwrap().contains("invalid JSON"));
    assert_eq!(dead[1]["at"], "line 202");
    assert!(dead[1]["reason"].as_str().unwrap().contains("field `service`"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["dead_letters"], 2);
    assert_eq!(metrics["points"], 1600, "every good line was processed");
    // The summary names what the seasonal learning ran on; scalar kernels mean a scalar seasonal learning too.
    let lanes = metrics["seasonal_lanes"].as_str().expect("the summary names the seasonal lanes");
    assert!(["avx2", "scalar"].contains(&lanes), "{lanes}");
    if metrics["kernel"] == "scalar" || !cfg!(target_arch = "x86_64") {
        assert_eq!(lanes, "scalar");
    }
    let events: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("out/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let report = events.iter().rfind(|e| e["kind"] == "root-cause").expect("a root-cause report");
    assert_eq!(report["status"], "closed");
    assert_eq!(report["candidates"][0]["service"], "payments", "{report:#}");
    assert_eq!(report["symptom"], "frontend");
    // The deploy two minutes before payments' onset is joined, and suggested (not acted on).
    assert_eq!(report["candidates"][0]["evidence"]["changes"][0]["description"], "payments v2.14.0");
    let suggestion = report["suggestion"].as_str().expect("a suggestion");
    assert!(suggestion.contains("rolling back the deploy of payments"), "{suggestion}");
    // Every version of the incident's report has the same id; versions count up.
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "root-cause" && e["incident_id"] == report["incident_id"])
        .map(|e| e["report_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    let first = events.iter().find(|e| e["kind"] == "anomaly").unwrap();
    assert_eq!(first["service"], "payments", "the root cause deviates first");
}

#[test]
fn demo_runs_on_the_embedded_default_and_reports_each_fault() {
    let dir = scratch("demo");
    let out = faultline(&["demo", "--out", "demo-out", "--report", "demo-out/report.html"], &dir);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("faults injected: top-1"), "{stdout}");
    assert_eq!(stdout.matches("== fault").count(), 12, "{stdout}");
    assert!(stdout.matches("HIT").count() >= 9, "too few hits:\n{stdout}");
    assert!(dir.join("demo-out/root-causes.jsonl").metadata().unwrap().len() > 0);
    // The report reads the simulator again: the same points, and every incident the run reported.
    let html = std::fs::read_to_string(dir.join("demo-out/report.html")).unwrap();
    let incidents = stdout.split_once("incidents: ").unwrap().1.split_once(' ').unwrap().0;
    assert!(html.contains(&format!("<h2>Incidents ({incidents})</h2>")), "{incidents}");
    let points = stdout.split_once("processed ").unwrap().1.split_once(' ').unwrap().0;
    assert!(html.contains(&format!("<tr><th>points</th><td class=\"n\">{points}</td></tr>")), "{points}");
    assert_eq!(charted(&html).len(), 12);
}

#[test]
fn check_config_reports_every_problem_and_exits_2() {
    let dir = scratch("badcfg");
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "[engine]\nqueue-depth = 0\n[detector]\nalpha = 2.0\nthreshold = nan\n[rca]\nmax-candidates = 0\n",
    )
    .unwrap();
    let out = faultline(&["check-config", cfg.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for needle in ["engine.queue-depth", "detector.alpha", "detector.threshold is NaN", "rca.max-candidates"] {
        assert!(err.contains(needle), "{needle} missing:\n{err}");
    }
    let out = faultline(&["check-config", repo_root().join("configs/jsonl-file.toml").to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn missing_input_file_is_a_clear_error() {
    let dir = scratch("missing");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "[source]\nkind = \"jsonl\"\npath = \"no/such/file.jsonl\"\n").unwrap();
    let out = faultline(&["run", "--config", cfg.to_str().unwrap()], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no/such/file.jsonl"), "{err}");
    // The system's reason once, not again as the error's source.
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}

/// `engine.max-series`: the third series of a file is refused (its points counted, not scored), the log says so
/// once, and the two series with a model are counted as such.
/// A JSON-lines point of `service`'s latency at minute `m` of 2026-01-05.
fn latency_point(service: &str, m: i64, value: usize) -> String {
    let t = 1_767_571_200_000i64 + m * 60_000;
    format!("{{\"time\": {t}, \"service\": \"{service}\", \"metric\": \"latency\", \"value\": {value}}}\n")
}

#[test]
fn the_series_limit_refuses_series_past_it_and_counts_their_points() {
    let dir = scratch("max-series");
    let mut points = String::new();
    for m in 0..50 {
        for (k, (service, from)) in [("a", 0), ("b", 0), ("c", 10)].into_iter().enumerate() {
            if m >= from {
                points.push_str(&latency_point(service, m, 100 + k));
            }
        }
    }
    std::fs::write(dir.join("points.jsonl"), points).unwrap();
    let base = "[source]\nkind = \"jsonl\"\npath = \"points.jsonl\"\n";
    // One shard: the first two series take the places, the third (from minute 10) is refused.
    std::fs::write(dir.join("run.toml"), format!("[engine]\nshards = 1\nmax-series = 2\n{base}")).unwrap();
    let out = faultline(&["run", "--config", "run.toml", "--metrics-out", "out/metrics.json"], &dir);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.matches("Series limit reached").count(), 1, "{err}");
    assert!(err.contains("refused by the series limit: 40"), "{err}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/metrics.json")).unwrap()).unwrap();
    assert_eq!((m["series"].as_u64(), m["series_limit_refused_points"].as_u64()), (Some(2), Some(40)), "{m}");
    assert_eq!(m["points"].as_u64(), Some(140));
    // Two shards share the limit: two series in all, whichever came first (shards run in parallel).
    let m = run_config(&dir, &format!("[engine]\nshards = 2\nmax-series = 2\n{base}"));
    assert_eq!(m["series"].as_u64(), Some(2), "{m}");
    assert!(matches!(m["series_limit_refused_points"].as_u64(), Some(40 | 50)), "{m}");
    let m = run_config(&dir, &format!("[engine]\nshards = 2\n{base}"));
    assert_eq!((m["series"].as_u64(), m["series_limit_refused_points"].as_u64()), (Some(3), Some(0)), "no limit: {m}");
    // Text logs are not coloured off a terminal; JSON logs are one object a line.
    assert!(!err.contains('\u{1b}'), "escape codes in logs to a pipe: {err:?}");
    std::fs::write(dir.join("run.toml"), format!("[engine]\nshards = 1\nmax-series = 2\n{base}")).unwrap();
    let out = faultline(&["run", "--config", "run.toml", "--log-format", "json"], &dir);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let logs: Vec<serde_json::Value> =
        text(&out.stderr).lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(logs.len(), 1, "{}", text(&out.stderr));
    assert_eq!(logs[0]["level"], "WARN");
    assert_eq!(logs[0]["fields"]["service"], "c");
    assert!(logs[0]["fields"]["message"].as_str().unwrap().starts_with("Series limit reached"));
    // A log filter that does not parse is an error, not silently "warn".
    let out = faultline(&["--log", "faultline=nonsense", "default-config"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid log filter"), "{}", text(&out.stderr));
}

/// `engine.series-idle` forgets series that have gone quiet: their places under `engine.max-series` go to new
/// series, and the summary and metrics count them.
#[test]
fn series_quiet_past_the_idle_time_are_forgotten_and_their_places_reused() {
    let dir = scratch("series-idle");
    let mut points = String::new();
    // a and b for an hour; then, two hours after, c and d for an hour.
    for (services, minutes) in [(["a", "b"], 0..60), (["c", "d"], 200..260)] {
        for m in minutes {
            for (k, service) in services.iter().enumerate() {
                points.push_str(&latency_point(service, m, 100 + k));
            }
        }
    }
    std::fs::write(dir.join("points.jsonl"), points).unwrap();
    // One minute a batch: the shard looks for quiet series after each batch.
    let base = "[source]\nkind = \"jsonl\"\npath = \"points.jsonl\"\n";
    let engine = "[engine]\nshards = 1\nbatch-size = 2\nmax-series = 2\n";
    std::fs::write(dir.join("run.toml"), format!("{engine}series-idle = \"1h\"\n{base}")).unwrap();
    let out = faultline(
        &["run", "--config", "run.toml", "--metrics-out", "out/metrics.json", "--report", "out/r.html"],
        &dir,
    );
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("series forgotten after going quiet (engine.series-idle): 2"), "{err}");
    let html = std::fs::read_to_string(dir.join("out/r.html")).unwrap();
    assert!(html.contains("series forgotten after going quiet</th><td class=\"n\">2<"), "the report's summary row");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/metrics.json")).unwrap()).unwrap();
    // c's and d's first points are refused: a and b are forgotten after the batch that moves the time past them.
    let counts = |m: &serde_json::Value| {
        ["series", "series_forgotten", "series_limit_refused_points"].map(|f| m[f].as_u64().unwrap())
    };
    assert_eq!(counts(&m), [2, 2, 2], "{m}");
    // The event time is the instance's: four shards forget the same series after the same batch. The shards run
    // apart, so how many of c's and d's points come before a's and b's places are given back varies (none to a few:
    // a shard may forget after that batch before or after another scores its part of it).
    let m = run_config(&dir, &format!("{}series-idle = \"1h\"\n{base}", engine.replace("shards = 1", "shards = 4")));
    let [series, forgotten, refused] = counts(&m);
    assert!((series, forgotten) == (2, 2) && refused < 120, "four shards: {m}");
    // Without it, a and b keep their places and c and d are refused throughout.
    let m = run_config(&dir, &format!("{engine}{base}"));
    assert_eq!(counts(&m), [2, 0, 120], "{m}");
    // A positive idle time under a second is an error.
    std::fs::write(dir.join("bad.toml"), "[engine]\nseries-idle = \"10ms\"\n").unwrap();
    let out = faultline(&["check-config", "bad.toml"], &dir);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("engine.series-idle must be 0s"), "{}", text(&out.stderr));
}

/// `engine.state-dir`: a run stopped and started again on the rest of its input goes on from the models it saved,
/// publishing the anomaly events one run over the whole input publishes; without the saved models it does not. A
/// damaged file stops the start with its reason.
#[test]
fn a_restart_with_saved_models_goes_on_as_one_run_over_the_whole_input() {
    let dir = scratch("state-dir");
    let point = |service: &str, metric: &str, m: i64, v: f64| {
        let t = 1_767_571_200_000i64 + m * 60_000;
        format!("{{\"time\": {t}, \"service\": \"{service}\", \"metric\": \"{metric}\", \"value\": {v}}}\n")
    };
    let (mut first, mut second) = (String::new(), String::new());
    for m in 0..600i64 {
        let wobble = (m * 7919 % 13) as f64 / 6.0 - 1.0;
        // a's latency and errors rise together at minute 450 for 20 minutes.
        let fault = (450..470).contains(&m);
        let lines = point("a", "latency", m, 100.0 + 2.0 * wobble + if fault { 80.0 } else { 0.0 })
            + &point("a", "errors", m, 5.0 + 0.2 * wobble + if fault { 4.0 } else { 0.0 })
            + &point("b", "latency", m, 40.0 - wobble);
        if m < 400 { &mut first } else { &mut second }.push_str(&lines);
    }
    std::fs::write(dir.join("first.jsonl"), &first).unwrap();
    std::fs::write(dir.join("second.jsonl"), &second).unwrap();
    std::fs::write(dir.join("whole.jsonl"), first + &second).unwrap();
    let config = |input: &str, state: bool, events: &str| {
        let engine = if state { "[engine]\nshards = 2\nstate-dir = \"state\"\n" } else { "[engine]\nshards = 2\n" };
        format!(
            "{engine}[source]\nkind = \"jsonl\"\npath = \"{input}\"\n[[sinks]]\nkind = \"jsonl\"\npath = \"out/{events}\"\n"
        )
    };
    let anomalies = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("out").join(file)).unwrap();
        let mut lines: Vec<String> =
            text.lines().filter(|l| l.contains("\"kind\":\"anomaly\"")).map(str::to_owned).collect();
        // Events of one time come in batch order, and the halves are batched apart from the whole: compare as sets.
        lines.sort();
        lines
    };
    run_config(&dir, &config("whole.jsonl", false, "whole.jsonl"));
    let whole: Vec<String> = anomalies("whole.jsonl");
    let cut = 1_767_571_200_000i64 + 400 * 60_000;
    let time = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["time_ms"].as_i64().unwrap();
    let whole_after: Vec<&String> = whole.iter().filter(|l| time(l) >= cut).collect();
    assert!(whole_after.len() >= 2, "the fault raises events: {whole:?}");

    run_config(&dir, &config("first.jsonl", true, "first.jsonl"));
    assert!(dir.join("state/models.bin").exists(), "saved at the stop");
    // `faultline models` describes the file, and lists the series asked about.
    let out = faultline(&["models", "state", "--series", "a", "--json"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (d["series"].as_u64(), d["services"].as_u64(), d["robust"].as_u64()),
        (Some(3), Some(2), Some(3)),
        "{d}"
    );
    let rows: Vec<(&str, u64)> = d["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["series"].as_str().unwrap(), r["points"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, [("a/errors", 400), ("a/latency", 400)]);
    let level = d["rows"][1]["level"].as_f64().unwrap();
    assert!((level - 100.0).abs() < 2.0, "a/latency's normal is about 100: {level}");
    let out = faultline(&["models", "state"], &dir);
    assert!(
        text(&out.stdout).contains("3 series of 2 services: 0 on cold-start rules, 3 on the robust model"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(dir.join("run.toml"), config("second.jsonl", true, "second.jsonl")).unwrap();
    let out = faultline(&["run", "--config", "run.toml", "--metrics-out", "out/metrics.json"], &dir);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("series that took theirs back: 3, files written: 1"), "{err}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/metrics.json")).unwrap()).unwrap();
    assert_eq!((m["series_restored"].as_u64(), m["late_points"].as_u64()), (Some(3), Some(0)), "{m}");
    let resumed = anomalies("second.jsonl");
    assert_eq!(resumed.iter().collect::<Vec<_>>(), whole_after, "the restart publishes what one run does");

    // Without the saved models the second part starts cold and publishes something else.
    run_config(&dir, &config("second.jsonl", false, "cold.jsonl"));
    assert_ne!(anomalies("cold.jsonl"), resumed);

    // A damaged file: the start fails, naming the file and what is wrong.
    std::fs::write(dir.join("state/models.bin"), b"not models").unwrap();
    std::fs::write(dir.join("run.toml"), config("second.jsonl", true, "second.jsonl")).unwrap();
    let out = faultline(&["run", "--config", "run.toml"], &dir);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("models.bin") && err.contains("not a Faultline models file"), "{err}");
    // state-every without a directory, or under a second, is a configuration error; the GPU backend with saved
    // models is not (tests/it/gpu.rs runs it).
    std::fs::write(dir.join("bad.toml"), "[engine]\nstate-every = \"10ms\"\n").unwrap();
    let out = faultline(&["check-config", "bad.toml"], &dir);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("engine.state-every must be 0s"), "{err}");
    assert!(err.contains("engine.state-every needs engine.state-dir"), "{err}");
    std::fs::write(dir.join("gpu.toml"), "[engine]\nbackend = \"gpu\"\nstate-dir = \"state\"\n").unwrap();
    let out = faultline(&["check-config", "gpu.toml"], &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `engine.state-every`: a run killed (SIGKILL, no stop) keeps the models of its last periodic save, and the next run
/// takes them back.
#[test]
fn a_crash_keeps_the_models_of_the_last_periodic_save() {
    use std::io::Write as _;
    let dir = scratch("state-every");
    let line = |m: i64| {
        let v = if m >= 380 { 500.0 } else { 100.0 + (m * 7 % 11) as f64 / 5.0 };
        let t = 1_767_571_200_000 + m * 60_000;
        format!("{{\"time\": {t}, \"service\": \"a\", \"metric\": \"latency\", \"value\": {v}}}\n")
    };
    let engine = "[engine]\nstate-dir = \"state\"\nstate-every = \"1s\"\n";
    let cfg = format!("{engine}[source]\nkind = \"jsonl\"\npath = \"-\"\n");
    std::fs::write(dir.join("run.toml"), cfg).unwrap();
    let mut child = run_on_stdin(&dir, std::process::Stdio::null());
    let mut stdin = child.stdin.take().unwrap();
    for m in 0..300 {
        stdin.write_all(line(m).as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    // A second on, the next batch is saved after it is scored.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    stdin.write_all(line(300).as_bytes()).unwrap();
    stdin.flush().unwrap();
    let saved = dir.join("state/models.bin");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !saved.exists() {
        assert!(std::time::Instant::now() < deadline, "no periodic save");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let rest: String = (301..400).map(line).collect();
    std::fs::write(dir.join("rest.jsonl"), rest).unwrap();
    let cfg = format!("{engine}[source]\nkind = \"jsonl\"\npath = \"rest.jsonl\"\n");
    let m = run_config(&dir, &cfg);
    let counts = ["series_restored", "late_points", "points"].map(|f| m[f].as_u64().unwrap());
    assert_eq!(counts, [1, 0, 99], "the series resumes after its last saved point: {m}");
    assert!(m["anomalies"].as_u64().unwrap() > 0, "the jump at minute 380 is found: {m}");
}

/// `source.max-future` dead-letters a point stamped far past the clock, which would otherwise make every later point
/// of its series late; the report's second read leaves it out too.
#[test]
fn a_point_stamped_far_in_the_future_is_a_dead_letter_not_the_end_of_its_series() {
    let dir = scratch("max-future");
    let mut points = String::new();
    for m in 0..30 {
        points.push_str(&latency_point("a", m, 100));
        if m == 10 {
            // A producer whose clock jumped to 2100.
            points.push_str(&latency_point("a", 38_914_560, 100));
        }
    }
    std::fs::write(dir.join("points.jsonl"), points).unwrap();
    let base = "[source]\nkind = \"jsonl\"\npath = \"points.jsonl\"\n[dead-letter]\npath = \"out/dead.jsonl\"\n";
    let counts = |m: &serde_json::Value| ["points", "late_points", "dead_letters"].map(|f| m[f].as_u64().unwrap());
    // Accepted, the point makes the series' 19 later points late.
    assert_eq!(counts(&run_config(&dir, base)), [31, 19, 0]);
    let cfg = base.replace("path = \"points.jsonl\"\n", "path = \"points.jsonl\"\nmax-future = \"10m\"\n");
    std::fs::write(dir.join("run.toml"), &cfg).unwrap();
    let out = faultline(
        &["run", "--config", "run.toml", "--metrics-out", "out/metrics.json", "--report", "out/r.html"],
        &dir,
    );
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/metrics.json")).unwrap()).unwrap();
    assert_eq!(counts(&m), [30, 0, 1], "{m}");
    let dead = std::fs::read_to_string(dir.join("out/dead.jsonl")).unwrap();
    let dead: serde_json::Value = serde_json::from_str(dead.trim()).unwrap();
    let reason = dead["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("field `time`: 2100-")
            && reason.ends_with("ahead of this machine's clock (source.max-future = 10m)"),
        "{reason}"
    );
    assert_eq!((dead["at"].as_str(), dead["source"].as_str()), (Some("batch 1 point 12"), Some("jsonl points.jsonl")));
    let raw: serde_json::Value = serde_json::from_str(dead["raw"].as_str().unwrap()).unwrap();
    assert_eq!((raw["service"].as_str(), raw["value"].as_f64()), (Some("a"), Some(100.0)), "{raw}");
    // The report's span is the points the run scored: 2026, not 2100.
    let html = std::fs::read_to_string(dir.join("out/r.html")).unwrap();
    assert!(!html.contains("2100-"), "the refused point is charted");
}

/// Standard input is a live stream: its points are scored as they come (the events of a jump are written while the
/// input is still open), and SIGTERM ends the run cleanly: the points read so far processed, the sinks flushed, the
/// summary printed, exit 0.
#[test]
fn standard_input_is_scored_as_it_comes_and_sigterm_ends_the_run_cleanly() {
    use std::io::Write as _;
    let dir = scratch("stdin");
    let cfg = "[source]\nkind = \"jsonl\"\npath = \"-\"\n[[sinks]]\nkind = \"jsonl\"\npath = \"out/events.jsonl\"\n";
    std::fs::write(dir.join("run.toml"), cfg).unwrap();
    let mut child = run_on_stdin(&dir, std::process::Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    for m in 0..300i64 {
        let v = if m >= 280 { 500.0 } else { 100.0 + (m * 7 % 11) as f64 / 5.0 };
        let t = 1_767_571_200_000 + m * 60_000;
        writeln!(stdin, "{{\"time\": {t}, \"service\": \"a\", \"metric\": \"latency\", \"value\": {v}}}").unwrap();
    }
    stdin.flush().unwrap();
    let events = dir.join("out/events.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&events).is_ok_and(|t| t.contains("\"kind\":\"anomaly\"")) {
        assert!(std::time::Instant::now() < deadline, "no event while the input is open");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert!(err.contains("processed 300 points of 1 series"), "{err}");
}

#[test]
fn schema_command_prints_the_schema() {
    let out = faultline(&["schema", "root-cause"], &repo_root());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["properties"]["schema"]["const"], "faultline.root-cause.v1");
}

/// The low-volume guard through a config file: the same error spike is silenced at 2 requests per second and
/// reported at 50, and the run's metrics count what the guard silenced.
#[test]
fn low_volume_guard_from_config_silences_errors_of_a_quiet_service() {
    let run_at = |rate: f64| {
        let dir = scratch(&format!("low-volume-{rate}"));
        let mut lines = String::new();
        for i in 0..300i64 {
            let t = 1_767_225_600_000 + i * 60_000;
            let wobble = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
            let err = if i >= 280 { 0.4 } else { 0.01 + 0.004 * wobble };
            lines.push_str(&format!(
                "{{\"service\":\"api\",\"metric\":\"request_rate\",\"time\":{t},\"value\":{}}}\n",
                rate * (1.0 + 0.05 * wobble)
            ));
            lines
                .push_str(&format!("{{\"service\":\"api\",\"metric\":\"error_rate\",\"time\":{t},\"value\":{err}}}\n"));
        }
        std::fs::write(dir.join("points.jsonl"), lines).unwrap();
        let metrics = run_config(
            &dir,
            "[source]\nkind = \"jsonl\"\npath = \"points.jsonl\"\n\
             [[detector.overrides]]\nmetric = \"error_rate\"\ndirection = \"up\"\nmin-volume = 5.0\n\
             [[sinks]]\nkind = \"jsonl\"\npath = \"out/events.jsonl\"\n",
        );
        let events = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
        let errors = events.lines().filter(|l| l.contains("\"kind\":\"anomaly\"") && l.contains("error_rate")).count();
        (errors, metrics["suppressed_low_volume"].as_u64().unwrap())
    };
    let (errors, silenced) = run_at(2.0);
    assert_eq!(errors, 0, "2 req/s is under min-volume 5");
    assert!(silenced >= 19, "{silenced}");
    let (errors, silenced) = run_at(50.0);
    assert!(errors >= 19 && silenced == 0, "{errors} events, {silenced} silenced");
}

/// Writes `points.jsonl` into `dir`: 800 one-minute points of worker's `queue_depth` from 2026-01-01T00:00:00Z, at
/// 100 but for minutes 600 to 699, when the queue backs up to 130. Returns the first point's time.
fn queue_outage(dir: &Path) -> i64 {
    let t0 = 1_767_225_600_000i64;
    let mut lines = String::new();
    for i in 0..800i64 {
        let wobble = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        let depth = if (600..700).contains(&i) { 130.0 } else { 100.0 } + 4.0 * wobble;
        lines.push_str(&format!(
            "{{\"service\":\"worker\",\"metric\":\"queue_depth\",\"time\":{},\"value\":{depth}}}\n",
            t0 + i * 60_000
        ));
    }
    std::fs::write(dir.join("points.jsonl"), lines).unwrap();
    t0
}

/// A learning pause through a config file: an outage inside the pause window is flagged to its end and its events
/// say learning was paused; after the window the series' return to its old level is normal (the outage was not
/// learned); and the run's metrics count the paused points.
#[test]
fn learning_pause_from_config_keeps_an_outage_out_of_the_model() {
    let dir = scratch("learning-pause");
    // The queue backs up inside the pause (10:00 to 11:40).
    let t0 = queue_outage(&dir);
    let metrics = run_config(
        &dir,
        "[source]\nkind = \"jsonl\"\npath = \"points.jsonl\"\n\
         [[detector.learning-pauses]]\nservice = \"worker\"\nmetric = \"queue_*\"\n\
         from = \"2026-01-01T10:00:00Z\"\nuntil = \"2026-01-01T11:40:00Z\"\n\
         [[sinks]]\nkind = \"jsonl\"\npath = \"out/events.jsonl\"\n",
    );
    assert_eq!(metrics["learning_paused_points"], 100);
    // The run's cost is measured (its CPU time; energy only where RAPL counters can be read).
    assert!(metrics["cpu_s_per_million_points"].as_f64().is_some_and(|c| c.is_finite() && c >= 0.0), "{metrics}");
    let anomalies: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("out/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "anomaly")
        .collect();
    let minute = |e: &serde_json::Value| (e["time_ms"].as_i64().unwrap() - t0) / 60_000;
    let paused: Vec<i64> = anomalies.iter().filter(|e| e["evidence"]["learning_paused"] == true).map(&minute).collect();
    assert!(paused.len() >= 95, "the outage is flagged to its end: {paused:?}");
    assert!(paused.iter().all(|m| (600..700).contains(m)), "{paused:?}");
    assert!(paused.contains(&699), "{paused:?}");
    let after: Vec<i64> = anomalies.iter().map(minute).filter(|&m| m >= 702).collect();
    assert!(after.is_empty(), "the return to 100 is normal: events at minutes {after:?}");
}

/// Operator feedback from a file: a first run flags a queue backing up; an operator accepts its first event; a
/// second run with `detector.feedback.file` holds the series' learning through the outage, so it is flagged to its
/// end and the return to normal is normal, where without the verdict the outage becomes the new normal. A malformed
/// verdict stops the run with an error naming the line and the field.
#[test]
fn an_accepted_event_in_a_feedback_file_keeps_the_outage_out_of_the_model() {
    let dir = scratch("feedback");
    let t0 = queue_outage(&dir);
    let config = "[source]\nkind = \"jsonl\"\npath = \"points.jsonl\"\n\
                  [detector.feedback]\nfile = \"feedback.jsonl\"\n\
                  [[sinks]]\nkind = \"jsonl\"\npath = \"out/events.jsonl\"\n";
    let anomalies = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("out/events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["kind"] == "anomaly")
            .collect()
    };
    let minute = |e: &serde_json::Value| (e["time_ms"].as_i64().unwrap() - t0) / 60_000;

    std::fs::write(dir.join("feedback.jsonl"), "").unwrap();
    let metrics = run_config(&dir, config);
    assert_eq!(metrics["feedback_verdicts"], 0);
    let plain = anomalies();
    assert!(plain.iter().any(|e| minute(e) >= 702), "without a verdict the return to 100 is flagged");
    let first = plain.iter().find(|e| minute(e) >= 600).expect("the outage is flagged");

    let verdict = serde_json::json!({"verdict": "accept", "anomaly": first, "by": "sre", "note": "queue outage"});
    std::fs::write(dir.join("feedback.jsonl"), format!("{verdict}\n")).unwrap();
    let metrics = run_config(&dir, config);
    assert_eq!(metrics["feedback_verdicts"], 1);
    assert!(metrics["feedback_held_points"].as_u64().unwrap() >= 95, "{metrics}");
    let held: Vec<i64> =
        anomalies().iter().filter(|e| e["evidence"]["feedback"]["learning_held"] == true).map(minute).collect();
    assert!(held.len() >= 95 && held.contains(&699), "the outage is flagged to its end: {held:?}");
    let after: Vec<i64> = anomalies().iter().map(minute).filter(|&m| m >= 702).collect();
    assert!(after.is_empty(), "the return to 100 is normal: events at minutes {after:?}");

    std::fs::write(
        dir.join("feedback.jsonl"),
        format!("{verdict}\n{}\n", verdict.to_string().replace("accept", "yes")),
    )
    .unwrap();
    let out = faultline(&["run", "--config", "run.toml"], &dir);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("feedback.jsonl line 2") && err.contains("unknown variant `yes`"), "{err}");
}

/// A CSV table replayed from the command line (`source.kind = "table"`): the same events as the JSON lines of the
/// same points, and a bad row dead-lettered with its row number and column.
#[test]
#[cfg(feature = "tables")]
fn a_csv_table_replays_like_json_lines_and_dead_letters_a_bad_row() {
    let dir = scratch("table");
    let t0 = queue_outage(&dir);
    let jsonl = "[source]\nkind = \"jsonl\"\npath = \"points.jsonl\"\n[[sinks]]\nkind = \"jsonl\"\npath = \"out/events.jsonl\"\n";
    run_config(&dir, jsonl);
    let want = std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap();
    assert!(want.lines().count() > 10, "the outage is flagged");

    let mut csv = String::from("time,service,metric,value\n");
    for line in std::fs::read_to_string(dir.join("points.jsonl")).unwrap().lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        csv += &format!(
            "{},{},{},{}\n",
            p["time"],
            p["service"].as_str().unwrap(),
            p["metric"].as_str().unwrap(),
            p["value"]
        );
    }
    csv += &format!("{},worker,queue_depth,n/a\n", t0 + 800 * 60_000);
    std::fs::write(dir.join("points.csv"), csv).unwrap();
    let table = "[source]\nkind = \"table\"\npath = \"points.csv\"\n[[sinks]]\nkind = \"jsonl\"\npath = \"out/events.jsonl\"\n\
                 [dead-letter]\npath = \"out/dead.jsonl\"\n";
    let metrics = run_config(&dir, table);
    assert_eq!((metrics["points"].as_u64(), metrics["dead_letters"].as_u64()), (Some(800), Some(1)));
    assert_eq!(std::fs::read_to_string(dir.join("out/events.jsonl")).unwrap(), want);
    let dead: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(dir.join("out/dead.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(dead["at"], "row 801");
    assert!(
        dead["reason"].as_str().unwrap().starts_with("column `value`: expected a finite number, got \"n/a\""),
        "{dead}"
    );
}

/// The series a report charts, in order: `(name, anomalies it states, markers it states, circles its chart draws)`.
fn charted(html: &str) -> Vec<(String, u64, u64, usize)> {
    html.split("<h3 id=\"s-")
        .skip(1)
        .map(|part| {
            let part = part.split("<h2").next().unwrap();
            let name = part.split_once("\">").unwrap().1.split_once("</h3>").unwrap().0.to_string();
            let note = part.split_once("<p class=\"note\">").unwrap().1;
            let anomalies = note.split_once(" anomalies").unwrap().0.parse().unwrap();
            let markers = note.split_once(" markers drawn").unwrap().0.rsplit(' ').next().unwrap().parse().unwrap();
            (name, anomalies, markers, part.matches("<circle").count())
        })
        .collect()
}

#[test]
fn a_run_writes_an_html_report_that_the_report_command_rebuilds_from_the_event_files() {
    let dir = scratch("report");
    let config = format!(
        "[source]\nkind = \"jsonl\"\npath = {:?}\n[graph]\nedges = [[\"frontend\", \"checkout\"], [\"checkout\", \"payments\"], [\"checkout\", \"cart\"]]\n\
         [[sinks]]\nkind = \"jsonl\"\npath = \"out/anomalies.jsonl\"\nevents = [\"anomaly\"]\n\
         [[sinks]]\nkind = \"jsonl\"\npath = \"out/root-causes.jsonl\"\nevents = [\"root-cause\"]\n[dead-letter]\npath = \"out/dead.jsonl\"\n",
        repo_root().join("tests/fixtures/points.jsonl").display().to_string()
    );
    std::fs::write(dir.join("run.toml"), config).unwrap();
    let out = faultline(&["run", "--config", "run.toml", "--report", "out/run.html"], &dir);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let report = |args: &[&str], file: &str| {
        let mut all =
            vec!["report", "--config", "run.toml", "--events", "out/anomalies.jsonl", "out/root-causes.jsonl"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", file]);
        let out = faultline(&all, &dir);
        assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
        std::fs::read_to_string(dir.join(file)).unwrap()
    };
    let a = report(&[], "out/a.html");
    assert_eq!(report(&[], "out/b.html"), a, "the same run's report, byte for byte");
    // The run's own report is the same but for the rows only a run knows (its time, engine and cost).
    let run_only = [
        "run time",
        "engine",
        "CPU cost",
        "late points skipped",
        "points refused by the series limit",
        "silenced by the low-volume guard",
    ];
    let run_html: String = std::fs::read_to_string(dir.join("out/run.html"))
        .unwrap()
        .lines()
        .filter(|l| !run_only.iter().any(|k| l.starts_with(&format!("<tr><th>{k}</th>"))))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(run_html, a);
    assert!(a.contains("<tr><th>points</th><td class=\"n\">1600</td></tr>"));
    assert!(a.contains("<tr><th>records dead-lettered</th><td class=\"n\">2</td></tr>"));

    // Every charted series states its own anomaly count, and its chart draws the markers it states.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("out/anomalies.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_series: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
    for e in &events {
        let labels: Vec<String> =
            e["labels"].as_object().unwrap().iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect();
        let mut name = format!("{}/{}", e["service"].as_str().unwrap(), e["metric"].as_str().unwrap());
        if !labels.is_empty() {
            name += &format!("{{{}}}", labels.join(","));
        }
        let s = by_series.entry(name).or_default();
        s.0 += 1;
        s.1 += e["score"].as_f64().unwrap();
    }
    let charts = charted(&a);
    assert_eq!(charts.len(), by_series.len().min(12));
    let mut ranked: Vec<(&String, &(u64, f64))> = by_series.iter().collect();
    ranked.sort_by(|x, y| y.1.1.total_cmp(&x.1.1));
    for ((name, anomalies, markers, circles), (want_name, (want_count, _))) in charts.iter().zip(&ranked) {
        assert_eq!((name, anomalies), (*want_name, want_count));
        assert!(*markers >= 1 && markers <= anomalies, "{name}: {markers} markers for {anomalies} anomalies");
        assert_eq!(*circles as u64, *markers, "{name}");
    }
    let incidents: std::collections::BTreeSet<String> = std::fs::read_to_string(dir.join("out/root-causes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["incident_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!incidents.is_empty());
    assert!(a.contains(&format!("<h2>Incidents ({})</h2>", incidents.len())));
    assert!(a.contains("<td>payments ("), "payments is a ranked cause");

    // Charts can be limited to a service.
    let only = charted(&report(&["--series", "payments", "--charts", "2"], "out/payments.html"));
    assert!(!only.is_empty() && only.len() <= 2 && only.iter().all(|c| c.0.starts_with("payments/")), "{only:?}");

    // A report needs an input it can read again, and names a bad event line.
    std::fs::write(dir.join("stdin.toml"), "[source]\nkind = \"jsonl\"\npath = \"-\"\n").unwrap();
    let out = faultline(&["run", "--config", "stdin.toml", "--report", "out/x.html"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("standard input"), "{}", text(&out.stderr));
    std::fs::write(dir.join("out/bad.jsonl"), format!("{}\n{{\"kind\": \"anomaly\"}}\n", events[0])).unwrap();
    let out = faultline(&["report", "--config", "run.toml", "--events", "out/bad.jsonl", "--out", "out/x.html"], &dir);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("out/bad.jsonl line 2"), "{}", text(&out.stderr));
}

#[test]
fn eval_nab_lists_each_window_and_false_positive_with_windows() {
    // One NAB-layout file: 600 five-minute rows of a wobble with a spike at row 450, one labelled window around it.
    let dir = scratch("nab");
    std::fs::create_dir_all(dir.join("data/cat")).unwrap();
    let t0 = 1_400_000_000_i64;
    let stamp = |i: i64| {
        let s = t0 + 300 * i;
        let (days, rem) = (s / 86_400, s % 86_400);
        // 2014-05-13 is day 16,203 after 1970-01-01; the rows stay within that day and the next.
        let day = 13 + days - 16_203;
        format!("2014-05-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
    };
    let mut csv = String::from("timestamp,value\n");
    for i in 0..600 {
        let v = 50.0 + ((i * 7919 % 23) as f64 / 11.0 - 1.0) + if i == 450 { 40.0 } else { 0.0 };
        csv.push_str(&format!("{},{v}\n", stamp(i)));
    }
    std::fs::write(dir.join("data/cat/spiky.csv"), &csv).unwrap();
    let labels = format!("{{\"cat/spiky.csv\": [[\"{}.000000\", \"{}.000000\"]]}}", stamp(420), stamp(480));
    std::fs::write(dir.join("labels.json"), labels).unwrap();
    let args = ["eval", "nab", "--data", "data", "--labels", "labels.json", "--windows", "--json"];
    let out = faultline(&args, &dir);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let window = &report["breakdown"]["windows"][0];
    assert_eq!(
        (window["file"].as_str(), window["detected_at"].as_u64()),
        (Some("cat/spiky.csv"), Some(30)),
        "{report}"
    );
    assert_eq!(report["breakdown"]["false_positives"], serde_json::json!([]));

    // A results file that also flags row 550, outside the window: one false positive, and the credits and costs add up
    // to the raw score.
    let mut results = String::from("file,timestamp,anomaly_score\n");
    for i in 0..600 {
        let score = if i == 450 || i == 550 { 0.9 } else { 0.1 };
        results.push_str(&format!("cat/spiky.csv,{},{score}\n", stamp(i)));
    }
    std::fs::write(dir.join("results.csv"), results).unwrap();
    let out = faultline(
        &["eval", "nab", "--data", "data", "--labels", "labels.json", "--scores", "results.csv", "--windows"],
        &dir,
    );
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("1 of 1 found") && table.contains("false positives: 1 rows in 1 files"), "{table}");
    assert!(table.contains("row 30"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}
