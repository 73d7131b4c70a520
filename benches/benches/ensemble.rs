//! The full per-series ensemble's cost per point: `ShardDetector::process` (robust kernel, seasonal profile, CUSUM,
//! two SPOT calibrations, two sketches, fatigue, novelty, M-of-N and events) beside the robust kernel alone, on the
//! same realistic ticks in one run, so the result reads as the ratio "ensemble vs kernel".
//!
//! Each series reports every 30 minutes (48 points a day, one per seasonal bin): a per-series level, a daily season
//! (amplitude and phase per series), uniform noise, and a spike of 10 noise widths on about 0.5 % of points. Before
//! measuring, both are warmed up over `ENSEMBLE_WARM_TICKS` ticks (default 300: past `warmup-points`, the density
//! warm-up, two days for the season to switch on and enough residual history to certify the risk), so every channel
//! runs in its steady state. One iteration is one tick: every series once, in slot order; the tick's input is built
//! outside the timed region.
//!
//! - `ensemble/full/{n}`: `ShardDetector::process` with the embedded default detector configuration.
//! - `ensemble/kernel/{n}`: the detected robust kernel (`Kernels::robust_update_gather`) over the same values.
//! - `ensemble/save/{n}`: saving every series' model (`ShardDetector::save_models`, `engine.state-dir`).
//! - `ensemble/new/{n}` and `ensemble/restored/{n}`: the first tick of a fresh detector, every series new, and of one
//!   that loaded the saved models, every series taking its model back (a restart).
//! - `ensemble/ln/{ln_slice,libm}/{n}`: the rarity phase's logarithms (`sketch::ln_slice`) against the library's
//!   `ln` in f64 (what the detector called before), over a round's and a large batch's probabilities.
//!
//! Run: `cargo bench -p faultline-benches --bench ensemble -- --warm-up-time 1 --measurement-time 5`; series counts
//! from `ENSEMBLE_SERIES` (default `1000,100000`; `1000000` needs about 2 GB and minutes of warm-up).

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faultline::config::Config;
use faultline::detect::ShardDetector;
use faultline::model::{SeriesId, SeriesKey, TimeMs};
use faultline_kernels::{Kernels, RobustState};

/// Minutes between points of a series, and points per day.
const STEP: TimeMs = 30 * 60 * 1000;
const PER_DAY: usize = 48;
const T0: TimeMs = 1_767_225_600_000; // 2026-01-01

/// `n` series with their shape parameters, and the tick generator.
struct Streams {
    ids: Vec<SeriesId>,
    keys: Vec<Arc<SeriesKey>>,
    level: Vec<f64>,
    amp: Vec<f64>,
    noise: Vec<f64>,
    season: [f64; PER_DAY],
}

/// One tick of input: every series once.
struct Tick {
    times: Vec<TimeMs>,
    values: Vec<f64>,
    x: Vec<f32>,
}

fn mix(a: u64, b: u64) -> u64 {
    let h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ b.wrapping_add(0x632b_e59b_d9b4_e019).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 29)
}

/// Uniform in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Streams {
    fn new(n: usize) -> Self {
        let keys: Vec<Arc<SeriesKey>> = (0..n)
            .map(|i| {
                Arc::new(SeriesKey::new(
                    &format!("svc-{}", i % 500),
                    &format!("m{}", (i / 500) % 8),
                    [("instance", format!("i{}", i / 4000))],
                ))
            })
            .collect();
        let level = (0..n).map(|i| 10.0 + 990.0 * unit(mix(i as u64, 1))).collect::<Vec<_>>();
        let amp = level.iter().enumerate().map(|(i, l)| l * 0.3 * unit(mix(i as u64, 2))).collect();
        let noise = level.iter().enumerate().map(|(i, l)| l * (0.01 + 0.04 * unit(mix(i as u64, 3)))).collect();
        let season = std::array::from_fn(|k| (std::f64::consts::TAU * k as f64 / PER_DAY as f64).sin());
        Self { ids: keys.iter().map(|k| k.id).collect(), keys, level, amp, noise, season }
    }

    /// Tick `t` (the same input whenever it is asked for).
    fn tick(&self, t: u64) -> Tick {
        let n = self.ids.len();
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            let h = mix(i as u64 ^ 0xa5a5, t);
            let phase = (t as usize + i) % PER_DAY;
            let spike = if h.is_multiple_of(200) { 10.0 } else { 0.0 };
            values.push(self.level[i] + self.amp[i] * self.season[phase] + self.noise[i] * (unit(h) - 0.5 + spike));
        }
        let x = values.iter().map(|&v| v as f32).collect();
        Tick { times: vec![T0 + t as TimeMs * STEP; n], values, x }
    }
}

/// A list of counts from the environment variable `name`, or `default`; a bad value ends the run with a message.
fn counts(name: &str, default: &str) -> Vec<u64> {
    let raw = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    raw.split(',')
        .map(|s| {
            s.trim().parse().unwrap_or_else(|_| {
                eprintln!("{name}: expected comma-separated counts, found {s:?}");
                std::process::exit(2)
            })
        })
        .collect()
}

