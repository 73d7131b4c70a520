//! The Kafka source: a consumer group over telemetry topics, committing only what is scored and delivered.
//!
//! Offsets. For every assigned partition the source knows `next`, the offset after the last record it took into a
//! batch or dead-lettered. When the pipeline seals a batch, the source files a *mark*: the positions at that moment,
//! the batch's sequence number and a ticket for the dead letters sent so far. A mark becomes committable once
//! [`Progress::done`] says its batch and every earlier one were scored with their outputs acknowledged, and its
//! dead letters were acknowledged too. Commits are asynchronous every `commit-interval`, synchronous on revoke and
//! at the end. A record is therefore committed only after everything up to it is scored (or dead-lettered) and
//! its outputs are on the broker: at-least-once, nothing lost.
//!
//! Rebalance (revoke). librdkafka calls back inside `poll`, possibly while a batch is half built. The callback
//! waits (up to `drain-timeout`) until every sealed batch and dead letter is acknowledged, commits synchronously,
//! and the records of the half-built batch that belong to revoked partitions are removed from it afterwards (and
//! their offsets not committed), so the partition's next owner starts exactly where this instance stopped.
//!
//! Change topics. Records of `change-topics` are change events (deploys, config changes), not telemetry: they are
//! decoded into [`ChangeEvent`]s and handed to the pipeline with the batch they were read with
//! ([`Source::take_changes`]), so the incident tracker joins them like the changes of a file. A change record in
//! the open batch counts as that batch's record for commits and revokes (an empty run), so its offset is committed
//! only once the batch it travels with is complete. Malformed change records are dead-lettered with the reason.
//!
//! Feedback topics. Records of `feedback-topics` are operator verdicts on anomaly events
//! ([`crate::feedback::Feedback`]), handled like change records: decoded, handed to the pipeline with the batch they
//! were read with ([`Source::take_feedback`]), which routes each to the shard that owns its service; committed with
//! that batch; dead-lettered with the reason when malformed.
//!
//! Shutdown. A stop flag (SIGTERM/SIGINT) or `stop-when-idle` makes `next_batch` return its last batch and report
//! the end of input; the pipeline drains the shards and the collector, the sinks flush the producer, and
//! [`Source::finish`] commits the final positions and closes the consumer (leaving the group).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::producer::Origin;
use super::{client_config, is_transient, kafka_error};
use crate::clock;
use crate::config::{KafkaConfig, KafkaFormat, KafkaSourceConfig};
use crate::delivery::{AckTracker, Progress, Ticket};
use crate::error::Result;
use crate::feedback::Feedback;
use crate::metrics::{LatencySummary, latency_histogram};
use crate::model::Batch;
use crate::otlp::OtlpDecoder;
use crate::rca::ChangeEvent;
use crate::source::{DeadLetters, PointDecoder, Source};

/// Poll timeout while no batch is open (bounds how late a stop flag or idle commit is noticed).
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Poll timeout while nothing is open but sealed batches are still completing.
const PENDING_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
struct Part {
    topic: Arc<str>,
    partition: i32,
    /// Offset after the last record taken into a batch or dead-lettered; -1 before the first.
    next: i64,
    /// Last offset this instance committed synchronously; -1 if none.
    committed: i64,
}

/// Points of one record in the open batch.
#[derive(Debug, Clone, Copy)]
struct Run {
    part: usize,
    offset: i64,
    start: usize,
    end: usize,
}

#[derive(Debug)]
struct Mark {
    /// Batches `0..after` must be complete.
    after: u64,
    dead_letters: Option<Ticket>,
    /// (topic, partition, next offset) at the moment the batch was sealed.
    position: Vec<(Arc<str>, i32, i64)>,
}

/// Offsets and marks, shared between the source thread and the rebalance callback (which runs inside `poll` on the
/// same thread, so the lock is never contended; it only satisfies the borrow rules).
#[derive(Debug, Default)]
struct Book {
    parts: Vec<Part>,
    runs: Vec<Run>,
    marks: std::collections::VecDeque<Mark>,
    /// Batches sealed so far (the next sequence number).
    sealed: u64,
    /// Partitions revoked while a batch was open: their runs must be cut out of it.
    revoked_in_open_batch: Vec<(Arc<str>, i32)>,
}

