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
//! Warm start. With `warm-up` (or `warm-up-records`), a partition this instance is assigned (at start, or taken over
//! in a rebalance) is assigned from an earlier offset than its committed one: the first record of the last
//! `warm-up` (the broker's `offsets_for_times`), at most `warm-up-records` back, never before the log's start. The
//! records between it and the committed offset are warm-up records: the source hands them on in batches of their
//! own ([`Batch::warm`]), which the shards score (so the models learn them, and the feedback and change records among
//! them are applied again) and whose events the collector drops, since whoever read those records first published
//! them. They are not dead-lettered again, and no commit goes below the committed offset. Replayed from its start,
//! a partition gives the models exactly the state an uninterrupted run would have had.
//!
//! Shutdown. A stop flag (SIGTERM/SIGINT) or `stop-when-idle` makes `next_batch` return its last batch and report
//! the end of input; the pipeline drains the shards and the collector, the sinks flush the producer, and
//! [`Source::finish`] commits the final positions and closes the consumer (leaving the group).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tracing::{debug, info, warn};

use super::producer::Origin;
use super::{client_config, is_transient, kafka_error};
use crate::clock;
use crate::config::{KafkaConfig, KafkaFormat, KafkaSourceConfig};
use crate::delivery::{AckTracker, Progress, Ticket};
use crate::error::Result;
use crate::exporter::SourceGauges;
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
    /// The committed offset the partition was assigned with when it was rewound for warm-up: records before it are
    /// warm-up records, and no commit goes below it. -1: no warm-up.
    live_from: i64,
    /// The offset after the last record this process took from the partition, kept across revokes: a partition
    /// assigned again is rewound only over what this process's models have not seen. -1: none.
    learned_to: i64,
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
        self.parts.push(Part {
            topic: Arc::from(topic),
            partition,
            next: -1,
            committed: -1,
            live_from: -1,
            learned_to: -1,
        });
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
    /// `warm-up` and `warm-up-records`.
    warm_up: Duration,
    warm_up_records: u64,
    /// Assignment and consumer lag, for the metrics endpoint.
    gauges: Arc<SourceGauges>,
}

impl GroupContext {
    /// Sets the warm-up start offset of each partition of `tpl` (about to be assigned) that has a committed offset
    /// and records before it to read again, and files its committed offset as where live records begin.
    fn rewind(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        if self.warm_up.is_zero() && self.warm_up_records == 0 {
            return;
        }
        let timeout = self.drain_timeout;
        let committed = match consumer.committed_offsets(tpl.clone(), timeout) {
            Ok(c) => c,
            Err(e) => {
                warn!(%e, "Cannot read the committed offsets of the assigned partitions: no warm-up.");
                return;
            }
        };
        let by_time = (!self.warm_up.is_zero()).then(|| {
            let since = clock::wall_ms().saturating_sub(i64::try_from(self.warm_up.as_millis()).unwrap_or(i64::MAX));
            let mut q = TopicPartitionList::with_capacity(tpl.count());
            for e in tpl.elements() {
                let _ = q.add_partition_offset(e.topic(), e.partition(), Offset::Offset(since));
            }
            consumer.offsets_for_times(q, timeout)
        });
        let mut rewound = Vec::new();
        let mut book = lock(&self.book);
        for e in committed.elements() {
            let Offset::Offset(c) = e.offset() else { continue };
            let (topic, partition) = (e.topic(), e.partition());
            let low = consumer.fetch_watermarks(topic, partition, timeout).map_or(0, |w| w.0);
            // The first record of the window; none (every record is older): nothing to read again. A failed lookup
            // leaves the record bound alone (warned below).
            let time_start = match &by_time {
                Some(Ok(found)) => match found.find_partition(topic, partition).map(|p| p.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => Some(c),
                },
                Some(Err(_)) | None => None,
            };
            let i = book.part_index(topic, partition);
            // A partition this process read before (an eager rebalance gives it back): only what it missed.
            let learned = book.parts[i].learned_to;
            let start = warm_start(c, low, time_start, self.warm_up_records).max(learned);
            if start < c && tpl.set_partition_offset(topic, partition, Offset::Offset(start)).is_ok() {
                book.parts[i].live_from = c;
                rewound.push(format!("{topic}/{partition}: {start}..{c}"));
            }
        }
        drop(book);
        if let Some(Err(e)) = &by_time {
            warn!(%e, "Cannot look up offsets by time; warm-up by record count only.");
        }
        if !rewound.is_empty() {
            info!(partitions = %rewound.join(", "), "Reading records before the committed offsets again to warm the models.");
        }
    }
}

