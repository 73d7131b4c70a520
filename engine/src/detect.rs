//! Per-series detection inside one shard: the cold-start ladder (configured rules from the first point, the robust
//! model once warmed up), noise controls (direction, minimum deviation, M-of-N) and anomaly events with evidence.
//!
//! State is struct-of-arrays, one slot per series, owned by exactly one shard.
// Hot path: no IO, no allocation per point, no logging per point. Events allocate only when an anomaly is raised.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use faultline_kernels::{Kernels, RobustParams, RobustState};

use crate::config::{DetectorConfig, DirectionFilter, RcaConfig, Role, glob_match};
use crate::event::{AnomalyEvent, Direction, RuleHit, Stage, rule_score};
#[cfg(feature = "gpu")]
use crate::gpu::GpuRobust;
use crate::model::{SeriesId, SeriesKey, TimeMs};

/// Series ids are already well-mixed hashes; hashing them again is wasted work.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub type IdMap<V> = HashMap<SeriesId, V, BuildHasherDefault<IdHasher>>;

/// Detector settings resolved for one series from the defaults, the first matching override and matching rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub threshold: f32,
    pub direction: DirectionFilter,
    pub min_abs: f64,
    pub min_rel: f64,
    pub m: u32,
    pub n: u32,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// Whether the rules keep applying after warm-up.
    pub rules_always: bool,
    pub role: Role,
}

impl Profile {
    pub fn resolve(d: &DetectorConfig, rca: &RcaConfig, service: &str, metric: &str) -> Self {
        let matches =
            |m: &str, s: &Option<String>| glob_match(m, metric) && s.as_deref().is_none_or(|s| glob_match(s, service));
        let o = d.overrides.iter().find(|o| matches(&o.metric, &o.service));
        let [m, n] = o.and_then(|o| o.m_of_n).unwrap_or(d.m_of_n);
        let mut p = Profile {
            threshold: o.and_then(|o| o.threshold).unwrap_or(d.threshold) as f32,
            direction: o.and_then(|o| o.direction).unwrap_or(d.direction),
            min_abs: o.and_then(|o| o.min_abs_deviation).unwrap_or(d.min_abs_deviation),
            min_rel: o.and_then(|o| o.min_rel_deviation).unwrap_or(d.min_rel_deviation),
            m,
            n,
            above: None,
            below: None,
            rules_always: false,
            role: rca.role_of(metric),
        };
        for r in d.rules.iter().filter(|r| matches(&r.metric, &r.service)) {
            p.above = p.above.or(r.above);
            p.below = p.below.or(r.below);
            p.rules_always |= r.always;
        }
        p
    }
}

/// Counters of one batch, published once per batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    pub points: u64,
    pub late: u64,
    pub new_series: u64,
    pub anomalies: u64,
}

/// Where a shard's robust models live and are updated. The CPU is the reference and the default; the GPU keeps the
/// state resident on the device and must give the same answers (see `tests/it/gpu.rs`). Further kernels (seasonal
/// baseline, calibrated threshold) would add their state and update calls here, on both variants.
pub enum ScoringBackend {
    Cpu {
        kernels: Kernels,
        state: RobustState,
    },
    #[cfg(feature = "gpu")]
    Gpu(Box<GpuRobust>),
}

