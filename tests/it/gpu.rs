//! GPU parity: the real WGSL shaders (on lavapipe in CI, any Vulkan adapter elsewhere) against the CPU kernels, and
//! the `auto` backend's fallback when no adapter exists.
//!
//! Tolerance: the shader performs the scalar kernel's f32 operations in the same order, so on lavapipe the results
//! are bit-identical and these tests demand it. A driver may contract `a + b * c` into a fused multiply-add (naga
//! emits no `NoContraction`); on such a device set `FAULTLINE_GPU_PARITY=tolerant` and scores must agree within a
//! relative 1e-5 (state within 1e-5 of the level's magnitude), and the simulator's anomalies must be the same events
//! (series, time, stage, direction) with numbers within the same tolerance.
//!
//! The spectral-residual shader is not bit-identical and need not be: its `log`, `exp` and `sqrt` are the driver's
//! (Vulkan allows a few ulp), and the FFTs and the sums of 21–40 saliencies add rounding in their own order, so its
//! scores must agree within 1e-4 · max(1, |score|) (lavapipe's worst over ~75k random scores: 4.5e-6; the test prints
//! it)
//! while its state (the window rings and counts: plain copies) must be identical; a detector with the channel on must
//! raise the same events on both backends and give a score stream within 1e-6.
//!
//! Where no adapter exists the GPU tests print `skipped: no GPU adapter: …` and pass; the fallback test runs
//! everywhere: it re-runs this binary with `VK_DRIVER_FILES=/nonexistent.json` so the Vulkan loader finds no driver.

use std::sync::Arc;

use faultline::config::Backend;
use faultline::detect::{EventClock, ScoringBackend, ShardDetector};
use faultline::gpu::{GpuContext, GpuRobust, GpuSpectral};
use faultline::pipeline::resolve_backend;
use faultline_kernels::spectral::spectral_update_gather;
use faultline_kernels::{Kernels, RobustParams, RobustState, SpectralParams, SpectralState};

use crate::support::{load, run};

fn context() -> Option<Arc<GpuContext>> {
    match GpuContext::shared() {
        Ok(ctx) => {
            eprintln!("GPU adapter: {}", ctx.description());
            Some(ctx)
        }
        Err(reason) => {
            eprintln!("skipped: no GPU adapter: {reason}");
            None
        }
    }
}

fn tolerant() -> bool {
    std::env::var("FAULTLINE_GPU_PARITY").is_ok_and(|v| v == "tolerant")
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    a.to_bits() == b.to_bits() || (tolerant() && (a - b).abs() <= 1e-5 * scale.abs().max(1.0))
}

