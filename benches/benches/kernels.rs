//! Kernel benchmarks: the robust update-and-score kernel in points/s at 1k, 100k and 1M series, every
//! implementation this CPU has beside the scalar oracle, and beside a STREAM-like triad over the same bytes (the
//! memory-bandwidth bound), all in one run so that the results read as ratios.
//!
//! Every case moves 36 bytes per point: it reads level, mad, count and x (16 B) and writes level, mad, count, z
//! and sigma (20 B). Throughput is reported in points (elements) per second; bytes/s = points/s × 36, and a
//! kernel's points/s over the triad's at the same n is its fraction of the bandwidth bound.
//!
//! - `robust/dense-{impl}/{n}`: one point per series, point i updates series i (a tick).
//! - `robust/gather-seq-{impl}/{n}`: the engine's form, every series once, in slot order.
//! - `robust/gather-shuffled-{impl}/{n}`: the engine's form, every series once, in a random order.
//! - `robust/triad/{n}`: `level += s·x; mad += s·x; count += 1; z = x − level; sigma = mad + x` over the same
//!   arrays.
//!
//! Inputs and cases live in `faultline_benches::kernels`; `cargo run --release -p faultline-benches --bin
//! kernel_table` measures the same cases as a best-of-N markdown table, which holds up better on a busy machine.
//! Run: `cargo bench -p faultline-benches --bench kernels -- --warm-up-time 1 --measurement-time 3`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faultline_benches::kernels::{BYTES_PER_POINT, Bench, SERIES};
use faultline_kernels::Kernels;

fn robust(c: &mut Criterion) {
    eprintln!(
        "kernels: {:?}; detected {}; {BYTES_PER_POINT} bytes per point",
        Kernels::available().iter().map(|k| k.name()).collect::<Vec<_>>(),
        Kernels::detect(),
    );
    let mut g = c.benchmark_group("robust");
    for n in SERIES {
        let mut bench = Bench::new(n);
        g.throughput(Throughput::Elements(n as u64));
        for mut case in bench.cases() {
            g.bench_function(BenchmarkId::new(case.name.as_str(), n), |b| b.iter(&mut case.run));
        }
    }
    g.finish();
}

criterion_group!(benches, robust);
criterion_main!(benches);
