//! Run metrics: per-shard counters (cache-padded, published once per batch) and latency histograms merged at the
//! end of a run into a [`RunSummary`].

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters one shard publishes after each batch.
#[derive(Debug, Default)]
pub struct ShardCounters {
    pub points: CachePadded<AtomicU64>,
    pub late: CachePadded<AtomicU64>,
    /// Points of new series refused by the series limit (`engine.max-series`).
    pub refused: CachePadded<AtomicU64>,
    /// Series forgotten after going quiet (`engine.series-idle`).
    pub forgotten: CachePadded<AtomicU64>,
    /// Series that took back a saved model (`engine.state-dir`).
    pub restored: CachePadded<AtomicU64>,
    pub anomalies: CachePadded<AtomicU64>,
    /// Series with a model now (a gauge the shard sets after each batch).
    pub series: CachePadded<AtomicU64>,
    pub low_volume: CachePadded<AtomicU64>,
    pub learning_paused: CachePadded<AtomicU64>,
    pub feedback_verdicts: CachePadded<AtomicU64>,
    pub feedback_held: CachePadded<AtomicU64>,
    pub feedback_suppressed: CachePadded<AtomicU64>,
    pub feedback_rebaselines: CachePadded<AtomicU64>,
    /// Level shifts the series undid within `detector.level-shift.revert-within` (the model put back).
    pub shifts_reverted: CachePadded<AtomicU64>,
    /// Warm-up points scored (not in `points`) and the events they raised (dropped, not in `anomalies`).
    pub warm_up_points: CachePadded<AtomicU64>,
    pub warm_up_events: CachePadded<AtomicU64>,
}