/// A small deterministic generator (SplitMix64), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[test]
fn gpu_robust_update_matches_the_scalar_kernel_on_random_inputs() {
    let Some(ctx) = context() else { return };
    let p = RobustParams { threshold: 4.0, rel_floor: 0.001, ..RobustParams::default() };
    for seed in [1u64, 2, 3] {
        let mut rng = Rng(seed);
        let mut cpu = RobustState::default();
        let mut gpu = GpuRobust::new(Arc::clone(&ctx), &p);
        let mut series = 0u32;
        for step in 0..120 {
            // New series arrive over time, so the device state grows (and is copied) mid-run.
            let grow = if step == 0 { 500 } else { (rng.next() % 40) as u32 };
            for _ in 0..grow {
                assert_eq!(cpu.push(), gpu.push());
                series += 1;
            }
            // A random subset of the series, in random order, no series twice (one chunk).
            let mut slots: Vec<u32> = (0..series).filter(|_| !rng.next().is_multiple_of(4)).collect();
            for i in (1..slots.len()).rev() {
                slots.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            let x: Vec<f32> = slots
                .iter()
                .map(|&s| {
                    let base = (s % 17) as f32 * 50.0 - 200.0;
                    let spike = if rng.next().is_multiple_of(50) {
                        40.0 * (rng.unit() - 0.5) * (s % 7 + 1) as f32
                    } else {
                        0.0
                    };
                    base + rng.unit() * 3.0 + spike
                })
                .collect();
            let n = slots.len();
            let (mut z1, mut s1, mut z2, mut s2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            let l1: Vec<f32> = slots
                .iter()
                .zip(&x)
                .map(|(&s, &x)| if cpu.count[s as usize] == 0 { x } else { cpu.level[s as usize] })
                .collect();
            let mut l2 = vec![0.0; n];
            Kernels::Scalar.robust_update_gather(&mut cpu, &slots, &x, &mut z1, &mut s1, &p);
            gpu.update(&slots, &x, &mut z2, &mut s2, &mut l2).unwrap();
            for i in 0..n {
                assert!(close(l1[i], l2[i], l1[i]), "seed {seed} step {step} point {i}: level {} vs {}", l1[i], l2[i]);
                assert!(close(z1[i], z2[i], z1[i]), "seed {seed} step {step} point {i}: z cpu {} gpu {}", z1[i], z2[i]);
                assert!(close(s1[i], s2[i], s1[i]), "seed {seed} step {step} point {i}: sigma {} vs {}", s1[i], s2[i]);
            }
            // A re-baseline on the host must reach the device before the next chunk.
            if step % 10 == 5 && series > 0 {
                let s = (rng.next() % u64::from(series)) as u32;
                cpu.level[s as usize] = 123.25;
                gpu.set_level(s, 123.25);
            }
        }
        let dev = gpu.download().unwrap();
        assert_eq!(cpu.count, dev.count, "seed {seed}: counts");
        assert_eq!(cpu.count, gpu.count, "seed {seed}: host mirror of the counts");
        for i in 0..cpu.len() {
            assert!(close(cpu.level[i], dev.level[i], cpu.level[i]), "seed {seed} level {i}");
            assert!(close(cpu.mad[i], dev.mad[i], cpu.level[i]), "seed {seed} mad {i}");
        }
    }
}

#[test]
fn gpu_detector_handles_repeats_and_rebaselines_like_the_cpu() {
    let Some(ctx) = context() else { return };
    let cfg = faultline::config::Config::default_config().unwrap();
    let mut cpu = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
    let mut gpu = ShardDetector::with_backend(&cfg.detector, &cfg.rca, |p| {
        ScoringBackend::gpu(GpuRobust::new(Arc::clone(&ctx), p))
    });
    // Two series, every point of both in one batch: the batch is scored in chunks, and the level shift of the first
    // series is re-baselined mid-batch, which later chunks must see.
    let a = Arc::new(faultline::model::SeriesKey::new("cart", "request_rate", [] as [(&str, &str); 0]));
    let b = Arc::new(faultline::model::SeriesKey::new("cart", "error_rate", [] as [(&str, &str); 0]));
    let (mut ids, mut keys, mut times, mut vals) = (vec![], vec![], vec![], vec![]);
    for i in 0..260i64 {
        let wob = ((i * 7919 % 13) as f64 / 6.0 - 1.0) * 2.0;
        let x = if (150..210).contains(&i) { 160.0 } else { 100.0 } + wob;
        for (k, v) in [(&a, x), (&b, 0.002 + if i > 200 { 0.2 } else { 0.0 })] {
            ids.push(k.id);
            keys.push(Arc::clone(k));
            times.push(i * 60_000);
            vals.push(v);
        }
    }
    let (mut e1, mut e2) = (Vec::new(), Vec::new());
    cpu.process(&ids, &keys, &times, &vals, &mut e1);
    gpu.process(&ids, &keys, &times, &vals, &mut e2);
    assert_eq!(gpu.scoring().name(), "gpu", "the GPU backend must not have fallen back");
    assert!(e1.iter().any(|e| e.level_shift.is_some()), "the scenario must re-baseline");
    // One line per event, as the anomalies output writes them; the calibrations' surprises come from the device in
    // f32 (see `assert_same_anomalies`).
    let render = |ev: &[faultline::event::AnomalyEvent]| {
        ev.iter().map(|e| serde_json::to_string(&e.to_wire()).unwrap() + "\n").collect::<String>()
    };
    assert_same_anomalies(&render(&e1), &render(&e2));
    let (s1, s2) = (cpu.scoring().robust_state(), gpu.scoring().robust_state());
    assert_eq!(s1.count, s2.count);
    assert!(s1.level.iter().zip(&s2.level).all(|(x, y)| close(*x, *y, *x)), "{:?} vs {:?}", s1.level, s2.level);
}

/// An outage two days into a series, then the series back at its old level and a burst 40 minutes later: on both
/// backends the return undoes the shift (`detector.level-shift.revert-within`: the robust level and scale on the
/// device go back to what they held before it), and the burst raises the same events.
#[test]
fn gpu_detector_undoes_a_shift_the_series_returns_from_like_the_cpu() {
    let Some(ctx) = context() else { return };
    let cfg = faultline::config::Config::default_config().unwrap();
    let mut cpu = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
    let mut gpu = ShardDetector::with_backend(&cfg.detector, &cfg.rca, |p| {
        ScoringBackend::gpu(GpuRobust::new(Arc::clone(&ctx), p))
    });
    let k = Arc::new(faultline::model::SeriesKey::new("cart", "queue_depth", [] as [(&str, &str); 0]));
    let n = 3_160usize;
    let vals: Vec<f64> = (0..n)
        .map(|i| {
            // Pseudo-noise in [-2, 2): a hash of i, not periodic.
            let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let wob = ((h >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0;
            let outage = if (3_000..3_100).contains(&i) { 10.0 } else { 0.0 };
            let burst = if (3_140..3_143).contains(&i) { 12.0 } else { 0.0 };
            100.0 + wob + outage + burst
        })
        .collect();
    let times: Vec<i64> = (0..n as i64).map(|i| i * 60_000).collect();
    let (ids, keys) = (vec![k.id; n], vec![Arc::clone(&k); n]);
    let (mut e1, mut e2) = (Vec::new(), Vec::new());
    let s1 = cpu.process(&ids, &keys, &times, &vals, &mut e1);
    let s2 = gpu.process(&ids, &keys, &times, &vals, &mut e2);
    assert_eq!(gpu.scoring().name(), "gpu", "the GPU backend must not have fallen back");
    assert_eq!((s1.shifts_reverted, s2.shifts_reverted), (1, 1), "the return undid the shift on both backends");
    assert!(e1.iter().any(|e| e.time >= 3_140 * 60_000), "the burst after the outage is caught");
    let render = |ev: &[faultline::event::AnomalyEvent]| {
        ev.iter().map(|e| serde_json::to_string(&e.to_wire()).unwrap() + "\n").collect::<String>()
    };
    assert_same_anomalies(&render(&e1), &render(&e2));
}

/// The whole ensemble with its seasonal baselines and calibrations on the device: daily seasons found, points
/// judged against them, a spike, a dip and a level shift reported, with the same events as on the CPU (numbers within
/// `CALIBRATION_TOLERANCE`) and no seasonal or calibration state on the host.
#[test]
fn gpu_detector_learns_seasons_and_calibrates_on_the_device_like_the_cpu() {
    seasons_and_calibrations_on_both_backends(None, Models::Learn);
}

/// As above, but the device is lost on day 3 (seasons found, calibrations warm): the shard downloads its models and
/// finishes on the CPU with the same events.
#[test]
fn a_shard_that_loses_its_device_carries_on_on_the_cpu_with_the_same_events() {
    seasons_and_calibrations_on_both_backends(Some(3 * 288 * 12), Models::Learn);
}

/// The seasonal scenario with learning paused for two services over the faults of day 5: the GPU saves and restores
/// the paused series' device state (robust, seasonal, calibrations) as the CPU does its own, with the same events.
#[test]
fn gpu_detector_pauses_learning_like_the_cpu() {
    seasons_and_calibrations_on_both_backends(None, Models::Pause);
}

/// As above, with the device lost in the middle of the pause, in a round's last device pass: the paused series'
/// device state, already updated by the round's earlier passes, is put back before the models move to the host.
#[test]
fn a_shard_that_loses_its_device_during_a_learning_pause_keeps_the_pause() {
    seasons_and_calibrations_on_both_backends(Some(4 * 288 * 12 + 20 * 12), Models::Pause);
}

/// The seasonal scenario with operator feedback known at the start: svc0's latency spike accepted (learning held
/// through it) and svc2's level shift rejected (re-baselined, its deviation tolerated). The GPU holds and
/// re-baselines the device-resident models as the CPU does its own, with the same events.
#[test]
fn gpu_detector_applies_operator_feedback_like_the_cpu() {
    seasons_and_calibrations_on_both_backends(None, Models::Feedback);
}

/// Seasonal profiles on New York's clock on the device: four series of a local business day across the change to
/// daylight-saving time (`detector.seasonal.timezone`), the device's profiles reading the same zone times as the CPU's:
/// the same events, none of them after the change (on UTC's clock there are dozens).
#[test]
fn gpu_detector_follows_a_time_zone_like_the_cpu() {
    let Some(ctx) = context() else { return };
    let mut cfg = faultline::config::Config::default_config().unwrap();
    cfg.detector.seasonal.timezone = "America/New_York".into();
    let mut cpu = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
    let mut gpu = ShardDetector::with_backend(&cfg.detector, &cfg.rca, |p| {
        ScoringBackend::gpu(GpuRobust::new(Arc::clone(&ctx), p))
    });
    let keys: Vec<_> = ["checkout", "search", "cart", "login"]
        .map(|svc| Arc::new(faultline::model::SeriesKey::new(svc, "requests", [] as [(&str, &str); 0])))
        .to_vec();
    // 2026-02-22 to 2026-03-22, every five minutes.
    let (mut ids, mut ks, mut times, mut vals) = (vec![], vec![], vec![], vec![]);
    let mut rng = Rng(29);
    for t in (1_771_718_400_000i64..1_774_137_600_000).step_by(300_000) {
        for (i, k) in keys.iter().enumerate() {
            ids.push(k.id);
            ks.push(Arc::clone(k));
            times.push(t);
            // Series 0 surges to three times its level for an hour.
            let surge = if i == 0 && crate::support::NEW_YORK_SURGE.contains(&t) { 3.0 } else { 1.0 };
            vals.push(surge * crate::support::new_york_business_day(t, 1.0 + i as f64, f64::from(rng.unit())));
        }
    }
    let (mut e1, mut e2) = (Vec::new(), Vec::new());
    for start in (0..vals.len()).step_by(499) {
        let r = start..(start + 499).min(vals.len());
        cpu.process(&ids[r.clone()], &ks[r.clone()], &times[r.clone()], &vals[r.clone()], &mut e1);
        gpu.process(&ids[r.clone()], &ks[r.clone()], &times[r.clone()], &vals[r], &mut e2);
    }
    assert_eq!(gpu.scoring().name(), "gpu", "the backend at the end of the run");
    assert_eq!((cpu.host_model_series(), gpu.host_model_series()), (4, 0), "where the seasons live");
    // After the change, only the surge, judged against the working day's level (1000 at 2 p.m.): a profile out of
    // phase, or none, would expect something else.
    let surge = |e: &&faultline::event::AnomalyEvent| crate::support::in_new_york_surge(e.time);
    let after = e1.iter().filter(|e| e.time >= crate::support::NEW_YORK_DST_2026 && !surge(e)).count();
    assert_eq!(after, 0, "events after the change to daylight-saving time on New York's clock");
    let first = e1.iter().find(surge).expect("the surge raises an event");
    assert!((first.expected - 1000.0).abs() < 50.0, "the surge's first event expected {}", first.expected);
    let render = |ev: &[faultline::event::AnomalyEvent]| {
        ev.iter().map(|e| serde_json::to_string(&e.to_wire()).unwrap()).collect::<Vec<_>>().join("\n")
    };
    assert_same_anomalies(&render(&e1), &render(&e2));
    eprintln!("{} events, all before the change but the surge's", e1.len());
}

/// What the models are told in the seasonal scenario.
#[derive(Clone, Copy, PartialEq)]
enum Models {
    /// Nothing: they learn from every point.
    Learn,
    /// Learning is paused for services svc0 and svc2 over the first 12 hours of day 5 (the faults).
    Pause,
    /// Operator verdicts on svc0's first anomaly (accept) and svc2's first (reject), known at the start.
    Feedback,
}

/// The points of the seasonal scenario, in arrival order.
struct Points {
    ids: Vec<u64>,
    keys: Vec<Arc<faultline::model::SeriesKey>>,
    times: Vec<i64>,
    vals: Vec<f64>,
}

/// Twelve series of three services, 5-minute points over five days: daily seasons on two of every three, noise on
/// all, and on day 5 a spike (svc0's latency), a dip (svc1's request rate) and a level shift (svc2's request rate).
fn seasonal_points() -> Points {
    const DAY: i64 = 86_400_000;
    const STEP: i64 = 300_000;
    let metrics = ["request_rate", "latency_p99_ms", "cpu_utilization", "error_rate"];
    let series: Vec<_> = (0..12)
        .map(|i| {
            let (svc, metric) = (format!("svc{}", i / 4), metrics[i % 4]);
            Arc::new(faultline::model::SeriesKey::new(&svc, metric, [] as [(&str, &str); 0]))
        })
        .collect();
    let (mut ids, mut keys, mut times, mut vals) = (vec![], vec![], vec![], vec![]);
    let mut rng = Rng(13);
    for step in 0..5 * DAY / STEP {
        let t = step * STEP;
        for (i, k) in series.iter().enumerate() {
            let day = (std::f64::consts::TAU * (t % DAY) as f64 / DAY as f64).sin();
            let base = 100.0 + 10.0 * i as f64 + if i % 3 == 2 { 0.0 } else { 40.0 * day };
            let late = t - 4 * DAY;
            let spike = if i == 1 && (600_000..1_500_000).contains(&late) { 120.0 } else { 0.0 };
            let dip = if i == 4 && (7_200_000..7_800_000).contains(&late) { -90.0 } else { 0.0 };
            let shift = if i == 8 && late > 10 * 3_600_000 { 60.0 } else { 0.0 };
            ids.push(k.id);
            keys.push(Arc::clone(k));
            times.push(t);
            vals.push(base + 2.0 * f64::from(rng.unit()) + spike + dip + shift);
        }
    }
    Points { ids, keys, times, vals }
}

/// A detector on the GPU backend with the configuration `cfg`.
fn gpu_detector(ctx: &Arc<GpuContext>, cfg: &faultline::config::Config) -> ShardDetector {
    ShardDetector::with_backend(&cfg.detector, &cfg.rca, |p| ScoringBackend::gpu(GpuRobust::new(Arc::clone(ctx), p)))
}

/// Points `range` of `pts` through `det` in chunks of 499 from the range's start: the events and each point's score.
fn stream_points(
    det: &mut ShardDetector,
    pts: &Points,
    range: std::ops::Range<usize>,
) -> (Vec<faultline::event::AnomalyEvent>, Vec<f64>) {
    let (mut events, mut scores) = (Vec::new(), vec![0.0; range.len()]);
    for start in range.clone().step_by(499) {
        let r = start..(start + 499).min(range.end);
        let out = &mut scores[r.start - range.start..r.end - range.start];
        let (ids, ks, ts, xs) = (&pts.ids[r.clone()], &pts.keys[r.clone()], &pts.times[r.clone()], &pts.vals[r]);
        det.process_scored(ids, ks, ts, xs, &mut events, Some(out));
    }
    (events, scores)
}

/// Saved models (`engine.state-dir`) with the GPU backend. A GPU detector saves its models on day 5 of the seasonal
/// scenario, between the spike and the dip (seasons found, calibrations warm; with and without the spectral
/// channel), reading them back from the device, and runs on; a new GPU detector that loads them, writing each into
/// the device as its series comes back, goes on with the same events and every score bit for bit, and at the end
/// both save the same bytes. Models cross backends: the GPU's loaded on the CPU, and the CPU's on the GPU, raise the
/// events the other backend's run does (numbers within the backends' tolerance).
#[test]
fn gpu_detector_saves_and_takes_back_its_models_like_the_cpu() {
    use faultline::detect::persist::ModelFile;
    let Some(ctx) = context() else { return };
    let pts = seasonal_points();
    // Day 5, 1 hour in: after the spike, before the dip and the shift (a multiple of the chunk).
    let (cut, end) = (499 * 28, pts.vals.len());
    assert_ne!(cut % 12, 0, "the cut falls inside a step: the first series to come back are not the first saved");
    let render = |ev: &[faultline::event::AnomalyEvent]| {
        ev.iter().map(|e| serde_json::to_string(&e.to_wire()).unwrap()).collect::<Vec<_>>().join("\n")
    };
    let saved = |det: &mut ShardDetector| {
        let file = ModelFile::merge(det.model_shape(), [det.save_models()]);
        ModelFile::from_bytes(&ModelFile { saved_at_ms: 0, ..file }.to_bytes(), "test").unwrap()
    };
    for spectral in [false, true] {
        let mut cfg = faultline::config::Config::default_config().unwrap();
        cfg.detector.spectral.enabled = spectral;
        cfg.detector.spectral.warmup_points = 50;
        let (mut on, mut before) = (gpu_detector(&ctx, &cfg), gpu_detector(&ctx, &cfg));
        stream_points(&mut on, &pts, 0..cut);
        stream_points(&mut before, &pts, 0..cut);
        let file = saved(&mut before);
        assert_eq!(file.models.series.len(), 12);
        assert_eq!(before.scoring().name(), "gpu", "saving reads the models back and leaves them on the device");
        let mut after = gpu_detector(&ctx, &cfg);
        assert_eq!(after.load_models(file.models.clone()).unwrap(), 12);
        // After the save a new series reports between the others, so the series that take their models back fill
        // slots in three runs, each written into the device on its own.
        let newcomer = Arc::new(faultline::model::SeriesKey::new("svc9", "queue_depth", [] as [(&str, &str); 0]));
        let mut rest = Points { ids: vec![], keys: vec![], times: vec![], vals: vec![] };
        for j in cut..end {
            let point = [(pts.ids[j], &pts.keys[j], pts.vals[j]), (newcomer.id, &newcomer, 50.0 + (j % 7) as f64)];
            for (id, key, v) in point.into_iter().take(if j % 12 == 5 { 2 } else { 1 }) {
                rest.ids.push(id);
                rest.keys.push(Arc::clone(key));
                rest.times.push(pts.times[j]);
                rest.vals.push(v);
            }
        }
        let all = 0..rest.vals.len();
        let (events_on, scores_on) = stream_points(&mut on, &rest, all.clone());
        let (events_after, scores_after) = stream_points(&mut after, &rest, all.clone());
        assert_eq!(after.scoring().name(), "gpu");
        let seasonal = events_after.iter().filter(|e| e.stage == faultline::event::Stage::Seasonal).count();
        assert!(seasonal >= 1, "the loaded seasons judge the dip: {seasonal} seasonal events");
        assert!(events_after.len() > seasonal, "and the shift is reported: {} events", events_after.len());
        assert_eq!(render(&events_after), render(&events_on), "spectral {spectral}");
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&scores_after), bits(&scores_on), "spectral {spectral}: every score");
        let (_, scores_fresh) = stream_points(&mut gpu_detector(&ctx, &cfg), &rest, all.clone());
        assert_ne!(bits(&scores_fresh), bits(&scores_on), "a detector that starts fresh scores otherwise");
        assert!(saved(&mut after).to_bytes() == saved(&mut on).to_bytes(), "spectral {spectral}: the same models");

        // Across backends: the GPU's models on the CPU, the CPU's on the GPU.
        let mut cpu_on = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
        stream_points(&mut cpu_on, &pts, 0..cut);
        let cpu_file = saved(&mut cpu_on);
        let (cpu_events_on, _) = stream_points(&mut cpu_on, &rest, all.clone());
        let mut cpu_after = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
        cpu_after.load_models(file.models).unwrap();
        let (from_gpu, _) = stream_points(&mut cpu_after, &rest, all.clone());
        assert_same_anomalies(&render(&events_on), &render(&from_gpu));
        let mut gpu_after = gpu_detector(&ctx, &cfg);
        gpu_after.load_models(cpu_file.models).unwrap();
        let (from_cpu, _) = stream_points(&mut gpu_after, &rest, all);
        assert_same_anomalies(&render(&cpu_events_on), &render(&from_cpu));
    }
}

/// Through `faultline run`'s pipeline on the GPU backend (`engine.backend = "gpu"` with `engine.state-dir`, refused
/// before the GPU's models could be saved): stopped in the middle of an outage and started again, the second run takes
/// the models back into the device, undoes the shift when the series returns, and catches the burst after it.
#[test]
fn a_restart_on_the_gpu_inside_an_outage_still_undoes_it() {
    let Some(_ctx) = context() else { return };
    let (burst, reverted) = crate::outages::replay_on("gpu", "", Some(3_050));
    assert_eq!(reverted, 1, "the second run's summary counts the shift undone");
    assert!(burst > 0, "the burst 40 minutes after the outage is caught");
}

/// Runs the seasonal scenario through a CPU and a GPU detector; `lose_device_at` (a point index) fails the GPU there.
fn seasons_and_calibrations_on_both_backends(lose_device_at: Option<usize>, models: Models) {
    let pause = models == Models::Pause;
    let Some(ctx) = context() else { return };
    let mut cfg = faultline::config::Config::default_config().unwrap();
    if pause {
        cfg.detector.learning_pauses = ["svc0", "svc2"]
            .map(|svc| faultline::config::LearningPauseConfig {
                metric: "*".into(),
                service: Some(svc.into()),
                from: Some("1970-01-05T00:00:00Z".into()),
                until: Some("1970-01-05T12:00:00Z".into()),
            })
            .to_vec();
    }
    let mut cpu = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
    let mut gpu = gpu_detector(&ctx, &cfg);
    const DAY: i64 = 86_400_000;
    let Points { ids, keys: ks, times, vals } = seasonal_points();
    if models == Models::Feedback {
        // The verdicts are on the events of a run without them, as an operator reads them.
        let mut first = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
        let mut ev = Vec::new();
        for start in (0..vals.len()).step_by(499) {
            let r = start..(start + 499).min(vals.len());
            first.process(&ids[r.clone()], &ks[r.clone()], &times[r.clone()], &vals[r], &mut ev);
        }
        let day5 = |e: &&faultline::event::AnomalyEvent, svc: &str| &*e.key.service == svc && e.time >= 4 * DAY;
        for (svc, verdict) in [("svc0", "accept"), ("svc2", "reject")] {
            let e = ev.iter().find(|e| day5(e, svc)).unwrap_or_else(|| panic!("{svc} alerts on day 5"));
            let record = serde_json::json!({"verdict": verdict, "anomaly": e.to_wire()}).to_string();
            let f = faultline::feedback::Feedback::parse(&record).unwrap();
            cpu.add_feedback(&f);
            gpu.add_feedback(&f);
        }
    }
    let (mut e1, mut e2) = (Vec::new(), Vec::new());
    let (mut sc1, mut sc2) = (vec![0.0; vals.len()], vec![0.0; vals.len()]);
    let (mut st1, mut st2) = (faultline::detect::BatchStats::default(), faultline::detect::BatchStats::default());
    for start in (0..vals.len()).step_by(499) {
        let r = start..(start + 499).min(vals.len());
        let (ids, ks, ts, xs) = (&ids[r.clone()], &ks[r.clone()], &times[r.clone()], &vals[r.clone()]);
        let a = cpu.process_scored(ids, ks, ts, xs, &mut e1, Some(&mut sc1[r.clone()]));
        let b = gpu.process_scored(ids, ks, ts, xs, &mut e2, Some(&mut sc2[r]));
        for (sum, one) in [(&mut st1, a), (&mut st2, b)] {
            sum.feedback_held += one.feedback_held;
            sum.feedback_suppressed += one.feedback_suppressed;
            sum.feedback_rebaselines += one.feedback_rebaselines;
        }
        if let Some(lost) = lose_device_at
            && start >= lost
            && gpu.scoring().name() == "gpu"
        {
            // The device is lost mid-run: the shard must take every model back to the host and carry on there.
            assert_eq!(gpu.host_model_series(), 0);
            gpu.scoring().inject_device_failure();
        }
    }
    let name = if lose_device_at.is_some() { "cpu" } else { "gpu" };
    assert_eq!(gpu.scoring().name(), name, "the backend at the end of the run");
    let host = if lose_device_at.is_some() { 12 } else { 0 };
    assert_eq!((cpu.host_model_series(), gpu.host_model_series()), (12, host), "where seasons and calibrations live");
    let seasonal = e1.iter().filter(|e| e.stage == faultline::event::Stage::Seasonal).count();
    assert!(seasonal >= 3, "the faults are judged against the daily seasons: {seasonal} seasonal events");
    let shift = e1.iter().filter(|e| &*e.key.metric == "request_rate" && &*e.key.service == "svc2").count();
    // Rejected, the shift is re-baselined before it is reported.
    assert_eq!(shift > 0, models != Models::Feedback, "{shift} events of the shift");
    let render = |ev: &[faultline::event::AnomalyEvent]| {
        ev.iter().map(|e| serde_json::to_string(&e.to_wire()).unwrap()).collect::<Vec<_>>().join("\n")
    };
    let paused = e1.iter().filter(|e| e.learning_paused).count();
    assert_eq!(paused > 0, pause, "{paused} events under a learning pause");
    let held = e1.iter().filter(|e| e.feedback.is_some_and(|f| f.learning_held)).count();
    assert_eq!(held > 0, models == Models::Feedback, "{held} events with learning held");
    let fb = |s: &faultline::detect::BatchStats| (s.feedback_held, s.feedback_suppressed, s.feedback_rebaselines);
    assert_eq!(fb(&st1), fb(&st2), "feedback did the same on both backends");
    if models == Models::Feedback {
        assert!(st1.feedback_held > 0 && st1.feedback_rebaselines == 1, "{:?}", fb(&st1));
    }
    eprintln!(
        "{} events, {seasonal} at the seasonal stage, {paused} under a learning pause, {held} with learning held; \
         feedback (held, suppressed, re-baselines) {:?}",
        e1.len(),
        fb(&st1)
    );
    assert_same_anomalies(&render(&e1), &render(&e2));
    if !tolerant() {
        // The series without a season (every third: their robust model sees the raw value, not `x − profile`,
        // whose offset the device computes within a tolerance) end bit for bit the same on lavapipe: what was
        // learned, and what a pause kept out, is the same on both backends.
        let (a, b) = (cpu.scoring().robust_state(), gpu.scoring().robust_state());
        for s in (2..12).step_by(3) {
            let (x, y) = ((a.level[s], a.mad[s], a.count[s]), (b.level[s], b.mad[s], b.count[s]));
            assert_eq!(x, y, "series {s}'s robust state (level, mad, count): cpu {x:?} gpu {y:?}");
        }
    }
    for (i, (a, b)) in sc1.iter().zip(&sc2).enumerate() {
        assert!((a - b).abs() <= CALIBRATION_TOLERANCE, "point {i}: score cpu {a} gpu {b}");
    }
}

/// Anomaly lines of a run, with the numbers that may differ under contraction rounded away in tolerant mode.
fn events(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {} {} {}",
                v["series_id"], v["time"], v["stage"], v["direction"], v["evidence"]["points_seen"]
            )
        })
        .collect()
}

