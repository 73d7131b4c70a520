//! Rarity of a value under a series' own history: a small adaptive histogram with exponentially decaying counts.
//!
//! The sketch covers the range of values seen so far with [`BINS`] equal bins. A value inside the range is as
//! surprising as its bin is rare: `p = (count + prior) / (total + prior · BINS)` (Laplace-smoothed frequency). A value
//! outside the range has never been seen: it gets the probability of an unvisited bin, times an exponential tail in
//! how far beyond the range it lies (in bins), so a new extreme scores by how extreme it is. Counts decay by a constant
//! factor per point, so the sketch describes roughly the last `1 / (1 − decay)` points and old regimes fade. When the
//! range grows, existing counts move to the bins that now cover their centres.
//!
//! This is a histogram-based outlier score with the record (new-extreme) case built in: cheap (76 bytes per series),
//! scale-free (no unit or variance assumption) and self-calibrating, because a probability read from the series' own
//! history already means "how often does this happen here".
// Hot path: no IO, no allocation, no logging.

/// Bins per sketch.
pub const BINS: usize = 16;

/// Settings shared by the sketches of one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SketchParams {
    /// Factor every count is multiplied by per point (`0.5^(1/half_life)`).
    pub decay: f32,
    /// Pseudo-count of every bin (and of the unseen region beyond the range).
    pub prior: f32,
    /// Surprise added per bin width a value lies beyond the range.
    pub tail: f32,
    /// Pseudo-count of the unseen region beyond the range.
    pub unseen: f32,
}

/// One series' sketch: 76 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sketch {
    pub counts: [f32; BINS],
    pub lo: f32,
    pub hi: f32,
    pub total: f32,
}

impl Default for Sketch {
    fn default() -> Self {
        Self { counts: [0.0; BINS], lo: f32::NAN, hi: f32::NAN, total: 0.0 }
    }
}

impl Sketch {
    /// Surprise `−log10 p` of `x` under the sketch (0 before the first value).
    #[inline]
    pub fn surprise(&self, x: f32, p: &SketchParams) -> f64 {
        self.odds(x, p).surprise()
    }

    /// [`Sketch::surprise`] as odds, the logarithm not yet taken (see [`Odds`]).
    #[inline]
    pub fn odds(&self, x: f32, p: &SketchParams) -> Odds {
        if self.lo.is_nan() || !x.is_finite() {
            return Odds::NONE;
        }
        if x < self.lo || x > self.hi {
            let beyond = if x > self.hi { x - self.hi } else { self.lo - x };
            let width = (self.hi - self.lo) / BINS as f32;
            // A constant series has no bin width yet: any move is one bin beyond.
            let bins = if width > 0.0 { f64::from(beyond / width).min(1e6) } else { 1.0 };
            return Odds { prob: (f64::from(p.unseen) / self.norm(p)) as f32, extra: f64::from(p.tail) * bins };
        }
        self.bin_odds(self.bin(x), p)
    }

    /// The odds of a value inside the range, in bin `b`.
    #[inline]
    fn bin_odds(&self, b: usize, p: &SketchParams) -> Odds {
        Odds { prob: ((f64::from(self.counts[b]) + f64::from(p.prior)) / self.norm(p)) as f32, extra: 0.0 }
    }

    /// The sketch's mass with every bin's pseudo-count: what a bin's count is a probability of.
    #[inline]
    fn norm(&self, p: &SketchParams) -> f64 {
        f64::from(self.total) + f64::from(p.prior) * BINS as f64
    }

    /// `odds(x)` when `score` (else [`Odds::NONE`]), then `update(x)`: the same values, with the bin of a value inside
    /// the range found once.
    #[inline]
    pub fn observe(&mut self, x: f32, score: bool, p: &SketchParams) -> Odds {
        if !(x >= self.lo && x <= self.hi) {
            // Outside the range (or the first value, or not finite): the two steps share nothing.
            let o = if score { self.odds(x, p) } else { Odds::NONE };
            self.update(x, p);
            return o;
        }
        let b = self.bin(x);
        let o = if score { self.bin_odds(b, p) } else { Odds::NONE };
        for c in &mut self.counts {
            *c *= p.decay;
        }
        self.total = self.total * p.decay + 1.0;
        self.counts[b] += 1.0;
        o
    }

    /// Counts `x` (after decaying every count), widening the range first if `x` lies outside it.
    #[inline]
    pub fn update(&mut self, x: f32, p: &SketchParams) {
        if !x.is_finite() {
            return;
        }
        if self.lo.is_nan() {
            (self.lo, self.hi) = (x, x);
        } else if x < self.lo || x > self.hi {
            self.widen(self.lo.min(x), self.hi.max(x));
        }
        for c in &mut self.counts {
            *c *= p.decay;
        }
        self.total = self.total * p.decay + 1.0;
        let b = self.bin(x);
        self.counts[b] += 1.0;
    }

    #[inline]
    fn bin(&self, x: f32) -> usize {
        if self.hi > self.lo { bin_at((x - self.lo) / (self.hi - self.lo) * BINS as f32) } else { 0 }
    }

