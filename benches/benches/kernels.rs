//! Kernel benchmarks: the robust update-and-score kernel in points/s at 1k, 100k and 1M series, every
//! implementation this CPU has beside the scalar oracle, and beside a STREAM-like triad over the same bytes (the
//! memory-bandwidth bound), all in one run so that the results read as ratios.
//!
//! Every benchmark here moves 36 bytes per point: it reads level, mad, count and x (16 B) and writes level, mad,
//! count, z and sigma (20 B). Throughput is reported in points (elements) per second; bytes/s = points/s × 36,
//! and a kernel's points/s over the triad's at the same n is its fraction of the bandwidth bound.
//!
//! - `robust/dense-{impl}/{n}`: one point per series, point i updates series i (a tick).
//! - `robust/gather-seq-{impl}/{n}`: the engine's form, every series once, in slot order.
//! - `robust/gather-shuffled-{impl}/{n}`: the engine's form, every series once, in a random order.
//! - `robust/triad/{n}`: `level += s·x; mad += s·x; count += 1; z = x − level; sigma = mad + x` over the same arrays.
//!
//! The input alternates between two batches (level ± noise) with 1 % spikes, so the model stays in its steady
//! state with real residuals and some anomalous points; each implementation gets its own, pre-warmed, state.
//! Run: `cargo bench -p faultline-benches --bench kernels -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faultline_kernels::{Kernels, RobustParams, RobustState};

/// Bytes each point reads and writes, in the kernels and in the triad.
const BYTES_PER_POINT: u64 = 16 + 20;

/// Two batches of `n` points, one per series, and a random order of the series.
struct Input {
    x: [Vec<f32>; 2],
    shuffled: Vec<u32>,
    sequential: Vec<u32>,
}

impl Input {
    fn new(n: usize) -> Self {
        let mut s = 0x9e37_79b9u32;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let mut a = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        for i in 0..n {
            let base = 10.0 + (i % 997) as f32;
            let noise = (next() >> 8) as f32 / (1u32 << 24) as f32;
            let spike = if next() % 100 == 0 { 50.0 } else { 0.0 };
            a.push(base + noise + spike);
            b.push(base - noise);
        }
        let mut shuffled: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            shuffled.swap(i, next() as usize % (i + 1));
        }
        Self { x: [a, b], shuffled, sequential: (0..n as u32).collect() }
    }

    /// `x` in the order of `slots`.
    fn permuted(&self, slots: &[u32]) -> [Vec<f32>; 2] {
        self.x.clone().map(|x| slots.iter().map(|&s| x[s as usize]).collect())
    }
}

/// A state of `n` series past its warm-up.
fn warm_state(n: usize, input: &Input, p: &RobustParams) -> RobustState {
    let mut st = RobustState::default();
    for _ in 0..n {
        st.push();
    }
    let (mut z, mut sigma) = (vec![0.0; n], vec![0.0; n]);
    for round in 0..32 {
        Kernels::Scalar.robust_update_dense(st.as_slices_mut(), &input.x[round % 2], &mut z, &mut sigma, p);
    }
    st
}

/// The same traffic as the kernel with next to no arithmetic.
#[inline(always)]
fn triad_body(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    let s = 0.5f32;
    for (((((l, m), c), &x), z), sg) in level.iter_mut().zip(mad).zip(count).zip(x).zip(z).zip(sigma) {
        let (l0, m0) = (*l, *m);
        *l = l0 + s * x;
        *m = m0 + s * x;
        *c = c.wrapping_add(1);
        *z = x - l0;
        *sg = m0 + x;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn triad_avx2(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    triad_body(level, mad, count, x, z, sigma)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn triad_avx512(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    triad_body(level, mad, count, x, z, sigma)
}

/// The triad, compiled for the widest vectors the CPU has so that it is bound by memory and not by the SSE2
/// baseline.
fn triad(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { triad_avx512(level, mad, count, x, z, sigma) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { triad_avx2(level, mad, count, x, z, sigma) };
    }
    triad_body(level, mad, count, x, z, sigma)
}

fn robust(c: &mut Criterion) {
    let p = RobustParams::default();
    let impls = Kernels::available();
    eprintln!(
        "kernels: {:?}; detected {}; {} bytes per point",
        impls.iter().map(|k| k.name()).collect::<Vec<_>>(),
        Kernels::detect(),
        BYTES_PER_POINT
    );
    let mut g = c.benchmark_group("robust");
    for &n in &[1_000usize, 100_000, 1_000_000] {
        let input = Input::new(n);
        let (mut z, mut sigma) = (vec![0.0f32; n], vec![0.0f32; n]);
        g.throughput(Throughput::Elements(n as u64));

        for &k in &impls {
            let mut st = warm_state(n, &input, &p);
            let mut round = 0;
            g.bench_function(BenchmarkId::new(format!("dense-{k}"), n), |b| {
                b.iter(|| {
                    round ^= 1;
                    k.robust_update_dense(st.as_slices_mut(), black_box(&input.x[round]), &mut z, &mut sigma, &p)
                })
            });
        }
        for (order, slots) in [("seq", &input.sequential), ("shuffled", &input.shuffled)] {
            let x = input.permuted(slots);
            for &k in &impls {
                let mut st = warm_state(n, &input, &p);
                let mut round = 0;
                g.bench_function(BenchmarkId::new(format!("gather-{order}-{k}"), n), |b| {
                    b.iter(|| {
                        round ^= 1;
                        k.robust_update_gather(&mut st, slots, black_box(&x[round]), &mut z, &mut sigma, &p)
                    })
                });
            }
        }

        let mut st = warm_state(n, &input, &p);
        g.bench_function(BenchmarkId::new("triad", n), |b| {
            b.iter(|| {
                let s = st.as_slices_mut();
                triad(s.level, s.mad, s.count, black_box(&input.x[0]), &mut z, &mut sigma)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, robust);
criterion_main!(benches);