/// Whether two JSON values are the same but for numbers within `CALIBRATION_TOLERANCE` (relative, or absolute below 1).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= CALIBRATION_TOLERANCE * x.abs().max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Value::String(x), Value::String(y)) => same_text(x, y),
        _ => a == b,
    }
}

/// Whether two texts (an explanation) are the same but for the numbers written in them, which may differ by the
/// tolerance and, since the text rounds them, by one unit in their last written digit (154.519 against 154.518: a
/// difference within the tolerance that crosses a rounding boundary). Whole numbers (counts) must be equal.
fn same_text(a: &str, b: &str) -> bool {
    let (x, y) = (number_runs(a), number_runs(b));
    x.len() == y.len()
        && x.iter().zip(&y).all(|((xn, xs), (yn, ys))| match (xn, yn) {
            (true, true) => {
                let (u, v): (f64, f64) = (xs.parse().unwrap(), ys.parse().unwrap());
                let last_digit = |s: &str| s.split_once('.').map_or(0.0, |(_, f)| 10f64.powi(-(f.len() as i32)));
                (u - v).abs() <= CALIBRATION_TOLERANCE * u.abs().max(1.0) + last_digit(xs).max(last_digit(ys))
            }
            _ => xn == yn && xs == ys,
        })
}

/// A text cut into runs of number characters (`true`; digits with a decimal point inside) and the rest.
fn number_runs(s: &str) -> Vec<(bool, &str)> {
    let mut runs: Vec<(bool, &str)> = Vec::new();
    let mut start = 0;
    let bytes = s.as_bytes();
    let numeric = |i: usize| {
        bytes[i].is_ascii_digit()
            || (bytes[i] == b'.'
                && i > 0
                && bytes[i - 1].is_ascii_digit()
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
    };
    for i in 1..=bytes.len() {
        if i == bytes.len() || numeric(i) != numeric(start) {
            runs.push((numeric(start), &s[start..i]));
            start = i;
        }
    }
    runs
}

/// The device computes the calibrations' surprises and bands in f32 (WGSL has no f64), the CPU in f64 from the same
/// f32 state: event numbers read from them (a detector's score, the band) may differ in the sixth digit. And a
/// seasonal profile's bins are 16-bit steps of a unit (1/16,384 to 1/32,768 of the profile's largest value): where
/// the driver's `exp` and the CPU's differ in the last bit, a bin's value can round to neighbouring steps on the two
/// backends, and what is learned from it after (the expected value, the scale, the band, the z) differs by up to a
/// few parts in 10^5 (measured on lavapipe: the z 81.980 against 81.973, the band's lower end 835.180 against 835.168).
const CALIBRATION_TOLERANCE: f64 = 2e-4;

/// The same anomaly events from both backends: the same events (series, time, stage, direction, points seen) in the
/// same order and, unless the device contracts multiply-adds, every field equal but for numbers within
/// `CALIBRATION_TOLERANCE`.
fn assert_same_anomalies(cpu: &str, gpu: &str) {
    assert_eq!(events(cpu), events(gpu), "anomalies differ between the CPU and GPU backends");
    if tolerant() {
        return;
    }
    for (i, (a, b)) in cpu.lines().zip(gpu.lines()).enumerate() {
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(a).unwrap(), serde_json::from_str(b).unwrap());
        assert!(same_json(&a, &b), "anomaly {i} differs beyond the tolerance:\ncpu {a}\ngpu {b}");
    }
}

