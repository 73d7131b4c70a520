//! Seasonality found per series from the data: a phase profile for each candidate period (daily, weekly, …), and a
//! running test of whether it predicts the series better than a plain level does.
//!
//! For each candidate period `P` a series keeps a profile of its own count of bins over one period (a decimated sketch:
//! with 96 bins a daily profile has one value per quarter hour, read with linear interpolation between bin centres; a
//! weekly one of 84 bins, one per two hours, carries what the daily one cannot: working days against weekends)
//! and a slow base level (time constant one period). The profile learns `x − base` by a gradient step on the two bins
//! around the point's phase and is kept centred, so base and profile do not trade an offset.
//!
//! The test is predictive, like an autocorrelation at lag `P` measured on what matters: two level trackers with the
//! robust model's speed follow `x` and `x − profile(phase)`, and exponentially weighted absolute one-step errors of both
//! are compared. A candidate becomes the series' season once it has seen `min-periods` periods and cuts the error by
//! `min-gain`; it is dropped again when its gain falls under half of that. While a season is active the robust model
//! sees `x − profile(phase)` (the ladder's *seasonal* stage).
//!
//! State is one array of profiles per candidate (series after series), one of per-candidate records and one of
//! per-series records, indexed by series slot: a point touches one record of each. A profile bin is 16 bits, a step
//! count of its candidate's own unit (block floating point: one power-of-two unit per series and candidate, doubled
//! when a bin would pass ±32,767 steps, [`widen`]): a bin resolves its profile's largest value to about 1/16,000 to
//! 1/32,000, and a 96-bin day with an 84-bin week holds 360 bytes instead of 720 in `f32`.
// Hot path: no IO, no allocation per point (only `push` allocates, once per new series), no logging.

// The largest step count a profile bin holds, the smallest unit, and the unit that holds a value: shared with the
// device's twin, which the WGSL mirrors.
use faultline_shaders::seasonal::{MIN_UNIT, Q_MAX, unit_for};

use crate::model::TimeMs;

/// Settings of the seasonal models (from `[detector.seasonal]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalParams {
    /// Candidate periods in milliseconds (at most [`MAX_PERIODS`]).
    pub periods: Vec<TimeMs>,
    /// Profile bins of each candidate period (one per entry of `periods`).
    pub bins: Vec<usize>,
    /// Learning weight of one point for the profile bins it touches, where the series visits each bin at least
    /// [`VISITS`] times a period (more for a sparser series: [`visit_rate`]).
    pub rate: f32,
    /// Weight of one point in the fast level trackers of the test (the robust model's `alpha`).
    pub alpha: f32,
    /// Periods of data before a candidate may become active.
    pub min_periods: f32,
    /// Fraction of the one-step error a candidate must remove to become active.
    pub min_gain: f32,
}

/// Most candidate periods per series.
pub const MAX_PERIODS: usize = 4;

impl SeasonalParams {
    /// Profile values per series: every candidate's bins.
    pub fn stride(&self) -> usize {
        self.bins.iter().sum()
    }

    /// Where candidate `c`'s bins start among a series' profile values.
    pub fn offset(&self, c: usize) -> usize {
        self.bins[..c].iter().sum()
    }
}

/// What an update changed about a series' season.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Unchanged,
    /// Candidate `c` became the series' season.
    Activated(usize),
    /// The series lost its season.
    Deactivated,
}

/// Seasonal state of every series of one shard.
#[derive(Debug, Default, Clone)]
pub struct SeasonalBank {
    /// One array per candidate, series after series: bin `b` of candidate `c` of series `s` at
    /// `profile[c][s * bins[c] + b]`. Candidate-major, so a round in slot order walks each candidate's profiles with
    /// that candidate's stride.
    profile: Vec<Vec<i16>>,
    /// Per series and candidate (`s * C + c`), together so a point touches one cache line.
    cand: Vec<Cand>,
    /// Per series.
    series: Vec<SeriesState>,
    /// The decay factors of the last few time steps seen (series that report at one rate share them).
    memo: DecayMemo,
    /// [`SeasonalBank::update_round`]'s phases, reused across rounds (not state).
    phases: Vec<(usize, usize, f32)>,
    /// Where the round's runs of points that learn in lanes start (x86-64 with AVX2), reused likewise.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    runs: Vec<usize>,
}

/// One point of a round for [`SeasonalBank::update_round`]: series slot, event time, time since the series' previous
/// point, value and profile weight, as [`SeasonalBank::update`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct RoundPoint {
    pub s: usize,
    pub t: TimeMs,
    pub dt: TimeMs,
    pub x: f32,
    pub weight: f32,
}

/// One series' seasonal state apart from its profile bins (see [`SeasonalBank::save`]).
#[derive(Debug, Clone, Copy)]
pub struct SeasonalSaved {
    cand: [Cand; MAX_PERIODS],
    series: SeriesState,
}

impl SeasonalSaved {
    /// Every field as plain numbers (the saved models' file, `persist::SeasonalParts`).
    pub fn to_parts(&self) -> super::persist::SeasonalParts {
        let s = &self.series;
        super::persist::SeasonalParts {
            cand: self.cand.map(|k| [k.sum, k.base, k.spread, k.fast, k.err]),
            units: self.cand.map(|k| k.unit),
            rem: self.cand.map(|k| k.rem),
            flat: [s.flat_fast, s.flat_err],
            n: s.n,
            active: s.active,
            first_time: s.first_time,
            phase_t: s.phase_t,
        }
    }

    /// The state [`SeasonalSaved::to_parts`] gave.
    pub fn from_parts(p: &super::persist::SeasonalParts) -> Self {
        let cand = std::array::from_fn(|c| {
            let [sum, base, spread, fast, err] = p.cand[c];
            Cand { sum, base, spread, fast, err, unit: p.units[c], rem: p.rem[c] }
        });
        let [flat_fast, flat_err] = p.flat;
        let series =
            SeriesState { flat_fast, flat_err, n: p.n, active: p.active, first_time: p.first_time, phase_t: p.phase_t };
        Self { cand, series }
    }
}

/// One candidate period's test and profile bookkeeping for one series.
///
/// `repr(C)`, 32 bytes: six `f32` fields and `rem`, so eight records transpose in vector registers into one register
/// per field ([`lanes`]).
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
struct Cand {
    /// Sum of the profile's values (to centre it; exact while under 2^24 steps of `unit`), slow base and the mean
    /// absolute residual around base plus profile, fast level of `x − profile` and its mean absolute one-step error.
    sum: f32,
    base: f32,
    spread: f32,
    fast: f32,
    err: f32,
    /// The value of one step of the profile's 16-bit bins: bin `q` holds `q · unit`. A power of two, so reading and
    /// writing a bin and summing the profile are exact; 0 until a bin first holds anything ([`widen`]).
    unit: f32,
    /// `phase_t.rem_euclid(period)` of the series' [`SeriesState::phase_t`]: the next point's remainder follows from
    /// it by an addition (see [`rem`]) instead of a 64-bit division.
    rem: TimeMs,
}

/// One series' plain level test and bookkeeping.
#[derive(Debug, Clone, Copy)]
struct SeriesState {
    /// Fast level of `x` and its mean absolute one-step error.
    flat_fast: f32,
    flat_err: f32,
    /// Points seen.
    n: u32,
    /// Active candidate + 1 (0: none).
    active: u8,
    /// First event time (`TimeMs::MIN` before it).
    first_time: TimeMs,
    /// The time the candidates' `rem` belong to (`TimeMs::MIN`: none yet).
    phase_t: TimeMs,
}

impl Default for SeriesState {
    fn default() -> Self {
        Self { flat_fast: 0.0, flat_err: 0.0, n: 0, active: 0, first_time: TimeMs::MIN, phase_t: TimeMs::MIN }
    }
}

/// The decay factors of one time step `dt` (ms, as `f32`): `1 − exp(−dt / τ)` for the error test's and each
/// candidate's time constant, and each candidate's visit weight.
#[derive(Debug, Clone, Copy)]
struct Decay {
    dt: f32,
    ew: f32,
    slow: [f32; MAX_PERIODS],
    rate: [f32; MAX_PERIODS],
}

impl Decay {
    fn of(dt: f32, p: &SeasonalParams) -> Self {
        let shortest = p.periods.iter().copied().min().unwrap_or(1) as f32;
        let mut d = Self { dt, ew: 0.0, slow: [0.0; MAX_PERIODS], rate: [0.0; MAX_PERIODS] };
        // The test averages errors over about two of the shortest periods.
        d.ew = 1.0 - (-dt / (2.0 * shortest)).exp();
        for (c, (&period, &bins)) in p.periods.iter().zip(&p.bins).enumerate() {
            d.slow[c] = 1.0 - (-dt / period as f32).exp();
            d.rate[c] = visit_rate(p.rate, dt, period, bins);
        }
        d
    }
}

/// The decay factors of the last [`MEMO`] distinct time steps seen, so that series reporting at a few rates (every
/// minute, every five, hourly) share them: two or three `exp`s (and a `powf` where steps are sparse) a point saved,
/// with the same bits as computing them afresh. One entry missed `exp`s on an eighth of NAB's points, whose rounds
/// mix files of different steps.
#[derive(Debug, Clone, Copy)]
struct DecayMemo {
    entries: [Decay; MEMO],
    /// The entry the last lookup found (looked at first) and the one the next miss replaces.
    last: usize,
    next: usize,
}

/// Time steps [`DecayMemo`] remembers.
const MEMO: usize = 4;

impl DecayMemo {
    /// The factors of time step `dt` (ms; negative counts as 0), computed only when none of the remembered steps is
    /// `dt`.
    #[inline(always)]
    fn get(&mut self, dt: TimeMs, p: &SeasonalParams) -> Decay {
        let dt = dt.max(0) as f32;
        let bits = dt.to_bits();
        if self.entries[self.last].dt.to_bits() == bits {
            return self.entries[self.last];
        }
        self.miss(dt, p)
    }

