//! End-to-end Kafka benchmark: batched OTLP or JSON telemetry through a broker on loopback, the engine's Kafka source,
//! shards, collector and Kafka sink. Prints points/s and ingest-to-acknowledged-output latency as JSON.
//!
//! The broker is librdkafka's mock cluster, hosted by a child process of this binary (so its work is not counted
//! in the engine's threads, but it shares the machine's cores, as a local broker would).
//!
//! ```text
//! cargo run --release -p faultline-benches --bin kafka_loadgen -- throughput otlp|json SERIES TICKS
//! cargo run --release -p faultline-benches --bin kafka_loadgen -- latency otlp|json POINTS_PER_S SECONDS
//! cargo run --release -p faultline-benches --bin kafka_loadgen -- profile otlp|json SERIES TICKS
//! ```
//!
//! `throughput` pre-loads the topic, then times the engine from its first to its last batch. `latency` produces at a
//! fixed rate while the engine runs and reports the engine's per-batch latency from the first record leaving the
//! consumer to the broker's acknowledgement of every output of the batch. `profile` splits the time: consume only,
//! decode only, pipeline only (no Kafka). Environment: `BENCH_SHARDS` (default 2), `BENCH_IDLE` (stop-when-idle, 2s),
//! `BENCH_BATCH` and `BENCH_MAX_WAIT` (the engine's batch size and the source's max-wait; by default 16 384 and 5ms for
//! `throughput`, 8 192 and 2ms for `latency`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use faultline::config::Config;
use faultline::kafka::producer::{KafkaProducer, KafkaSink};
use faultline::kafka::source::KafkaSource;
use faultline::metrics::RunSummary;
use faultline::model::Batch;
use faultline::otlp::OtlpDecoder;
use faultline::source::{DeadLetters, PointDecoder, Source};
use faultline_benches::telemetry::{points_per_record, tick_records};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

/// Many partitions: the mock broker keeps only about 5 MB per partition, and the throughput run pre-loads the topic.
const PARTITIONS: i32 = 64;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(d), |s| s.parse().with_context(|| format!("argument {}: {s:?}", i + 1)))
    };
    match args.first().map(String::as_str) {
        Some("broker") => broker(),
        Some(mode @ ("throughput" | "latency" | "profile")) => {
            let json = match args.get(1).map(String::as_str) {
                Some("otlp") => false,
                Some("json") => true,
                other => bail!("expected otlp or json, got {other:?}"),
            };
            let out = match mode {
                "throughput" => throughput(json, arg(2, 100_000)? as usize, arg(3, 30)? as usize)?,
                "latency" => latency(json, arg(2, 500_000)?, arg(3, 10)?)?,
                _ => profile(json, arg(2, 100_000)? as usize, arg(3, 30)? as usize)?,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        _ => bail!("usage: kafka_loadgen throughput|latency|profile otlp|json ARGS (see the file's docs)"),
    }
}

/// Child process: a mock cluster with the benchmark's topics; prints its address, lives until stdin closes.
fn broker() -> anyhow::Result<()> {
    // A client that creates the mock cluster, so the group's initial rebalance delay (3 s) can be set to 0.
    let anchor: BaseProducer = ClientConfig::new().set("test.mock.num.brokers", "1").create()?;
    // SAFETY: the handle is the anchor client's live mock cluster; the call only sets a number on it.
    unsafe {
        let m = rdkafka::bindings::rd_kafka_handle_mock_cluster(anchor.client().native_ptr());
        anyhow::ensure!(!m.is_null(), "no mock cluster");
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(m, 0);
    }
    let mock = anchor.client().mock_cluster().context("mock cluster")?;
    mock.create_topic("telemetry", PARTITIONS, 1)?;
    mock.create_topic("anomalies", 2, 1)?;
    println!("{}", mock.bootstrap_servers());
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

struct Broker {
    child: std::process::Child,
    servers: String,
}

impl Broker {
    fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut servers = String::new();
        BufReader::new(child.stdout.take().context("broker stdout")?).read_line(&mut servers)?;
        Ok(Self { child, servers: servers.trim().to_string() })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Fails loudly on the first record the broker did not take.
struct Loud;
impl rdkafka::ClientContext for Loud {}
impl rdkafka::producer::ProducerContext for Loud {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            panic!("the benchmark producer lost a record: {e}");
        }
    }
}

type Feeder = BaseProducer<Loud>;

fn producer(servers: &str) -> anyhow::Result<Feeder> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "1")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Loud)?)
}

fn send(p: &Feeder, key: &str, payload: &[u8]) {
    // Spread the groups evenly (the mock keeps about 5 MB per partition); a group always goes to one partition.
    let group: i32 = key.trim_start_matches("group-").parse().unwrap_or(0);
    let mut rec = BaseRecord::to("telemetry").key(key).payload(payload).partition(group % PARTITIONS);
    while let Err((_, r)) = p.send(rec) {
        rec = r;
        p.poll(Duration::from_millis(1));
    }
    p.poll(Duration::ZERO);
}

