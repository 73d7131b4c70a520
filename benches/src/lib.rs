//! Shared pieces of the benchmarks and the load generator: a synthetic source of many series, and the kernel
//! benchmark's inputs.

pub mod kernels;
pub mod telemetry;

pub mod gpu;

use std::sync::Arc;

use faultline::error::Result;
use faultline::model::{Batch, SeriesKey, TimeMs};
use faultline::source::{DeadLetters, Source};

/// `series` series (`svc-<i % 500>` / `m<j>` with an `instance` label), each reporting once per tick for `ticks`
/// ticks, values a cheap deterministic noise around a per-series level with rare spikes.
pub struct SyntheticSource {
    keys: Vec<Arc<SeriesKey>>,
    ticks: u64,
    tick: u64,
    next: usize,
    rng: u64,
}

impl SyntheticSource {
    pub fn new(series: usize, ticks: u64) -> Self {
        let keys = (0..series)
            .map(|i| {
                let inst = format!("i{}", i / 4000);
                Arc::new(SeriesKey::new(
                    &format!("svc-{}", i % 500),
                    &format!("m{}", (i / 500) % 8),
                    [("instance", inst)],
                ))
            })
            .collect();
        Self { keys, ticks, tick: 0, next: 0, rng: 0x9e37_79b9_7f4a_7c15 }
    }

    pub fn total_points(&self) -> u64 {
        self.keys.len() as u64 * self.ticks
    }
}

impl Source for SyntheticSource {
    fn next_batch(&mut self, batch: &mut Batch, max: usize, _dead: &mut DeadLetters) -> Result<bool> {
        while batch.len() < max {
            if self.tick == self.ticks {
                return Ok(false);
            }
            let t: TimeMs = 1_767_571_200_000 + self.tick as i64 * 60_000;
            let end = (self.next + (max - batch.len())).min(self.keys.len());
            for i in self.next..end {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let noise = (self.rng >> 40) as f64 / (1u64 << 24) as f64;
                let spike = if self.rng & 0xffff == 0 { 50.0 } else { 0.0 };
                batch.push(&self.keys[i], t, 100.0 + (i % 97) as f64 + noise + spike);
            }
            self.next = end;
            if self.next == self.keys.len() {
                self.next = 0;
                self.tick += 1;
            }
        }
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("synthetic ({} series x {} ticks)", self.keys.len(), self.ticks)
    }
}

/// Runs `series × ticks` synthetic points through router, shards, detector and collector (no sinks).
pub fn run_synthetic(series: usize, ticks: u64, shards: usize) -> Result<faultline::metrics::RunSummary> {
    run_synthetic_on(series, ticks, shards, faultline::config::Backend::Cpu)
}

/// [`run_synthetic`] on a given scoring backend.
pub fn run_synthetic_on(
    series: usize,
    ticks: u64,
    shards: usize,
    backend: faultline::config::Backend,
) -> Result<faultline::metrics::RunSummary> {
    let mut cfg = faultline::config::Config::default_config()?;
    cfg.engine.shards = shards;
    cfg.engine.backend = backend;
    let mut src = SyntheticSource::new(series, ticks);
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    faultline::pipeline::run(&cfg, &mut src, faultline::rca::ServiceGraph::default(), Vec::new(), &mut dead)
}
