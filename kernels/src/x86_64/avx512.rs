//! AVX-512 robust kernels: 16 series per step, bit-identical to the scalar oracle [`crate::scalar::robust`].
//!
//! Same step as `avx2.rs`, with mask registers instead of blends: `n == 0` (seed), `n == 1` (unclipped first
//! deviation) and `n >= 8 && |z| >= threshold` (anomalous) are `__mmask16`s. No fused multiply-add; the count
//! converts with `vcvtudq2ps` (round to nearest-even, as `as f32`); `_mm512_max_ps(a, b)` is `a > b ? a : b`, so
//! the operand that may be NaN goes first, which reproduces Rust's `f32::max` and `clamp`.
//!
//! The gathering kernel takes 16 points at a time. A run of consecutive in-bounds slots is loaded and stored like
//! the dense form; other distinct (`vpconflictd`, AVX-512CD), in-bounds slots use hardware gathers and scalar
//! stores (on the Zen 4 this was tuned on, `vscatterdps` was no faster), prefetching 64 points ahead once the state
//! outgrows L2; a block with a repeated or out-of-bounds slot runs the scalar oracle. The last `n % 16` points go
//! through the same gathers in masked lanes when there are at least four of them (a round of a few series would
//! otherwise run point by point), and through the oracle when there are fewer (cheaper than the lanes' set-up).
// Hot path: no IO, no allocation, no logging.

use std::arch::x86_64::*;

use crate::robust::{MAD_TO_SIGMA, RobustParams, RobustSlices, RobustState};
use crate::scalar::{
    self,
    robust::{check_dense, check_gather, robust_update_one},
};

const LANES: usize = 16;

/// Scattered updates prefetch the state of the points this far ahead, once the state is larger than a core's L2
/// cache is likely to hold; below that the prefetches cost more than they save.
const PREFETCH_AHEAD: usize = 64;
const PREFETCH_MIN_SERIES: usize = 1 << 17;

/// Proof that this CPU has AVX-512F and AVX-512CD: only [`Avx512::try_new`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx512(());

impl Avx512 {
    /// CPU features this implementation needs.
    pub const NEEDS: &'static str = "avx512f, avx512cd";

    /// Returns the token if this CPU has AVX-512F and AVX-512CD.
    pub fn try_new() -> Option<Self> {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512cd")).then_some(Avx512(()))
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
        // SAFETY: an `Avx512` exists only if `try_new` found AVX-512F and AVX-512CD on this CPU.
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
        // SAFETY: an `Avx512` exists only if `try_new` found AVX-512F and AVX-512CD on this CPU.
        unsafe { gather(state, slots, x, z, sigma, p) }
    }
}

/// The fewest points of a round's tail (`n % 16`) that take the masked lanes; fewer go through the oracle.
const MASKED_TAIL_MIN: usize = 4;

/// The parameters broadcast to every lane, once per call.
#[derive(Clone, Copy)]
struct Params16 {
    alpha: __m512,
    beta: __m512,
    huber: __m512,
    threshold: __m512,
    anomaly_weight: __m512,
    abs_floor: __m512,
    rel_floor: __m512,
}

impl Params16 {
    #[target_feature(enable = "avx512f")]
    fn new(p: &RobustParams) -> Self {
        Self {
            alpha: _mm512_set1_ps(p.alpha),
            beta: _mm512_set1_ps(p.beta),
            huber: _mm512_set1_ps(p.huber),
            threshold: _mm512_set1_ps(p.threshold),
            anomaly_weight: _mm512_set1_ps(p.anomaly_weight),
            abs_floor: _mm512_set1_ps(p.abs_floor),
            rel_floor: _mm512_set1_ps(p.rel_floor),
        }
    }
}

/// Sixteen series after one step, and the `(z, sigma)` of their points.
struct Step16 {
    level: __m512,
    mad: __m512,
    count: __m512i,
    z: __m512,
    sigma: __m512,
}