impl Book {
    fn part_index(&mut self, topic: &str, partition: i32) -> usize {
        if let Some(i) = self.parts.iter().position(|p| p.partition == partition && &*p.topic == topic) {
            return i;
        }
        self.parts.push(Part { topic: Arc::from(topic), partition, next: -1, committed: -1 });
        self.parts.len() - 1
    }

    fn snapshot(&self) -> Vec<(Arc<str>, i32, i64)> {
        self.parts.iter().filter(|p| p.next >= 0).map(|p| (Arc::clone(&p.topic), p.partition, p.next)).collect()
    }

    /// The newest position all of whose records are complete, popping the marks it covers. `open_batch_empty`:
    /// no record is waiting in a half-built batch, so the current positions count once everything sealed is done.
    fn committable(
        &mut self,
        done: u64,
        dead_letters: Option<&Ticket>,
        open_batch_empty: bool,
    ) -> Option<Vec<(Arc<str>, i32, i64)>> {
        let mut best = None;
        while let Some(m) = self.marks.front() {
            if m.after > done || !m.dead_letters.as_ref().is_none_or(Ticket::is_acked) {
                break;
            }
            best = self.marks.pop_front().map(|m| m.position);
        }
        if self.marks.is_empty() && done >= self.sealed && open_batch_empty && dead_letters.is_none_or(Ticket::is_acked)
        {
            best = Some(self.snapshot());
        }
        best
    }
}

/// Consumer callbacks: drain and commit on revoke, log errors through `tracing`.
pub struct GroupContext {
    book: Arc<Mutex<Book>>,
    progress: Mutex<Option<Arc<Progress>>>,
    dead_letters: Option<Arc<AckTracker>>,
    drain_timeout: Duration,
    /// Set by `finish` once the final commit is done: the revoke that closing the consumer causes has nothing left
    /// to drain or commit.
    closed: AtomicBool,
    /// When the current (non-empty) assignment began; `None` while nothing is assigned. `stop-when-idle` counts
    /// quiet time only while partitions are assigned.
    assigned_at: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(%error, reason, "Kafka consumer error (librdkafka retries by itself).");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        *lock(&self.assigned_at) = None;
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let revoked: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        info!(partitions = revoked.len(), "Partitions revoked: draining and committing.");
        let progress = lock(&self.progress).clone();
        let mut book = lock(&self.book);
        // 1. Everything sealed is scored and acknowledged, and so are the dead letters.
        let drained = progress.as_ref().is_none_or(|p| p.wait_done(book.sealed, self.drain_timeout))
            && self.dead_letters.as_ref().is_none_or(|t| t.wait_all(self.drain_timeout));
        if !drained {
            warn!("Drain before revoke timed out; the next owner may re-process some records (at-least-once).");
        }
        // 2. Commit what is complete. Records of the open batch are excluded: for a partition with records in it,
        //    commit the offset of its first such record; those records are cut from the batch after `poll`.
        let done = progress.as_ref().map_or(0, |p| p.done());
        let dl = self.dead_letters.as_ref().map(|t| t.ticket());
        let mut first_open: Vec<(usize, i64)> = Vec::new();
        for r in &book.runs {
            if !first_open.iter().any(|(p, _)| *p == r.part) {
                first_open.push((r.part, r.offset));
            }
        }
        if drained {
            // Everything sealed is complete: the current positions, pulled back to the open batch's records.
            book.marks.clear();
            for (part, offset) in &first_open {
                book.parts[*part].next = *offset;
            }
            let position = book.snapshot();
            commit(consumer, &mut book, &position, CommitMode::Sync);
        } else if let Some(position) = book.committable(done, dl.as_ref(), false) {
            commit(consumer, &mut book, &position, CommitMode::Sync);
        }
        // 3. Forget the revoked partitions; their runs leave the open batch after `poll` returns.
        for (topic, partition) in revoked {
            if book.runs.iter().any(|r| {
                let p = &book.parts[r.part];
                p.partition == partition && *p.topic == *topic
            }) {
                book.revoked_in_open_batch.push((Arc::from(topic.as_str()), partition));
            }
        }
        let keep: Vec<bool> = book
            .parts
            .iter()
            .map(|p| !tpl.elements().iter().any(|e| e.partition() == p.partition && e.topic() == &*p.topic))
            .collect();
        // Marks hold positions by name, runs by index: keep indices stable by only resetting revoked parts.
        for (p, keep) in book.parts.iter_mut().zip(keep) {
            if !keep {
                p.next = -1;
                p.committed = -1;
            }
        }
        for m in book.marks.iter_mut() {
            m.position.retain(|(t, p, _)| !tpl.elements().iter().any(|e| e.partition() == *p && e.topic() == &**t));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<String> =
                    tpl.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
                info!(partitions = %parts.join(","), "Partitions assigned.");
                let _ = consumer;
                if tpl.count() > 0 {
                    *lock(&self.assigned_at) = Some(Instant::now());
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(%e, "Rebalance error."),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // A failed commit is retried with the next one; nothing is lost, at worst re-processed.
            warn!(%e, "Offset commit failed; will retry with the next commit.");
        }
    }
}

