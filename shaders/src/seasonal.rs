//! Host mirrors of `seasonal_update.wgsl`'s uniform block and point struct, and the shader's CPU twin. The reference
//! is `SeasonalBank::update` in `engine/src/detect/seasonal.rs`; `tests/it/gpu.rs` checks the twin against it (bit for
//! bit) and the shader against the twin (within a tolerance: `exp` is the driver's).

use bytemuck::{Pod, Zeroable};

/// `@workgroup_size` of `seasonal_update.wgsl`'s entry point.
pub const SEASONAL_WORKGROUP_SIZE: u32 = 64;

/// Most candidate periods the shader handles (the engine's `MAX_PERIODS`).
pub const SEASONAL_MAX_PERIODS: usize = 4;

/// A profile visit's learning weight at time step `dt` (ms) for a candidate of `period` ms and `bins` bins: `rate` up
/// to a step of a third of a bin's width, `1 − (1 − rate)^min(dt / reference, 3)` past it (`seasonal::visit_rate` in
/// the engine; `visit_rate` in the WGSL).
fn visit_rate(rate: f32, dt: f32, period: f32, bins: u32) -> f32 {
    let reference = period / (bins as f32 * 3.0);
    if dt <= reference { rate } else { 1.0 - (1.0 - rate).powf((dt / reference).min(3.0)) }
}

/// Floats per series and candidate in the `cand` buffer: sum, base, spread, fast, err, and the unit of the profile's
/// bins.
pub const CAND_FIELDS: usize = 6;
const SUM: usize = 0;
const BASE: usize = 1;
const SPREAD: usize = 2;
const FAST: usize = 3;
const ERR: usize = 4;
const UNIT: usize = 5;

/// The largest step count a profile bin holds (the engine keeps bins in `i16`), as `f32`.
pub const Q_MAX: f32 = i16::MAX as f32;

/// The smallest unit a profile's bins take, 2^-100 (so a unit is never subnormal).
pub const MIN_UNIT: f32 = f32::from_bits(0x0d80_0000);

/// The smallest power of two (at least [`MIN_UNIT`]) in whose steps `largest` (finite, not negative) is at most
/// [`Q_MAX`]; 0 for 0. The engine's profiles and this twin call it; `unit_for` in the WGSL mirrors it.
pub fn unit_for(largest: f32) -> f32 {
    if largest == 0.0 {
        return 0.0;
    }
    let mut unit = MIN_UNIT;
    let need = largest / Q_MAX;
    if need > unit {
        let bits = need.to_bits();
        unit = f32::from_bits(if bits & 0x007f_ffff == 0 { bits } else { (bits & 0x7f80_0000) + 0x0080_0000 });
    }
    while largest / unit > Q_MAX {
        unit *= 2.0;
    }
    unit
}

/// Writes values `v0`, `v1` into bins `b0`, `b1` of the profile at `pb` (`n` bins) of candidate record `kc`, as the
/// engine's `seasonal::store` and `seasonal::widen` do: rounded to steps of the unit, ties to even; where one does
/// not fit 16 bits, the unit doubles until both do, every bin rounded to it, and the sum is the bins'.
fn store(b: &mut SeasonalBuffers, pb: usize, n: usize, kc: usize, (b0, v0): (usize, f32), (b1, v1): (usize, f32)) {
    let unit = b.cand[kc + UNIT];
    let (q0, q1) = (b.profile[pb + b0], b.profile[pb + b1]);
    let inv = 1.0 / unit;
    let (n0, n1) = ((v0 * inv).round_ties_even(), (v1 * inv).round_ties_even());
    if n0.abs() <= Q_MAX && n1.abs() <= Q_MAX {
        let (n0, n1) = (n0 as i32, n1 as i32);
        b.cand[kc + SUM] += (n0 - q0 + (n1 - q1)) as f32 * unit;
        (b.profile[pb + b0], b.profile[pb + b1]) = (n0, n1);
        return;
    }
    let v0 = if v0.is_finite() { v0 } else { q0 as f32 * unit };
    let v1 = if v1.is_finite() { v1 } else { q1 as f32 * unit };
    let wide = unit_for(v0.abs().max(v1.abs())).max(unit);
    let bins = &mut b.profile[pb..pb + n];
    if wide != unit && unit > 0.0 {
        let ratio = unit / wide;
        for q in bins.iter_mut() {
            *q = (*q as f32 * ratio).round_ties_even() as i32;
        }
    }
    if wide > 0.0 {
        let inv = 1.0 / wide;
        (bins[b0], bins[b1]) = ((v0 * inv).round_ties_even() as i32, (v1 * inv).round_ties_even() as i32);
    }
    let sum: i32 = bins.iter().sum();
    b.cand[kc + UNIT] = wide;
    b.cand[kc + SUM] = sum as f32 * wide;
}

