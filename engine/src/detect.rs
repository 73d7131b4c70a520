//! Per-series detection inside one shard: an ensemble of online models per series, the cold-start ladder, noise
//! controls (direction, minimum deviation, M-of-N), anomaly events with evidence, and a per-point score stream.
//!
//! Each point of a series goes through, in order:
//!
//! 1. the [`seasonal`] profile of the series, if its data showed a season: the robust model sees `x − profile(phase)`;
//! 2. the robust level and scale (the `faultline-kernels` robust EWMA), giving the standardised residual `z`;
//! 3. the [`cusum`] level-shift detector on `z`: a change point re-baselines the level (the new normal) and says so;
//! 4. [`spot`] calibration: the tail of `|z|` and of the CUSUM statistic, fitted per series by extreme value theory,
//!    turns both into a *surprise* `−log10 p`; the point is anomalous when the larger reaches `−log10 risk`;
//! 5. learning with poisoning resistance: anomalous points move the level and the profile with a small weight, never
//!    the scale, and never the calibration;
//! 6. the score stream: a point's score is its surprise mapped into [0, 1) if it beats the series' recent (decaying)
//!    peak, else 0, so an incident scores high once instead of on every point.
//!
//! The cold-start ladder: configured rules from the first point; the robust model after `warmup-points` (thresholded at
//! `threshold` sigmas until its calibration has enough peaks); the seasonal stage once a season is found.
//!
//! State is struct-of-arrays, one slot per series, owned by exactly one shard; [`ShardDetector::BYTES_PER_SERIES`]
//! says how much. Points are processed in *rounds* that hold at most one point per series, so each point sees the
//! state its predecessor left and the output does not depend on how points are batched.
// Hot path: no IO, no allocation per point, no logging per point. Events allocate only when an anomaly is raised.

pub mod cusum;
pub mod seasonal;
pub mod sketch;
pub mod spot;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use faultline_kernels::robust::MAD_TO_SIGMA;
use faultline_kernels::{Kernels, RobustParams, RobustState};