/// Writes the state in `st`'s first `slots.len()` lanes back to the series at `slots`, lane `k` to `slots[k]`.
///
/// # Safety
/// Every slot must be below the lengths of `level`, `mad` and `count`, and `slots` at most 16 long.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scatter(state: &mut RobustState, slots: &[u32], st: &Step16) {
    let mut out = [[0u32; LANES]; 3];
    // SAFETY: each row of `out` holds 16 elements; the caller vouches for the slots.
    unsafe {
        _mm512_storeu_ps(out[0].as_mut_ptr().cast(), st.level);
        _mm512_storeu_ps(out[1].as_mut_ptr().cast(), st.mad);
        _mm512_storeu_si512(out[2].as_mut_ptr().cast(), st.count);
        for (k, &j) in slots.iter().enumerate() {
            let j = j as usize;
            *state.level.get_unchecked_mut(j) = f32::from_bits(out[0][k]);
            *state.mad.get_unchecked_mut(j) = f32::from_bits(out[1][k]);
            *state.count.get_unchecked_mut(j) = out[2][k];
        }
    }
}

/// `-v`: flips the sign bit (AVX-512F has no float xor; the integer one is the same bits).
#[inline]
#[target_feature(enable = "avx512f")]
fn neg(v: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN)))
}

/// `floored_sigma`: `(mad * MAD_TO_SIGMA).max(abs_floor).max(rel_floor * level.abs())`.
#[inline]
#[target_feature(enable = "avx512f")]
fn floored_sigma(p: &Params16, level: __m512, mad: __m512) -> __m512 {
    let s = _mm512_max_ps(_mm512_mul_ps(mad, _mm512_set1_ps(MAD_TO_SIGMA)), p.abs_floor);
    _mm512_max_ps(_mm512_mul_ps(p.rel_floor, _mm512_abs_ps(level)), s)
}

/// `robust_update_one` on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn step(p: &Params16, level: __m512, mad: __m512, count: __m512i, x: __m512) -> Step16 {
    let one = _mm512_set1_ps(1.0);
    let fresh = _mm512_cmpeq_epi32_mask(count, _mm512_setzero_si512());
    let second = _mm512_cmpeq_epi32_mask(count, _mm512_set1_epi32(1));
    let seasoned = _mm512_cmpge_epu32_mask(count, _mm512_set1_epi32(8));

    let sigma = floored_sigma(p, level, mad);
    let r = _mm512_sub_ps(x, level);
    let z = _mm512_div_ps(r, sigma);
    let warm = _mm512_div_ps(one, _mm512_add_ps(_mm512_cvtepu32_ps(count), one));
    let a = _mm512_max_ps(warm, p.alpha);
    let b = _mm512_max_ps(warm, p.beta);
    let anomalous = _mm512_mask_cmp_ps_mask::<_CMP_GE_OQ>(seasoned, _mm512_abs_ps(z), p.threshold);
    let a = _mm512_mask_mul_ps(a, anomalous, a, p.anomaly_weight);
    let b = _mm512_mask_mov_ps(b, anomalous, _mm512_setzero_ps());
    let clip = _mm512_mul_ps(p.huber, sigma);
    // r.clamp(-clip, clip): `max_ps(-clip, r)` is `r < -clip ? -clip : r` and passes a NaN `r` through, as clamp does.
    let rc = _mm512_min_ps(clip, _mm512_max_ps(neg(clip), r));
    let dev = _mm512_mask_mov_ps(_mm512_abs_ps(rc), second, _mm512_abs_ps(r));
    let new_level = _mm512_add_ps(level, _mm512_mul_ps(a, rc));
    let new_mad = _mm512_add_ps(mad, _mm512_mul_ps(b, _mm512_sub_ps(dev, mad)));
    // count.saturating_add(1): add one except where the count is already u32::MAX.
    let room = _mm512_cmpneq_epi32_mask(count, _mm512_set1_epi32(-1));
    let new_count = _mm512_mask_add_epi32(count, room, count, _mm512_set1_epi32(1));

    // n == 0: the point seeds the level, the scale starts at zero and the score is zero.
    let sigma0 = floored_sigma(p, x, _mm512_setzero_ps());
    Step16 {
        level: _mm512_mask_mov_ps(new_level, fresh, x),
        mad: _mm512_mask_mov_ps(new_mad, fresh, _mm512_setzero_ps()),
        count: new_count,
        z: _mm512_mask_mov_ps(z, fresh, _mm512_setzero_ps()),
        sigma: _mm512_mask_mov_ps(sigma, fresh, sigma0),
    }
}