fn commit(consumer: &BaseConsumer<GroupContext>, book: &mut Book, position: &[(Arc<str>, i32, i64)], mode: CommitMode) {
    let mut tpl = TopicPartitionList::with_capacity(position.len());
    let mut changed = Vec::new();
    for (topic, partition, next) in position {
        let Some(i) = book.parts.iter().position(|p| p.partition == *partition && p.topic == *topic) else {
            continue;
        };
        if book.parts[i].committed != *next && *next >= 0 {
            if tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)).is_err() {
                continue;
            }
            changed.push((i, *next));
        }
    }
    if changed.is_empty() {
        return;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            // Only a synchronous commit is known to have succeeded; an asynchronous one may still be refused (e.g.
            // mid-rebalance), so its offsets are sent again next time instead of being taken as committed.
            if matches!(mode, CommitMode::Sync) {
                for (i, next) in changed {
                    book.parts[i].committed = next;
                }
            }
            debug!(partitions = tpl.count(), ?mode, "Committed offsets.");
        }
        Err(e) => warn!(%e, "Offset commit failed; will retry with the next commit."),
    }
}

/// A consumer group over telemetry topics; see the module docs for offsets, rebalance and shutdown.
pub struct KafkaSource {
    // Declared first so it drops (leaving the group) before anything it may reference.
    consumer: BaseConsumer<GroupContext>,
    book: Arc<Mutex<Book>>,
    cfg: KafkaSourceConfig,
    stop: Arc<AtomicBool>,
    progress: Option<Arc<Progress>>,
    json: PointDecoder,
    otlp: OtlpDecoder,
    last_commit: Instant,
    last_record: Instant,
    records: u64,
    /// (batch seq, when its first record was taken) for batches not yet complete.
    pending_latency: std::collections::VecDeque<(u64, Instant)>,
    open_since: Option<Instant>,
    latency: Histogram<u64>,
    transient_errors: u64,
    /// Change events read since the pipeline last took them.
    changes: Vec<ChangeEvent>,
    change_records: u64,
    /// Operator feedback read since the pipeline last took it.
    feedback: Vec<Feedback>,
    feedback_records: u64,
}

