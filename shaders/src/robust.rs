//! Host mirrors of `robust_update.wgsl`'s uniform block, point and score structs, and the shader's CPU twin.

use bytemuck::{Pod, Zeroable};

/// Kept in sync with `struct Params` in `wgsl/robust_update.wgsl` (48 bytes, 16-byte aligned tail).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RobustParamsGpu {
    pub alpha: f32,
    pub beta: f32,
    pub huber: f32,
    pub threshold: f32,
    pub anomaly_weight: f32,
    pub abs_floor: f32,
    pub rel_floor: f32,
    pub n: u32,
    pub _pad: [u32; 4],
}

const _: () = assert!(std::mem::size_of::<RobustParamsGpu>() == 48);

/// Kept in sync with `struct Point` in `wgsl/robust_update.wgsl` (8 bytes): one new value for one series.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct PointGpu {
    pub slot: u32,
    pub x: f32,
}

const _: () = assert!(std::mem::size_of::<PointGpu>() == 8);

/// Kept in sync with `struct Score` in `wgsl/robust_update.wgsl` (12 bytes): the z-score of a point against the model
/// before its update, the sigma it was measured with, and the level it was measured against (the point itself for a
/// series' first point). The level is read back rather than rebuilt as `x − z·sigma`, which loses it when the point
/// lies many orders of magnitude away (a sentinel such as 4294967295 on a series at 100).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub struct ScoreGpu {
    pub z: f32,
    pub sigma: f32,
    pub level: f32,
}

const _: () = assert!(std::mem::size_of::<ScoreGpu>() == 12);

/// `@workgroup_size` of `robust_update.wgsl`'s entry point.
pub const ROBUST_WORKGROUP_SIZE: u32 = 256;

/// Most workgroups a dispatch may have in one dimension (WebGPU's default limit).
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

/// Workgroup counts `(x, y)` covering `n` invocations of a shader whose index is `gid.x + gid.y * nwg.x * size`.
pub fn dispatch_size(n: u32, size: u32) -> (u32, u32) {
    let groups = n.div_ceil(size).max(1);
    if groups <= MAX_WORKGROUPS_PER_DIM {
        (groups, 1)
    } else {
        (MAX_WORKGROUPS_PER_DIM, groups.div_ceil(MAX_WORKGROUPS_PER_DIM))
    }
}

/// State and traffic of the robust update, in bytes per updated series: the shader reads and writes level, mad and
/// count (12 + 12), reads one point (8) and writes one score (12). Used to turn updates/s into achieved bandwidth.
pub const ROBUST_BYTES_PER_UPDATE: u64 = 12 + 12 + 8 + 12;

const MAD_TO_SIGMA: f32 = 1.253_314_1;

#[inline(always)]
fn floored_sigma(p: &RobustParamsGpu, l: f32, m: f32) -> f32 {
    (m * MAD_TO_SIGMA).max(p.abs_floor).max(p.rel_floor * l.abs())
}

