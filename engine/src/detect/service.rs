//! The per-service multivariate score: how far a service as a whole is from its normal, across all its metrics, and
//! how much each metric contributes.
//!
//! Every series of a service lives in one shard (the router hashes the service id), so the shard sees all of them.
//! Each series contributes the square of its latest standardised residual `z` (from its own model, [`compress`]ed),
//! weighted by recency: a value `age` old weighs `exp(−age / horizon)`, so a metric that stopped reporting fades out.
//! The service statistic is `S = Σ wⱼ zⱼ²` over its series with `W = Σ wⱼ` effective series. Were the residuals
//! independent standard normals, `S` would be χ² with `W` degrees of freedom; the Wilson–Hilferty transform turns it
//! into an approximately standard normal `u`, comparable across services of any size. Real metrics are correlated and
//! heavy-tailed, so `u` is calibrated per service by SPOT (like the per-series thresholds): the configured risk sets
//! the channel's false-alarm rate. Until SPOT has its peaks, the normal tail of `u` stands in.
//!
//! A metric's contribution is its share `wⱼ zⱼ² / S` of the statistic: the attribution every anomaly event carries.
//!
//! The bank also keeps each service's *volume*: the sum of the latest values of its traffic-role series (e.g.
//! `request_rate`, per endpoint), which the low-volume guard compares with a series' `min-volume`.
//!
//! The sums are kept scaled to a per-service base time (`cⱼ = zⱼ² e^{(tⱼ − base)/horizon}`), so a point costs one
//! `exp` and O(1) work however many series the service has; the base moves forward (an O(members) rescale) once the
//! scale factor grows past `e^REBASE`. The statistic at a point reflects the service's other series as far as the
//! shard has processed them, which depends on how the series' points interleave in the input: replays of the same
//! input are identical, but a different batching of a multi-series input can shift attributions slightly.
// Hot path: no IO, no allocation per point (members are registered once, when a series first appears).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::IdHasher;
use super::compress;
use super::spot::{Spot, SpotParams, ln_erfc};
use crate::event::MetricShare;
use crate::model::{SeriesKey, TimeMs};

/// Rebase the scaled sums once `(t − base) / horizon` exceeds this (e^40 ≈ 2.4e17, far inside f64's range).
const REBASE: f64 = 40.0;

/// Settings of the multivariate score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceParams {
    /// Recency scale of a series' contribution, in milliseconds.
    pub horizon_ms: f64,
    /// Metrics listed in an event's attribution.
    pub top: usize,
    /// Smallest share listed.
    pub min_share: f64,
    /// The alarm level, as a surprise (`−log10 risk`): statistics beyond it do not teach the calibration.
    pub alarm: f64,
}

/// The multivariate state of every service one shard owns, and each series' part in it.
#[derive(Default)]
pub struct ServiceBank {
    index: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    /// Services whose series have all been forgotten, for the next new service to reuse.
    free: Vec<u32>,
    // Per service.
    id: Vec<u64>,
    base: Vec<TimeMs>,
    now: Vec<TimeMs>,
    sum: Vec<f64>,
    weight: Vec<f64>,
    spot: Vec<Spot>,
    members: Vec<Vec<u32>>,
    /// Sum of the latest values of the service's traffic series, and how many of them have reported.
    volume: Vec<f64>,
    volume_series: Vec<u32>,
    /// The deviate at which the uncalibrated (normal) reading reaches the alarm level, and that level.
    u_alarm: Option<(f64, f64)>,
    /// Saved services not yet back (`engine.state-dir`): a service's first series to register brings it back.
    pending: HashMap<u64, ServiceModel, BuildHasherDefault<IdHasher>>,
    /// Per service brought back from its saved state: its volume holds its saved series' traffic, and (until its next
    /// rebase) its sums hold their terms, whether they have come back yet or not.
    saved_volume: Vec<bool>,
    saved_terms: Vec<bool>,
    // Per series slot.
    of: Vec<u32>,
    /// The latest value of a traffic series (NaN before its first, and for other roles).
    last_volume: Vec<f32>,
    c: Vec<f64>,
    e: Vec<f64>,
    z: Vec<f32>,
}