#[target_feature(enable = "avx512f")]
fn dense(state: RobustSlices<'_>, x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
    check_dense(&state, x, z, sigma);
    let RobustSlices { level, mad, count } = state;
    let pv = Params16::new(p);
    let n = x.len();
    let body = n - n % LANES;
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 16 <= n` and all six slices hold `n` elements (checked above); loadu/storeu need no alignment.
        unsafe {
            let s = step(
                &pv,
                _mm512_loadu_ps(level.as_ptr().add(i)),
                _mm512_loadu_ps(mad.as_ptr().add(i)),
                _mm512_loadu_si512(count.as_ptr().add(i).cast()),
                _mm512_loadu_ps(x.as_ptr().add(i)),
            );
            _mm512_storeu_ps(level.as_mut_ptr().add(i), s.level);
            _mm512_storeu_ps(mad.as_mut_ptr().add(i), s.mad);
            _mm512_storeu_si512(count.as_mut_ptr().add(i).cast(), s.count);
            _mm512_storeu_ps(z.as_mut_ptr().add(i), s.z);
            _mm512_storeu_ps(sigma.as_mut_ptr().add(i), s.sigma);
        }
        i += LANES;
    }
    for i in body..n {
        (z[i], sigma[i]) = robust_update_one(&mut level[i], &mut mad[i], &mut count[i], x[i], p);
    }
}

/// True if the 16 lanes hold 16 different values.
#[inline]
#[target_feature(enable = "avx512f,avx512cd")]
fn distinct16(s: __m512i) -> bool {
    // Lane k of the conflict vector has a bit for every earlier lane holding the same value.
    let conflicts = _mm512_conflict_epi32(s);
    _mm512_test_epi32_mask(conflicts, conflicts) == 0
}

#[target_feature(enable = "avx512f,avx512cd")]
fn gather(state: &mut RobustState, slots: &[u32], x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
    check_gather(slots, x, z, sigma);
    // Slots the gather may touch: below every array's length, and small enough to be a non-negative i32 offset.
    let limit = state.level.len().min(state.mad.len()).min(state.count.len()).min(1 << 31);
    let prefetch = limit >= PREFETCH_MIN_SERIES;
    let n = x.len();
    let body = n - n % LANES;
    let limit_v = _mm512_set1_epi32(limit as u32 as i32);
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let pv = Params16::new(p);
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 16 <= n == slots.len()`.
        let s = unsafe { _mm512_loadu_si512(slots.as_ptr().add(i).cast()) };
        let in_bounds = _mm512_cmplt_epu32_mask(s, limit_v);
        // Slots `s0, s0 + 1, ..., s0 + 15`: series that report in the order they were registered.
        let run = _mm512_add_epi32(_mm512_broadcastd_epi32(_mm512_castsi512_si128(s)), iota);
        if in_bounds != 0xffff {
            // A slot out of bounds: the oracle applies the points before it, then panics.
            let b = i..i + LANES;
            scalar::robust_update_gather(state, &slots[b.clone()], &x[b.clone()], &mut z[b.clone()], &mut sigma[b], p);
        } else if _mm512_cmpeq_epi32_mask(s, run) == 0xffff {
            let j = slots[i] as usize;
            // SAFETY: the 16 lanes are `j..j + 16`, all below `limit`, so the contiguous state accesses are in
            // bounds; `i + 16 <= n` bounds `x`, `z` and `sigma`.
            unsafe {
                let st = step(
                    &pv,
                    _mm512_loadu_ps(state.level.as_ptr().add(j)),
                    _mm512_loadu_ps(state.mad.as_ptr().add(j)),
                    _mm512_loadu_si512(state.count.as_ptr().add(j).cast()),
                    _mm512_loadu_ps(x.as_ptr().add(i)),
                );
                _mm512_storeu_ps(state.level.as_mut_ptr().add(j), st.level);
                _mm512_storeu_ps(state.mad.as_mut_ptr().add(j), st.mad);
                _mm512_storeu_si512(state.count.as_mut_ptr().add(j).cast(), st.count);
                _mm512_storeu_ps(z.as_mut_ptr().add(i), st.z);
                _mm512_storeu_ps(sigma.as_mut_ptr().add(i), st.sigma);
            }
        } else if distinct16(s) {
            if prefetch && i + PREFETCH_AHEAD + LANES <= n {
                for &j in &slots[i + PREFETCH_AHEAD..i + PREFETCH_AHEAD + LANES] {
                    let j = j as usize;
                    // `wrapping_add`: a prefetch does not fault, so a slot out of bounds only wastes it.
                    _mm_prefetch::<_MM_HINT_T0>(state.level.as_ptr().wrapping_add(j).cast());
                    _mm_prefetch::<_MM_HINT_T0>(state.mad.as_ptr().wrapping_add(j).cast());
                    _mm_prefetch::<_MM_HINT_T0>(state.count.as_ptr().wrapping_add(j).cast());
                }
            }
            // SAFETY: every lane of `s` is below `limit`, so each gathered element and each scalar store is inside
            // `level`, `mad` and `count`, and `limit <= 2^31` keeps the i32 offsets non-negative; `i + 16 <= n`
            // bounds the contiguous `x`, `z` and `sigma` accesses. The slots are distinct, so the order of the stores
            // does not matter.
            unsafe {
                let st = step(
                    &pv,
                    _mm512_i32gather_ps::<4>(s, state.level.as_ptr()),
                    _mm512_i32gather_ps::<4>(s, state.mad.as_ptr()),
                    _mm512_i32gather_epi32::<4>(s, state.count.as_ptr().cast()),
                    _mm512_loadu_ps(x.as_ptr().add(i)),
                );
                _mm512_storeu_ps(z.as_mut_ptr().add(i), st.z);
                _mm512_storeu_ps(sigma.as_mut_ptr().add(i), st.sigma);
                scatter(state, slots.get_unchecked(i..i + LANES), &st);
            }
        } else {
            // A repeated slot: later points must see earlier updates.
            let b = i..i + LANES;
            scalar::robust_update_gather(state, &slots[b.clone()], &x[b.clone()], &mut z[b.clone()], &mut sigma[b], p);
        }
        i += LANES;
    }
    // The last `n % 16` points in masked lanes: a round of 4 to 15 series (as NAB's, where files end) would otherwise
    // go point by point. The masked-off lanes read and write nothing.
    let rest = n - body;
    if rest == 0 {
        return;
    }
    if rest < MASKED_TAIL_MIN {
        // A few points: the oracle costs less than the masked lanes' conflict check and gathers.
        scalar::robust_update_gather(state, &slots[body..], &x[body..], &mut z[body..], &mut sigma[body..], p);
        return;
    }
    let mask = ((1u32 << rest) - 1) as __mmask16;
    // SAFETY: the masked load reads `slots[body..n]` only.
    let s = unsafe { _mm512_maskz_loadu_epi32(mask, slots.as_ptr().add(body).cast()) };
    // Lane k of the conflict vector has a bit for every earlier lane with the same slot; only active lanes count.
    let conflicts = _mm512_and_si512(_mm512_maskz_conflict_epi32(mask, s), _mm512_set1_epi32(i32::from(mask)));
    if _mm512_mask_cmplt_epu32_mask(mask, s, limit_v) != mask || _mm512_test_epi32_mask(conflicts, conflicts) != 0 {
        // A slot out of bounds (the oracle applies the points before it, then panics) or a repeated slot.
        scalar::robust_update_gather(state, &slots[body..], &x[body..], &mut z[body..], &mut sigma[body..], p);
        return;
    }
    // SAFETY: every active lane's slot is below `limit`, so each gathered element and each scalar store is inside
    // `level`, `mad` and `count`, and `limit <= 2^31` keeps the i32 offsets non-negative; the masked loads and stores
    // touch `x`, `z` and `sigma` at `body..n` only. The slots are distinct, so the order of the stores does not matter.
    unsafe {
        let st = step(
            &pv,
            _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, s, state.level.as_ptr()),
            _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, s, state.mad.as_ptr()),
            _mm512_mask_i32gather_epi32::<4>(_mm512_setzero_si512(), mask, s, state.count.as_ptr().cast()),
            _mm512_maskz_loadu_ps(mask, x.as_ptr().add(body)),
        );
        _mm512_mask_storeu_ps(z.as_mut_ptr().add(body), mask, st.z);
        _mm512_mask_storeu_ps(sigma.as_mut_ptr().add(body), mask, st.sigma);
        scatter(state, slots.get_unchecked(body..n), &st);
    }
}
