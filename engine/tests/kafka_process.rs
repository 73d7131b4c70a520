//! The `faultline` binary against Kafka, as a process: SIGTERM drains, commits and exits 0; SIGKILL in the middle
//! of a stream and a restart account for every input record (scored or dead-lettered); a broker restarted under
//! the running engine loses nothing.
//!
//! Brokers: librdkafka's mock cluster (in this test process, reachable over TCP by the spawned engine) always; a
//! separate broker process when one is available: `FAULTLINE_TEST_TANSU=/path/to/tansu` (started here, in a
//! scratch directory, and killed and restarted for the broker-restart test) or `FAULTLINE_TEST_KAFKA=host:port` (any
//! Kafka-compatible broker; topics and groups get unique names). Without either the broker-process tests print why
//! they skip; under CI (`CI` set) they fail instead.
//!
//! To account for every record, the engine runs with a rule that every point breaks (`above = -1e9`, always,
//! M-of-N 1 of 1): each scored point yields exactly one anomaly event, whose `(service, metric, time)` names it.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 4;
const SERVICES: usize = 24;
const METRICS: usize = 4;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("faultline-kafka-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------------------------------------------------------
// Brokers

/// An in-process mock cluster (3 brokers) with the group's initial rebalance delay set to 0.
struct Mock {
    anchor: BaseProducer,
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
        Self { anchor }
    }

    fn servers(&self) -> String {
        self.anchor.client().mock_cluster().unwrap().bootstrap_servers()
    }

    fn topic(&self, name: &str, partitions: i32) {
        self.anchor.client().mock_cluster().unwrap().create_topic(name, partitions, 1).unwrap();
    }
}

/// A Tansu broker process with sqlite storage in a scratch directory; killed on drop.
struct Tansu {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Tansu {
    fn start(bin: &Path, name: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut t = Self { bin: bin.to_path_buf(), dir: scratch(name), port, child: None };
        t.up();
        t
    }