fn engine_config(servers: &str, json: bool, batch: usize, max_wait: &str) -> anyhow::Result<Config> {
    let idle = std::env::var("BENCH_IDLE").unwrap_or_else(|_| "2s".into());
    let shards = std::env::var("BENCH_SHARDS").unwrap_or_else(|_| "2".into());
    // The mode's batch settings, unless overridden (latency against batch size and wait).
    let batch = std::env::var("BENCH_BATCH").map_or(Ok(batch), |b| b.parse())?;
    let max_wait = std::env::var("BENCH_MAX_WAIT").unwrap_or_else(|_| max_wait.into());
    let text = format!(
        r#"
[engine]
shards = {shards}
batch-size = {batch}
queue-depth = 8
[source]
kind = "kafka"
[source.kafka]
topics = ["telemetry"]
group-id = "bench"
format = "{}"
max-wait = "{max_wait}"
stop-when-idle = "{idle}"
[source.kafka.properties]
"fetch.max.bytes" = "104857600"
"max.partition.fetch.bytes" = "16777216"
"queued.max.messages.kbytes" = "262144"
[kafka]
brokers = "{servers}"
# Output traffic: about 1 point in 10 000 breaks this bound (m0's noise is uniform in [100, 101)), so anomaly
# events flow to the broker and every batch's completion waits for the producer's acknowledgements.
[detector]
m-of-n = [1, 1]
rules = [{{ metric = "m0", above = 100.999, always = true }}]
[[sinks]]
kind = "kafka"
topic = "anomalies"
events = ["anomaly", "root-cause"]
"#,
        if json { "json" } else { "otlp-proto" }
    );
    Ok(Config::from_layers(Some(("bench.toml", &text)), [])?)
}

/// Delegates to the Kafka source and notes when the first and the last non-empty batch left it.
struct Timed {
    inner: KafkaSource,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Source for Timed {
    fn next_batch(&mut self, batch: &mut Batch, max: usize, dead: &mut DeadLetters) -> faultline::Result<bool> {
        let more = self.inner.next_batch(batch, max, dead)?;
        if !batch.is_empty() {
            let now = Instant::now();
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
        Ok(more)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn start(&mut self, p: Arc<faultline::delivery::Progress>) -> faultline::Result<()> {
        self.inner.start(p)
    }
    fn sealed(&mut self, seq: u64) {
        self.inner.sealed(seq)
    }
    fn finish(&mut self, clean: bool) -> faultline::Result<()> {
        self.inner.finish(clean)
    }
    fn ingest_latency(&self) -> Option<faultline::metrics::LatencySummary> {
        self.inner.ingest_latency()
    }
}

fn run_engine(cfg: &Config) -> anyhow::Result<(RunSummary, f64)> {
    let producer = KafkaProducer::new(&cfg.kafka, Duration::from_secs(30))?;
    let sink = KafkaSink::new(Arc::clone(&producer), "anomalies", true, true);
    let inner = KafkaSource::new(&cfg.kafka, &cfg.source.kafka, None, Arc::new(AtomicBool::new(false)))?;
    let mut src = Timed { inner, first: None, last: None };
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    let summary = faultline::pipeline::run(
        cfg,
        &mut src,
        faultline::rca::ServiceGraph::default(),
        vec![Box::new(sink)],
        &mut dead,
    )?;
    let active = match (src.first, src.last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    Ok((summary, active))
}

fn preload(servers: &str, json: bool, series: usize, ticks: usize) -> anyhow::Result<(u64, u64)> {
    let p = producer(servers)?;
    let (mut points, mut bytes, mut rng) = (0u64, 0u64, 0x9e37_79b9_7f4a_7c15u64);
    for tick in 0..ticks {
        for (k, v) in tick_records(json, series, tick, &mut rng) {
            send(&p, &k, &v);
            points += points_per_record(series) as u64;
            bytes += v.len() as u64;
        }
    }
    p.flush(Duration::from_secs(300))?;
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers).create()?;
    let stored: i64 = (0..PARTITIONS)
        .map(|i| c.fetch_watermarks("telemetry", i, Duration::from_secs(10)).map(|w| w.1 - w.0))
        .sum::<Result<i64, _>>()?;
    let per = points_per_record(series) as u64;
    if stored as u64 * per != points {
        bail!("the broker holds {stored} records of {per} points, {points} points were sent");
    }
    Ok((points, bytes))
}

fn throughput(json: bool, series: usize, ticks: usize) -> anyhow::Result<serde_json::Value> {
    let broker = Broker::start()?;
    let (points, bytes) = preload(&broker.servers, json, series, ticks)?;
    let cfg = engine_config(&broker.servers, json, 16_384, "5ms")?;
    let (summary, active) = run_engine(&cfg)?;
    if summary.points != points {
        bail!("produced {points} points, the engine scored {}", summary.points);
    }
    Ok(serde_json::json!({
        "mode": "throughput", "input": if json { "json" } else { "otlp" }, "series": series, "ticks": ticks,
        "points": points, "bytes_per_point": bytes as f64 / points as f64,
        "active_s": active, "points_per_s": points as f64 / active,
        "ingest_latency_us": summary.ingest_latency_us, "summary": summary,
    }))
}

fn latency(json: bool, rate: u64, seconds: u64) -> anyhow::Result<serde_json::Value> {
    let broker = Broker::start()?;
    let series = 100_000usize;
    let per_record = points_per_record(series) as u64;
    let records_per_s = (rate / per_record).max(1);
    let done = Arc::new(AtomicBool::new(false));
    let servers = broker.servers.clone();
    let feeder = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let p = producer(&servers)?;
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            // Let the engine join the group and get its partitions first: latency, not a backlog, is measured.
            std::thread::sleep(Duration::from_millis(1500));
            let start = Instant::now();
            let (mut sent, mut tick) = (0u64, 0usize);
            'outer: loop {
                for (k, v) in tick_records(json, series, tick, &mut rng) {
                    // Pace: record n leaves at n / records_per_s.
                    let due = Duration::from_secs_f64(sent as f64 / records_per_s as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    if start.elapsed() >= Duration::from_secs(seconds) {
                        break 'outer;
                    }
                    send(&p, &k, &v);
                    sent += 1;
                }
                tick += 1;
            }
            p.flush(Duration::from_secs(60))?;
            done.store(true, Ordering::Relaxed);
            Ok(sent * per_record)
        })
    };
    let cfg = engine_config(&broker.servers, json, 8_192, "2ms")?;
    let (summary, active) = run_engine(&cfg)?;
    let points = feeder.join().expect("feeder thread")?;
    Ok(serde_json::json!({
        "mode": "latency", "input": if json { "json" } else { "otlp" }, "target_points_per_s": rate,
        "points": points, "scored": summary.points, "active_s": active,
        "achieved_points_per_s": summary.points as f64 / active,
        "ingest_latency_us": summary.ingest_latency_us,
        "batch_latency_us": summary.batch_latency_us, "batches": summary.batches, "anomalies": summary.anomalies,
    }))
}

