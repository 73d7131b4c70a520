//! Thresholds from extreme value theory: streaming peaks-over-threshold (SPOT, Siffer et al., KDD 2017) with bounded
//! memory, turning a per-series statistic into a calibrated tail probability.
//!
//! The pickands–Balkema–de Haan theorem says that the excesses of a statistic over a high threshold `t` follow a
//! generalised Pareto distribution (GPD). SPOT fits that GPD to the peaks it has seen and reads the probability of a
//! new value from it. This version keeps memory constant: `t` is a streaming quantile estimate (a stochastic
//! approximation of the `quantile` quantile), and the GPD is fitted by the method of moments on exponentially weighted
//! first and second moments of the excesses, instead of keeping every peak for a Grimshaw fit. As in SPOT, values the
//! caller judges anomalous do not update the fit, so an incident cannot teach the calibration that it is normal.
//!
//! Probabilities are handled as *surprise*, `−log10 p`, which stays finite and ordered however small `p` gets.
// Hot path: no IO, no allocation, no logging.

/// Settings shared by every calibrator of one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpotParams {
    /// Quantile of the statistic used as the peaks threshold `t` (e.g. 0.98).
    pub quantile: f32,
    /// Step of the streaming quantile estimate, in the statistic's unit.
    pub step: f32,
    /// Peaks needed before the fit is trusted.
    pub min_peaks: u32,
    /// The fit forgets peaks with this effective memory (in peaks).
    pub memory: f32,
    /// Largest shape parameter accepted (heavier tails are clamped to it).
    pub max_shape: f32,
    /// `ln(1 − quantile)`, the log of the peaks' rate: every surprise and quantile needs it.
    ln_rate: f64,
    /// The largest surprise of a value at or below the peaks threshold, `max(0, −log10(1 − quantile))` as
    /// [`Spot::surprise`] rounds it (see [`Spot::exceeds`]).
    peak_surprise: f64,
}

impl SpotParams {
    pub fn new(quantile: f32, step: f32, min_peaks: u32, memory: f32, max_shape: f32) -> Self {
        let ln_rate = f64::from(1.0 - quantile).ln();
        let peak_surprise = (-ln_rate / std::f64::consts::LN_10).max(0.0);
        Self { quantile, step, min_peaks, memory, max_shape, ln_rate, peak_surprise }
    }

    /// `ln(1 − quantile)`.
    #[inline]
    pub fn ln_rate(&self) -> f64 {
        self.ln_rate
    }
}

impl Default for SpotParams {
    fn default() -> Self {
        Self::new(0.98, 0.02, 16, 256.0, 0.5)
    }
}

/// One series' calibrator: 24 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Spot {
    /// Peaks threshold: the running `quantile` estimate.
    pub t: f32,
    /// Weighted mean and mean square of the excesses over `t`.
    pub m1: f32,
    pub m2: f32,
    /// Values seen, saturating.
    pub n: u32,
    /// Peaks in the fit, saturating.
    pub peaks: u32,
    /// `quantile_at(level) − t` at the level the owner asks about ([`Spot::band`], [`Spot::exceeds_band`]), kept while
    /// the fit stands; [`UNKNOWN`] when not computed since the fit last changed.
    excess: f32,
}

/// [`Spot::excess`] not known.
const UNKNOWN: f32 = f32::NEG_INFINITY;

/// Relative margin around the cached band inside which [`Spot::exceeds_band`] computes the surprise exactly. The
/// band is rounded to `f32` (a relative error of 6e-8); a relative change of 1e-6 in a peak's excess moves its
/// surprise by at least about 1e-6 times its distance from the peaks threshold in tail units, orders of magnitude
/// more than the rounding of the surprise's own arithmetic (about 1e-15). Outside the margin, the side of the band
/// decides.
const BAND_MARGIN: f64 = 1e-6;

impl Spot {
    /// A calibrator whose threshold starts at `t0`.
    pub const fn new(t0: f32) -> Self {
        Self { t: t0, m1: 0.0, m2: 0.0, n: 0, peaks: 0, excess: UNKNOWN }
    }

