//! AVX2 robust kernels: 8 series per step, bit-identical to the scalar oracle [`crate::scalar::robust`].
//!
//! The step follows `robust_update_one` operation by operation. Branches become lane masks: `n == 0` (seed),
//! `n == 1` (unclipped first deviation), `n >= 8 && |z| >= threshold` (anomalous). No fused multiply-add is used (it
//! would round differently), the `u32 -> f32` conversion of the count is exact-then-rounded-once like `as f32`, and
//! every max/min takes its operands in the order that reproduces Rust's `f32::max`/`clamp`, NaN included:
//! `_mm256_max_ps(a, b)` is `a > b ? a : b`, so the operand that may be NaN goes first.
//!
//! The gathering kernel takes 8 points at a time. A run of consecutive in-bounds slots (series reporting in the
//! order they were registered) is loaded and stored like the dense form; other distinct, in-bounds slots are
//! assembled with 8 scalar loads per array and written back with scalar stores (on the Zen 4 this was tuned on,
//! that beat `vgatherdps`; AVX2 has no scatter), prefetching 64 points ahead once the state outgrows L2; a block
//! with a repeated or out-of-bounds slot runs the scalar oracle, so later points still see earlier updates and a
//! bad slot panics where the oracle would. See `benches/benches/kernels.rs` for what each case gains over scalar.
// Hot path: no IO, no allocation, no logging.

use std::arch::x86_64::*;

use crate::robust::{MAD_TO_SIGMA, RobustParams, RobustSlices, RobustState};
use crate::scalar::{
    self,
    robust::{check_dense, check_gather, robust_update_one},
};

const LANES: usize = 8;

/// Scattered updates prefetch the state of the points this far ahead, once the state is larger than a core's L2
/// cache is likely to hold; below that the prefetches cost more than they save.
const PREFETCH_AHEAD: usize = 64;
const PREFETCH_MIN_SERIES: usize = 1 << 17;

/// Proof that this CPU has AVX2: only [`Avx2::try_new`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx2(());

impl Avx2 {
    /// CPU features this implementation needs.
    pub const NEEDS: &'static str = "avx2";

    /// Returns the token if this CPU has AVX2.
    pub fn try_new() -> Option<Self> {
        is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }

    /// See [`crate::Kernels::robust_update_dense`].
    #[inline]
    pub fn robust_update_dense(
        self,
        state: RobustSlices<'_>,
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        p: &RobustParams,
    ) {
        // SAFETY: an `Avx2` exists only if `try_new` found AVX2 on this CPU.
        unsafe { dense(state, x, z, sigma, p) }
    }

    /// See [`crate::Kernels::robust_update_gather`].
    #[inline]
    pub fn robust_update_gather(
        self,
        state: &mut RobustState,
        slots: &[u32],
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        p: &RobustParams,
    ) {
        // SAFETY: an `Avx2` exists only if `try_new` found AVX2 on this CPU.
        unsafe { gather(state, slots, x, z, sigma, p) }
    }
}

/// The parameters broadcast to every lane, once per call.
#[derive(Clone, Copy)]
struct Params8 {
    alpha: __m256,
    beta: __m256,
    huber: __m256,
    threshold: __m256,
    anomaly_weight: __m256,
    abs_floor: __m256,
    rel_floor: __m256,
}

impl Params8 {
    #[target_feature(enable = "avx2")]
    fn new(p: &RobustParams) -> Self {
        Self {
            alpha: _mm256_set1_ps(p.alpha),
            beta: _mm256_set1_ps(p.beta),
            huber: _mm256_set1_ps(p.huber),
            threshold: _mm256_set1_ps(p.threshold),
            anomaly_weight: _mm256_set1_ps(p.anomaly_weight),
            abs_floor: _mm256_set1_ps(p.abs_floor),
            rel_floor: _mm256_set1_ps(p.rel_floor),
        }
    }
}