impl ScoringBackend {
    pub fn cpu(kernels: Kernels) -> Self {
        ScoringBackend::Cpu { kernels, state: RobustState::default() }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ScoringBackend::Cpu { .. } => "cpu",
            #[cfg(feature = "gpu")]
            ScoringBackend::Gpu(_) => "gpu",
        }
    }

    fn push(&mut self) -> u32 {
        match self {
            ScoringBackend::Cpu { state, .. } => state.push(),
            #[cfg(feature = "gpu")]
            ScoringBackend::Gpu(g) => g.push(),
        }
    }

    /// Points seen by series `s`, this one included once it has been scored.
    #[inline]
    fn count(&self, s: usize) -> u32 {
        match self {
            ScoringBackend::Cpu { state, .. } => state.count[s],
            #[cfg(feature = "gpu")]
            ScoringBackend::Gpu(g) => g.count[s],
        }
    }

    /// Re-baselines series `s`: later points are scored against `level`.
    fn set_level(&mut self, s: usize, level: f32) {
        match self {
            ScoringBackend::Cpu { state, .. } => state.level[s] = level,
            #[cfg(feature = "gpu")]
            ScoringBackend::Gpu(g) => g.set_level(s as u32, level),
        }
    }

    /// Scores a chunk in which no series repeats (see `Kernels::robust_update_gather`).
    fn update(&mut self, slots: &[u32], x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
        match self {
            ScoringBackend::Cpu { kernels, state } => kernels.robust_update_gather(state, slots, x, z, sigma, p),
            #[cfg(feature = "gpu")]
            ScoringBackend::Gpu(g) => {
                if let Err(e) = g.update(slots, x, z, sigma) {
                    // The GPU is an optimisation: move this shard's state to the CPU and score the chunk there.
                    tracing::error!(error = %e.0, "GPU scoring failed; this shard continues on the CPU.");
                    let state = match g.download() {
                        Ok(state) => state,
                        Err(e2) => panic!("GPU failed ({}) and its state cannot be recovered ({})", e.0, e2.0),
                    };
                    *self = ScoringBackend::Cpu { kernels: Kernels::detect(), state };
                    self.update(slots, x, z, sigma, p);
                }
            }
        }
    }

    /// The robust state as the host sees it (downloaded from the device for the GPU backend). For tests.
    pub fn robust_state(&mut self) -> RobustState {
        match self {
            ScoringBackend::Cpu { state, .. } => state.clone(),
            #[cfg(feature = "gpu")]
            ScoringBackend::Gpu(g) => g.download().unwrap_or_else(|e| panic!("cannot download GPU state: {}", e.0)),
        }
    }
}

/// The models of every series one shard owns.
pub struct ShardDetector {
    scoring: ScoringBackend,
    params: RobustParams,
    warmup: u32,
    cfg: DetectorConfig,
    rca: RcaConfig,
    index: IdMap<u32>,
    keys: Vec<Arc<SeriesKey>>,
    profile: Vec<u16>,
    /// M-of-N history, newest point in bit 0.
    flags: Vec<u16>,
    run_start: Vec<TimeMs>,
    last_time: Vec<TimeMs>,
    /// Re-baselining: position in the current block of anomalous points, the block's first value, and the sums of
    /// (value - first) and k * (value - first) for a least-squares trend.
    anom_run: Vec<u16>,
    shift_x0: Vec<f32>,
    shift_sx: Vec<f32>,
    shift_skx: Vec<f32>,
    rebaseline_after: u16,
    /// Chunk marks: `mark[slot] == epoch` when the slot is already in the current chunk.
    mark: Vec<u32>,
    epoch: u32,
    profiles: Vec<Profile>,
    // Scratch, reused across batches.
    slots: Vec<u32>,
    xs: Vec<f32>,
    zs: Vec<f32>,
    sigmas: Vec<f32>,
    keep: Vec<u32>,
}

impl ShardDetector {
    pub fn new(cfg: &DetectorConfig, rca: &RcaConfig, kernels: Kernels) -> Self {
        Self::with_backend(cfg, rca, |_| ScoringBackend::cpu(kernels))
    }

    /// The robust model's parameters a detector config implies.
    pub fn robust_params(cfg: &DetectorConfig) -> RobustParams {
        RobustParams {
            alpha: cfg.alpha as f32,
            beta: cfg.beta as f32,
            huber: cfg.huber as f32,
            threshold: cfg.threshold as f32,
            anomaly_weight: cfg.anomaly_weight as f32,
            abs_floor: 1e-6,
            rel_floor: cfg.rel_floor as f32,
        }
    }

    /// A detector scoring on the backend `backend` builds from the robust parameters.
    pub fn with_backend(
        cfg: &DetectorConfig,
        rca: &RcaConfig,
        backend: impl FnOnce(&RobustParams) -> ScoringBackend,
    ) -> Self {
        let params = Self::robust_params(cfg);
        Self {
            scoring: backend(&params),
            params,
            warmup: cfg.warmup_points,
            cfg: cfg.clone(),
            rca: rca.clone(),
            index: IdMap::default(),
            keys: Vec::new(),
            profile: Vec::new(),
            flags: Vec::new(),
            run_start: Vec::new(),
            last_time: Vec::new(),
            anom_run: Vec::new(),
            shift_x0: Vec::new(),
            shift_sx: Vec::new(),
            shift_skx: Vec::new(),
            rebaseline_after: cfg.rebaseline_after.min(u32::from(u16::MAX)) as u16,
            mark: Vec::new(),
            epoch: 0,
            profiles: Vec::new(),
            slots: Vec::new(),
            xs: Vec::new(),
            zs: Vec::new(),
            sigmas: Vec::new(),
            keep: Vec::new(),
        }
    }

