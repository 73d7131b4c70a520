// Spectral residual over a per-series sliding window of 64 points, one invocation per point of a chunk in which no
// series repeats. Invocation i appends points[i].x to series points[i].slot's window ring (resident in window/count)
// and writes the spectral-residual score of that point into scores[i] (0 while the window fills).
// Mirrors faultline_kernels::spectral::spectral_update_gather; the CPU twin is shaders/src/spectral.rs.
// Layouts are kept in sync with shaders/src/spectral.rs: Params = SpectralParamsGpu (288 bytes), Point = PointGpu
// (8 bytes, as in robust_update.wgsl); scores are plain f32.

struct Params {
    n: u32,
    extend: u32,
    look: u32,
    mag_window: u32,
    score_window: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // The forward FFT's twiddles (cos 2πk/64, −sin 2πk/64), two per vec4: k = 2i in .xy, k = 2i + 1 in .zw. The
    // host fills them from faultline_kernels::spectral::twiddles(), so both sides use the same bits.
    twiddle: array<vec4<f32>, 16>,
};

struct Point {
    slot: u32,
    x: f32,
};

const WINDOW: u32 = 64u;
const TINY: f32 = 1e-30;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> window: array<f32>;
@group(0) @binding(2) var<storage, read_write> count: array<u32>;
@group(0) @binding(3) var<storage, read> points: array<Point>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

// The FFT's working arrays, one set per invocation.
var<private> re: array<f32, 64>;
var<private> im: array<f32, 64>;
var<private> lg: array<f32, 64>;

fn rev(j: u32) -> u32 {
    return reverseBits(j) >> 26u;
}

fn twiddle(k: u32) -> vec2<f32> {
    let t = params.twiddle[k >> 1u];
    if ((k & 1u) == 1u) {
        return t.zw;
    }
    return t.xy;
}

// In-place radix-2 decimation-in-time FFT of re/im already in bit-reversed order; output in natural order.
fn fft() {
    var half = 1u;
    while (half < WINDOW) {
        let step = WINDOW / 2u / half;
        for (var start = 0u; start < WINDOW; start = start + 2u * half) {
            for (var k = 0u; k < half; k = k + 1u) {
                let w = twiddle(k * step);
                let a = start + k;
                let b = a + half;
                let vr = re[b] * w.x - im[b] * w.y;
                let vi = re[b] * w.y + im[b] * w.x;
                re[b] = re[a] - vr;
                im[b] = im[a] - vi;
                re[a] = re[a] + vr;
                im[a] = im[a] + vi;
            }
        }
        half = half * 2u;
    }
}

// 64 invocations per workgroup (SPECTRAL_WORKGROUP_SIZE): each holds 768 bytes of private arrays. 2-D dispatch.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= params.n) {
        return;
    }
    let s = points[i].slot;
    let base = s * WINDOW;
    let c = count[s];
    window[base + c % WINDOW] = points[i].x;
    var cn = c + 1u;
    if (cn == 0u) {
        cn = WINDOW;
    }
    count[s] = cn;
    let l = WINDOW - params.extend;
    if (cn < l) {
        scores[i] = 0.0;
        return;
    }
    let start = cn - l;
    var sum = 0.0;
    for (var j = 0u; j < l; j = j + 1u) {
        sum = sum + window[base + (start + j) % WINDOW];
    }
    let mean = sum / f32(l);
    // The extrapolation from the points before the newest: x[e−m+1] + Σ (x[e] − x[e−i]) / i, e = n − 1.
    let e = l - 2u;
    let at_e = window[base + (start + e) % WINDOW] - mean;
    var g = 0.0;
    for (var k = 1u; k <= params.look; k = k + 1u) {
        g = g + (at_e - (window[base + (start + e - k) % WINDOW] - mean)) / f32(k);
    }
    let next = (window[base + (start + e + 1u - params.look) % WINDOW] - mean) + g;
    for (var j = 0u; j < WINDOW; j = j + 1u) {
        var v = next;
        if (j < l) {
            v = window[base + (start + j) % WINDOW] - mean;
        }
        re[rev(j)] = v;
        im[rev(j)] = 0.0;
    }
    fft();
    for (var k = 0u; k < WINDOW; k = k + 1u) {
        lg[k] = 0.5 * log(max(re[k] * re[k] + im[k] * im[k], TINY));
    }
    lg[0] = lg[1];
    let q = params.mag_window;
    let h = q / 2u;
    for (var k = 0u; k < WINDOW; k = k + 1u) {
        var a = 0.0;
        for (var t = 0u; t < q; t = t + 1u) {
            a = a + lg[(k + WINDOW - h + t) % WINDOW];
        }
        let f = exp(-(a / f32(q)));
        re[k] = re[k] * f;
        im[k] = -(im[k] * f);
    }
    re[0] = 0.0;
    im[0] = 0.0;
    for (var j = 0u; j < WINDOW; j = j + 1u) {
        let r = rev(j);
        if (j < r) {
            let tr = re[j];
            re[j] = re[r];
            re[r] = tr;
            let ti = im[j];
            im[j] = im[r];
            im[r] = ti;
        }
    }
    fft();
    let z = params.score_window;
    var total = 0.0;
    var newest = 0.0;
    for (var j = l - z; j < l; j = j + 1u) {
        newest = sqrt(re[j] * re[j] + im[j] * im[j]);
        total = total + newest;
    }
    let avg = total / f32(z);
    scores[i] = (newest - avg) / max(avg, TINY);
}