/// One service's multivariate state as saved (`engine.state-dir`): its time base, latest time, sums, volume and
/// calibration. The sums and the volume hold its series' terms (each series' own are in its [`SeriesPart`]): a
/// series that does not come back leaves the sums at the service's next rebase, and the volume when it is forgotten
/// (`engine.series-idle`), as a quiet series does.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ServiceModel {
    pub id: u64,
    base: TimeMs,
    now: TimeMs,
    sum: f64,
    weight: f64,
    volume: f64,
    volume_series: u32,
    spot: super::persist::SpotParts,
}

/// One series' part in its service's score as saved: its scaled terms and the time base they are scaled to, its last
/// residual and its latest traffic value.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SeriesPart {
    base: TimeMs,
    c: f64,
    e: f64,
    z: f32,
    last_volume: f32,
}

impl ServiceModel {
    /// What the detector relies on in a loaded service (see `persist::ModelFile::check`): event times it can subtract.
    pub fn check(&self) -> Result<(), String> {
        super::persist::check_time("base", self.base)?;
        super::persist::check_time("now", self.now)
    }
}

impl SeriesPart {
    /// What the detector relies on in a loaded series' part (see `persist::ModelFile::check`).
    pub fn check(&self) -> Result<(), String> {
        super::persist::check_time("part.base", self.base)
    }
}

/// The service's statistic at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceScore {
    /// The weighted mean of the squared residuals, `S / W`.
    pub mean_sq: f64,
    /// Effective number of series in it, `W`.
    pub series: f64,
}

impl ServiceScore {
    /// The Wilson–Hilferty normal deviate of `S` read as χ² with `W` degrees of freedom (0 below the mean).
    pub fn u(&self) -> f64 {
        if self.series < 0.5 {
            return 0.0;
        }
        let a = 2.0 / (9.0 * self.series);
        ((cbrt(self.mean_sq) - (1.0 - a)) / a.sqrt()).max(0.0)
    }

    /// Whether `u() ≤ x`, without the cube root: `mean_sq ≤ ((1 − a) + x √a)³`.
    fn u_at_most(&self, x: f64) -> bool {
        // u is never negative; with half a series or less it is 0.
        if x < 0.0 || self.series < 0.5 {
            return x >= 0.0;
        }
        // a ≤ 4/9, so the edge is positive.
        let a = 2.0 / (9.0 * self.series);
        let edge = (1.0 - a) + x * a.sqrt();
        self.mean_sq <= edge * edge * edge
    }
}

impl ServiceBank {
    /// Bytes per series slot: the scaled contribution and weight, the last residual, the service index and the
    /// latest traffic value.
    pub const BYTES_PER_SERIES: usize = 2 * size_of::<f64>() + 2 * size_of::<f32>() + size_of::<u32>();

    /// Registers the next series slot (slots are dense, in order) as a member of service `service_id`.
    pub fn push(&mut self, service_id: u64) {
        let slot = self.of.len();
        self.of.push(u32::MAX);
        self.c.push(0.0);
        self.e.push(0.0);
        self.z.push(0.0);
        self.last_volume.push(f32::NAN);
        self.join(slot, service_id);
    }