    pub fn series_count(&self) -> usize {
        self.keys.len()
    }

    /// The backend scoring this shard (it may have moved from the GPU to the CPU after a device failure).
    pub fn scoring(&mut self) -> &mut ScoringBackend {
        &mut self.scoring
    }

    fn slot_of(&mut self, id: SeriesId, key: &Arc<SeriesKey>, stats: &mut BatchStats) -> u32 {
        if let Some(&s) = self.index.get(&id) {
            return s;
        }
        stats.new_series += 1;
        let s = self.scoring.push();
        let prof = Profile::resolve(&self.cfg, &self.rca, &key.service, &key.metric);
        let pi = match self.profiles.iter().position(|p| *p == prof) {
            Some(i) => i,
            None => {
                self.profiles.push(prof);
                self.profiles.len() - 1
            }
        };
        self.index.insert(id, s);
        self.keys.push(Arc::clone(key));
        self.profile.push(pi as u16);
        self.flags.push(0);
        self.run_start.push(TimeMs::MIN);
        self.last_time.push(TimeMs::MIN);
        self.anom_run.push(0);
        self.shift_x0.push(0.0);
        self.shift_sx.push(0.0);
        self.shift_skx.push(0.0);
        self.mark.push(0);
        s
    }

    /// Tracks runs of points the learned model finds anomalous, in blocks of `rebaseline-after` points. At the end of
    /// a block a least-squares line is fitted to its values; if the drift it predicts across the block is within
    /// `huber` sigmas the shift has settled and is accepted as the new normal: the level jumps to the line's end
    /// value. A ramp does not settle, so it keeps being flagged, block after block. Returns the new level if any.
    fn track_shift(&mut self, s: usize, x: f32, z: f32, sigma: f32, learned: bool) -> Option<f32> {
        if !learned || z.abs() < self.params.threshold || self.rebaseline_after == 0 {
            self.anom_run[s] = 0;
            return None;
        }
        let k = self.anom_run[s];
        if k == 0 {
            self.shift_x0[s] = x;
            self.shift_sx[s] = 0.0;
            self.shift_skx[s] = 0.0;
        }
        // Values relative to the block's first one keep the f32 sums precise.
        let d = x - self.shift_x0[s];
        self.shift_sx[s] += d;
        self.shift_skx[s] += f32::from(k) * d;
        let n = k + 1;
        if n < self.rebaseline_after {
            self.anom_run[s] = n;
            return None;
        }
        self.anom_run[s] = 0;
        let nf = f32::from(n);
        let (sk, skk) = (nf * (nf - 1.0) / 2.0, (nf - 1.0) * nf * (2.0 * nf - 1.0) / 6.0);
        let slope = (nf * self.shift_skx[s] - sk * self.shift_sx[s]) / (nf * skk - sk * sk);
        let intercept = (self.shift_sx[s] - slope * sk) / nf;
        if (slope * nf).abs() > self.params.huber * sigma {
            return None;
        }
        let level = self.shift_x0[s] + intercept + slope * (nf - 1.0);
        self.scoring.set_level(s, level);
        Some(level)
    }

