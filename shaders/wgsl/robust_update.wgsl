// Robust level/scale update and z-score, one invocation per point of a chunk in which no series repeats.
// Invocation i updates series points[i].slot with points[i].x, against state resident in level/mad/count, and writes
// the z-score of x against the model before the update, the sigma it used and the level it read into scores[i].
// Mirrors faultline_kernels::scalar::robust_update_one; the CPU twin is shaders/src/robust.rs.
// Layouts are kept in sync with shaders/src/robust.rs: Params = RobustParamsGpu (48 bytes), Point = PointGpu
// (8 bytes), Score = ScoreGpu (12 bytes).

struct Params {
    alpha: f32,
    beta: f32,
    huber: f32,
    threshold: f32,
    anomaly_weight: f32,
    abs_floor: f32,
    rel_floor: f32,
    n: u32,
    _pad: vec4<u32>,
};

struct Point {
    slot: u32,
    x: f32,
};

struct Score {
    z: f32,
    sigma: f32,
    level: f32,
};

const MAD_TO_SIGMA: f32 = 1.2533141;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> level: array<f32>;
@group(0) @binding(2) var<storage, read_write> mad: array<f32>;
@group(0) @binding(3) var<storage, read_write> count: array<u32>;
@group(0) @binding(4) var<storage, read> points: array<Point>;
@group(0) @binding(5) var<storage, read_write> scores: array<Score>;

fn floored_sigma(l: f32, m: f32) -> f32 {
    return max(max(m * MAD_TO_SIGMA, params.abs_floor), params.rel_floor * abs(l));
}

// 256 invocations per workgroup (ROBUST_WORKGROUP_SIZE), 2-D dispatch: a chunk may need more than 65535 workgroups.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= params.n) {
        return;
    }
    let s = points[i].slot;
    let xi = points[i].x;
    let c = count[s];
    if (c == 0u) {
        level[s] = xi;
        mad[s] = 0.0;
        count[s] = 1u;
        scores[i] = Score(0.0, floored_sigma(xi, 0.0), xi);
        return;
    }
    let l = level[s];
    let m = mad[s];
    let sigma = floored_sigma(l, m);
    let r = xi - l;
    let zi = r / sigma;
    let warm = 1.0 / (f32(c) + 1.0);
    var a = max(params.alpha, warm);
    var b = max(params.beta, warm);
    if (abs(zi) >= params.threshold && c >= 8u) {
        a = a * params.anomaly_weight;
        b = 0.0;
    }
    let clip = params.huber * sigma;
    let rc = clamp(r, -clip, clip);
    var dev = abs(rc);
    if (c == 1u) {
        dev = abs(r);
    }
    level[s] = l + a * rc;
    mad[s] = m + b * (dev - m);
    count[s] = min(c, 4294967294u) + 1u;
    scores[i] = Score(zi, sigma, l);
}