    /// Re-bins onto `[lo, hi]`: each old bin's count moves to the new bin holding its centre.
    fn widen(&mut self, lo: f32, hi: f32) {
        {
            let old = self.counts;
            let old_width = (self.hi - self.lo) / BINS as f32;
            self.counts = [0.0; BINS];
            for (k, c) in old.iter().enumerate() {
                let centre = self.lo + (k as f32 + 0.5) * old_width;
                let pos = (centre - lo) / (hi - lo) * BINS as f32;
                self.counts[(pos as usize).min(BINS - 1)] += c;
            }
        }
        (self.lo, self.hi) = (lo, hi);
    }
}

/// The bin of position `pos` (in bin widths from `lo`): `(pos as usize).min(BINS - 1)`, through the cheaper i32
/// conversion; both saturate (NaN and negatives to 0, large values to the top), so the clamp gives the same bin for
/// every f32 (checked for all of them once, and on a spread in the tests).
#[inline]
fn bin_at(pos: f32) -> usize {
    (pos as i32).clamp(0, BINS as i32 - 1) as usize
}

/// A value's rarity under a sketch before the logarithm: its surprise is `extra − log10 prob` ([`Odds::surprise`]).
/// The detector collects a round's odds and takes their logarithms together ([`ln_slice`]), in vector registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Odds {
    /// The probability of the value's bin (or of the unseen region), rounded to f32: the counts it comes from are
    /// f32 already.
    pub prob: f32,
    /// Surprise added for how far beyond the range the value lies (0 inside it).
    pub extra: f64,
}

impl Odds {
    /// No evidence: surprise exactly 0.
    pub const NONE: Odds = Odds { prob: 1.0, extra: 0.0 };

    /// `extra − log10 prob`.
    #[inline]
    pub fn surprise(self) -> f64 {
        surprise_of(self.extra, ln(self.prob))
    }
}

/// `extra − log10 p` from `ln_p = ln p` ([`ln`]); exactly 0 for no evidence (`extra` 0, `p` 1).
#[inline]
pub fn surprise_of(extra: f64, ln_p: f32) -> f64 {
    extra - f64::from(ln_p) * std::f64::consts::LOG10_E
}

/// Natural logarithm, to about one f32 ulp, for the surprises of the sketches and of fatigue: a probability from f32
/// counts holds no more. [`ln_slice`] over a slice gives the same bits as this per value.
#[inline]
pub fn ln(x: f32) -> f32 {
    if normal(x) { ln_normal(x) } else { x.ln() }
}

/// [`ln`] of every value of `xs`, in place. When every value is a positive normal number (always, in the detector's
/// use), one branch-free pass the compiler runs in vector registers; otherwise value by value.
pub fn ln_slice(xs: &mut [f32]) {
    if xs.iter().fold(true, |all, &x| all & normal(x)) {
        for x in xs.iter_mut() {
            *x = ln_normal(*x);
        }
    } else {
        for x in xs.iter_mut() {
            *x = ln(*x);
        }
    }
}

#[inline(always)]
fn normal(x: f32) -> bool {
    (f32::MIN_POSITIVE..=f32::MAX).contains(&x)
}