#[test]
fn simulator_scenario_gives_the_same_anomalies_on_gpu_and_cpu() {
    let Some(_ctx) = context() else { return };
    let cpu = run(&load("golden-sim.toml", &[("FAULTLINE__ENGINE__SHARDS", "2")]));
    let gpu = run(&load(
        "golden-sim.toml",
        &[
            ("FAULTLINE__ENGINE__SHARDS", "2"),
            ("FAULTLINE__ENGINE__BACKEND", "gpu"),
            ("FAULTLINE__ENGINE__GPU_BATCH_SIZE", "20000"),
        ],
    ));
    assert!(cpu.anomalies.lines().count() > 50, "the scenario should raise anomalies");
    assert_same_anomalies(&cpu.anomalies, &gpu.anomalies);
    if !tolerant() {
        assert!(cpu.reports == gpu.reports, "root-cause reports differ between the CPU and GPU backends");
    }
}

/// The golden simulator scenario with the spectral-residual channel on: the same anomalies (series, time, stage,
/// direction, points seen) on both backends; the channel's scores may differ in the last digits (see the module docs).
#[test]
fn simulator_scenario_with_the_spectral_channel_gives_the_same_anomalies_on_gpu_and_cpu() {
    let Some(_ctx) = context() else { return };
    let spectral = ("FAULTLINE__DETECTOR__SPECTRAL__ENABLED", "true");
    let cpu = run(&load("golden-sim.toml", &[("FAULTLINE__ENGINE__SHARDS", "2"), spectral]));
    let gpu = run(&load(
        "golden-sim.toml",
        &[
            ("FAULTLINE__ENGINE__SHARDS", "2"),
            ("FAULTLINE__ENGINE__BACKEND", "gpu"),
            ("FAULTLINE__ENGINE__GPU_BATCH_SIZE", "20000"),
            spectral,
        ],
    ));
    let identity = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {} {} {} {}",
                    v["series_id"], v["time"], v["stage"], v["direction"], v["evidence"]["points_seen"]
                )
            })
            .collect()
    };
    assert!(cpu.anomalies.lines().count() > 50, "the scenario should raise anomalies");
    assert_eq!(identity(&cpu.anomalies), identity(&gpu.anomalies), "anomalies differ between the backends");
}

