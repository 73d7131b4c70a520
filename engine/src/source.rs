//! Sources of telemetry and the dead-letter output for records they cannot decode.
//!
//! Every source fills the same [`Batch`] type; a bad record is written to the dead letters with the reason and its
//! position, counted, and the stream goes on.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

use serde::Deserialize;
use serde_json::Value;
use tracing::warn;

use crate::clock::parse_time;
use crate::delivery::{Progress, Ticket};
use crate::error::{Error, Result};
use crate::kafka::producer::{KafkaProducer, Origin};
use crate::metrics::LatencySummary;
use crate::model::{Batch, Recent, SeriesKey, TimeMs, series_id, series_id_in, sort_labels};
use crate::sim::Simulator;

/// A source of telemetry batches.
pub trait Source: Send {
    /// Appends points to `batch` until it holds about `max` (it arrives empty, or, when the pipeline fills a large GPU
    /// batch in steps, holding the points of earlier calls). Returns `Ok(false)` once the input is exhausted (the
    /// batch may still hold its last points).
    fn next_batch(&mut self, batch: &mut Batch, max: usize, dead: &mut DeadLetters) -> Result<bool>;
    /// Human name, for logs and summaries.
    fn describe(&self) -> String;
    /// Called once before the first `next_batch` with the pipeline's completion tracker: [`Progress::done`] says
    /// which batches are scored and have their outputs acknowledged (what a committing source may commit).
    fn start(&mut self, _progress: Arc<Progress>) -> Result<()> {
        Ok(())
    }
    /// The points the last `next_batch` returned were dispatched as batch `seq`.
    fn sealed(&mut self, _seq: u64) {}
    /// End of the run, after every shard and the collector stopped and the sinks were flushed. `clean` is false
    /// after a failure: then only what `Progress` reports complete may be committed.
    fn finish(&mut self, _clean: bool) -> Result<()> {
        Ok(())
    }
    /// Change events (deploys, config changes) read since the last call, for sources that carry them (a Kafka
    /// source's change topics). Called after every `next_batch`; they travel to the incident tracker with that batch.
    fn take_changes(&mut self) -> Vec<crate::rca::ChangeEvent> {
        Vec::new()
    }
    /// Operator feedback (verdicts on anomaly events) read since the last call, for sources that carry it (a Kafka
    /// source's feedback topics). Called after every `next_batch`; it reaches the shards with that batch.
    fn take_feedback(&mut self) -> Vec<crate::feedback::Feedback> {
        Vec::new()
    }
    /// The batch being filled must be handed on before the source can add to it (a Kafka source between warm-up
    /// records and live ones: a batch is one or the other, see [`Batch::warm`]).
    fn must_seal(&self) -> bool {
        false
    }
    /// What the source shares with the metrics endpoint (a Kafka source: assignment and consumer lag).
    fn gauges(&self) -> Option<Arc<crate::exporter::SourceGauges>> {
        None
    }
    /// Ingest-to-output latency, for sources that measure it (µs).
    fn ingest_latency(&self) -> Option<LatencySummary> {
        None
    }
}

/// `source.max-future`: moves the points of `batch` stamped more than `ahead_ms` past this machine's clock to the
/// dead-letter output (`source`, `at`: the batch and the point's place in it), keeping the others in order. One point
/// with a clock far ahead would otherwise make every later point of its series late (skipped) until real time caught
/// up with it. Reads the clock once a batch; a batch with no such point is left untouched. A warm-up batch (points
/// read again, see [`Batch::warm`]) drops them without a dead letter: they had theirs when first read.
pub fn refuse_future(
    batch: &mut Batch,
    ahead_ms: TimeMs,
    dead: &mut DeadLetters,
    source: &str,
    at: &str,
) -> Result<()> {
    let now = crate::clock::wall_ms();
    let horizon = now.saturating_add(ahead_ms);
    if batch.times.iter().all(|&t| t <= horizon) {
        return Ok(());
    }
    // To the second; to the minute past an hour; in days past two days.
    let span = |ms: TimeMs| match ms.max(0) {
        ms if ms >= 172_800_000 => format!("{} days", ms / 86_400_000),
        ms => {
            let unit = if ms >= 3_600_000 { 60_000 } else { 1000 };
            humantime::format_duration(Duration::from_millis((ms / unit * unit) as u64)).to_string()
        }
    };
    let keep: Vec<bool> = batch.times.iter().map(|&t| t <= horizon).collect();
    for (i, _) in keep.iter().enumerate().filter(|(_, k)| !**k && !batch.warm) {
        let (key, t) = (&batch.keys[i], batch.times[i]);
        let reason = format!(
            "field `time`: {} is {} ahead of this machine's clock (source.max-future = {})",
            crate::clock::fmt_time(t),
            span(t.saturating_sub(now)),
            span(ahead_ms)
        );
        let labels: serde_json::Map<String, serde_json::Value> =
            key.labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(&**v))).collect();
        let raw = serde_json::json!({
            "time": t, "service": &*key.service, "metric": &*key.metric, "labels": labels, "value": batch.values[i],
        });
        dead.record(source, &format!("{at} point {}", i + 1), &reason, &raw.to_string())?;
    }
    batch.retain(|i| keep[i]);
    Ok(())
}