/// Kept in sync with `struct Params` in `wgsl/seasonal_update.wgsl` (80 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct SeasonalParamsGpu {
    pub n: u32,
    pub cands: u32,
    /// Profile values per series: every candidate's bins.
    pub stride: u32,
    pub rate: f32,
    pub alpha: f32,
    pub min_periods: f32,
    pub min_gain: f32,
    /// The shortest candidate period, in ms.
    pub shortest: f32,
    /// Candidate periods in ms; unused entries 0.
    pub periods: [f32; SEASONAL_MAX_PERIODS],
    /// Each candidate's profile bins, and where they start among a series' `stride` values; unused entries 0.
    pub bins: [u32; SEASONAL_MAX_PERIODS],
    pub offsets: [u32; SEASONAL_MAX_PERIODS],
}

const _: () = assert!(std::mem::size_of::<SeasonalParamsGpu>() == 80);

/// Kept in sync with `struct Point` in `wgsl/seasonal_update.wgsl` (80 bytes): one point of one series, with what
/// the host computes from event time (WGSL has no i64 or f64).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub struct SeasonalPointGpu {
    pub slot: u32,
    pub x: f32,
    pub weight: f32,
    /// Time since the series' previous point, ms (0 for its first).
    pub dt: f32,
    /// Time since the series' first point, ms.
    pub elapsed: f32,
    /// 1 for the series' first point.
    pub first: u32,
    pub _pad: [u32; 2],
    /// Per candidate: the bins around the point's phase and the interpolation fraction (`phase()` in the engine).
    pub b0: [u32; SEASONAL_MAX_PERIODS],
    pub b1: [u32; SEASONAL_MAX_PERIODS],
    pub frac: [f32; SEASONAL_MAX_PERIODS],
}

const _: () = assert!(std::mem::size_of::<SeasonalPointGpu>() == 80);

/// Kept in sync with `struct Query` in `wgsl/seasonal_offset.wgsl` (16 bytes): where a point of series `slot` lies in
/// its active candidate's period (`phase()` in the engine).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, Pod, Zeroable)]
pub struct SeasonalQueryGpu {
    pub slot: u32,
    pub b0: u32,
    pub b1: u32,
    pub frac: f32,
}

const _: () = assert!(std::mem::size_of::<SeasonalQueryGpu>() == 16);

/// The seasonal state of every series as the shader lays it out (struct-of-arrays; see the WGSL's bindings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeasonalBuffers {
    /// Each candidate's bins, series after series (`stride` values per series): step counts of the candidate's unit
    /// (16-bit values, one `i32` each on the device).
    pub profile: Vec<i32>,
    /// [`CAND_FIELDS`] per candidate per series.
    pub cand: Vec<f32>,
    /// Per series: plain fast level and its error.
    pub plain: Vec<f32>,
    /// Per series: points seen, active candidate + 1.
    pub info: Vec<u32>,
}

impl SeasonalBuffers {
    /// Adds a fresh (all-zero) series.
    pub fn push(&mut self, cands: usize, stride: usize) {
        self.profile.extend(std::iter::repeat_n(0, stride));
        self.cand.extend(std::iter::repeat_n(0.0, cands * CAND_FIELDS));
        self.plain.extend([0.0, 0.0]);
        self.info.extend([0, 0]);
    }

    /// Every bin's value, its steps times its candidate's unit, in `profile`'s order, for candidates of `bins` bins.
    pub fn values(&self, bins: &[usize]) -> Vec<f32> {
        let stride: usize = bins.iter().sum();
        let mut out = Vec::with_capacity(self.profile.len());
        for (s, series) in self.profile.chunks_exact(stride.max(1)).enumerate() {
            let mut at = 0;
            for (c, &n) in bins.iter().enumerate() {
                let unit = self.cand[(s * bins.len() + c) * CAND_FIELDS + UNIT];
                out.extend(series[at..at + n].iter().map(|&q| q as f32 * unit));
                at += n;
            }
        }
        out
    }
}

#[inline]
fn clipped_abs(v: f32, scale: f32) -> f32 {
    if scale > 0.0 { v.abs().min(4.0 * scale) } else { v.abs() }
}

#[inline]
fn clipped(v: f32, scale: f32) -> f32 {
    if scale > 0.0 { v.clamp(-(4.0 * scale), 4.0 * scale) } else { v }
}

fn gain(b: &SeasonalBuffers, s: usize, k: usize) -> f32 {
    let f = b.plain[s * 2 + 1];
    if f <= 0.0 { 0.0 } else { 1.0 - b.cand[k * CAND_FIELDS + ERR] / f }
}

