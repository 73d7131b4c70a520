//! The engine core: source → router → shard workers → ordered collector (incidents, root causes, sinks).
//!
//! ```text
//!  source thread            shard threads (N)                collector thread
//!  next_batch ─► route ─┬─► [bounded] ─► ShardDetector ─┐
//!                       ├─► [bounded] ─► ShardDetector ─┼─► [bounded] ─► reorder by seq ─► IncidentTracker ─► sinks
//!                       └─► [bounded] ─► ShardDetector ─┘
//! ```
//!
//! Every batch goes to every shard (possibly empty), so the collector knows when a batch is complete; it releases
//! batches in sequence order with their events sorted by (event time, series id). Output therefore does not depend
//! on the number of shards or on thread timing. Channels are bounded: a slow stage blocks the source (backpressure)
//! instead of buffering without limit. Shard workers are plain threads that never await.
//!
//! Completion path: after writing a batch's outputs the collector files the sinks' delivery tickets with
//! [`Progress`]; a source that commits input positions (Kafka) reads [`Progress::done`] to learn which batches are
//! scored and acknowledged, and commits only up to those (see [`crate::delivery`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};
use faultline_kernels::Kernels;
use tracing::{debug, error, info, warn};

use crate::clock;
use crate::config::{Backend, Config};
use crate::delivery::Progress;
use crate::detect::persist::{self, ModelFile, ModelShape, ShardModels};
use crate::detect::{EventClock, ScoringBackend, SeriesLimit, ShardDetector};
use crate::error::{Error, Result};
use crate::event::AnomalyEvent;
use crate::exporter::{Exporter, Live};
use crate::feedback::{Feedback, load_feedback};
use crate::metrics::{LatencySummary, RunSummary, ShardCounters, latency_histogram};
use crate::model::{Batch, SeriesId, SeriesKey, TimeMs, service_id};
use crate::rca::{ChangeEvent, ChangePause, EdgeSeen, IncidentTracker, RcaInputs};
use crate::sink::Sink;
use crate::source::{DeadLetters, Source, refuse_future};

/// The part of a batch one shard owns.
struct ShardBatch {
    seq: u64,
    /// Warm-up points (see [`Batch::warm`]): scored, their events dropped.
    warm: bool,
    /// Call-graph edges seen in this batch (only in shard 0's part), passed through to the collector in order.
    edges: Vec<EdgeSeen>,
    /// Change events the source read with this batch (only in shard 0's part), likewise.
    changes: Vec<ChangeEvent>,
    /// Learning pauses those change events carry, each in the part of the shard that owns its service.
    pauses: Vec<(String, ChangePause, TimeMs)>,
    /// Operator feedback the source read with this batch, each in the part of the shard that owns its service.
    feedback: Vec<Feedback>,
    watermark: TimeMs,
    /// The instance's event time for forgetting quiet series (`engine.series-idle`; `TimeMs::MIN`: off or not yet).
    event_time: TimeMs,
    /// Save the models after this batch (`engine.state-every`).
    save: bool,
    dispatched: Instant,
    ids: Vec<SeriesId>,
    keys: Vec<Arc<SeriesKey>>,
    times: Vec<TimeMs>,
    values: Vec<f64>,
}

struct ShardDone {
    seq: u64,
    warm: bool,
    edges: Vec<EdgeSeen>,
    changes: Vec<ChangeEvent>,
    watermark: TimeMs,
    dispatched: Instant,
    events: Vec<AnomalyEvent>,
}

/// Maps a uniform 64-bit hash to a shard: Lemire's multiply-shift range reduction. Pure. The router passes the
/// service id, so every series of a service lives in one shard (its multivariate score sees all of them).
#[inline]
pub fn shard_of(id: SeriesId, shards: usize) -> usize {
    ((u128::from(id) * shards as u128) >> 64) as usize
}

/// The backend a run scores on, and why (for the log and the run summary).
#[derive(Debug, Clone)]
pub struct ResolvedBackend {
    #[cfg(feature = "gpu")]
    pub gpu: Option<Arc<crate::gpu::GpuContext>>,
    /// "cpu" or "gpu": what actually runs.
    pub name: &'static str,
    /// Why, e.g. `auto: no GPU adapter (…), using cpu`.
    pub note: String,
}