    /// Makes series slot `s`, fresh (pushed, or left), a member of service `service_id`.
    pub fn join(&mut self, s: usize, service_id: u64) {
        let v = match self.index.get(&service_id) {
            Some(&v) => v,
            None => {
                // A forgotten service's place (its members list is empty), or room for a new one; either is then set
                // to what a new service starts with.
                let v = self.free.pop().unwrap_or_else(|| {
                    self.members.push(Vec::new());
                    self.id.push(0);
                    self.base.push(0);
                    self.now.push(0);
                    self.sum.push(0.0);
                    self.weight.push(0.0);
                    self.spot.push(Spot::new(1.0));
                    self.volume.push(0.0);
                    self.volume_series.push(0);
                    self.saved_volume.push(false);
                    self.saved_terms.push(false);
                    (self.id.len() - 1) as u32
                });
                let i = v as usize;
                (self.id[i], self.base[i], self.now[i], self.sum[i], self.weight[i]) =
                    (service_id, TimeMs::MIN, TimeMs::MIN, 0.0, 0.0);
                (self.spot[i], self.volume[i], self.volume_series[i]) = (Spot::new(1.0), 0.0, 0);
                // A saved service comes back as it was saved; its series' parts come back with them (`restore_part`).
                let saved = self.pending.remove(&service_id);
                if let Some(m) = saved {
                    (self.base[i], self.now[i], self.sum[i], self.weight[i]) = (m.base, m.now, m.sum, m.weight);
                    (self.spot[i], self.volume[i], self.volume_series[i]) =
                        ((&m.spot).into(), m.volume, m.volume_series);
                }
                (self.saved_volume[i], self.saved_terms[i]) = (saved.is_some(), saved.is_some());
                self.index.insert(service_id, v);
                v
            }
        };
        self.members[v as usize].push(s as u32);
        self.of[s] = v;
    }

    /// Takes series slot `s` out of its service (the series is forgotten): its terms leave the service's sums and its
    /// traffic value the volume; a service left without series is forgotten too (its calibration with it), and its
    /// place reused by the next new service. The slot is fresh for [`ServiceBank::join`] afterwards.
    pub fn leave(&mut self, s: usize) {
        let v = self.of[s] as usize;
        self.members[v].retain(|&m| m as usize != s);
        if self.members[v].is_empty() {
            self.index.remove(&self.id[v]);
            self.free.push(v as u32);
        } else {
            self.sum[v] -= self.c[s];
            self.weight[v] -= self.e[s];
            if !self.last_volume[s].is_nan() {
                self.volume_series[v] = self.volume_series[v].saturating_sub(1);
                self.volume[v] -= f64::from(self.last_volume[s]);
            }
        }
        (self.of[s], self.c[s], self.e[s], self.z[s], self.last_volume[s]) = (u32::MAX, 0.0, 0.0, 0.0, f32::NAN);
    }

    /// Series slot `s`'s part in its service's score, for the saved models.
    pub fn part(&self, s: usize) -> SeriesPart {
        let base = self.base[self.of[s] as usize];
        SeriesPart { base, c: self.c[s], e: self.e[s], z: self.z[s], last_volume: self.last_volume[s] }
    }

    /// Puts series slot `s`'s saved part back into its service (joined, fresh, the series just registered again).
    /// Where the service came back from its saved state, its sums (until a rebase) and volume hold the part already;
    /// elsewhere its terms, rescaled to the service's time base, join the sums and its traffic value the volume.
    pub fn restore_part(&mut self, s: usize, part: &SeriesPart, p: &ServiceParams) {
        let v = self.of[s] as usize;
        if self.saved_terms[v] {
            (self.c[s], self.e[s]) = (part.c, part.e);
        } else {
            if self.base[v] == TimeMs::MIN && part.base != TimeMs::MIN {
                (self.base[v], self.now[v]) = (part.base, part.base);
            }
            // Terms scaled to an older base shrink to the service's (a rebase since): `exp(−Δ / horizon)`.
            let f = if part.base == self.base[v] || part.base == TimeMs::MIN {
                1.0
            } else {
                (-((self.base[v] - part.base) as f64) / p.horizon_ms).exp()
            };
            (self.c[s], self.e[s]) = (part.c * f, part.e * f);
            self.sum[v] += self.c[s];
            self.weight[v] += self.e[s];
        }
        if !self.saved_volume[v] && !part.last_volume.is_nan() {
            self.volume_series[v] += 1;
            self.volume[v] += f64::from(part.last_volume);
        }
        (self.z[s], self.last_volume[s]) = (part.z, part.last_volume);
    }

