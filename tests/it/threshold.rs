//! The calibrated threshold on the device: `spot_update.wgsl` (on lavapipe in CI, any Vulkan adapter elsewhere), its
//! CPU twin, and the engine's own SPOT calibrator as the band judgement uses it.
//!
//! Tolerance: the calibrator's state update is the same f32 arithmetic everywhere, so thresholds, counts and the
//! peaks' moments must agree to 1e-5 relative. The surprise and the band go through `ln`/`exp`: the engine computes
//! them in f64, WGSL has only f32 and each driver its own `log`/`exp`, so they must agree to 1e-4 relative (a
//! thousandth of a decade of probability). The learn decision (surprise against the alarm level) then agrees except
//! within that tolerance of the alarm level, which this deterministic stream never hits.

use faultline::detect::spot::{Spot, SpotParams};
use faultline::gpu::GpuContext;
use faultline::gpu::spot::GpuSpot;
use faultline_shaders::spot::spot_update_twin;
use faultline_shaders::{SpotOutGpu, SpotParamsGpu, SpotPointGpu, SpotStateGpu};

const SERIES: usize = 96;
const STEPS: usize = 2500;
const ALARM: f64 = 3.4;

/// The statistic of every series at every step: compressed |z| of heavy-tailed noise, with bursts of anomalies
/// (which the calibrators must not learn from) in a third of the series.
fn stream() -> Vec<Vec<f32>> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut unit = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    (0..STEPS)
        .map(|step| {
            (0..SERIES)
                .map(|s| {
                    let (u, v) = (unit(), unit());
                    let z = (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos();
                    let heavy = if unit() < 0.02 { 4.0 } else { 1.0 };
                    let burst = if s % 3 == 0 && step % 700 > 690 { 25.0 } else { 0.0 };
                    (z * heavy).abs() + burst
                })
                .collect()
        })
        .collect()
}

fn params(p: &SpotParams, n: u32) -> SpotParamsGpu {
    SpotParamsGpu {
        quantile: p.quantile,
        step: p.step,
        min_peaks: p.min_peaks,
        memory: p.memory,
        max_shape: p.max_shape,
        alarm: ALARM as f32,
        n,
        _pad: 0,
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

fn same_state(engine: &Spot, st: &SpotStateGpu) -> bool {
    engine.n == st.n
        && engine.peaks == st.peaks
        && close(f64::from(engine.t), f64::from(st.t), 1e-5)
        && close(f64::from(engine.m1), f64::from(st.m1), 1e-5)
        && close(f64::from(engine.m2), f64::from(st.m2), 1e-5)
}

/// Runs the stream through the engine's calibrators as `ShardDetector` judges its band, and through `step`,
/// comparing surprise and band at every point; returns the engine's final calibrators.
fn compare(label: &str, mut step: impl FnMut(&[u32], &[f32], &mut [SpotOutGpu])) -> Vec<Spot> {
    let p = SpotParams::default();
    let mut engine = vec![Spot::new(1.0); SERIES];
    // A permutation, so the device gathers.
    let slots: Vec<u32> = (0..SERIES as u32).map(|i| (i * 37) % SERIES as u32).collect();
    let (mut calibrated, mut beyond) = (0u32, 0u32);
    for (k, values) in stream().iter().enumerate() {
        let x: Vec<f32> = slots.iter().map(|&s| values[s as usize]).collect();
        let mut outs = vec![SpotOutGpu::default(); SERIES];
        step(&slots, &x, &mut outs);
        for (i, &slot) in slots.iter().enumerate() {
            let spot = &mut engine[slot as usize];
            let out = outs[i];
            if spot.calibrated(&p) {
                let s = spot.surprise(x[i], &p);
                assert!(
                    close(s, f64::from(out.surprise), 1e-4),
                    "{label}: step {k} slot {slot}: surprise {s} vs {out:?}"
                );
                calibrated += 1;
                beyond += u32::from(s >= ALARM);
                spot.update(x[i], s < ALARM, &p);
            } else {
                assert_eq!(out.surprise, -1.0, "{label}: step {k} slot {slot}: uncalibrated");
                spot.update(x[i], true, &p);
            }
            if spot.calibrated(&p) {
                let band = spot.quantile_at(ALARM, &p);
                assert!(close(f64::from(band), f64::from(out.band), 1e-4), "{label}: step {k}: band {band} vs {out:?}");
            }
        }
    }
    assert!(calibrated > (SERIES * STEPS / 2) as u32, "{label}: most points are judged by a calibrated tail");
    assert!(beyond > 100, "{label}: the bursts are beyond the band ({beyond})");
    engine
}

fn assert_same_states(label: &str, engine: &[Spot], states: &[SpotStateGpu]) {
    assert_eq!(engine.len(), states.len());
    for (s, (e, st)) in engine.iter().zip(states).enumerate() {
        assert!(same_state(e, st), "{label}: series {s}: {e:?} vs {st:?}");
    }
}

#[test]
fn spot_twin_matches_the_engine_calibrator() {
    let p = SpotParams::default();
    let mut state = vec![SpotStateGpu { t: 1.0, ..Default::default() }; SERIES];
    let engine = compare("twin", |slots, x, outs| {
        let points: Vec<SpotPointGpu> =
            slots.iter().zip(x).map(|(&slot, &x)| SpotPointGpu { slot, x, learn: 1 }).collect();
        spot_update_twin(&params(&p, slots.len() as u32), &mut state, &points, outs);
    });
    assert_same_states("twin", &engine, &state);
}

#[test]
fn spot_shader_matches_the_engine_calibrator() {
    let ctx = match GpuContext::shared() {
        Ok(ctx) => ctx,
        Err(reason) => {
            eprintln!("skipped: no GPU adapter: {reason}");
            return;
        }
    };
    eprintln!("GPU adapter: {}", ctx.description());
    let p = SpotParams::default();
    let mut gpu = GpuSpot::new(ctx, &p, ALARM, 1.0);
    for _ in 0..SERIES {
        gpu.push();
    }
    let engine = compare("shader", |slots, x, outs| gpu.update(slots, x, outs).expect("dispatch"));
    assert_same_states("shader", &engine, &gpu.download().expect("download"));
}