    #[inline(never)]
    fn miss(&mut self, dt: f32, p: &SeasonalParams) -> Decay {
        let bits = dt.to_bits();
        if let Some(k) = self.entries.iter().position(|e| e.dt.to_bits() == bits) {
            self.last = k;
            return self.entries[k];
        }
        let k = self.next;
        self.entries[k] = Decay::of(dt, p);
        (self.last, self.next) = (k, (k + 1) % MEMO);
        self.entries[k]
    }
}

/// The learning weight of one visit to candidate `period`'s profile (`bins` bins) at time step `dt` (ms). `rate` is a
/// visit's weight where the series visits each bin [`VISITS`] times a period or more (steps up to a third of a bin's
/// width: 5 minutes on a day of 96 bins). A series that reports more sparsely visits each bin less often, and each
/// visit learns what the visits it stands for would have: `1 − (1 − rate)^(dt / reference)`, the reference step being
/// a bin's width over [`VISITS`]. Once a step is a bin's width or more, each bin it visits is visited once a period:
/// the exponent stops at [`VISITS`] (a visit learns what a period's visits learn at the reference step, not more, so
/// a sparse series' profile still averages several periods).
pub fn visit_rate(rate: f32, dt: f32, period: TimeMs, bins: usize) -> f32 {
    let reference = period as f32 / (bins as f32 * VISITS);
    if dt <= reference { rate } else { 1.0 - (1.0 - rate).powf((dt / reference).min(VISITS)) }
}

/// Visits to each bin a period at and above which `rate` is a visit's weight as configured.
pub const VISITS: f32 = 3.0;

impl Default for DecayMemo {
    fn default() -> Self {
        // A NaN step matches no step (they come from integers).
        let empty = Decay { dt: f32::NAN, ew: 0.0, slow: [0.0; MAX_PERIODS], rate: [0.0; MAX_PERIODS] };
        Self { entries: [empty; MEMO], last: 0, next: 0 }
    }
}

impl SeasonalBank {
    /// Bytes of state per series for candidate periods of `bins[c]` bins each.
    pub const fn bytes_per_series(bins: &[usize]) -> usize {
        let mut bytes = size_of::<SeriesState>();
        let mut c = 0;
        while c < bins.len() {
            bytes += bins[c] * size_of::<i16>() + size_of::<Cand>();
            c += 1;
        }
        bytes
    }

    /// Adds a fresh series.
    pub fn push(&mut self, p: &SeasonalParams) {
        let c = p.periods.len();
        self.profile.resize_with(c, Vec::new);
        for (profile, &n) in self.profile.iter_mut().zip(&p.bins) {
            profile.extend(std::iter::repeat_n(0, n));
        }
        self.cand.extend(std::iter::repeat_n(Cand::default(), c));
        self.series.push(SeriesState::default());
    }

    /// Makes series `s`'s state fresh again, as [`SeasonalBank::push`] leaves a new series (a slot reused).
    pub fn reset(&mut self, s: usize, p: &SeasonalParams) {
        let c = p.periods.len();
        for (profile, &n) in self.profile.iter_mut().zip(&p.bins) {
            profile[s * n..(s + 1) * n].fill(0);
        }
        self.cand[s * c..(s + 1) * c].fill(Cand::default());
        self.series[s] = SeriesState::default();
    }

    /// The active candidate of series `s`, if it has a season.
    #[inline]
    pub fn active(&self, s: usize) -> Option<usize> {
        self.series[s].active.checked_sub(1).map(usize::from)
    }

    /// The event time of series `s`'s first point (`TimeMs::MIN` before it, or without candidate periods).
    pub fn first_time(&self, s: usize) -> TimeMs {
        self.series[s].first_time
    }

    /// Seasonal offset of series `s` at time `t` under its active season (0 without one).
    #[inline]
    pub fn offset(&self, s: usize, t: TimeMs, p: &SeasonalParams) -> f32 {
        match self.active(s) {
            Some(c) => self.profile_at(s, c, t, p),
            None => 0.0,
        }
    }

    /// Slow base level of series `s` under candidate `c` (what the robust level is re-seeded with on activation).
    #[inline]
    pub fn base(&self, s: usize, c: usize, p: &SeasonalParams) -> f32 {
        self.cand[s * p.periods.len() + c].base
    }

    /// Weighted absolute one-step error of candidate `c` (a scale estimate once it is active).
    #[inline]
    pub fn error(&self, s: usize, c: usize, p: &SeasonalParams) -> f32 {
        self.cand[s * p.periods.len() + c].err
    }

    /// Fraction of the plain level's one-step error that candidate `c` removes.
    #[inline]
    pub fn gain(&self, s: usize, c: usize, p: &SeasonalParams) -> f32 {
        gain(self.series[s].flat_err, self.cand[s * p.periods.len() + c].err)
    }

    #[inline]
    fn profile_at(&self, s: usize, c: usize, t: TimeMs, p: &SeasonalParams) -> f32 {
        let k = s * p.periods.len() + c;
        let n = p.bins[c];
        let (b0, b1, frac) =
            phase_of_rem(rem(self.series[s].phase_t, self.cand[k].rem, t, p.periods[c]), p.periods[c], n);
        let bins = &self.profile[c][s * n..(s + 1) * n];
        let unit = self.cand[k].unit;
        (1.0 - frac) * (f32::from(bins[b0]) * unit) + frac * (f32::from(bins[b1]) * unit) - self.cand[k].sum / n as f32
    }

    /// The fast level tracker and its mean absolute error for candidate `c` (of `x − profile`), or for the plain
    /// level when `c` is `None`: where the robust model restarts when the season changes. Third, for a candidate, its
    /// slow mean absolute deviation around its base (what the scale floor may fall to when the season is found;
    /// infinity for the plain level, which leaves the floor as it is).
    pub fn tracker(&self, s: usize, c: Option<usize>, p: &SeasonalParams) -> (f32, f32, f32) {
        match c {
            Some(c) => {
                let k = &self.cand[s * p.periods.len() + c];
                (k.fast, k.err, k.spread)
            }
            None => (self.series[s].flat_fast, self.series[s].flat_err, f32::INFINITY),
        }
    }

    /// Saves series `s`'s whole seasonal state: its profile bins are appended to `bins` (every candidate's, in
    /// order, as step counts of the candidate's unit), the rest is returned. [`SeasonalBank::restore`] puts both back
    /// (a learning pause).
    pub fn save(&self, s: usize, p: &SeasonalParams, bins: &mut Vec<i16>) -> SeasonalSaved {
        let cands = p.periods.len();
        let mut cand = [Cand::default(); MAX_PERIODS];
        cand[..cands].copy_from_slice(&self.cand[s * cands..(s + 1) * cands]);
        for b in self.bins_of(s) {
            bins.extend_from_slice(b);
        }
        SeasonalSaved { cand, series: self.series[s] }
    }

    /// Series `s`'s profile bins, one slice per candidate in order.
    fn bins_of(&self, s: usize) -> impl Iterator<Item = &[i16]> {
        let series = self.series.len();
        self.profile.iter().map(move |profile| {
            let n = profile.len() / series;
            &profile[s * n..(s + 1) * n]
        })
    }

    /// Puts back what [`SeasonalBank::save`] saved of series `s` (`bins`: exactly what it appended).
    pub fn restore(&mut self, s: usize, p: &SeasonalParams, saved: &SeasonalSaved, bins: &[i16]) {
        let cands = p.periods.len();
        self.cand[s * cands..(s + 1) * cands].copy_from_slice(&saved.cand[..cands]);
        self.series[s] = saved.series;
        let mut at = 0;
        for (profile, &n) in self.profile.iter_mut().zip(&p.bins) {
            profile[s * n..(s + 1) * n].copy_from_slice(&bins[at..at + n]);
            at += n;
        }
    }

    /// Every series' state in the layout of `seasonal_update.wgsl`: its profile is series-major, each series'
    /// candidates one after another (a bin's steps in an `i32` each).
    pub fn to_buffers(&self) -> faultline_shaders::seasonal::SeasonalBuffers {
        let mut b = faultline_shaders::seasonal::SeasonalBuffers::default();
        for s in 0..self.series.len() {
            for bins in self.bins_of(s) {
                b.profile.extend(bins.iter().map(|&q| i32::from(q)));
            }
        }
        for k in &self.cand {
            b.cand.extend([k.sum, k.base, k.spread, k.fast, k.err, k.unit]);
        }
        for s in &self.series {
            b.plain.extend([s.flat_fast, s.flat_err]);
            b.info.extend([s.n, u32::from(s.active)]);
        }
        b
    }

    /// The bank whose state is `b` (in the layout of `seasonal_update.wgsl`) with first event times `first_time`: a
    /// shard moving its seasonal models from the device to the CPU.
    pub fn from_buffers(
        b: &faultline_shaders::seasonal::SeasonalBuffers,
        first_time: &[TimeMs],
        p: &SeasonalParams,
    ) -> Self {
        use faultline_shaders::seasonal::CAND_FIELDS;
        let cand = b
            .cand
            .chunks_exact(CAND_FIELDS)
            .map(|f| Cand { sum: f[0], base: f[1], spread: f[2], fast: f[3], err: f[4], unit: f[5], rem: 0 })
            .collect();
        let series = b
            .plain
            .chunks_exact(2)
            .zip(b.info.chunks_exact(2))
            .zip(first_time)
            .map(|((plain, info), &first_time)| SeriesState {
                flat_fast: plain[0],
                flat_err: plain[1],
                n: info[0],
                active: info[1] as u8,
                first_time,
                // No remainder carried over: the next point computes its phase afresh.
                phase_t: TimeMs::MIN,
            })
            .collect();
        let mut profile: Vec<Vec<i16>> = vec![Vec::new(); p.bins.len()];
        for values in b.profile.chunks_exact(p.stride().max(1)) {
            let mut rest = values;
            for (profile, &n) in profile.iter_mut().zip(&p.bins) {
                let (mine, after) = rest.split_at(n);
                // The device's steps are the engine's (16 bits, `store`): the cast takes nothing away.
                profile.extend(mine.iter().map(|&q| q as i16));
                rest = after;
            }
        }
        Self { profile, cand, series, memo: DecayMemo::default(), phases: Vec::new(), runs: Vec::new() }
    }

