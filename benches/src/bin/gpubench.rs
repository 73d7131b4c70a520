//! GPU vs CPU robust-update sweep: updates/s by batch size on both backends, the crossover batch size, the GPU's
//! achieved bandwidth against its measured device copy bandwidth, the same sweep and crossover for the spectral
//! residual (up to SPECTRAL_MAX_BATCH, default min(MAX_BATCH, 1M)) with its cost per update against the robust
//! update's, and the end-to-end pipeline on both backends. Prints one JSON document.
//!
//! `cargo run --release -p faultline-benches --bin gpubench -- [MAX_BATCH] [SECONDS_PER_POINT] [PIPELINE_SERIES]
//! [SPECTRAL_MAX_BATCH]`

use std::time::Duration;

use faultline::config::Backend;
use faultline::gpu::GpuContext;
use faultline_benches::gpu::{crossover, spectral_sweep, sweep};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: f64| -> anyhow::Result<f64> {
        args.get(i).map_or(Ok(d), |s| s.parse().map_err(|e| anyhow::anyhow!("argument {}: {s:?}: {e}", i + 1)))
    };
    let (max_batch, secs, pipeline_series) = (arg(0, 1e6)? as usize, arg(1, 1.0)?, arg(2, 0.0)? as usize);
    let ctx = match GpuContext::shared() {
        Ok(ctx) => Some(ctx),
        Err(reason) => {
            eprintln!("no GPU adapter ({reason}): CPU rows only");
            None
        }
    };
    let mut batches = Vec::new();
    let mut n = 1_000usize;
    while n <= max_batch {
        batches.push(n);
        n *= 10;
    }
    let rows = sweep(ctx.as_ref(), &batches, Duration::from_secs_f64(secs));
    for r in &rows {
        eprintln!(
            "{:>13} batch {:>10}: {:>14.0} updates/s {:>9.2} GB/s",
            r.backend,
            r.batch,
            r.updates_per_s,
            r.bytes_per_s / 1e9
        );
    }
    let spectral_max = arg(3, max_batch.min(1_000_000) as f64)? as usize;
    let spectral_rows =
        spectral_sweep(ctx.as_ref(), &batches.iter().copied().filter(|&b| b <= spectral_max).collect::<Vec<_>>(), {
            Duration::from_secs_f64(secs)
        });
    for r in &spectral_rows {
        eprintln!("spectral {:>13} batch {:>10}: {:>14.0} updates/s", r.backend, r.batch, r.updates_per_s);
    }
    // Cost per update of the spectral residual in multiples of the robust update's, per backend, at the largest
    // batch both swept.
    let cost_ratio = |backend: &str| {
        let last = spectral_rows.iter().filter(|r| r.backend == backend).map(|r| r.batch).max()?;
        let rate = |rows: &[faultline_benches::gpu::Row]| {
            rows.iter().find(|r| r.backend == backend && r.batch == last).map(|r| r.updates_per_s)
        };
        Some(rate(&rows)? / rate(&spectral_rows)?)
    };
    let copy = match &ctx {
        Some(ctx) => Some(ctx.measure_copy_bandwidth(256 << 20, 20).map_err(|e| anyhow::anyhow!("{}", e.0))?),
        None => None,
    };
    let best_resident = rows.iter().filter(|r| r.backend == "gpu-resident").map(|r| r.bytes_per_s).fold(0.0, f64::max);
    let mut pipeline = Vec::new();
    if pipeline_series > 0 {
        for (backend, which) in [("cpu", Backend::Cpu), ("gpu", Backend::Gpu)] {
            if which == Backend::Gpu && ctx.is_none() {
                continue;
            }
            let s = faultline_benches::run_synthetic_on(pipeline_series, 10, 0, which)?;
            eprintln!("pipeline {backend}: {:.0} points/s ({})", s.points_per_s, s.backend_note);
            pipeline.push(json!({"backend": backend, "series": pipeline_series, "summary": s}));
        }
    }
    let doc = json!({
        "adapter": ctx.as_ref().map(|c| c.description().to_string()),
        "bytes_per_update": faultline_shaders::robust::ROBUST_BYTES_PER_UPDATE,
        "rows": rows,
        "crossover_batch": crossover(&rows),
        "device_copy_bytes_per_s": copy,
        "best_resident_bytes_per_s": best_resident,
        "resident_fraction_of_copy": copy.map(|c| best_resident / c),
        "pipeline": pipeline,
        "spectral": {
            "bytes_per_update": faultline_shaders::spectral::SPECTRAL_BYTES_PER_UPDATE,
            "rows": spectral_rows,
            "crossover_batch": crossover(&spectral_rows),
            "cost_vs_robust": {
                "cpu": cost_ratio("cpu"),
                "gpu": cost_ratio("gpu"),
                "gpu-resident": cost_ratio("gpu-resident"),
            },
        },
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