    /// Scores a batch of points (series in any order, each series in event-time order) and appends anomaly events.
    pub fn process(
        &mut self,
        ids: &[SeriesId],
        keys: &[Arc<SeriesKey>],
        times: &[TimeMs],
        values: &[f64],
        out: &mut Vec<AnomalyEvent>,
    ) -> BatchStats {
        let mut stats = BatchStats { points: ids.len() as u64, ..Default::default() };
        self.slots.clear();
        self.xs.clear();
        self.keep.clear();
        for i in 0..ids.len() {
            let s = self.slot_of(ids[i], &keys[i], &mut stats);
            let t = times[i];
            // Models read event time only: a point not newer than the series' last one is late and skipped.
            if t <= self.last_time[s as usize] {
                stats.late += 1;
                continue;
            }
            self.last_time[s as usize] = t;
            self.slots.push(s);
            self.xs.push(values[i] as f32);
            self.keep.push(i as u32);
        }
        let n = self.slots.len();
        self.zs.resize(n, 0.0);
        self.sigmas.resize(n, 0.0);
        // Chunks in which no series repeats: the kernel scores a chunk, then each point is judged, so every point sees
        // the model exactly as the points before it left it (re-baselines included), whatever the batch size.
        let mut start = 0;
        while start < n {
            self.epoch = self.epoch.wrapping_add(1);
            if self.epoch == 0 {
                self.mark.fill(0);
                self.epoch = 1;
            }
            let mut end = start;
            while end < n {
                let s = self.slots[end] as usize;
                if self.mark[s] == self.epoch {
                    break;
                }
                self.mark[s] = self.epoch;
                end += 1;
            }
            self.scoring.update(
                &self.slots[start..end],
                &self.xs[start..end],
                &mut self.zs[start..end],
                &mut self.sigmas[start..end],
                &self.params,
            );
            for j in start..end {
                self.judge(j, times, values, out, &mut stats);
            }
            start = end;
        }
        stats
    }

    /// Applies the ladder, noise controls and M-of-N to point `j` of the current batch; pushes an event if raised.
    #[inline]
    fn judge(
        &mut self,
        j: usize,
        times: &[TimeMs],
        values: &[f64],
        out: &mut Vec<AnomalyEvent>,
        stats: &mut BatchStats,
    ) {
        let s = self.slots[j] as usize;
        let i = self.keep[j] as usize;
        let x = values[i];
        let seen = self.scoring.count(s);
        // `seen` counts this point; the model was usable if it had warmed up before it.
        let learned = seen > self.warmup;
        let z = self.zs[j];
        let rebaselined = self.track_shift(s, self.xs[j], z, self.sigmas[j], learned);
        let prof = &self.profiles[self.profile[s] as usize];
        // The model's expected value before this point: x - z * sigma (the kernel's residual, exactly).
        let expected = f64::from(self.xs[j]) - f64::from(z) * f64::from(self.sigmas[j]);
        let dev = x - expected;
        let model_fired = learned
            && z.abs() >= prof.threshold
            && dev.abs() >= prof.min_abs
            && dev.abs() >= prof.min_rel * expected.abs()
            && match prof.direction {
                DirectionFilter::Up => z > 0.0,
                DirectionFilter::Down => z < 0.0,
                DirectionFilter::Both => true,
            };
        let rule = match (prof.above, prof.below) {
            _ if learned && !prof.rules_always => None,
            (Some(b), _) if x > b => Some(RuleHit { bound: b, direction: Direction::Up }),
            (_, Some(b)) if x < b => Some(RuleHit { bound: b, direction: Direction::Down }),
            _ => None,
        };
        let flagged = model_fired || rule.is_some();
        let mask: u16 = if prof.n >= 16 { u16::MAX } else { (1u16 << prof.n) - 1 };
        let hist = ((self.flags[s] << 1) | u16::from(flagged)) & mask;
        self.flags[s] = hist;
        let t = times[i];
        if !flagged {
            if hist == 0 {
                self.run_start[s] = TimeMs::MIN;
            }
            return;
        }
        if self.run_start[s] == TimeMs::MIN {
            self.run_start[s] = t;
        }
        let in_window = hist.count_ones();
        if in_window < prof.m {
            return;
        }
        let sigma = f64::from(self.sigmas[j]);
        let band = f64::from(prof.threshold) * sigma;
        let model_score = if learned { z_score_to_unit(f64::from(z), f64::from(prof.threshold)) } else { 0.0 };
        let score = match rule {
            Some(r) => model_score.max(rule_score(x, r.bound)),
            None => model_score,
        };
        let direction = if model_fired {
            if z >= 0.0 { Direction::Up } else { Direction::Down }
        } else {
            rule.map_or(Direction::Up, |r| r.direction)
        };
        out.push(AnomalyEvent {
            key: Arc::clone(&self.keys[s]),
            role: prof.role,
            time: t,
            started_at: self.run_start[s],
            observed: x,
            expected: if learned { expected } else { rule.map_or(expected, |r| r.bound) },
            lower: if learned { expected - band } else { f64::NAN },
            upper: if learned { expected + band } else { f64::NAN },
            z: if learned { f64::from(z) } else { 0.0 },
            score,
            direction,
            stage: if learned { Stage::Robust } else { Stage::ColdStartRule },
            model_fired,
            model_score,
            rule,
            anomalous_in_window: in_window,
            window: prof.n,
            points_seen: seen,
            rebaselined: rebaselined.map(f64::from),
        });
        stats.anomalies += 1;
    }
}

