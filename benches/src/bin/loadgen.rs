//! End-to-end load generator: synthetic series through the whole pipeline; prints the run summary (points/s and
//! per-batch latency p50/p99/p99.9) as JSON.
//!
//! `cargo run --release -p faultline-benches --bin loadgen -- SERIES TICKS [SHARDS] [fixed|shuffled]`
//!
//! ORDER is the series' reporting order within a tick: `fixed` (the default, the same order every tick) or `shuffled`
//! (a fresh random order every tick, as when many producers interleave on one partition).

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(d), |s| s.parse().map_err(|e| anyhow::anyhow!("argument {}: {s:?}: {e}", i + 1)))
    };
    let (series, ticks, shards) = (arg(0, 100_000)?, arg(1, 20)?, arg(2, 0)?);
    let order: faultline_benches::Order = match args.get(3) {
        Some(s) => s.parse().map_err(|e| anyhow::anyhow!("argument 4: {e}"))?,
        None => Default::default(),
    };
    let summary = faultline_benches::run_synthetic_ordered(series as usize, ticks, shards as usize, order)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
