//! Level-shift detection: a two-sided CUSUM (Page 1954) on the robust model's standardised residuals.
//!
//! Each side accumulates `z − k` (upwards) or `−z − k` (downwards), floored at 0, with `z` clipped so one outlier cannot
//! fill it. A side that reaches `h` means the level has moved and stayed moved: a change point. The values since that
//! side last left 0, each weighted by how much it pushed the side up, estimate the new level (a few noise points that
//! happened to lift the side before the change weigh little against the points after it); the caller re-baselines
//! to it.
// Hot path: no IO, no allocation, no logging.

/// Settings of the CUSUM (from `[detector.level-shift]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CusumParams {
    /// Reference value `k`, in sigmas: half the smallest shift worth detecting.
    pub drift: f32,
    /// Decision threshold `h`, in sigmas.
    pub threshold: f32,
    /// Residuals are clipped to ±`clip` sigmas before they accumulate.
    pub clip: f32,
    /// Fraction of the points since a side left 0 that must have pushed it up: a shifted level moves nearly every
    /// point, intermittent outliers only some (they are anomalies, not a new normal).
    pub persistence: f32,
}

/// One series' CUSUM: 32 bytes, `repr(C)` so eight records transpose in vector registers into one register per field
/// (`lanes`; the two pairs of counts each fill one 32-bit lane).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub struct Cusum {
    /// Upward and downward statistics, in sigmas.
    pub up: f32,
    pub down: f32,
    /// Weighted sum of the values (in the metric's unit) and sum of the weights since each side last left 0.
    pub up_sum: f32,
    pub down_sum: f32,
    pub up_w: f32,
    pub down_w: f32,
    /// Points since each side left 0, and how many of them pushed it up.
    pub up_n: u16,
    pub up_pushed: u16,
    pub down_n: u16,
    pub down_pushed: u16,
}

impl Cusum {
    /// Larger of the two statistics, in sigmas.
    #[inline]
    pub fn stat(&self) -> f32 {
        self.up.max(self.down)
    }

    /// Adds value `y` with standardised residual `z`; returns the statistic and whether the upward side is the
    /// larger one.
    #[inline]
    pub fn update(&mut self, z: f32, y: f32, p: &CusumParams) -> (f32, bool) {
        if z.is_finite() && y.is_finite() {
            let zc = z.clamp(-p.clip, p.clip);
            self.up = (self.up + zc - p.drift).max(0.0);
            self.down = (self.down - zc - p.drift).max(0.0);
            let (push_up, push_down) = ((zc - p.drift).max(0.0), (-zc - p.drift).max(0.0));
            if self.up > 0.0 {
                self.up_sum += push_up * y;
                self.up_w += push_up;
                self.up_n = self.up_n.saturating_add(1);
                self.up_pushed = self.up_pushed.saturating_add(u16::from(push_up > 0.0));
            } else {
                (self.up_sum, self.up_w, self.up_n, self.up_pushed) = (0.0, 0.0, 0, 0);
            }
            if self.down > 0.0 {
                self.down_sum += push_down * y;
                self.down_w += push_down;
                self.down_n = self.down_n.saturating_add(1);
                self.down_pushed = self.down_pushed.saturating_add(u16::from(push_down > 0.0));
            } else {
                (self.down_sum, self.down_w, self.down_n, self.down_pushed) = (0.0, 0.0, 0, 0);
            }
        }
        (self.stat(), self.up >= self.down)
    }

    /// Whether a side has reached the decision threshold with persistent pushes.
    #[inline]
    pub fn changed(&self, p: &CusumParams) -> bool {
        let persistent = |n: u16, pushed: u16| f32::from(pushed) >= p.persistence * f32::from(n);
        (self.up >= p.threshold && persistent(self.up_n, self.up_pushed))
            || (self.down >= p.threshold && persistent(self.down_n, self.down_pushed))
    }

    /// The level after the change on the larger side: the weighted mean of the values since that side left 0.
    #[inline]
    pub fn new_level(&self) -> Option<f32> {
        let (sum, w) = if self.up >= self.down { (self.up_sum, self.up_w) } else { (self.down_sum, self.down_w) };
        (w > 0.0).then(|| sum / w)
    }

