//! Golden output of a simulator scenario, determinism across runs, and independence from the shard count.

use crate::support::{check, load, run};

#[test]
fn demo_scenario_matches_golden_output() {
    let out = run(&load("golden-sim.toml", &[("FAULTLINE__ENGINE__SHARDS", "2")]));
    assert!(out.anomalies.lines().count() > 50, "the scenario should raise anomalies");
    assert!(out.reports.lines().count() >= 4, "the scenario should report incidents");
    check("golden-sim.anomalies.jsonl", &out.anomalies);
    check("golden-sim.root-causes.jsonl", &out.reports);
}

#[test]
fn same_input_twice_gives_byte_identical_output() {
    let cfg = load("golden-sim.toml", &[("FAULTLINE__ENGINE__SHARDS", "3")]);
    let (a, b) = (run(&cfg), run(&cfg));
    assert!(!a.anomalies.is_empty());
    assert!(a.anomalies == b.anomalies, "anomaly output differs between two runs of the same input");
    assert!(a.reports == b.reports, "root-cause output differs between two runs of the same input");
}

#[test]
fn one_shard_and_four_shards_emit_the_same_events() {
    let one = run(&load("golden-sim.toml", &[("FAULTLINE__ENGINE__SHARDS", "1")]));
    let four =
        run(&load("golden-sim.toml", &[("FAULTLINE__ENGINE__SHARDS", "4"), ("FAULTLINE__ENGINE__BATCH_SIZE", "4096")]));
    // The collector orders events by (event time, series id), so the output is identical, not just the same set.
    let sorted = |s: &str| {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort_unstable();
        v.join("\n")
    };
    assert_eq!(sorted(&one.anomalies), sorted(&four.anomalies));
    assert!(one.anomalies == four.anomalies, "same set of events but a different order");
    assert!(one.reports == four.reports);
}