    /// Takes a saved series that did not come back (forgotten, `engine.series-idle`) out of its service's saved sums
    /// and volume, as [`ServiceBank::leave`] takes a live one out.
    pub fn forget_part(&mut self, service_id: u64, part: &SeriesPart) {
        let volume = (!part.last_volume.is_nan()).then_some(f64::from(part.last_volume));
        if let Some(&v) = self.index.get(&service_id) {
            let v = v as usize;
            if self.saved_terms[v] {
                self.sum[v] -= part.c;
                self.weight[v] -= part.e;
            }
            if self.saved_volume[v]
                && let Some(x) = volume
            {
                self.volume_series[v] = self.volume_series[v].saturating_sub(1);
                self.volume[v] -= x;
            }
        } else if let Some(m) = self.pending.get_mut(&service_id) {
            m.sum -= part.c;
            m.weight -= part.e;
            if let Some(x) = volume {
                m.volume_series -= 1;
                m.volume -= x;
            }
        }
    }

    /// Every service's saved state: those with series now, and those loaded whose series have not come back.
    pub fn save(&self) -> Vec<ServiceModel> {
        let live = self.index.values().map(|&v| {
            let v = v as usize;
            let (sum, weight, volume, volume_series) =
                (self.sum[v], self.weight[v], self.volume[v], self.volume_series[v]);
            ServiceModel {
                id: self.id[v],
                base: self.base[v],
                now: self.now[v],
                sum,
                weight,
                volume,
                volume_series,
                spot: (&self.spot[v]).into(),
            }
        });
        live.chain(self.pending.values().copied()).collect()
    }

    /// Saved services, each brought back when its first series registers (a service with series now keeps its own
    /// state).
    pub fn load(&mut self, services: impl IntoIterator<Item = ServiceModel>) {
        for m in services {
            if !self.index.contains_key(&m.id) {
                self.pending.insert(m.id, m);
            }
        }
    }

    /// Whether `s`'s service has more than one series (else it has no multivariate score).
    #[inline]
    pub fn multivariate(&self, s: usize) -> bool {
        self.members[self.of[s] as usize].len() > 1
    }

    /// Records the value of traffic series `s` in its service's volume (non-finite values are ignored).
    pub fn record_volume(&mut self, s: usize, x: f64) {
        if !x.is_finite() {
            return;
        }
        let v = self.of[s] as usize;
        // The sum adds and removes the same (f32) values, so it does not drift.
        let (x, last) = (x as f32, self.last_volume[s]);
        if last.is_nan() {
            self.volume_series[v] += 1;
            self.volume[v] += f64::from(x);
        } else {
            self.volume[v] += f64::from(x) - f64::from(last);
        }
        self.last_volume[s] = x;
    }

    /// The volume of `s`'s service: the sum of its traffic series' latest values, or `None` when it has none.
    pub fn volume(&self, s: usize) -> Option<f64> {
        let v = self.of[s] as usize;
        (self.volume_series[v] > 0).then(|| self.volume[v].max(0.0))
    }

    /// Records series `s`'s residual `z` at time `t` and returns its service's statistic.
    pub fn update(&mut self, s: usize, t: TimeMs, z: f32, p: &ServiceParams) -> ServiceScore {
        let v = self.of[s] as usize;
        if self.base[v] == TimeMs::MIN {
            self.base[v] = t;
            self.now[v] = t;
        }
        self.now[v] = self.now[v].max(t);
        if (self.now[v] - self.base[v]) as f64 / p.horizon_ms > REBASE {
            self.rebase(v, p);
        }
        let a = f64::from(compress(z.abs()));
        let e = ((t - self.base[v]) as f64 / p.horizon_ms).exp();
        self.sum[v] += a * a * e - self.c[s];
        self.weight[v] += e - self.e[s];
        (self.c[s], self.e[s], self.z[s]) = (a * a * e, e, z);
        // The point is usually the service's latest: its own factor rescales the sums to now, no second `exp`.
        let scale =
            if t == self.now[v] { 1.0 / e } else { (-((self.now[v] - self.base[v]) as f64) / p.horizon_ms).exp() };
        self.score_scaled(v, scale)
    }

    fn score(&self, v: usize, p: &ServiceParams) -> ServiceScore {
        self.score_scaled(v, (-((self.now[v] - self.base[v]) as f64) / p.horizon_ms).exp())
    }

