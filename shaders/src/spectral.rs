//! Host mirror of `spectral_update.wgsl`'s uniform block and the shader's CPU twin.

use bytemuck::{Pod, Zeroable};

use crate::PointGpu;

/// Points per window (`WINDOW` in the WGSL).
pub const SPECTRAL_WINDOW: usize = 64;

/// `@workgroup_size` of `spectral_update.wgsl`'s entry point.
pub const SPECTRAL_WORKGROUP_SIZE: u32 = 64;

/// Kept in sync with `struct Params` in `wgsl/spectral_update.wgsl` (288 bytes): the chunk size, the spectral
/// residual's parameters and the FFT's twiddle table.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct SpectralParamsGpu {
    pub n: u32,
    pub extend: u32,
    pub look: u32,
    pub mag_window: u32,
    pub score_window: u32,
    pub _pad: [u32; 3],
    /// Twiddle `k` at `twiddle[k / 2][2 * (k % 2)..][..2]` as (cos, −sin).
    pub twiddle: [[f32; 4]; 16],
}

const _: () = assert!(std::mem::size_of::<SpectralParamsGpu>() == 288);

impl SpectralParamsGpu {
    /// The uniform block for parameters `(extend, look, mag_window, score_window)` and a forward twiddle table.
    pub fn new(extend: u32, look: u32, mag_window: u32, score_window: u32, twiddles: &[[f32; 2]; 32]) -> Self {
        let twiddle = std::array::from_fn(|i| {
            let (a, b) = (twiddles[2 * i], twiddles[2 * i + 1]);
            [a[0], a[1], b[0], b[1]]
        });
        Self { n: 0, extend, look, mag_window, score_window, _pad: [0; 3], twiddle }
    }
}

/// State and traffic of one spectral update, in bytes: the shader reads the real points of the window (up to 64
/// values) and the count, writes one value and the count, reads one point (8) and writes one score (4).
pub const SPECTRAL_BYTES_PER_UPDATE: u64 = 64 * 4 + 4 + 4 + 4 + 8 + 4;

const WINDOW: u32 = SPECTRAL_WINDOW as u32;
const TINY: f32 = 1e-30;

/// The shader's module-scope private arrays.
struct Private {
    re: [f32; SPECTRAL_WINDOW],
    im: [f32; SPECTRAL_WINDOW],
    lg: [f32; SPECTRAL_WINDOW],
}

fn rev(j: u32) -> u32 {
    j.reverse_bits() >> 26
}

fn twiddle(p: &SpectralParamsGpu, k: u32) -> [f32; 2] {
    let t = p.twiddle[(k >> 1) as usize];
    if k & 1 == 1 { [t[2], t[3]] } else { [t[0], t[1]] }
}

fn fft(p: &SpectralParamsGpu, v: &mut Private) {
    let (re, im) = (&mut v.re, &mut v.im);
    let mut half = 1u32;
    while half < WINDOW {
        let step = WINDOW / 2 / half;
        let mut start = 0u32;
        while start < WINDOW {
            for k in 0..half {
                let w = twiddle(p, k * step);
                let a = (start + k) as usize;
                let b = a + half as usize;
                let vr = re[b] * w[0] - im[b] * w[1];
                let vi = re[b] * w[1] + im[b] * w[0];
                re[b] = re[a] - vr;
                im[b] = im[a] - vi;
                re[a] += vr;
                im[a] += vi;
            }
            start += 2 * half;
        }
        half *= 2;
    }
}