/// Eight series after one step, and the `(z, sigma)` of their points.
struct Step8 {
    level: __m256,
    mad: __m256,
    count: __m256i,
    z: __m256,
    sigma: __m256,
}

#[inline]
#[target_feature(enable = "avx2")]
fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

#[inline]
#[target_feature(enable = "avx2")]
fn neg(v: __m256) -> __m256 {
    _mm256_xor_ps(_mm256_set1_ps(-0.0), v)
}

/// `n as f32` for unsigned lanes, rounded once as Rust rounds it: both 16-bit halves convert exactly, the high half
/// times 2^16 is exact, and the sum rounds once to nearest-even.
#[inline]
#[target_feature(enable = "avx2")]
fn u32_to_f32(n: __m256i) -> __m256 {
    let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32::<16>(n));
    let lo = _mm256_cvtepi32_ps(_mm256_and_si256(n, _mm256_set1_epi32(0xffff)));
    _mm256_add_ps(_mm256_mul_ps(hi, _mm256_set1_ps(65536.0)), lo)
}

/// `floored_sigma`: `(mad * MAD_TO_SIGMA).max(abs_floor).max(rel_floor * level.abs())`.
#[inline]
#[target_feature(enable = "avx2")]
fn floored_sigma(p: &Params8, level: __m256, mad: __m256) -> __m256 {
    let s = _mm256_max_ps(_mm256_mul_ps(mad, _mm256_set1_ps(MAD_TO_SIGMA)), p.abs_floor);
    _mm256_max_ps(_mm256_mul_ps(p.rel_floor, abs(level)), s)
}

/// `robust_update_one` on 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn step(p: &Params8, level: __m256, mad: __m256, count: __m256i, x: __m256) -> Step8 {
    let one = _mm256_set1_ps(1.0);
    let fresh = _mm256_castsi256_ps(_mm256_cmpeq_epi32(count, _mm256_setzero_si256()));
    let second = _mm256_castsi256_ps(_mm256_cmpeq_epi32(count, _mm256_set1_epi32(1)));
    let eight = _mm256_set1_epi32(8);
    let seasoned = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_max_epu32(count, eight), count));

    let sigma = floored_sigma(p, level, mad);
    let r = _mm256_sub_ps(x, level);
    let z = _mm256_div_ps(r, sigma);
    let warm = _mm256_div_ps(one, _mm256_add_ps(u32_to_f32(count), one));
    let a = _mm256_max_ps(warm, p.alpha);
    let b = _mm256_max_ps(warm, p.beta);
    let anomalous = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(abs(z), p.threshold), seasoned);
    let a = _mm256_blendv_ps(a, _mm256_mul_ps(a, p.anomaly_weight), anomalous);
    let b = _mm256_andnot_ps(anomalous, b);
    let clip = _mm256_mul_ps(p.huber, sigma);
    // r.clamp(-clip, clip): `max_ps(-clip, r)` is `r < -clip ? -clip : r` and passes a NaN `r` through, as clamp does.
    let rc = _mm256_min_ps(clip, _mm256_max_ps(neg(clip), r));
    let dev = _mm256_blendv_ps(abs(rc), abs(r), second);
    let new_level = _mm256_add_ps(level, _mm256_mul_ps(a, rc));
    let new_mad = _mm256_add_ps(mad, _mm256_mul_ps(b, _mm256_sub_ps(dev, mad)));
    // count.saturating_add(1): add one, then take it back where the count was already u32::MAX (the mask is -1).
    let saturated = _mm256_cmpeq_epi32(count, _mm256_set1_epi32(-1));
    let new_count = _mm256_add_epi32(_mm256_add_epi32(count, _mm256_set1_epi32(1)), saturated);

    // n == 0: the point seeds the level, the scale starts at zero and the score is zero.
    let sigma0 = floored_sigma(p, x, _mm256_setzero_ps());
    Step8 {
        level: _mm256_blendv_ps(new_level, x, fresh),
        mad: _mm256_andnot_ps(fresh, new_mad),
        count: new_count,
        z: _mm256_andnot_ps(fresh, z),
        sigma: _mm256_blendv_ps(sigma, sigma0, fresh),
    }
}