    fn score_scaled(&self, v: usize, scale: f64) -> ServiceScore {
        let (sum, k) = ((self.sum[v] * scale).max(0.0), (self.weight[v] * scale).max(0.0));
        ServiceScore { mean_sq: if k > 0.0 { sum / k } else { 0.0 }, series: k }
    }

    /// Moves service `v`'s base time to its latest point, rescaling its members' terms.
    fn rebase(&mut self, v: usize, p: &ServiceParams) {
        let f = (-((self.now[v] - self.base[v]) as f64) / p.horizon_ms).exp();
        self.base[v] = self.now[v];
        // The sums are made again from the series here: saved series not back yet leave them.
        self.saved_terms[v] = false;
        let (mut sum, mut weight) = (0.0, 0.0);
        for &m in &self.members[v] {
            let m = m as usize;
            self.c[m] *= f;
            self.e[m] *= f;
            sum += self.c[m];
            weight += self.e[m];
        }
        (self.sum[v], self.weight[v]) = (sum, weight);
    }

    /// Surprise (`−log10 p`) of the statistic under its service's calibration (the normal tail until calibrated).
    pub fn surprise(&self, s: usize, score: ServiceScore, p: &SpotParams) -> f64 {
        let spot = &self.spot[self.of[s] as usize];
        if spot.calibrated(p) { spot.surprise(score.u() as f32, p) } else { normal_surprise(score.u()) }
    }

    /// Records series `s`'s residual `z` at time `t` (see [`ServiceBank::update`]) and teaches the service's
    /// calibration the statistic, unless `anomalous` (the point's own verdict) or the statistic is itself beyond the
    /// alarm level. Most points lie under the calibration's peaks threshold, which is decided
    /// without the cube root or a logarithm.
    pub fn observe(
        &mut self,
        s: usize,
        t: TimeMs,
        z: f32,
        anomalous: bool,
        sp: &SpotParams,
        p: &ServiceParams,
    ) -> ServiceScore {
        let alarm = p.alarm;
        let score = self.update(s, t, z, p);
        let v = self.of[s] as usize;
        let spot = self.spot[v];
        if spot.calibrated(sp) {
            if score.u_at_most(f64::from(spot.t)) {
                // Under the peaks threshold: the surprise is at most the peaks' own, −log10(1 − quantile).
                let quiet = -sp.ln_rate() / std::f64::consts::LN_10 < alarm;
                self.spot[v].update(spot.t, !anomalous && quiet, sp);
            } else {
                let u = score.u();
                let quiet = spot.surprise(u as f32, sp) < alarm;
                self.spot[v].update(u as f32, !anomalous && quiet, sp);
            }
        } else {
            let u_alarm = match self.u_alarm {
                Some((u, a)) if a == alarm => u,
                _ => {
                    let u = normal_quantile_of_surprise(alarm);
                    self.u_alarm = Some((u, alarm));
                    u
                }
            };
            let quiet = quiet_normal(score, u_alarm, alarm);
            let x = if score.u_at_most(f64::from(spot.t)) { spot.t } else { score.u() as f32 };
            self.spot[v].update(x, !anomalous && quiet, sp);
        }
        score
    }

    /// The series of `s`'s service that contribute most to its statistic now, largest share first.
    pub fn attribution(&self, s: usize, keys: &[Arc<SeriesKey>], p: &ServiceParams) -> Vec<MetricShare> {
        let v = self.of[s] as usize;
        let sum = self.sum[v];
        if sum <= 0.0 {
            return Vec::new();
        }
        let mut shares: Vec<MetricShare> = self.members[v]
            .iter()
            .map(|&m| m as usize)
            .filter(|&m| self.c[m] > 0.0)
            .map(|m| MetricShare {
                key: Arc::clone(&keys[m]),
                z: f64::from(self.z[m]),
                share: (self.c[m] / sum).min(1.0),
            })
            .filter(|m| m.share >= p.min_share)
            .collect();
        shares.sort_by(|a, b| b.share.total_cmp(&a.share).then_with(|| a.key.id.cmp(&b.key.id)));
        shares.truncate(p.top);
        shares
    }

