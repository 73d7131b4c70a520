//! Host mirrors of `spot_update.wgsl`'s structs and the shader's CPU twin: the calibrated threshold (streaming
//! peaks-over-threshold) of the engine's normal band, on the device.

use bytemuck::{Pod, Zeroable};

/// Kept in sync with `struct Params` in `wgsl/spot_update.wgsl` (32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct SpotParamsGpu {
    pub quantile: f32,
    pub step: f32,
    pub min_peaks: u32,
    pub memory: f32,
    pub max_shape: f32,
    /// The alarm level, as a surprise (`−log10 risk`).
    pub alarm: f32,
    pub n: u32,
    pub _pad: u32,
}

const _: () = assert!(std::mem::size_of::<SpotParamsGpu>() == 32);

/// Kept in sync with `struct State` in `wgsl/spot_update.wgsl` (20 bytes): one series' calibrator, field for field
/// the engine's `Spot`. Zeroed memory is a fresh calibrator with its threshold at 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub struct SpotStateGpu {
    pub t: f32,
    pub m1: f32,
    pub m2: f32,
    pub n: u32,
    pub peaks: u32,
}

const _: () = assert!(std::mem::size_of::<SpotStateGpu>() == 20);

/// Kept in sync with `struct Point` in `wgsl/spot_update.wgsl` (12 bytes): the statistic of one point of one series,
/// and whether it may join the peaks while the calibrator is too young to judge it (1) or not (0).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct SpotPointGpu {
    pub slot: u32,
    pub x: f32,
    pub learn: u32,
}

const _: () = assert!(std::mem::size_of::<SpotPointGpu>() == 12);

/// Kept in sync with `struct Out` in `wgsl/spot_update.wgsl` (8 bytes): the point's surprise before the update and
/// the calibrated band after it, each −1 while the calibrator has fewer than `min_peaks` peaks.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub struct SpotOutGpu {
    pub surprise: f32,
    pub band: f32,
}

const _: () = assert!(std::mem::size_of::<SpotOutGpu>() == 8);

/// `@workgroup_size` of `spot_update.wgsl`'s entry point.
pub const SPOT_WORKGROUP_SIZE: u32 = 256;

/// Traffic of one SPOT update, in bytes: the state read and written (20 + 20), one point in (12), one result out (8).
pub const SPOT_BYTES_PER_UPDATE: u64 = 20 + 20 + 12 + 8;

const LN_10: f32 = std::f32::consts::LN_10;

fn gpd(p: &SpotParamsGpu, st: &SpotStateGpu) -> (f32, f32) {
    let mean = st.m1.max(1e-6);
    let var = (st.m2 - st.m1 * st.m1).max(1e-12);
    let shape = (0.5 * (1.0 - mean * mean / var)).clamp(0.0, p.max_shape);
    (shape, (mean * (1.0 - shape)).max(1e-6))
}

fn surprise(p: &SpotParamsGpu, st: &SpotStateGpu, x: f32) -> f32 {
    let (shape, scale) = gpd(p, st);
    let rate = 1.0 - p.quantile;
    let y = (x - st.t) / scale;
    let tail_ln = if y > 0.0 && shape >= 1e-4 { -(1.0 + shape * y).ln() / shape } else { -y };
    (-(rate.ln() + tail_ln) / LN_10).max(0.0)
}

fn quantile_at(p: &SpotParamsGpu, st: &SpotStateGpu, s: f32) -> f32 {
    let (shape, scale) = gpd(p, st);
    let tail_ln = -s * LN_10 - (1.0 - p.quantile).ln();
    let y = if shape >= 1e-4 { ((-shape * tail_ln).exp() - 1.0) / shape } else { -tail_ln };
    st.t + y * scale
}

/// CPU twin of the shader: invocation `i` scores and updates series `points[i].slot` and writes `outs[i]`, with the
/// shader's operations in its order (in f32, as WGSL has no f64). No slot may repeat within one call.
pub fn spot_update_twin(
    p: &SpotParamsGpu,
    state: &mut [SpotStateGpu],
    points: &[SpotPointGpu],
    outs: &mut [SpotOutGpu],
) {
    for i in 0..p.n as usize {
        let SpotPointGpu { slot, x, learn } = points[i];
        let st = &mut state[slot as usize];
        let mut out = SpotOutGpu { surprise: -1.0, band: -1.0 };
        let mut learn = learn != 0;
        if st.peaks >= p.min_peaks {
            out.surprise = surprise(p, st, x);
            learn = out.surprise < p.alarm;
        }
        if x.is_finite() {
            st.n = st.n.min(u32::MAX - 1) + 1;
            if x > st.t {
                if learn {
                    let y = x - st.t;
                    st.peaks = st.peaks.min(u32::MAX - 1) + 1;
                    let w = (1.0 / st.peaks as f32).max(1.0 / p.memory);
                    st.m1 += w * (y - st.m1);
                    st.m2 += w * (y * y - st.m2);
                }
                st.t += p.step * p.quantile;
            } else {
                st.t -= p.step * (1.0 - p.quantile);
            }
        }
        if st.peaks >= p.min_peaks {
            out.band = quantile_at(p, st, p.alarm);
        }
        outs[i] = out;
    }
}
