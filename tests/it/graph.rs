//! The call graph learned from OpenTelemetry service-graph metrics, with no configured edges.

use std::io::BufRead;

use faultline::config::Config;
use faultline::rca::ServiceGraph;
use faultline::sink::{CollectSink, Sink};
use faultline::source::{DeadLetters, JsonlSource};

use crate::support::fixture;

/// The points fixture (payments' latency regresses, its callers follow), plus one service-graph point per minute
/// for each call edge.
fn input() -> Vec<u8> {
    let mut out = Vec::new();
    let f = std::io::BufReader::new(std::fs::File::open(fixture("points.jsonl")).unwrap());
    for (i, line) in f.lines().enumerate() {
        let line = line.unwrap();
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        if i % 8 == 0 {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let Some(t) = v.get("time") else { continue };
            for (c, s) in [("frontend", "checkout"), ("checkout", "payments"), ("checkout", "cart")] {
                let p = serde_json::json!({"time": t, "service": c, "metric": "traces_service_graph_request_total",
                    "labels": {"client": c, "server": s}, "value": 100.0 + i as f64});
                out.extend_from_slice(p.to_string().as_bytes());
                out.push(b'\n');
            }
        }
    }
    out
}

fn final_report(cfg: &Config) -> serde_json::Value {
    let mut src = JsonlSource::from_reader("test", Box::new(std::io::Cursor::new(input())));
    let collect = CollectSink::default();
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(collect.clone())];
    faultline::pipeline::run(cfg, &mut src, ServiceGraph::default(), sinks, &mut dead).unwrap();
    let r = collect.take().reports.into_iter().rfind(|r| r.status == "closed").expect("a closed incident");
    serde_json::to_value(r).unwrap()
}

#[test]
fn call_graph_is_learned_from_service_graph_metrics() {
    let cfg = Config::default_config().unwrap();
    let r = final_report(&cfg);
    assert_eq!(r["candidates"][0]["service"], "payments", "{r:#}");
    assert_eq!(r["symptom"], "frontend");
    assert_eq!(
        r["candidates"][0]["evidence"]["path_to_symptom"],
        serde_json::json!(["payments", "checkout", "frontend"])
    );

    // With learning off, there is no graph: no path to explain.
    let mut off = cfg.clone();
    off.rca.graph_metric = String::new();
    let r = final_report(&off);
    assert_eq!(r["candidates"][0]["evidence"]["path_to_symptom"], serde_json::json!([]), "{r:#}");
}