    /// Effective number of series behind `s`'s service statistic at its latest point.
    pub fn series(&self, s: usize, p: &ServiceParams) -> f64 {
        self.score(self.of[s] as usize, p).series
    }
}

/// One-sided normal tail, `−log10 P(Z ≥ u)`: the χ² reading of the statistic, right for independent Gaussian
/// residuals only (the stand-in until the service's calibration has its peaks).
fn normal_surprise(u: f64) -> f64 {
    let ln_p = ln_erfc(u * std::f64::consts::FRAC_1_SQRT_2) - std::f64::consts::LN_2;
    (-ln_p / std::f64::consts::LN_10).max(0.0)
}

/// A statistic whose deviate lies this far (relative) below the alarm level's is quiet without computing its
/// surprise: the cube root (1e-12 relative) and the normal tail (f64) round far finer, and the tail's slope there is
/// about the deviate over ln 10 (a relative change of 1e-6 in a deviate of 3 moves the surprise by about 4e-6).
const QUIET_MARGIN: f64 = 1e-6;

/// Whether the uncalibrated (normal) reading of `score` is under the alarm level `alarm`, whose deviate is `u_alarm`.
/// Most points lie well under it: more than [`QUIET_MARGIN`] below it the statistic is quiet without its cube root or
/// the normal tail, which decide only within the margin.
#[inline]
fn quiet_normal(score: ServiceScore, u_alarm: f64, alarm: f64) -> bool {
    score.u_at_most(u_alarm * (1.0 - QUIET_MARGIN)) || (score.u_at_most(u_alarm) && normal_surprise(score.u()) < alarm)
}

/// The deviate whose one-sided normal surprise is `s` (bisection; once per detector).
fn normal_quantile_of_surprise(s: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_surprise(mid) < s { lo = mid } else { hi = mid }
    }
    hi
}