    /// Starts again from 0 (after the caller re-baselined, the old residuals are stale).
    #[inline]
    pub fn reset(&mut self) {
        *self = Cusum::default();
    }
}

/// [`Cusum::update`] of eight series at once, in AVX2 registers, bit for bit what `update` gives point by point.
///
/// The eight records are loaded as eight rows of 32 bytes and transposed into one register per field: the six
/// statistics and sums, and the two pairs of counts (`up_n`, `up_pushed` and `down_n`, `down_pushed`), whose saturating
/// increments are one `vpaddusw` each. Every operation is the scalar one in the same order (no fused multiply-add), and
/// each `min`/`max` the instruction whose operand order gives what `clamp` and `max(0.0)` give there (a test compares
/// the bits).
#[cfg(target_arch = "x86_64")]
pub(crate) mod lanes {
    use std::arch::x86_64::*;

    use super::{Cusum, CusumParams};
    pub(crate) use crate::detect::seasonal::Avx2;
    use crate::detect::seasonal::transpose8;

    pub const LANES: usize = 8;

    const _: () = assert!(size_of::<Cusum>() == 32 && align_of::<Cusum>() <= 32);

    /// For each lane `l`: `cusums[at[l]].update(z[l], y[l], p)`, its statistic into `stats[l]`. The eight slots must
    /// differ (no series repeats within a round); debug builds check it, and without it the results are not those of
    /// `update`, but no memory outside the eight records is touched.
    ///
    /// # Panics
    /// If a slot is out of bounds.
    #[inline]
    pub fn update8(
        _: Avx2,
        cusums: &mut [Cusum],
        at: &[u32; LANES],
        z: &[f32; LANES],
        y: &[f32; LANES],
        p: &CusumParams,
        stats: &mut [f32; LANES],
    ) {
        for l in 0..LANES {
            assert!((at[l] as usize) < cusums.len(), "CUSUM {} of {}", at[l], cusums.len());
            debug_assert!(!at[..l].contains(&at[l]), "eight different series");
        }
        // SAFETY: an `Avx2` exists only where the CPU has AVX2; the slots are in bounds (checked above).
        unsafe { update8_avx2(cusums, at, z, y, p, stats) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn update8_avx2(
        cusums: &mut [Cusum],
        at: &[u32; LANES],
        z: &[f32; LANES],
        y: &[f32; LANES],
        p: &CusumParams,
        stats: &mut [f32; LANES],
    ) {
        let base = cusums.as_mut_ptr();
        // SAFETY (every access below): `at[l]` is in bounds (the caller checked); each record is read, then written,
        // through its own pointer, 32 bytes.
        let row = |l: usize| unsafe { base.add(at[l] as usize).cast::<f32>() };
        let mut rows = [_mm256_setzero_ps(); LANES];
        for (l, r) in rows.iter_mut().enumerate() {
            *r = unsafe { _mm256_loadu_ps(row(l)) };
        }
        transpose8(&mut rows);
        let [up0, down0, up_sum, down_sum, up_w, down_w, up_counts, down_counts] = rows;
        let (z, y) = unsafe { (_mm256_loadu_ps(z.as_ptr()), _mm256_loadu_ps(y.as_ptr())) };
        let zero = _mm256_setzero_ps();
        let finite = |v: __m256| {
            // |v| < ∞: false for ±∞ and NaN.
            let abs = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
            _mm256_cmp_ps::<_CMP_LT_OQ>(abs, _mm256_set1_ps(f32::INFINITY))
        };
        let live = _mm256_and_ps(finite(z), finite(y));
        let drift = _mm256_set1_ps(p.drift);
        // `z.clamp(-clip, clip)` of a finite `z`: raised to −clip, then lowered to clip.
        let zc = _mm256_min_ps(_mm256_max_ps(z, _mm256_set1_ps(-p.clip)), _mm256_set1_ps(p.clip));
        let up = _mm256_max_ps(_mm256_sub_ps(_mm256_add_ps(up0, zc), drift), zero);
        let down = _mm256_max_ps(_mm256_sub_ps(_mm256_sub_ps(down0, zc), drift), zero);
        let push_up = _mm256_max_ps(_mm256_sub_ps(zc, drift), zero);
        let push_down = _mm256_max_ps(_mm256_sub_ps(_mm256_xor_ps(zc, _mm256_set1_ps(-0.0)), drift), zero);
        // One side: while it is above 0 its sums grow and its counts count (saturating at `u16::MAX`), else all
        // four restart at 0.
        let side = |stat: __m256, sum: __m256, w: __m256, counts: __m256, push: __m256| {
            let on = _mm256_cmp_ps::<_CMP_GT_OQ>(stat, zero);
            let sum = _mm256_and_ps(on, _mm256_add_ps(sum, _mm256_mul_ps(push, y)));
            let w = _mm256_and_ps(on, _mm256_add_ps(w, push));
            // Low half of each lane: the count (+1); high half: the pushes (+1 where `push > 0`).
            let pushed = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(push, zero));
            let inc = _mm256_or_si256(_mm256_set1_epi32(1), _mm256_and_si256(pushed, _mm256_set1_epi32(1 << 16)));
            let counts = _mm256_and_ps(on, _mm256_castsi256_ps(_mm256_adds_epu16(_mm256_castps_si256(counts), inc)));
            (sum, w, counts)
        };
        let (up_sum2, up_w2, up_counts2) = side(up, up_sum, up_w, up_counts, push_up);
        let (down_sum2, down_w2, down_counts2) = side(down, down_sum, down_w, down_counts, push_down);
        // A lane whose value or residual is not finite keeps its record.
        let keep = |new: __m256, old: __m256| _mm256_blendv_ps(old, new, live);
        let up = keep(up, up0);
        let down = keep(down, down0);
        let mut rows = [
            up,
            down,
            keep(up_sum2, up_sum),
            keep(down_sum2, down_sum),
            keep(up_w2, up_w),
            keep(down_w2, down_w),
            keep(up_counts2, up_counts),
            keep(down_counts2, down_counts),
        ];
        // `stat`: `up.max(down)`.
        unsafe { _mm256_storeu_ps(stats.as_mut_ptr(), _mm256_max_ps(up, down)) };
        transpose8(&mut rows);
        for (l, r) in rows.iter().enumerate() {
            unsafe { _mm256_storeu_ps(row(l), *r) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: CusumParams = CusumParams { drift: 0.5, threshold: 20.0, clip: 4.0, persistence: 0.5 };

    /// Every bit of a record.
    #[cfg(target_arch = "x86_64")]
    fn bits(c: &Cusum) -> ([u32; 6], [u16; 4]) {
        (
            [c.up, c.down, c.up_sum, c.down_sum, c.up_w, c.down_w].map(f32::to_bits),
            [c.up_n, c.up_pushed, c.down_n, c.down_pushed],
        )
    }

    #[cfg(target_arch = "x86_64")]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Eight series updated in vector lanes give, bit for bit, the statistics and records `update` gives point by
        /// point: residuals at the drift and the clip exactly, ±0, large, infinite and NaN (the record stays), values
        /// infinite and NaN too, sides that sit at 0, grow and restart, and counts at their saturation.
        #[test]
        fn lanes_update_bit_for_bit_what_points_update_one_by_one(
            seed in 0u64..u64::MAX,
            series in 8usize..40,
            rounds in 1usize..80,
        ) {
            let Some(token) = lanes::Avx2::get() else {
                println!("skipped: no AVX2 here (or FAULTLINE_KERNELS=scalar), so the lanes never run");
                return Ok(());
            };
            let mut next = crate::detect::xorshift(seed | 1);
            let mut unit = move || (next() >> 11) as f32 / (1u64 << 53) as f32;
            let mut one: Vec<Cusum> = (0..series)
                .map(|k| {
                    let mut c = Cusum::default();
                    if k % 5 == 1 {
                        // Counts at their saturation, and one short of it.
                        (c.up, c.down, c.up_n, c.up_pushed) = (3.0, 1.0, u16::MAX - (k % 2) as u16, u16::MAX);
                        (c.down_n, c.down_pushed) = (u16::MAX, u16::MAX - 1);
                    }
                    c
                })
                .collect();
            let mut in_lanes = one.clone();
            for _ in 0..rounds {
                let mut at = [0u32; lanes::LANES];
                for l in 0..lanes::LANES {
                    let mut k = (unit() * series as f32) as u32 % series as u32;
                    while at[..l].contains(&k) {
                        k = (k + 1) % series as u32;
                    }
                    at[l] = k;
                }
                let (mut z, mut y) = ([0f32; lanes::LANES], [0f32; lanes::LANES]);
                for l in 0..lanes::LANES {
                    z[l] = match (unit() * 16.0) as u32 {
                        0 => P.drift,
                        1 => -P.drift,
                        2 => P.clip,
                        3 => -P.clip,
                        4 => 0.0,
                        5 => -0.0,
                        6 => 1e9 * (unit() - 0.5),
                        7 => [f32::INFINITY, f32::NEG_INFINITY, f32::NAN][(unit() * 3.0) as usize % 3],
                        8..=10 => 1.0 + unit(),
                        _ => 6.0 * (unit() - 0.5),
                    };
                    y[l] = match (unit() * 20.0) as u32 {
                        0 => f32::NAN,
                        1 => f32::INFINITY,
                        2 => 0.0,
                        _ => 1000.0 * (unit() - 0.3),
                    };
                }
                let mut stats = [0f32; lanes::LANES];
                lanes::update8(token, &mut in_lanes, &at, &z, &y, &P, &mut stats);
                for l in 0..lanes::LANES {
                    let (want, _) = one[at[l] as usize].update(z[l], y[l], &P);
                    proptest::prop_assert_eq!(stats[l].to_bits(), want.to_bits(), "lane {}: z {} y {}", l, z[l], y[l]);
                }
                for (k, (a, b)) in one.iter().zip(&in_lanes).enumerate() {
                    proptest::prop_assert_eq!(bits(a), bits(b), "series {}", k);
                }
            }
        }
    }

    #[test]
    fn noise_stays_below_the_threshold() {
        let mut c = Cusum::default();
        for i in 0..10_000 {
            // Deterministic residuals in [-1.5, 1.5): mean 0.
            let z = ((i * 7919) % 3000) as f32 / 1000.0 - 1.5;
            c.update(z, 10.0 + z, &P);
            assert!(!c.changed(&P), "point {i}: {}", c.stat());
        }
    }

    #[test]
    fn a_shift_is_found_with_its_new_level() {
        let mut c = Cusum::default();
        for _ in 0..100 {
            c.update(0.0, 10.0, &P);
        }
        // The level moves from 10 to 13 (3 sigmas): each point adds 3 − 0.5.
        let mut points = 0;
        while !c.changed(&P) {
            let (_, up) = c.update(3.0, 13.0, &P);
            assert!(up);
            points += 1;
        }
        assert_eq!(points, 8, "20 / 2.5 points");
        assert_eq!(c.new_level(), Some(13.0));
        c.reset();
        assert_eq!(c.stat(), 0.0);
    }

    #[test]
    fn intermittent_outliers_are_no_shift() {
        let mut c = Cusum::default();
        // Two +10 sigma points in every 8, the rest at the level: the clipped mean is up by a sigma, but most points
        // do not push.
        for i in 0..400 {
            let z = if i % 8 < 2 { 10.0 } else { 0.0 };
            c.update(z, 100.0 + z, &P);
            assert!(!c.changed(&P), "point {i}: {:?}", c);
        }
        assert!(c.stat() >= P.threshold, "the statistic itself is past the threshold");
    }

    #[test]
    fn one_outlier_cannot_fill_it_and_downward_shifts_count_too() {
        let mut c = Cusum::default();
        c.update(1000.0, 1e6, &P);
        assert_eq!(c.stat(), 3.5, "clipped at 4 sigmas");
        let mut c = Cusum::default();
        for _ in 0..6 {
            let (_, up) = c.update(-4.0, 2.0, &P);
            assert!(!up);
        }
        assert!(c.changed(&P));
        assert_eq!(c.new_level(), Some(2.0));
    }
}