/// Where a partition committed at `committed`, whose log starts at `low`, is read from for warm-up: the first
/// record of the time window (`by_time`, when `warm-up` is set), at most `records` back (when set), never before
/// `low` nor after `committed`.
fn warm_start(committed: i64, low: i64, by_time: Option<i64>, records: u64) -> i64 {
    let by_count = (records > 0).then(|| committed.saturating_sub(i64::try_from(records).unwrap_or(i64::MAX)));
    let start = match (by_time, by_count) {
        (Some(t), Some(n)) => t.max(n),
        (Some(t), None) => t,
        (None, Some(n)) => n,
        (None, None) => committed,
    };
    start.max(low).min(committed)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(%error, reason, "Kafka consumer error (librdkafka retries by itself).");
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): the consumer lag of each assigned partition.
    fn stats(&self, statistics: Statistics) {
        let mut lag: Vec<(String, i32, i64)> = statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .iter()
                    .filter(|(p, s)| **p >= 0 && s.consumer_lag >= 0)
                    .map(move |(p, s)| (topic.clone(), *p, s.consumer_lag))
            })
            .collect();
        lag.sort();
        *lock(&self.gauges.lag) = lag;
    }
}

impl ConsumerContext for GroupContext {
    /// rdkafka's own rebalance (pre-rebalance, assign or unassign, post-rebalance), with the assigned partitions'
    /// warm-up offsets set before they are assigned.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Assign(tpl));
                self.rewind(consumer, tpl);
                let assigned = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = assigned {
                    warn!(%e, "Assigning partitions failed.");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let revoked = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = revoked {
                    warn!(%e, "Revoking partitions failed.");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
            }
            other => {
                let e = KafkaError::Rebalance(other.into());
                self.pre_rebalance(consumer, &Rebalance::Error(e.clone()));
                let _ = consumer.unassign();
                self.post_rebalance(consumer, &Rebalance::Error(e));
            }
        }
    }

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
                p.live_from = -1;
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
                self.gauges.assigned.store(tpl.count() > 0, Ordering::Relaxed);
            }
            Rebalance::Revoke(_) => {
                self.gauges.assigned.store(false, Ordering::Relaxed);
                lock(&self.gauges.lag).clear();
            }
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
        // Never below where the partition's live records begin: records before it are warm-up records, committed
        // before this instance read them.
        let next = &(*next).max(book.parts[i].live_from);
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
    intake: Intake,
    last_commit: Instant,
    /// (batch seq, when its first record was taken) for batches not yet complete.
    pending_latency: std::collections::VecDeque<(u64, Instant)>,
    latency: Histogram<u64>,
    transient_errors: u64,
    /// A record that could not join the open batch (a warm-up record after live ones, or the other way round): it
    /// opens the next batch.
    held: Option<OwnedMessage>,
}