/// Cube root of `x ≥ 0` to about 1e-12 relative, with plain arithmetic (a bit-level first guess, then Halley steps):
/// several times cheaper than `f64::cbrt`, and the same on every platform.
#[inline]
fn cbrt(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return if x > 0.0 { x } else { 0.0 };
    }
    // Dividing the exponent by 3 in the bit pattern gives a guess within a few percent (denormals excepted, which
    // the Halley steps still fix, more slowly).
    let mut y = f64::from_bits(x.to_bits() / 3 + 0x2A9F_7893_782D_A1CE);
    for _ in 0..3 {
        let y3 = y * y * y;
        y *= (y3 + 2.0 * x) / (2.0 * y3 + x);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ServiceParams = ServiceParams { horizon_ms: 300_000.0, top: 5, min_share: 0.01, alarm: 3.4 };

    fn bank(series: usize) -> (ServiceBank, Vec<Arc<SeriesKey>>) {
        let mut b = ServiceBank::default();
        let keys: Vec<Arc<SeriesKey>> =
            (0..series).map(|i| Arc::new(SeriesKey::new("svc", &format!("m{i}"), [("", ""); 0]))).collect();
        for k in &keys {
            b.push(k.service_id);
        }
        (b, keys)
    }

    /// A series that leaves its service takes its terms and its traffic out of the service's sums; a service left
    /// without series is forgotten, and its place goes to the next new service, fresh.
    #[test]
    fn a_series_leaving_takes_its_part_with_it() {
        let (mut b, _) = bank(3);
        let (mut alone, _) = bank(1);
        for (i, t) in (0..50).map(|i| (i, i as i64 * 60_000)) {
            let z = (i % 7) as f32 - 3.0;
            for s in 0..3 {
                b.update(s, t, z * (s + 1) as f32, &P);
            }
            alone.update(0, t, z, &P);
        }
        b.record_volume(0, 10.0);
        b.record_volume(2, 32.5);
        b.leave(1);
        b.leave(2);
        assert!(!b.multivariate(0), "one series left");
        assert_eq!(b.members[0], [0]);
        assert_eq!(b.volume(0), Some(10.0), "the departed traffic series' value left the volume");
        let (with, without) = (b.score(0, &P), alone.score(0, &P));
        assert!((with.mean_sq - without.mean_sq).abs() < 1e-9 * without.mean_sq, "{with:?} {without:?}");
        assert!((with.series - without.series).abs() < 1e-9, "{with:?} {without:?}");
        // The last series leaves: the service is forgotten; a new service takes its place fresh, and slot 1 joins it.
        b.leave(0);
        assert!(b.index.is_empty() && b.free == [0]);
        let other = SeriesKey::new("other", "m", [("", ""); 0]).service_id;
        b.join(1, other);
        assert_eq!((b.of[1], b.free.len(), b.index[&other]), (0, 0, 0));
        assert_eq!((b.base[0], b.sum[0], b.weight[0], b.volume(1)), (TimeMs::MIN, 0.0, 0.0, None));
        b.push(other);
        assert_eq!(b.members[0], [1, 3]);
        assert!(b.multivariate(3));
    }

    #[test]
    fn the_threshold_test_without_cube_root_agrees_with_the_deviate() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut unit = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..100_000 {
            let score = ServiceScore { mean_sq: 10.0 * unit() * unit(), series: 0.4 + 30.0 * unit() };
            let x = 8.0 * unit() - 1.0;
            let u = score.u();
            if (u - x).abs() > 1e-9 {
                assert_eq!(score.u_at_most(x), u <= x, "{score:?} at {x}: u = {u}");
            }
        }
        assert!((normal_surprise(normal_quantile_of_surprise(3.4)) - 3.4).abs() < 1e-9);
    }

    #[test]
    fn the_quiet_margin_decides_as_the_surprise_does() {
        let mut next = crate::detect::xorshift(0x2545_f491_4f6c_dd1d);
        let mut unit = || (next() >> 11) as f64 / (1u64 << 53) as f64;
        let (mut fast, mut near) = (0, 0);
        for alarm in [1.3, 2.0, 3.4, 5.0, 8.0, 15.0] {
            let u_alarm = normal_quantile_of_surprise(alarm);
            let u_quiet = u_alarm * (1.0 - QUIET_MARGIN);
            for k in 0..200_000 {
                let series = 0.4 + 40.0 * unit();
                // Deviates within a few margins of the alarm's (either side), or anywhere up to twice it.
                let u = if k % 2 == 0 {
                    u_alarm * (1.0 + 4.0 * QUIET_MARGIN * (2.0 * unit() - 1.0))
                } else {
                    2.0 * u_alarm * unit()
                };
                let a = 2.0 / (9.0 * series);
                let edge = (1.0 - a) + u * a.sqrt();
                // The statistic at that deviate, moved by a few ulps.
                let mean_sq = f64::from_bits((edge * edge * edge).to_bits().wrapping_add(k as u64 % 7).wrapping_sub(3));
                let score = ServiceScore { mean_sq, series };
                let exact = score.u_at_most(u_alarm) && normal_surprise(score.u()) < alarm;
                assert_eq!(quiet_normal(score, u_alarm, alarm), exact, "{score:?} at alarm {alarm}");
                fast += usize::from(score.u_at_most(u_quiet));
                near += usize::from(
                    k % 2 == 0 && score.u_at_most(u_quiet) && !score.u_at_most(u_quiet * (1.0 - QUIET_MARGIN)),
                );
            }
        }
        // Most values take the fast path, and some of them within a margin of it.
        assert!(fast > 300_000 && near > 1_000, "fast {fast}, near {near}");
    }

    #[test]
    fn fast_cube_root_matches_the_library() {
        for x in [1e-300, 1e-12, 0.001, 0.37, 1.0, 2.0, 27.0, 1234.5, 7.7e9, 1e200] {
            assert!((cbrt(x) / x.cbrt() - 1.0).abs() < 1e-12, "{x}: {} vs {}", cbrt(x), x.cbrt());
        }
        assert_eq!(cbrt(0.0), 0.0);
        assert_eq!(cbrt(-1.0), 0.0);
    }

    #[test]
    fn the_deviating_metric_carries_the_attribution() {
        let (mut b, keys) = bank(4);
        for t in 0..10 {
            for s in 0..4 {
                let z = if s == 2 && t == 9 { 8.0 } else { 0.5 };
                b.update(s, t * 60_000, z, &P);
            }
        }
        let a = b.attribution(0, &keys, &P);
        assert_eq!(&*a[0].key.metric, "m2");
        assert!(a[0].share > 0.9, "{a:?}");
        assert_eq!(a.len(), 1, "the others' shares are under min-share: {a:?}");
        let all = b.attribution(0, &keys, &ServiceParams { min_share: 0.0, ..P });
        assert_eq!(all.len(), 4);
        assert!((all.iter().map(|m| m.share).sum::<f64>() - 1.0).abs() < 1e-9, "shares of all members sum to 1");
    }

    #[test]
    fn joint_moderate_deviations_score_higher_than_one() {
        let (mut one, _) = bank(6);
        let (mut all, _) = bank(6);
        let (mut u_one, mut u_all) = (0.0, 0.0);
        for s in 0..6 {
            u_one = one.update(s, 0, if s == 0 { 2.5 } else { 0.0 }, &P).u();
            u_all = all.update(s, 0, 2.5, &P).u();
        }
        assert!(u_all > u_one + 2.0, "six metrics 2.5 sigma off ({u_all}) beat one ({u_one})");
        let joint = all.update(0, 0, 2.5, &P);
        assert!(one.surprise(0, joint, &SpotParams::default()) > 3.0);
    }

    #[test]
    fn calibration_holds_the_false_alarm_rate_on_correlated_heavy_tailed_metrics() {
        // Five metrics that share a common factor and have Student-t-like tails: the χ² approximation alone would
        // alarm far too often; SPOT's calibration brings the rate near the configured risk.
        let risk = 4e-4f64;
        let alarm = -risk.log10();
        let sp = SpotParams::default();
        let (mut b, _) = bank(5);
        let mut next = crate::detect::xorshift(0x2545_f491_4f6c_dd1d);
        let mut uniform = || (next() >> 11) as f64 / (1u64 << 53) as f64;
        let mut gauss = || {
            let (a, b) = (uniform().max(1e-12), uniform());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let (mut alarms, mut n, mut normal_tail) = (0u32, 0u32, 0u32);
        for t in 0..40_000i64 {
            let common = gauss();
            let scale = if gauss().abs() > 2.0 { 3.0 } else { 1.0 };
            for s in 0..5 {
                let z = (0.6 * common + 0.8 * gauss()) * scale;
                let score = b.observe(s, t * 60_000, z as f32, false, &sp, &ServiceParams { alarm, ..P });
                let surprise = b.surprise(s, score, &sp);
                if t >= 10_000 {
                    n += 1;
                    alarms += u32::from(surprise >= alarm);
                    normal_tail += u32::from(normal_surprise(score.u()) >= alarm);
                }
            }
        }
        let (rate, naive) = (f64::from(alarms) / f64::from(n), f64::from(normal_tail) / f64::from(n));
        assert!(rate < 3.0 * risk, "calibrated false-alarm rate {rate} vs risk {risk}");
        assert!(naive > 10.0 * risk, "the uncalibrated χ² tail alarms far too often here ({naive}): the test can fail");
    }

    #[test]
    fn stale_metrics_fade_and_rebasing_keeps_the_sums() {
        let (mut b, keys) = bank(2);
        b.update(0, 0, 10.0, &P);
        // Series 1 keeps reporting normal values for a day: series 0's old deviation fades out.
        let mut last = ServiceScore { mean_sq: 0.0, series: 0.0 };
        for t in 1..=1440 {
            last = b.update(1, t * 60_000, 0.3, &P);
        }
        assert!(last.series < 1.01 && last.series > 0.99, "{last:?}");
        let a = b.attribution(1, &keys, &P);
        assert_eq!(&*a[0].key.metric, "m1", "{a:?}");
        // The rebased sums equal a fresh computation.
        let direct = f64::from(compress(0.3)).powi(2);
        let scale = (-((b.now[0] - b.base[0]) as f64) / P.horizon_ms).exp();
        assert!((b.sum[0] * scale / direct - 1.0).abs() < 1e-9, "{} vs {direct}", b.sum[0] * scale);
    }
}