/// Run in a child process with no Vulkan driver (see `auto_falls_back_to_the_cpu_without_an_adapter`).
#[test]
fn fallback_child() {
    if std::env::var_os("FAULTLINE_FALLBACK_CHILD").is_none() {
        return;
    }
    let auto = resolve_backend(Backend::Auto).expect("auto never fails for want of a GPU");
    assert_eq!(auto.name, "cpu");
    assert!(auto.note.starts_with("auto: no GPU"), "{}", auto.note);
    let err = resolve_backend(Backend::Gpu).expect_err("gpu without an adapter is an error").to_string();
    assert!(err.contains("auto"), "the error should suggest `auto`: {err}");
    // A whole run on `auto` scores on the CPU and says so.
    let cfg = load("golden-sim.toml", &[("FAULTLINE__ENGINE__BACKEND", "auto")]);
    let (mut source, graph) = faultline::app::build_source(&cfg).unwrap();
    let mut dead = faultline::source::DeadLetters::to_writer(Box::new(std::io::sink()));
    let summary = faultline::pipeline::run(&cfg, source.as_mut(), graph, Vec::new(), &mut dead).unwrap();
    assert_eq!(summary.backend, "cpu");
    assert!(summary.backend_note.starts_with("auto: no GPU"), "{}", summary.backend_note);
    assert!(summary.anomalies > 50);
    println!("fallback-child-ok: {}", summary.backend_note);
}

