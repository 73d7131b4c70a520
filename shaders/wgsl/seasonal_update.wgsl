// Seasonal baseline update, one invocation per point of a chunk in which no series repeats: the per-candidate phase
// profiles, slow bases, fast trackers and their one-step errors of engine/src/detect/seasonal.rs
// (SeasonalBank::update), resident on the device. Invocation i learns points[i] for series points[i].slot and writes
// what changed about the series' season into switches[i]: 0 unchanged, c + 1 candidate c activated, -1 deactivated.
// WGSL has neither i64 nor f64, so the host computes what needs event time: the point's phase bins and fraction per
// candidate (in f64, as the CPU does), the time since the series' previous point and since its first.
// Mirrors SeasonalBank::update operation by operation; the CPU twin is shaders/src/seasonal.rs. Layouts are kept in
// sync with shaders/src/seasonal.rs: Params = SeasonalParamsGpu (80 bytes), Point = SeasonalPointGpu (80 bytes).

struct Params {
    n: u32,
    cands: u32,
    // Profile values per series: every candidate's bins.
    stride: u32,
    rate: f32,
    alpha: f32,
    min_periods: f32,
    min_gain: f32,
    shortest: f32,
    // Candidate periods in ms (as f32), up to 4.
    periods: vec4<f32>,
    // Each candidate's profile bins, and where they start among a series' `stride` values.
    bins: vec4<u32>,
    offsets: vec4<u32>,
};

struct Point {
    slot: u32,
    x: f32,
    weight: f32,
    // Time since the series' previous point and since its first, in ms.
    dt: f32,
    elapsed: f32,
    // 1 for the series' first point.
    first: u32,
    _pad0: u32,
    _pad1: u32,
    // Per candidate: the two bins around the phase and the interpolation fraction.
    b0: vec4<u32>,
    b1: vec4<u32>,
    frac: vec4<f32>,
};

@group(0) @binding(0) var<uniform> params: Params;
// Each candidate's bins, series after series: profile[s * stride + offsets[c] + b], a step count of the candidate's
// unit (within ±32767: the engine keeps bins in 16 bits).
@group(0) @binding(1) var<storage, read_write> profile: array<i32>;
// Per series and candidate, interleaved: [sum, base, spread, fast, err, unit] at (s * cands + c) * 6.
@group(0) @binding(2) var<storage, read_write> cand: array<f32>;
// Per series, interleaved: [flat_fast, flat_err] at s * 2.
@group(0) @binding(3) var<storage, read_write> plain: array<f32>;
// Per series, interleaved: [points seen, active candidate + 1] at s * 2.
@group(0) @binding(4) var<storage, read_write> info: array<u32>;
@group(0) @binding(5) var<storage, read> points: array<Point>;
@group(0) @binding(6) var<storage, read_write> switches: array<i32>;

const SUM: u32 = 0u;
const BASE: u32 = 1u;
const SPREAD: u32 = 2u;
const FAST: u32 = 3u;
const ERR: u32 = 4u;
const UNIT: u32 = 5u;
// Floats per series and candidate in `cand`.
const FIELDS: u32 = 6u;
// The largest step count of a bin, and the smallest unit (2^-100).
const Q_MAX: f32 = 32767.0;
const MIN_UNIT_BITS: u32 = 0x0d800000u;

// |v| clipped at 4 scales (none while the scale is unknown).
fn clipped_abs(v: f32, scale: f32) -> f32 {
    if (scale > 0.0) {
        return min(abs(v), 4.0 * scale);
    }
    return abs(v);
}

fn clipped(v: f32, scale: f32) -> f32 {
    if (scale > 0.0) {
        return clamp(v, -(4.0 * scale), 4.0 * scale);
    }
    return v;
}

fn gain(s: u32, k: u32) -> f32 {
    let f = plain[s * 2u + 1u];
    if (f <= 0.0) {
        return 0.0;
    }
    return 1.0 - cand[k * FIELDS + ERR] / f;
}

// The smallest power of two (at least 2^-100) in whose steps `largest` is at most Q_MAX; 0 for 0
// (seasonal::unit_for in the engine).
fn unit_for(largest: f32) -> f32 {
    if (largest == 0.0) {
        return 0.0;
    }
    var unit = bitcast<f32>(MIN_UNIT_BITS);
    let need = largest / Q_MAX;
    if (need > unit) {
        let bits = bitcast<u32>(need);
        if ((bits & 0x007fffffu) == 0u) {
            unit = need;
        } else {
            unit = bitcast<f32>((bits & 0x7f800000u) + 0x00800000u);
        }
    }
    for (var i = 0u; i < 256u; i = i + 1u) {
        if (largest / unit <= Q_MAX) {
            break;
        }
        unit = unit * 2.0;
    }
    return unit;
}

fn finite(v: f32) -> bool {
    return abs(v) <= 3.4028235e38;
}