impl KafkaSource {
    /// Joins the group and subscribes. `dead_letters` is the tracker of a Kafka dead-letter output, if any (a
    /// revoke waits for it). `stop` is polled between records: set it to drain, commit and end.
    pub fn new(
        kafka: &KafkaConfig,
        cfg: &KafkaSourceConfig,
        dead_letters: Option<Arc<AckTracker>>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self> {
        let book = Arc::new(Mutex::new(Book::default()));
        let ctx = GroupContext {
            book: Arc::clone(&book),
            progress: Mutex::new(None),
            dead_letters,
            drain_timeout: cfg.drain_timeout.0,
            closed: AtomicBool::new(false),
            assigned_at: Mutex::new(None),
        };
        let client = client_config(
            kafka,
            &[("auto.offset.reset", "earliest"), ("client.id", "faultline"), ("enable.partition.eof", "false")],
            &cfg.properties,
            &[
                ("group.id", cfg.group_id.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
        );
        let consumer: BaseConsumer<GroupContext> =
            client.create_with_context(ctx).map_err(|e| kafka_error("cannot create the Kafka consumer", &e))?;
        let topics: Vec<&str> =
            cfg.topics.iter().chain(&cfg.change_topics).chain(&cfg.feedback_topics).map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| kafka_error(&format!("cannot subscribe to {topics:?}"), &e))?;
        info!(topics = ?topics, group = %cfg.group_id, "Subscribed.");
        Ok(Self {
            consumer,
            book,
            cfg: cfg.clone(),
            stop,
            progress: None,
            json: PointDecoder::new(),
            otlp: OtlpDecoder::new(),
            last_commit: Instant::now(),
            last_record: Instant::now(),
            records: 0,
            pending_latency: Default::default(),
            open_since: None,
            latency: latency_histogram(),
            transient_errors: 0,
            changes: Vec::new(),
            change_records: 0,
            feedback: Vec::new(),
            feedback_records: 0,
        })
    }

    /// Records latency of completed batches and commits what is complete, if the interval has passed or `force`.
    fn progress_tick(&mut self, open_batch_empty: bool, dead: &DeadLetters, force: bool) {
        let Some(progress) = &self.progress else { return };
        let done = progress.done();
        while let Some(&(seq, since)) = self.pending_latency.front() {
            if seq >= done {
                break;
            }
            let _ = self.latency.record((clock::elapsed_ns(since) / 1000).max(1));
            self.pending_latency.pop_front();
        }
        if !force && self.last_commit.elapsed() < self.cfg.commit_interval.0 {
            return;
        }
        self.last_commit = Instant::now();
        let ticket = dead.ticket();
        let mut book = lock(&self.book);
        if let Some(position) = book.committable(done, ticket.as_ref(), open_batch_empty) {
            commit(&self.consumer, &mut book, &position, if force { CommitMode::Sync } else { CommitMode::Async });
        }
    }
}

/// Decodes one record's payload into `batch` (all or nothing).
fn decode(
    format: KafkaFormat,
    json: &mut PointDecoder,
    otlp: &mut OtlpDecoder,
    payload: &[u8],
    batch: &mut Batch,
) -> std::result::Result<usize, String> {
    let format = match format {
        KafkaFormat::Auto => sniff(payload),
        f => f,
    };
    match format {
        KafkaFormat::Json => {
            let text = std::str::from_utf8(payload).map_err(|e| format!("record is not UTF-8 JSON: {e}"))?;
            json.decode_record(text, batch)
        }
        KafkaFormat::OtlpProto => otlp.decode_proto(payload, batch),
        KafkaFormat::OtlpJson | KafkaFormat::Auto => otlp.decode_json(payload, batch),
    }
}

/// Decodes a change-topic record: one JSON change event, or several newline-delimited (all or nothing).
fn decode_changes(payload: &[u8]) -> std::result::Result<Vec<ChangeEvent>, String> {
    decode_records(payload, "change event", ChangeEvent::parse)
}

/// Decodes a feedback-topic record: one JSON verdict, or several newline-delimited (all or nothing).
fn decode_feedback(payload: &[u8]) -> std::result::Result<Vec<Feedback>, String> {
    decode_records(payload, "feedback", Feedback::parse)
}

/// Decodes a record of `what`s: one JSON object, or several newline-delimited (all or nothing). The error starts
/// with `what` (and the line, when there are several).
fn decode_records<T>(
    payload: &[u8],
    what: &str,
    parse: fn(&str) -> std::result::Result<T, String>,
) -> std::result::Result<Vec<T>, String> {
    let text = std::str::from_utf8(payload).map_err(|e| format!("{what}: record is not UTF-8 JSON: {e}"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(format!("{what}: empty record"));
    }
    let many = lines.len() > 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            parse(l).map_err(|e| if many { format!("{what} on line {}: {e}", i + 1) } else { format!("{what}: {e}") })
        })
        .collect()
}

/// Cuts the records of partitions revoked during `poll` out of the open batch.
fn cut_revoked(book: &Mutex<Book>, batch: &mut Batch) {
    {
        let mut book = lock(book);
        if book.revoked_in_open_batch.is_empty() {
            return;
        }
        let revoked = std::mem::take(&mut book.revoked_in_open_batch);
        let is_revoked = |p: &Part| revoked.iter().any(|(t, n)| *n == p.partition && **t == *p.topic);
        let runs = std::mem::take(&mut book.runs);
        let mut out = Batch::with_capacity(batch.len());
        let mut kept = Vec::with_capacity(runs.len());
        for r in runs {
            if is_revoked(&book.parts[r.part]) {
                continue;
            }
            let start = out.len();
            for i in r.start..r.end {
                out.push(&batch.keys[i], batch.times[i], batch.values[i]);
            }
            kept.push(Run { start, end: out.len(), ..r });
        }
        let cut = batch.len() - out.len();
        std::mem::swap(batch, &mut out);
        book.runs = kept;
        info!(points = cut, "Dropped the open batch's points of revoked partitions (their next owner reads them).");
    }
}

/// `auto` format: OTLP/JSON if the record is a JSON object starting with `resourceMetrics`, Faultline JSON if it
/// is other JSON, OTLP protobuf otherwise.
fn sniff(payload: &[u8]) -> KafkaFormat {
    let text = payload.trim_ascii_start();
    match text.first() {
        Some(b'[') => KafkaFormat::Json,
        Some(b'{') => {
            let inner = text[1..].trim_ascii_start();
            if inner.starts_with(b"\"resourceMetrics\"") || inner.starts_with(b"\"resource_metrics\"") {
                KafkaFormat::OtlpJson
            } else {
                KafkaFormat::Json
            }
        }
        _ => KafkaFormat::OtlpProto,
    }
}

impl Source for KafkaSource {
    fn start(&mut self, progress: Arc<Progress>) -> Result<()> {
        *lock(&self.consumer.context().progress) = Some(Arc::clone(&progress));
        self.progress = Some(progress);
        Ok(())
    }