use self::cusum::{Cusum, CusumParams};
use self::seasonal::{SeasonalBank, SeasonalParams, Switch};
use self::sketch::{Sketch, SketchParams};
use self::spot::{Spot, SpotParams, surprise_to_unit};
use crate::config::{DetectorConfig, DirectionFilter, RcaConfig, Role, glob_match};
use crate::event::{AnomalyEvent, Channels, Direction, LevelShift, RuleHit, Stage, rule_score};
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub threshold: f32,
    pub direction: DirectionFilter,
    pub min_abs: f64,
    pub min_rel: f64,
    pub m: u32,
    pub n: u32,
    pub above: Option<f64>,
    pub below: Option<f64>,
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
            role: rca.role_of(metric),
        };
        for r in d.rules.iter().filter(|r| matches(&r.metric, &r.service)) {
            p.above = p.above.or(r.above);
            p.below = p.below.or(r.below);
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

/// One point on its way through the models, after the robust kernel.
#[derive(Debug, Clone, Copy)]
struct Scored {
    /// Series slot.
    s: usize,
    t: TimeMs,
    /// Time since the series' previous point (0 for its first).
    dt: TimeMs,
    x: f64,
    /// Seasonal offset the robust model's input had removed, and that input (`x − offset`).
    offset: f32,
    y: f32,
    /// The kernel's z-score and sigma.
    z: f32,
    sigma: f32,
}

/// The models of every series one shard owns.
pub struct ShardDetector {
    kernels: Kernels,
    params: RobustParams,
    seasonal_params: SeasonalParams,
    cusum_params: CusumParams,
    spot_params: SpotParams,
    sketch_params: SketchParams,
    /// Surprise at the configured risk, `−log10 risk`: the alarm level.
    alarm: f64,
    /// Mass a residual sketch needs before it can certify the alarm level (`prior / risk` points): until then the
    /// robust z-score, thresholded at `threshold`, stands in for it (the ladder's robust rung).
    mature: f32,
    /// Per-point decay factors of the fatigue count and of the score stream's recent peak.
    fatigue_decay: f32,
    novelty_decay: f64,
    warmup: u32,
    cfg: DetectorConfig,
    rca: RcaConfig,
    index: IdMap<u32>,
    keys: Vec<Arc<SeriesKey>>,
    robust: RobustState,
    seasonal: SeasonalBank,
    /// Slow, ungated mean absolute residual: the floor of the kernel's scale.
    spread: Vec<f32>,
    cusum: Vec<Cusum>,
    /// Tail calibration of |z| (the normal band) and of the CUSUM statistic (change points).
    spot_point: Vec<Spot>,
    spot_shift: Vec<Spot>,
    /// Rarity of the value and of the standardised residual under the series' own history.
    value: Vec<Sketch>,
    resid: Vec<Sketch>,
    /// Decaying count of recent alarms (fatigue) and the score stream's recent peak (novelty).
    alarms: Vec<f32>,
    peak: Vec<f32>,
    profile: Vec<u16>,
    /// M-of-N history, newest point in bit 0.
    flags: Vec<u16>,
    run_start: Vec<TimeMs>,
    last_time: Vec<TimeMs>,
    profiles: Vec<Profile>,
    // Scratch, reused across batches.
    /// Per slot: points of the series seen so far in this batch (reset after each batch).
    round_of: Vec<u32>,
    /// Per kept point: batch index, slot, round, time since the series' previous point.
    keep: Vec<u32>,
    kept_slots: Vec<u32>,
    rounds: Vec<u32>,
    dts: Vec<TimeMs>,
    /// Kept points ordered by round, and where each round starts in `order`.
    order: Vec<u32>,
    round_start: Vec<u32>,
    round_fill: Vec<u32>,
    /// One round's kernel input and output.
    slots: Vec<u32>,
    xs: Vec<f32>,
    offsets: Vec<f32>,
    zs: Vec<f32>,
    sigmas: Vec<f32>,
}

impl ShardDetector {
    /// Bytes of model state per series with the default seasonal settings (2 periods of 48 bins), not counting the
    /// series' key and index entry: robust 12, seasonal 445, CUSUM 24, two calibrations 40, score peak 4,
    /// bookkeeping 20.
    pub const BYTES_PER_SERIES: usize =
        RobustState::BYTES_PER_SERIES + SeasonalBank::bytes_per_series(2, 48) + 24 + 2 * 20 + 4 + 2 + 2 + 8 + 8;

    pub fn new(cfg: &DetectorConfig, rca: &RcaConfig, kernels: Kernels) -> Self {
        let params = RobustParams {
            alpha: cfg.alpha as f32,
            beta: cfg.beta as f32,
            huber: cfg.huber as f32,
            threshold: cfg.threshold as f32,
            anomaly_weight: cfg.anomaly_weight as f32,
            abs_floor: 1e-6,
            rel_floor: cfg.rel_floor as f32,
        };
        let se = &cfg.seasonal;
        let seasonal_params = SeasonalParams {
            periods: se.periods.iter().map(|p| p.as_millis_i64()).collect(),
            bins: se.bins,
            rate: se.rate as f32,
            alpha: cfg.alpha as f32,
            min_periods: se.min_periods as f32,
            min_gain: se.min_gain as f32,
        };
        let ls = &cfg.level_shift;
        let cusum_params = CusumParams { drift: ls.drift as f32, threshold: ls.threshold as f32, clip: ls.clip as f32 };
        let ca = &cfg.calibration;
        let spot_params = SpotParams {
            quantile: ca.quantile as f32,
            step: ca.step as f32,
            min_peaks: ca.min_peaks,
            memory: ca.memory as f32,
            max_shape: ca.max_shape as f32,
        };
        let de = &cfg.density;
        let sketch_params = SketchParams {
            decay: 0.5f32.powf(1.0 / de.half_life as f32),
            prior: de.prior as f32,
            tail: de.tail as f32,
            unseen: de.unseen as f32,
        };
        Self {
            kernels,
            params,
            seasonal_params,
            cusum_params,
            spot_params,
            sketch_params,
            alarm: -cfg.risk.log10(),
            mature: (de.prior / cfg.risk) as f32,
            fatigue_decay: 0.5f32.powf(1.0 / cfg.fatigue.half_life as f32),
            novelty_decay: 0.5f64.powf(1.0 / cfg.novelty.half_life),
            warmup: cfg.warmup_points,
            cfg: cfg.clone(),
            rca: rca.clone(),
            index: IdMap::default(),
            keys: Vec::new(),
            robust: RobustState::default(),
            seasonal: SeasonalBank::default(),
            spread: Vec::new(),
            cusum: Vec::new(),
            spot_point: Vec::new(),
            spot_shift: Vec::new(),
            value: Vec::new(),
            resid: Vec::new(),
            alarms: Vec::new(),
            peak: Vec::new(),
            profile: Vec::new(),
            flags: Vec::new(),
            run_start: Vec::new(),
            last_time: Vec::new(),
            profiles: Vec::new(),
            round_of: Vec::new(),
            keep: Vec::new(),
            kept_slots: Vec::new(),
            rounds: Vec::new(),
            dts: Vec::new(),
            order: Vec::new(),
            round_start: Vec::new(),
            round_fill: Vec::new(),
            slots: Vec::new(),
            xs: Vec::new(),
            offsets: Vec::new(),
            zs: Vec::new(),
            sigmas: Vec::new(),
        }
    }

    pub fn series_count(&self) -> usize {
        self.keys.len()
    }

    fn slot_of(&mut self, id: SeriesId, key: &Arc<SeriesKey>, stats: &mut BatchStats) -> u32 {
        if let Some(&s) = self.index.get(&id) {
            return s;
        }
        stats.new_series += 1;
        let s = self.robust.push();
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
        self.seasonal.push(&self.seasonal_params);
        self.cusum.push(Cusum::default());
        // The peaks threshold starts at 1 sigma (or 1 CUSUM unit) and climbs to its quantile.
        self.spot_point.push(Spot::new(1.0));
        self.spot_shift.push(Spot::new(1.0));
        self.spread.push(0.0);
        self.value.push(Sketch::default());
        self.resid.push(Sketch::default());
        self.alarms.push(0.0);
        self.peak.push(0.0);
        self.profile.push(pi as u16);
        self.flags.push(0);
        self.run_start.push(TimeMs::MIN);
        self.last_time.push(TimeMs::MIN);
        self.round_of.push(0);
        s
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
        self.process_scored(ids, keys, times, values, out, None)
    }

    /// [`ShardDetector::process`], also writing every point's score in [0, 1) into `scores[i]` when given (one slot
    /// per point; a late point scores 0). The score stream reports each incident once: see the module docs.
    pub fn process_scored(
        &mut self,
        ids: &[SeriesId],
        keys: &[Arc<SeriesKey>],
        times: &[TimeMs],
        values: &[f64],
        out: &mut Vec<AnomalyEvent>,
        mut scores: Option<&mut [f64]>,
    ) -> BatchStats {
        if let Some(sc) = scores.as_deref_mut() {
            assert_eq!(sc.len(), ids.len(), "one score slot per point");
            sc.fill(0.0);
        }
        let mut stats = BatchStats { points: ids.len() as u64, ..Default::default() };
        self.keep.clear();
        self.kept_slots.clear();
        self.rounds.clear();
        self.dts.clear();
        let mut rounds = 0;
        for i in 0..ids.len() {
            let s = self.slot_of(ids[i], &keys[i], &mut stats);
            let su = s as usize;
            let t = times[i];
            // Models read event time only: a point not newer than the series' last one is late and skipped.
            if t <= self.last_time[su] {
                stats.late += 1;
                continue;
            }
            let dt = if self.last_time[su] == TimeMs::MIN { 0 } else { t - self.last_time[su] };
            self.last_time[su] = t;
            // The k-th point of a series in this batch goes into round k.
            let r = self.round_of[su];
            self.round_of[su] = r + 1;
            rounds = rounds.max(r + 1);
            self.keep.push(i as u32);
            self.kept_slots.push(s);
            self.rounds.push(r);
            self.dts.push(dt);
        }
        for &s in &self.kept_slots {
            self.round_of[s as usize] = 0;
        }
        // Counting sort of the kept points by round; stable, so batch order is kept within a round.
        self.round_start.clear();
        self.round_start.resize(rounds as usize + 1, 0);
        for &r in &self.rounds {
            self.round_start[r as usize + 1] += 1;
        }
        for r in 1..self.round_start.len() {
            self.round_start[r] += self.round_start[r - 1];
        }
        self.round_fill.clear();
        self.round_fill.extend_from_slice(&self.round_start);
        self.order.clear();
        self.order.resize(self.keep.len(), 0);
        for (j, &r) in self.rounds.iter().enumerate() {
            let at = &mut self.round_fill[r as usize];
            self.order[*at as usize] = j as u32;
            *at += 1;
        }

        for r in 0..rounds as usize {
            let range = self.round_start[r] as usize..self.round_start[r + 1] as usize;
            self.slots.clear();
            self.xs.clear();
            self.offsets.clear();
            for &j in &self.order[range.clone()] {
                let (s, i) = (self.kept_slots[j as usize], self.keep[j as usize] as usize);
                let offset = self.seasonal.offset(s as usize, times[i], &self.seasonal_params);
                self.slots.push(s);
                self.offsets.push(offset);
                self.xs.push(values[i] as f32 - offset);
            }
            let n = self.slots.len();
            self.zs.resize(n, 0.0);
            self.sigmas.resize(n, 0.0);
            self.kernels.robust_update_gather(
                &mut self.robust,
                &self.slots,
                &self.xs,
                &mut self.zs,
                &mut self.sigmas,
                &self.params,
            );
            for k in 0..n {
                let j = self.order[range.start + k] as usize;
                let i = self.keep[j] as usize;
                let p = Scored {
                    s: self.kept_slots[j] as usize,
                    t: times[i],
                    dt: self.dts[j],
                    x: values[i],
                    offset: self.offsets[k],
                    y: self.xs[k],
                    z: self.zs[k],
                    sigma: self.sigmas[k],
                };
                let score = self.finish_point(p, out, &mut stats);
                if let Some(sc) = scores.as_deref_mut() {
                    sc[i] = score;
                }
            }
        }
        stats
    }

    /// Everything after the robust kernel for one point: scale floor, level shifts, the channels' surprises,
    /// learning, the score stream and events. Returns the point's score-stream value.
    fn finish_point(&mut self, p: Scored, out: &mut Vec<AnomalyEvent>, stats: &mut BatchStats) -> f64 {
        let s = p.s;
        let prof = self.profiles[self.profile[s] as usize];
        let seen = self.robust.count[s];
        // `seen` counts this point; the model was usable if it had warmed up before it.
        let learned = seen > self.warmup;
        let alarm = self.alarm;

        // The kernel's scale can collapse on sparse or quantised data (most deviations 0, the rest judged anomalous
        // and kept out of it); a slow, ungated mean absolute residual floors it.
        let residual = p.z * p.sigma;
        let spread = &mut self.spread[s];
        let sigma = p.sigma.max(*spread * MAD_TO_SIGMA * self.cfg.scale_floor as f32);
        let z = if sigma > 0.0 { residual / sigma } else { 0.0 };
        let w = (1.0 / seen as f32).max(self.cfg.scale_floor_alpha as f32);
        let cap = if *spread > 0.0 { 10.0 * *spread } else { f32::INFINITY };
        *spread += w * (residual.abs().min(cap) - *spread);
        // The model's expected value before this point: the kernel's residual, exactly, plus the seasonal offset.
        let expected = f64::from(p.offset) + f64::from(p.y) - f64::from(residual);
        let dev = p.x - expected;

        // Level shifts: CUSUM on z. A change point needs the statistic past its threshold and extreme for this series
        // (calibrated by SPOT), or far past it; the new level is then the new normal: re-baseline and say so.
        let (mut shift_s, mut level_shift, mut shift_up) = (0.0, None, true);
        if learned {
            let cusum = &mut self.cusum[s];
            let (stat, up) = cusum.update(z, p.y, &self.cusum_params);
            shift_up = up;
            let spot = &mut self.spot_shift[s];
            let stat_c = compress(stat);
            shift_s = if spot.calibrated(&self.spot_params) {
                spot.surprise(stat_c, &self.spot_params)
            } else {
                alarm * f64::from(stat) / f64::from(self.cusum_params.threshold)
            };
            spot.update(stat_c, shift_s < alarm, &self.spot_params);
            if cusum.changed(&self.cusum_params)
                && (shift_s >= alarm || stat >= FORCE_SHIFT * self.cusum_params.threshold)
                && let Some(new_level) = cusum.new_level()
            {
                cusum.reset();
                let from = f64::from(self.robust.level[s] + p.offset);
                self.robust.level[s] = new_level;
                level_shift = Some(LevelShift { from, to: f64::from(new_level + p.offset) });
            }
            // The calibrated residual tail gives the normal band; points beyond it stay out of the fit.
            let spot = &mut self.spot_point[s];
            let a = compress(z.abs());
            let beyond = spot.calibrated(&self.spot_params) && spot.surprise(a, &self.spot_params) >= alarm;
            spot.update(a, !beyond, &self.spot_params);
        }

        // The channels' surprises (−log10 p). Value and residual: rarity under the series' own history, read before
        // this point is counted. A young series, whose history cannot yet certify the risk, uses the robust z-score
        // thresholded at `threshold` instead of its residual history.
        let de = &self.cfg.density;
        let scoring = seen > de.warmup_points;
        let value_s = if scoring { self.value[s].surprise(p.x as f32, &self.sketch_params) } else { 0.0 };
        let young = learned && self.resid[s].total < self.mature;
        let resid_s = if !scoring {
            0.0
        } else if young {
            let r = f64::from(compress(z.abs())) / f64::from(prof.threshold);
            alarm * r * r
        } else {
            self.resid[s].surprise(z, &self.sketch_params) - de.residual_discount
        };
        self.value[s].update(p.x as f32, &self.sketch_params);
        if learned {
            self.resid[s].update(z, &self.sketch_params);
        }
        let raw = value_s.max(resid_s).max(0.0);
        // Fatigue: a series that alarmed often lately is discounted by log10(1 + alarms / scale).
        let fatigue = (1.0 + f64::from(self.alarms[s]) / self.cfg.fatigue.scale).log10();
        let surprise = (raw - fatigue).max(0.0);
        self.alarms[s] = self.alarms[s] * self.fatigue_decay + f32::from(u8::from(raw >= alarm));
        let anomalous = surprise >= alarm || level_shift.is_some();

        // Seasonal learning; anomalous points pull the profile with the robust model's anomaly weight.
        let weight = if anomalous { self.params.anomaly_weight } else { 1.0 };
        let switch = self.seasonal.update(s, p.t, p.dt, p.x as f32, weight, &self.seasonal_params);
        if switch != Switch::Unchanged {
            // The robust model now sees x − profile (or x again): restart it where the season's tracker stands.
            let active = if let Switch::Activated(c) = switch { Some(c) } else { None };
            let (level, err) = self.seasonal.tracker(s, active, &self.seasonal_params);
            self.robust.level[s] = level;
            self.robust.mad[s] = err;
            self.cusum[s].reset();
        }

        // The score stream: a point counts only if it beats the series' recent peak by a margin, so an incident
        // scores high once instead of on each of its points.
        let recent = f64::from(self.peak[s]) * self.novelty_decay;
        let novel = if surprise > recent + self.cfg.novelty.margin { surprise } else { 0.0 };
        self.peak[s] = recent.max(surprise) as f32;

        let x = p.x;
        let direction_if_model = match level_shift {
            Some(_) if shift_up => Direction::Up,
            Some(_) => Direction::Down,
            None if dev >= 0.0 => Direction::Up,
            None => Direction::Down,
        };
        let allowed = match prof.direction {
            DirectionFilter::Up => direction_if_model == Direction::Up,
            DirectionFilter::Down => direction_if_model == Direction::Down,
            DirectionFilter::Both => true,
        };
        let model_fired =
            learned && anomalous && allowed && dev.abs() >= prof.min_abs && dev.abs() >= prof.min_rel * expected.abs();
        let rule = match (prof.above, prof.below) {
            (Some(b), _) if x > b => Some(RuleHit { bound: b, direction: Direction::Up }),
            (_, Some(b)) if x < b => Some(RuleHit { bound: b, direction: Direction::Down }),
            _ => None,
        };
        let rule_part = rule.map_or(0.0, |r| rule_score(x, r.bound));
        let stream = surprise_to_unit(novel, alarm).max(rule_part);

        let flagged = model_fired || rule.is_some();
        let mask: u16 = if prof.n >= 16 { u16::MAX } else { (1u16 << prof.n) - 1 };
        let hist = ((self.flags[s] << 1) | u16::from(flagged)) & mask;
        self.flags[s] = hist;
        let t = p.t;
        if !flagged {
            if hist == 0 {
                self.run_start[s] = TimeMs::MIN;
            }
            return stream;
        }
        if self.run_start[s] == TimeMs::MIN {
            self.run_start[s] = t;
        }
        let in_window = hist.count_ones();
        // A level shift has already accumulated its evidence over many points: it needs no M-of-N.
        let shift_event = model_fired && level_shift.is_some();
        if in_window < prof.m && !shift_event {
            return stream;
        }
        let spot = &self.spot_point[s];
        let threshold_z = if !young && spot.calibrated(&self.spot_params) {
            spot.quantile_at(alarm, &self.spot_params)
        } else {
            prof.threshold
        };
        let band = f64::from(threshold_z) * f64::from(sigma);
        let stage = if !learned {
            Stage::ColdStartRule
        } else if self.seasonal.active(s).is_some() {
            Stage::Seasonal
        } else {
            Stage::Robust
        };
        let unit = |c: f64| surprise_to_unit((c - fatigue).max(0.0), alarm);
        let channels = Channels {
            value: unit(value_s),
            residual: unit(resid_s),
            shift: unit(shift_s),
            residual_name: if young {
                "robust-z"
            } else if stage == Stage::Seasonal {
                "seasonal-residual"
            } else {
                "residual"
            },
            fatigue,
        };
        let score = if learned { surprise_to_unit(surprise, alarm) } else { 0.0 }.max(rule_part);
        let direction = if model_fired { direction_if_model } else { rule.map_or(Direction::Up, |r| r.direction) };
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
            stage,
            model_fired,
            channels,
            level_shift: if model_fired { level_shift } else { None },
            rule,
            anomalous_in_window: in_window,
            window: prof.n,
            points_seen: seen,
        });
        stats.anomalies += 1;
        stream
    }
}

/// Compresses a non-negative statistic beyond [`COMPRESS_KNEE`] logarithmically (`asinh`), so absurd values (a
/// deviation of 10⁶ sigmas on a nearly constant series) stay finite, ordered and do not swamp the tail fits.
#[inline]
pub fn compress(x: f32) -> f32 {
    COMPRESS_KNEE * (x / COMPRESS_KNEE).asinh()
}

/// Where [`compress`] turns from nearly linear to logarithmic.
pub const COMPRESS_KNEE: f32 = 50.0;

/// A CUSUM this many times past its threshold is a change point even if its calibration still calls it common (a
/// level stuck far from the data must always be able to recover).
pub const FORCE_SHIFT: f32 = 3.0;

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
    fn late_points_are_skipped() {
        let mut det = detector();
        let key = Arc::new(SeriesKey::new("a", "b", [] as [(&str, &str); 0]));
        let ids = [key.id; 3];
        let keys = [Arc::clone(&key), Arc::clone(&key), Arc::clone(&key)];
        let stats = det.process(&ids, &keys, &[10, 5, 10], &[1.0, 2.0, 3.0], &mut Vec::new());
        assert_eq!(stats.late, 2);
    }
}
