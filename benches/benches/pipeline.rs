//! End-to-end engine throughput: points/s through router, shard workers, detector and collector, on synthetic
//! telemetry with 10k and 1M series. Each iteration builds a fresh pipeline, so the first tick of every series also
//! pays for creating its model.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faultline_benches::run_synthetic;

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    for &(series, ticks) in &[(10_000usize, 100u64), (1_000_000, 4)] {
        for shards in [1usize, 2] {
            g.throughput(Throughput::Elements(series as u64 * ticks));
            g.bench_with_input(BenchmarkId::new(format!("{shards}-shards"), series), &series, |b, _| {
                b.iter(|| run_synthetic(series, ticks, shards).expect("pipeline runs"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
