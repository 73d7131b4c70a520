//! Replaying the same points from JSON lines, CSV, Parquet and Arrow IPC files, in one run: points/s and CPU-seconds
//! per million points of the whole pipeline (source decoding included) for each format, and each file's size.
//!
//! `cargo run --release -p faultline-benches --bin replay_formats -- SERIES TICKS [SHARDS]`

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use faultline::config::{Config, SourceKind, TableFormat};
use faultline::source::DeadLetters;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(d), |s| s.parse().map_err(|e| anyhow::anyhow!("argument {}: {s:?}: {e}", i + 1)))
    };
    let (series, ticks, shards) = (arg(0, 10_000)?, arg(1, 100)?, arg(2, 1)?);
    let dir = std::env::temp_dir().join(format!("faultline-replay-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // Tick after tick, every series once: a scrape-ordered table, 20 metrics a service, a smooth value with noise.
    let n = series * ticks;
    let (mut times, mut services, mut metrics, mut values) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for t in 0..ticks {
        for s in 0..series {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            times.push(1_767_225_600_000 + t as i64 * 60_000);
            services.push(format!("svc-{}", s / 20));
            metrics.push(format!("metric-{}", s % 20));
            values.push(100.0 + (s % 17) as f64 + (x >> 40) as f64 / (1u64 << 24) as f64);
        }
    }
    let mut jsonl = String::with_capacity(n * 90);
    for i in 0..n {
        jsonl += &format!(
            "{{\"time\":{},\"service\":\"{}\",\"metric\":\"{}\",\"value\":{}}}\n",
            times[i], services[i], metrics[i], values[i]
        );
    }
    std::fs::write(dir.join("points.jsonl"), jsonl)?;
    let batch = RecordBatch::try_from_iter([
        ("time", Arc::new(Int64Array::from(times)) as ArrayRef),
        ("service", Arc::new(StringArray::from(services)) as ArrayRef),
        ("metric", Arc::new(StringArray::from(metrics)) as ArrayRef),
        ("value", Arc::new(Float64Array::from(values)) as ArrayRef),
    ])?;
    let formats = [("csv", TableFormat::Csv), ("parquet", TableFormat::Parquet), ("arrow", TableFormat::Arrow)];
    for (ext, format) in formats {
        faultline::table::write_table(&dir.join(format!("points.{ext}")), format, &batch)?;
    }

    println!("{series} series × {ticks} ticks = {n} points, {shards} shard(s), no sinks");
    println!("| format | file size | points/s | CPU-seconds per million points | vs JSON lines |");
    println!("|---|---:|---:|---:|---:|");
    let mut base = None;
    for (name, ext, kind) in [
        ("JSON lines", "jsonl", SourceKind::Jsonl),
        ("CSV", "csv", SourceKind::Table),
        ("Parquet", "parquet", SourceKind::Table),
        ("Arrow IPC", "arrow", SourceKind::Table),
    ] {
        let path = dir.join(format!("points.{ext}"));
        let mut cfg = Config::default_config()?;
        cfg.engine.shards = shards;
        cfg.source.kind = kind;
        cfg.source.path = path.display().to_string();
        let (mut source, graph) = faultline::app::build_source(&cfg)?;
        let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
        let r = faultline::pipeline::run(&cfg, source.as_mut(), graph, Vec::new(), &mut dead)?;
        anyhow::ensure!(r.points == n as u64, "{name}: {} points of {n}", r.points);
        let rate = r.points_per_s;
        let base = *base.get_or_insert(rate);
        println!(
            "| {name} | {:.1} MB | {:.2} M | {:.3} | {:.2}× |",
            std::fs::metadata(&path)?.len() as f64 / 1e6,
            rate / 1e6,
            r.cpu_s_per_million_points,
            rate / base
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
