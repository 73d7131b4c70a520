//! NEON robust kernels: 4 series per step, bit-identical to the scalar oracle [`crate::scalar::robust`].
//!
//! Kept deliberately plain: the step is `robust_update_one` with branches turned into lane masks and `vbslq`
//! selects, no fused multiply-add, `vmaxnmq` for `f32::max` (both are IEEE maxNum, which is what Rust compiles
//! `max` to on aarch64), `clamp` spelled out as std writes it, `vcvtq_f32_u32` (round to nearest-even, as
//! `as f32`) and `vqaddq_u32` for `saturating_add`. The gathering kernel assembles 4 lanes with ordinary
//! bounds-checked loads when their slots are distinct and runs the scalar oracle otherwise (NEON has no gather).
//!
//! The machines that build this project are x86_64, so the intrinsics come through `super::arch` and
//! `target_feature` applies on aarch64 only: there `neon_model.rs` compiles this file against a lane-exact software
//! model of the intrinsics and checks it against the oracle.
// Hot path: no IO, no allocation, no logging.

use super::arch::*;

use crate::robust::{MAD_TO_SIGMA, RobustParams, RobustSlices, RobustState};
use crate::scalar::{
    self,
    robust::{check_dense, check_gather, robust_update_one},
};

const LANES: usize = 4;

/// Proof that this CPU has NEON: only [`Neon::try_new`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neon(());

impl Neon {
    /// CPU features this implementation needs.
    pub const NEEDS: &'static str = "neon";

    /// Returns the token if this CPU has NEON (every aarch64 Linux CPU does).
    pub fn try_new() -> Option<Self> {
        neon_detected().then_some(Neon(()))
    }

    /// See [`crate::Kernels::robust_update_dense`].
    #[inline]
    #[allow(unused_unsafe)] // NEON is in the aarch64 baseline, so some toolchains deem the call safe.
    pub fn robust_update_dense(
        self,
        state: RobustSlices<'_>,
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        p: &RobustParams,
    ) {
        // SAFETY: a `Neon` exists only if `try_new` found NEON on this CPU.
        unsafe { dense(state, x, z, sigma, p) }
    }

    /// See [`crate::Kernels::robust_update_gather`].
    #[inline]
    #[allow(unused_unsafe)] // NEON is in the aarch64 baseline, so some toolchains deem the call safe.
    pub fn robust_update_gather(
        self,
        state: &mut RobustState,
        slots: &[u32],
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        p: &RobustParams,
    ) {
        // SAFETY: a `Neon` exists only if `try_new` found NEON on this CPU.
        unsafe { gather(state, slots, x, z, sigma, p) }
    }
}

/// Four series after one step, and the `(z, sigma)` of their points.
struct Step4 {
    level: [f32; LANES],
    mad: [f32; LANES],
    count: [u32; LANES],
    z: [f32; LANES],
    sigma: [f32; LANES],
}

/// `floored_sigma`: `(mad * MAD_TO_SIGMA).max(abs_floor).max(rel_floor * level.abs())`.
#[inline]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
#[allow(unused_unsafe)]
fn floored_sigma(p: &RobustParams, level: float32x4_t, mad: float32x4_t) -> float32x4_t {
    // SAFETY: pure register arithmetic with NEON enabled on this function. (The block is for toolchains on which
    // these intrinsics are still unsafe.)
    unsafe {
        let s = vmaxnmq_f32(vmulq_f32(mad, vdupq_n_f32(MAD_TO_SIGMA)), vdupq_n_f32(p.abs_floor));
        vmaxnmq_f32(s, vmulq_f32(vdupq_n_f32(p.rel_floor), vabsq_f32(level)))
    }
}

