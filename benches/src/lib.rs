//! Shared pieces of the benchmarks and the load generator: a synthetic source of many series, and the kernel
//! benchmark's inputs.

pub mod kernels;
pub mod telemetry;

pub mod gpu;

use std::sync::Arc;

use faultline::error::Result;
use faultline::model::{Batch, SeriesKey, TimeMs};
use faultline::source::{DeadLetters, Source};

/// The order in which a [`SyntheticSource`]'s series report within a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The same order every tick (one scraper walking its targets): a shard registers its series in that order, so
    /// each tick's points come in slot order.
    #[default]
    Fixed,
    /// A fresh random order every tick (many producers interleaving on one partition): a tick's points come in no
    /// relation to the order the shard registered the series in.
    Shuffled,
}

impl std::str::FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fixed" => Ok(Self::Fixed),
            "shuffled" => Ok(Self::Shuffled),
            _ => Err(format!("expected `fixed` or `shuffled`, got {s:?}")),
        }
    }
}

/// `series` series (`svc-<i % 500>` / `m<j>` with an `instance` label), each reporting once per tick for `ticks`
/// ticks, values a cheap deterministic noise around a per-series level with rare spikes, in the [`Order`] asked for.
pub struct SyntheticSource {
    keys: Vec<Arc<SeriesKey>>,
    /// The series of this tick, in reporting order (a permutation of `0..keys.len()`).
    order: Vec<u32>,
    reporting: Order,
    ticks: u64,
    tick: u64,
    next: usize,
    rng: u64,
}

impl SyntheticSource {
    pub fn new(series: usize, ticks: u64) -> Self {
        Self::with_order(series, ticks, Order::Fixed)
    }

    pub fn with_order(series: usize, ticks: u64, order: Order) -> Self {
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
        let mut src = Self {
            keys,
            order: (0..series as u32).collect(),
            reporting: order,
            ticks,
            tick: 0,
            next: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        };
        src.shuffle();
        src
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A new reporting order for the next tick (Fisher–Yates), where the order is [`Order::Shuffled`].
    fn shuffle(&mut self) {
        if self.reporting == Order::Fixed {
            return;
        }
        for i in (1..self.order.len()).rev() {
            let j = (self.next_random() % (i as u64 + 1)) as usize;
            self.order.swap(i, j);
        }
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
            for k in self.next..end {
                let i = self.order[k] as usize;
                let r = self.next_random();
                let noise = (r >> 40) as f64 / (1u64 << 24) as f64;
                let spike = if r & 0xffff == 0 { 50.0 } else { 0.0 };
                batch.push(&self.keys[i], t, 100.0 + (i % 97) as f64 + noise + spike);
            }
            self.next = end;
            if self.next == self.keys.len() {
                self.next = 0;
                self.tick += 1;
                self.shuffle();
            }
        }
        Ok(true)
    }

    fn describe(&self) -> String {
        let order = if self.reporting == Order::Shuffled { ", shuffled every tick" } else { "" };
        format!("synthetic ({} series x {} ticks{order})", self.keys.len(), self.ticks)
    }
}

/// Runs `series × ticks` synthetic points through router, shards, detector and collector (no sinks).
pub fn run_synthetic(series: usize, ticks: u64, shards: usize) -> Result<faultline::metrics::RunSummary> {
    run_synthetic_on(series, ticks, shards, faultline::config::Backend::Cpu)
}

/// [`run_synthetic`] with the series reporting in `order` within each tick.
pub fn run_synthetic_ordered(
    series: usize,
    ticks: u64,
    shards: usize,
    order: Order,
) -> Result<faultline::metrics::RunSummary> {
    run_pipeline(SyntheticSource::with_order(series, ticks, order), shards, faultline::config::Backend::Cpu)
}

/// [`run_synthetic`] on a given scoring backend.
pub fn run_synthetic_on(
    series: usize,
    ticks: u64,
    shards: usize,
    backend: faultline::config::Backend,
) -> Result<faultline::metrics::RunSummary> {
    run_pipeline(SyntheticSource::new(series, ticks), shards, backend)
}

fn run_pipeline(
    mut src: SyntheticSource,
    shards: usize,
    backend: faultline::config::Backend,
) -> Result<faultline::metrics::RunSummary> {
    let mut cfg = faultline::config::Config::default_config()?;
    cfg.engine.shards = shards;
    cfg.engine.backend = backend;
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    faultline::pipeline::run(&cfg, &mut src, faultline::rca::ServiceGraph::default(), Vec::new(), &mut dead)
}