/// CPU twin of the shader: invocation `i` updates series `points[i].slot` with `points[i].x` and writes `scores[i]`,
/// exactly as the WGSL does (same operations in the same order, no fused multiply-add). No slot may repeat within
/// one call, as within one dispatch.
pub fn robust_update_twin(
    p: &RobustParamsGpu,
    level: &mut [f32],
    mad: &mut [f32],
    count: &mut [u32],
    points: &[PointGpu],
    scores: &mut [ScoreGpu],
) {
    for i in 0..p.n as usize {
        let PointGpu { slot, x: xi } = points[i];
        let s = slot as usize;
        let c = count[s];
        if c == 0 {
            level[s] = xi;
            mad[s] = 0.0;
            count[s] = 1;
            scores[i] = ScoreGpu { z: 0.0, sigma: floored_sigma(p, xi, 0.0), level: xi };
            continue;
        }
        let (l, m) = (level[s], mad[s]);
        let sigma = floored_sigma(p, l, m);
        let r = xi - l;
        let zi = r / sigma;
        let warm = 1.0 / (c as f32 + 1.0);
        let (mut a, mut b) = (p.alpha.max(warm), p.beta.max(warm));
        if zi.abs() >= p.threshold && c >= 8 {
            a *= p.anomaly_weight;
            b = 0.0;
        }
        let clip = p.huber * sigma;
        let rc = r.clamp(-clip, clip);
        let dev = if c == 1 { r.abs() } else { rc.abs() };
        level[s] = l + a * rc;
        mad[s] = m + b * (dev - m);
        count[s] = c.min(u32::MAX - 1) + 1;
        scores[i] = ScoreGpu { z: zi, sigma, level: l };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_kernels::{Kernels, RobustParams, RobustState};

    #[test]
    fn twin_matches_the_scalar_kernel() {
        let kp = RobustParams::default();
        let gp = RobustParamsGpu {
            alpha: kp.alpha,
            beta: kp.beta,
            huber: kp.huber,
            threshold: kp.threshold,
            anomaly_weight: kp.anomaly_weight,
            abs_floor: kp.abs_floor,
            rel_floor: kp.rel_floor,
            n: 64,
            _pad: [0; 4],
        };
        let n = 64usize;
        let mut st = RobustState::default();
        for _ in 0..n {
            st.push();
        }
        let (mut level, mut mad, mut count) = (vec![0.0f32; n], vec![0.0f32; n], vec![0u32; n]);
        // A permutation, so the twin gathers as the shader does.
        let slots: Vec<u32> = (0..n as u32).map(|i| (i * 37) % n as u32).collect();
        let mut seed = 7u32;
        for step in 0..300 {
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let noise = (seed >> 8) as f32 / (1u32 << 24) as f32;
                    i as f32 * 10.0 + noise + if step > 250 && i % 5 == 0 { 50.0 } else { 0.0 }
                })
                .collect();
            let (mut z1, mut sigma) = (vec![0.0; n], vec![0.0; n]);
            // The level each point is measured against: the model's before the update, or the point itself first.
            let read: Vec<f32> = slots
                .iter()
                .zip(&x)
                .map(|(&s, &x)| if st.count[s as usize] == 0 { x } else { st.level[s as usize] })
                .collect();
            Kernels::Scalar.robust_update_gather(&mut st, &slots, &x, &mut z1, &mut sigma, &kp);
            let points: Vec<PointGpu> = slots.iter().zip(&x).map(|(&slot, &x)| PointGpu { slot, x }).collect();
            let mut scores = vec![ScoreGpu::default(); n];
            robust_update_twin(&gp, &mut level, &mut mad, &mut count, &points, &mut scores);
            let z2: Vec<f32> = scores.iter().map(|s| s.z).collect();
            let sigma2: Vec<f32> = scores.iter().map(|s| s.sigma).collect();
            assert_eq!(z1, z2, "step {step}");
            assert_eq!(sigma, sigma2, "step {step}");
            assert_eq!(read, scores.iter().map(|s| s.level).collect::<Vec<_>>(), "step {step}");
        }
        assert_eq!(st.count, count);
        assert_eq!(st.level, level);
        assert_eq!(st.mad, mad);
    }
}

#[cfg(test)]
mod dispatch_tests {
    use super::*;

    #[test]
    fn dispatch_covers_every_invocation() {
        for n in [0u32, 1, 255, 256, 257, 65_535 * 256, 65_535 * 256 + 1, 50_000_000] {
            let (x, y) = dispatch_size(n, ROBUST_WORKGROUP_SIZE);
            assert!(x <= MAX_WORKGROUPS_PER_DIM && y <= MAX_WORKGROUPS_PER_DIM);
            assert!(u64::from(x) * u64::from(y) * 256 >= u64::from(n), "{n}");
        }
    }
}