    /// Learns point `(t, x)` of series `s`; `dt` is the time since its previous point in ms (ignored for the first)
    /// and `weight` scales the profile's step (the caller lowers it for anomalous points). Residuals are clipped at a
    /// few times the scales the bank tracks itself. Returns whether the series' season changed.
    pub fn update(&mut self, s: usize, t: TimeMs, dt: TimeMs, x: f32, weight: f32, p: &SeasonalParams) -> Switch {
        let mut phases = [(0, 0, 0.0); MAX_PERIODS];
        self.phases_of(s, t, x, p, &scales(p), &mut phases[..p.periods.len()]);
        self.learn(&RoundPoint { s, t, dt, x, weight }, &phases[..p.periods.len()], p)
    }

    /// [`SeasonalBank::update`] of every point of a round (no series twice), with the same results bit for bit:
    /// `switches[k]` is point `k`'s. Every point's phases first, in a loop of their own: their 64-bit arithmetic is a
    /// long chain of dependent steps, and a short loop of only that lets the processor overlap the points' chains.
    pub fn update_round(&mut self, points: &[RoundPoint], p: &SeasonalParams, switches: &mut Vec<Switch>) {
        switches.clear();
        let cands = p.periods.len();
        if cands == 0 {
            switches.resize(points.len(), Switch::Unchanged);
            return;
        }
        let mut phases = std::mem::take(&mut self.phases);
        phases.clear();
        let scales = scales(p);
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = lanes::Avx2::get()
            && lanes::allowed(self, p)
        {
            // Runs of eight points learn in vector registers, their phases included (bit for bit what `phases_of` and
            // `learn` give), the other points one by one, their phases first as below (one after another in
            // `phases`, in round order).
            let mut runs = std::mem::take(&mut self.runs);
            runs.clear();
            let mut k = 0;
            while k < points.len() {
                if points.get(k..k + lanes::LANES).is_some_and(|run| lanes::fits(self, run)) {
                    runs.push(k);
                    k += lanes::LANES;
                } else {
                    let pt = &points[k];
                    let at = phases.len();
                    phases.resize(at + cands, (0, 0, 0.0));
                    self.phases_of(pt.s, pt.t, pt.x, p, &scales, &mut phases[at..]);
                    k += 1;
                }
            }
            let (mut k, mut next, mut alone) = (0, runs.iter().copied().peekable(), phases.chunks_exact(cands));
            while k < points.len() {
                if next.next_if_eq(&k).is_some() {
                    let mut out = [Switch::Unchanged; lanes::LANES];
                    avx2.learn(self, &points[k..k + lanes::LANES], &scales, p, &mut out);
                    switches.extend_from_slice(&out);
                    k += lanes::LANES;
                } else {
                    let ph = alone.next().expect("a point learned alone had its phases computed");
                    switches.push(self.learn(&points[k], ph, p));
                    k += 1;
                }
            }
            self.runs = runs;
            self.phases = phases;
            return;
        }
        phases.resize(points.len() * cands, (0, 0, 0.0));
        for (pt, ph) in points.iter().zip(phases.chunks_exact_mut(cands)) {
            self.phases_of(pt.s, pt.t, pt.x, p, &scales, ph);
        }
        switches.extend(points.iter().zip(phases.chunks_exact(cands)).map(|(pt, ph)| self.learn(pt, ph, p)));
        self.phases = phases;
    }

    /// The phase of point `(t, x)` of series `s` in each candidate period (nothing for a point [`learn`] skips),
    /// moving the series' phase time to `t`.
    ///
    /// [`learn`]: SeasonalBank::learn
    #[inline(always)]
    fn phases_of(
        &mut self,
        s: usize,
        t: TimeMs,
        x: f32,
        p: &SeasonalParams,
        scales: &[f64; MAX_PERIODS],
        phases: &mut [(usize, usize, f32)],
    ) {
        let cands = p.periods.len();
        let se = &mut self.series[s];
        if cands == 0 || !x.is_finite() || se.first_time == TimeMs::MIN {
            return;
        }
        // Each candidate's remainder of `t` follows from the last point's: the point moves the phase time to `t`.
        let last = std::mem::replace(&mut se.phase_t, t);
        for (c, ph) in phases.iter_mut().enumerate() {
            let ks = &mut self.cand[s * cands + c];
            ks.rem = rem(last, ks.rem, t, p.periods[c]);
            *ph = phase_scaled(ks.rem, scales[c], p.bins[c]);
        }
    }

    /// Learns a point whose phases `phases_of` gave: the body of [`SeasonalBank::update`].
    #[inline(always)]
    fn learn(&mut self, pt: &RoundPoint, phases: &[(usize, usize, f32)], p: &SeasonalParams) -> Switch {
        let RoundPoint { s, t, dt, x, weight } = *pt;
        let cands = p.periods.len();
        if cands == 0 || !x.is_finite() {
            return Switch::Unchanged;
        }
        let se = &mut self.series[s];
        se.n = se.n.saturating_add(1);
        if se.first_time == TimeMs::MIN {
            se.first_time = t;
            se.flat_fast = x;
            for k in &mut self.cand[s * cands..(s + 1) * cands] {
                k.base = x;
                k.fast = x;
            }
            return Switch::Unchanged;
        }
        // Running means at first, then exponential forgetting.
        let running = 1.0 / se.n as f32;
        let a = greater(p.alpha, running);
        let decay = self.memo.get(dt, p);
        let ew = greater(decay.ew, running);
        let clip = clip_at(se.flat_err);
        let flat_e = lesser((x - se.flat_fast).abs(), clip);
        se.flat_err += ew * (flat_e - se.flat_err);
        se.flat_fast += a * within(x - se.flat_fast, clip);
        let flat_err = se.flat_err;
        let elapsed = (t - se.first_time) as f32;
        let mut best: Option<(usize, f32)> = None;
        // The gains the loop computes, for the active candidate's below (the same value: nothing it reads changes).
        let mut gains = [f32::NAN; MAX_PERIODS];
        // Indexed: iterating `gains` (or zipping it with the periods) adds 30 to 45 instructions a point on NAB.
        #[allow(clippy::needless_range_loop)]
        for c in 0..cands {
            let k = s * cands + c;
            let period_ms = p.periods[c];
            let period = period_ms as f32;
            // The phase (from `phases_of`) serves both the prediction and the gradient step; `season` is
            // `profile_at(s, c, t, p)`, term for term.
            let ks = &mut self.cand[k];
            let (b0, b1, frac) = phases[c];
            let n = p.bins[c];
            let bins = &mut self.profile[c][s * n..(s + 1) * n];
            let (q0, q1) = (bins[b0], bins[b1]);
            let (v0, v1) = (f32::from(q0) * ks.unit, f32::from(q1) * ks.unit);
            let season = (1.0 - frac) * v0 + frac * v1 - ks.sum / n as f32;
            let y = x - season;
            let e = lesser((y - ks.fast).abs(), clip);
            ks.err += ew * (e - ks.err);
            ks.fast += a * within(y - ks.fast, clip);
            // Slow base (time constant one period) and the profile learn the residual, clipped at its own scale.
            let spread_clip = clip_at(ks.spread);
            let raw = y - ks.base;
            let slow = greater(decay.slow[c], running);
            ks.spread += slow * (lesser(raw.abs(), spread_clip) - ks.spread);
            let r = within(raw, spread_clip);
            ks.base += slow * r;
            // Gradient step on the two bins the point's phase lies between.
            let step = decay.rate[c] * weight * r;
            store(bins, ks, (b0, q0, v0 + step * (1.0 - frac)), (b1, q1, v1 + step * frac));
            if elapsed >= p.min_periods * period {
                let g = gain(flat_err, ks.err);
                gains[c] = g;
                if best.is_none_or(|(_, bg)| g > bg) {
                    best = Some((c, g));
                }
            }
        }
        self.decide(s, best, &gains, elapsed, p)
    }

    /// The end of [`SeasonalBank::learn`] for series `s`, whose candidates' state is updated: `best` is the eligible
    /// candidate with the highest gain, `gains` the gains of the eligible ones (NaN for the others), `elapsed` the
    /// time since the series' first point.
    #[inline(always)]
    fn decide(
        &mut self,
        s: usize,
        best: Option<(usize, f32)>,
        gains: &[f32; MAX_PERIODS],
        elapsed: f32,
        p: &SeasonalParams,
    ) -> Switch {
        let cands = p.periods.len();
        let current = self.active(s);
        let current_gain = current.map_or(f32::NEG_INFINITY, |c| {
            if c < cands && elapsed >= p.min_periods * p.periods[c] as f32 { gains[c] } else { self.gain(s, c, p) }
        });
        match best {
            // A candidate takes over from another only by a clear margin (hysteresis).
            Some((c, g)) if g >= p.min_gain && current != Some(c) && g > current_gain + 0.1 => {
                self.series[s].active = c as u8 + 1;
                Switch::Activated(c)
            }
            _ if current.is_some() && current_gain < 0.5 * p.min_gain => {
                self.series[s].active = 0;
                Switch::Deactivated
            }
            _ => Switch::Unchanged,
        }
    }
}