#[target_feature(enable = "avx2")]
fn dense(state: RobustSlices<'_>, x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
    check_dense(&state, x, z, sigma);
    let RobustSlices { level, mad, count } = state;
    let pv = Params8::new(p);
    let n = x.len();
    let body = n - n % LANES;
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 8 <= n` and all six slices hold `n` elements (checked above); loadu/storeu need no alignment.
        unsafe {
            let s = step(
                &pv,
                _mm256_loadu_ps(level.as_ptr().add(i)),
                _mm256_loadu_ps(mad.as_ptr().add(i)),
                _mm256_loadu_si256(count.as_ptr().add(i).cast()),
                _mm256_loadu_ps(x.as_ptr().add(i)),
            );
            _mm256_storeu_ps(level.as_mut_ptr().add(i), s.level);
            _mm256_storeu_ps(mad.as_mut_ptr().add(i), s.mad);
            _mm256_storeu_si256(count.as_mut_ptr().add(i).cast(), s.count);
            _mm256_storeu_ps(z.as_mut_ptr().add(i), s.z);
            _mm256_storeu_ps(sigma.as_mut_ptr().add(i), s.sigma);
        }
        i += LANES;
    }
    for i in body..n {
        (z[i], sigma[i]) = robust_update_one(&mut level[i], &mut mad[i], &mut count[i], x[i], p);
    }
}

/// True if the 8 lanes hold 8 different values: each lane is compared with the lanes 1, 2, 3 and 4 places on
/// (rotating), which covers every pair.
#[inline]
#[target_feature(enable = "avx2")]
fn distinct8(s: __m256i) -> bool {
    let r1 = _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0));
    let r2 = _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(2, 3, 4, 5, 6, 7, 0, 1));
    let r3 = _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(3, 4, 5, 6, 7, 0, 1, 2));
    let r4 = _mm256_permute2x128_si256::<0x01>(s, s);
    let eq = _mm256_or_si256(
        _mm256_or_si256(_mm256_cmpeq_epi32(s, r1), _mm256_cmpeq_epi32(s, r2)),
        _mm256_or_si256(_mm256_cmpeq_epi32(s, r3), _mm256_cmpeq_epi32(s, r4)),
    );
    _mm256_testz_si256(eq, eq) == 1
}

#[target_feature(enable = "avx2")]
fn gather(state: &mut RobustState, slots: &[u32], x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
    check_gather(slots, x, z, sigma);
    // Slots the SIMD path may touch: below every array's length (and below 2^31, so that the unsigned compare on
    // i32 lanes is exact).
    let limit = state.level.len().min(state.mad.len()).min(state.count.len()).min(1 << 31);
    let prefetch = limit >= PREFETCH_MIN_SERIES;
    let n = x.len();
    let body = if limit == 0 { 0 } else { n - n % LANES };
    let last = _mm256_set1_epi32(limit.saturating_sub(1) as u32 as i32);
    let pv = Params8::new(p);
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 8 <= n == slots.len()`.
        let s = unsafe { _mm256_loadu_si256(slots.as_ptr().add(i).cast()) };
        let in_bounds = _mm256_cmpeq_epi32(_mm256_max_epu32(s, last), last);
        // Slots `s0, s0 + 1, ..., s0 + 7`: series that report in the order they were registered.
        let run = _mm256_add_epi32(_mm256_broadcastd_epi32(_mm256_castsi256_si128(s)), iota);
        let all = _mm256_set1_epi32(-1);
        if _mm256_testc_si256(in_bounds, all) == 0 {
            // A slot out of bounds: the oracle applies the points before it, then panics.
            let b = i..i + LANES;
            scalar::robust_update_gather(state, &slots[b.clone()], &x[b.clone()], &mut z[b.clone()], &mut sigma[b], p);
        } else if _mm256_testc_si256(_mm256_cmpeq_epi32(s, run), all) == 1 {
            let j = slots[i] as usize;
            // SAFETY: the 8 lanes are `j..j + 8`, all below `limit`, so the contiguous state accesses are in bounds;
            // `i + 8 <= n` bounds `x`, `z` and `sigma`.
            unsafe {
                let st = step(
                    &pv,
                    _mm256_loadu_ps(state.level.as_ptr().add(j)),
                    _mm256_loadu_ps(state.mad.as_ptr().add(j)),
                    _mm256_loadu_si256(state.count.as_ptr().add(j).cast()),
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                );
                _mm256_storeu_ps(state.level.as_mut_ptr().add(j), st.level);
                _mm256_storeu_ps(state.mad.as_mut_ptr().add(j), st.mad);
                _mm256_storeu_si256(state.count.as_mut_ptr().add(j).cast(), st.count);
                _mm256_storeu_ps(z.as_mut_ptr().add(i), st.z);
                _mm256_storeu_ps(sigma.as_mut_ptr().add(i), st.sigma);
            }
        } else if distinct8(s) {
            if prefetch && i + PREFETCH_AHEAD + LANES <= n {
                for &j in &slots[i + PREFETCH_AHEAD..i + PREFETCH_AHEAD + LANES] {
                    let j = j as usize;
                    // `wrapping_add`: a prefetch does not fault, so a slot out of bounds only wastes it.
                    _mm_prefetch::<_MM_HINT_T0>(state.level.as_ptr().wrapping_add(j).cast());
                    _mm_prefetch::<_MM_HINT_T0>(state.mad.as_ptr().wrapping_add(j).cast());
                    _mm_prefetch::<_MM_HINT_T0>(state.count.as_ptr().wrapping_add(j).cast());
                }
            }
            let mut out = [[0u32; LANES]; 3];
            // SAFETY: every lane of `s` (the 8 slots of `block`) is below `limit`, so each load and store of a state
            // element is in bounds; `i + 8 <= n` bounds the contiguous `x`, `z` and `sigma` accesses; `out` rows
            // hold 8 elements. The slots are distinct, so the order of the stores does not matter.
            unsafe {
                let block = slots.get_unchecked(i..i + LANES);
                let (level, mad, count) = (&state.level, &state.mad, &state.count);
                let l = |k: usize| *level.get_unchecked(block[k] as usize);
                let m = |k: usize| *mad.get_unchecked(block[k] as usize);
                let c = |k: usize| *count.get_unchecked(block[k] as usize) as i32;
                let st = step(
                    &pv,
                    _mm256_setr_ps(l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7)),
                    _mm256_setr_ps(m(0), m(1), m(2), m(3), m(4), m(5), m(6), m(7)),
                    _mm256_setr_epi32(c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)),
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                );
                _mm256_storeu_ps(z.as_mut_ptr().add(i), st.z);
                _mm256_storeu_ps(sigma.as_mut_ptr().add(i), st.sigma);
                _mm256_storeu_ps(out[0].as_mut_ptr().cast(), st.level);
                _mm256_storeu_ps(out[1].as_mut_ptr().cast(), st.mad);
                _mm256_storeu_si256(out[2].as_mut_ptr().cast(), st.count);
                for (k, &j) in block.iter().enumerate() {
                    let j = j as usize;
                    *state.level.get_unchecked_mut(j) = f32::from_bits(out[0][k]);
                    *state.mad.get_unchecked_mut(j) = f32::from_bits(out[1][k]);
                    *state.count.get_unchecked_mut(j) = out[2][k];
                }
            }
        } else {
            // A repeated slot: later points must see earlier updates.
            let b = i..i + LANES;
            scalar::robust_update_gather(state, &slots[b.clone()], &x[b.clone()], &mut z[b.clone()], &mut sigma[b], p);
        }
        i += LANES;
    }
    scalar::robust_update_gather(state, &slots[body..], &x[body..], &mut z[body..], &mut sigma[body..], p);
}