/// What taking records into batches changes: apart from the consumer, which a polled record borrows.
struct Intake {
    json: PointDecoder,
    otlp: OtlpDecoder,
    last_record: Instant,
    records: u64,
    open_since: Option<Instant>,
    /// Change events read since the pipeline last took them.
    changes: Vec<ChangeEvent>,
    change_records: u64,
    /// Operator feedback read since the pipeline last took it.
    feedback: Vec<Feedback>,
    feedback_records: u64,
    /// Warm-up records that failed to decode (dead-lettered when first read, so not again).
    warm_bad_records: u64,
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
            warm_up: cfg.warm_up.0,
            warm_up_records: cfg.warm_up_records,
            gauges: Arc::new(SourceGauges::default()),
        };
        let client = client_config(
            kafka,
            &[
                ("auto.offset.reset", "earliest"),
                ("client.id", "faultline"),
                ("enable.partition.eof", "false"),
                // Consumer lag for the metrics endpoint.
                ("statistics.interval.ms", "5000"),
            ],
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
            intake: Intake {
                json: PointDecoder::new(),
                otlp: OtlpDecoder::new(),
                last_record: Instant::now(),
                records: 0,
                open_since: None,
                changes: Vec::new(),
                change_records: 0,
                feedback: Vec::new(),
                feedback_records: 0,
                warm_bad_records: 0,
            },
            last_commit: Instant::now(),
            pending_latency: Default::default(),
            latency: latency_histogram(),
            transient_errors: 0,
            held: None,
        })
    }

    /// Whether a record is a warm-up record (before where its partition's live records begin).
    /// A record's partition (its index in the book) and whether it is a warm-up record (before where its
    /// partition's live records begin), and whether the open batch holds records: one look at the book a record.
    fn locate<M: Message>(&self, msg: &M) -> (usize, bool, bool) {
        let mut book = lock(&self.book);
        let part = book.part_index(msg.topic(), msg.partition());
        (part, msg.offset() < book.parts[part].live_from, !book.runs.is_empty())
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

impl Intake {
    /// Takes one record of book partition `part` into the open batch (its points, change events or verdicts), or
    /// dead-letters it.
    fn take<M: Message>(
        &mut self,
        msg: &M,
        (part, warm): (usize, bool),
        (book, cfg): (&Mutex<Book>, &KafkaSourceConfig),
        batch: &mut Batch,
        dead: &mut DeadLetters,
    ) -> Result<()> {
        self.records += 1;
        self.last_record = Instant::now();
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        let payload = msg.payload().unwrap_or(&[]);
        let start = batch.len();
        let is_change = !cfg.change_topics.is_empty() && cfg.change_topics.iter().any(|t| t == topic);
        let is_feedback = !cfg.feedback_topics.is_empty() && cfg.feedback_topics.iter().any(|t| t == topic);
        let decoded = if is_change {
            decode_changes(payload).map(|c| {
                self.change_records += 1;
                self.changes.extend(c);
                // An empty run: the record belongs to the open batch for commits and revokes.
                lock(book).runs.push(Run { part, offset, start, end: start });
                0
            })
        } else if is_feedback {
            decode_feedback(payload).map(|f| {
                self.feedback_records += 1;
                self.feedback.extend(f);
                // Likewise an empty run of the open batch.
                lock(book).runs.push(Run { part, offset, start, end: start });
                0
            })
        } else {
            decode(cfg.format, &mut self.json, &mut self.otlp, payload, batch)
        };
        match decoded {
            Ok(_) if batch.len() > start => {
                if self.open_since.is_none() {
                    self.open_since = Some(Instant::now());
                }
                lock(book).runs.push(Run { part, offset, start, end: batch.len() });
            }
            Ok(_) => {}
            // Dead-lettered by whoever read it first.
            Err(_) if warm => self.warm_bad_records += 1,
            Err(reason) => {
                let origin = Origin { topic, partition, offset };
                dead.record_kafka(origin, msg.key().unwrap_or(&[]), payload, &reason)?;
            }
        }
        let mut book = lock(book);
        let p = &mut book.parts[part];
        p.next = offset + 1;
        p.learned_to = p.learned_to.max(offset + 1);
        Ok(())
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
        out.warm = batch.warm;
        let mut kept = Vec::with_capacity(runs.len());
        for r in runs {
            if is_revoked(&book.parts[r.part]) {
                continue;
            }
            let start = out.len();
            out.extend_from(batch, r.start..r.end);
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
        self.intake.open_since = None;
        if let Some(msg) = self.held.take() {
            // It waited for the batch before it to be handed on: it opens this one.
            let (part, warm, _) = self.locate(&msg);
            batch.warm = warm;
            self.intake.take(&msg, (part, warm), (&self.book, &self.cfg), batch, dead)?;
        }
        loop {
            if self.stop.load(Ordering::Relaxed) {
                info!("Stop requested: draining.");
                return Ok(false);
            }
            let idle = self.cfg.stop_when_idle.0;
            let assigned_at = *lock(&self.consumer.context().assigned_at);
            if !idle.is_zero()
                && batch.is_empty()
                && assigned_at.is_some_and(|a| a.elapsed() >= idle && self.intake.last_record.elapsed() >= idle)
            {
                info!(records = self.intake.records, "No record for stop-when-idle: draining.");
                return Ok(false);
            }
            let timeout = match self.intake.open_since {
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
                self.intake.open_since = None;
            }
            match polled {
                None => {
                    if batch.is_empty() {
                        // Idle: hand back an empty batch so completed work is committed.
                        return Ok(true);
                    }
                }
                Some(Ok(msg)) => {
                    // A batch is all warm-up records or all live ones.
                    let (part, warm, runs) = self.locate(&msg);
                    let open = !batch.is_empty() || runs;
                    if open && warm != batch.warm {
                        self.held = Some(msg.detach());
                        return Ok(true);
                    }
                    batch.warm = warm;
                    self.intake.take(&msg, (part, warm), (&self.book, &self.cfg), batch, dead)?;
                    drop(msg);
                    if batch.len() >= max {
                        return Ok(true);
                    }
                    if let Some(p) = &self.progress
                        && self.pending_latency.front().is_some_and(|(seq, _)| *seq < p.done())
                    {
                        let idle =
                            batch.is_empty() && self.intake.changes.is_empty() && self.intake.feedback.is_empty();
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
        let since = self.intake.open_since.unwrap_or_else(Instant::now);
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
        let stats = self.intake.otlp.stats;
        info!(
            records = self.intake.records,
            otlp_points = stats.points,
            otlp_skipped = stats.skipped,
            otlp_prost_decoded = stats.prost_decoded,
            change_records = self.intake.change_records,
            feedback_records = self.intake.feedback_records,
            warm_bad_records = self.intake.warm_bad_records,
            "Kafka source closed."
        );
        self.consumer.context().closed.store(true, Ordering::Relaxed);
        self.consumer.unsubscribe();
        Ok(())
    }

    fn must_seal(&self) -> bool {
        self.held.is_some()
    }

    fn gauges(&self) -> Option<Arc<SourceGauges>> {
        Some(Arc::clone(&self.consumer.context().gauges))
    }

    fn take_changes(&mut self) -> Vec<ChangeEvent> {
        std::mem::take(&mut self.intake.changes)
    }

    fn take_feedback(&mut self) -> Vec<Feedback> {
        std::mem::take(&mut self.intake.feedback)
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
    fn warm_up_starts_at_the_window_or_the_record_bound_within_the_log() {
        // Committed at 1000, the log starting at 200.
        assert_eq!(warm_start(1000, 200, None, 0), 1000, "off");
        assert_eq!(warm_start(1000, 200, None, 300), 700, "by records");
        assert_eq!(warm_start(1000, 200, None, 5000), 200, "not before the log's start");
        assert_eq!(warm_start(1000, 200, Some(600), 0), 600, "by time");
        assert_eq!(warm_start(1000, 200, Some(600), 300), 700, "the record bound caps the window");
        assert_eq!(warm_start(1000, 200, Some(900), 300), 900, "a short window is kept");
        assert_eq!(warm_start(1000, 200, Some(1000), 300), 1000, "nothing in the window");
        assert_eq!(warm_start(1000, 200, Some(1500), 0), 1000, "never after the committed offset");
        assert_eq!(warm_start(1000, 200, Some(50), 0), 200);
    }

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