impl ShardCounters {
    pub fn add(&self, c: &CachePadded<AtomicU64>, v: u64) {
        if v > 0 {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// What a run did, for the terminal, `--metrics-out` and the benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub source: String,
    /// The robust kernels' implementation (`Kernels::name`), and the seasonal learning's: "avx2" where blocks of eight
    /// points of a round learn in vector lanes, else "scalar".
    pub kernel: &'static str,
    pub seasonal_lanes: &'static str,
    /// The scoring backend that ran ("cpu" or "gpu"), and why (e.g. `auto: no GPU (no adapter: …), using cpu`).
    pub backend: &'static str,
    pub backend_note: String,
    pub shards: usize,
    pub batches: u64,
    pub points: u64,
    pub series: u64,
    pub late_points: u64,
    /// Points of series without a model refused because the instance modelled `engine.max-series` series already.
    pub series_limit_refused_points: u64,
    /// Series forgotten after sending no point for `engine.series-idle` (their models freed, slots reused).
    pub series_forgotten: u64,
    /// Series that took back the model saved before the restart (`engine.state-dir`), and the saved models' files
    /// written (the last at the stop).
    pub series_restored: u64,
    pub models_saved: u64,
    pub dead_letters: u64,
    pub anomalies: u64,
    /// Anomalous points the low-volume guard silenced (their service carried too little traffic).
    pub suppressed_low_volume: u64,
    /// Points scored while a learning pause applied to their series (no model learned from them).
    pub learning_paused_points: u64,
    /// Operator verdicts applied to the detector's models (from `detector.feedback.file` and feedback topics).
    pub feedback_verdicts: u64,
    /// Points scored while an accepted anomaly held their series' learning.
    pub feedback_held_points: u64,
    /// Points that would have raised an event but lay within a deviation an operator rejected as normal.
    pub feedback_suppressed: u64,
    /// Series re-baselined at once to the level they held when an operator rejected an event as normal.
    pub feedback_rebaselines: u64,
    /// Level shifts the series undid within `detector.level-shift.revert-within`: an outage, its model put back as
    /// it was before it.
    pub shifts_reverted: u64,
    /// Points read again from before where the input resumed (a Kafka source's `warm-up`), scored so the models
    /// learn them but raising no event (not counted in `points`), and the events they would have raised.
    pub warm_up_points: u64,
    pub warm_up_events_dropped: u64,
    pub incidents: u64,
    pub incidents_dropped_small: u64,
    pub elapsed_s: f64,
    pub points_per_s: f64,
    /// CPU time the process used during the run (user and system, every thread: source, shards, collector, sinks),
    /// and per million points: what a run costs, whatever else the machine is doing. 0 where it cannot be read.
    pub cpu_s: f64,
    pub cpu_s_per_million_points: f64,
    /// Energy the CPU packages used during the run (RAPL counters; package-wide, so only meaningful on an otherwise
    /// idle machine), and per million points. Absent where the counters cannot be read (most containers; often root
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_j_per_million_points: Option<f64>,
    /// Per batch: from hand-off to the router until its events were written (µs).
    pub batch_latency_us: LatencySummary,
    /// Wall time to rank one version of a root-cause report (µs).
    pub rca_update_us: LatencySummary,
    /// Kafka source only: from a batch's first record leaving the consumer until every output of the batch was
    /// acknowledged by the broker (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_latency_us: Option<LatencySummary>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl RunSummary {
    /// A few lines for the terminal.
    pub fn render(&self) -> String {
        format!(
            "processed {} points of {} series from {} in {:.2} s ({:.0} points/s, {} shards, {} kernels, seasonal lanes {}, \
             backend {} ({}))\n\
             anomalies: {}, incidents: {} ({} too small to report; {:.0} anomaly events per reported incident), \
             late points skipped: {}, refused by the series limit: {}, dead letters: {}, silenced by the low-volume \
             guard: {}, scored under a learning pause: {}\n\
             batch latency (µs): p50 {} p99 {} p99.9 {} max {}; root-cause ranking per report version (µs): p50 {} \
             p99 {} max {}\n\
             cost: {:.3} CPU-seconds per million points ({:.2} CPU-s in all); energy: {}",
            self.points,
            self.series,
            self.source,
            self.elapsed_s,
            self.points_per_s,
            self.shards,
            self.kernel,
            self.seasonal_lanes,
            self.backend,
            self.backend_note,
            self.anomalies,
            self.incidents,
            self.incidents_dropped_small,
            self.anomalies as f64 / self.incidents.max(1) as f64,
            self.late_points,
            self.series_limit_refused_points,
            self.dead_letters,
            self.suppressed_low_volume,
            self.learning_paused_points,
            self.batch_latency_us.p50,
            self.batch_latency_us.p99,
            self.batch_latency_us.p999,
            self.batch_latency_us.max,
            self.rca_update_us.p50,
            self.rca_update_us.p99,
            self.rca_update_us.max,
            self.cpu_s_per_million_points,
            self.cpu_s,
            match (self.energy_j, self.energy_j_per_million_points) {
                (Some(j), Some(per)) => format!("{per:.1} J per million points ({j:.1} J in all, CPU packages, RAPL)"),
                _ => "not measured (no readable RAPL counters)".to_string(),
            },
        ) + &if self.series_restored > 0 || self.models_saved > 0 {
            format!(
                "\nsaved models (engine.state-dir): series that took theirs back: {}, files written: {}",
                self.series_restored, self.models_saved
            )
        } else {
            String::new()
        } + &if self.series_forgotten > 0 {
            format!("\nseries forgotten after going quiet (engine.series-idle): {}", self.series_forgotten)
        } else {
            String::new()
        } + &if self.feedback_verdicts > 0 {
            format!(
                "\noperator feedback: verdicts applied: {}, points scored with learning held: {}, events not raised \
                 within a rejected deviation: {}, re-baselines: {}",
                self.feedback_verdicts, self.feedback_held_points, self.feedback_suppressed, self.feedback_rebaselines
            )
        } else {
            String::new()
        } + &if self.shifts_reverted > 0 {
            format!(
                "\nlevel shifts undone within detector.level-shift.revert-within (models put back as before them): {}",
                self.shifts_reverted
            )
        } else {
            String::new()
        } + &if self.warm_up_points > 0 {
            format!(
                "\nwarm-up: {} points read again from before the committed offsets, learned by the models; their {} \
                 events dropped (published before)",
                self.warm_up_points, self.warm_up_events_dropped
            )
        } else {
            String::new()
        } + &self.ingest_latency_us.as_ref().map_or(String::new(), |l| {
            format!(
                "\ningest-to-acknowledged-output latency (µs): p50 {} p99 {} p99.9 {} max {}",
                l.p50, l.p99, l.p999, l.max
            )
        })
    }
}