/// CPU twin of `seasonal_offset.wgsl`: `offsets[i]` is the active profile of series `queries[i].slot` at the queried
/// phase (0 without an active season), as `SeasonalBank::offset` computes it.
pub fn seasonal_offset_twin(
    p: &SeasonalParamsGpu,
    b: &SeasonalBuffers,
    queries: &[SeasonalQueryGpu],
    offsets: &mut [f32],
) {
    let (cands, stride) = (p.cands as usize, p.stride as usize);
    for (q, out) in queries.iter().zip(offsets.iter_mut()).take(p.n as usize) {
        let s = q.slot as usize;
        let active = b.info[s * 2 + 1] as usize;
        if active == 0 {
            *out = 0.0;
            continue;
        }
        let k = s * cands + active - 1;
        let (pb, bins) = (s * stride + p.offsets[active - 1] as usize, p.bins[active - 1]);
        let (b0, b1) = (q.b0 as usize, q.b1 as usize);
        let unit = b.cand[k * CAND_FIELDS + UNIT];
        *out = (1.0 - q.frac) * (b.profile[pb + b0] as f32 * unit) + q.frac * (b.profile[pb + b1] as f32 * unit)
            - b.cand[k * CAND_FIELDS + SUM] / bins as f32;
    }
}

/// CPU twin of the shader: invocation `i` learns `points[i]` and writes `switches[i]` (0 unchanged, `c + 1`
/// candidate `c` activated, −1 deactivated), as the WGSL does. No slot may repeat within one call.
pub fn seasonal_update_twin(
    p: &SeasonalParamsGpu,
    b: &mut SeasonalBuffers,
    points: &[SeasonalPointGpu],
    switches: &mut [i32],
) {
    let (cands, stride) = (p.cands as usize, p.stride as usize);
    for i in 0..p.n as usize {
        let pt = points[i];
        let s = pt.slot as usize;
        let x = pt.x;
        b.info[s * 2] = b.info[s * 2].min(u32::MAX - 1) + 1;
        if pt.first == 1 {
            b.plain[s * 2] = x;
            for c in 0..cands {
                b.cand[(s * cands + c) * CAND_FIELDS + BASE] = x;
                b.cand[(s * cands + c) * CAND_FIELDS + FAST] = x;
            }
            switches[i] = 0;
            continue;
        }
        let running = 1.0 / b.info[s * 2] as f32;
        let a = p.alpha.max(running);
        let dt = pt.dt;
        let ew = (1.0 - (-dt / (2.0 * p.shortest)).exp()).max(running);
        let flat_scale = b.plain[s * 2 + 1];
        let flat_e = clipped_abs(x - b.plain[s * 2], flat_scale);
        b.plain[s * 2 + 1] += ew * (flat_e - b.plain[s * 2 + 1]);
        b.plain[s * 2] += a * clipped(x - b.plain[s * 2], flat_scale);
        let (mut best, mut best_gain) = (-1i32, 0.0f32);
        for c in 0..cands {
            let k = s * cands + c;
            let kc = k * CAND_FIELDS;
            let period = p.periods[c];
            let (b0, b1, frac) = (pt.b0[c] as usize, pt.b1[c] as usize, pt.frac[c]);
            let (pb, bins) = (s * stride + p.offsets[c] as usize, p.bins[c]);
            let unit = b.cand[kc + UNIT];
            let (v0, v1) = (b.profile[pb + b0] as f32 * unit, b.profile[pb + b1] as f32 * unit);
            let season = (1.0 - frac) * v0 + frac * v1 - b.cand[kc + SUM] / bins as f32;
            let y = x - season;
            let e = clipped_abs(y - b.cand[kc + FAST], flat_scale);
            b.cand[kc + ERR] += ew * (e - b.cand[kc + ERR]);
            b.cand[kc + FAST] += a * clipped(y - b.cand[kc + FAST], flat_scale);
            let spread_scale = b.cand[kc + SPREAD];
            let raw = y - b.cand[kc + BASE];
            let w = (1.0 - (-dt / period).exp()).max(running);
            b.cand[kc + SPREAD] = spread_scale + w * (clipped_abs(raw, spread_scale) - spread_scale);
            let r = clipped(raw, spread_scale);
            b.cand[kc + BASE] += w * r;
            let step = visit_rate(p.rate, dt, period, p.bins[c]) * pt.weight * r;
            store(b, pb, bins as usize, kc, (b0, v0 + step * (1.0 - frac)), (b1, v1 + step * frac));
            if pt.elapsed >= p.min_periods * period {
                let g = gain(b, s, k);
                if best < 0 || g > best_gain {
                    (best, best_gain) = (c as i32, g);
                }
            }
        }
        let active = b.info[s * 2 + 1];
        let current_gain = if active > 0 { gain(b, s, s * cands + active as usize - 1) } else { 0.0 };
        let mut sw = 0;
        if best >= 0
            && best_gain >= p.min_gain
            && active != best as u32 + 1
            && (active == 0 || best_gain > current_gain + 0.1)
        {
            b.info[s * 2 + 1] = best as u32 + 1;
            sw = best + 1;
        } else if active > 0 && current_gain < 0.5 * p.min_gain {
            b.info[s * 2 + 1] = 0;
            sw = -1;
        }
        switches[i] = sw;
    }
}