// Writes values v0, v1 into bins b0, b1 of the profile at pb (n bins) of candidate record kc, as seasonal::store and
// seasonal::widen do in the engine: rounded to steps of the unit, ties to even; where one does not fit 16 bits, the
// unit doubles until both do, every bin is rounded to it, and the sum is the bins'.
fn store(pb: u32, n: u32, kc: u32, b0: u32, v0_in: f32, b1: u32, v1_in: f32) {
    let unit = cand[kc + UNIT];
    let q0 = profile[pb + b0];
    let q1 = profile[pb + b1];
    let inv = 1.0 / unit;
    let n0 = round(v0_in * inv);
    let n1 = round(v1_in * inv);
    if (abs(n0) <= Q_MAX && abs(n1) <= Q_MAX) {
        cand[kc + SUM] = cand[kc + SUM] + f32(i32(n0) - q0 + (i32(n1) - q1)) * unit;
        profile[pb + b0] = i32(n0);
        profile[pb + b1] = i32(n1);
        return;
    }
    var v0 = v0_in;
    var v1 = v1_in;
    if (!finite(v0)) {
        v0 = f32(q0) * unit;
    }
    if (!finite(v1)) {
        v1 = f32(q1) * unit;
    }
    let wide = max(unit_for(max(abs(v0), abs(v1))), unit);
    if (wide != unit && unit > 0.0) {
        let ratio = unit / wide;
        for (var b = 0u; b < n; b = b + 1u) {
            profile[pb + b] = i32(round(f32(profile[pb + b]) * ratio));
        }
    }
    if (wide > 0.0) {
        let inv_wide = 1.0 / wide;
        profile[pb + b0] = i32(round(v0 * inv_wide));
        profile[pb + b1] = i32(round(v1 * inv_wide));
    }
    var sum = 0;
    for (var b = 0u; b < n; b = b + 1u) {
        sum = sum + profile[pb + b];
    }
    cand[kc + UNIT] = wide;
    cand[kc + SUM] = f32(sum) * wide;
}

// A profile visit's learning weight at time step dt (ms) for a candidate of `period` ms and `bins` bins: the
// configured rate up to a step of a third of a bin's width (three visits a bin a period), past it as much as those
// visits would have learned, 1 - (1 - rate)^min(dt / reference, 3). seasonal::visit_rate in the engine.
fn visit_rate(dt: f32, period: f32, bins: u32) -> f32 {
    let reference = period / (f32(bins) * 3.0);
    if (dt <= reference) {
        return params.rate;
    }
    return 1.0 - pow(1.0 - params.rate, min(dt / reference, 3.0));
}

// 64 invocations per workgroup (SEASONAL_WORKGROUP_SIZE), 2-D dispatch.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= params.n) {
        return;
    }
    let pt = points[i];
    let s = pt.slot;
    let x = pt.x;
    let cands = params.cands;
    info[s * 2u] = min(info[s * 2u], 4294967294u) + 1u;
    if (pt.first == 1u) {
        plain[s * 2u] = x;
        for (var c = 0u; c < cands; c = c + 1u) {
            cand[(s * cands + c) * FIELDS + BASE] = x;
            cand[(s * cands + c) * FIELDS + FAST] = x;
        }
        switches[i] = 0;
        return;
    }
    let running = 1.0 / f32(info[s * 2u]);
    let a = max(params.alpha, running);
    let dt = pt.dt;
    let ew = max(1.0 - exp(-dt / (2.0 * params.shortest)), running);
    let flat_scale = plain[s * 2u + 1u];
    let flat_e = clipped_abs(x - plain[s * 2u], flat_scale);
    plain[s * 2u + 1u] = plain[s * 2u + 1u] + ew * (flat_e - plain[s * 2u + 1u]);
    plain[s * 2u] = plain[s * 2u] + a * clipped(x - plain[s * 2u], flat_scale);
    var best = -1;
    var best_gain = 0.0;
    for (var c = 0u; c < cands; c = c + 1u) {
        let k = s * cands + c;
        let period = params.periods[c];
        let b0 = pt.b0[c];
        let b1 = pt.b1[c];
        let frac = pt.frac[c];
        let pb = s * params.stride + params.offsets[c];
        let unit = cand[k * FIELDS + UNIT];
        let v0 = f32(profile[pb + b0]) * unit;
        let v1 = f32(profile[pb + b1]) * unit;
        let season = (1.0 - frac) * v0 + frac * v1 - cand[k * FIELDS + SUM] / f32(params.bins[c]);
        let y = x - season;
        let e = clipped_abs(y - cand[k * FIELDS + FAST], flat_scale);
        cand[k * FIELDS + ERR] = cand[k * FIELDS + ERR] + ew * (e - cand[k * FIELDS + ERR]);
        cand[k * FIELDS + FAST] = cand[k * FIELDS + FAST] + a * clipped(y - cand[k * FIELDS + FAST], flat_scale);
        let spread_scale = cand[k * FIELDS + SPREAD];
        let raw = y - cand[k * FIELDS + BASE];
        let w = max(1.0 - exp(-dt / period), running);
        cand[k * FIELDS + SPREAD] = spread_scale + w * (clipped_abs(raw, spread_scale) - spread_scale);
        let r = clipped(raw, spread_scale);
        cand[k * FIELDS + BASE] = cand[k * FIELDS + BASE] + w * r;
        let step = visit_rate(dt, period, params.bins[c]) * pt.weight * r;
        store(pb, params.bins[c], k * FIELDS, b0, v0 + step * (1.0 - frac), b1, v1 + step * frac);
        if (pt.elapsed >= params.min_periods * period) {
            let g = gain(s, k);
            if (best < 0 || g > best_gain) {
                best = i32(c);
                best_gain = g;
            }
        }
    }
    let season_now = info[s * 2u + 1u];
    var current_gain = 0.0;
    if (season_now > 0u) {
        current_gain = gain(s, s * cands + season_now - 1u);
    }
    var sw = 0;
    if (best >= 0 && best_gain >= params.min_gain && season_now != u32(best) + 1u
        && (season_now == 0u || best_gain > current_gain + 0.1)) {
        info[s * 2u + 1u] = u32(best) + 1u;
        sw = best + 1;
    } else if (season_now > 0u && current_gain < 0.5 * params.min_gain) {
        info[s * 2u + 1u] = 0u;
        sw = -1;
    }
    switches[i] = sw;
}
