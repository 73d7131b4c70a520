// The calibrated threshold: streaming peaks-over-threshold (SPOT) per series, one invocation per point of a chunk in
// which no series repeats. Invocation i reads series points[i].slot's calibrator, writes the surprise (-log10 p) of
// points[i].x under the fitted tail as it stood before the point, learns from the point unless the fit already calls
// it beyond the alarm level (an anomaly must not teach the calibration that it is normal), and writes the calibrated
// band: the value whose surprise is the alarm level, after the update.
// Mirrors faultline::detect::spot::Spot (surprise, update, quantile_at) as the engine's band calibration uses it; the
// CPU twin is shaders/src/spot.rs. WGSL has no f64: the surprise and band are computed in f32, so they agree with
// the CPU reference within a tolerance (see the parity test), while the state update is the same f32 arithmetic.
// Layouts are kept in sync with shaders/src/spot.rs: Params = SpotParamsGpu (32 bytes), State = SpotStateGpu
// (20 bytes), Point = SpotPointGpu (12 bytes), Out = SpotOutGpu (8 bytes).

struct Params {
    quantile: f32,
    step: f32,
    min_peaks: u32,
    memory: f32,
    max_shape: f32,
    alarm: f32,
    n: u32,
    _pad: u32,
};

struct State {
    t: f32,
    m1: f32,
    m2: f32,
    n: u32,
    peaks: u32,
};

struct Point {
    slot: u32,
    x: f32,
    // Whether x may join the peaks while the calibrator has too few of them to judge it (1) or not (0): the caller's
    // own verdict until the fit can give one (the engine's level-shift calibration uses its CUSUM threshold).
    learn: u32,
};

struct Out {
    // Surprise of x before the update; -1 while the calibrator has too few peaks.
    surprise: f32,
    // The value whose surprise is `alarm` after the update; -1 while uncalibrated.
    band: f32,
};

const LN_10: f32 = 2.3025851;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> state: array<State>;
@group(0) @binding(2) var<storage, read> points: array<Point>;
@group(0) @binding(3) var<storage, read_write> outs: array<Out>;

// (shape, scale) of the fitted generalised Pareto tail: method of moments, shape clamped to [0, max_shape].
fn gpd(st: State) -> vec2<f32> {
    let mean = max(st.m1, 1e-6);
    let var_ = max(st.m2 - st.m1 * st.m1, 1e-12);
    let shape = clamp(0.5 * (1.0 - mean * mean / var_), 0.0, params.max_shape);
    return vec2<f32>(shape, max(mean * (1.0 - shape), 1e-6));
}

fn surprise(st: State, x: f32) -> f32 {
    let g = gpd(st);
    let rate = 1.0 - params.quantile;
    let y = (x - st.t) / g.y;
    var tail_ln = -y;
    if (y > 0.0 && g.x >= 1e-4) {
        tail_ln = -log(1.0 + g.x * y) / g.x;
    }
    return max(-(log(rate) + tail_ln) / LN_10, 0.0);
}

fn quantile_at(st: State, s: f32) -> f32 {
    let g = gpd(st);
    let rate = 1.0 - params.quantile;
    let tail_ln = -s * LN_10 - log(rate);
    var y = -tail_ln;
    if (g.x >= 1e-4) {
        y = (exp(-g.x * tail_ln) - 1.0) / g.x;
    }
    return st.t + y * g.y;
}

// 256 invocations per workgroup (SPOT_WORKGROUP_SIZE), 2-D dispatch like robust_update.wgsl.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params.n) {
        return;
    }
    let s = points[i].slot;
    let x = points[i].x;
    var st = state[s];
    var out = Out(-1.0, -1.0);
    var learn = points[i].learn != 0u;
    if (st.peaks >= params.min_peaks) {
        out.surprise = surprise(st, x);
        learn = out.surprise < params.alarm;
    }
    // Not finite (NaN or infinite): the calibrator is left alone, as on the CPU.
    if (x == x && abs(x) <= 3.4028235e38) {
        st.n = min(st.n, 4294967294u) + 1u;
        if (x > st.t) {
            if (learn) {
                let y = x - st.t;
                st.peaks = min(st.peaks, 4294967294u) + 1u;
                let w = max(1.0 / f32(st.peaks), 1.0 / params.memory);
                st.m1 = st.m1 + w * (y - st.m1);
                st.m2 = st.m2 + w * (y * y - st.m2);
            }
            st.t = st.t + params.step * params.quantile;
        } else {
            st.t = st.t - params.step * (1.0 - params.quantile);
        }
        state[s] = st;
    }
    if (st.peaks >= params.min_peaks) {
        out.band = quantile_at(st, params.alarm);
    }
    outs[i] = out;
}