/// `t.rem_euclid(period)` from `last_rem`, the remainder of the series' last phase time `last`, when `t` is less than
/// a period after it (exact integer arithmetic, so the same value), else afresh.
#[inline]
fn rem(last: TimeMs, last_rem: TimeMs, t: TimeMs, period: TimeMs) -> TimeMs {
    if last != TimeMs::MIN
        && let Some(d) = t.checked_sub(last)
        && (0..period).contains(&d)
    {
        // last_rem + d without overflow: both lie in [0, period).
        let left = period - last_rem;
        return if d < left { last_rem + d } else { d - left };
    }
    t.rem_euclid(period)
}

/// `v` rounded to an integer, ties to even, for `|v|` under 2^22 (the profile's step counts; for a larger or non-finite
/// `v` a value that is too: the caller checks the bound): adding and taking away 1.5 · 2^23 leaves no fraction in
/// the default rounding mode, which is what the lanes' `_mm256_cvtps_epi32` does, with no libm call (the x86-64
/// baseline has no `roundss`).
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (v + SHIFT) - SHIFT
}

/// Writes values `v0` and `v1` into bins `b0` and `b1` of a candidate's profile `bins`, which hold steps `q0` and `q1`
/// now, and moves the sum by what they moved: each rounded to the nearest step of the unit (ties to even), or through
/// [`widen`] where the unit cannot hold one in 16 bits. The seasonal lanes do the same in vector registers.
#[inline(always)]
fn store(bins: &mut [i16], ks: &mut Cand, (b0, q0, v0): (usize, i16, f32), (b1, q1, v1): (usize, i16, f32)) {
    let inv = 1.0 / ks.unit;
    let (n0, n1) = (round_even(v0 * inv), round_even(v1 * inv));
    if n0.abs() <= Q_MAX && n1.abs() <= Q_MAX {
        let (n0, n1) = (n0 as i16, n1 as i16);
        let moved = i32::from(n0) - i32::from(q0) + (i32::from(n1) - i32::from(q1));
        ks.sum += moved as f32 * ks.unit;
        (bins[b0], bins[b1]) = (n0, n1);
    } else {
        widen(bins, ks, (b0, v0), (b1, v1));
    }
}

/// Appends a profile's values `values` to `out` as 16-bit steps of the smallest power of two that holds the largest
/// ([`unit_for`]); a value that is not finite becomes 0. Returns the unit and the sum of the steps' values (what
/// [`Cand`] keeps).
pub(crate) fn to_steps(values: &[f32], out: &mut Vec<i16>) -> (f32, f32) {
    let largest = values.iter().filter(|v| v.is_finite()).fold(0f32, |m, v| m.max(v.abs()));
    let unit = unit_for(largest);
    let inv = 1.0 / unit;
    let at = out.len();
    out.extend(values.iter().map(|&v| if v.is_finite() && unit > 0.0 { round_even(v * inv) as i16 } else { 0 }));
    let sum: i32 = out[at..].iter().map(|&q| i32::from(q)).sum();
    (unit, sum as f32 * unit)
}

/// Whether `u` can be a profile's bin unit: 0, or a power of two from [`MIN_UNIT`] up.
pub(crate) fn is_unit(u: f32) -> bool {
    u == 0.0 || (u.is_finite() && u >= MIN_UNIT && u.to_bits() & 0x007f_ffff == 0)
}

/// Writes values `v0` and `v1` into bins `b0` and `b1` of a candidate's profile `bins` whose unit cannot hold them in
/// 16 bits (the first values of a fresh profile, or a profile grown past ±32,767 steps): the unit doubles until both
/// fit (never shrinking), every bin is rounded to the new unit, and the sum is the rounded bins'. A value that is not
/// finite leaves its bin as it was. Rare (a profile's unit settles once it has learned its swing), so out of line.
#[cold]
#[inline(never)]
fn widen(bins: &mut [i16], ks: &mut Cand, (b0, v0): (usize, f32), (b1, v1): (usize, f32)) {
    let old = ks.unit;
    let v0 = if v0.is_finite() { v0 } else { f32::from(bins[b0]) * old };
    let v1 = if v1.is_finite() { v1 } else { f32::from(bins[b1]) * old };
    let unit = unit_for(v0.abs().max(v1.abs())).max(old);
    if unit != old && old > 0.0 {
        // A power of two over a larger one: the ratio and each product are exact, then rounded to the new steps.
        let ratio = old / unit;
        for q in bins.iter_mut() {
            *q = round_even(f32::from(*q) * ratio) as i16;
        }
    }
    if unit > 0.0 {
        let inv = 1.0 / unit;
        (bins[b0], bins[b1]) = (round_even(v0 * inv) as i16, round_even(v1 * inv) as i16);
    }
    ks.unit = unit;
    let sum: i32 = bins.iter().map(|&q| i32::from(q)).sum();
    ks.sum = sum as f32 * unit;
}

/// Fraction of the plain level's one-step error `flat` that a candidate with error `err` removes.
#[inline]
fn gain(flat: f32, err: f32) -> f32 {
    if flat <= 0.0 { 0.0 } else { 1.0 - err / flat }
}

// The update's `min`, `max` and `clamp` as comparisons (the library's `min` and `max` also order NaNs, and `clamp`
// checks its bounds): the library's values wherever the bound (the second operand) is not NaN, which holds for every
// call (running weights, and clips from `clip_at`, which is never NaN). A NaN first operand gives what the library
// gives: the bound for `lesser` and `greater`, NaN for `within`.