    /// A calibrator in the state given by its fields (the device's copy of it).
    pub const fn from_parts(t: f32, m1: f32, m2: f32, n: u32, peaks: u32) -> Self {
        Self { t, m1, m2, n, peaks, excess: UNKNOWN }
    }

    /// Whether enough peaks have been seen to trust the fitted tail.
    #[inline]
    pub fn calibrated(&self, p: &SpotParams) -> bool {
        self.peaks >= p.min_peaks
    }

    /// The fitted GPD `(shape ξ, scale σ)` of the excesses over `t` (method of moments, shape clamped to
    /// `[0, max_shape]`, scale chosen so the mean matches).
    #[inline]
    pub fn gpd(&self, p: &SpotParams) -> (f32, f32) {
        let mean = self.m1.max(1e-6);
        let var = (self.m2 - self.m1 * self.m1).max(1e-12);
        let shape = (0.5 * (1.0 - mean * mean / var)).clamp(0.0, p.max_shape);
        (shape, (mean * (1.0 - shape)).max(1e-6))
    }

    /// Surprise `−log10 P(X ≥ x)` under the fitted tail. Below `t` the exponential tail at `t` is extended
    /// downwards (capped at probability 1), so the result is continuous and non-decreasing in `x`.
    #[inline]
    pub fn surprise(&self, x: f32, p: &SpotParams) -> f64 {
        let (shape, scale) = self.gpd(p);
        let y = f64::from(x - self.t) / f64::from(scale);
        let tail_ln = if y <= 0.0 || shape < 1e-4 { -y } else { -(1.0 + f64::from(shape) * y).ln() / f64::from(shape) };
        (-(p.ln_rate + tail_ln) / std::f64::consts::LN_10).max(0.0)
    }

    /// Whether `self.surprise(x, p) >= level`, the same answer without the divisions and the logarithm for the
    /// values at or below the peaks threshold (most of them) when `level` is above what those can reach: their
    /// surprise is `max(0, −(ln_rate + tail)/ln 10)` with a tail term `−y ≥ 0`, which rounding keeps at or below
    /// `max(0, −ln_rate/ln 10)`, the [`SpotParams`]' peak surprise.
    #[inline]
    pub fn exceeds(&self, x: f32, level: f64, p: &SpotParams) -> bool {
        if x <= self.t && p.peak_surprise < level {
            return false;
        }
        self.surprise(x, p) >= level
    }

    /// The value whose surprise is `s` (the inverse of [`Spot::surprise`] above `t`): the calibrated threshold for a
    /// risk of `10^−s`.
    pub fn quantile_at(&self, s: f64, p: &SpotParams) -> f32 {
        self.t + self.excess_at(s, p)
    }

    /// `quantile_at(s) − t`, as `quantile_at` rounds it: a function of the fit (`m1`, `m2`) alone, which changes only
    /// when a peak is learned, while `t` moves at every value. Out of line: [`Spot::band`] needs it at a few values in a
    /// hundred.
    #[cold]
    #[inline(never)]
    fn excess_at(&self, s: f64, p: &SpotParams) -> f32 {
        let (shape, scale) = self.gpd(p);
        // ln of the tail probability beyond t that gives surprise s.
        let tail_ln = -s * std::f64::consts::LN_10 - p.ln_rate;
        let y = if shape < 1e-4 { -tail_ln } else { ((-f64::from(shape) * tail_ln).exp() - 1.0) / f64::from(shape) };
        (y * f64::from(scale)) as f32
    }

    /// [`Spot::quantile_at`] `level`, bit for bit, its excess over `t` kept until the fit changes. A calibrator's
    /// owner asks at one level only (the detector's alarm level): the excess kept is for the level of the last call.
    #[inline(always)]
    pub fn band(&mut self, level: f64, p: &SpotParams) -> f32 {
        self.t + self.excess(level, p)
    }

    #[inline(always)]
    fn excess(&mut self, level: f64, p: &SpotParams) -> f32 {
        if self.excess == UNKNOWN {
            self.excess = self.excess_at(level, p);
        }
        self.excess
    }

