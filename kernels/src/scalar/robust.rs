//! Scalar robust level/scale update and z-score.
// Hot path: no IO, no allocation, no logging.

use crate::robust::{RobustParams, RobustSlices, RobustState, floored_sigma};

/// Updates one series' model with `x` and returns `(z, sigma)`: the z-score of `x` against the model before the
/// update and the sigma it used (so `x - z * sigma` is the expected value).
///
/// Warm-up: while fewer than `1 / alpha` points have been seen the level and scale are running means, so a new
/// series converges in a few points instead of `1 / alpha`. Anomalous points (|z| ≥ threshold) move the level with
/// `anomaly_weight` times the normal weight and leave the scale alone, and every residual is clipped at `huber`
/// sigmas: an outage cannot drag the baseline along with it.
#[inline(always)]
pub fn robust_update_one(level: &mut f32, mad: &mut f32, count: &mut u32, x: f32, p: &RobustParams) -> (f32, f32) {
    let n = *count;
    if n == 0 {
        *level = x;
        *mad = 0.0;
        *count = 1;
        return (0.0, floored_sigma(x, 0.0, p));
    }
    let sigma = floored_sigma(*level, *mad, p);
    let r = x - *level;
    let z = r / sigma;
    let warm = 1.0 / (n as f32 + 1.0);
    let mut a = p.alpha.max(warm);
    let mut b = p.beta.max(warm);
    // During warm-up (n small) the scale is still unreliable, so no point is down-weighted yet.
    // Scale is frozen on anomalous points: an inflating scale is how an outage would teach the model it is normal.
    if z.abs() >= p.threshold && n >= 8 {
        a *= p.anomaly_weight;
        b = 0.0;
    }
    let clip = p.huber * sigma;
    let rc = r.clamp(-clip, clip);
    // The first deviation seeds the scale unclipped: with mad = 0 the floor would clip it to nothing.
    let dev = if n == 1 { r.abs() } else { rc.abs() };
    *level += a * rc;
    *mad += b * (dev - *mad);
    *count = n.saturating_add(1);
    (z, sigma)
}

/// Gathering form over a struct-of-arrays state: `z[i]` and `sigma[i]` are the z-score of `x[i]` for slot
/// `slots[i]` and the sigma it was measured against.
pub fn robust_update_gather(
    state: &mut RobustState,
    slots: &[u32],
    x: &[f32],
    z: &mut [f32],
    sigma: &mut [f32],
    p: &RobustParams,
) {
    check_gather(slots, x, z, sigma);
    let RobustState { level, mad, count } = state;
    for (((&s, &xi), zi), si) in slots.iter().zip(x).zip(z.iter_mut()).zip(sigma.iter_mut()) {
        let s = s as usize;
        (*zi, *si) = robust_update_one(&mut level[s], &mut mad[s], &mut count[s], xi, p);
    }
}

/// Dense form: point `i` updates series `i` of `state` (one point per series, as in a tick where every series
/// reports once).
pub fn robust_update_dense(state: RobustSlices<'_>, x: &[f32], z: &mut [f32], sigma: &mut [f32], p: &RobustParams) {
    check_dense(&state, x, z, sigma);
    let RobustSlices { level, mad, count } = state;
    for i in 0..x.len() {
        (z[i], sigma[i]) = robust_update_one(&mut level[i], &mut mad[i], &mut count[i], x[i], p);
    }
}

/// The length checks every dense implementation makes before it touches memory.
#[inline]
pub(crate) fn check_dense(state: &RobustSlices<'_>, x: &[f32], z: &[f32], sigma: &[f32]) {
    let n = x.len();
    assert!(
        state.level.len() == n && state.mad.len() == n && state.count.len() == n && z.len() == n && sigma.len() == n,
        "level, mad, count, x, z and sigma must have one entry per series"
    );
}

/// The length checks every gathering implementation makes before it touches memory.
#[inline]
pub(crate) fn check_gather(slots: &[u32], x: &[f32], z: &[f32], sigma: &[f32]) {
    assert!(
        slots.len() == x.len() && x.len() == z.len() && z.len() == sigma.len(),
        "slots, x, z and sigma must have one entry per point"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(xs: &[f32], p: &RobustParams) -> (RobustState, Vec<f32>) {
        let mut st = RobustState::default();
        st.push();
        let slots = vec![0u32; xs.len()];
        let mut z = vec![0.0; xs.len()];
        let mut sigma = vec![0.0; xs.len()];
        robust_update_gather(&mut st, &slots, xs, &mut z, &mut sigma, p);
        (st, z)
    }

    #[test]
    fn converges_to_level_and_scale_of_noisy_series() {
        let p = RobustParams::default();
        // Deterministic pseudo-noise in [-1, 1).
        let mut s = 12345u32;
        let xs: Vec<f32> = (0..2000)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                100.0 + ((s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
            })
            .collect();
        let (st, z) = feed(&xs, &p);
        assert!((st.level[0] - 100.0).abs() < 0.2, "level {}", st.level[0]);
        // Uniform[-1,1] has mean absolute deviation 0.5.
        assert!((st.mad[0] - 0.5).abs() < 0.1, "mad {}", st.mad[0]);
        assert!(z[100..].iter().all(|z| z.abs() < 4.0));
    }

    #[test]
    fn outage_does_not_become_normal() {
        let p = RobustParams::default();
        let mut xs: Vec<f32> = (0..500).map(|i| 10.0 + if i % 2 == 0 { 0.5 } else { -0.5 }).collect();
        xs.extend(std::iter::repeat_n(30.0, 200));
        let (st, z) = feed(&xs, &p);
        // 200 points of outage later the level has barely moved and the outage still scores high.
        assert!(st.level[0] < 12.0, "level drifted to {}", st.level[0]);
        assert!(z[699] > 8.0, "z at end of outage {}", z[699]);
    }

    #[test]
    fn constant_series_gives_finite_scores() {
        let p = RobustParams::default();
        let (_, z) = feed(&[5.0; 50], &p);
        assert!(z.iter().all(|z| z.is_finite() && *z == 0.0));
        let (_, z) = feed(&[0.0, 0.0, 0.0, 0.0, 1.0], &p);
        assert!(z[4].is_finite() && z[4] > 100.0);
    }
}