    fn up(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("tansu.log")).unwrap();
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {} within 20 s", self.port);
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL: the broker gets no chance to flush anything.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A separate broker for the broker-process tests, or `None` with the reason printed (a failure under CI).
fn broker_process(name: &str) -> Option<(String, Option<Tansu>)> {
    if let Some(bin) = std::env::var_os("FAULTLINE_TEST_TANSU").filter(|b| !b.is_empty()) {
        let t = Tansu::start(Path::new(&bin), name);
        return Some((t.servers(), Some(t)));
    }
    if let Ok(addr) = std::env::var("FAULTLINE_TEST_KAFKA")
        && !addr.is_empty()
    {
        return Some((addr, None));
    }
    let why = "no broker process: set FAULTLINE_TEST_TANSU=/path/to/tansu (bash .ci/run builds one) or \
               FAULTLINE_TEST_KAFKA=host:port";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipping {name}: {why}");
    None
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Creates topics through the Admin API (real brokers; the mock creates its own).
fn create_topics(servers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", servers).create().unwrap();
    let new: Vec<NewTopic> = topics.iter().map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for r in block_on(admin.create_topics(&new, &opts)).unwrap() {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Input and accounting

/// Names of one test's topics and group (unique, so any broker can be reused).
struct Names {
    input: String,
    anomalies: String,
    dead: String,
    group: String,
}

impl Names {
    fn new(tag: &str) -> Self {
        let p = format!("{tag}-{}", std::process::id());
        Self {
            input: format!("telemetry-{p}"),
            anomalies: format!("anomalies-{p}"),
            dead: format!("dead-{p}"),
            group: format!("faultline-{p}"),
        }
    }
}

/// Records keyed by service, each a newline-delimited group of `METRICS` points of one service at one tick; every
/// 37th record is garbage. Returns (records, expected (service, metric, time) points, garbage payloads).
#[allow(clippy::type_complexity)]
fn input(ticks: usize) -> (Vec<(String, Vec<u8>)>, BTreeSet<(String, String, i64)>, BTreeSet<Vec<u8>>) {
    let (mut records, mut points, mut garbage) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    for tick in 0..ticks {
        let t = 1_767_571_200_000i64 + tick as i64 * 60_000;
        for s in 0..SERVICES {
            let service = format!("svc-{s:02}");
            let mut text = String::new();
            for m in 0..METRICS {
                let metric = format!("m{m}");
                text.push_str(&format!(
                    "{{\"time\":{t},\"service\":\"{service}\",\"metric\":\"{metric}\",\"value\":{}}}\n",
                    (tick * 7 + s + m) % 50
                ));
                points.insert((service.clone(), metric, t));
            }
            records.push((service.clone(), text.into_bytes()));
            if records.len() % 37 == 0 {
                let bad = format!("not a point #{}", records.len()).into_bytes();
                garbage.insert(bad.clone());
                records.push((service, bad));
            }
        }
    }
    (records, points, garbage)
}

fn producer(servers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

fn produce(p: &BaseProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic).key(k.as_str()).payload(v.as_slice());
        while let Err((_, r)) = p.send(rec) {
            rec = r;
            p.poll(Duration::from_millis(5));
        }
        p.poll(Duration::ZERO);
    }
}

/// Produces `records` over about `over`, on a thread.
fn produce_slowly(
    servers: &str,
    topic: &str,
    records: Vec<(String, Vec<u8>)>,
    over: Duration,
) -> std::thread::JoinHandle<()> {
    let (servers, topic) = (servers.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let p = producer(&servers);
        let chunks = 40;
        let size = records.len().div_ceil(chunks);
        for c in records.chunks(size) {
            produce(&p, &topic, c);
            std::thread::sleep(over / chunks as u32);
        }
        p.flush(Duration::from_secs(120)).unwrap();
    })
}

/// Reads a whole topic from the beginning (no group) until `done` says so or nothing new came for `quiet`.
struct Reader {
    c: BaseConsumer,
}

impl Reader {
    fn new(servers: &str, topic: &str, partitions: i32) -> Self {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", "faultline-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        Self { c }
    }

    /// Polls for up to `d`, handing each record's (payload, headers as pairs) to `f`.
    fn poll_for(&self, d: Duration, mut f: impl FnMut(&[u8], Vec<(String, String)>)) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Some(Ok(m)) = self.c.poll(Duration::from_millis(20)) {
                {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or(&[])).into_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    f(m.payload().unwrap_or(&[]), headers);
                }
            }
        }
    }
}

/// Points scored (service, metric, time), dead-lettered payloads, and the number of anomaly events read.
type Accounted = (BTreeSet<(String, String, i64)>, BTreeSet<Vec<u8>>, usize);

/// Every anomaly event's (service, metric, time) and every dead letter's payload, read until both cover what is
/// expected (or the deadline passes: then the assertion below names what is missing).
fn account(
    servers: &str,
    names: &Names,
    points: &BTreeSet<(String, String, i64)>,
    garbage: &BTreeSet<Vec<u8>>,
) -> Accounted {
    let anomalies = Reader::new(servers, &names.anomalies, 2);
    let dead = Reader::new(servers, &names.dead, 1);
    let (mut seen, mut dl, mut events) = (BTreeSet::new(), BTreeSet::new(), 0usize);
    let deadline = Instant::now() + WAIT;
    while (!points.is_subset(&seen) || !garbage.is_subset(&dl)) && Instant::now() < deadline {
        anomalies.poll_for(Duration::from_millis(300), |p, _| {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            events += 1;
            seen.insert((
                v["service"].as_str().unwrap().into(),
                v["metric"].as_str().unwrap().into(),
                v["time_ms"].as_i64().unwrap(),
            ));
        });
        dead.poll_for(Duration::from_millis(100), |p, h| {
            assert!(h.iter().any(|(k, _)| k == "faultline.source.offset"), "dead letter without its offset: {h:?}");
            dl.insert(p.to_vec());
        });
    }
    (seen, dl, events)
}