/// Where the time goes: the same input consumed only, decoded only, and through the pipeline only.
fn profile(json: bool, series: usize, ticks: usize) -> anyhow::Result<serde_json::Value> {
    let broker = Broker::start()?;
    let (points, _) = preload(&broker.servers, json, series, ticks)?;
    // 1. Consume only (one thread, payload bytes touched).
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.servers)
        .set("group.id", "profile")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "16777216")
        .create()?;
    c.subscribe(&["telemetry"])?;
    let records = (points / points_per_record(series) as u64) as usize;
    let mut payloads = Vec::with_capacity(records);
    let mut t0 = None;
    while payloads.len() < records {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            t0.get_or_insert_with(Instant::now);
            payloads.push(m?.payload().unwrap_or(&[]).to_vec());
        }
    }
    let consume_s = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    drop(c);
    // 2. Decode only (one thread).
    let t = Instant::now();
    let (mut otlp, mut pj) = (OtlpDecoder::new(), PointDecoder::new());
    let mut batch = Batch::with_capacity(16_384);
    let mut decoded = 0usize;
    for p in &payloads {
        batch.clear();
        decoded += if json {
            pj.decode_record(std::str::from_utf8(p)?, &mut batch).map_err(anyhow::Error::msg)?
        } else {
            otlp.decode_proto(p, &mut batch).map_err(anyhow::Error::msg)?
        };
    }
    let decode_s = t.elapsed().as_secs_f64();
    // 2b. Of which protobuf parsing alone (prost, into opentelemetry-proto's messages).
    let t = Instant::now();
    let mut parsed = 0usize;
    if !json {
        for p in &payloads {
            parsed += ExportMetricsServiceRequest::decode(p.as_slice())?.resource_metrics.len();
        }
    }
    let prost_s = t.elapsed().as_secs_f64();
    // 3. Pipeline only: the synthetic source with the same series count, 2 shards.
    let pipe = faultline_benches::run_synthetic(series, ticks as u64, 2)?;
    Ok(serde_json::json!({
        "mode": "profile", "input": if json { "json" } else { "otlp" }, "points": points, "decoded": decoded,
        "consume_only_points_per_s": points as f64 / consume_s,
        "decode_only_points_per_s_1_thread": decoded as f64 / decode_s,
        "pipeline_only_points_per_s_2_shards": pipe.points_per_s,
        "prost_parse_only_points_per_s_1_thread": if json { 0.0 } else { points as f64 / prost_s },
        "resources_parsed": parsed,
    }))
}
