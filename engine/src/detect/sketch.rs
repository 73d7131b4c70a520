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

    /// Whether `x` lies inside the range seen so far (false before the first value and for NaN): where
    /// [`Sketch::observe`] reads and counts one bin, and the sketches' vector lanes (`lanes::observe8`) can take it.
    #[inline]
    pub fn holds(&self, x: f32) -> bool {
        x >= self.lo && x <= self.hi
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

/// [`Sketch::observe`] of eight values inside their sketches' ranges at once, in AVX2 registers, bit for bit what it
/// gives value by value.
///
/// The range, mass and bin of each of the eight sketches are read lane by lane into one register per field; the bin,
/// the odds (in `f64`, as [`Sketch::observe`] computes them) and the new mass are computed in the lanes; each
/// sketch's sixteen counts decay as two 256-bit rows, and its bin's count takes the value afterwards. Every vector
/// operation is the scalar one in the same order (no fused multiply-add; the bin's truncation gives what `as i32`
/// gives on the positions a value inside the range has, from 0 to 16).
#[cfg(target_arch = "x86_64")]
pub(crate) mod lanes {
    use std::arch::x86_64::*;

    use super::{BINS, Sketch, SketchParams};
    pub(crate) use crate::detect::seasonal::Avx2;

    pub const LANES: usize = 8;

    /// For each lane `l`: sketch `sketches[at[l]]` observes `xs[l]`, which it must [hold](Sketch::holds); `probs[l]`
    /// gets the probability of the odds [`Sketch::observe`] returns (their extra is 0 inside the range) when bit `l`
    /// of `score` is set, and 1 (no evidence) otherwise. The eight sketches must differ (no series repeats within a
    /// round). Debug builds check both conditions; without them the results are not those of `observe`, but no memory
    /// outside the eight sketches is touched.
    ///
    /// # Panics
    /// If a slot is out of bounds.
    #[inline]
    pub fn observe8(
        _: Avx2,
        sketches: &mut [Sketch],
        at: &[u32; LANES],
        xs: &[f32; LANES],
        score: u8,
        p: &SketchParams,
        probs: &mut [f32; LANES],
    ) {
        for l in 0..LANES {
            assert!((at[l] as usize) < sketches.len(), "sketch {} of {}", at[l], sketches.len());
            debug_assert!(sketches[at[l] as usize].holds(xs[l]), "a value inside its sketch's range");
            debug_assert!(!at[..l].contains(&at[l]), "eight different sketches");
        }
        // SAFETY: an `Avx2` exists only where the CPU has AVX2; the slots are in bounds (checked above), and every
        // bin index is clamped to [0, BINS).
        unsafe { observe8_avx2(sketches, at, xs, score, p, probs) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn observe8_avx2(
        sketches: &mut [Sketch],
        at: &[u32; LANES],
        xs: &[f32; LANES],
        score: u8,
        p: &SketchParams,
        probs: &mut [f32; LANES],
    ) {
        let base = sketches.as_mut_ptr();
        // SAFETY (every dereference below): `at[l]` is in bounds (the caller checked); each lane's reference ends before
        // the next lane's begins.
        let sk = |l: usize| unsafe { base.add(at[l] as usize) };
        let field = |f: fn(&Sketch) -> f32| unsafe {
            _mm256_setr_ps(
                f(&*sk(0)),
                f(&*sk(1)),
                f(&*sk(2)),
                f(&*sk(3)),
                f(&*sk(4)),
                f(&*sk(5)),
                f(&*sk(6)),
                f(&*sk(7)),
            )
        };
        let (lo, hi, total) = (field(|s| s.lo), field(|s| s.hi), field(|s| s.total));
        let x = unsafe { _mm256_loadu_ps(xs.as_ptr()) };
        // `bin`: `bin_at((x − lo) / (hi − lo) · BINS)`, and bin 0 where the range is a single value.
        let pos =
            _mm256_mul_ps(_mm256_div_ps(_mm256_sub_ps(x, lo), _mm256_sub_ps(hi, lo)), _mm256_set1_ps(BINS as f32));
        let b = _mm256_min_epi32(
            _mm256_max_epi32(_mm256_cvttps_epi32(pos), _mm256_setzero_si256()),
            _mm256_set1_epi32(BINS as i32 - 1),
        );
        let b = _mm256_and_si256(b, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(hi, lo)));
        let mut bins = [0i32; LANES];
        unsafe { _mm256_storeu_si256(bins.as_mut_ptr().cast(), b) };
        let count = |l: usize| unsafe { (*sk(l)).counts[bins[l] as usize] };
        let counts = _mm256_setr_ps(count(0), count(1), count(2), count(3), count(4), count(5), count(6), count(7));
        // `bin_odds`: `(count + prior) / (total + prior · BINS)` in f64, rounded to f32.
        let prior = _mm256_set1_pd(f64::from(p.prior));
        let mass = _mm256_set1_pd(f64::from(p.prior) * BINS as f64);
        let odds = |c: __m128, t: __m128| {
            _mm256_cvtpd_ps(_mm256_div_pd(
                _mm256_add_pd(_mm256_cvtps_pd(c), prior),
                _mm256_add_pd(_mm256_cvtps_pd(t), mass),
            ))
        };
        let prob = _mm256_set_m128(
            odds(_mm256_extractf128_ps::<1>(counts), _mm256_extractf128_ps::<1>(total)),
            odds(_mm256_castps256_ps128(counts), _mm256_castps256_ps128(total)),
        );
        let scored = _mm256_cmpeq_epi32(
            _mm256_and_si256(_mm256_set1_epi32(i32::from(score)), _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128)),
            _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128),
        );
        let prob = _mm256_blendv_ps(_mm256_set1_ps(1.0), prob, _mm256_castsi256_ps(scored));
        unsafe { _mm256_storeu_ps(probs.as_mut_ptr(), prob) };
        // `observe`'s update: every count decays, the mass decays and gains one, the value's bin gains one.
        // The bin's new count is computed from the count read above (decayed, then one added, as `observe` does), so
        // it is written after the rows instead of read back from them.
        let (decay, one) = (_mm256_set1_ps(p.decay), _mm256_set1_ps(1.0));
        let (mut totals, mut counted) = ([0f32; LANES], [0f32; LANES]);
        unsafe {
            _mm256_storeu_ps(totals.as_mut_ptr(), _mm256_add_ps(_mm256_mul_ps(total, decay), one));
            _mm256_storeu_ps(counted.as_mut_ptr(), _mm256_add_ps(_mm256_mul_ps(counts, decay), one));
        }
        const _: () = assert!(BINS == 16);
        for l in 0..LANES {
            unsafe {
                let s = &mut *sk(l);
                let row = s.counts.as_mut_ptr();
                _mm256_storeu_ps(row, _mm256_mul_ps(_mm256_loadu_ps(row), decay));
                _mm256_storeu_ps(row.add(8), _mm256_mul_ps(_mm256_loadu_ps(row.add(8)), decay));
                s.total = totals[l];
                s.counts[bins[l] as usize] = counted[l];
            }
        }
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
/// use), one branch-free pass the compiler runs in vector registers; otherwise value by value. Where the vector lanes
/// run (`lanes::Avx2`), the same code compiled for AVX2: eight values a register instead of SSE2's four, the same
/// operations on each, so the same bits.
pub fn ln_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(token) = lanes::Avx2::get() {
        return ln_slice_avx2(token, xs);
    }
    ln_slice_any(xs)
}

/// [`ln_slice`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
fn ln_slice_avx2(_: lanes::Avx2, xs: &mut [f32]) {
    #[target_feature(enable = "avx2")]
    fn avx2(xs: &mut [f32]) {
        ln_slice_any(xs)
    }
    // SAFETY: an `Avx2` exists only where the CPU has AVX2.
    unsafe { avx2(xs) }
}

/// [`ln_slice`]'s body, for the target's baseline or, inlined into an AVX2 function, for AVX2.
#[inline(always)]
fn ln_slice_any(xs: &mut [f32]) {
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

    #[cfg(target_arch = "x86_64")]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Eight values inside their sketches' ranges observed in vector lanes give, bit for bit, the odds and the
        /// sketches `observe` gives value by value: values anywhere in the range, at its ends and at the bins' edges,
        /// sketches whose range is a single value, counts decayed over long histories, scored and unscored lanes.
        #[test]
        fn lanes_observe_bit_for_bit_what_values_observe_one_by_one(
            seed in 0u64..u64::MAX,
            sketches in 8usize..40,
            rounds in 1usize..60,
            decay in proptest::sample::select(vec![1.0f32, 0.999, 0.97, 0.5]),
        ) {
            let Some(token) = lanes::Avx2::get() else {
                println!("skipped: no AVX2 here (or FAULTLINE_KERNELS=scalar), so the lanes never run");
                return Ok(());
            };
            let p = SketchParams { decay, prior: 0.1, tail: 1.0, unseen: 0.1 };
            let mut next = crate::detect::xorshift(seed | 1);
            let mut unit = move || (next() >> 11) as f32 / (1u64 << 53) as f32;
            // Histories of their own: a few sketches keep a single value (a range of zero width).
            let mut one: Vec<Sketch> = (0..sketches)
                .map(|k| {
                    let mut s = Sketch::default();
                    let (centre, spread) = (unit() * 200.0 - 100.0, if k % 7 == 0 { 0.0 } else { unit() * 50.0 });
                    for _ in 0..(unit() * 300.0) as usize + 1 {
                        s.update(centre + spread * (unit() - 0.5), &p);
                    }
                    s
                })
                .collect();
            let mut lanes_bank = one.clone();
            for _ in 0..rounds {
                // Eight different sketches, each with a value inside its range.
                let mut at = [0u32; lanes::LANES];
                for l in 0..lanes::LANES {
                    let mut k = (unit() * sketches as f32) as u32 % sketches as u32;
                    while at[..l].contains(&k) {
                        k = (k + 1) % sketches as u32;
                    }
                    at[l] = k;
                }
                let mut xs = [0f32; lanes::LANES];
                for (l, x) in xs.iter_mut().enumerate() {
                    let s = &one[at[l] as usize];
                    let edge = s.lo + (s.hi - s.lo) * ((unit() * 16.0) as i32 as f32 / 16.0);
                    *x = match (unit() * 5.0) as u32 {
                        0 => s.lo,
                        1 => s.hi,
                        2 => edge.clamp(s.lo, s.hi),
                        _ => (s.lo + (s.hi - s.lo) * unit()).clamp(s.lo, s.hi),
                    };
                }
                let score = (unit() * 256.0) as u8;
                let mut probs = [0f32; lanes::LANES];
                lanes::observe8(token, &mut lanes_bank, &at, &xs, score, &p, &mut probs);
                for l in 0..lanes::LANES {
                    let want = one[at[l] as usize].observe(xs[l], score >> l & 1 == 1, &p);
                    proptest::prop_assert_eq!(want.extra, 0.0);
                    proptest::prop_assert_eq!(probs[l].to_bits(), want.prob.to_bits(), "lane {}", l);
                }
                for (a, b) in one.iter().zip(&lanes_bank) {
                    let bits = |s: &Sketch| (s.counts.map(f32::to_bits), s.lo.to_bits(), s.hi.to_bits(), s.total.to_bits());
                    proptest::prop_assert_eq!(bits(a), bits(b));
                }
            }
        }
    }

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
            let mut any = v.clone();
            ln_slice_any(&mut any);
            assert_eq!(any.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "baseline, {odd:?}");
            #[cfg(target_arch = "x86_64")]
            match lanes::Avx2::get() {
                Some(token) => {
                    let mut avx2 = v.clone();
                    ln_slice_avx2(token, &mut avx2);
                    assert_eq!(avx2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "AVX2, {odd:?}");
                }
                None => println!("AVX2 version not checked: no AVX2 here (or FAULTLINE_KERNELS=scalar)"),
            }
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