fn assert_accounted((seen, dl, _): &Accounted, points: &BTreeSet<(String, String, i64)>, garbage: &BTreeSet<Vec<u8>>) {
    let lost: Vec<_> = points.difference(seen).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} of {} points were never scored, e.g. {lost:?}",
        points.difference(seen).count(),
        points.len()
    );
    assert!(seen.is_subset(points), "events for points never produced");
    let lost: Vec<_> = garbage.difference(dl).map(|g| String::from_utf8_lossy(g).into_owned()).take(5).collect();
    assert!(lost.is_empty(), "bad records never dead-lettered: {lost:?}");
    assert_eq!(dl, garbage, "dead letters that were not bad input");
}

fn committed(servers: &str, group: &str, topic: &str) -> Vec<i64> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", servers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    match c.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(got) => got.elements().iter().map(|e| e.offset().to_raw().unwrap_or(-1)).collect(),
        Err(_) => vec![-1; PARTITIONS as usize],
    }
}

fn wait_committed(servers: &str, names: &Names) {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers).create().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let ends: Vec<i64> = (0..PARTITIONS)
            .map(|p| c.fetch_watermarks(&names.input, p, Duration::from_secs(10)).map_or(-2, |w| w.1))
            .collect();
        let got = committed(servers, &names.group, &names.input);
        if got.iter().zip(&ends).all(|(g, e)| g == e || (*e == 0 && *g < 0)) {
            return;
        }
        assert!(Instant::now() < deadline, "committed {got:?}, end offsets {ends:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The engine process

fn config(dir: &Path, servers: &str, names: &Names, stop_when_idle: &str) -> PathBuf {
    config_with(dir, servers, names, stop_when_idle, "")
}

/// As [`config`], with `warm-up` set (when not empty).
fn config_with(dir: &Path, servers: &str, names: &Names, stop_when_idle: &str, warm_up: &str) -> PathBuf {
    let path = dir.join(format!("engine-{stop_when_idle}-{warm_up}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[engine]
shards = 2
batch-size = 256
[source]
kind = "kafka"
[source.kafka]
topics = ["{input}"]
group-id = "{group}"
format = "json"
commit-interval = "100ms"
stop-when-idle = "{stop_when_idle}"
drain-timeout = "30s"
warm-up = "{warm_up}"
[source.kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[kafka]
brokers = "{servers}"
[detector]
m-of-n = [1, 1]
overrides = []
rules = [{{ metric = "*", above = -1e9, always = true }}]
[[sinks]]
kind = "kafka"
topic = "{anomalies}"
events = ["anomaly"]
[dead-letter]
path = "-"
topic = "{dead}"
"#,
            input = names.input,
            group = names.group,
            anomalies = names.anomalies,
            dead = names.dead,
            warm_up = if warm_up.is_empty() { "0s" } else { warm_up },
        ),
    )
    .unwrap();
    path
}

fn spawn_engine(dir: &Path, cfg: &Path, run: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("engine-{run}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", "--config", cfg.to_str().unwrap(), "--metrics-out"])
        .arg(dir.join(format!("metrics-{run}.json")))
        .args(["--log", "info"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits for the process to exit; kills it and fails if it takes longer than `limit`.
fn wait_exit(child: &mut Child, limit: Duration, dir: &Path, run: usize) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join(format!("engine-{run}.log"))).unwrap_or_default();
            panic!("the engine did not exit within {limit:?}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
}

/// Waits until at least `n` anomaly events are on the output topic (the engine is mid-stream).
fn wait_outputs(servers: &str, topic: &str, n: usize) {
    let r = Reader::new(servers, topic, 2);
    let mut seen = 0;
    let deadline = Instant::now() + WAIT;
    while seen < n {
        assert!(Instant::now() < deadline, "only {seen} of {n} outputs appeared");
        r.poll_for(Duration::from_millis(50), |_, _| seen += 1);
    }
}

fn metrics(dir: &Path, run: usize) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("metrics-{run}.json"))).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Scenarios, each against any broker

/// Kills the engine with SIGKILL while input is still streaming in, restarts it, and checks that every input
/// point was scored and every bad record dead-lettered (duplicates allowed: at-least-once).
fn sigkill_mid_stream_then_restart(servers: &str, names: &Names, dir: &Path, make_topics: impl Fn(&[(&str, i32)])) {
    make_topics(&[(&names.input, PARTITIONS), (&names.anomalies, 2), (&names.dead, 1)]);
    let (records, points, garbage) = input(40);
    let feeder = produce_slowly(servers, &names.input, records, Duration::from_secs(4));
    let mut engine = spawn_engine(dir, &config(dir, servers, names, "0s"), 1);
    wait_outputs(servers, &names.anomalies, points.len() / 4);
    engine.kill().unwrap(); // SIGKILL
    engine.wait().unwrap();
    let mut engine = spawn_engine(dir, &config(dir, servers, names, "3s"), 2);
    feeder.join().unwrap();
    let status = wait_exit(&mut engine, WAIT, dir, 2);
    assert!(status.success(), "restarted engine: {status}");
    wait_committed(servers, names);
    let got = account(servers, names, &points, &garbage);
    assert_accounted(&got, &points, &garbage);
    let run2 = metrics(dir, 2);
    assert!(run2["points"].as_u64().unwrap() > 0, "the restart should have had work left");
    assert!((got.2 as u64) < 2 * points.len() as u64, "re-processing far beyond the uncommitted tail: {}", got.2);
}

/// SIGTERM: stop fetching, drain, flush, commit, exit 0 within a bound; everything consumed is committed.
fn sigterm_drains_and_commits(servers: &str, names: &Names, dir: &Path, make_topics: impl Fn(&[(&str, i32)])) {
    make_topics(&[(&names.input, PARTITIONS), (&names.anomalies, 2), (&names.dead, 1)]);
    let (records, points, garbage) = input(20);
    let p = producer(servers);
    produce(&p, &names.input, &records);
    p.flush(Duration::from_secs(60)).unwrap();
    let mut engine = spawn_engine(dir, &config(dir, servers, names, "0s"), 1);
    wait_committed(servers, names);
    let t = Instant::now();
    sigterm(&engine);
    let status = wait_exit(&mut engine, Duration::from_secs(30), dir, 1);
    assert!(status.success(), "SIGTERM should end the run with 0: {status}");
    assert!(t.elapsed() < Duration::from_secs(10), "shutdown took {:?}", t.elapsed());
    let m = metrics(dir, 1);
    assert_eq!(m["points"].as_u64().unwrap(), points.len() as u64, "each point scored exactly once");
    assert_eq!(m["dead_letters"].as_u64().unwrap(), garbage.len() as u64);
    let got = account(servers, names, &points, &garbage);
    assert_accounted(&got, &points, &garbage);
    assert_eq!(got.2, points.len(), "no event emitted twice");
}

/// A restart with `warm-up` by time: the broker finds the first record of the last hour (`offsets_for_times`), the
/// second run reads the first run's records again and learns them, and publishes none of their events again.
fn warm_up_by_time_after_a_restart(servers: &str, names: &Names, dir: &Path, make_topics: impl Fn(&[(&str, i32)])) {
    make_topics(&[(&names.input, PARTITIONS), (&names.anomalies, 2), (&names.dead, 1)]);
    let (records, points, garbage) = input(20);
    let (first, second) = records.split_at(records.len() / 2);
    let p = producer(servers);
    produce(&p, &names.input, first);
    p.flush(Duration::from_secs(60)).unwrap();
    let mut one = spawn_engine(dir, &config(dir, servers, names, "3s"), 1);
    assert!(wait_exit(&mut one, WAIT, dir, 1).success());
    produce(&p, &names.input, second);
    p.flush(Duration::from_secs(60)).unwrap();
    let mut two = spawn_engine(dir, &config_with(dir, servers, names, "3s", "1h"), 2);
    assert!(wait_exit(&mut two, WAIT, dir, 2).success());
    wait_committed(servers, names);
    let (m1, m2) = (metrics(dir, 1), metrics(dir, 2));
    let n = |m: &serde_json::Value, k: &str| m[k].as_u64().unwrap();
    assert_eq!(n(&m2, "warm_up_points"), n(&m1, "points"), "run 2 learns run 1's points again");
    assert_eq!(n(&m2, "warm_up_events_dropped"), n(&m1, "anomalies"), "and drops their events");
    assert_eq!(n(&m1, "points") + n(&m2, "points"), points.len() as u64);
    assert_eq!(n(&m1, "dead_letters") + n(&m2, "dead_letters"), garbage.len() as u64, "none dead-lettered twice");
    let got = account(servers, names, &points, &garbage);
    assert_accounted(&got, &points, &garbage);
    assert_eq!(got.2, points.len(), "no event published twice");
}

#[test]
fn broker_process_warm_up_by_time_after_a_restart() {
    let Some((servers, _broker)) = broker_process("bp-warm") else { return };
    let names = Names::new("bp-warm");
    warm_up_by_time_after_a_restart(&servers, &names, &scratch("bp-warm-run"), |ts| create_topics(&servers, ts));
}

#[test]
fn mock_sigterm_drains_commits_and_exits_0() {
    let mock = Mock::new();
    let names = Names::new("term");
    sigterm_drains_and_commits(&mock.servers(), &names, &scratch("term"), |ts| {
        ts.iter().for_each(|(t, p)| mock.topic(t, *p))
    });
}

#[test]
fn mock_sigkill_mid_stream_then_restart_loses_nothing() {
    let mock = Mock::new();
    let names = Names::new("kill");
    sigkill_mid_stream_then_restart(&mock.servers(), &names, &scratch("kill"), |ts| {
        ts.iter().for_each(|(t, p)| mock.topic(t, *p))
    });
}

#[test]
fn broker_process_sigkill_mid_stream_then_restart_loses_nothing() {
    let Some((servers, _broker)) = broker_process("bp-kill") else { return };
    let names = Names::new("bp-kill");
    sigkill_mid_stream_then_restart(&servers, &names, &scratch("bp-kill-run"), |ts| create_topics(&servers, ts));
}

#[test]
fn broker_process_sigterm_drains_commits_and_exits_0() {
    let Some((servers, _broker)) = broker_process("bp-term") else { return };
    let names = Names::new("bp-term");
    sigterm_drains_and_commits(&servers, &names, &scratch("bp-term-run"), |ts| create_topics(&servers, ts));
}

/// The broker is killed (SIGKILL) and restarted under the running engine; then the engine is stopped with SIGTERM.
/// Needs a broker this test can restart (Tansu).
#[test]
fn broker_restart_under_the_running_engine_loses_nothing() {
    let Some((servers, broker)) = broker_process("bp-restart") else { return };
    let Some(mut broker) = broker else {
        eprintln!(
            "skipping broker_restart_under_the_running_engine_loses_nothing: FAULTLINE_TEST_KAFKA names a broker this test cannot restart"
        );
        return;
    };
    let names = Names::new("bp-restart");
    let dir = scratch("bp-restart-run");
    create_topics(&servers, &[(&names.input, PARTITIONS), (&names.anomalies, 2), (&names.dead, 1)]);
    let (records, points, garbage) = input(30);
    let (first, second) = records.split_at(records.len() / 2);
    let p = producer(&servers);
    produce(&p, &names.input, first);
    p.flush(Duration::from_secs(60)).unwrap();
    drop(p);
    let mut engine = spawn_engine(&dir, &config(&dir, &servers, &names, "0s"), 1);
    wait_outputs(&servers, &names.anomalies, 200);
    broker.kill();
    std::thread::sleep(Duration::from_secs(1));
    broker.up();
    let p = producer(&servers);
    produce(&p, &names.input, second);
    p.flush(Duration::from_secs(60)).unwrap();
    wait_committed(&servers, &names);
    assert!(engine.try_wait().unwrap().is_none(), "the engine should have survived the broker restart");
    sigterm(&engine);
    let status = wait_exit(&mut engine, Duration::from_secs(60), &dir, 1);
    assert!(status.success(), "{status}");
    let got = account(&servers, &names, &points, &garbage);
    assert_accounted(&got, &points, &garbage);
}
