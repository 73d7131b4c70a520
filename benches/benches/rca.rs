//! Cost of one root-cause report version: ranking an open incident of 10, 50 and 200 services (7 metrics each,
//! 20 anomalous points per metric) on a layered call graph. Issue 5's bound: at most 10 ms for 50 services.

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use faultline::config::{Config, Role};
use faultline::event::{AnomalyEvent, Channels, Direction, Stage};
use faultline::model::SeriesKey;
use faultline::rca::{IncidentTracker, ServiceGraph};

const METRICS: [(&str, Role); 7] = [
    ("request_rate", Role::Traffic),
    ("latency_p50_ms", Role::Latency),
    ("latency_p99_ms", Role::Latency),
    ("error_rate", Role::Errors),
    ("cpu_utilization", Role::Saturation),
    ("memory_utilization", Role::Saturation),
    ("queue_saturation", Role::Saturation),
];

/// Services in layers of 10; each calls two services of the next layer.
fn incident(services: usize) -> (ServiceGraph, Vec<AnomalyEvent>) {
    let name = |i: usize| format!("svc-{i}");
    let mut edges = Vec::new();
    for i in 0..services {
        for k in [0, 3] {
            let j = (i / 10 + 1) * 10 + (i + k) % 10;
            if j < services {
                edges.push((name(i), name(j)));
            }
        }
    }
    let mut events = Vec::new();
    for p in 0..20i64 {
        for i in 0..services {
            for (m, role) in METRICS {
                let key = Arc::new(SeriesKey::new(&name(i), m, [] as [(&str, &str); 0]));
                // Deeper services deviate first, as a fault at the bottom propagates up.
                let onset = ((services - i) / 10) as i64 * 60_000;
                events.push(AnomalyEvent {
                    key,
                    role,
                    time: onset + p * 60_000,
                    started_at: onset,
                    observed: 10.0,
                    expected: 5.0,
                    lower: 4.0,
                    upper: 6.0,
                    z: 8.0 + (i % 7) as f64,
                    score: 0.9,
                    direction: Direction::Up,
                    stage: Stage::Robust,
                    model_fired: true,
                    channels: Channels {
                        value: 0.9,
                        residual: 0.9,
                        shift: 0.0,
                        burst: None,
                        spectral: None,
                        service: 0.9,
                        residual_name: "residual",
                        fatigue: 0.0,
                    },
                    level_shift: None,
                    attribution: Vec::new(),
                    rule: None,
                    anomalous_in_window: 3,
                    window: 3,
                    points_seen: 1000,
                    learning_paused: false,
                    feedback: None,
                });
            }
        }
    }
    events.sort_by_key(|e| e.time);
    (ServiceGraph::from_edges(edges), events)
}

fn rank(c: &mut Criterion) {
    let mut cfg = Config::default_config().expect("defaults load");
    // One incident of all the services, whatever their distance in the graph: this measures ranking, not grouping.
    cfg.rca.group_hops = usize::MAX / 2;
    let mut g = c.benchmark_group("rca_report_version");
    for services in [10usize, 50, 200] {
        let (graph, events) = incident(services);
        g.bench_with_input(BenchmarkId::from_parameter(services), &services, |b, _| {
            b.iter_batched(
                || {
                    let mut t = IncidentTracker::new(&cfg.rca, graph.clone());
                    for e in &events {
                        t.ingest(e);
                    }
                    assert_eq!(t.open_incidents(), 1);
                    t
                },
                |mut t| t.finish().pop().expect("a report"),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, rank);
criterion_main!(benches);