/// Undecodable records, one JSON object per line: `{"schema","source","at","reason","raw"}`; or, for a Kafka
/// source with `dead-letter.topic` set, the original records on a dead-letter topic.
pub struct DeadLetters {
    out: Box<dyn Write + Send>,
    count: u64,
    kafka: Option<(Arc<KafkaProducer>, String)>,
}

impl DeadLetters {
    /// `"-"` is standard error; anything else a file (created or truncated).
    pub fn open(path: &str) -> Result<Self> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stderr())
        } else {
            if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            Box::new(std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?))
        };
        Ok(Self { out, count: 0, kafka: None })
    }

    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self { out, count: 0, kafka: None }
    }

    /// Kafka input records go to `topic` through `producer`; anything else still goes to `out`.
    pub fn with_kafka(mut self, producer: Arc<KafkaProducer>, topic: &str) -> Self {
        self.kafka = Some((producer, topic.to_string()));
        self
    }

    /// Acknowledged once every dead letter sent to Kafka so far is delivered (`None`: the output is synchronous).
    pub fn ticket(&self) -> Option<Ticket> {
        self.kafka.as_ref().map(|(p, _)| p.tracker().ticket())
    }

    /// Records one undecodable Kafka record: to the dead-letter topic (bytes unchanged, headers naming topic,
    /// partition, offset and reason), or as a JSON line naming them.
    pub fn record_kafka(&mut self, origin: Origin<'_>, key: &[u8], raw: &[u8], reason: &str) -> Result<()> {
        match &self.kafka {
            Some((producer, topic)) => {
                self.count += 1;
                if self.count <= 10 || self.count.is_power_of_two() {
                    warn!(
                        topic = origin.topic,
                        partition = origin.partition,
                        offset = origin.offset,
                        reason,
                        total = self.count,
                        "Dead-lettered a malformed record."
                    );
                }
                producer.dead_letter(topic, origin, key, raw, reason)
            }
            None => {
                let at = format!("partition {} offset {}", origin.partition, origin.offset);
                self.record(origin.topic, &at, reason, &String::from_utf8_lossy(raw))
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Records one bad record. `at` names where it came from (e.g. `line 12`).
    pub fn record(&mut self, source: &str, at: &str, reason: &str, raw: &str) -> Result<()> {
        self.count += 1;
        if self.count <= 10 || self.count.is_power_of_two() {
            warn!(source, at, reason, total = self.count, "Dead-lettered a malformed record.");
        }
        let line = serde_json::json!({
            "schema": "faultline.dead-letter.v1",
            "source": source,
            "at": at,
            "reason": reason,
            "raw": raw,
        });
        writeln!(self.out, "{line}").map_err(|e| Error::io("dead-letter output", e))
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some((producer, _)) = &self.kafka {
            producer.flush()?;
        }
        self.out.flush().map_err(|e| Error::io("dead-letter output", e))
    }
}

/// The built-in simulator as a source: whole ticks until the batch holds at least `max` points.
pub struct SimSource {
    sim: Simulator,
}

impl SimSource {
    pub fn new(sim: Simulator) -> Self {
        Self { sim }
    }

    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }
}

impl Source for SimSource {
    fn next_batch(&mut self, batch: &mut Batch, max: usize, _dead: &mut DeadLetters) -> Result<bool> {
        while batch.len() < max {
            if !self.sim.next_tick(batch) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("simulator ({} series)", self.sim.series().len())
    }
}

/// One telemetry point in Faultline's JSON format.
///
/// `{"time": "2026-01-05T10:00:00Z" | 1767607200000, "service": "cart", "metric": "latency_p99_ms",
///   "labels": {"pod": "cart-1"}, "value": 12.5}`: `time` is RFC 3339 or integer Unix milliseconds; `labels` is
/// optional; other fields are ignored.
#[derive(Debug, Deserialize)]
struct JsonPoint<'a> {
    time: Value,
    #[serde(borrow)]
    service: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    metric: std::borrow::Cow<'a, str>,
    #[serde(default)]
    labels: Option<serde_json::Map<String, Value>>,
    value: Value,
}

/// A JSON point as [`PointDecoder`]'s fast path reads it: names and texts borrowed from the record (unless escaped),
/// `time` integer milliseconds or text, `value` a number, labels with text values, and no `serde_json::Value` or map
/// built per point. A point it does not read (a number or boolean label value, a wrong type anywhere) or whose fields
/// do not pass goes to [`JsonPoint`], which takes it or names the field at fault: the two give the same points
/// (`fast_and_general_json_points_decode_alike`).
#[derive(Deserialize)]
struct FastPoint<'a> {
    #[serde(borrow)]
    time: FastTime<'a>,
    #[serde(borrow)]
    service: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    metric: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    labels: Option<FastLabels<'a>>,
    value: f64,
}