fn ensemble(c: &mut Criterion) {
    // The embedded defaults with `FAULTLINE__…` overrides, as the CLI reads them (e.g.
    // `FAULTLINE__DETECTOR__SEASONAL__BINS=48` to compare profile resolutions in one build).
    let cfg = Config::load(None).unwrap_or_else(|e| {
        eprintln!("ensemble: {e:#}");
        std::process::exit(2)
    });
    let kernels = Kernels::detect();
    let params = ShardDetector::robust_params(&cfg.detector);
    eprintln!(
        "ensemble: kernel {kernels}; {} bytes of model state per series with the defaults; seasonal bins {:?}",
        ShardDetector::BYTES_PER_SERIES,
        cfg.detector.seasonal.bins_per_period()
    );
    let mut g = c.benchmark_group("ensemble");
    let warm = counts("ENSEMBLE_WARM_TICKS", "300").first().copied().unwrap_or(300);
    for n in counts("ENSEMBLE_SERIES", "1000,100000") {
        let n = n as usize;
        let streams = Streams::new(n);
        let mut det = ShardDetector::new(&cfg.detector, &cfg.rca, kernels);
        let mut state = RobustState::default();
        for _ in 0..n {
            state.push();
        }
        let slots: Vec<u32> = (0..n as u32).collect();
        let (mut z, mut sigma) = (vec![0.0f32; n], vec![0.0f32; n]);
        let mut events = Vec::new();
        let mut anomalies = 0u64;
        for t in 0..warm {
            let tick = streams.tick(t);
            anomalies += det.process(&streams.ids, &streams.keys, &tick.times, &tick.values, &mut events).anomalies;
            events.clear();
            kernels.robust_update_gather(&mut state, &slots, &tick.x, &mut z, &mut sigma, &params);
        }
        eprintln!(
            "ensemble: {n} series warmed over {} ticks, {anomalies} anomaly events ({:.3} % of points)",
            warm,
            100.0 * anomalies as f64 / (n as f64 * warm as f64)
        );
        if n >= 100_000 {
            g.sample_size(10);
        }
        g.throughput(Throughput::Elements(n as u64));
        // Each case continues its own stream from the end of the warm-up.
        let (mut t_kernel, mut t_full) = (warm, warm);
        g.bench_function(BenchmarkId::new("kernel", n), |b| {
            b.iter_batched_ref(
                || {
                    t_kernel += 1;
                    streams.tick(t_kernel - 1)
                },
                |tick| kernels.robust_update_gather(&mut state, &slots, &tick.x, &mut z, &mut sigma, &params),
                BatchSize::PerIteration,
            )
        });
        g.bench_function(BenchmarkId::new("full", n), |b| {
            b.iter_batched_ref(
                || {
                    t_full += 1;
                    streams.tick(t_full - 1)
                },
                |tick| {
                    let stats = det.process(&streams.ids, &streams.keys, &tick.times, &tick.values, &mut events);
                    events.clear();
                    stats
                },
                BatchSize::PerIteration,
            )
        });
        // Saved models (`engine.state-dir`): saving every series' model; and the first tick after a restart, each
        // series registering and taking its saved model back (`restored`), beside the first tick of new series
        // (`new`: registering, fresh models). The detector and its loaded models are built outside the timed region.
        let saved = det.save_models();
        g.bench_function(BenchmarkId::new("save", n), |b| b.iter(|| det.save_models()));
        let tick = streams.tick(t_full);
        for (name, load) in [("new", false), ("restored", true)] {
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_batched_ref(
                    || {
                        let mut fresh = ShardDetector::new(&cfg.detector, &cfg.rca, kernels);
                        if load {
                            fresh.load_models(saved.clone()).expect("the CPU backend");
                        }
                        fresh
                    },
                    |fresh| {
                        let stats = fresh.process(&streams.ids, &streams.keys, &tick.times, &tick.values, &mut events);
                        events.clear();
                        stats
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

/// The rarity phase's logarithms (`sketch::ln_slice`, one branch-free pass in vector registers) against the library's
/// `ln` value by value, over one round's worth of probabilities (three a point) and a large batch's, in one run.
fn logarithms(c: &mut Criterion) {
    let mut g = c.benchmark_group("ensemble/ln");
    for n in [174usize, 12_288] {
        // Probabilities as the sketches give them: mostly common bins, some rare, the odd unseen region.
        let probs: Vec<f32> = (0..n as u64).map(|i| (unit(mix(i, 7)).powi(3) as f32).max(1e-7)).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("ln_slice", n), |b| {
            b.iter_batched_ref(
                || probs.clone(),
                |v| faultline::detect::sketch::ln_slice(std::hint::black_box(v)),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("libm", n), |b| {
            b.iter_batched_ref(
                || probs.clone(),
                |v| {
                    for x in std::hint::black_box(v).iter_mut() {
                        *x = f64::from(*x).ln() as f32;
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, ensemble, logarithms);
criterion_main!(benches);