impl ResolvedBackend {
    fn cpu(note: String) -> Self {
        Self {
            #[cfg(feature = "gpu")]
            gpu: None,
            name: "cpu",
            note,
        }
    }

    /// A fresh scoring backend for one shard.
    pub fn for_shard(&self, kernels: Kernels) -> impl FnOnce(&faultline_kernels::RobustParams) -> ScoringBackend {
        #[cfg(feature = "gpu")]
        let gpu = self.gpu.clone();
        move |p| {
            #[cfg(feature = "gpu")]
            if let Some(ctx) = gpu {
                return ScoringBackend::gpu(crate::gpu::GpuRobust::new(ctx, p));
            }
            let _ = p;
            ScoringBackend::cpu(kernels)
        }
    }
}

/// Resolves the configured backend. `gpu` with no usable adapter is an error; `auto` then falls back to the CPU (the
/// attempt, and its failure, are logged once per process).
pub fn resolve_backend(backend: Backend) -> Result<ResolvedBackend> {
    match backend {
        Backend::Cpu => Ok(ResolvedBackend::cpu("configured".into())),
        #[cfg(feature = "gpu")]
        Backend::Gpu | Backend::Auto => match crate::gpu::GpuContext::shared() {
            Ok(ctx) => Ok(ResolvedBackend {
                note: format!("{}: {}", if backend == Backend::Gpu { "configured" } else { "auto" }, ctx.description()),
                gpu: Some(ctx),
                name: "gpu",
            }),
            Err(reason) if backend == Backend::Auto => {
                Ok(ResolvedBackend::cpu(format!("auto: no GPU ({reason}), using cpu")))
            }
            Err(reason) => Err(Error::External {
                system: "gpu",
                message: format!("engine.backend = \"gpu\" but {reason} (use \"auto\" to fall back to the CPU)"),
                retry: crate::error::RetryHint::NoRetry,
            }),
        },
        #[cfg(not(feature = "gpu"))]
        Backend::Gpu => Err(Error::config("engine.backend = \"gpu\" needs a build with the `gpu` feature")),
        #[cfg(not(feature = "gpu"))]
        Backend::Auto => Ok(ResolvedBackend::cpu("auto: built without the `gpu` feature, using cpu".into())),
    }
}