/// CPU twin of the shader: invocation `i` appends `points[i].x` to series `points[i].slot`'s ring and writes
/// `scores[i]`, as the WGSL does (same operations in the same order; `ln`, `exp` and `sqrt` are the host's, which a
/// driver's need not match to the last bit). No slot may repeat within one call, as within one dispatch.
pub fn spectral_update_twin(
    p: &SpectralParamsGpu,
    window: &mut [f32],
    count: &mut [u32],
    points: &[PointGpu],
    scores: &mut [f32],
) {
    let mut v = Private { re: [0.0; SPECTRAL_WINDOW], im: [0.0; SPECTRAL_WINDOW], lg: [0.0; SPECTRAL_WINDOW] };
    for i in 0..p.n as usize {
        let s = points[i].slot;
        let base = (s * WINDOW) as usize;
        let c = count[s as usize];
        window[base + (c % WINDOW) as usize] = points[i].x;
        let mut cn = c.wrapping_add(1);
        if cn == 0 {
            cn = WINDOW;
        }
        count[s as usize] = cn;
        let l = WINDOW - p.extend;
        if cn < l {
            scores[i] = 0.0;
            continue;
        }
        let start = cn - l;
        let at = |j: u32| window[base + (start.wrapping_add(j) % WINDOW) as usize];
        let mut sum = 0.0f32;
        for j in 0..l {
            sum += at(j);
        }
        let mean = sum / l as f32;
        let e = l - 2;
        let at_e = at(e) - mean;
        let mut g = 0.0f32;
        for k in 1..=p.look {
            g += (at_e - (at(e - k) - mean)) / k as f32;
        }
        let next = (at(e + 1 - p.look) - mean) + g;
        for j in 0..WINDOW {
            let val = if j < l { at(j) - mean } else { next };
            v.re[rev(j) as usize] = val;
            v.im[rev(j) as usize] = 0.0;
        }
        fft(p, &mut v);
        for k in 0..SPECTRAL_WINDOW {
            v.lg[k] = 0.5 * (v.re[k] * v.re[k] + v.im[k] * v.im[k]).max(TINY).ln();
        }
        v.lg[0] = v.lg[1];
        let q = p.mag_window;
        let h = q / 2;
        for k in 0..WINDOW {
            let mut a = 0.0f32;
            for t in 0..q {
                a += v.lg[((k + WINDOW - h + t) % WINDOW) as usize];
            }
            let f = (-(a / q as f32)).exp();
            v.re[k as usize] *= f;
            v.im[k as usize] = -(v.im[k as usize] * f);
        }
        v.re[0] = 0.0;
        v.im[0] = 0.0;
        for j in 0..WINDOW {
            let r = rev(j);
            if j < r {
                v.re.swap(j as usize, r as usize);
                v.im.swap(j as usize, r as usize);
            }
        }
        fft(p, &mut v);
        let z = p.score_window;
        let (mut total, mut newest) = (0.0f32, 0.0f32);
        for j in (l - z) as usize..l as usize {
            newest = (v.re[j] * v.re[j] + v.im[j] * v.im[j]).sqrt();
            total += newest;
        }
        let avg = total / z as f32;
        scores[i] = (newest - avg) / avg.max(TINY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_kernels::spectral::{SpectralParams, SpectralState, spectral_update_gather, twiddles};

    #[test]
    fn twin_matches_the_scalar_kernel() {
        let kp = SpectralParams::default();
        let mut gp = SpectralParamsGpu::new(kp.extend, kp.look, kp.mag_window, kp.score_window, twiddles());
        let n = 40usize;
        gp.n = n as u32;
        let mut st = SpectralState::default();
        for _ in 0..n {
            st.push();
        }
        let (mut window, mut count) = (vec![0.0f32; n * SPECTRAL_WINDOW], vec![0u32; n]);
        let slots: Vec<u32> = (0..n as u32).map(|i| (i * 17) % n as u32).collect();
        let mut seed = 11u32;
        for step in 0..200 {
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let noise = (seed >> 8) as f32 / (1u32 << 24) as f32;
                    i as f32 * 10.0 + noise + if step % 37 == 0 && i % 3 == 0 { 20.0 } else { 0.0 }
                })
                .collect();
            let mut s1 = vec![0.0; n];
            spectral_update_gather(&mut st, &slots, &x, &mut s1, &kp);
            let points: Vec<PointGpu> = slots.iter().zip(&x).map(|(&slot, &x)| PointGpu { slot, x }).collect();
            let mut s2 = vec![0.0; n];
            spectral_update_twin(&gp, &mut window, &mut count, &points, &mut s2);
            assert_eq!(s1, s2, "step {step}");
        }
        assert!(count.iter().all(|&c| c == 200));
        assert_eq!(st.window, window);
        assert_eq!(st.count, count);
    }

    #[test]
    fn twiddles_pack_two_per_vec4() {
        let t = twiddles();
        let gp = SpectralParamsGpu::new(5, 5, 3, 21, t);
        for (k, tk) in t.iter().enumerate() {
            assert_eq!(twiddle(&gp, k as u32), *tk);
        }
    }
}
