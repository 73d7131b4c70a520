//! Every event the engine emits validates against the JSON Schema files in `engine/schemas/`.

use crate::support::{load, repo_root, run};

fn validator(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_root().join("engine/schemas").join(file)).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file} is not a valid JSON Schema: {e}"))
}

fn validate_all(v: &jsonschema::Validator, lines: &str, what: &str) -> usize {
    let mut n = 0;
    for (i, line) in lines.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = v.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{what} line {} violates the schema: {errors:?}\n{line}", i + 1);
        n += 1;
    }
    n
}

#[test]
fn every_emitted_event_validates_against_its_schema() {
    let out = run(&load("golden-sim.toml", &[]));
    let a = validate_all(&validator("anomaly.v1.schema.json"), &out.anomalies, "anomaly");
    let r = validate_all(&validator("root-cause.v1.schema.json"), &out.reports, "root-cause report");
    assert!(a > 50 && r >= 4, "too few events to mean anything: {a} anomalies, {r} reports");
}

/// Events raised under a learning pause carry `evidence.learning_paused` and still validate. The golden scenario
/// (simulator start 2026-01-05, faults from 18:00) with learning paused for every series from 19:00 to 21:00.
#[test]
fn events_under_a_learning_pause_validate_and_say_so() {
    let mut cfg = load("golden-sim.toml", &[]);
    cfg.detector.learning_pauses = vec![faultline::config::LearningPauseConfig {
        metric: "*".into(),
        service: None,
        from: Some("2026-01-05T19:00:00Z".into()),
        until: Some("2026-01-05T21:00:00Z".into()),
    }];
    cfg.validate().unwrap();
    let out = run(&cfg);
    let v = validator("anomaly.v1.schema.json");
    validate_all(&v, &out.anomalies, "anomaly");
    let (from, until) = (1_767_639_600_000i64, 1_767_646_800_000i64);
    let mut paused = 0;
    for line in out.anomalies.lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = ev["time_ms"].as_i64().unwrap();
        let flag = ev["evidence"].get("learning_paused");
        assert_eq!(flag.is_some(), (from..until).contains(&t), "{line}");
        paused += usize::from(flag.is_some());
    }
    assert!(paused > 10, "too few events inside the pause to mean anything: {paused}");
    let mut ev: serde_json::Value = serde_json::from_str(out.anomalies.lines().next().unwrap()).unwrap();
    ev["evidence"]["learning_paused"] = serde_json::json!(false);
    assert!(!v.is_valid(&ev), "the flag is present only when true");
}

/// Events that operator feedback bears on carry `evidence.feedback` and still validate: the golden scenario again,
/// with the first model event of every service accepted (a feedback file, read at the start).
#[test]
fn events_under_operator_feedback_validate_and_say_so() {
    let plain = run(&load("golden-sim.toml", &[]));
    let mut seen = std::collections::BTreeSet::new();
    let mut verdicts = String::new();
    for line in plain.anomalies.lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        if ev["stage"] != "cold-start-rule" && seen.insert(ev["service"].to_string()) {
            verdicts += &format!("{}\n", serde_json::json!({"verdict": "accept", "anomaly": ev}));
        }
    }
    let dir = std::env::temp_dir().join(format!("faultline-schema-feedback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("feedback.jsonl");
    std::fs::write(&file, verdicts).unwrap();
    let mut cfg = load("golden-sim.toml", &[]);
    cfg.detector.feedback.file = file.display().to_string();
    cfg.validate().unwrap();
    let out = run(&cfg);
    let v = validator("anomaly.v1.schema.json");
    validate_all(&v, &out.anomalies, "anomaly");
    let with: Vec<serde_json::Value> = out
        .anomalies
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["evidence"].get("feedback").is_some())
        .collect();
    assert!(with.len() > 10, "too few events under feedback to mean anything: {}", with.len());
    assert!(with.iter().all(|e| e["evidence"]["feedback"]["learning_held"] == true));
    // The verdicts themselves (the published events pasted whole) validate against the feedback schema, and a
    // record the engine refuses does not.
    let fv = validator("feedback.v1.schema.json");
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let verdict: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(fv.is_valid(&verdict), "{line}");
        faultline::feedback::Feedback::parse(line).unwrap();
        let mut bad = verdict.clone();
        bad["verdict"] = serde_json::json!("maybe");
        assert!(!fv.is_valid(&bad) && faultline::feedback::Feedback::parse(&bad.to_string()).is_err());
        let mut bad = verdict;
        bad["anomaly"].as_object_mut().unwrap().remove("series_id");
        assert!(!fv.is_valid(&bad) && faultline::feedback::Feedback::parse(&bad.to_string()).is_err());
    }
    let mut ev = with[0].clone();
    ev["evidence"]["feedback"]["tolerance"] = serde_json::json!(-1.0);
    assert!(!v.is_valid(&ev), "a negative tolerance");
    ev["evidence"]["feedback"] = serde_json::json!({"tolerance": 1.0});
    assert!(!v.is_valid(&ev), "learning_held is required");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn schemas_reject_what_they_should() {
    let v = validator("anomaly.v1.schema.json");
    let out = run(&load("golden-sim.toml", &[]));
    let mut ev: serde_json::Value = serde_json::from_str(out.anomalies.lines().next().unwrap()).unwrap();
    assert!(v.is_valid(&ev));
    ev["score"] = serde_json::json!(1.5);
    assert!(!v.is_valid(&ev), "a score above 1 must be rejected");
    ev["score"] = serde_json::json!(0.5);
    ev["surprise"] = serde_json::json!(true);
    assert!(!v.is_valid(&ev), "unknown fields must be rejected");
}

#[test]
fn embedded_schemas_are_the_files() {
    assert_eq!(
        faultline::event::ANOMALY_SCHEMA_JSON,
        std::fs::read_to_string(repo_root().join("engine/schemas/anomaly.v1.schema.json")).unwrap()
    );
    assert_eq!(
        faultline::feedback::FEEDBACK_SCHEMA_JSON,
        std::fs::read_to_string(repo_root().join("engine/schemas/feedback.v1.schema.json")).unwrap()
    );
}