#[test]
fn auto_falls_back_to_the_cpu_without_an_adapter() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "gpu::fallback_child", "--nocapture", "--test-threads=1"])
        .env("FAULTLINE_FALLBACK_CHILD", "1")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("fallback-child-ok: auto: no GPU"), "child did not run the fallback:\n{stdout}\n{stderr}");
}

/// Scores of the spectral residual agree within this fraction of max(1, |score|) (see the module docs).
const SPECTRAL_TOLERANCE: f32 = 1e-4;

#[test]
fn gpu_spectral_update_matches_the_scalar_kernel_on_random_inputs() {
    let Some(ctx) = context() else { return };
    for (seed, p) in
        [(1u64, SpectralParams::default()), (2, SpectralParams { extend: 3, look: 8, mag_window: 5, score_window: 40 })]
    {
        let mut rng = Rng(seed);
        let mut cpu = SpectralState::default();
        let mut gpu = GpuSpectral::new(Arc::clone(&ctx), &p);
        let (mut series, mut worst, mut scored) = (0u32, 0.0f32, 0usize);
        for step in 0..160 {
            // New series arrive over time, so the device state grows (and is copied) mid-run.
            let grow = if step == 0 { 300 } else { (rng.next() % 8) as u32 };
            for _ in 0..grow {
                assert_eq!(cpu.push(), gpu.push());
                series += 1;
            }
            // Most series get a point every step (so their windows fill), in random order, none twice.
            let mut slots: Vec<u32> = (0..series).filter(|_| !rng.next().is_multiple_of(8)).collect();
            for i in (1..slots.len()).rev() {
                slots.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            let x: Vec<f32> = slots
                .iter()
                .map(|&s| {
                    let base = (s % 17) as f32 * 50.0 - 200.0;
                    let wave = ((step as f32) * 0.1 * (s % 5 + 1) as f32).sin() * (s % 3) as f32;
                    let spike = if rng.next().is_multiple_of(40) { 30.0 * (rng.unit() - 0.5) } else { 0.0 };
                    base + wave + rng.unit() + spike
                })
                .collect();
            let n = slots.len();
            let (mut s1, mut s2) = (vec![0.0; n], vec![0.0; n]);
            spectral_update_gather(&mut cpu, &slots, &x, &mut s1, &p);
            gpu.update(&slots, &x, &mut s2).unwrap();
            for i in 0..n {
                let err = (s1[i] - s2[i]).abs() / s1[i].abs().max(1.0);
                assert!(err <= SPECTRAL_TOLERANCE, "seed {seed} step {step} point {i}: cpu {} gpu {}", s1[i], s2[i]);
                worst = worst.max(err);
                scored += usize::from(s1[i] != 0.0);
            }
        }
        assert!(scored > 10_000, "seed {seed}: most points should be scored, {scored} were");
        eprintln!("spectral seed {seed}: {scored} scores, worst relative difference {worst:e}");
        let dev = gpu.download().unwrap();
        assert_eq!(cpu.count, dev.count, "seed {seed}: counts");
        assert_eq!(cpu.window, dev.window, "seed {seed}: windows");
        // And back: a loaded state is the state the device holds.
        let mut fresh = GpuSpectral::new(Arc::clone(&ctx), &p);
        for _ in 0..series {
            fresh.push();
        }
        fresh.load(&cpu).unwrap();
        assert_eq!(fresh.download().unwrap(), cpu, "seed {seed}: load then download");
    }
}

#[test]
fn gpu_detector_with_the_spectral_channel_raises_the_same_events_as_the_cpu() {
    let Some(ctx) = context() else { return };
    let mut cfg = faultline::config::Config::default_config().unwrap();
    cfg.detector.spectral.enabled = true;
    cfg.detector.spectral.warmup_points = 300;
    let mut cpu = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::Scalar);
    let mut gpu = ShardDetector::with_backend(&cfg.detector, &cfg.rca, |p| {
        ScoringBackend::gpu(GpuRobust::new(Arc::clone(&ctx), p))
    });
    // Forty series, interleaved, in batches of 997 points: a regular cycle each, with a broken rhythm (inside the
    // normal range: only the spectral channel sees it), a 3-point spike and, on every fourth, a level shift.
    let keys: Vec<_> = (0..40)
        .map(|i| Arc::new(faultline::model::SeriesKey::new("svc", &format!("m{i}"), [] as [(&str, &str); 0])))
        .collect();
    let (mut ids, mut ks, mut times, mut vals) = (vec![], vec![], vec![], vec![]);
    let mut rng = Rng(9);
    for t in 0..1500i64 {
        for (i, k) in keys.iter().enumerate() {
            let period = 8.0 + (i % 9) as f64;
            let stall = (900 + 10 * i as i64..906 + 10 * i as i64).contains(&t);
            let phase = if stall { 0.0 } else { std::f64::consts::TAU * t as f64 / period };
            let spike = if (1200 + i as i64..1203 + i as i64).contains(&t) { 60.0 } else { 0.0 };
            let shift = if i % 4 == 0 && t > 1300 { 80.0 } else { 0.0 };
            ids.push(k.id);
            ks.push(Arc::clone(k));
            times.push(t * 60_000);
            vals.push(100.0 + 10.0 * phase.sin() + f64::from(rng.unit()) + spike + shift);
        }
    }
    let (mut e1, mut e2) = (Vec::new(), Vec::new());
    let (mut sc1, mut sc2) = (vec![0.0; vals.len()], vec![0.0; vals.len()]);
    for start in (0..vals.len()).step_by(997) {
        let r = start..(start + 997).min(vals.len());
        let (ids, ks, ts, xs) = (&ids[r.clone()], &ks[r.clone()], &times[r.clone()], &vals[r.clone()]);
        cpu.process_scored(ids, ks, ts, xs, &mut e1, Some(&mut sc1[r.clone()]));
        gpu.process_scored(ids, ks, ts, xs, &mut e2, Some(&mut sc2[r]));
    }
    assert_eq!(gpu.scoring().name(), "gpu", "the GPU backend must not have fallen back");
    assert_eq!(gpu.spectral().unwrap().backend().name(), "gpu", "the spectral channel runs on the device");
    let identity = |ev: &[faultline::event::AnomalyEvent]| {
        ev.iter().map(|e| (e.key.metric.clone(), e.time, e.stage, e.direction)).collect::<Vec<_>>()
    };
    assert!(e1.len() > 40, "the scenario should raise events, got {}", e1.len());
    assert_eq!(identity(&e1), identity(&e2), "events differ between the CPU and GPU backends");
    // The stalls are the spectral channel's: the score stream flags most series' (24 of 40 on lavapipe).
    let stalls_seen = (0..40usize)
        .filter(|&i| (900 + 10 * i..912 + 10 * i).any(|t| sc1[t * 40 + i] >= 0.5 && sc2[t * 40 + i] >= 0.5))
        .count();
    assert!(stalls_seen >= 20, "the spectral channel should flag the broken rhythms: {stalls_seen} of 40");
    for (i, (a, b)) in sc1.iter().zip(&sc2).enumerate() {
        assert!((a - b).abs() <= 1e-6, "point {i}: score cpu {a} gpu {b}");
    }
    let (s1, s2) = (cpu.spectral().unwrap().backend().state(), gpu.spectral().unwrap().backend().state());
    assert_eq!(s1, s2, "the windows must be identical");
}

