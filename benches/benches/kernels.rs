//! Kernel benchmarks: the robust update-and-score kernel, points/s by series count.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faultline_kernels::{Kernels, RobustParams, RobustState};

fn robust(c: &mut Criterion) {
    let p = RobustParams::default();
    let mut g = c.benchmark_group("robust_update_gather");
    for &n in &[1_000usize, 100_000, 1_000_000] {
        let mut st = RobustState::default();
        for _ in 0..n {
            st.push();
        }
        let slots: Vec<u32> = (0..n as u32).collect();
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32).collect();
        let mut z = vec![0.0f32; n];
        let mut sigma = vec![0.0f32; n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new(Kernels::Scalar.name(), n), &n, |b, _| {
            b.iter(|| Kernels::Scalar.robust_update_gather(&mut st, &slots, &x, &mut z, &mut sigma, &p))
        });
    }
    g.finish();
}

criterion_group!(benches, robust);
criterion_main!(benches);
