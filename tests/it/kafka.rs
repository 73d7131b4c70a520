//! Kafka in and out against librdkafka's in-process mock cluster: produce telemetry, run the engine, consume its
//! outputs and compare them exactly with a replay of the same points from a file; dead letters; commit and resume;
//! two instances in one group; injected broker errors; change events from a change topic.
//!
//! Every wait has a deadline. The engine is stopped through its stop flag (what SIGTERM sets in the binary) once
//! the group's committed offsets reach the end of the input: that also proves that everything was committed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use faultline::clock::parse_time;
use faultline::config::Config;
use faultline::metrics::RunSummary;
use faultline::sink::{JsonlSink, SharedBuf, Sink};
use faultline::source::DeadLetters;
use faultline::{app, pipeline};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::support::fixture;

const GRAPH: &str = r#"edges = [["frontend", "checkout"], ["checkout", "payments"], ["checkout", "cart"]]"#;
const WAIT: Duration = Duration::from_secs(60);

/// An in-process mock cluster of 3 brokers, anchored to a client so the group's initial rebalance delay can be 0.
struct Mock {
    anchor: BaseProducer,
    servers: String,
}

impl Mock {
    fn new() -> Self {
        let anchor: BaseProducer = ClientConfig::new().set("test.mock.num.brokers", "3").create().unwrap();
        // SAFETY: the handle is the anchor client's live mock cluster; the call only sets a number on it.
        unsafe {
            let m = rdkafka::bindings::rd_kafka_handle_mock_cluster(anchor.client().native_ptr());
            assert!(!m.is_null());
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(m, 0);
        }
        let servers = anchor.client().mock_cluster().unwrap().bootstrap_servers();
        Self { anchor, servers }
    }

    fn cluster(&self) -> MockCluster<'_, DefaultProducerContext> {
        self.anchor.client().mock_cluster().unwrap()
    }

    fn topics(&self, topics: &[(&str, i32)]) {
        for (t, p) in topics {
            self.cluster().create_topic(t, *p, 1).unwrap();
        }
    }

    fn produce(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.servers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .create()
            .unwrap();
        for (k, v) in records {
            let mut rec = BaseRecord::to(topic).key(k.as_str()).payload(v.as_slice());
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        p.poll(Duration::from_millis(5));
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// Every record of `topic` (all partitions, from the beginning), reading until `min` arrived and then for
    /// `grace` more, so that extra records would be seen too.
    fn consume(&self, topic: &str, partitions: i32, min: usize, grace: Duration) -> Vec<OwnedMessage> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.servers)
            .set("group.id", "faultline-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        let mut reached: Option<Instant> = None;
        loop {
            if out.len() >= min && reached.is_none() {
                reached = Some(Instant::now());
            }
            if reached.is_some_and(|t| t.elapsed() >= grace) {
                break;
            }
            assert!(Instant::now() < deadline, "{topic}: only {} of {min} records within {WAIT:?}", out.len());
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                out.push(m.unwrap().detach());
            }
        }
        drop(tpl);
        out
    }

    /// The group's committed offset per partition (-1: none).
    fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let c: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.servers).set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        let v = got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect();
        drop(got);
        v
    }

    fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.servers).create().unwrap();
        (0..partitions).map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).collect()
    }

    /// Waits until the group has committed the end of every partition.
    fn wait_committed(&self, group: &str, topic: &str, partitions: i32) {
        let ends = self.end_offsets(topic, partitions);
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.committed(group, topic, partitions);
            // A partition that never had a record has nothing to commit.
            if got.iter().zip(&ends).all(|(g, e)| g == e || (*e == 0 && *g < 0)) {
                return;
            }
            assert!(Instant::now() < deadline, "group {group} committed {got:?}, end offsets {ends:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An engine config reading `telemetry` in `group`, writing anomalies, reports and dead letters to Kafka.
fn engine_config(servers: &str, group: &str, format: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[engine]
shards = 2
batch-size = 256
[source]
kind = "kafka"
[source.kafka]
topics = ["telemetry"]
group-id = "{group}"
format = "{format}"
commit-interval = "50ms"
drain-timeout = "20s"
[source.kafka.properties]
"session.timeout.ms" = "3000"
"heartbeat.interval.ms" = "500"
[kafka]
brokers = "{servers}"
[graph]
{GRAPH}
[[sinks]]
kind = "kafka"
topic = "anomalies"
events = ["anomaly"]
[[sinks]]
kind = "kafka"
topic = "reports"
events = ["root-cause"]
[dead-letter]
path = "-"
topic = "dead"
{extra}
"#
    );
    Config::from_layers(Some(("kafka-test.toml", &text)), []).unwrap()
}

struct Engine {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<faultline::Result<RunSummary>>,
}

fn start(cfg: Config) -> Engine {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let handle = std::thread::spawn(move || app::run_config_until(&cfg, Vec::new(), s));
    Engine { stop, handle }
}

impl Engine {
    fn stop(self) -> RunSummary {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + WAIT;
        while !self.handle.is_finished() {
            assert!(Instant::now() < deadline, "the engine did not stop within {WAIT:?} of the stop flag");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.handle.join().unwrap().unwrap()
    }
}

/// The fixture's lines, keyed by service (bad lines keyed "bad").
fn fixture_records() -> Vec<(String, Vec<u8>)> {
    std::fs::read_to_string(fixture("points.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let key = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["service"].as_str().filter(|s| !s.is_empty()).map(String::from))
                .unwrap_or_else(|| "bad".into());
            (key, l.as_bytes().to_vec())
        })
        .collect()
}

/// The engine's events for the fixture replayed from the file: (anomaly lines, report lines).
pub(crate) fn file_replay() -> (Vec<String>, Vec<String>) {
    file_replay_with("")
}

/// As [`file_replay`], with `extra` TOML lines (e.g. `rca.changes`) appended to the config.
fn file_replay_with(extra: &str) -> (Vec<String>, Vec<String>) {
    let text = format!(
        "[engine]\nshards = 2\n[source]\nkind = \"jsonl\"\npath = {:?}\n[graph]\n{GRAPH}\n{extra}\n",
        fixture("points.jsonl").display().to_string()
    );
    let cfg = Config::from_layers(Some(("replay.toml", &text)), []).unwrap();
    let (mut source, graph) = app::build_source(&cfg).unwrap();
    let (a, r) = (SharedBuf::default(), SharedBuf::default());
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(JsonlSink::new("a", Box::new(a.clone()), true, false)),
        Box::new(JsonlSink::new("r", Box::new(r.clone()), false, true)),
    ];
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    pipeline::run(&cfg, source.as_mut(), graph, sinks, &mut dead).unwrap();
    let lines = |b: &SharedBuf| String::from_utf8(b.contents()).unwrap().lines().map(String::from).collect();
    (lines(&a), lines(&r))
}

fn payloads(msgs: &[OwnedMessage]) -> Vec<String> {
    msgs.iter().map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap()).collect()
}

