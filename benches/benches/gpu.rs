//! GPU benchmarks: the robust update at batch sizes 1k … 1M on the CPU (scalar kernel) and the GPU (end to end:
//! upload, dispatch, read back), in one run so the result is a ratio; the crossover is printed by `gpubench`.
//! The spectral residual likewise at 1k … 100k. Without an adapter only the CPU rows run (and it says so).

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faultline::gpu::GpuContext;
use faultline_benches::gpu::{CpuCase, GpuCase, SpectralCpuCase, SpectralGpuCase};

fn robust(c: &mut Criterion) {
    let ctx = GpuContext::shared().map_err(|reason| eprintln!("skipped GPU rows: no GPU adapter: {reason}")).ok();
    let mut g = c.benchmark_group("robust_update_gpu_vs_cpu");
    g.sample_size(10);
    for &n in &[1_000usize, 10_000, 100_000, 1_000_000] {
        g.throughput(Throughput::Elements(n as u64));
        let mut cpu = CpuCase::new(n);
        g.bench_with_input(BenchmarkId::new("cpu", n), &n, |b, _| b.iter(|| cpu.run()));
        drop(cpu);
        if let Some(ctx) = &ctx {
            let mut gpu = GpuCase::new(Arc::clone(ctx), n);
            g.bench_with_input(BenchmarkId::new("gpu", n), &n, |b, _| b.iter(|| gpu.run()));
        }
    }
    g.finish();
}

/// The spectral residual (two 64-point FFTs per update) on full windows: where the GPU pays off at smaller batches.
fn spectral(c: &mut Criterion) {
    let ctx = GpuContext::shared().ok();
    let mut g = c.benchmark_group("spectral_update_gpu_vs_cpu");
    g.sample_size(10);
    for &n in &[1_000usize, 10_000, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        let mut cpu = SpectralCpuCase::new(n);
        g.bench_with_input(BenchmarkId::new("cpu", n), &n, |b, _| b.iter(|| cpu.run()));
        drop(cpu);
        if let Some(ctx) = &ctx {
            let mut gpu = SpectralGpuCase::new(Arc::clone(ctx), n);
            g.bench_with_input(BenchmarkId::new("gpu", n), &n, |b, _| b.iter(|| gpu.run()));
        }
    }
    g.finish();
}

criterion_group!(benches, robust, spectral);
criterion_main!(benches);
