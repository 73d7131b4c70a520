//! Host mirror of `robust_update.wgsl`'s uniform block and the shader's CPU twin.

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

const MAD_TO_SIGMA: f32 = 1.253_314_1;

/// CPU twin of the shader: invocation `i` updates series `i` with `x[i]`, exactly as the WGSL does.
pub fn robust_update_twin(
    p: &RobustParamsGpu,
    level: &mut [f32],
    mad: &mut [f32],
    count: &mut [u32],
    x: &[f32],
    z: &mut [f32],
) {
    for i in 0..p.n as usize {
        let xi = x[i];
        let c = count[i];
        if c == 0 {
            level[i] = xi;
            mad[i] = 0.0;
            count[i] = 1;
            z[i] = 0.0;
            continue;
        }
        let (l, m) = (level[i], mad[i]);
        let sigma = (m * MAD_TO_SIGMA).max(p.abs_floor).max(p.rel_floor * l.abs());
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
        level[i] = l + a * rc;
        mad[i] = m + b * (dev - m);
        count[i] = c.min(u32::MAX - 1) + 1;
        z[i] = zi;
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
        let slots: Vec<u32> = (0..n as u32).collect();
        let mut seed = 7u32;
        for step in 0..300 {
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let noise = (seed >> 8) as f32 / (1u32 << 24) as f32;
                    i as f32 * 10.0 + noise + if step > 250 && i % 5 == 0 { 50.0 } else { 0.0 }
                })
                .collect();
            let (mut z1, mut z2, mut sigma) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            Kernels::Scalar.robust_update_gather(&mut st, &slots, &x, &mut z1, &mut sigma, &kp);
            robust_update_twin(&gp, &mut level, &mut mad, &mut count, &x, &mut z2);
            assert_eq!(z1, z2, "step {step}");
        }
        assert_eq!(st.level, level);
        assert_eq!(st.mad, mad);
    }
}