/// The seasonal scenario of the seasonal-shader tests: `series` series of 5-minute points over `days` days, each
/// step a random subset in random order (one chunk), daily or weekly seasons on some, noise on all, some points
/// learned with the anomaly weight and a few non-finite values. Calls `step` with each chunk.
fn seasonal_scenario(
    series: u32,
    days: i64,
    mut step: impl FnMut(&[u32], &[i64], &[i64], &[f32], &[f32]),
) -> faultline::detect::seasonal::SeasonalParams {
    const DAY: i64 = 86_400_000;
    const STEP: i64 = 300_000;
    let mut rng = Rng(5);
    let mut last = vec![i64::MIN; series as usize];
    for i in 0..days * DAY / STEP {
        let mut slots: Vec<u32> = (0..series).filter(|_| !rng.next().is_multiple_of(5)).collect();
        for k in (1..slots.len()).rev() {
            slots.swap(k, (rng.next() % (k as u64 + 1)) as usize);
        }
        let (mut times, mut dts, mut xs, mut ws) = (vec![], vec![], vec![], vec![]);
        for &s in &slots {
            // Up to a minute of jitter, so phases fall between bin centres differently each time.
            let t = i * STEP + (rng.next() % 60_000) as i64;
            let su = s as usize;
            dts.push(if last[su] == i64::MIN { 0 } else { t - last[su] });
            last[su] = t;
            times.push(t);
            let tau = std::f64::consts::TAU;
            let season = match s % 3 {
                0 => 30.0 * (tau * (t % DAY) as f64 / DAY as f64).sin(),
                1 => 20.0 * (tau * (t % (7 * DAY)) as f64 / (7 * DAY) as f64).cos(),
                _ => 0.0,
            } as f32;
            let x = 100.0 + s as f32 + season + 3.0 * rng.unit();
            xs.push(if rng.next().is_multiple_of(997) { f32::NAN } else { x });
            ws.push(if rng.next().is_multiple_of(20) { 0.05 } else { 1.0 });
        }
        step(&slots, &times, &dts, &xs, &ws);
    }
    faultline::detect::seasonal::SeasonalParams {
        periods: vec![DAY, 7 * DAY],
        bins: vec![96, 48],
        rate: 0.1,
        alpha: 0.05,
        min_periods: 2.0,
        min_gain: 0.3,
    }
}

fn seasonal_params() -> faultline::detect::seasonal::SeasonalParams {
    seasonal_scenario(0, 0, |_, _, _, _, _| {})
}

/// The CPU twin of `seasonal_update.wgsl` against the engine's `SeasonalBank`, bit for bit (no GPU needed).
#[test]
fn seasonal_twin_matches_the_seasonal_bank() {
    use faultline::detect::seasonal::{SeasonalBank, Switch};
    use faultline::gpu::seasonal::{seasonal_params_gpu, seasonal_point};
    use faultline_shaders::seasonal::{
        SeasonalBuffers, SeasonalParamsGpu, SeasonalQueryGpu, seasonal_offset_twin, seasonal_update_twin,
    };
    let p = seasonal_params();
    let series = 30;
    let (mut bank, mut twin) = (SeasonalBank::default(), SeasonalBuffers::default());
    for _ in 0..series {
        bank.push(&p);
        twin.push(p.periods.len(), p.stride());
    }
    let mut gp = seasonal_params_gpu(&p);
    let mut first = vec![i64::MIN; series as usize];
    let (mut activations, mut deactivations) = (0, 0);
    let mut offsets = 0;
    seasonal_scenario(series, 9, |slots, times, dts, xs, ws| {
        // The offset pass's twin reads the same state the bank does, bit for bit.
        let queries: Vec<SeasonalQueryGpu> = (0..slots.len())
            .map(|i| {
                let s = slots[i] as usize;
                let c = bank.active(s).unwrap_or(0);
                let (b0, b1, frac) = faultline::detect::seasonal::phase(times[i], p.periods[c], p.bins[c]);
                SeasonalQueryGpu { slot: slots[i], b0: b0 as u32, b1: b1 as u32, frac }
            })
            .collect();
        let mut got = vec![f32::NAN; queries.len()];
        seasonal_offset_twin(&SeasonalParamsGpu { n: queries.len() as u32, ..gp }, &twin, &queries, &mut got);
        for i in 0..slots.len() {
            let want = bank.offset(slots[i] as usize, times[i], &p);
            assert_eq!(got[i].to_bits(), want.to_bits(), "offset of series {} at {}", slots[i], times[i]);
            offsets += usize::from(want != 0.0);
        }
        let mut points = Vec::new();
        let mut expect = Vec::new();
        for i in 0..slots.len() {
            let s = slots[i] as usize;
            let sw = bank.update(s, times[i], dts[i], xs[i], ws[i], &p);
            if !xs[i].is_finite() {
                continue;
            }
            points.push(seasonal_point(slots[i], times[i], dts[i], xs[i], ws[i], first[s], &p));
            if first[s] == i64::MIN {
                first[s] = times[i];
            }
            expect.push(match sw {
                Switch::Unchanged => 0,
                Switch::Activated(c) => c as i32 + 1,
                Switch::Deactivated => -1,
            });
        }
        gp.n = points.len() as u32;
        let mut got = vec![0; points.len()];
        seasonal_update_twin(&gp, &mut twin, &points, &mut got);
        assert_eq!(got, expect);
        activations += expect.iter().filter(|&&c| c > 0).count();
        deactivations += expect.iter().filter(|&&c| c < 0).count();
    });
    assert!(activations >= 10, "the scenario should find the daily seasons: {activations}");
    assert!(offsets > 1000, "most points of seasonal series should have an offset: {offsets}");
    eprintln!("seasonal twin: {activations} activations, {deactivations} deactivations");
    assert!(bank.to_buffers() == twin, "the twin's state differs from the bank's");
}

/// Tolerance of the seasonal state on the device against the CPU, for series at 100..130: `|cpu − gpu|` at most
/// `SEASONAL_TOLERANCE · (130 + |cpu|)`, relative to the series' scale: values that cancel to near 0 (the profile's
/// running sum) carry rounding at the scale of the residuals, which drifts over the 2,600 points of the run.
const SEASONAL_TOLERANCE: f32 = 1e-4;