    fn next_batch(&mut self, batch: &mut Batch, max: usize, dead: &mut DeadLetters) -> Result<bool> {
        self.progress_tick(true, dead, false);
        self.open_since = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                info!("Stop requested: draining.");
                return Ok(false);
            }
            let idle = self.cfg.stop_when_idle.0;
            let assigned_at = *lock(&self.consumer.context().assigned_at);
            if !idle.is_zero()
                && batch.is_empty()
                && assigned_at.is_some_and(|a| a.elapsed() >= idle && self.last_record.elapsed() >= idle)
            {
                info!(records = self.records, "No record for stop-when-idle: draining.");
                return Ok(false);
            }
            let timeout = match self.open_since {
                Some(t) => match self.cfg.max_wait.0.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Ok(true),
                },
                // While sealed batches are in flight, come back soon to notice their completion (latency, commits).
                None if batch.is_empty() && !self.pending_latency.is_empty() => PENDING_POLL,
                None if batch.is_empty() => IDLE_POLL,
                None => return Ok(true),
            };
            let polled = self.consumer.poll(timeout);
            cut_revoked(&self.book, batch);
            if batch.is_empty() {
                self.open_since = None;
            }
            match polled {
                None => {
                    if batch.is_empty() {
                        // Idle: hand back an empty batch so completed work is committed.
                        return Ok(true);
                    }
                }
                Some(Ok(msg)) => {
                    self.records += 1;
                    self.last_record = Instant::now();
                    let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
                    let payload = msg.payload().unwrap_or(&[]);
                    let start = batch.len();
                    let part = lock(&self.book).part_index(topic, partition);
                    let is_change =
                        !self.cfg.change_topics.is_empty() && self.cfg.change_topics.iter().any(|t| t == topic);
                    let is_feedback =
                        !self.cfg.feedback_topics.is_empty() && self.cfg.feedback_topics.iter().any(|t| t == topic);
                    let decoded = if is_change {
                        decode_changes(payload).map(|c| {
                            self.change_records += 1;
                            self.changes.extend(c);
                            // An empty run: the record belongs to the open batch for commits and revokes.
                            lock(&self.book).runs.push(Run { part, offset, start, end: start });
                            0
                        })
                    } else if is_feedback {
                        decode_feedback(payload).map(|f| {
                            self.feedback_records += 1;
                            self.feedback.extend(f);
                            // Likewise an empty run of the open batch.
                            lock(&self.book).runs.push(Run { part, offset, start, end: start });
                            0
                        })
                    } else {
                        decode(self.cfg.format, &mut self.json, &mut self.otlp, payload, batch)
                    };
                    match decoded {
                        Ok(_) if batch.len() > start => {
                            if self.open_since.is_none() {
                                self.open_since = Some(Instant::now());
                            }
                            lock(&self.book).runs.push(Run { part, offset, start, end: batch.len() });
                        }
                        Ok(_) => {}
                        Err(reason) => {
                            let origin = Origin { topic, partition, offset };
                            dead.record_kafka(origin, msg.key().unwrap_or(&[]), payload, &reason)?;
                        }
                    }
                    lock(&self.book).parts[part].next = offset + 1;
                    drop(msg);
                    if batch.len() >= max {
                        return Ok(true);
                    }
                    if let Some(p) = &self.progress
                        && self.pending_latency.front().is_some_and(|(seq, _)| *seq < p.done())
                    {
                        let idle = batch.is_empty() && self.changes.is_empty() && self.feedback.is_empty();
                        self.progress_tick(idle, dead, false);
                    }
                }
                Some(Err(e)) => {
                    let code = e.rdkafka_error_code();
                    if code.is_some_and(is_transient) || !matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                        self.transient_errors += 1;
                        if self.transient_errors <= 10 || self.transient_errors.is_power_of_two() {
                            warn!(%e, total = self.transient_errors, "Kafka consumer error; continuing.");
                        }
                        if batch.is_empty() {
                            return Ok(true);
                        }
                    } else {
                        return Err(kafka_error("consuming", &e));
                    }
                }
            }
        }
    }

    fn sealed(&mut self, seq: u64) {
        let since = self.open_since.unwrap_or_else(Instant::now);
        self.pending_latency.push_back((seq, since));
        let mut book = lock(&self.book);
        book.runs.clear();
        book.sealed = seq + 1;
        let position = book.snapshot();
        // Dead letters sent so far are covered by the collector's tickets only if they share its producer; file
        // our own ticket for them in any case.
        let dead_letters = self.consumer.context().dead_letters.as_ref().map(|t| t.ticket());
        book.marks.push_back(Mark { after: seq + 1, dead_letters, position });
    }

    fn finish(&mut self, clean: bool) -> Result<()> {
        let Some(progress) = self.progress.clone() else { return Ok(()) };
        let timeout = self.cfg.drain_timeout.0;
        let sealed = lock(&self.book).sealed;
        let dl = self.consumer.context().dead_letters.clone();
        if clean {
            let drained = progress.wait_done(sealed, timeout) && dl.as_ref().is_none_or(|t| t.wait_all(timeout));
            if !drained {
                warn!("Drain timed out; committing only what is complete.");
            }
        }
        let done = progress.done();
        let ticket = dl.as_ref().map(|t| t.ticket());
        {
            let mut book = lock(&self.book);
            book.runs.clear();
            if let Some(position) = book.committable(done, ticket.as_ref(), true) {
                commit(&self.consumer, &mut book, &position, CommitMode::Sync);
            }
        }
        while let Some(&(seq, since)) = self.pending_latency.front() {
            if seq >= done {
                break;
            }
            let _ = self.latency.record((clock::elapsed_ns(since) / 1000).max(1));
            self.pending_latency.pop_front();
        }
        let stats = self.otlp.stats;
        info!(
            records = self.records,
            otlp_points = stats.points,
            otlp_skipped = stats.skipped,
            change_records = self.change_records,
            feedback_records = self.feedback_records,
            "Kafka source closed."
        );
        self.consumer.context().closed.store(true, Ordering::Relaxed);
        self.consumer.unsubscribe();
        Ok(())
    }

    fn take_changes(&mut self) -> Vec<ChangeEvent> {
        std::mem::take(&mut self.changes)
    }

    fn take_feedback(&mut self) -> Vec<Feedback> {
        std::mem::take(&mut self.feedback)
    }

    fn ingest_latency(&self) -> Option<LatencySummary> {
        Some(LatencySummary::from_histogram(&self.latency))
    }

    fn describe(&self) -> String {
        let mut s = format!("kafka {}", self.cfg.topics.join(","));
        if !self.cfg.change_topics.is_empty() {
            s += &format!(" and changes {}", self.cfg.change_topics.join(","));
        }
        if !self.cfg.feedback_topics.is_empty() {
            s += &format!(" and feedback {}", self.cfg.feedback_topics.join(","));
        }
        s + &format!(" (group {})", self.cfg.group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_tells_the_encodings_apart() {
        assert_eq!(sniff(b" {\"time\":1}"), KafkaFormat::Json);
        assert_eq!(sniff(b"[{\"time\":1}]"), KafkaFormat::Json);
        assert_eq!(sniff(b"{ \"resourceMetrics\": []}"), KafkaFormat::OtlpJson);
        assert_eq!(sniff(&[0x0a, 0x02, 0x0a, 0x00]), KafkaFormat::OtlpProto);
    }

    #[test]
    fn change_records_decode_or_name_what_is_wrong() {
        let one = br#"{"time": 1767580080000, "service": "payments", "kind": "deploy", "description": "v2"}"#;
        let c = decode_changes(one).unwrap();
        assert_eq!((c.len(), c[0].time, c[0].service.as_str()), (1, 1_767_580_080_000, "payments"));
        let two = b"{\"time\": \"2026-01-05T02:48:00Z\", \"service\": \"a\", \"kind\": \"config\", \"description\": \"\"}\n\n\
                    {\"time\": 1, \"service\": \"b\", \"kind\": \"deploy\", \"description\": \"x\"}\n";
        assert_eq!(decode_changes(two).unwrap().len(), 2);
        let bad = |p: &[u8]| decode_changes(p).unwrap_err();
        assert!(bad(b"").contains("empty record"));
        assert!(bad(&[0xff, 0xfe]).contains("not UTF-8"));
        assert!(bad(br#"{"time": 1, "service": "a", "description": "x"}"#).contains("missing field `kind`"));
        assert!(bad(br#"{"time": true, "service": "a", "kind": "k", "description": "x"}"#).contains("time"));
        assert!(bad(br#"{"time": -1, "service": "a", "kind": "k", "description": "x"}"#).contains("field `time`"));
        assert!(bad(br#"{"time": 1, "service": " ", "kind": "k", "description": "x"}"#).contains("field `service`"));
        let mixed = [&one[..], b"\nnot json"].concat();
        assert!(bad(&mixed).starts_with("change event on line 2:"), "{}", bad(&mixed));
    }

    #[test]
    fn feedback_records_decode_or_name_what_is_wrong() {
        let id = crate::event::anomaly_id(0xff, 60_000);
        let verdict = |v: &str, id: &str| {
            serde_json::json!({"verdict": v, "anomaly": {"id": id, "series_id": "00000000000000ff", "service": "a",
                "time_ms": 60_000, "observed": 2.0, "expected": 1.0, "direction": "up"}})
            .to_string()
        };
        let two = format!("{}\n{}", verdict("reject", &id), verdict("accept", &id));
        assert_eq!(decode_feedback(two.as_bytes()).unwrap().len(), 2);
        let bad = format!("{}\n{}", verdict("reject", &id), verdict("accept", "an-0"));
        let err = decode_feedback(bad.as_bytes()).unwrap_err();
        assert!(err.starts_with("feedback on line 2: field `anomaly.id`"), "{err}");
        assert_eq!(decode_feedback(b" \n").unwrap_err(), "feedback: empty record");
    }

    #[test]
    fn marks_commit_only_complete_batches_and_acked_dead_letters() {
        let mut b = Book::default();
        let p = b.part_index("t", 0);
        b.parts[p].next = 10;
        b.marks.push_back(Mark { after: 1, dead_letters: None, position: b.snapshot() });
        b.parts[p].next = 20;
        b.marks.push_back(Mark { after: 2, dead_letters: None, position: b.snapshot() });
        b.sealed = 2;
        b.parts[p].next = 25; // dead-lettered records after the last batch
        assert_eq!(b.committable(0, None, true), None);
        assert_eq!(b.committable(1, None, true).unwrap()[0].2, 10);
        let tracker = AckTracker::new();
        let id = tracker.reserve();
        let ticket = tracker.ticket();
        assert_eq!(b.committable(2, Some(&ticket), true).unwrap()[0].2, 20, "the dead letter is not acknowledged");
        tracker.ack(id);
        assert_eq!(b.committable(2, Some(&ticket), true).unwrap()[0].2, 25);
        assert_eq!(b.committable(2, Some(&ticket), false), None, "records wait in an open batch");
    }
}