/// Sorted and deduplicated: delivery is at-least-once, and identical events (same deterministic id and content)
/// are dropped by consumers, so a duplicate after a rebalance is not a difference.
pub(crate) fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn header<'a>(m: &'a OwnedMessage, key: &str) -> Option<&'a str> {
    let h = m.headers()?;
    h.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(h.value?).ok())
}

#[test]
fn json_points_through_kafka_give_exactly_the_file_replay_events() {
    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("anomalies", 3), ("reports", 2), ("dead", 1)]);
    let records = fixture_records();
    mock.produce("telemetry", &records);
    let engine = start(engine_config(&mock.servers, "g-json", "json", ""));
    mock.wait_committed("g-json", "telemetry", 1);
    let summary = engine.stop();
    assert_eq!(summary.points, 1600, "every good point scored once");
    assert_eq!(summary.dead_letters, 2);

    let (want_a, want_r) = file_replay();
    assert!(want_a.len() > 10 && !want_r.is_empty(), "the fixture should raise events");
    let anomalies = mock.consume("anomalies", 3, want_a.len(), Duration::from_millis(500));
    assert_eq!(sorted(payloads(&anomalies)), sorted(want_a.clone()), "anomaly events differ from the file replay");
    for m in &anomalies {
        let ev: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(m.key(), Some(ev["service"].as_str().unwrap().as_bytes()), "anomalies are keyed by service");
        assert_eq!(header(m, "faultline.schema"), Some("faultline.anomaly.v1"));
        assert_eq!(header(m, "content-type"), Some("application/json"));
    }
    let reports = mock.consume("reports", 2, want_r.len(), Duration::from_millis(500));
    assert_eq!(sorted(payloads(&reports)), sorted(want_r), "root-cause reports differ from the file replay");
    for m in &reports {
        let r: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(m.key(), Some(r["incident_id"].as_str().unwrap().as_bytes()), "reports are keyed by incident");
        assert_eq!(header(m, "faultline.schema"), Some("faultline.root-cause.v1"));
    }

    // Dead letters: the original bytes, with headers naming where they came from and why.
    let dead = mock.consume("dead", 1, 2, Duration::from_millis(300));
    assert_eq!(dead.len(), 2);
    let offsets: Vec<&str> = dead.iter().map(|m| header(m, "faultline.source.offset").unwrap()).collect();
    assert_eq!(offsets, ["100", "201"], "lines 101 and 202 of the fixture");
    for m in &dead {
        let offset: usize = header(m, "faultline.source.offset").unwrap().parse().unwrap();
        assert_eq!(m.payload().unwrap(), records[offset].1.as_slice(), "the dead letter is the record unchanged");
        assert_eq!(header(m, "faultline.source.topic"), Some("telemetry"));
        assert_eq!(header(m, "faultline.source.partition"), Some("0"));
        assert_eq!(header(m, "faultline.schema"), Some("faultline.dead-letter.v1"));
    }
    assert!(header(&dead[0], "faultline.reason").unwrap().contains("invalid JSON"));
    assert!(header(&dead[1], "faultline.reason").unwrap().contains("field `service`"));
}