/// A point's `time` on the fast path.
enum FastTime<'a> {
    Ms(TimeMs),
    Text(std::borrow::Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for FastTime<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = FastTime<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("integer milliseconds or RFC 3339 text")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                Ok(FastTime::Ms(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                i64::try_from(v).map(FastTime::Ms).map_err(|_| E::custom("time past i64"))
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(FastTime::Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(FastTime::Text(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// A point's labels on the fast path: name and text value pairs, in the record's order.
struct FastLabels<'a>(Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>);

/// A JSON string, borrowed where it has no escapes.
#[derive(Deserialize)]
struct FastText<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for FastLabels<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = FastLabels<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of text labels")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> std::result::Result<Self::Value, M::Error> {
                let mut pairs = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((FastText(k), FastText(v))) = m.next_entry()? {
                    pairs.push((k, v));
                }
                Ok(FastLabels(pairs))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Decodes one JSON point, interning its series key. Errors name the field.
pub struct PointDecoder {
    /// Interned keys, forgetting series not seen for a while (see [`Recent`]).
    keys: Recent<Arc<SeriesKey>>,
    label_buf: Vec<(String, String)>,
    /// Scratch of the fast path's series id (`series_id_in`).
    id_buf: Vec<u8>,
}

impl Default for PointDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl PointDecoder {
    pub fn new() -> Self {
        Self { keys: Recent::default(), label_buf: Vec::new(), id_buf: Vec::new() }
    }

    /// Decodes `text` (one JSON object) and appends it to `batch`.
    pub fn decode_into(&mut self, text: &str, batch: &mut Batch) -> std::result::Result<(), String> {
        if let Ok(p) = serde_json::from_str::<FastPoint>(text)
            && self.push_fast(p, batch)
        {
            return Ok(());
        }
        self.decode_into_general(text, batch)
    }

    /// [`Self::decode_into`] through [`JsonPoint`] alone.
    fn decode_into_general(&mut self, text: &str, batch: &mut Batch) -> std::result::Result<(), String> {
        let p: JsonPoint = serde_json::from_str(text).map_err(|e| format!("invalid JSON point: {e}"))?;
        self.push_point(&p, batch)
    }

    /// Decodes one record holding one point, an array of points, or newline-delimited points, all or nothing:
    /// on any error `batch` is left as it was and the reason names the point (`point 3: field `value`: …`).
    pub fn decode_record(&mut self, text: &str, batch: &mut Batch) -> std::result::Result<usize, String> {
        let start = batch.len();
        let result = self.decode_record_inner(text, batch);
        if result.is_err() {
            batch.truncate(start);
        }
        result.map(|()| batch.len() - start)
    }

    fn decode_record_inner(&mut self, text: &str, batch: &mut Batch) -> std::result::Result<(), String> {
        let text = text.trim_start();
        let start = batch.len();
        if self.decode_record_fast(text, batch) {
            return Ok(());
        }
        // The record as `JsonPoint`s: what the fast path does not take, and the reason for a bad point.
        batch.truncate(start);
        self.decode_record_general(text, batch)
    }

    /// [`Self::decode_record`]'s work through [`JsonPoint`] alone (`text` trimmed at the start).
    fn decode_record_general(&mut self, text: &str, batch: &mut Batch) -> std::result::Result<(), String> {
        if text.starts_with('[') {
            let points: Vec<JsonPoint> =
                serde_json::from_str(text).map_err(|e| format!("invalid JSON array of points: {e}"))?;
            for (i, p) in points.iter().enumerate() {
                self.push_point(p, batch).map_err(|e| format!("point {}: {e}", i + 1))?;
            }
            return Ok(());
        }
        let mut n = 0usize;
        for p in serde_json::Deserializer::from_str(text).into_iter::<JsonPoint>() {
            n += 1;
            let p = p.map_err(|e| format!("point {n}: invalid JSON point: {e}"))?;
            self.push_point(&p, batch).map_err(|e| format!("point {n}: {e}"))?;
        }
        if n == 0 {
            return Err("empty record: expected a JSON point, an array of points or newline-delimited points".into());
        }
        Ok(())
    }

    /// The whole record through [`FastPoint`]: false (some of its points perhaps appended) where a point does not
    /// read as one or does not pass, or where there is no point.
    fn decode_record_fast(&mut self, text: &str, batch: &mut Batch) -> bool {
        if text.starts_with('[') {
            let Ok(points) = serde_json::from_str::<Vec<FastPoint>>(text) else { return false };
            return points.into_iter().all(|p| self.push_fast(p, batch));
        }
        let mut n = 0usize;
        for p in serde_json::Deserializer::from_str(text).into_iter::<FastPoint>() {
            n += 1;
            if !p.is_ok_and(|p| self.push_fast(p, batch)) {
                return false;
            }
        }
        n > 0
    }

    /// Appends `p` if every field passes, as [`Self::push_point`] would; false (nothing appended) otherwise.
    fn push_fast(&mut self, p: FastPoint<'_>, batch: &mut Batch) -> bool {
        let time = match p.time {
            FastTime::Ms(t) => t,
            FastTime::Text(s) => match parse_time(&s) {
                Ok(t) => t,
                Err(_) => return false,
            },
        };
        if crate::clock::check_time(time).is_err()
            || !p.value.is_finite()
            || crate::model::value_problem(p.value).is_some()
            || p.service.is_empty()
            || p.metric.is_empty()
        {
            return false;
        }
        let mut labels = p.labels.map(|l| l.0).unwrap_or_default();
        sort_labels(&mut labels);
        let pairs = || labels.iter().map(|(k, v)| (&**k, &**v));
        let id = series_id_in(&mut self.id_buf, &p.service, &p.metric, pairs());
        let key = self.keys.get_or_insert_with(id, || Arc::new(SeriesKey::new(&p.service, &p.metric, pairs())));
        batch.push(key, time, p.value);
        true
    }

    fn push_point(&mut self, p: &JsonPoint<'_>, batch: &mut Batch) -> std::result::Result<(), String> {
        let time: TimeMs = match &p.time {
            Value::Number(n) => {
                n.as_i64().ok_or_else(|| format!("field `time`: {n} is not an integer of milliseconds"))?
            }
            Value::String(s) => parse_time(s).map_err(|e| format!("field `time`: {e}"))?,
            other => return Err(format!("field `time`: expected RFC 3339 text or integer milliseconds, got {other}")),
        };
        crate::clock::check_time(time).map_err(|e| format!("field `time`: {e}"))?;
        let value = match &p.value {
            Value::Number(n) => n.as_f64().filter(|v| v.is_finite()),
            _ => None,
        }
        .ok_or_else(|| format!("field `value`: expected a finite number, got {}", p.value))?;
        if let Some(problem) = crate::model::value_problem(value) {
            return Err(format!("field `value`: {problem}"));
        }
        if p.service.is_empty() {
            return Err("field `service`: must not be empty".into());
        }
        if p.metric.is_empty() {
            return Err("field `metric`: must not be empty".into());
        }
        self.label_buf.clear();
        if let Some(labels) = &p.labels {
            for (k, v) in labels {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(format!("field `labels.{k}`: expected text, got {other}")),
                };
                self.label_buf.push((k.clone(), v));
            }
            self.label_buf.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let id = series_id(&p.service, &p.metric, self.label_buf.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let label_buf = &self.label_buf;
        let key = self
            .keys
            .get_or_insert_with(id, || Arc::new(SeriesKey::new(&p.service, &p.metric, label_buf.iter().cloned())));
        batch.push(key, time, value);
        Ok(())
    }
}

/// Faultline JSON points, one per line, from a file or standard input.
pub struct JsonlSource {
    name: String,
    input: LineInput,
    line: Vec<u8>,
    line_no: u64,
    decoder: PointDecoder,
}

/// Where a JSON-lines source's lines come from.
enum LineInput {
    /// A file: read directly, a batch at a time (its reads never wait for data).
    Reader(Box<dyn BufRead + Send>),
    /// Standard input, which may be a live stream (`my-exporter | faultline run`): a thread reads it, and a batch is
    /// handed on at most [`LIVE_WAIT`] after its first line once no more lines have come, instead of once `batch-size`
    /// points have come. A stop (SIGTERM) is seen while no line comes.
    Live { from: Receiver<std::io::Result<Sent>>, chunk: Vec<u8>, at: usize, stop: Arc<AtomicBool> },
}

/// What a live input's reading thread sends: whole lines read together (as many as had come, up to [`CHUNK`] bytes),
/// or the start of a line longer than [`MAX_LINE`] (the rest of it read and dropped).
enum Sent {
    Lines(Vec<u8>),
    TooLong(Vec<u8>),
}

/// About how many bytes of lines a live input's reading thread sends at once.
const CHUNK: usize = 1 << 16;

/// The longest line a JSON-lines source reads whole (a point is a few hundred bytes); a longer one is dead-lettered
/// and skipped, so a stream without newlines cannot fill the memory.
pub const MAX_LINE: usize = 1 << 20;

/// How much of a dead-lettered line that is too long or not UTF-8 goes into the dead letter's `raw`.
const RAW_PREFIX: usize = 4096;

/// How long after its first line a live input's batch waits for more lines before it is handed on (the latency it
/// adds at most), and
/// how often a live input with no line coming looks for a stop.
pub const LIVE_WAIT: Duration = Duration::from_millis(5);
const LIVE_POLL: Duration = Duration::from_millis(100);

/// Chunks a live input's reading thread may be ahead of the pipeline (backpressure beyond them).
const LIVE_QUEUE: usize = 16;

impl JsonlSource {
    /// `"-"` reads standard input (live, see [`JsonlSource::live`]; `stop` ends it), a path a file.
    pub fn open(path: &str, stop: Arc<AtomicBool>) -> Result<Self> {
        if path == "-" {
            return Self::live("stdin", std::io::stdin(), stop);
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::from_reader(path, Box::new(BufReader::new(file))))
    }

    /// A source reading `reader` directly, for input that does not wait for data (a file).
    pub fn from_reader(name: impl Into<String>, reader: Box<dyn BufRead + Send>) -> Self {
        Self::with_input(name, LineInput::Reader(reader))
    }

    /// A source reading `reader` (a pipe, standard input) on a thread of its own, so that its batches go on as its
    /// lines come (see [`LineInput::Live`]); it ends at the end of the input, or once `stop` is set.
    pub fn live(name: &str, reader: impl std::io::Read + Send + 'static, stop: Arc<AtomicBool>) -> Result<Self> {
        let (tx, from) = bounded(LIVE_QUEUE);
        std::thread::Builder::new()
            .name(format!("read {name}"))
            .spawn(move || {
                let mut reader = BufReader::with_capacity(CHUNK, reader);
                let (mut lines, mut line) = (Vec::with_capacity(CHUNK), Vec::new());
                loop {
                    let read = read_line_capped(&mut reader, &mut line);
                    let sent = match read {
                        Ok(Some(false)) => {
                            lines.extend_from_slice(&line);
                            // Sent once the lines read fill a chunk, or before a read that may wait.
                            if lines.len() < CHUNK && !reader.buffer().is_empty() {
                                continue;
                            }
                            tx.send(Ok(Sent::Lines(std::mem::replace(&mut lines, Vec::with_capacity(CHUNK)))))
                        }
                        Ok(Some(true)) => {
                            // The lines before it first, in order.
                            let before = std::mem::replace(&mut lines, Vec::with_capacity(CHUNK));
                            if !before.is_empty() && tx.send(Ok(Sent::Lines(before))).is_err() {
                                return;
                            }
                            tx.send(Ok(Sent::TooLong(line[..RAW_PREFIX].to_vec())))
                        }
                        Ok(None) => {
                            if !lines.is_empty() {
                                let _ = tx.send(Ok(Sent::Lines(lines)));
                            }
                            return;
                        }
                        Err(e) => {
                            if !lines.is_empty() {
                                let _ = tx.send(Ok(Sent::Lines(std::mem::take(&mut lines))));
                            }
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    // The source is gone (the run ended): stop reading.
                    if sent.is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the {name} reader: {e}")))?;
        Ok(Self::with_input(name, LineInput::Live { from, chunk: Vec::new(), at: 0, stop }))
    }

    fn with_input(name: impl Into<String>, input: LineInput) -> Self {
        Self { name: name.into(), input, line: Vec::new(), line_no: 0, decoder: PointDecoder::new() }
    }

    /// The next line, into `self.line`; a live input waits at most until [`LIVE_WAIT`] after `filling` when the
    /// batch already holds points, and as long as it takes (looking for a stop) when it does not.
    fn next_line(&mut self, batch_empty: bool, filling: Instant) -> Result<NextLine> {
        match &mut self.input {
            LineInput::Reader(reader) => {
                match read_line_capped(reader.as_mut(), &mut self.line).map_err(|e| Error::io(&self.name, e))? {
                    Some(too_long) => Ok(NextLine::Line { too_long }),
                    None => Ok(NextLine::End),
                }
            }
            LineInput::Live { from, chunk, at, stop } => loop {
                if *at < chunk.len() {
                    let rest = &chunk[*at..];
                    let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
                    self.line.clear();
                    self.line.extend_from_slice(&rest[..end]);
                    *at += end;
                    return Ok(NextLine::Line { too_long: false });
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(NextLine::End);
                }
                let wait = if batch_empty { LIVE_POLL } else { LIVE_WAIT.saturating_sub(filling.elapsed()) };
                match from.recv_timeout(wait) {
                    Ok(Ok(Sent::Lines(lines))) => (*chunk, *at) = (lines, 0),
                    Ok(Ok(Sent::TooLong(start))) => {
                        self.line = start;
                        return Ok(NextLine::Line { too_long: true });
                    }
                    Ok(Err(e)) => return Err(Error::io(&self.name, e)),
                    Err(RecvTimeoutError::Timeout) if batch_empty => {}
                    Err(RecvTimeoutError::Timeout) => return Ok(NextLine::NotYet),
                    Err(RecvTimeoutError::Disconnected) => return Ok(NextLine::End),
                }
            },
        }
    }
}

/// What [`JsonlSource::next_line`] found.
enum NextLine {
    /// A line (`too_long`: longer than [`MAX_LINE`], only its start kept).
    Line { too_long: bool },
    /// A live input has no line for now: the batch goes on as it is.
    NotYet,
    /// The input ended, or was stopped.
    End,
}

/// Reads the next line of `reader` into `line` (cleared first), its newline included: `None` at the end of the
/// input, else whether it is longer than [`MAX_LINE`] (then `line` holds its first `MAX_LINE + 1` bytes, and the rest
/// of it is read and dropped).
fn read_line_capped(reader: &mut dyn BufRead, line: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    line.clear();
    let n = std::io::Read::take(&mut *reader, MAX_LINE as u64 + 1).read_until(b'\n', line)?;
    if n == 0 {
        return Ok(None);
    }
    let too_long = line.len() > MAX_LINE && line.last() != Some(&b'\n');
    if too_long {
        skip_line(reader)?;
    }
    Ok(Some(too_long))
}

/// Reads and drops the rest of a line, its newline included, without keeping it.
fn skip_line(reader: &mut dyn BufRead) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(at) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(at + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}

impl Source for JsonlSource {
    fn next_batch(&mut self, batch: &mut Batch, max: usize, dead: &mut DeadLetters) -> Result<bool> {
        let filling = Instant::now();
        while batch.len() < max {
            let too_long = match self.next_line(batch.is_empty(), filling)? {
                NextLine::Line { too_long } => too_long,
                NextLine::NotYet => return Ok(true),
                NextLine::End => return Ok(false),
            };
            self.line_no += 1;
            let at = || format!("line {}", self.line_no);
            if too_long {
                // Dead-lettered with its start; the rest of it was read and dropped, up to its newline.
                let raw = String::from_utf8_lossy(&self.line[..RAW_PREFIX]).into_owned();
                dead.record(&self.name, &at(), &format!("line longer than {MAX_LINE} bytes"), &raw)?;
                continue;
            }
            let Ok(text) = std::str::from_utf8(&self.line) else {
                let raw = String::from_utf8_lossy(&self.line[..self.line.len().min(RAW_PREFIX)]).into_owned();
                dead.record(&self.name, &at(), "line is not valid UTF-8", raw.trim_end())?;
                continue;
            };
            // A byte order mark (files saved by some Windows tools) starts the first line, not the point.
            let text = if self.line_no == 1 { text.trim_start_matches('\u{feff}') } else { text }.trim();
            if text.is_empty() {
                continue;
            }
            if let Err(reason) = self.decoder.decode_into(text, batch) {
                dead.record(&self.name, &at(), &reason, text)?;
            }
        }
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("jsonl {}", self.name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    /// A writer whose bytes the test reads back (shared with the sinks' tests).
    pub(crate) struct Buf(pub(crate) Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Points past `source.max-future` leave the batch, the others stay in order; a warm-up batch drops them
    /// without a dead letter.
    /// A JSON value for a point's field: usually what the field wants, sometimes any other type or an edge.
    fn json_field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            4 => prop::sample::select(vec![
                "\"cart\"", "\"svc-2\"", "\"a\\\"b\"", "\"\"", "\"p99 \\u00e9\"", "\"2026-01-05T10:00:00Z\"",
                "\"2026-01-05T10:00:00.25+01:00\"", "\"yesterday\"",
            ]).prop_map(String::from),
            4 => prop::sample::select(vec![
                "1767607200000", "-5", "12.5", "0", "1e30", "1e31", "-1e31", "1e400", "18446744073709551615",
                "1767607200000.0", "99999999999999999999999",
            ]).prop_map(String::from),
            1 => prop::sample::select(vec!["true", "null", "[]", "[1]", "{}", "{\"a\": 1}"]).prop_map(String::from),
        ]
    }

    fn json_labels() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let pair = (prop::sample::select(vec!["pod", "zone", "z\\u0041", "pod"]), json_field());
        prop_oneof![
            1 => Just(String::new()),
            1 => Just(", \"labels\": null".to_string()),
            4 => prop::collection::vec(pair, 0..4).prop_map(|pairs| {
                let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                format!(", \"labels\": {{{}}}", body.join(", "))
            }),
        ]
    }

    fn json_point() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let time = prop_oneof![
            3 => (0i64..3).prop_map(|k| (1_767_607_200_000 + k * 60_000).to_string()),
            1 => json_field(),
        ];
        let name = |good: &'static str| prop_oneof![4 => Just(format!("\"{good}\"")), 1 => json_field()];
        let value = prop_oneof![3 => (-1e3..1e3f64).prop_map(|v| v.to_string()), 1 => json_field()];
        (time, name("cart"), name("latency_ms"), json_labels(), value, any::<bool>()).prop_map(
            |(time, service, metric, labels, value, extra)| {
                let extra = if extra { ", \"note\": [1, {\"x\": null}]" } else { "" };
                format!("{{\"time\": {time}, \"service\": {service}, \"metric\": {metric}{labels}, \"value\": {value}{extra}}}")
            },
        )
    }

    /// What a decoder gave: its points (series, time, value bits), or its reason.
    fn decoded(
        r: std::result::Result<usize, String>,
        b: &Batch,
    ) -> std::result::Result<Vec<(String, i64, u64)>, String> {
        r?;
        Ok(b.keys.iter().zip(&b.times).zip(&b.values).map(|((k, &t), v)| (k.display_name(), t, v.to_bits())).collect())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        #[test]
        fn fast_and_general_json_points_decode_alike(
            points in proptest::collection::vec(json_point(), 1..4),
            shape in 0..3u8,
        ) {
            let text = match shape {
                0 => points[0].clone(),
                1 => format!("[{}]", points.join(", ")),
                _ => points.join("\n"),
            };
            let (mut fast, mut general) = (PointDecoder::new(), PointDecoder::new());
            let (mut a, mut b) = (Batch::default(), Batch::default());
            let got = decoded(fast.decode_record(&text, &mut a), &a);
            let start = b.len();
            let r = general.decode_record_general(text.trim_start(), &mut b);
            if r.is_err() {
                b.truncate(start);
            }
            let want = decoded(r.map(|()| b.len()), &b);
            proptest::prop_assert_eq!(&got, &want);
            // One point a line, as a JSON-lines file gives them.
            let (mut a, mut b) = (Batch::default(), Batch::default());
            let got = fast.decode_into(&points[0], &mut a).map(|()| a.len());
            let want = general.decode_into_general(&points[0], &mut b).map(|()| b.len());
            proptest::prop_assert_eq!(decoded(got, &a), decoded(want, &b));
        }
    }

    #[test]
    fn points_stamped_past_the_horizon_are_refused() {
        let key = Arc::new(SeriesKey::new("a", "m", [("pod", "p1")]));
        let now = crate::clock::wall_ms();
        let batch = |warm| {
            let mut b = Batch::default();
            for (t, v) in [(now - 60_000, 1.0), (now + 7_230_000, 2.0), (now + 60_000, 3.0), (TimeMs::MAX, 4.0)] {
                b.push(&key, t, v);
            }
            b.warm = warm;
            b
        };
        let buf = Buf::default();
        let mut dead = DeadLetters::to_writer(Box::new(buf.clone()));
        let mut b = batch(false);
        refuse_future(&mut b, 600_000, &mut dead, "src", "batch 7").unwrap();
        assert_eq!((b.values.as_slice(), b.times[1]), ([1.0, 3.0].as_slice(), now + 60_000));
        assert_eq!(dead.count(), 2);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            (lines[0]["at"].as_str(), lines[1]["at"].as_str()),
            (Some("batch 7 point 2"), Some("batch 7 point 4"))
        );
        let reason = lines[0]["reason"].as_str().unwrap();
        assert!(reason.contains(" is 2h ahead of this machine's clock (source.max-future = 10m)"), "{reason}");
        let raw: Value = serde_json::from_str(lines[0]["raw"].as_str().unwrap()).unwrap();
        assert_eq!((raw["labels"]["pod"].as_str(), raw["value"].as_f64()), (Some("p1"), Some(2.0)));
        let mut b = batch(true);
        refuse_future(&mut b, 600_000, &mut dead, "src", "batch 8").unwrap();
        assert_eq!((b.len(), dead.count()), (2, 2), "a warm-up batch's refused points had their dead letters");
        let mut b = batch(false);
        refuse_future(&mut b, TimeMs::MAX, &mut dead, "src", "batch 9").unwrap();
        assert_eq!((b.len(), dead.count()), (4, 2), "no horizon past the end of time");
    }

    #[test]
    fn bad_lines_are_dead_lettered_and_the_rest_goes_on() {
        let input = concat!(
            r#"{"time":"2026-01-05T00:00:00Z","service":"a","metric":"m","value":1.5}"#,
            "\n{not json\n",
            r#"{"time":"2026-01-05T00:01:00Z","service":"a","metric":"m","value":"high"}"#,
            "\n\n",
            r#"{"time":1767571320000,"service":"a","metric":"m","labels":{"pod":"p1"},"value":2}"#,
            "\n",
            r#"{"time":"noon","service":"a","metric":"m","value":2}"#,
            "\n",
            r#"{"time":-86400000,"service":"a","metric":"m","value":2}"#,
            "\n",
            r#"{"time":1767571380000,"service":"a","metric":"m","value":1e308}"#,
            "\n",
            r#"{"time":1767571440000,"service":"a","metric":"m","value":-2e30}"#,
            "\n",
            r#"{"time":1767571500000,"service":"a","metric":"m","value":-1e30}"#,
            "\n"
        );
        let mut src = JsonlSource::from_reader("test", Box::new(std::io::Cursor::new(input.as_bytes().to_vec())));
        let buf = Buf::default();
        let mut dead = DeadLetters::to_writer(Box::new(buf.clone()));
        let mut batch = Batch::default();
        assert!(!src.next_batch(&mut batch, 100, &mut dead).unwrap());
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.values, vec![1.5, 2.0, -1e30], "±1e30 is a value");
        assert_ne!(batch.ids[0], batch.ids[1], "labels are part of the identity");
        assert_eq!(dead.count(), 6);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["at"], "line 2");
        assert!(lines[1]["reason"].as_str().unwrap().contains("field `value`"), "{}", lines[1]);
        assert_eq!(lines[2]["at"], "line 6");
        assert!(lines[2]["reason"].as_str().unwrap().contains("field `time`"));
        assert_eq!(lines[3]["at"], "line 7");
        assert!(lines[3]["reason"].as_str().unwrap().contains("outside 1970-01-01"), "{}", lines[3]);
        // Past the range the models hold (1e308 would be an infinity in their f32 state).
        for (line, at) in lines[4..].iter().zip(["line 8", "line 9"]) {
            assert_eq!(line["at"], at);
            let reason = line["reason"].as_str().unwrap();
            assert!(reason.starts_with("field `value`: ") && reason.contains("past ±1e30"), "{reason}");
        }
    }

    /// A line that is not UTF-8, or longer than `MAX_LINE`, is one dead letter (with its start in `raw`); the lines
    /// after it are read as usual, the first one included. A byte order mark before the first line is not part of it.
    #[test]
    fn a_line_not_utf8_or_too_long_is_one_dead_letter_and_nothing_else_is_lost() {
        let point = |m: i64| {
            format!(
                "{{\"time\":{},\"service\":\"a\",\"metric\":\"m\",\"value\":{m}}}\n",
                1_767_571_200_000 + m * 60_000
            )
        };
        let mut input = b"\xef\xbb\xbf".to_vec();
        input.extend(point(0).bytes());
        input.extend_from_slice(b"{\"service\":\"a\xff\xfe\"}\n");
        input.extend(point(1).bytes());
        input.extend(std::iter::repeat_n(b'y', 3 * MAX_LINE));
        input.push(b'\n');
        input.extend(point(2).bytes());
        input.extend(std::iter::repeat_n(b'z', MAX_LINE + 1));
        let mut src = JsonlSource::from_reader(
            "test",
            Box::new(std::io::BufReader::with_capacity(1000, std::io::Cursor::new(input))),
        );
        let buf = Buf::default();
        let mut dead = DeadLetters::to_writer(Box::new(buf.clone()));
        let mut batch = Batch::default();
        assert!(!src.next_batch(&mut batch, 100, &mut dead).unwrap());
        assert_eq!(batch.values, vec![0.0, 1.0, 2.0], "every good line is read");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let got: Vec<(&str, &str)> =
            lines.iter().map(|l| (l["at"].as_str().unwrap(), l["reason"].as_str().unwrap())).collect();
        let long = format!("line longer than {MAX_LINE} bytes");
        assert_eq!(got, [("line 2", "line is not valid UTF-8"), ("line 4", long.as_str()), ("line 6", long.as_str())]);
        assert_eq!(lines[0]["raw"], "{\"service\":\"a\u{fffd}\u{fffd}\"}");
        assert_eq!(lines[1]["raw"].as_str().unwrap().len(), RAW_PREFIX);
    }

    /// A live input (a pipe) hands on the lines that have come without waiting for a full batch or the end, goes on
    /// with later lines, and ends at a stop or at the end of the input.
    #[test]
    fn a_live_input_hands_on_what_has_come_and_ends_at_a_stop_or_its_end() {
        use std::io::Write as _;
        let point = |m: i64| {
            format!(
                "{{\"time\":{},\"service\":\"a\",\"metric\":\"m\",\"value\":{m}}}\n",
                1_767_571_200_000 + m * 60_000
            )
        };
        let run = |stop_it: bool| {
            let (reader, mut writer) = std::io::pipe().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let mut src = JsonlSource::live("pipe", reader, Arc::clone(&stop)).unwrap();
            let mut dead = DeadLetters::to_writer(Box::new(Buf::default()));
            let mut batch = Batch::default();
            writer.write_all((point(0) + &point(1) + &point(2)).as_bytes()).unwrap();
            let started = Instant::now();
            assert!(src.next_batch(&mut batch, 4096, &mut dead).unwrap(), "more to come");
            assert_eq!(batch.values, [0.0, 1.0, 2.0]);
            assert!(started.elapsed() < Duration::from_secs(5), "handed on without the end of the input");
            batch.clear();
            writer.write_all(point(3).as_bytes()).unwrap();
            assert!(src.next_batch(&mut batch, 4096, &mut dead).unwrap());
            assert_eq!(batch.values, [3.0]);
            batch.clear();
            // A line too long between two points: one dead letter, in its place.
            let mut long = vec![b'y'; MAX_LINE + 10];
            long.push(b'\n');
            let writing = std::thread::spawn(move || {
                writer.write_all(&long).unwrap();
                writer.write_all(point(4).as_bytes()).unwrap();
                writer
            });
            while batch.is_empty() {
                assert!(src.next_batch(&mut batch, 4096, &mut dead).unwrap());
            }
            let writer = writing.join().unwrap();
            assert_eq!((batch.values.as_slice(), dead.count()), ([4.0].as_slice(), 1));
            assert_eq!(src.line_no, 6, "the long line counted as line 5");
            batch.clear();
            if stop_it {
                // Nothing comes; the stop is seen while waiting for a line.
                stop.store(true, Ordering::Relaxed);
            } else {
                drop(writer);
            }
            assert!(!src.next_batch(&mut batch, 4096, &mut dead).unwrap(), "ended");
            assert!(batch.is_empty());
        };
        run(true);
        run(false);
    }
}