/// Runs a whole pipeline until the source is exhausted; returns what it did.
pub fn run(
    cfg: &Config,
    source: &mut dyn Source,
    rca: impl Into<RcaInputs>,
    sinks: Vec<Box<dyn Sink>>,
    dead: &mut DeadLetters,
) -> Result<RunSummary> {
    let rca: RcaInputs = rca.into();
    let shards = cfg.shard_count();
    let selection = Kernels::selection();
    let kernels = selection.kernels;
    if let Some(err) = &selection.fallback {
        warn!(%err, env = Kernels::ENV, kernel = kernels.name(), "Ignored the kernel override; using the detected kernels.");
    }
    // Saved models (`engine.state-dir`) are read back from the device for a save and written into it as their series
    // come back, so either backend keeps them.
    let state_dir = Some(cfg.engine.state_dir.trim()).filter(|d| !d.is_empty()).map(std::path::PathBuf::from);
    let backend = resolve_backend(cfg.engine.backend)?;
    let loading = clock::now();
    let mut loaded = match &state_dir {
        Some(dir) => ModelFile::load(dir)?,
        None => None,
    };
    let load_ms = loading.elapsed().as_millis() as u64;
    let mut loaded_parts: Vec<ShardModels> = Vec::new();
    // Feedback known at the start: each verdict applies from the time of the event it judges.
    let file = cfg.detector.feedback.file.trim();
    let known_feedback = if file.is_empty() { Vec::new() } else { load_feedback(std::path::Path::new(file))? };
    info!(shards, kernel = kernels.name(), seasonal_lanes = crate::detect::seasonal::lanes_name(),
        forced = selection.forced, backend = backend.name, note = %backend.note, source = %source.describe(),
        "Starting pipeline.");
    let started = clock::now();
    let (cpu_before, energy) = (clock::process_cpu(), clock::EnergyMeter::start());
    let counters: Arc<Vec<ShardCounters>> = Arc::new((0..shards).map(|_| ShardCounters::default()).collect());
    let (done_tx, done_rx) = bounded::<ShardDone>(shards * cfg.engine.queue_depth);
    // The metrics endpoint reads the same counters while the run goes on; it stops when this function returns.
    let listen = cfg.metrics.listen.trim();
    let live =
        if listen.is_empty() { None } else { Some(Arc::new(Live::new(Arc::clone(&counters), source.gauges())?)) };
    let _exporter = live.as_ref().map(|l| Exporter::start(listen, Arc::clone(l))).transpose()?;

    let mut shard_txs = Vec::with_capacity(shards);
    let mut workers = Vec::with_capacity(shards);
    let mut shape = ModelShape { periods: Vec::new(), bins: Vec::new() };
    // The shards' saved models go to a thread of their own, which writes the file once every shard's part is in.
    let (models_tx, models_rx) = match &state_dir {
        Some(_) => {
            let (tx, rx) = crossbeam_channel::unbounded::<(u64, ShardModels)>();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let series_limit = (cfg.engine.max_series > 0).then(|| SeriesLimit::new(cfg.engine.max_series));
    for shard in 0..shards {
        let (tx, rx) = bounded::<ShardBatch>(cfg.engine.queue_depth);
        shard_txs.push(tx);
        let mut det = ShardDetector::with_backend(&cfg.detector, &cfg.rca, backend.for_shard(kernels));
        if let Some(limit) = &series_limit {
            det.limit_series(Arc::clone(limit));
        }
        if let Some(idle) = cfg.engine.series_idle.millis_unless_zero() {
            det.forget_idle_series(idle);
        }
        if shard == 0 {
            shape = det.model_shape();
            if let (Some(mut file), Some(dir)) = (loaded.take(), &state_dir) {
                let from = file.shape.bins.clone();
                let resampled = file.fit_shape(&shape, dir)?;
                if resampled > 0 {
                    warn!(path = %dir.join(persist::FILE_NAME).display(), series = resampled,
                        "Saved models' seasonal profiles of {from:?} bins resampled to the configuration's {:?} \
                         (detector.seasonal.bins): each profile read at the new bins' centres.", shape.bins);
                }
                info!(path = %dir.join(persist::FILE_NAME).display(), series = file.models.series.len(),
                    services = file.models.services.len(), saved_at = %clock::fmt_time(file.saved_at_ms), ms = load_ms,
                    "Loaded saved models: each series takes its model back at its first point.");
                loaded_parts = persist::split(file.models, shards, shard_of);
            }
        }
        if let Some(part) = loaded_parts.get_mut(shard) {
            det.load_models(std::mem::take(part))?;
        }
        // Learning pauses among the changes known at the start (`rca.changes`) apply from the first point.
        for c in rca.changes.iter().filter(|c| shard_of(service_id(&c.service), shards) == shard) {
            if let Some(p) = &c.learning_pause {
                add_pause(&mut det, &c.service, p, c.time);
            }
        }
        for f in known_feedback.iter().filter(|f| shard_of(service_id(&f.anomaly.service), shards) == shard) {
            apply_feedback(&mut det, f, &counters[shard]);
        }
        let done_tx = done_tx.clone();
        let counters = Arc::clone(&counters);
        let models_tx = models_tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("shard-{shard}"))
            .spawn(move || {
                shard_loop(shard, &mut det, &rx, &done_tx, models_tx.as_ref(), &counters[shard]);
                // At the stop, also after a failure elsewhere: what the models learned from every batch they scored.
                if let Some(tx) = &models_tx {
                    send_models(&mut det, FINAL_SAVE, tx);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start shard thread: {e}")))?;
        workers.push(h);
    }
    drop(done_tx);
    drop(models_tx);
    // A periodic save is in flight from when the source marks its batch until the saver has written it: no second one
    // is marked meanwhile, so a slow disk cannot pile up copies of the models.
    let save_in_flight = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let saver = match (&state_dir, models_rx) {
        (Some(dir), Some(rx)) => {
            let (dir, shape, in_flight) = (dir.clone(), shape.clone(), Arc::clone(&save_in_flight));
            let h = std::thread::Builder::new()
                .name("model-saver".into())
                .spawn(move || save_models(&dir, &shape, shards, &rx, &in_flight))
                .map_err(|e| Error::Internal(format!("cannot start the model saver thread: {e}")))?;
            Some(h)
        }
        _ => None,
    };

    let progress = Progress::new();
    let tracker = IncidentTracker::new(&cfg.rca, rca);
    let collector_progress = Arc::clone(&progress);
    let collector_live = live.clone();
    let collector = std::thread::Builder::new()
        .name("collector".into())
        .spawn(move || collect(shards, &done_rx, tracker, sinks, &collector_progress, collector_live.as_deref()))
        .map_err(|e| Error::Internal(format!("cannot start collector thread: {e}")))?;

    // Source and router on this thread. On the GPU a batch is larger (a dispatch and a read-back per chunk), but it is
    // handed on once `gpu-max-wait` has passed since the source began filling it.
    let tap = EdgeTap::new(&cfg.rca.graph_metric);
    let (target, max_wait) = match backend.name {
        "gpu" => (cfg.engine.gpu_batch_size, Some(cfg.engine.gpu_max_wait.0)),
        _ => (cfg.engine.batch_size, None),
    };
    let step = cfg.engine.batch_size.min(target);
    let mut batch = Batch::with_capacity(target);
    let mut seq = 0u64;
    let mut watermark = TimeMs::MIN;
    let max_future = cfg.source.max_future.millis_unless_zero();
    let source_name = source.describe();
    // The event time quiet series are measured against, fed every point in input order (`engine.series-idle`).
    let mut event_clock = cfg.engine.series_idle.millis_unless_zero().map(|_| EventClock::default());
    let save_every = (state_dir.is_some() && !cfg.engine.state_every.0.is_zero()).then_some(cfg.engine.state_every.0);
    let mut last_save = clock::now();
    let mut route_result = source.start(Arc::clone(&progress));
    while route_result.is_ok() {
        batch.clear();
        let filling = clock::now();
        let more = loop {
            let max = (batch.len() + step).min(target);
            match source.next_batch(&mut batch, max, dead) {
                Ok(m)
                    if m && !source.must_seal()
                        && batch.len() < target
                        && max_wait.is_some_and(|w| filling.elapsed() < w) => {}
                Ok(m) => break Ok(m),
                Err(e) => break Err(e),
            }
        };
        // A batch whose points were all refused still goes through (empty), so a committing source commits them.
        let read_any = !batch.is_empty();
        let more = match more.and_then(|m| {
            // Points stamped past `source.max-future` go to the dead letters before anything sees them.
            match max_future {
                Some(ahead) => refuse_future(&mut batch, ahead, dead, &source_name, &format!("batch {}", seq + 1)),
                None => Ok(()),
            }
            .map(|()| m)
        }) {
            Ok(m) => m,
            Err(e) => {
                route_result = Err(e);
                break;
            }
        };
        // Change events (e.g. from a Kafka topic) travel with the batch, so they reach the incident tracker in order.
        let changes = source.take_changes();
        let feedback = source.take_feedback();
        if read_any || !changes.is_empty() || !feedback.is_empty() {
            watermark = watermark.max(batch.max_time().unwrap_or(TimeMs::MIN));
            let event_time = event_clock.as_mut().map_or(TimeMs::MIN, |c| {
                for (&id, &t) in batch.ids.iter().zip(&batch.times) {
                    c.see(id, t);
                }
                c.now()
            });
            // A save of the models is due (`engine.state-every`): every shard saves after this batch.
            let save = save_every.is_some_and(|every| last_save.elapsed() >= every)
                && !save_in_flight.swap(true, std::sync::atomic::Ordering::AcqRel);
            if save {
                last_save = clock::now();
            }
            let stamp = Stamp { seq, watermark, event_time, save };
            if !route(&batch, stamp, &shard_txs, &tap, changes, feedback) {
                // A shard or the collector stopped: its error is reported below.
                break;
            }
            source.sealed(seq);
            seq += 1;
        }
        if let Some(l) = &live {
            l.batches.store(seq, std::sync::atomic::Ordering::Relaxed);
            l.dead_letters.store(dead.count(), std::sync::atomic::Ordering::Relaxed);
        }
        if !more {
            break;
        }
    }
    drop(shard_txs);
    for w in workers {
        w.join().map_err(|_| Error::Internal("a shard thread panicked".into()))?;
    }
    let collected = collector.join().map_err(|_| Error::Internal("the collector thread panicked".into()))?;
    let models_saved = match saver {
        Some(h) => h.join().map_err(|_| Error::Internal("the model saver thread panicked".into()))?,
        None => Ok(0),
    };
    // Commit what is complete and close the source, also after a failure (then nothing unacknowledged is
    // committed: the source commits only batches that `progress` reports complete).
    let clean = route_result.is_ok() && collected.is_ok();
    let finished = source.finish(clean);
    route_result?;
    let collected = collected?;
    finished?;
    let models_saved = models_saved?;

    let elapsed = started.elapsed().as_secs_f64();
    let cpu_s = match (cpu_before, clock::process_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => 0.0,
    };
    let energy_j = energy.and_then(|e| e.joules_since());
    let sum = |f: fn(&ShardCounters) -> u64| counters.iter().map(f).sum::<u64>();
    let points = sum(|c| c.points.load(std::sync::atomic::Ordering::Relaxed));
    let per_million = |v: f64| if points > 0 { v * 1e6 / points as f64 } else { 0.0 };
    let summary = RunSummary {
        source: source.describe(),
        kernel: kernels.name(),
        seasonal_lanes: crate::detect::seasonal::lanes_name(),
        backend: backend.name,
        backend_note: backend.note.clone(),
        shards,
        batches: seq,
        points,
        series: sum(|c| c.series.load(std::sync::atomic::Ordering::Relaxed)),
        late_points: sum(|c| c.late.load(std::sync::atomic::Ordering::Relaxed)),
        series_limit_refused_points: sum(|c| c.refused.load(std::sync::atomic::Ordering::Relaxed)),
        series_forgotten: sum(|c| c.forgotten.load(std::sync::atomic::Ordering::Relaxed)),
        series_restored: sum(|c| c.restored.load(std::sync::atomic::Ordering::Relaxed)),
        models_saved,
        dead_letters: dead.count(),
        anomalies: sum(|c| c.anomalies.load(std::sync::atomic::Ordering::Relaxed)),
        suppressed_low_volume: sum(|c| c.low_volume.load(std::sync::atomic::Ordering::Relaxed)),
        learning_paused_points: sum(|c| c.learning_paused.load(std::sync::atomic::Ordering::Relaxed)),
        feedback_verdicts: sum(|c| c.feedback_verdicts.load(std::sync::atomic::Ordering::Relaxed)),
        feedback_held_points: sum(|c| c.feedback_held.load(std::sync::atomic::Ordering::Relaxed)),
        feedback_suppressed: sum(|c| c.feedback_suppressed.load(std::sync::atomic::Ordering::Relaxed)),
        feedback_rebaselines: sum(|c| c.feedback_rebaselines.load(std::sync::atomic::Ordering::Relaxed)),
        shifts_reverted: sum(|c| c.shifts_reverted.load(std::sync::atomic::Ordering::Relaxed)),
        warm_up_points: sum(|c| c.warm_up_points.load(std::sync::atomic::Ordering::Relaxed)),
        warm_up_events_dropped: sum(|c| c.warm_up_events.load(std::sync::atomic::Ordering::Relaxed)),
        incidents: collected.incidents,
        incidents_dropped_small: collected.dropped_small,
        elapsed_s: elapsed,
        points_per_s: if elapsed > 0.0 { points as f64 / elapsed } else { 0.0 },
        cpu_s,
        cpu_s_per_million_points: per_million(cpu_s),
        energy_j,
        energy_j_per_million_points: energy_j.map(per_million),
        batch_latency_us: collected.latency,
        rca_update_us: collected.rca_update,
        ingest_latency_us: source.ingest_latency(),
    };
    debug!(?summary, "Pipeline finished.");
    Ok(summary)
}

/// Recognises points of the service-graph metric: `client` and `server` labels name a caller -> callee edge.
struct EdgeTap {
    metric: String,
}

impl EdgeTap {
    fn new(metric: &str) -> Self {
        Self { metric: metric.trim().to_string() }
    }

    #[inline]
    fn edge(&self, key: &SeriesKey, time: TimeMs) -> Option<EdgeSeen> {
        // Lengths first: almost every point fails here without comparing bytes.
        if self.metric.is_empty() || key.metric.len() != self.metric.len() || *key.metric != *self.metric {
            return None;
        }
        let label = |n: &str| key.labels.iter().find(|(k, _)| &**k == n).map(|(_, v)| Arc::clone(v));
        Some(EdgeSeen { time, caller: label("client")?, callee: label("server")? })
    }
}

/// What the router stamps on every shard's part of a batch besides its points.
struct Stamp {
    seq: u64,
    watermark: TimeMs,
    /// The event time for quiet series (`engine.series-idle`).
    event_time: TimeMs,
    /// Whether the shards save their models after it (`engine.state-every`).
    save: bool,
}

/// Splits a batch by owning shard and sends every shard its part (empty parts too), stamped. False if a receiver is
/// gone.
fn route(
    batch: &Batch,
    stamp: Stamp,
    txs: &[Sender<ShardBatch>],
    tap: &EdgeTap,
    changes: Vec<ChangeEvent>,
    feedback: Vec<Feedback>,
) -> bool {
    let n = txs.len();
    let Stamp { seq, watermark, event_time, save } = stamp;
    let dispatched = clock::now();
    let cap = batch.len() / n + batch.len() / (4 * n) + 16;
    let mut parts: Vec<ShardBatch> = (0..n)
        .map(|_| ShardBatch {
            seq,
            warm: batch.warm,
            edges: Vec::new(),
            changes: Vec::new(),
            pauses: Vec::new(),
            feedback: Vec::new(),
            watermark,
            event_time,
            save,
            dispatched,
            ids: Vec::with_capacity(cap),
            keys: Vec::with_capacity(cap),
            times: Vec::with_capacity(cap),
            values: Vec::with_capacity(cap),
        })
        .collect();
    for c in &changes {
        if let Some(p) = &c.learning_pause {
            parts[shard_of(service_id(&c.service), n)].pauses.push((c.service.clone(), p.clone(), c.time));
        }
    }
    parts[0].changes = changes;
    for f in feedback {
        parts[shard_of(service_id(&f.anomaly.service), n)].feedback.push(f);
    }
    for i in 0..batch.len() {
        if let Some(e) = tap.edge(&batch.keys[i], batch.times[i]) {
            parts[0].edges.push(e);
        }
        let p = &mut parts[shard_of(batch.keys[i].service_id, n)];
        p.ids.push(batch.ids[i]);
        p.keys.push(Arc::clone(&batch.keys[i]));
        p.times.push(batch.times[i]);
        p.values.push(batch.values[i]);
    }
    parts.into_iter().zip(txs).all(|(p, tx)| tx.send(p).is_ok())
}

/// Adds a change event's learning pause to a shard's detector (a warning when its pause slots are all in use).
fn add_pause(det: &mut ShardDetector, service: &str, p: &ChangePause, from: TimeMs) {
    if !det.add_learning_pause(service, &p.metric, from, p.until) {
        warn!(service, metric = %p.metric, "Learning pause not applied: 64 pauses are already running on this shard.");
    }
}

/// Applies an operator's verdict to a shard's detector, and logs it.
fn apply_feedback(det: &mut ShardDetector, f: &Feedback, counters: &ShardCounters) {
    let applied = det.add_feedback(f);
    counters.add(&counters.feedback_verdicts, 1);
    info!(verdict = ?f.verdict, anomaly = %f.anomaly.id, service = %f.anomaly.service, series = %f.anomaly.series_id,
        by = %f.by, note = %f.note, ?applied, "Applied operator feedback.");
}

/// The sequence number a shard's last save (at the stop) carries.
const FINAL_SAVE: u64 = u64::MAX;

/// Sends a shard's models, as they stand after batch `seq`, to the saver.
fn send_models(det: &mut ShardDetector, seq: u64, tx: &Sender<(u64, ShardModels)>) {
    let _ = tx.send((seq, det.save_models()));
}

/// The model saver's thread: gathers every shard's models saved after one batch (or at the stop) and writes them to
/// `dir` in one file. A periodic save that fails is logged and the run goes on; the save at the stop failing is the
/// run's error. Clears `in_flight` once a periodic save is written (or has failed). Returns the files written.
fn save_models(
    dir: &std::path::Path,
    shape: &ModelShape,
    shards: usize,
    rx: &Receiver<(u64, ShardModels)>,
    in_flight: &std::sync::atomic::AtomicBool,
) -> Result<u64> {
    let mut parts: BTreeMap<u64, Vec<ShardModels>> = BTreeMap::new();
    let mut written = 0;
    for (seq, m) in rx {
        let got = parts.entry(seq).or_default();
        got.push(m);
        if got.len() < shards {
            continue;
        }
        let file = ModelFile::merge(shape.clone(), parts.remove(&seq).expect("just filled"));
        let series = file.models.series.len();
        let started = clock::now();
        match file.save(dir) {
            Ok((path, bytes)) => {
                written += 1;
                info!(path = %path.display(), series, bytes, ms = started.elapsed().as_millis() as u64,
                    at_stop = seq == FINAL_SAVE, "Saved the models.");
            }
            Err(e) if seq == FINAL_SAVE => return Err(e),
            Err(e) => error!(error = %e, "Cannot save the models; the run goes on, the next save tries again."),
        }
        in_flight.store(false, std::sync::atomic::Ordering::Release);
    }
    if parts.contains_key(&FINAL_SAVE) {
        // A shard stopped without its models (it panicked): a file without its series would lose them.
        error!("Not all shards saved their models at the stop; the file saved before is kept.");
    }
    Ok(written)
}

fn shard_loop(
    shard: usize,
    det: &mut ShardDetector,
    rx: &Receiver<ShardBatch>,
    done: &Sender<ShardDone>,
    saver: Option<&Sender<(u64, ShardModels)>>,
    counters: &ShardCounters,
) {
    for b in rx {
        for (service, p, from) in &b.pauses {
            add_pause(det, service, p, *from);
        }
        for f in &b.feedback {
            apply_feedback(det, f, counters);
        }
        let mut events = Vec::new();
        let stats = det.process(&b.ids, &b.keys, &b.times, &b.values, &mut events);
        if b.warm {
            // Published before: the models learn the points, the collector drops their events.
            counters.add(&counters.warm_up_points, stats.points);
            counters.add(&counters.warm_up_events, stats.anomalies);
        } else {
            counters.add(&counters.points, stats.points);
            counters.add(&counters.anomalies, stats.anomalies);
        }
        counters.add(&counters.late, stats.late);
        counters.add(&counters.refused, stats.refused);
        counters.add(&counters.low_volume, stats.low_volume);
        counters.add(&counters.learning_paused, stats.learning_paused);
        counters.add(&counters.feedback_held, stats.feedback_held);
        counters.add(&counters.feedback_suppressed, stats.feedback_suppressed);
        counters.add(&counters.feedback_rebaselines, stats.feedback_rebaselines);
        counters.add(&counters.shifts_reverted, stats.shifts_reverted);
        // After the batch: the series it left quiet for `engine.series-idle` are forgotten (a no-op when unset).
        counters.add(&counters.forgotten, det.forget_quiet(b.event_time));
        counters.add(&counters.restored, stats.restored);
        if b.save
            && let Some(tx) = saver
        {
            send_models(det, b.seq, tx);
        }
        counters.series.store(det.series_count() as u64, std::sync::atomic::Ordering::Relaxed);
        let done_msg = ShardDone {
            seq: b.seq,
            warm: b.warm,
            edges: b.edges,
            changes: b.changes,
            watermark: b.watermark,
            dispatched: b.dispatched,
            events,
        };
        if done.send(done_msg).is_err() {
            debug!(shard, "Collector gone; shard stopping.");
            return;
        }
    }
}

struct Collected {
    incidents: u64,
    dropped_small: u64,
    latency: LatencySummary,
    rca_update: LatencySummary,
}

struct Pending {
    remaining: usize,
    warm: bool,
    edges: Vec<EdgeSeen>,
    changes: Vec<ChangeEvent>,
    watermark: TimeMs,
    dispatched: Instant,
    events: Vec<AnomalyEvent>,
}

fn collect(
    shards: usize,
    rx: &Receiver<ShardDone>,
    mut tracker: IncidentTracker,
    mut sinks: Vec<Box<dyn Sink>>,
    progress: &Progress,
    live: Option<&Live>,
) -> Result<Collected> {
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut next = 0u64;
    let mut incidents = 0u64;
    let mut hist = latency_histogram();
    for d in rx {
        let p = pending.entry(d.seq).or_insert_with(|| Pending {
            remaining: shards,
            warm: d.warm,
            edges: Vec::new(),
            changes: Vec::new(),
            watermark: d.watermark,
            dispatched: d.dispatched,
            events: Vec::new(),
        });
        p.remaining -= 1;
        p.events.extend(d.events);
        p.edges.extend(d.edges);
        p.changes.extend(d.changes);
        while pending.get(&next).is_some_and(|p| p.remaining == 0) {
            let mut p = pending.remove(&next).expect("checked above");
            if !p.edges.is_empty() || next.is_multiple_of(64) {
                tracker.learn_edges(&p.edges, p.watermark);
            }
            if !p.changes.is_empty() {
                tracker.add_changes(std::mem::take(&mut p.changes));
            }
            if p.warm {
                // Warm-up: these events were published by whoever read the points first.
                p.events.clear();
            }
            p.events.sort_by(|a, b| a.time.cmp(&b.time).then(a.key.id.cmp(&b.key.id)));
            for ev in &p.events {
                for s in sinks.iter_mut() {
                    s.anomaly(ev)?;
                }
                for r in tracker.ingest(ev) {
                    incidents += u64::from(r.status == "closed");
                    for s in sinks.iter_mut() {
                        s.report(&r)?;
                    }
                }
            }
            for r in tracker.advance(p.watermark) {
                incidents += u64::from(r.status == "closed");
                for s in sinks.iter_mut() {
                    s.report(&r)?;
                }
            }
            let mut tickets = Vec::new();
            for s in sinks.iter_mut() {
                if let Some(t) = s.ticket()? {
                    tickets.push(t);
                }
            }
            progress.released(next, tickets);
            let ns = clock::elapsed_ns(p.dispatched);
            let _ = hist.record(ns / 1000);
            if let Some(l) = live {
                l.batch_latency.observe(ns as f64 * 1e-9);
                l.incidents.store(incidents, std::sync::atomic::Ordering::Relaxed);
            }
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(Error::Internal(format!("{} batches never completed", pending.len())));
    }
    for r in tracker.finish() {
        incidents += 1;
        for s in sinks.iter_mut() {
            s.report(&r)?;
        }
    }
    for s in sinks.iter_mut() {
        s.finish()?;
    }
    Ok(Collected {
        incidents,
        dropped_small: tracker.dropped_small,
        latency: LatencySummary::from_histogram(&hist),
        rca_update: LatencySummary::from_histogram(&tracker.update_cost),
    })
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn routing_is_pure_and_in_range() {
        for id in [0u64, 1, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
            for n in [1usize, 2, 3, 7, 64] {
                let s = shard_of(id, n);
                assert!(s < n);
                assert_eq!(s, shard_of(id, n));
            }
        }
        // Uniform ids spread evenly.
        let mut counts = [0u32; 4];
        let mut x = 1u64;
        for _ in 0..40_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            counts[shard_of(x, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }
}