/// `a.min(b)` for a `b` that is not NaN.
#[inline(always)]
fn lesser(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// `a.max(b)` for a `b` that is not NaN.
#[inline(always)]
fn greater(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `v.clamp(-c, c)` for a `c` that is neither NaN nor negative.
#[inline(always)]
fn within(v: f32, c: f32) -> f32 {
    // A `max` then a `min`, each one instruction (`maxss`, `minss` on x86-64), in the order that keeps a NaN `v`.
    let floor = if -c > v { -c } else { v };
    if c < floor { c } else { floor }
}

/// Residual clip for a mean absolute error `scale`: 4 scales (about 5 sigmas), none while the scale is unknown.
#[inline]
fn clip_at(scale: f32) -> f32 {
    if scale > 0.0 { 4.0 * scale } else { f32::INFINITY }
}

/// Bins around the phase of `t` in a period of `period` ms divided into `bins`: `(b0, b1, frac)` with the value
/// `(1 − frac)·bin[b0] + frac·bin[b1]` (linear interpolation between bin centres, wrapping around the period).
#[inline]
pub fn phase(t: TimeMs, period: TimeMs, bins: usize) -> (usize, usize, f32) {
    phase_of_rem(t.rem_euclid(period), period, bins)
}

/// [`phase`] of a time whose remainder in the period, `t.rem_euclid(period)`, is `rem`.
#[inline]
fn phase_of_rem(rem: TimeMs, period: TimeMs, bins: usize) -> (usize, usize, f32) {
    phase_scaled(rem, bins_per_ms(period, bins), bins)
}

/// Bins per millisecond of a period: what [`phase_scaled`] multiplies a remainder by.
#[inline]
fn bins_per_ms(period: TimeMs, bins: usize) -> f64 {
    bins as f64 / period as f64
}

/// Each candidate period's [`bins_per_ms`].
#[inline]
fn scales(p: &SeasonalParams) -> [f64; MAX_PERIODS] {
    let mut scales = [0.0; MAX_PERIODS];
    for ((scale, &period), &bins) in scales.iter_mut().zip(&p.periods).zip(&p.bins) {
        *scale = bins_per_ms(period, bins);
    }
    scales
}

/// [`phase_of_rem`] with the period's [`bins_per_ms`] computed once (by the caller, per round): a multiplication
/// instead of a division on the way from the remainder to the bins.
#[inline]
fn phase_scaled(rem: TimeMs, bins_per_ms: f64, bins: usize) -> (usize, usize, f32) {
    let pos = rem as f64 * bins_per_ms - 0.5;
    // `pos.floor()`, without the libm call the x86-64 baseline (no SSE4.1 `roundsd`) makes of it: `pos` is small
    // and at least −0.5, so truncating and stepping down below zero is exact (and a NaN stays a NaN in `frac`).
    let whole = pos as i64;
    let lo = whole - i64::from(whole as f64 > pos);
    let frac = (pos - lo as f64) as f32;
    // `lo.rem_euclid(bins)` and `(b0 + 1) % bins` without the divisions: `lo` lies in [−1, bins).
    let n = bins as i64;
    let b0 = if (0..n).contains(&lo) {
        lo
    } else if lo == -1 && n > 0 {
        n - 1
    } else {
        lo.rem_euclid(n)
    } as usize;
    (b0, if b0 + 1 == bins { 0 } else { b0 + 1 }, frac)
}

/// The token of the vector lanes, which the rarity sketches' and the CUSUMs' lanes take too, and the transpose of eight
/// rows the CUSUMs' lanes share.
#[cfg(target_arch = "x86_64")]
pub(crate) use lanes::{Avx2, transpose as transpose8};

/// What the seasonal learning, the rarity sketches and the CUSUMs run on in this process: "avx2" where runs of eight
/// series learn in vector lanes (`lanes` here, `sketch::lanes` for the sketches and `cusum::lanes` for the CUSUMs),
/// else "scalar" (another architecture, a CPU without AVX2, or `FAULTLINE_KERNELS=scalar`).
pub fn lanes_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if lanes::Avx2::get().is_some() {
        return "avx2";
    }
    "scalar"
}

/// [`SeasonalBank::learn`] for eight series at once, in AVX2 registers, bit for bit what `learn` gives point by point.
///
/// It takes runs of eight points of a round (eight different series, in any order; `process_scored` sorts a round by
/// slot first, so they lie in memory order), whose series have seen a point before and whose values are finite:
/// - each candidate's records of the eight series are loaded as eight rows of a 32-byte `Cand` and transposed into one
///   register per field, and back after the update;
/// - the two profile bins each point touches are read and written back lane by lane (eight loads beat `vgatherdps`
///   here; no series repeats within a run, so no two lanes touch one bin);
/// - the points' phases are computed in the lanes too, as `phases_of` does: each remainder moved on in scalar 64-bit
///   arithmetic, then the bins and fraction in vector registers;
/// - the decay factors and the choice of season stay scalar, per lane.
///
/// Every vector operation is the scalar one in the same order: no fused multiply-add, and each `min`/`max` the
/// instruction whose operand order reproduces [`lesser`], [`greater`] and [`within`]. On NAB's 58 series this made the
/// detector 1.055× faster (BENCHMARKS.md).
#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;

    use super::{Cand, MAX_PERIODS, Q_MAX, RoundPoint, SeasonalBank, SeasonalParams, Switch, TimeMs, rem};

    pub const LANES: usize = 8;

    /// Proof that this CPU has AVX2 and that the kernels are not forced to scalar (`FAULTLINE_KERNELS=scalar` turns
    /// this path off with the rest of the vector code).
    #[derive(Debug, Clone, Copy)]
    pub struct Avx2(());

    impl Avx2 {
        /// The token, if this process runs vector kernels (see `Kernels::detect`) on a CPU with AVX2.
        pub fn get() -> Option<Self> {
            static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            let on = *ON.get_or_init(|| {
                faultline_kernels::Kernels::detect().lanes() > 1 && std::arch::is_x86_feature_detected!("avx2")
            });
            on.then_some(Avx2(()))
        }

        /// [`SeasonalBank::phases_of`] and [`SeasonalBank::learn`] of the eight points of `run`, which passed [`fits`]
        /// in a bank [`allowed`] lanes for (`scales`: each period's bins per millisecond); `out` gets their switches.
        #[inline]
        pub fn learn(
            self,
            bank: &mut SeasonalBank,
            run: &[RoundPoint],
            scales: &[f64; MAX_PERIODS],
            p: &SeasonalParams,
            out: &mut [Switch; LANES],
        ) {
            // SAFETY: an `Avx2` exists only where the CPU has AVX2; `allowed` checked the bank, `fits` the run.
            unsafe { learn8(bank, run, scales, p, out) }
        }
    }

    /// Whether the bank's settings and size allow lanes at all (checked once a round): at least two bins a candidate
    /// (so a point's two bins differ), and periods and every series' profile indices that fit an `i32`.
    pub fn allowed(bank: &SeasonalBank, p: &SeasonalParams) -> bool {
        let stride: usize = p.bins.iter().copied().max().unwrap_or(0);
        p.bins.iter().all(|&n| n >= 2)
            && p.periods.iter().all(|&period| period <= TimeMs::from(i32::MAX))
            && bank.series.len().saturating_mul(stride) <= i32::MAX as usize
    }

    /// Whether `run` (in a bank [`allowed`] lanes for) can learn in lanes: eight points (of eight different series, as
    /// a round's are) of series that have seen a point (the first point seeds the trackers instead), finite values, and
    /// counts that convert to `f32` as `i32`.
    #[inline]
    pub fn fits(bank: &SeasonalBank, run: &[RoundPoint]) -> bool {
        run.len() == LANES
            && run.iter().all(|pt| {
                pt.x.is_finite() && {
                    let se = &bank.series[pt.s];
                    se.first_time != TimeMs::MIN && se.n < i32::MAX as u32 - 1
                }
            })
    }

    #[target_feature(enable = "avx2")]
    fn abs(v: __m256) -> __m256 {
        _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)))
    }

    /// [`super::clip_at`]: 4 scales, infinity where the scale is not positive.
    #[target_feature(enable = "avx2")]
    fn clip_at(scale: __m256) -> __m256 {
        let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(scale, _mm256_setzero_ps());
        _mm256_blendv_ps(_mm256_set1_ps(f32::INFINITY), _mm256_mul_ps(_mm256_set1_ps(4.0), scale), positive)
    }

    /// [`super::within`]: `max(-c, v)` then `min(c, ·)`, as `maxps`/`minps` order them.
    #[target_feature(enable = "avx2")]
    fn within(v: __m256, c: __m256) -> __m256 {
        let neg = _mm256_xor_ps(c, _mm256_set1_ps(-0.0));
        _mm256_min_ps(c, _mm256_max_ps(neg, v))
    }

    /// Transposes eight rows of eight 32-bit values (its own inverse).
    #[target_feature(enable = "avx2")]
    pub(crate) fn transpose(r: &mut [__m256; 8]) {
        {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            r[0] = _mm256_permute2f128_ps::<0x20>(u0, u4);
            r[1] = _mm256_permute2f128_ps::<0x20>(u1, u5);
            r[2] = _mm256_permute2f128_ps::<0x20>(u2, u6);
            r[3] = _mm256_permute2f128_ps::<0x20>(u3, u7);
            r[4] = _mm256_permute2f128_ps::<0x31>(u0, u4);
            r[5] = _mm256_permute2f128_ps::<0x31>(u1, u5);
            r[6] = _mm256_permute2f128_ps::<0x31>(u2, u6);
            r[7] = _mm256_permute2f128_ps::<0x31>(u3, u7);
        }
    }

    const _: () = assert!(size_of::<Cand>() == 32 && align_of::<Cand>() <= 32);

    #[target_feature(enable = "avx2")]
    unsafe fn learn8(
        bank: &mut SeasonalBank,
        run: &[RoundPoint],
        scales: &[f64; MAX_PERIODS],
        p: &SeasonalParams,
        out: &mut [Switch; LANES],
    ) {
        // The candidates' settings sliced to their count once (at most `MAX_PERIODS`, as `allowed`'s caller checks), so
        // indexing them, and the arrays of `MAX_PERIODS` below, by a candidate needs no bounds check.
        let cands = p.periods.len().min(MAX_PERIODS);
        let (periods, bins) = (&p.periods[..cands], &p.bins[..cands]);
        let run: &[RoundPoint; LANES] = run.try_into().expect("a run is eight points");
        let slots: [usize; LANES] = std::array::from_fn(|l| run[l].s);
        debug_assert!(
            (1..LANES).all(|l| !slots[..l].contains(&slots[l])),
            "a run's eight points are of eight series: {slots:?}"
        );
        // Per lane, scalar: the time since the series' last point (each candidate's remainder moves on by it in the
        // lanes below, as `phases_of` moves it), the count, the decay factors of the point's time step, the series'
        // plain trackers.
        let (mut xs, mut ws, mut ff, mut fe, mut elapsed) =
            ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
        let mut counts = [0i32; LANES];
        let mut ew = [0f32; LANES];
        let mut slow = [[0f32; LANES]; MAX_PERIODS];
        let mut rates = [[0f32; LANES]; MAX_PERIODS];
        let shortest = periods.iter().copied().min().unwrap_or(0);
        let (mut steps, mut lasts) = ([0i32; LANES], [TimeMs::MIN; LANES]);
        let mut stepped = true;
        for (l, (pt, &s)) in run.iter().zip(&slots).enumerate() {
            let last = std::mem::replace(&mut bank.series[s].phase_t, pt.t);
            lasts[l] = last;
            // Less than the shortest period since a last point: every remainder moves on by the step (`rem`).
            match pt.t.checked_sub(last) {
                Some(d) if last != TimeMs::MIN && (0..shortest).contains(&d) => steps[l] = d as i32,
                _ => stepped = false,
            }
            let se = &mut bank.series[s];
            se.n = se.n.saturating_add(1);
            counts[l] = se.n as i32;
            ff[l] = se.flat_fast;
            fe[l] = se.flat_err;
            elapsed[l] = (pt.t - se.first_time) as f32;
            let decay = bank.memo.get(pt.dt, p);
            ew[l] = decay.ew;
            for c in 0..cands {
                (slow[c][l], rates[c][l]) = (decay.slow[c], decay.rate[c]);
            }
            xs[l] = pt.x;
            ws[l] = pt.weight;
        }
        if !stepped {
            // A lane's first point, or one a period or more after its last: its remainders afresh (`rem`), all lanes'
            // here, and the lanes below move them on by nothing.
            for ((pt, &s), &last) in run.iter().zip(&slots).zip(&lasts) {
                for (c, &period) in periods.iter().enumerate() {
                    let ks = &mut bank.cand[s * cands + c];
                    ks.rem = rem(last, ks.rem, pt.t, period);
                }
            }
            steps = [0; LANES];
        }
        let steps = unsafe { _mm256_loadu_si256(steps.as_ptr().cast()) };
        let x = unsafe { _mm256_loadu_ps(xs.as_ptr()) };
        let weight = unsafe { _mm256_loadu_ps(ws.as_ptr()) };
        let running = _mm256_div_ps(
            _mm256_set1_ps(1.0),
            _mm256_cvtepi32_ps(unsafe { _mm256_loadu_si256(counts.as_ptr().cast()) }),
        );
        let a = _mm256_max_ps(_mm256_set1_ps(p.alpha), running);
        let ewv = _mm256_max_ps(unsafe { _mm256_loadu_ps(ew.as_ptr()) }, running);
        let flat_fast = unsafe { _mm256_loadu_ps(ff.as_ptr()) };
        let flat_err = unsafe { _mm256_loadu_ps(fe.as_ptr()) };
        let clip = clip_at(flat_err);
        let flat_e = _mm256_min_ps(abs(_mm256_sub_ps(x, flat_fast)), clip);
        let flat_err = _mm256_add_ps(flat_err, _mm256_mul_ps(ewv, _mm256_sub_ps(flat_e, flat_err)));
        let flat_fast = _mm256_add_ps(flat_fast, _mm256_mul_ps(a, within(_mm256_sub_ps(x, flat_fast), clip)));
        unsafe {
            _mm256_storeu_ps(fe.as_mut_ptr(), flat_err);
            _mm256_storeu_ps(ff.as_mut_ptr(), flat_fast);
        }
        for (l, &s) in slots.iter().enumerate() {
            let se = &mut bank.series[s];
            se.flat_err = fe[l];
            se.flat_fast = ff[l];
        }
        let elapsed_v = unsafe { _mm256_loadu_ps(elapsed.as_ptr()) };
        // The slots as `i32` lanes (`allowed` checked that they fit), for each candidate's first bins.
        let first_slots: [i32; LANES] = slots.map(|s| s as i32);
        // `gain`'s `flat <= 0` is false for a NaN, which then gives NaN: not-less-or-equal, unordered.
        let flat_positive = _mm256_cmp_ps::<_CMP_NLE_UQ>(flat_err, _mm256_setzero_ps());
        let one = _mm256_set1_ps(1.0);
        let mut gains = [[f32::NAN; LANES]; MAX_PERIODS];
        let mut eligible = [0i32; MAX_PERIODS];
        for c in 0..cands {
            let n = bins[c];
            // The eight series' records of candidate `c`, one row each, transposed into fields.
            let cand = bank.cand.as_mut_ptr();
            let mut rows = [_mm256_setzero_ps(); 8];
            for (row, &s) in rows.iter_mut().zip(&slots) {
                *row = unsafe { _mm256_loadu_ps(cand.add(s * cands + c).cast::<f32>()) };
            }
            transpose(&mut rows);
            let [sum, base, spread, fast, err, unit, rem_lo, _] = rows;
            // The remainder moved on by the step, `rem`'s `d < left ? last_rem + d : d − left` (no overflow: both lie
            // in [0, period)). `allowed` checked that every period, so every remainder, fits an `i32`: its low half
            // is the remainder, its high half 0. A remainder lies in [0, period): the detector's own, and a loaded
            // model's, which `persist` checks when it reads the file (the bins below are addressed from it without a
            // bounds check).
            let r = {
                let last_rem = _mm256_castps_si256(rem_lo);
                let left = _mm256_sub_epi32(_mm256_set1_epi32(periods[c] as i32), last_rem);
                let within = _mm256_cmpgt_epi32(left, steps);
                _mm256_blendv_epi8(_mm256_sub_epi32(steps, left), _mm256_add_epi32(last_rem, steps), within)
            };
            rows[6] = _mm256_castsi256_ps(r);
            // `phase_scaled`: `pos.floor()` is what its truncation and step down give, `lo` lies in [−1, n).
            let (frac, i0, i1) = {
                let scale = _mm256_set1_pd(scales[c]);
                let half = _mm256_set1_pd(0.5);
                let pos_lo = _mm256_sub_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(r)), scale), half);
                let pos_hi =
                    _mm256_sub_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(r)), scale), half);
                let (floor_lo, floor_hi) = (_mm256_floor_pd(pos_lo), _mm256_floor_pd(pos_hi));
                let frac = _mm256_set_m128(
                    _mm256_cvtpd_ps(_mm256_sub_pd(pos_hi, floor_hi)),
                    _mm256_cvtpd_ps(_mm256_sub_pd(pos_lo, floor_lo)),
                );
                let lo = _mm256_set_m128i(_mm256_cvttpd_epi32(floor_hi), _mm256_cvttpd_epi32(floor_lo));
                let bins = _mm256_set1_epi32(n as i32);
                let b0 = _mm256_blendv_epi8(
                    lo,
                    _mm256_set1_epi32(n as i32 - 1),
                    _mm256_cmpeq_epi32(lo, _mm256_set1_epi32(-1)),
                );
                let next = _mm256_add_epi32(b0, _mm256_set1_epi32(1));
                let b1 = _mm256_andnot_si256(_mm256_cmpeq_epi32(next, bins), next);
                // Each series' first bin; `allowed` checked that these fit an `i32`.
                let first = _mm256_mullo_epi32(unsafe { _mm256_loadu_si256(first_slots.as_ptr().cast()) }, bins);
                let (mut i0, mut i1) = ([0i32; LANES], [0i32; LANES]);
                unsafe {
                    _mm256_storeu_si256(i0.as_mut_ptr().cast(), _mm256_add_epi32(first, b0));
                    _mm256_storeu_si256(i1.as_mut_ptr().cast(), _mm256_add_epi32(first, b1));
                }
                (frac, i0, i1)
            };
            let profile = bank.profile[c].as_mut_ptr();
            // Assembled from scalar loads: `vgatherdps` is slower than eight loads on the CPUs measured (see
            // `faultline_kernels`' AVX2 gathering kernel). Each bin is a step count of its lane's unit.
            let bins_at = |i: &[i32; LANES]| {
                let at = |l: usize| i32::from(unsafe { *profile.add(i[l] as usize) });
                _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7))
            };
            let (q0, q1) = (bins_at(&i0), bins_at(&i1));
            let (v0, v1) = (_mm256_mul_ps(_mm256_cvtepi32_ps(q0), unit), _mm256_mul_ps(_mm256_cvtepi32_ps(q1), unit));
            let one_minus = _mm256_sub_ps(one, frac);
            let season = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(one_minus, v0), _mm256_mul_ps(frac, v1)),
                _mm256_div_ps(sum, _mm256_set1_ps(n as f32)),
            );
            let y = _mm256_sub_ps(x, season);
            let e = _mm256_min_ps(abs(_mm256_sub_ps(y, fast)), clip);
            let err = _mm256_add_ps(err, _mm256_mul_ps(ewv, _mm256_sub_ps(e, err)));
            let fast = _mm256_add_ps(fast, _mm256_mul_ps(a, within(_mm256_sub_ps(y, fast), clip)));
            let spread_clip = clip_at(spread);
            let raw = _mm256_sub_ps(y, base);
            let slow_v = _mm256_max_ps(unsafe { _mm256_loadu_ps(slow[c].as_ptr()) }, running);
            let spread = _mm256_add_ps(
                spread,
                _mm256_mul_ps(slow_v, _mm256_sub_ps(_mm256_min_ps(abs(raw), spread_clip), spread)),
            );
            let r = within(raw, spread_clip);
            let base = _mm256_add_ps(base, _mm256_mul_ps(slow_v, r));
            let step = _mm256_mul_ps(_mm256_mul_ps(unsafe { _mm256_loadu_ps(rates[c].as_ptr()) }, weight), r);
            let v0 = _mm256_add_ps(v0, _mm256_mul_ps(step, one_minus));
            let v1 = _mm256_add_ps(v1, _mm256_mul_ps(step, frac));
            // `round_even` of the values in steps, and `learn`'s bound on both: lanes whose unit cannot hold them
            // (`widen`, below) take the scalar path's values after the records are stored.
            let inv = _mm256_div_ps(one, unit);
            let shift = _mm256_set1_ps(12_582_912.0);
            let rounded = |v: __m256| _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v, inv), shift), shift);
            let (n0, n1) = (rounded(v0), rounded(v1));
            let q_max = _mm256_set1_ps(Q_MAX);
            let held =
                _mm256_and_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(abs(n0), q_max), _mm256_cmp_ps::<_CMP_LE_OQ>(abs(n1), q_max));
            let (n0, n1) = (_mm256_cvttps_epi32(n0), _mm256_cvttps_epi32(n1));
            let moved = _mm256_add_epi32(_mm256_sub_epi32(n0, q0), _mm256_sub_epi32(n1, q1));
            let sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_cvtepi32_ps(moved), unit));
            let held = _mm256_movemask_ps(held);
            // The gain over the plain level, where the candidate has seen `min-periods` periods.
            let g =
                _mm256_blendv_ps(_mm256_setzero_ps(), _mm256_sub_ps(one, _mm256_div_ps(err, flat_err)), flat_positive);
            let old = _mm256_set1_ps(p.min_periods * periods[c] as f32);
            eligible[c] = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(elapsed_v, old));
            unsafe { _mm256_storeu_ps(gains[c].as_mut_ptr(), g) };
            rows[0] = sum;
            rows[1] = base;
            rows[2] = spread;
            rows[3] = fast;
            rows[4] = err;
            transpose(&mut rows);
            for (row, &s) in rows.iter().zip(&slots) {
                unsafe { _mm256_storeu_ps(cand.add(s * cands + c).cast::<f32>(), *row) };
            }
            let (mut o0, mut o1) = ([0i32; LANES], [0i32; LANES]);
            unsafe {
                _mm256_storeu_si256(o0.as_mut_ptr().cast(), n0);
                _mm256_storeu_si256(o1.as_mut_ptr().cast(), n1);
            }
            if held == 0xff {
                for l in 0..LANES {
                    unsafe {
                        *profile.add(i0[l] as usize) = o0[l] as i16;
                        *profile.add(i1[l] as usize) = o1[l] as i16;
                    }
                }
            } else {
                let (mut w0, mut w1) = ([0f32; LANES], [0f32; LANES]);
                unsafe {
                    _mm256_storeu_ps(w0.as_mut_ptr(), v0);
                    _mm256_storeu_ps(w1.as_mut_ptr(), v1);
                }
                for (l, &s) in slots.iter().enumerate() {
                    if held >> l & 1 == 1 {
                        unsafe {
                            *profile.add(i0[l] as usize) = o0[l] as i16;
                            *profile.add(i1[l] as usize) = o1[l] as i16;
                        }
                    } else {
                        // Through the pointers the lanes hold (series `s`'s bins and record, no other lane's).
                        let first = s * n;
                        let (bins, ks) = unsafe {
                            (std::slice::from_raw_parts_mut(profile.add(first), n), &mut *cand.add(s * cands + c))
                        };
                        let at = |i: i32| i as usize - first;
                        super::widen(bins, ks, (at(i0[l]), w0[l]), (at(i1[l]), w1[l]));
                    }
                }
            }
        }
        for (l, o) in out.iter_mut().enumerate() {
            let mut best: Option<(usize, f32)> = None;
            let mut lane_gains = [f32::NAN; MAX_PERIODS];
            for c in 0..cands {
                if eligible[c] >> l & 1 == 1 {
                    let g = gains[c][l];
                    lane_gains[c] = g;
                    if best.is_none_or(|(_, bg)| g > bg) {
                        best = Some((c, g));
                    }
                }
            }
            *o = bank.decide(slots[l], best, &lane_gains, elapsed[l], p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: TimeMs = 86_400_000;
    const STEP: TimeMs = 300_000; // 5 minutes

    fn params() -> SeasonalParams {
        SeasonalParams {
            periods: vec![DAY, 7 * DAY],
            bins: vec![96, 48],
            rate: 0.1,
            alpha: 0.05,
            min_periods: 2.0,
            min_gain: 0.3,
        }
    }

    /// Deterministic noise in [-1, 1).
    fn noise(i: i64) -> f32 {
        ((i.wrapping_mul(2_654_435_761) >> 7) % 2000) as f32 / 1000.0 - 1.0
    }

    /// Runs `days` of 5-minute points of `f(t)` through one series; returns the bank and every switch seen.
    fn feed(days: i64, f: impl Fn(TimeMs) -> f32) -> (SeasonalBank, Vec<(TimeMs, Switch)>) {
        let p = params();
        let mut bank = SeasonalBank::default();
        bank.push(&p);
        let mut switches = Vec::new();
        for i in 0..days * DAY / STEP {
            let t = i * STEP;
            let sw = bank.update(0, t, if i == 0 { 0 } else { STEP }, f(t), 1.0, &p);
            if sw != Switch::Unchanged {
                switches.push((t, sw));
            }
        }
        (bank, switches)
    }

    fn daily(t: TimeMs) -> f32 {
        100.0 + 30.0 * (std::f64::consts::TAU * (t % DAY) as f64 / DAY as f64).sin() as f32
    }

    #[test]
    fn a_daily_season_is_found_and_learned() {
        let (bank, switches) = feed(10, |t| daily(t) + noise(t / STEP));
        // Found once, after the two periods it must wait for, and kept: within a day of them (with 96 bins a day,
        // one per 3 of these 5-minute steps, each bin learns from fewer points than the 48 of a half-hour profile, so
        // the season can take a little more than two days to cut the error enough).
        assert_eq!(switches.len(), 1, "{switches:?}");
        let (when, sw) = switches[0];
        assert_eq!(sw, Switch::Activated(0));
        assert!((2 * DAY..4 * DAY).contains(&when), "found at {when}");
        assert_eq!(bank.active(0), Some(0));
        assert!(bank.gain(0, 0, &params()) > 0.5, "gain {}", bank.gain(0, 0, &params()));
        // The profile plus the base reproduce the daily curve within a tenth of its amplitude. A bin of a 96-bin day
        // learns from half the points a 48-bin one does: the profile's error halves about every two days (every day
        // with 48 bins), so it takes ten days here instead of six.
        let p = params();
        let base = bank.base(0, 0, &p);
        for k in 0..24 {
            let t = 10 * DAY + k * 3_600_000;
            let predicted = base + bank.offset(0, t, &p);
            assert!((predicted - daily(t)).abs() < 3.0, "hour {k}: {predicted} vs {}", daily(t));
        }
    }

    #[test]
    fn a_quarter_hour_profile_follows_a_daily_step_twice_as_closely() {
        // A square daily wave (20, then 80 from 09:00 to 18:00). Interpolating between bin centres, a profile ramps
        // into the step over one bin on each side: half an hour at 48 bins a day, a quarter hour at 96. How close
        // it stays to the step decides how large a residual a day without it leaves (the detector's evidence).
        let hour = 3_600_000;
        let square = |t: TimeMs| if (9 * hour..18 * hour).contains(&(t % DAY)) { 80.0 } else { 20.0 };
        let predicted_after_step = |bins: usize| {
            let p = SeasonalParams { bins: vec![bins], periods: vec![DAY], ..params() };
            let mut bank = SeasonalBank::default();
            bank.push(&p);
            for i in 0..14 * DAY / STEP {
                let t = i * STEP;
                bank.update(0, t, if i == 0 { 0 } else { STEP }, square(t) + noise(i), 1.0, &p);
            }
            assert_eq!(bank.active(0), Some(0));
            let base = bank.base(0, 0, &p);
            // 5 and 10 minutes into the step.
            [1, 2].map(|k| base + bank.offset(0, 14 * DAY + 9 * hour + k * STEP, &p))
        };
        let (half, quarter) = (predicted_after_step(48), predicted_after_step(96));
        assert!(quarter[0] > 70.0 && quarter[1] > 76.0, "96 bins: {quarter:?}");
        assert!(half[0] < 65.0 && half[1] < 75.0, "48 bins: {half:?}");
    }

    /// Every field of the bank, as bits (the state `update` and `update_round` must leave the same).
    fn state_bits(bank: &SeasonalBank) -> Vec<u64> {
        let mut bits: Vec<u64> = bank.profile.iter().flatten().map(|&q| q as u64).collect();
        for k in &bank.cand {
            bits.extend([k.sum, k.base, k.spread, k.fast, k.err, k.unit].map(|x| u64::from(x.to_bits())));
            bits.push(k.rem as u64);
        }
        for se in &bank.series {
            bits.extend([se.flat_fast.to_bits(), se.flat_err.to_bits(), se.n, u32::from(se.active)].map(u64::from));
            bits.extend([se.first_time as u64, se.phase_t as u64]);
        }
        bits
    }

    /// Candidate sets for [`lanes_learn_bit_for_bit_what_points_learn_one_by_one`]: two short periods; one of two bins
    /// (each point between the only two); four of mixed resolutions; one longer than an `i32` of milliseconds (the
    /// lanes stay off).
    fn lane_params(which: usize) -> SeasonalParams {
        const MIN: TimeMs = 60_000;
        let (periods, bins) = match which {
            0 => (vec![60 * MIN, 360 * MIN], vec![12, 6]),
            1 => (vec![60 * MIN], vec![2]),
            2 => (vec![30 * MIN, 60 * MIN, 120 * MIN, 240 * MIN], vec![4, 24, 3, 48]),
            _ => (vec![60 * MIN, 30 * DAY], vec![12, 48]),
        };
        SeasonalParams { periods, bins, rate: 0.1, alpha: 0.05, min_periods: 1.0, min_gain: 0.3 }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Rounds of many series take the vector lanes where the CPU has AVX2 (runs of eight points, in slot order or
        /// not), and the scalar path elsewhere: both give what each point gives alone, bit for bit, through seasons
        /// found and lost, anomalous weights, time steps of their own, gaps longer than a period, values that are not
        /// finite, series joining late, and rounds in slot order, rotated, shuffled or with series missing.
        #[test]
        fn lanes_learn_bit_for_bit_what_points_learn_one_by_one(
            seed in 0u64..u64::MAX,
            which in 0usize..4,
            series in 8usize..40,
            // At least 250 rounds: with 200, eight to ten series and four candidates up to four hours, a case could
            // end before any series found a season (a seed that did: 8685335124905933060, candidates 2).
            rounds in 250i64..400,
        ) {
            let p = lane_params(which);
            let (mut one, mut round) = (SeasonalBank::default(), SeasonalBank::default());
            let mut next = crate::detect::xorshift(seed | 1);
            let (mut switches, mut want) = (Vec::new(), Vec::new());
            let (mut seen, mut lane_rounds) = (0, 0);
            for i in 0..rounds {
                // A quarter of the series join a third of the way in.
                let joined = if i < rounds / 3 { series - series / 4 } else { series };
                while one.series.len() < joined {
                    one.push(&p);
                    round.push(&p);
                }
                let order = next() % 4;
                let present: Vec<usize> = (0..joined).filter(|_| !next().is_multiple_of(50)).collect();
                let mut points: Vec<RoundPoint> = present
                    .into_iter()
                    .map(|s| {
                        let step = [60_000, 60_000, 30_000, 120_000, 45_000][s % 5];
                        // Series 3 jumps seven hours ahead half-way (a gap longer than every short period).
                        let t = 5_000 * s as i64 + i * step + if s == 3 && i >= rounds / 2 { 7 * 3_600_000 } else { 0 };
                        let phase = std::f64::consts::TAU * (t % 3_600_000) as f64 / 3_600_000.0;
                        let seasonal = if s % 3 == 0 { 0.0 } else { 30.0 * phase.sin() as f32 };
                        let shift = if s % 4 == 1 && i > rounds / 2 { 200.0 } else { 0.0 };
                        let x = if next().is_multiple_of(97) {
                            f32::NAN
                        } else {
                            100.0 + s as f32 + seasonal + shift + noise(next() as i64 % 10_000)
                        };
                        let weight = if next().is_multiple_of(13) { 0.02 } else { 1.0 };
                        RoundPoint { s, t, dt: step, x, weight }
                    })
                    .collect();
                if order == 1 {
                    let k = 3.min(points.len());
                    points.rotate_left(k);
                } else if order == 2 {
                    for k in (1..points.len()).rev() {
                        points.swap(k, (next() % (k as u64 + 1)) as usize);
                    }
                }
                want.clear();
                want.extend(points.iter().map(|q| one.update(q.s, q.t, q.dt, q.x, q.weight, &p)));
                round.update_round(&points, &p, &mut switches);
                proptest::prop_assert_eq!(&switches, &want, "round {}", i);
                seen += want.iter().filter(|w| **w != Switch::Unchanged).count();
                lane_rounds += usize::from(!round.runs.is_empty());
            }
            proptest::prop_assert!(seen > 0, "some series found a season");
            proptest::prop_assert_eq!(state_bits(&one), state_bits(&round));
            #[cfg(target_arch = "x86_64")]
            let lanes_on = lanes::Avx2::get().is_some();
            #[cfg(not(target_arch = "x86_64"))]
            let lanes_on = false;
            if lanes_on && which != 3 {
                proptest::prop_assert!(lane_rounds > 0, "the lanes ran");
            } else {
                proptest::prop_assert_eq!(lane_rounds, 0);
            }
        }
    }

    #[test]
    fn a_round_learns_what_its_points_learn_one_by_one() {
        let p = params();
        let (mut one, mut round) = (SeasonalBank::default(), SeasonalBank::default());
        for _ in 0..5 {
            one.push(&p);
            round.push(&p);
        }
        let (mut switches, mut want) = (Vec::new(), Vec::new());
        let mut seen = 0;
        for i in 0..6 * DAY / STEP {
            // Five series at their own steps and offsets, the odd one skipped or not finite, in varying order.
            let points: Vec<RoundPoint> = (0..5i64)
                .filter(|&s| (i + s) % 11 != 0)
                .map(|s| {
                    let step = STEP + s * 17_000;
                    let t = 1_000 * s + i * step;
                    let x = if (i * 7 + s) % 101 == 0 {
                        f32::NAN
                    } else {
                        daily(t) * (1.0 + s as f32 * 0.1) + noise(i + s)
                    };
                    RoundPoint {
                        s: ((s + i) % 5) as usize,
                        t,
                        dt: step,
                        x,
                        weight: if i % 13 == 0 { 0.02 } else { 1.0 },
                    }
                })
                .collect();
            want.clear();
            want.extend(points.iter().map(|q| one.update(q.s, q.t, q.dt, q.x, q.weight, &p)));
            round.update_round(&points, &p, &mut switches);
            assert_eq!(switches, want, "round {i}");
            seen += want.iter().filter(|w| **w != Switch::Unchanged).count();
        }
        assert!(seen > 0, "some series found a season");
        let (a, b) = (one.to_buffers(), round.to_buffers());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            (&a.profile, bits(&a.cand), bits(&a.plain), &a.info),
            (&b.profile, bits(&b.cand), bits(&b.plain), &b.info)
        );
        // The device's layout (series-major profiles) and back: the same state, and it learns on the same.
        let first: Vec<TimeMs> = round.series.iter().map(|se| se.first_time).collect();
        let mut back = SeasonalBank::from_buffers(&b, &first, &p);
        assert_eq!(back.profile, round.profile);
        assert_eq!(back.to_buffers().profile, b.profile);
        let t = 6 * DAY + 123_000;
        for s in 0..5 {
            assert_eq!(back.update(s, t, STEP, 42.0, 1.0, &p), round.update(s, t, STEP, 42.0, 1.0, &p));
            assert_eq!(back.offset(s, t + STEP, &p).to_bits(), round.offset(s, t + STEP, &p).to_bits());
        }
    }

    /// A profile's bins are 16-bit steps of a power of two: a fresh profile takes the unit its first values need, a
    /// swing that grows ten-thousandfold doubles it as it goes, every bin staying within a step of the value written
    /// to it; the sum is the bins' exactly; a value that is not finite leaves its bin as it was.
    #[test]
    fn profile_bins_hold_their_values_in_steps_of_a_unit_that_grows_with_them() {
        let mut bins = [0i16; 8];
        let mut ks = Cand::default();
        let mut want = [0f32; 8];
        let mut units = Vec::new();
        for i in 0..2_000usize {
            let (b0, b1) = (i % 8, (i + 3) % 8);
            let sign = if i % 3 == 0 { -1.0 } else { 1.0 };
            let (v0, v1) = (sign * 0.01 * 1.005f32.powi(i as i32), 0.5 * want[b1] + 0.001);
            let (q0, q1) = (bins[b0], bins[b1]);
            store(&mut bins, &mut ks, (b0, q0, v0), (b1, q1, v1));
            (want[b0], want[b1]) = (v0, v1);
            assert!(is_unit(ks.unit) && ks.unit > 0.0, "{}", ks.unit);
            for (b, (&q, &w)) in bins.iter().zip(&want).enumerate() {
                assert!(
                    (f32::from(q) * ks.unit - w).abs() <= ks.unit,
                    "point {i} bin {b}: {q} steps of {}, {w}",
                    ks.unit
                );
            }
            let steps: i32 = bins.iter().map(|&q| i32::from(q)).sum();
            assert_eq!(ks.sum, steps as f32 * ks.unit, "point {i}");
            if units.last() != Some(&ks.unit) {
                units.push(ks.unit);
            }
        }
        // 0.01 · 1.005^2000 ≈ 217: from 2^-21 (0.01 in 32,767 steps) up to 2^-7, one doubling at a time.
        assert_eq!(units.first(), Some(&(1.0 / (1 << 21) as f32)), "{units:?}");
        assert!(units.windows(2).all(|u| u[1] == 2.0 * u[0]) && units.len() >= 10, "{units:?}");
        let (before, sum) = (bins, ks.sum);
        let (q2, q5) = (bins[2], bins[5]);
        store(&mut bins, &mut ks, (2, q2, f32::NAN), (5, q5, f32::INFINITY));
        assert_eq!((bins, ks.sum), (before, sum), "values that are not finite change nothing");
        // A fresh profile given nothing keeps no unit.
        let (mut fresh, mut k) = ([0i16; 4], Cand::default());
        store(&mut fresh, &mut k, (0, 0, 0.0), (1, 0, 0.0));
        assert_eq!((fresh, k.unit, k.sum), ([0; 4], 0.0, 0.0));
    }

    #[test]
    fn noise_has_no_season() {
        let (bank, switches) = feed(10, |t| 50.0 + 5.0 * noise(t / STEP));
        assert!(switches.is_empty(), "{switches:?}");
        assert_eq!(bank.offset(0, 3 * DAY, &params()), 0.0);
    }

    #[test]
    fn a_season_that_stops_is_dropped() {
        let (bank, switches) = feed(12, |t| if t < 5 * DAY { daily(t) } else { 100.0 } + noise(t / STEP));
        assert_eq!(switches.first().map(|s| s.1), Some(Switch::Activated(0)));
        assert_eq!(switches.last().map(|s| s.1), Some(Switch::Deactivated), "{switches:?}");
        assert_eq!(bank.active(0), None);
    }

    #[test]
    fn phase_interpolates_between_bin_centres() {
        // 4 bins over 100 ms: centres at 12.5, 37.5, 62.5, 87.5.
        assert_eq!(phase(25, 100, 4), (0, 1, 0.5));
        assert_eq!(phase(12, 100, 4).0, 3, "before the first centre it wraps to the last bin");
        let (b0, b1, frac) = phase(99, 100, 4);
        assert_eq!((b0, b1), (3, 0));
        assert!((frac - 0.46).abs() < 1e-6);
        assert_eq!(phase(-75, 100, 4), phase(25, 100, 4));
    }

    /// `phase` as it was written first, with `f64::floor`: the oracle of the floor-free version.
    fn phase_with_floor(t: TimeMs, period: TimeMs, bins: usize) -> (usize, usize, f32) {
        let pos = t.rem_euclid(period) as f64 * (bins as f64 / period as f64) - 0.5;
        let lo = pos.floor();
        let frac = (pos - lo) as f32;
        let b0 = (lo as i64).rem_euclid(bins as i64) as usize;
        (b0, (b0 + 1) % bins, frac)
    }

    #[test]
    fn the_comparisons_give_the_library_min_max_and_clamp_where_the_update_calls_them() {
        // First operands: anything (NaN, infinities, zeros, subnormals, a spread); bounds: what the update passes,
        // positive (a running weight, a clip of 4 scales) or infinite (no clip yet).
        let mut values = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::MIN_POSITIVE / 8.0, f32::MAX];
        values.extend((-300..300).map(|i: i32| (i as f32 * 0.37).powi(3) * if i % 7 == 0 { 1e-30 } else { 1.0 }));
        let bounds = [f32::MIN_POSITIVE / 8.0, 1e-3, 0.05, 1.0, 4.0, 3e5, f32::MAX, f32::INFINITY];
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for &v in &values {
            for &c in &bounds {
                assert!(same(lesser(v.abs(), c), v.abs().min(c)), "lesser({}, {c})", v.abs());
                assert!(same(greater(v, c), v.max(c)), "greater({v}, {c})");
                assert!(same(within(v, c), v.clamp(-c, c)), "within({v}, {c})");
            }
        }
    }

    #[test]
    fn phase_without_floor_is_bit_identical_to_floor() {
        let mut checked = 0;
        for (period, bins) in [(DAY, 48), (7 * DAY, 48), (100, 4), (3_600_000, 7), (DAY, 1), (1, 1), (DAY, 1000)] {
            // Every bin edge and centre and their neighbours, then a spread of times (negative ones included).
            let edges = (0..=2 * bins as i64).flat_map(|k| {
                let at = k * period / (2 * bins as i64);
                [at - 1, at, at + 1]
            });
            let spread = (-500..500).map(|i: i64| i.wrapping_mul(7_919_000_003) / 1000 + i);
            for t in edges.chain(spread) {
                let (want, got) = (phase_with_floor(t, period, bins), phase(t, period, bins));
                assert_eq!(
                    (want.0, want.1, want.2.to_bits()),
                    (got.0, got.1, got.2.to_bits()),
                    "t {t} period {period}"
                );
                checked += 1;
            }
        }
        assert!(checked > 7_000, "{checked}");
    }
}