/// Maps |z| to [0, 1): 0.5 at the threshold, about 0.94 at twice it, about 0.998 at three times.
pub fn z_score_to_unit(z: f64, threshold: f64) -> f64 {
    let r = z.abs() / threshold.max(1e-9);
    1.0 - (-(r * r) * std::f64::consts::LN_2).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn detector() -> ShardDetector {
        let cfg = Config::default_config().unwrap();
        ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::detect())
    }

    fn run(det: &mut ShardDetector, key: &Arc<SeriesKey>, xs: &[f64], t0: TimeMs) -> Vec<AnomalyEvent> {
        let n = xs.len();
        let ids = vec![key.id; n];
        let keys = vec![Arc::clone(key); n];
        let times: Vec<TimeMs> = (0..n as i64).map(|i| t0 + i * 60_000).collect();
        let mut out = Vec::new();
        det.process(&ids, &keys, &times, xs, &mut out);
        out
    }

    fn wobble(n: usize, base: f64, amp: f64) -> Vec<f64> {
        (0..n).map(|i| base + amp * ((i * 7919 % 13) as f64 / 6.0 - 1.0)).collect()
    }

    #[test]
    fn cold_start_rule_fires_from_first_points_and_says_so() {
        let mut det = detector();
        let key = Arc::new(SeriesKey::new("cart", "error_rate", [] as [(&str, &str); 0]));
        let ev = run(&mut det, &key, &[0.2, 0.3, 0.25], 0);
        assert_eq!(ev.len(), 2, "M-of-N 2 of 3: the second and third points raise events");
        assert_eq!(ev[0].stage, Stage::ColdStartRule);
        assert_eq!(ev[0].started_at, 0);
        assert!(ev[0].explanation().contains("cold start"), "{}", ev[0].explanation());
    }

    #[test]
    fn learned_model_flags_a_shift_and_single_spikes_are_suppressed() {
        let mut det = detector();
        let key = Arc::new(SeriesKey::new("cart", "latency_p50_ms", [] as [(&str, &str); 0]));
        let mut xs = wobble(200, 20.0, 1.0);
        xs[150] = 40.0; // lone spike: 1 of 3, suppressed
        xs.extend(std::iter::repeat_n(35.0, 5));
        let ev = run(&mut det, &key, &xs, 0);
        assert!(ev.iter().all(|e| e.time >= 200 * 60_000), "spike leaked: {:?}", ev.first().map(|e| e.time));
        assert_eq!(ev.len(), 4, "points 2..5 of the shift");
        assert_eq!(ev[0].started_at, 200 * 60_000);
        assert!(ev[0].stage == Stage::Robust && ev[0].direction == Direction::Up);
        assert!((ev[0].expected - 20.0).abs() < 1.0 && ev[0].upper < 35.0);
    }

    #[test]
    fn direction_filter_ignores_latency_drops() {
        let mut det = detector();
        let key = Arc::new(SeriesKey::new("cart", "latency_p99_ms", [] as [(&str, &str); 0]));
        let mut xs = wobble(200, 100.0, 3.0);
        xs.extend(std::iter::repeat_n(20.0, 10));
        assert!(run(&mut det, &key, &xs, 0).is_empty());
    }

    #[test]
    fn sustained_stable_shift_is_rebaselined_and_the_event_says_so() {
        let mut det = detector();
        let key = Arc::new(SeriesKey::new("cart", "request_rate", [] as [(&str, &str); 0]));
        let mut xs = wobble(200, 100.0, 2.0);
        xs.extend(wobble(100, 150.0, 2.0));
        let ev = run(&mut det, &key, &xs, 0);
        let rebased: Vec<&AnomalyEvent> = ev.iter().filter(|e| e.rebaselined.is_some()).collect();
        assert_eq!(rebased.len(), 1, "exactly one re-baseline");
        let r = rebased[0];
        assert_eq!(r.time, (200 + 29) * 60_000, "after rebaseline-after = 30 anomalous points");
        assert!((r.rebaselined.unwrap() - 150.0).abs() < 3.0);
        assert!(r.explanation().contains("new normal"), "{}", r.explanation());
        assert!(ev.iter().all(|e| e.time <= r.time), "no anomalies once the new level is accepted");
    }

    #[test]
    fn slow_ramp_keeps_being_flagged() {
        let mut det = detector();
        let key = Arc::new(SeriesKey::new("cart", "memory_utilization", [] as [(&str, &str); 0]));
        // Boiling frog: after warm-up, +0.6 % of the level per point for 150 points.
        let mut xs = wobble(200, 0.40, 0.002);
        xs.extend((1..=150).map(|i| 0.40 + 0.0024 * i as f64));
        let ev = run(&mut det, &key, &xs, 0);
        assert!(ev.iter().all(|e| e.rebaselined.is_none()), "a ramp must not be accepted as normal");
        let last = ev.last().expect("the ramp is flagged");
        assert_eq!(last.time, 349 * 60_000, "still flagged at the end of the ramp");
        assert!(ev.len() > 100, "flagged for most of the ramp, got {}", ev.len());
    }

    #[test]
    fn batching_does_not_change_the_events() {
        let key = Arc::new(SeriesKey::new("cart", "request_rate", [] as [(&str, &str); 0]));
        let other = Arc::new(SeriesKey::new("cart", "error_rate", [] as [(&str, &str); 0]));
        let mut xs = wobble(150, 100.0, 2.0);
        xs.extend(wobble(60, 160.0, 2.0));
        xs.extend(wobble(40, 100.0, 2.0));
        let render =
            |ev: &[AnomalyEvent]| ev.iter().map(|e| serde_json::to_string(&e.to_wire()).unwrap()).collect::<Vec<_>>();
        // All points of two interleaved series in one batch, against one point per batch.
        let (mut ids, mut keys, mut times, mut vals) = (vec![], vec![], vec![], vec![]);
        for (i, &x) in xs.iter().enumerate() {
            for (k, v) in [(&key, x), (&other, 0.002 + if i > 200 { 0.2 } else { 0.0 })] {
                ids.push(k.id);
                keys.push(Arc::clone(k));
                times.push(i as TimeMs * 60_000);
                vals.push(v);
            }
        }
        let mut whole = Vec::new();
        detector().process(&ids, &keys, &times, &vals, &mut whole);
        let mut det = detector();
        let mut single = Vec::new();
        for i in 0..ids.len() {
            det.process(&ids[i..=i], &keys[i..=i], &times[i..=i], &vals[i..=i], &mut single);
        }
        assert!(whole.iter().any(|e| e.rebaselined.is_some()));
        assert_eq!(render(&whole), render(&single));
    }

    #[test]
    fn rules_are_the_cold_start_rung_unless_always() {
        let key = Arc::new(SeriesKey::new("edge", "error_rate", [] as [(&str, &str); 0]));
        // A service whose normal error rate sits around 6 %: above the default 5 % cold-start rule.
        let xs = wobble(300, 0.06, 0.002);
        let ev = run(&mut detector(), &key, &xs, 0);
        assert!(!ev.is_empty() && ev.iter().all(|e| e.stage == Stage::ColdStartRule), "only the cold-start rung fires");
        assert!(ev.iter().all(|e| e.points_seen <= 61), "the rule stops once the model has warmed up");
        let mut cfg = Config::default_config().unwrap();
        cfg.detector.rules[0].always = true;
        let mut det = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::detect());
        let ev = run(&mut det, &key, &xs, 0);
        assert_eq!(ev.last().unwrap().points_seen, 300, "an `always` rule is a hard bound");
    }

    #[test]
    fn late_points_are_skipped() {
        let mut det = detector();
        let key = Arc::new(SeriesKey::new("a", "b", [] as [(&str, &str); 0]));
        let ids = [key.id; 3];
        let keys = [Arc::clone(&key), Arc::clone(&key), Arc::clone(&key)];
        let stats = det.process(&ids, &keys, &[10, 5, 10], &[1.0, 2.0, 3.0], &mut Vec::new());
        assert_eq!(stats.late, 2);
    }
}