/// `seasonal_update.wgsl` on the device against the engine's `SeasonalBank`: the same season switches, state within
/// `SEASONAL_TOLERANCE`: `exp` is the driver's, everything else is the same f32 operations.
#[test]
fn gpu_seasonal_update_matches_the_seasonal_bank() {
    use faultline::detect::seasonal::{SeasonalBank, Switch};
    use faultline::gpu::GpuSeasonal;
    let Some(ctx) = context() else { return };
    let p = seasonal_params();
    let series = 30;
    let mut bank = SeasonalBank::default();
    let mut gpu = GpuSeasonal::new(Arc::clone(&ctx), &p);
    let (mut switched, mut offsets) = (0, 0);
    seasonal_scenario(series, 9, |slots, times, dts, xs, ws| {
        // Series arrive over time: the device state grows mid-run.
        while gpu.len() < series as usize && (gpu.len() < 10 || times[0] > 86_400_000) {
            bank.push(&p);
            gpu.push();
        }
        let mut s2 = Vec::new();
        let keep: Vec<usize> = (0..slots.len()).filter(|&i| (slots[i] as usize) < gpu.len()).collect();
        let pick = |v: &[i64]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let pickf = |v: &[f32]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let sl: Vec<u32> = keep.iter().map(|&i| slots[i]).collect();
        let (ts, ds, x, w) = (pick(times), pick(dts), pickf(xs), pickf(ws));
        // The offsets the robust model's input removes, read from the device's resident state before the update.
        let mut o2 = vec![0.0; sl.len()];
        gpu.offsets(&sl, &ts, &mut o2).unwrap();
        for i in 0..sl.len() {
            let o1 = bank.offset(sl[i] as usize, ts[i], &p);
            let excess = (o1 - o2[i]).abs() / (SEASONAL_TOLERANCE * (130.0 + o1.abs()));
            assert!(excess <= 1.0, "offset of series {} at {}: cpu {o1} gpu {}", sl[i], ts[i], o2[i]);
            offsets += usize::from(o1 != 0.0);
        }
        let s1: Vec<Switch> =
            (0..sl.len()).map(|i| bank.update(sl[i] as usize, ts[i], ds[i], x[i], w[i], &p)).collect();
        s2.resize(sl.len(), Switch::Unchanged);
        gpu.update(&sl, &ts, &ds, &x, &w, &mut s2).unwrap();
        assert_eq!(s1, s2, "season switches differ");
        switched += s1.iter().filter(|s| **s != Switch::Unchanged).count();
    });
    assert!(switched >= 10, "the scenario should switch seasons: {switched}");
    assert!(offsets > 1000, "most points of seasonal series should have an offset: {offsets}");
    // The trackers a switch restarts the robust model from: every candidate's and the plain level's.
    let which: Vec<(u32, Option<usize>)> = (0..series).flat_map(|s| [(s, None), (s, Some(0)), (s, Some(1))]).collect();
    let mut trackers = Vec::new();
    gpu.trackers(&which, &mut trackers).unwrap();
    for (&(s, c), &(level, err, spread)) in which.iter().zip(&trackers) {
        let (l1, e1, sp1) = bank.tracker(s as usize, c, &p);
        assert!(
            (sp1 - spread).abs() <= SEASONAL_TOLERANCE * (130.0 + sp1.abs()) || sp1 == spread,
            "tracker {s} {c:?}: spread {sp1} vs {spread}"
        );
        assert!((l1 - level).abs() <= SEASONAL_TOLERANCE * (130.0 + l1.abs()), "tracker {s} {c:?}: {l1} vs {level}");
        assert!((e1 - err).abs() <= SEASONAL_TOLERANCE * (130.0 + e1.abs()), "tracker {s} {c:?}: {e1} vs {err}");
    }
    for s in 0..series as usize {
        assert_eq!(bank.active(s), gpu.active(s), "the host's mirror of series {s}'s season");
    }
    let (cpu, dev) = (bank.to_buffers(), gpu.download().unwrap());
    assert_eq!(cpu.info, dev.info, "points seen and active seasons");
    // Errors are partly absolute at the scale of the series: an accumulator such as the profile's sum can cancel to
    // near 0 while its steps carry rounding at the scale of the residuals.
    let near = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        let mut worst = 0.0f32;
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let excess = (x - y).abs() / (SEASONAL_TOLERANCE * (130.0 + x.abs()));
            assert!(excess <= 1.0, "{what}[{i}]: cpu {x} gpu {y}");
            worst = worst.max(excess);
        }
        eprintln!("seasonal {what}: worst difference {worst:.3} of the tolerance");
    };
    // The profiles' values: the units may differ by a doubling where a bin's growth reached one on one side only.
    near(&cpu.values(&p.bins), &dev.values(&p.bins), "profile");
    near(&cpu.cand, &dev.cand, "cand");
    near(&cpu.plain, &dev.plain, "plain");
}

/// A forgotten series' slot on the device is as fresh as a new one: with `engine.series-idle`, a GPU shard that
/// forgets two seasonal series and gives their slots to two new ones scores the new ones exactly as a GPU shard that
/// never saw the old ones (robust state, seasonal profiles and trackers, calibrators and spectral windows reset on the
/// device).
#[test]
fn a_forgotten_series_slot_on_the_device_serves_the_next_series_fresh() {
    let Some(ctx) = context() else { return };
    let mut cfg = faultline::config::Config::default_config().unwrap();
    cfg.detector.spectral.enabled = true;
    cfg.detector.spectral.warmup_points = 100;
    let gpu = || {
        ShardDetector::with_backend(&cfg.detector, &cfg.rca, |p| {
            ScoringBackend::gpu(GpuRobust::new(Arc::clone(&ctx), p))
        })
    };
    let (mut det, mut fresh) = (gpu(), gpu());
    let (mut clock_det, mut clock_fresh) = (EventClock::default(), EventClock::default());
    const DAY: i64 = 86_400_000;
    const STEP: i64 = 300_000;
    det.forget_idle_series(DAY);
    let key =
        |svc: &str, metric: &str| Arc::new(faultline::model::SeriesKey::new(svc, metric, [] as [(&str, &str); 0]));
    // Days of 5-minute points of a daily cycle with noise, two 4-point spikes and a level shift.
    let values = |days: i64, base: f64, seed: u64| {
        let mut rng = Rng(seed);
        let n = (days * DAY / STEP) as usize;
        (0..n)
            .map(|i| {
                let day = (std::f64::consts::TAU * (i % 288) as f64 / 288.0).sin();
                let spike =
                    if (n / 3..n / 3 + 4).contains(&i) || (n / 2..n / 2 + 4).contains(&i) { 2.0 * base } else { 0.0 };
                let shift = if i > 3 * n / 4 { 0.5 * base } else { 0.0 };
                base + 0.3 * base * day + 0.02 * base * f64::from(rng.unit()) + spike + shift
            })
            .collect::<Vec<f64>>()
    };
    // Each batch followed by a look for quiet series at the event time, as the pipeline does.
    let run = |det: &mut ShardDetector,
               clock: &mut EventClock,
               series: &[(&Arc<faultline::model::SeriesKey>, &[f64])],
               t0: i64| {
        let (mut events, mut scores, mut forgotten) = (Vec::new(), Vec::new(), 0);
        for i in 0..series[0].1.len() {
            let ks: Vec<_> = series.iter().map(|(k, _)| Arc::clone(k)).collect();
            let ids: Vec<_> = ks.iter().map(|k| k.id).collect();
            let xs: Vec<f64> = series.iter().map(|(_, v)| v[i]).collect();
            let mut sc = vec![0.0; ks.len()];
            let st =
                det.process_scored(&ids, &ks, &vec![t0 + i as i64 * STEP; ks.len()], &xs, &mut events, Some(&mut sc));
            scores.extend(sc.iter().map(|s| s.to_bits()));
            assert_eq!(st.points, ids.len() as u64);
            for &id in &ids {
                clock.see(id, t0 + i as i64 * STEP);
            }
            forgotten += det.forget_quiet(clock.now());
        }
        let events: Vec<String> = events.iter().map(|e| serde_json::to_string(&e.to_wire()).unwrap()).collect();
        (events, scores, forgotten)
    };
    let (a1, a2, b1, b2, c1, c2) =
        (key("a", "x"), key("a", "y"), key("b", "x"), key("b", "y"), key("c", "x"), key("c", "y"));
    let (xa1, xa2, xb1, xb2) = (values(4, 100.0, 3), values(4, 7.0, 5), values(3, 40.0, 7), values(3, 3.0, 11));
    let (events_a, _, _) = run(&mut det, &mut clock_det, &[(&a1, &xa1), (&a2, &xa2)], 0);
    assert!(!events_a.is_empty());
    let later = 6 * DAY;
    let (_, _, forgotten) = run(&mut det, &mut clock_det, &[(&c1, &[1.0]), (&c2, &[1.0])], later);
    assert_eq!((forgotten, det.series_count()), (2, 2), "a's series forgotten");
    let (events, scores, _) = run(&mut det, &mut clock_det, &[(&b1, &xb1), (&b2, &xb2)], later + STEP);
    let (events_fresh, scores_fresh, _) = run(&mut fresh, &mut clock_fresh, &[(&b1, &xb1), (&b2, &xb2)], later + STEP);
    assert_eq!(det.scoring().name(), "gpu", "the GPU backend must not have fallen back");
    assert_eq!(det.spectral().unwrap().backend().name(), "gpu");
    assert!(!events.is_empty());
    assert_eq!(events, events_fresh, "b's events in a's slots and in a shard of their own");
    assert_eq!(scores, scores_fresh, "b's scores in a's slots and in a shard of their own");
    eprintln!("{} events of a, {} of b, the same in a fresh shard", events_a.len(), events.len());
}