/// The fixture's good points as OTLP gauge points, one `ExportMetricsServiceRequest` per timestamp (all services
/// in it, one resource per service): batched OTLP as the Collector exports it.
pub(crate) fn fixture_as_otlp() -> Vec<ExportMetricsServiceRequest> {
    let text = std::fs::read_to_string(fixture("points.jsonl")).unwrap();
    type Point = (String, Vec<(String, String)>, f64);
    let mut by_time: BTreeMap<i64, BTreeMap<String, Vec<Point>>> = BTreeMap::new();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { continue };
        let time = v["time"].as_i64().or_else(|| v["time"].as_str().and_then(|s| parse_time(s).ok()));
        let (Some(t), Some(s), Some(m), Some(x)) =
            (time, v["service"].as_str(), v["metric"].as_str(), v["value"].as_f64())
        else {
            continue;
        };
        if s.is_empty() {
            continue;
        }
        let labels = v["labels"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
            .unwrap_or_default();
        by_time.entry(t).or_default().entry(s.to_string()).or_default().push((m.to_string(), labels, x));
    }
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    by_time
        .into_iter()
        .map(|(t, services)| ExportMetricsServiceRequest {
            resource_metrics: services
                .into_iter()
                .map(|(service, points)| ResourceMetrics {
                    resource: Some(Resource { attributes: vec![kv("service.name", &service)], ..Default::default() }),
                    scope_metrics: vec![ScopeMetrics {
                        metrics: points
                            .into_iter()
                            .map(|(name, labels, x)| Metric {
                                name,
                                data: Some(metric::Data::Gauge(Gauge {
                                    data_points: vec![NumberDataPoint {
                                        attributes: labels.iter().map(|(k, v)| kv(k, v)).collect(),
                                        time_unix_nano: t as u64 * 1_000_000,
                                        value: Some(number_data_point::Value::AsDouble(x)),
                                        ..Default::default()
                                    }],
                                })),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        })
        .collect()
}

#[test]
fn otlp_proto_and_otlp_json_give_exactly_the_file_replay_anomalies() {
    let (want_a, _) = file_replay();
    let requests = fixture_as_otlp();
    let gauge_points: usize = requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .map(|sm| sm.metrics.len())
        .sum();
    assert_eq!(gauge_points, 1600, "every good fixture point becomes one gauge point");
    for (format, encode) in [
        ("otlp-proto", (|r: &ExportMetricsServiceRequest| r.encode_to_vec()) as fn(&_) -> Vec<u8>),
        ("otlp-json", |r| serde_json::to_vec(r).unwrap()),
        ("auto", |r| serde_json::to_vec(r).unwrap()),
    ] {
        let mock = Mock::new();
        mock.topics(&[("telemetry", 1), ("anomalies", 2), ("reports", 1), ("dead", 1)]);
        let mut records: Vec<(String, Vec<u8>)> = requests.iter().map(|r| ("all".to_string(), encode(r))).collect();
        records.insert(7, ("all".into(), b"\x0a\xff\xff garbage".to_vec()));
        mock.produce("telemetry", &records);
        let engine = start(engine_config(&mock.servers, "g-otlp", format, ""));
        mock.wait_committed("g-otlp", "telemetry", 1);
        let summary = engine.stop();
        assert_eq!(summary.points, 1600, "{format}: every gauge point scored once");
        assert_eq!(summary.dead_letters, 1, "{format}");
        let anomalies = mock.consume("anomalies", 2, want_a.len(), Duration::from_millis(300));
        assert_eq!(sorted(payloads(&anomalies)), sorted(want_a.clone()), "{format}: anomalies differ");
        let dead = mock.consume("dead", 1, 1, Duration::from_millis(200));
        assert_eq!(header(&dead[0], "faultline.source.offset"), Some("7"), "{format}");
    }
}

#[test]
fn a_second_run_resumes_after_the_committed_offsets_and_emits_nothing_twice() {
    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    let records = fixture_records();
    let (first, second) = records.split_at(900);
    mock.produce("telemetry", first);
    // Run 1 ends by itself once the topic has been idle (stop-when-idle), after committing.
    let cfg = engine_config(&mock.servers, "g-resume", "json", "");
    let mut idle = cfg.clone();
    idle.source.kafka.stop_when_idle = faultline::units::HumanDuration(Duration::from_secs(3));
    let one = std::thread::spawn(move || app::run_config(&idle, Vec::new())).join().unwrap().unwrap();
    assert_eq!(mock.committed("g-resume", "telemetry", 1), [900]);
    let dead = mock.consume("dead", 1, one.dead_letters as usize, Duration::from_millis(100));
    let why: Vec<_> =
        dead.iter().map(|m| (header(m, "faultline.source.offset"), header(m, "faultline.reason"))).collect();
    assert_eq!((one.points, one.dead_letters), (898, 2), "lines 101 and 202 are bad: {why:?}");

    mock.produce("telemetry", second);
    let engine = start(cfg);
    mock.wait_committed("g-resume", "telemetry", 1);
    let two = engine.stop();
    assert_eq!((two.points, two.dead_letters), (702, 0), "run 2 reads only what run 1 did not commit");

    let anomalies = payloads(&mock.consume("anomalies", 1, 1, Duration::from_millis(500)));
    let ids: Vec<String> = anomalies
        .iter()
        .map(|a| serde_json::from_str::<serde_json::Value>(a).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an anomaly event was emitted twice");
    assert_eq!(ids.len() as u64, one.anomalies + two.anomalies);
    let dead = mock.consume("dead", 1, 2, Duration::from_millis(300));
    assert_eq!(dead.len(), 2, "each bad record dead-lettered exactly once");
}

/// Run 1 reads the fixture's first 1450 records (into the outage) and stops, committing them (saving its models in
/// `state_dir` when given); run 2, started with `cfg`, reads the rest. Returns both runs' summaries and every anomaly
/// event the two published.
fn restart_in_the_outage(
    mock: &Mock,
    group: &str,
    cfg: Config,
    state_dir: Option<&str>,
) -> (RunSummary, RunSummary, Vec<String>) {
    let records = fixture_records();
    let (first, second) = records.split_at(1450);
    mock.produce("telemetry", first);
    let mut idle = engine_config(&mock.servers, group, "json", "");
    idle.engine.state_dir = state_dir.unwrap_or_default().to_owned();
    idle.source.kafka.stop_when_idle = faultline::units::HumanDuration(Duration::from_secs(3));
    let one = std::thread::spawn(move || app::run_config(&idle, Vec::new())).join().unwrap().unwrap();
    assert_eq!(mock.committed(group, "telemetry", 1), [1450]);
    mock.produce("telemetry", second);
    let engine = start(cfg);
    mock.wait_committed(group, "telemetry", 1);
    let two = engine.stop();
    let n = (one.anomalies + two.anomalies) as usize;
    (one, two, payloads(&mock.consume("anomalies", 1, n, Duration::from_millis(500))))
}

#[test]
fn a_restart_with_warm_up_publishes_exactly_what_an_uninterrupted_run_would_have() {
    let (want, _) = file_replay();
    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    let mut cfg = engine_config(&mock.servers, "g-warm", "json", "");
    cfg.source.kafka.warm_up_records = 100_000;
    let (one, two, got) = restart_in_the_outage(&mock, "g-warm", cfg, None);
    assert_eq!((two.warm_up_points, two.points), (1448, 152), "run 2 re-learns run 1's points, then scores its own");
    assert!(one.anomalies > 0);
    assert_eq!(two.warm_up_events_dropped, one.anomalies, "run 1's events are raised again, and dropped");
    assert_eq!(two.dead_letters, 0, "run 1's bad records are not dead-lettered again");
    let ids: BTreeSet<String> = got
        .iter()
        .map(|a| serde_json::from_str::<serde_json::Value>(a).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), got.len(), "an anomaly event was published twice");
    assert_eq!(got.len() as u64, one.anomalies + two.anomalies);
    assert_eq!(sorted(got), sorted(want.clone()), "the restart changed what was published");
    assert_eq!(mock.committed("g-warm", "telemetry", 1), [1602]);

    // The same restart without warm-up: run 2's models start cold, and publish something else.
    let cold = Mock::new();
    cold.topics(&[("telemetry", 1), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    let (_, two, got) =
        restart_in_the_outage(&cold, "g-cold", engine_config(&cold.servers, "g-cold", "json", ""), None);
    assert_eq!((two.warm_up_points, two.points), (0, 152));
    assert_ne!(sorted(got), sorted(want), "a cold restart should differ from the uninterrupted run");
}

/// `engine.state-dir` instead of warm-up: run 1 saves its models when it stops, run 2 loads them and reads only what
/// run 1 did not commit, and the two publish exactly what one uninterrupted replay publishes.
#[test]
fn a_restart_with_saved_models_publishes_exactly_what_an_uninterrupted_run_would_have() {
    let (want, _) = file_replay();
    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    let dir = std::env::temp_dir().join(format!("faultline-it-{}-saved-models", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.to_str().unwrap();
    let mut cfg = engine_config(&mock.servers, "g-saved", "json", "");
    cfg.engine.state_dir = state.to_owned();
    let (one, two, got) = restart_in_the_outage(&mock, "g-saved", cfg, Some(state));
    assert!(one.anomalies > 0 && one.models_saved == 1);
    assert_eq!((two.warm_up_points, two.points, two.late_points), (0, 152, 0), "run 2 reads only its own records");
    assert_eq!(two.series_restored, one.series, "every series of run 1 takes its model back");
    assert_eq!(got.len() as u64, one.anomalies + two.anomalies);
    assert_eq!(sorted(got), sorted(want), "the restart changed what was published");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_instances_in_one_group_split_the_partitions_and_lose_nothing() {
    let mock = Mock::new();
    mock.topics(&[("telemetry", 4), ("anomalies", 2), ("reports", 1), ("dead", 1)]);
    let cfg = engine_config(&mock.servers, "g-two", "json", "");
    let a = start(cfg.clone());
    std::thread::sleep(Duration::from_millis(500));
    let b = start(cfg);
    // Let the group settle (the mock takes about session.timeout.ms to complete the rejoin), then produce: keyed
    // by service, each service's series live in one partition and so on one instance.
    std::thread::sleep(Duration::from_secs(6));
    mock.produce("telemetry", &fixture_records());
    mock.wait_committed("g-two", "telemetry", 4);
    let (sa, sb) = (a.stop(), b.stop());
    assert!(sa.points > 0 && sb.points > 0, "both instances should get partitions: {} / {}", sa.points, sb.points);
    assert_eq!(sa.points + sb.points, 1600, "every point scored exactly once across the group");
    assert_eq!(sa.dead_letters + sb.dead_letters, 2);
    let (want_a, _) = file_replay();
    let anomalies = mock.consume("anomalies", 2, want_a.len(), Duration::from_millis(500));
    assert_eq!(sorted(payloads(&anomalies)), sorted(want_a), "the group's anomalies differ from one replay");
}

#[test]
fn a_rebalance_mid_stream_loses_nothing() {
    let mock = Mock::new();
    mock.topics(&[("telemetry", 4), ("anomalies", 2), ("reports", 1), ("dead", 1)]);
    let records = fixture_records();
    let mut cfg = engine_config(&mock.servers, "g-rebalance", "json", "");
    // B warms up on what A read of the partitions it takes over; A, given back partitions it read, rewinds none.
    cfg.source.kafka.warm_up_records = 100_000;
    let a = start(cfg.clone());
    // Instance A alone while the first half streams in, slowly; B joins in the middle and takes partitions over.
    let (first, second) = records.split_at(800);
    for chunk in first.chunks(100) {
        mock.produce("telemetry", chunk);
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = start(cfg);
    // Long enough (about 5 s) for B's join to complete while records still arrive.
    for chunk in second.chunks(50) {
        mock.produce("telemetry", chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    mock.wait_committed("g-rebalance", "telemetry", 4);
    let (sa, sb) = (a.stop(), b.stop());
    // At-least-once: every point scored at least once. The revoke drains and commits; records read again by the
    // next owner are those after the last commit the coordinator took: the mock refuses commits while a rebalance
    // is in progress (RebalanceInProgress), also the one from the revoke callback (seen: 0 to 100 points again).
    eprintln!("rebalance: A scored {}, B scored {} of 1600 points", sa.points, sb.points);
    assert!(sa.points + sb.points >= 1600, "lost points: {} + {}", sa.points, sb.points);
    assert!(sb.points > 0, "B should have taken partitions over");
    assert_eq!(sa.warm_up_points, 0, "A's models had seen its partitions: nothing to read again");
    assert!(sb.warm_up_points > 0, "B should have warmed up on its partitions' earlier records");
    assert!(sb.warm_up_points <= sa.points, "B re-learns only what A read");
    assert!(sa.points + sb.points < 2 * 1600, "more re-processing than at-least-once explains");
    assert!(sa.dead_letters + sb.dead_letters >= 2, "a bad record was not dead-lettered");
}

#[test]
fn injected_broker_errors_are_survived() {
    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("anomalies", 2), ("reports", 1), ("dead", 1)]);
    mock.produce("telemetry", &fixture_records());
    let c = mock.cluster();
    use RDKafkaRespErr::*;
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    c.request_errors(RDKafkaApiKey::Fetch, &[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR__TRANSPORT]);
    c.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT],
    );
    drop(c);
    let engine = start(engine_config(&mock.servers, "g-errors", "json", ""));
    // A broker goes away for a moment while the engine runs.
    std::thread::sleep(Duration::from_millis(300));
    mock.cluster().broker_down(2).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    mock.cluster().broker_up(2).unwrap();
    mock.wait_committed("g-errors", "telemetry", 1);
    let summary = engine.stop();
    // A fetch error can make the consumer fetch a few records again (at-least-once); the detector skips a series'
    // point it has already seen as late, so every fixture point is scored exactly once.
    assert_eq!(
        summary.points - summary.late_points,
        1600,
        "{} points read, {} skipped as already seen",
        summary.points,
        summary.late_points
    );
    let (want_a, _) = file_replay();
    let anomalies = mock.consume("anomalies", 2, want_a.len(), Duration::from_millis(500));
    assert_eq!(
        sorted(payloads(&anomalies)),
        sorted(want_a),
        "with retries by the idempotent producer: every event, none twice"
    );
}

/// The final (closed) report among report lines.
fn closed_report(lines: &[String]) -> serde_json::Value {
    lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|r| r["status"] == "closed")
        .expect("a closed report")
}

#[test]
fn change_events_from_a_change_topic_are_joined_like_the_changes_file_and_bad_ones_dead_lettered() {
    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("changes", 1), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    // The fixture's changes (payments is deployed two minutes before its latency regresses), with two bad records
    // between them: one that is not JSON and one without a `kind`.
    let good: Vec<String> =
        std::fs::read_to_string(fixture("changes.jsonl")).unwrap().lines().map(String::from).collect();
    let changes: Vec<(String, Vec<u8>)> = vec![
        ("cart".into(), good[0].clone().into_bytes()),
        ("x".into(), b"deploy payments now".to_vec()),
        ("cart".into(), br#"{"time": "2026-01-05T02:00:00Z", "service": "cart", "description": "?"}"#.to_vec()),
        ("payments".into(), good[1].clone().into_bytes()),
    ];
    mock.produce("changes", &changes);
    mock.produce("telemetry", &fixture_records());
    let mut cfg = engine_config(&mock.servers, "g-changes", "json", "");
    cfg.source.kafka.change_topics = vec!["changes".into()];
    let engine = start(cfg);
    mock.wait_committed("g-changes", "telemetry", 1);
    mock.wait_committed("g-changes", "changes", 1);
    let summary = engine.stop();
    assert_eq!(summary.points, 1600);
    assert_eq!(summary.dead_letters, 4, "two bad telemetry lines and two bad change records");

    // The final report is exactly the one a file replay with `rca.changes` gives.
    let path = fixture("changes.jsonl").display().to_string();
    let (_, with_file) = file_replay_with(&format!("[rca]\nchanges = {path:?}"));
    let want = closed_report(&with_file);
    let reports = payloads(&mock.consume("reports", 1, with_file.len(), Duration::from_millis(500)));
    let got = closed_report(&reports);
    assert_eq!(got, want, "the change topic's report differs from the changes file's");
    // The deploy raised payments' score and the report suggests rolling it back.
    let (_, without) = file_replay();
    let before = closed_report(&without);
    assert_eq!(got["candidates"][0]["service"], "payments", "{got:#}");
    let score = |r: &serde_json::Value| r["candidates"][0]["score"].as_f64().unwrap();
    assert!(score(&got) > score(&before), "the change should raise payments: {} vs {}", score(&got), score(&before));
    assert_eq!(got["candidates"][0]["evidence"]["changes"][0]["description"], "payments v2.14.0");
    let suggestion = got["suggestion"].as_str().expect("a rollback suggestion");
    assert!(suggestion.starts_with("Consider rolling back the deploy of payments (payments v2.14.0"), "{suggestion}");
    assert!(before["suggestion"].is_null());

    // The bad change records are on the dead-letter topic, unchanged, with the reason.
    let dead = mock.consume("dead", 1, 4, Duration::from_millis(300));
    let from_changes: Vec<&OwnedMessage> =
        dead.iter().filter(|m| header(m, "faultline.source.topic") == Some("changes")).collect();
    assert_eq!(from_changes.len(), 2);
    assert_eq!(header(from_changes[0], "faultline.source.offset"), Some("1"));
    assert_eq!(from_changes[0].payload().unwrap(), changes[1].1.as_slice());
    assert!(header(from_changes[0], "faultline.reason").unwrap().starts_with("change event:"));
    assert_eq!(header(from_changes[1], "faultline.source.offset"), Some("2"));
    let why = header(from_changes[1], "faultline.reason").unwrap();
    assert!(why.contains("missing field `kind`"), "{why}");
}

/// A learning pause carried by a change event on the change topic reaches the shard that owns the service: the
/// service's anomaly events inside the window say learning was paused, and the run gives exactly what the same change
/// in an `rca.changes` file gives (there it applies from the first point; here the telemetry is produced once the
/// change record is committed, so it applies to every point too).
#[test]
fn a_learning_pause_on_the_change_topic_pauses_the_service_like_the_changes_file() {
    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("changes", 1), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    let pause = r#"{"time": "2026-01-05T02:30:00Z", "service": "payments", "kind": "maintenance", "description": "load test", "learning_pause": {"until": "2026-01-05T04:00:00Z"}}"#;
    mock.produce("changes", &[("payments".into(), pause.as_bytes().to_vec())]);
    let mut cfg = engine_config(&mock.servers, "g-pause", "json", "");
    cfg.source.kafka.change_topics = vec!["changes".into()];
    let engine = start(cfg);
    mock.wait_committed("g-pause", "changes", 1);
    mock.produce("telemetry", &fixture_records());
    mock.wait_committed("g-pause", "telemetry", 1);
    let summary = engine.stop();
    assert_eq!(summary.points, 1600);
    assert!(summary.learning_paused_points > 0);

    let dir = std::env::temp_dir().join(format!("faultline-pause-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let changes = dir.join("changes.jsonl");
    std::fs::write(&changes, format!("{pause}\n")).unwrap();
    let (want, _) = file_replay_with(&format!("[rca]\nchanges = {:?}", changes.display().to_string()));
    let got = payloads(&mock.consume("anomalies", 1, want.len(), Duration::from_millis(500)));
    assert_eq!(sorted(got), sorted(want.clone()), "the change topic's pause differs from the changes file's");
    let (plain, _) = file_replay();
    assert_ne!(sorted(plain), sorted(want.clone()), "the pause changes what the engine reports");
    let events: Vec<serde_json::Value> = want.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let paused: Vec<&serde_json::Value> = events.iter().filter(|e| e["evidence"]["learning_paused"] == true).collect();
    assert!(!paused.is_empty(), "payments' regression falls inside the pause");
    assert!(paused.iter().all(|e| e["service"] == "payments" && e["time"].as_str().unwrap() >= "2026-01-05T02:30"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Operator verdicts on the feedback topic reach the shards that own their services and change the models exactly as
/// the same verdicts in a `detector.feedback.file` do (both apply from the judged event's time): payments' latency
/// regression, rejected, is adopted as its new normal and alerts no more. A malformed verdict is dead-lettered with
/// the reason, and nothing else is lost.
#[test]
fn operator_feedback_on_the_feedback_topic_changes_the_models_like_the_feedback_file() {
    let (plain, _) = file_replay();
    let events: Vec<serde_json::Value> = plain.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let first = |svc: &str| events.iter().find(|e| e["service"] == svc).unwrap_or_else(|| panic!("{svc} alerts"));
    let verdicts = [("payments", "reject"), ("frontend", "accept")]
        .map(|(svc, verdict)| serde_json::json!({"verdict": verdict, "anomaly": first(svc), "by": "sre"}).to_string());
    let bad = verdicts[0].replace("reject", "ignore");

    let mock = Mock::new();
    mock.topics(&[("telemetry", 1), ("feedback", 1), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    let mut records = vec![("payments".to_string(), verdicts.join("\n").into_bytes())];
    records.push(("payments".into(), bad.clone().into_bytes()));
    mock.produce("feedback", &records);
    let mut cfg = engine_config(&mock.servers, "g-feedback", "json", "");
    cfg.source.kafka.feedback_topics = vec!["feedback".into()];
    let engine = start(cfg);
    mock.wait_committed("g-feedback", "feedback", 1);
    mock.produce("telemetry", &fixture_records());
    mock.wait_committed("g-feedback", "telemetry", 1);
    let summary = engine.stop();
    assert_eq!((summary.points, summary.feedback_verdicts), (1600, 2));
    assert_eq!(summary.feedback_rebaselines, 1, "payments adopted its new level");
    assert!(summary.feedback_held_points > 0, "frontend's learning was held");

    let dir = std::env::temp_dir().join(format!("faultline-feedback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("feedback.jsonl");
    std::fs::write(&file, verdicts.join("\n") + "\n").unwrap();
    let (want, _) = file_replay_with(&format!("[detector.feedback]\nfile = {:?}", file.display().to_string()));
    let got = payloads(&mock.consume("anomalies", 1, want.len(), Duration::from_millis(500)));
    assert_eq!(sorted(got), sorted(want.clone()), "the feedback topic's verdicts differ from the feedback file's");
    let payments = |v: &[String]| v.iter().filter(|l| l.contains(r#""service":"payments""#)).count();
    assert!(
        payments(&want) < payments(&plain) / 2,
        "{} payments events, {} without",
        payments(&want),
        payments(&plain)
    );
    let held = want.iter().filter(|l| l.contains(r#""learning_held":true"#)).count();
    assert!(held > 0, "frontend's events say learning is held");

    let dead = mock.consume("dead", 1, 3, Duration::from_millis(300));
    let from_feedback: Vec<_> =
        dead.iter().filter(|m| header(m, "faultline.source.topic") == Some("feedback")).collect();
    assert_eq!(from_feedback.len(), 1, "the malformed verdict, and only it");
    assert_eq!(from_feedback[0].payload().unwrap(), bad.as_bytes(), "dead-lettered unchanged");
    let reason = header(from_feedback[0], "faultline.reason").unwrap();
    assert!(reason.starts_with("feedback: unknown variant `ignore`"), "{reason}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `GET path` on 127.0.0.1:`port`: the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[test]
fn the_metrics_endpoint_serves_counters_consumer_lag_and_readiness_while_consuming() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mock = Mock::new();
    mock.topics(&[("telemetry", 2), ("anomalies", 1), ("reports", 1), ("dead", 1)]);
    let mut cfg =
        engine_config(&mock.servers, "g-metrics", "json", &format!("[metrics]\nlisten = \"127.0.0.1:{port}\""));
    cfg.source.kafka.properties.insert("statistics.interval.ms".into(), "100".into());
    let engine = start(cfg);
    mock.produce("telemetry", &fixture_records());
    mock.wait_committed("g-metrics", "telemetry", 2);
    let value = |body: &str, prefix: &str| -> Vec<i64> {
        body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect()
    };
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (status, body) = http_get(port, "/metrics");
        assert!(status.contains(" 200"), "{status}");
        let points: i64 = value(&body, "faultline_points_total{").iter().sum();
        let lag = value(&body, "faultline_kafka_consumer_lag{");
        // Consumed to the end: 1600 points over both shards, and no lag on either partition.
        if points == 1600 && lag.len() == 2 && lag.iter().all(|l| *l == 0) {
            break body;
        }
        assert!(Instant::now() < deadline, "points {points}, lag {lag:?}:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(value(&body, "faultline_dead_letters_total "), [2]);
    assert_eq!(value(&body, "faultline_ready "), [1]);
    assert!(value(&body, "faultline_batch_latency_seconds_count ")[0] > 0);
    assert!(http_get(port, "/readyz").0.contains(" 200"));
    assert!(http_get(port, "/healthz").0.contains(" 200"));
    let summary = engine.stop();
    assert_eq!(value(&body, "faultline_anomalies_total ")[0] as u64, summary.anomalies);
    assert_eq!(value(&body, "faultline_level_shifts_reverted_total ")[0] as u64, summary.shifts_reverted);
    // the endpoint closes with the run (tiny_http's acceptor thread lets go of the socket just after).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "the endpoint still listens after the run");
        std::thread::sleep(Duration::from_millis(10));
    }
}