/// `robust_update_one` on 4 lanes, from and to arrays so that callers need no pointer arithmetic.
#[inline]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
#[allow(unused_unsafe)]
fn step(p: &RobustParams, level: &[f32; LANES], mad: &[f32; LANES], count: &[u32; LANES], x: &[f32; LANES]) -> Step4 {
    let mut out = Step4 { level: [0.0; LANES], mad: [0.0; LANES], count: [0; LANES], z: [0.0; LANES], sigma: [0.0; 4] };
    // SAFETY: every pointer is to a 4-element array, which is what `vld1q`/`vst1q` read and write; NEON is enabled
    // on this function. (The block also covers toolchains on which the arithmetic intrinsics are still unsafe.)
    unsafe {
        let (level, mad, count, x) =
            (vld1q_f32(level.as_ptr()), vld1q_f32(mad.as_ptr()), vld1q_u32(count.as_ptr()), vld1q_f32(x.as_ptr()));
        let zero = vdupq_n_f32(0.0);
        let one = vdupq_n_f32(1.0);
        let fresh = vceqq_u32(count, vdupq_n_u32(0));
        let second = vceqq_u32(count, vdupq_n_u32(1));
        let seasoned = vcgeq_u32(count, vdupq_n_u32(8));
        let sigma = floored_sigma(p, level, mad);
        let r = vsubq_f32(x, level);
        let z = vdivq_f32(r, sigma);
        let warm = vdivq_f32(one, vaddq_f32(vcvtq_f32_u32(count), one));
        let a = vmaxnmq_f32(vdupq_n_f32(p.alpha), warm);
        let b = vmaxnmq_f32(vdupq_n_f32(p.beta), warm);
        let anomalous = vandq_u32(vcgeq_f32(vabsq_f32(z), vdupq_n_f32(p.threshold)), seasoned);
        let a = vbslq_f32(anomalous, vmulq_f32(a, vdupq_n_f32(p.anomaly_weight)), a);
        let b = vbslq_f32(anomalous, zero, b);
        let clip = vmulq_f32(vdupq_n_f32(p.huber), sigma);
        let neg_clip = vnegq_f32(clip);
        // r.clamp(-clip, clip), as std writes it: `if r < min { min }`, then `if r > max { max }`.
        let rc = vbslq_f32(vcltq_f32(r, neg_clip), neg_clip, r);
        let rc = vbslq_f32(vcgtq_f32(rc, clip), clip, rc);
        let dev = vbslq_f32(second, vabsq_f32(r), vabsq_f32(rc));
        let new_level = vaddq_f32(level, vmulq_f32(a, rc));
        let new_mad = vaddq_f32(mad, vmulq_f32(b, vsubq_f32(dev, mad)));
        let new_count = vqaddq_u32(count, vdupq_n_u32(1));

        // n == 0: the point seeds the level, the scale starts at zero and the score is zero.
        let sigma0 = floored_sigma(p, x, zero);
        vst1q_f32(out.level.as_mut_ptr(), vbslq_f32(fresh, x, new_level));
        vst1q_f32(out.mad.as_mut_ptr(), vbslq_f32(fresh, zero, new_mad));
        vst1q_u32(out.count.as_mut_ptr(), new_count);
        vst1q_f32(out.z.as_mut_ptr(), vbslq_f32(fresh, zero, z));
        vst1q_f32(out.sigma.as_mut_ptr(), vbslq_f32(fresh, sigma0, sigma));
    }
    out
}

#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
fn dense(state: RobustSlices<'_>, x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
    check_dense(&state, x, z, sigma);
    let RobustSlices { level, mad, count } = state;
    let n = x.len();
    let body = n - n % LANES;
    for i in (0..body).step_by(LANES) {
        let lanes = i..i + LANES;
        let out = step(
            p,
            level[lanes.clone()].try_into().unwrap(),
            mad[lanes.clone()].try_into().unwrap(),
            count[lanes.clone()].try_into().unwrap(),
            x[lanes.clone()].try_into().unwrap(),
        );
        level[lanes.clone()].copy_from_slice(&out.level);
        mad[lanes.clone()].copy_from_slice(&out.mad);
        count[lanes.clone()].copy_from_slice(&out.count);
        z[lanes.clone()].copy_from_slice(&out.z);
        sigma[lanes].copy_from_slice(&out.sigma);
    }
    for i in body..n {
        (z[i], sigma[i]) = robust_update_one(&mut level[i], &mut mad[i], &mut count[i], x[i], p);
    }
}

#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
fn gather(state: &mut RobustState, slots: &[u32], x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
    check_gather(slots, x, z, sigma);
    let n = x.len();
    let body = n - n % LANES;
    for i in (0..body).step_by(LANES) {
        let s = [slots[i] as usize, slots[i + 1] as usize, slots[i + 2] as usize, slots[i + 3] as usize];
        let distinct = s[0] != s[1] && s[0] != s[2] && s[0] != s[3] && s[1] != s[2] && s[1] != s[3] && s[2] != s[3];
        let RobustState { level, mad, count } = &mut *state;
        let in_bounds = s.iter().all(|&j| j < level.len() && j < mad.len() && j < count.len());
        if distinct && in_bounds {
            let out = step(
                p,
                &s.map(|j| level[j]),
                &s.map(|j| mad[j]),
                &s.map(|j| count[j]),
                x[i..i + LANES].try_into().unwrap(),
            );
            for (k, &j) in s.iter().enumerate() {
                level[j] = out.level[k];
                mad[j] = out.mad[k];
                count[j] = out.count[k];
            }
            z[i..i + LANES].copy_from_slice(&out.z);
            sigma[i..i + LANES].copy_from_slice(&out.sigma);
        } else {
            // A repeated slot (later points must see earlier updates) or one out of bounds (the oracle panics).
            let b = i..i + LANES;
            scalar::robust_update_gather(state, &slots[b.clone()], &x[b.clone()], &mut z[b.clone()], &mut sigma[b], p);
        }
    }
    scalar::robust_update_gather(state, &slots[body..], &x[body..], &mut z[body..], &mut sigma[body..], p);
}