/// `ln x` for a positive normal `x` (Cephes' `logf`): `x = m · 2^e` with `m` in [√½, √2), then a degree-9 polynomial
/// in `m − 1`, and `e · ln 2` added in two parts so the sum stays exact.
// Cephes' coefficients as published, so they can be checked against the source; each parses to the f32 it names.
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn ln_normal(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += i32::from(big);
    let f = m - 1.0;
    let e = e as f32;
    let z = f * f;
    let mut y = 7.037_683_6e-2;
    y = y * f - 1.151_461_03e-1;
    y = y * f + 1.167_699_874e-1;
    y = y * f - 1.242_014_084_6e-1;
    y = y * f + 1.424_932_278_7e-1;
    y = y * f - 1.666_805_766_5e-1;
    y = y * f + 2.000_071_476_5e-1;
    y = y * f - 2.499_999_399_3e-1;
    y = y * f + 3.333_333_117_4e-1;
    let mut y = y * f * z;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    let r = f + y;
    r + 0.693_359_375 * e
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: SketchParams = SketchParams { decay: 1.0, prior: 0.1, tail: 1.0, unseen: 0.1 };

    #[test]
    fn frequent_values_are_unsurprising_and_rare_ones_are() {
        let mut s = Sketch::default();
        // 1000 points: 99 % spread over [0, 10), 1 % at 15..16.
        for i in 0..1000 {
            let x = if i % 100 == 0 { 15.0 + (i / 100) as f32 * 0.1 } else { (i % 97) as f32 / 9.7 };
            s.update(x, &P);
        }
        let common = s.surprise(5.0, &P);
        let rare = s.surprise(15.5, &P);
        assert!(common < 1.3, "common {common}");
        assert!(rare > 1.9 && rare < 2.2, "1 % of the points: about 2, got {rare}");
        // Beyond the range: at least as surprising as an unvisited bin, more the further out.
        let just_out = s.surprise(16.5, &P);
        let far_out = s.surprise(30.0, &P);
        assert!(just_out > 3.9 && far_out > just_out + 5.0, "{just_out} {far_out}");
    }

    #[test]
    fn bin_at_is_the_saturating_usize_cast() {
        for bits in (0..=u32::MAX).step_by(4093).chain([0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000]) {
            let pos = f32::from_bits(bits);
            assert_eq!(bin_at(pos), (pos as usize).min(BINS - 1), "{pos:e}");
        }
    }

    #[test]
    fn observe_is_surprise_then_update() {
        let p = SketchParams { decay: 0.5f32.powf(1.0 / 50.0), ..P };
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        for i in 0..5000u32 {
            let h = i.wrapping_mul(2_654_435_761);
            // Mostly inside the range, with new extremes, constant stretches and the odd NaN.
            let x = match i % 97 {
                0 => f32::NAN,
                1..=5 => 7.0,
                _ => (h >> 8) as f32 / (1u32 << 24) as f32 * (1.0 + i as f32 / 1000.0),
            };
            let score = i % 3 != 0;
            let want = if score { a.odds(x, &p) } else { Odds::NONE };
            a.update(x, &p);
            let got = b.observe(x, score, &p);
            // Debug output, so the NaN range before the first finite value compares equal.
            assert_eq!(
                (got.prob.to_bits(), got.extra.to_bits(), format!("{a:?}")),
                (want.prob.to_bits(), want.extra.to_bits(), format!("{b:?}")),
                "point {i}"
            );
        }
    }

    #[test]
    fn ln_is_the_library_ln_to_about_an_ulp() {
        let mut worst = 0.0f64;
        for bits in (0x0080_0000..0x7f80_0000u32).step_by(997) {
            let x = f32::from_bits(bits);
            let (fast, exact) = (f64::from(ln(x)), f64::from(x).ln());
            // Error in f32 ulps of the result, and one ulp of 1 for results near 0 (where a relative bound is moot).
            let ulp = f64::from(f32::EPSILON) * exact.abs().max(1.0);
            worst = worst.max((fast - exact).abs() / ulp);
        }
        assert!(worst <= 1.0, "worst error {worst} ulps");
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(Odds::NONE.surprise().to_bits(), 0.0f64.to_bits());
        for x in [0.0, -0.0, -1.0, f32::MIN_POSITIVE / 2.0, f32::INFINITY, f32::NAN] {
            assert_eq!(ln(x).to_bits(), x.ln().to_bits(), "{x}");
        }
    }

    #[test]
    fn ln_slice_is_ln_value_by_value() {
        let xs: Vec<f32> = (1..2000u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) >> 2)).collect();
        for odd in [None, Some(0.0), Some(-2.0), Some(f32::NAN)] {
            let mut v = xs.clone();
            if let Some(o) = odd {
                v[1234] = o;
            }
            let want: Vec<u32> = v.iter().map(|&x| ln(x).to_bits()).collect();
            ln_slice(&mut v);
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "{odd:?}");
        }
    }

    #[test]
    fn widening_keeps_the_counts() {
        let mut s = Sketch::default();
        for i in 0..100 {
            s.update((i % 10) as f32, &P);
        }
        let before: f32 = s.counts.iter().sum();
        s.update(100.0, &P);
        let after: f32 = s.counts.iter().sum();
        assert!((after - before - 1.0).abs() < 1e-4);
        assert_eq!((s.lo, s.hi), (0.0, 100.0));
        // Everything seen before now sits in the first two bins.
        assert!(s.counts[0] + s.counts[1] >= before - 1e-3);
    }

    #[test]
    fn old_regimes_fade() {
        let p = SketchParams { decay: 0.5f32.powf(1.0 / 100.0), ..P };
        let mut s = Sketch::default();
        for i in 0..2000 {
            s.update(if i < 1000 { (i % 10) as f32 } else { 90.0 + (i % 10) as f32 }, &p);
        }
        // The new regime is common, the old one has been forgotten to rarity.
        assert!(s.surprise(95.0, &p) < 1.0);
        assert!(s.surprise(5.0, &p) > 2.0, "{}", s.surprise(5.0, &p));
    }

    #[test]
    fn a_constant_series_flags_its_first_move() {
        let mut s = Sketch::default();
        for _ in 0..1000 {
            s.update(3.0, &P);
        }
        assert!(s.surprise(3.0, &P) < 0.01);
        // Unseen in 1000 points: p = 0.1 / 1001.6, one bin beyond.
        let moved = s.surprise(4.0, &P);
        assert!((moved - 5.0).abs() < 0.01, "{moved}");
        s.update(4.0, &P);
        assert_eq!((s.lo, s.hi), (3.0, 4.0));
        assert!(s.counts[0] > 999.0 && s.counts[BINS - 1] == 1.0);
    }
}