    /// [`Spot::exceeds`], with the same answer, deciding from the band kept by [`Spot::band`] (computed if needed)
    /// where the value lies clearly on one side of it: without the division and the logarithm of the surprise for
    /// most values above the peaks threshold too.
    #[inline(always)]
    pub fn exceeds_band(&mut self, x: f32, level: f64, p: &SpotParams) -> bool {
        if x <= self.t && p.peak_surprise < level {
            return false;
        }
        if x > self.t && p.peak_surprise + 1e-3 < level {
            // Above the peaks threshold, with `level` far enough above the peak surprise that the band lies well
            // above `t`: the surprise grows with `x − t` and reaches `level` at the band.
            let (d, e) = (f64::from(x - self.t), f64::from(self.excess(level, p)));
            if d < e * (1.0 - BAND_MARGIN) {
                return false;
            }
            if d > e * (1.0 + BAND_MARGIN) {
                return true;
            }
        }
        self.surprise(x, p) >= level
    }

    /// Learns from `x`: the threshold moves towards the `quantile` quantile, and `x` joins the peaks when it exceeds
    /// the threshold and `learn` is set (the caller clears it for values it judged anomalous).
    #[inline]
    pub fn update(&mut self, x: f32, learn: bool, p: &SpotParams) {
        if !x.is_finite() {
            return;
        }
        self.n = self.n.saturating_add(1);
        if x > self.t {
            if learn {
                let y = x - self.t;
                self.peaks = self.peaks.saturating_add(1);
                let w = (1.0 / self.peaks as f32).max(1.0 / p.memory);
                self.m1 += w * (y - self.m1);
                self.m2 += w * (y * y - self.m2);
                self.excess = UNKNOWN;
            }
            self.t += p.step * p.quantile;
        } else {
            self.t -= p.step * (1.0 - p.quantile);
        }
    }
}

/// Surprise `−log10 P(|Z| ≥ |z|)` of a standard normal `Z`: the calibration used until SPOT has enough peaks.
#[inline]
pub fn normal_two_sided_surprise(z: f64) -> f64 {
    // ln erfc(|z|/√2) = ln P(|Z| ≥ |z|).
    (-ln_erfc(z.abs() * std::f64::consts::FRAC_1_SQRT_2) / std::f64::consts::LN_10).max(0.0)
}

/// `ln erfc(x)` for `x ≥ 0`, accurate to about 1e-7 relative in `erfc` (Numerical Recipes' Chebyshev fit), finite for
/// any finite `x`.
#[inline]
pub fn ln_erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() + poly
}

