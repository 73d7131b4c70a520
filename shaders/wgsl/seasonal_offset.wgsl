// Seasonal offsets, one invocation per query: the value of a series' active seasonal profile at a point's phase, which
// the robust model's input has removed (SeasonalBank::offset in engine/src/detect/seasonal.rs). It reads the state
// seasonal_update.wgsl keeps resident (same buffers, same layout) and writes offsets[i] for queries[i]: 0 for a series
// without an active season. The host computes the phase of the point under the series' active candidate (it mirrors
// which one is active from the update's switch codes); the shader reads the active candidate from the device's own
// state. The CPU twin is shaders/src/seasonal.rs (seasonal_offset_twin). Layouts are kept in sync with
// shaders/src/seasonal.rs: Params = SeasonalParamsGpu (80 bytes), Query = SeasonalQueryGpu (16 bytes).

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
    periods: vec4<f32>,
    // Each candidate's profile bins, and where they start among a series' `stride` values.
    bins: vec4<u32>,
    offsets: vec4<u32>,
};

struct Query {
    slot: u32,
    // The bins around the point's phase under the series' active candidate, and the interpolation fraction.
    b0: u32,
    b1: u32,
    frac: f32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> profile: array<i32>;
@group(0) @binding(2) var<storage, read> cand: array<f32>;
@group(0) @binding(3) var<storage, read> info: array<u32>;
@group(0) @binding(4) var<storage, read> queries: array<Query>;
@group(0) @binding(5) var<storage, read_write> offsets: array<f32>;

// Index of `sum` and `unit` in a candidate's [sum, base, spread, fast, err, unit].
const SUM: u32 = 0u;
const UNIT: u32 = 5u;
const FIELDS: u32 = 6u;

// 64 invocations per workgroup (SEASONAL_WORKGROUP_SIZE), 2-D dispatch.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= params.n) {
        return;
    }
    let q = queries[i];
    let season = info[q.slot * 2u + 1u];
    if (season == 0u) {
        offsets[i] = 0.0;
        return;
    }
    let c = season - 1u;
    let k = q.slot * params.cands + c;
    let pb = q.slot * params.stride + params.offsets[c];
    let unit = cand[k * FIELDS + UNIT];
    offsets[i] = (1.0 - q.frac) * (f32(profile[pb + q.b0]) * unit) + q.frac * (f32(profile[pb + q.b1]) * unit)
        - cand[k * FIELDS + SUM] / f32(params.bins[c]);
}
