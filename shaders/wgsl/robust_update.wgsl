// Robust level/scale update and z-score, one invocation per point of a dense batch (one point per series).
// Mirrors faultline_kernels::scalar::robust_update_one; the CPU twin is shaders/src/robust.rs.
// Layout of Params is kept in sync with shaders/src/robust.rs (RobustParamsGpu, 48 bytes).

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

const MAD_TO_SIGMA: f32 = 1.2533141;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> level: array<f32>;
@group(0) @binding(2) var<storage, read_write> mad: array<f32>;
@group(0) @binding(3) var<storage, read_write> count: array<u32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;

fn floored_sigma(l: f32, m: f32) -> f32 {
    return max(max(m * MAD_TO_SIGMA, params.abs_floor), params.rel_floor * abs(l));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= params.n) {
        return;
    }
    let xi = x[i];
    let c = count[i];
    if (c == 0u) {
        level[i] = xi;
        mad[i] = 0.0;
        count[i] = 1u;
        z[i] = 0.0;
        return;
    }
    let l = level[i];
    let m = mad[i];
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
    level[i] = l + a * rc;
    mad[i] = m + b * (dev - m);
    count[i] = min(c, 4294967294u) + 1u;
    z[i] = zi;
}