/// Maps a surprise to a score in [0, 1): 0 at no surprise, 0.5 at `reference`, approaching 1 without reaching it, so
/// scores keep their order however extreme the point.
#[inline]
pub fn surprise_to_unit(s: f64, reference: f64) -> f64 {
    let s = s.max(0.0);
    s / (s + reference.max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform (0, 1) stream (xorshift64*).
    struct Uniform(u64);

    impl Uniform {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        /// Standard normal by Box–Muller.
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.next(), self.next());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    fn fit(xs: impl Iterator<Item = f64>) -> Spot {
        let p = SpotParams::default();
        let mut s = Spot::new(1.0);
        for x in xs {
            s.update(x as f32, true, &p);
        }
        s
    }

    /// Fraction of a fresh sample of the same distribution that the risk-`r` threshold lets through.
    fn exceedance(spot: &Spot, risk: f64, xs: impl Iterator<Item = f64>) -> f64 {
        let threshold = f64::from(spot.quantile_at(-risk.log10(), &SpotParams::default()));
        let (mut n, mut over) = (0usize, 0usize);
        for x in xs {
            n += 1;
            over += usize::from(x >= threshold);
        }
        over as f64 / n as f64
    }

    #[test]
    fn threshold_matches_configured_risk_on_exponential_data() {
        let mut u = Uniform(42);
        let spot = fit((0..200_000).map(|_| -u.next().ln()));
        assert!(spot.calibrated(&SpotParams::default()));
        // Exp(1): the 98 % quantile is ln 50 = 3.91, the excesses are Exp(1) again (shape 0, scale 1).
        assert!((spot.t - 3.91).abs() < 0.3, "t {}", spot.t);
        let (shape, scale) = spot.gpd(&SpotParams::default());
        assert!(shape < 0.15 && (scale - 1.0).abs() < 0.25, "shape {shape} scale {scale}");
        for risk in [1e-3, 1e-4] {
            let mut u = Uniform(7);
            let rate = exceedance(&spot, risk, (0..2_000_000).map(|_| -u.next().ln()));
            assert!(rate > risk / 2.5 && rate < risk * 2.5, "risk {risk}: observed {rate}");
        }
        // The exact threshold for risk 1e-4 is ln 10^4 = 9.21.
        let q = spot.quantile_at(4.0, &SpotParams::default());
        assert!((q - 9.21).abs() < 1.0, "q {q}");
    }

    #[test]
    fn threshold_matches_configured_risk_on_gaussian_data() {
        let mut u = Uniform(3);
        let spot = fit((0..200_000).map(|_| u.normal().abs()));
        for risk in [1e-3, 1e-4] {
            let mut u = Uniform(11);
            let rate = exceedance(&spot, risk, (0..2_000_000).map(|_| u.normal().abs()));
            // The GPD fit is conservative for the light Gaussian tail: it may let through fewer, never many more.
            assert!(rate < risk * 2.0 && rate > risk / 10.0, "risk {risk}: observed {rate}");
        }
    }

    #[test]
    fn anomalies_do_not_widen_the_tail() {
        let p = SpotParams::default();
        let mut u = Uniform(5);
        let mut spot = fit((0..50_000).map(|_| -u.next().ln()));
        let (fit_before, surprise_before) = (spot.gpd(&p), spot.surprise(12.0, &p));
        for _ in 0..1000 {
            spot.update(50.0, false, &p);
        }
        // The threshold drifts (it is a quantile estimate) but the fitted excess distribution is untouched.
        assert_eq!(spot.gpd(&p), fit_before);
        assert!(surprise_before > 4.0, "{surprise_before}");
    }

    #[test]
    fn surprise_is_monotone_and_finite() {
        let mut u = Uniform(9);
        let spot = fit((0..20_000).map(|_| -u.next().ln()));
        let p = SpotParams::default();
        let mut last = -1.0;
        for i in 0..2000 {
            let s = spot.surprise(i as f32 * 0.05, &p);
            assert!(s.is_finite() && s >= last, "x {} s {s} last {last}", i as f32 * 0.05);
            last = s;
        }
        assert!(spot.surprise(1e30, &p).is_finite());
        assert!(surprise_to_unit(1e12, 4.0) < 1.0);
        assert!(surprise_to_unit(5.0, 4.0) < surprise_to_unit(5.1, 4.0));
    }

    #[test]
    fn exceeds_is_the_surprise_compared_with_the_level() {
        let mut u = Uniform(13);
        let mut checked = 0;
        for quantile in [0.98f32, 0.9, 0.5, 0.999] {
            let p = SpotParams::new(quantile, 0.02, 16, 256.0, 0.5);
            let mut spot = Spot::new(1.0);
            for k in 0..20_000 {
                // Exponential, heavy-tailed and constant stretches, so shapes from 0 to the clamp occur.
                let v = match (k / 2000) % 3 {
                    0 => -u.next().ln(),
                    1 => (1.0 / u.next()).powf(0.4) - 1.0,
                    _ => 0.5,
                };
                spot.update(v as f32, true, &p);
                let x = (spot.t + (u.next() as f32 - 0.7) * 6.0).max(0.0);
                let near_t = [spot.t, f32::from_bits(spot.t.to_bits() + 1), f32::from_bits(spot.t.to_bits() - 1)];
                for x in [x, 0.0, f32::NAN, f32::INFINITY].into_iter().chain(near_t) {
                    for level in [0.0, 0.5, 1.0, 1.7, 3.4, 4.0, 40.0, f64::NAN, p.peak_surprise] {
                        let level = if level.is_nan() { level } else { level + (u.next() - 0.5) * 1e-3 };
                        assert_eq!(spot.exceeds(x, level, &p), spot.surprise(x, &p) >= level, "{spot:?} {x} {level}");
                        checked += 1;
                    }
                    let at = p.peak_surprise;
                    assert_eq!(spot.exceeds(x, at, &p), spot.surprise(x, &p) >= at, "{spot:?} {x} at the peaks'");
                }
            }
        }
        assert!(checked > 1_000_000, "{checked}");
    }

    #[test]
    fn the_kept_band_answers_as_the_fit_does() {
        // `band` and `exceeds_band` against `quantile_at` and `exceeds`, bit for bit, through fits that change (peaks
        // learned, shapes from 0 to the clamp) and stand (anomalies not learned), with values on both sides of the
        // band, within ulps of it, and at the peaks threshold. The band is kept per calibrator for one level, so each
        // level has calibrators of its own.
        let mut u = Uniform(17);
        let (mut checked, mut near) = (0, 0);
        for quantile in [0.98f32, 0.9, 0.5, 0.999] {
            let p = SpotParams::new(quantile, 0.02, 16, 256.0, 0.5);
            let levels = [0.5, 1.0, 1.7, 2.0, 3.4, 4.0, 6.0, 40.0, p.peak_surprise, p.peak_surprise + 2e-3];
            let mut kept: Vec<Spot> = levels.iter().map(|_| Spot::new(1.0)).collect();
            let mut plain = Spot::new(1.0);
            for k in 0..12_000 {
                let v = match (k / 2000) % 3 {
                    0 => -u.next().ln(),
                    1 => (1.0 / u.next()).powf(0.4) - 1.0,
                    _ => 0.5,
                };
                let learn = u.next() > 0.1;
                plain.update(v as f32, learn, &p);
                for (spot, &level) in kept.iter_mut().zip(&levels) {
                    spot.update(v as f32, learn, &p);
                    assert_eq!(
                        (spot.t, spot.m1, spot.m2, spot.n, spot.peaks),
                        (plain.t, plain.m1, plain.m2, plain.n, plain.peaks)
                    );
                    let q = plain.quantile_at(level, &p);
                    assert_eq!(spot.band(level, &p).to_bits(), q.to_bits(), "{plain:?} {level}");
                    let mut xs = vec![q, plain.t, f32::from_bits(plain.t.to_bits() + 1), 0.0, f32::NAN, f32::INFINITY];
                    xs.push((plain.t + (u.next() as f32 - 0.3) * 8.0).max(0.0));
                    if q.is_finite() && q > 0.0 {
                        for d in [-64i32, -9, -3, -2, -1, 1, 2, 3, 9, 64] {
                            xs.push(f32::from_bits(q.to_bits().wrapping_add_signed(d)));
                        }
                        xs.push(q * (1.0 + 1e-6));
                        xs.push(q * (1.0 - 1e-6));
                    }
                    for x in xs {
                        let want = plain.exceeds(x, level, &p);
                        assert_eq!(spot.exceeds_band(x, level, &p), want, "{plain:?} {x} {level}");
                        near += usize::from(want != plain.exceeds(f32::from_bits(x.to_bits() ^ 1), level, &p));
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1_000_000, "{checked}");
        // Values one ulp apart fell on both sides of the band: the decisions at its edge were checked.
        assert!(near > 100, "{near}");
    }

    #[test]
    fn normal_surprise_matches_tables() {
        // P(|Z| ≥ 1.96) = 0.05, P(|Z| ≥ 3.29) = 0.001, P(|Z| ≥ 10) = 1.52e-23.
        assert!((normal_two_sided_surprise(1.959_964) - 1.301_03).abs() < 1e-4);
        assert!((normal_two_sided_surprise(3.290_527) - 3.0).abs() < 1e-4);
        assert!((normal_two_sided_surprise(10.0) - 22.8175).abs() < 1e-3);
        assert!(normal_two_sided_surprise(1e6).is_finite());
    }
}
