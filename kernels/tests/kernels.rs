//! One suite for every kernel implementation this build and CPU can run: behaviour tests on each, and proptests
//! comparing each with the scalar oracle.
//!
//! Tolerance: none. The SIMD implementations are written to round exactly as the oracle does, so every output
//! (z, sigma, level, mad, count) must have the same bits; NaN, where an input makes one, must be NaN in both.

use faultline_kernels::{KERNEL_NAMES, Kernels, RobustParams, RobustState, SelectError};
use proptest::prelude::*;

/// Every implementation to test; always starts with scalar.
fn impls() -> Vec<Kernels> {
    let all = Kernels::available();
    assert_eq!(all[0], Kernels::Scalar);
    all
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Asserts two float slices agree bit for bit, naming the first difference.
fn assert_same(what: &str, k: Kernels, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..got.len()).find(|&i| !same_bits(got[i], want[i])) {
        panic!(
            "{k}: {what}[{i}] = {:e} ({:#x}), scalar gives {:e} ({:#x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

fn assert_same_state(k: Kernels, got: &RobustState, want: &RobustState) {
    assert_same("level", k, &got.level, &want.level);
    assert_same("mad", k, &got.mad, &want.mad);
    assert_eq!(got.count, want.count, "{k}: count");
}

/// Small deterministic generator for the behaviour tests (the proptests use proptest's).
struct Lcg(u32);

impl Lcg {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (self.0 >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    }
}

fn state_of(n: usize) -> RobustState {
    let mut st = RobustState::default();
    for _ in 0..n {
        st.push();
    }
    st
}

/// Feeds `ticks` to `series` series, tick `t` giving series `s` the value `value(t, s)`, through the dense form and
/// through the gathering form (with the series in a different order each tick), and checks both against scalar.
/// Returns the state and the z-scores of the last tick.
fn run_ticks(k: Kernels, series: usize, ticks: usize, value: impl Fn(usize, usize) -> f32) -> (RobustState, Vec<f32>) {
    let p = RobustParams::default();
    let mut dense = state_of(series);
    let mut gathered = state_of(series);
    let mut oracle = state_of(series);
    let mut order: Vec<u32> = (0..series as u32).collect();
    let mut rng = Lcg(7);
    let (mut z, mut sigma) = (vec![0.0; series], vec![0.0; series]);
    let (mut zg, mut sg) = (vec![0.0; series], vec![0.0; series]);
    let (mut zo, mut so) = (vec![0.0; series], vec![0.0; series]);
    for t in 0..ticks {
        let x: Vec<f32> = (0..series).map(|s| value(t, s)).collect();
        k.robust_update_dense(dense.as_slices_mut(), &x, &mut z, &mut sigma, &p);
        Kernels::Scalar.robust_update_dense(oracle.as_slices_mut(), &x, &mut zo, &mut so, &p);
        assert_same("dense z", k, &z, &zo);
        assert_same("dense sigma", k, &sigma, &so);
        // Shuffle the arrival order; the gathering form must give every series the same update.
        for i in (1..series).rev() {
            order.swap(i, ((rng.next() + 1.0) * 0.5 * i as f32) as usize % (i + 1));
        }
        let xg: Vec<f32> = order.iter().map(|&s| x[s as usize]).collect();
        k.robust_update_gather(&mut gathered, &order, &xg, &mut zg, &mut sg, &p);
        for (i, &s) in order.iter().enumerate() {
            assert!(same_bits(zg[i], zo[s as usize]), "{k}: gather z of series {s} at tick {t}");
            assert!(same_bits(sg[i], so[s as usize]), "{k}: gather sigma of series {s} at tick {t}");
        }
    }
    assert_same_state(k, &dense, &oracle);
    assert_same_state(k, &gathered, &oracle);
    (dense, z)
}

#[test]
fn detection_lists_what_the_cpu_has() {
    let names: Vec<&str> = impls().iter().map(|k| k.name()).collect();
    eprintln!("kernel implementations on this machine: {names:?}; detect() chose {}", Kernels::detect());
    #[cfg(all(feature = "simd", target_arch = "x86_64"))]
    {
        assert_eq!(names.contains(&"avx2"), std::is_x86_feature_detected!("avx2"));
        let avx512 = std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512cd");
        assert_eq!(names.contains(&"avx512"), avx512);
    }
    #[cfg(not(feature = "simd"))]
    assert_eq!(names, ["scalar"]);
    for k in impls() {
        assert_eq!(Kernels::by_name(k.name()), Ok(k));
        assert_eq!(Kernels::by_name(&k.name().to_uppercase()), Ok(k));
    }
    assert_eq!(Kernels::best(), *impls().last().unwrap());
}

#[test]
fn environment_override_forces_or_falls_back_with_a_reason() {
    let forced = Kernels::select("scalar");
    assert_eq!((forced.kernels, forced.forced, forced.fallback), (Kernels::Scalar, true, None));
    for auto in ["", "auto", " AUTO "] {
        let s = Kernels::select(auto);
        assert_eq!((s.kernels, s.forced, s.fallback), (Kernels::best(), false, None));
    }
    let bad = Kernels::select("sse9");
    assert_eq!(bad.kernels, Kernels::best());
    let err = bad.fallback.expect("an unknown name is reported");
    assert_eq!(err, SelectError::Unknown("sse9".into()));
    assert!(err.to_string().contains("expected auto or one of scalar, avx2, avx512, neon"), "{err}");
    // Every known name either runs here or says why not.
    for name in KERNEL_NAMES {
        match Kernels::by_name(name) {
            Ok(k) => assert_eq!(k.name(), name),
            Err(SelectError::NotCompiled(n)) => assert_eq!(n, name),
            Err(SelectError::Unsupported { name: n, needs }) => assert!(n == name && !needs.is_empty()),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    #[cfg(not(feature = "simd"))]
    assert_eq!(Kernels::by_name("avx2"), Err(SelectError::NotCompiled("avx2")));
    #[cfg(target_arch = "x86_64")]
    assert_eq!(Kernels::by_name("neon"), Err(SelectError::NotCompiled("neon")));
    // What this process runs is what its environment asked for.
    let env = std::env::var(Kernels::ENV).unwrap_or_default();
    assert_eq!(Kernels::detect(), Kernels::select(&env).kernels);
}

#[test]
fn converges_to_level_and_scale_of_noisy_series() {
    for k in impls() {
        let mut rng = Lcg(12345);
        let noise: Vec<f32> = (0..2000 * 37).map(|_| rng.next()).collect();
        let (st, z) = run_ticks(k, 37, 2000, |t, s| 100.0 * (s + 1) as f32 + noise[t * 37 + s]);
        for s in 0..37 {
            let want = 100.0 * (s + 1) as f32;
            assert!((st.level[s] - want).abs() < 0.2 + 0.005 * want, "{k}: level {} of series {s}", st.level[s]);
        }
        // Uniform[-1,1] has mean absolute deviation 0.5 (the relative floor dominates on the larger series).
        assert!((st.mad[0] - 0.5).abs() < 0.1, "{k}: mad {}", st.mad[0]);
        assert!(z.iter().all(|z| z.abs() < 4.0), "{k}: {z:?}");
    }
}

#[test]
fn outage_does_not_become_normal() {
    for k in impls() {
        // 21 series (not a multiple of any lane count); the outage starts at tick 500 and lasts 200 ticks.
        let (st, z) = run_ticks(k, 21, 700, |t, s| {
            if t >= 500 { 30.0 + s as f32 } else { 10.0 + s as f32 + if t % 2 == 0 { 0.5 } else { -0.5 } }
        });
        for (s, (&level, &z)) in st.level.iter().zip(&z).enumerate() {
            assert!(level < 12.0 + s as f32, "{k}: level of series {s} drifted to {level}");
            assert!(z > 8.0, "{k}: z of series {s} at the end of the outage {z}");
        }
    }
}

#[test]
fn constant_series_gives_finite_scores() {
    for k in impls() {
        let (_, z) = run_ticks(k, 19, 50, |_, s| s as f32);
        assert!(z.iter().all(|z| z.is_finite() && *z == 0.0), "{k}: {z:?}");
        let (_, z) = run_ticks(k, 19, 5, |t, _| if t == 4 { 1.0 } else { 0.0 });
        assert!(z.iter().all(|z| z.is_finite() && *z > 100.0), "{k}: {z:?}");
    }
}

/// The branches of the step, lane by lane: first point, second point, warm-up, the n >= 8 anomaly gate, a
/// saturated count, and values whose arithmetic overflows or is NaN.
#[test]
fn every_branch_matches_scalar_bit_for_bit() {
    let counts = [0, 1, 2, 6, 7, 8, 9, 19, 20, 21, 1000, 1 << 24, (1 << 24) + 1, u32::MAX - 1, u32::MAX, 1 << 31];
    let levels = [0.0, -0.0, 1.0, -3.5, 1e-30, 1e30, -1e30, 3e38, f32::INFINITY, f32::NAN, 7.0, 1e-40];
    let mads = [0.0, 0.25, 1e-38, 1e30, 3e38, f32::NAN, -1.0, 1e-45];
    let xs = [0.0, -0.0, 1.0, 1000.0, -1000.0, 3e38, -3e38, 1e-40, f32::NEG_INFINITY, f32::NAN, 7.0];
    let mut st = RobustState::default();
    let mut x = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        for (j, &l) in levels.iter().enumerate() {
            for (m, &md) in mads.iter().enumerate() {
                st.push();
                let s = st.len() - 1;
                st.count[s] = c;
                st.level[s] = l;
                st.mad[s] = md;
                x.push(xs[(i + j + m) % xs.len()]);
            }
        }
    }
    let params = [
        RobustParams::default(),
        RobustParams { alpha: 1.0, beta: 1.0, anomaly_weight: 0.0, ..RobustParams::default() },
        RobustParams {
            alpha: 1e-4,
            beta: 0.3,
            huber: 0.1,
            threshold: 0.5,
            anomaly_weight: 1.0,
            abs_floor: 1e-30,
            rel_floor: 0.0,
        },
    ];
    let n = x.len();
    for p in &params {
        let mut oracle = st.clone();
        let (mut zo, mut so) = (vec![0.0; n], vec![0.0; n]);
        Kernels::Scalar.robust_update_dense(oracle.as_slices_mut(), &x, &mut zo, &mut so, p);
        for k in impls() {
            let mut got = st.clone();
            let (mut z, mut sigma) = (vec![0.0; n], vec![0.0; n]);
            k.robust_update_dense(got.as_slices_mut(), &x, &mut z, &mut sigma, p);
            assert_same("z", k, &z, &zo);
            assert_same("sigma", k, &sigma, &so);
            assert_same_state(k, &got, &oracle);

            let mut got = st.clone();
            let slots: Vec<u32> = (0..n as u32).collect();
            k.robust_update_gather(&mut got, &slots, &x, &mut z, &mut sigma, p);
            assert_same("gather z", k, &z, &zo);
            assert_same("gather sigma", k, &sigma, &so);
            assert_same_state(k, &got, &oracle);
        }
    }
}

/// A state large enough for the SIMD gathering forms to prefetch, updated in a random order.
#[test]
fn large_shuffled_batches_match_scalar() {
    let n = 140_000;
    let p = RobustParams::default();
    let mut rng = Lcg(99);
    let mut slots: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        slots.swap(i, ((rng.next() + 1.0) * 0.5 * i as f32) as usize % (i + 1));
    }
    let mut oracle = state_of(n);
    let mut got: Vec<RobustState> = impls().iter().map(|_| state_of(n)).collect();
    let (mut zo, mut so) = (vec![0.0; n], vec![0.0; n]);
    let (mut z, mut sigma) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..3 {
        let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 + rng.next()).collect();
        Kernels::Scalar.robust_update_gather(&mut oracle, &slots, &x, &mut zo, &mut so, &p);
        for (k, st) in impls().into_iter().zip(&mut got) {
            k.robust_update_gather(st, &slots, &x, &mut z, &mut sigma, &p);
            assert_same("z", k, &z, &zo);
            assert_same("sigma", k, &sigma, &so);
        }
    }
    for (k, st) in impls().into_iter().zip(&got) {
        assert_same_state(k, st, &oracle);
    }
}

#[test]
fn slices_mut_updates_only_its_range() {
    let p = RobustParams::default();
    for k in impls() {
        let mut st = state_of(40);
        let x = vec![3.0; 20];
        let (mut z, mut sigma) = (vec![0.0; 20], vec![0.0; 20]);
        k.robust_update_dense(st.slices_mut(10..30), &x, &mut z, &mut sigma, &p);
        let touched: Vec<usize> = (0..40).filter(|&s| st.count[s] == 1).collect();
        assert_eq!(touched, (10..30).collect::<Vec<_>>(), "{k}");
        assert!(st.level[10..30].iter().all(|&l| l == 3.0), "{k}");
    }
}

#[test]
fn out_of_bounds_slot_panics_after_the_points_before_it() {
    let p = RobustParams::default();
    for k in impls() {
        let mut st = state_of(40);
        // Point 19 is out of bounds: points 0..19 (distinct, in full SIMD blocks) are applied, then it panics.
        let mut slots: Vec<u32> = (0..40).collect();
        slots[19] = 40;
        let x = vec![1.0; 40];
        let (mut z, mut sigma) = (vec![0.0; 40], vec![0.0; 40]);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            k.robust_update_gather(&mut st, &slots, &x, &mut z, &mut sigma, &p)
        }));
        assert!(res.is_err(), "{k}: no panic");
        let applied: Vec<usize> = (0..40).filter(|&s| st.count[s] == 1).collect();
        assert_eq!(applied, (0..19).collect::<Vec<_>>(), "{k}");
    }
}

#[test]
fn mismatched_lengths_panic() {
    let p = RobustParams::default();
    for k in impls() {
        let res = std::panic::catch_unwind(|| {
            let mut st = state_of(16);
            let (mut z, mut sigma) = (vec![0.0; 16], vec![0.0; 16]);
            k.robust_update_dense(st.as_slices_mut(), &[1.0; 15], &mut z, &mut sigma, &p);
        });
        assert!(res.is_err(), "{k}: dense accepted 15 points for 16 series");
        let res = std::panic::catch_unwind(|| {
            let mut st = state_of(16);
            let (mut z, mut sigma) = (vec![0.0; 16], vec![0.0; 15]);
            k.robust_update_gather(&mut st, &[0; 16], &[1.0; 16], &mut z, &mut sigma, &p);
        });
        assert!(res.is_err(), "{k}: gather accepted 15 sigmas for 16 points");
    }
}

// ---- proptests against the oracle ----

/// Finite values from tiny to huge, both signs, with exact zeros and small integers that make ties likely.
fn wide_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -1e3f32..1e3,
        2 => -1e30f32..1e30,
        1 => -1e-30f32..1e-30,
        1 => (-8i32..8).prop_map(|i| i as f32),
        1 => Just(0.0f32),
    ]
}

fn scale_f32() -> impl Strategy<Value = f32> {
    prop_oneof![3 => 0f32..1e3, 1 => 0f32..1e30, 1 => 0f32..1e-30, 1 => Just(0.0f32)]
}

fn count_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(0u32),
        2 => Just(1u32),
        2 => 2u32..8,
        2 => 8u32..40,
        2 => 40u32..100_000,
        1 => prop_oneof![Just(u32::MAX - 1), Just(u32::MAX), 1u32 << 31..u32::MAX],
    ]
}

/// Valid parameters (as the engine's config validation allows, with `abs_floor > 0`).
fn params() -> impl Strategy<Value = RobustParams> {
    (1e-4f32..=1.0, 1e-4f32..=1.0, 0.1f32..100.0, 0.5f32..20.0, 0f32..=1.0, 1e-9f32..1e3, 0f32..=1.0).prop_map(
        |(alpha, beta, huber, threshold, anomaly_weight, abs_floor, rel_floor)| RobustParams {
            alpha,
            beta,
            huber,
            threshold,
            anomaly_weight,
            abs_floor,
            rel_floor,
        },
    )
}

fn state(len: impl Into<proptest::sample::SizeRange>) -> impl Strategy<Value = RobustState> {
    prop::collection::vec((wide_f32(), scale_f32(), count_u32()), len).prop_map(|v| RobustState {
        level: v.iter().map(|t| t.0).collect(),
        mad: v.iter().map(|t| t.1).collect(),
        count: v.iter().map(|t| t.2).collect(),
    })
}

/// A state and 1 to 4 rounds of one point per series.
fn dense_case() -> impl Strategy<Value = (RobustState, Vec<Vec<f32>>, RobustParams)> {
    (0usize..100)
        .prop_flat_map(|n| (state(n), prop::collection::vec(prop::collection::vec(wide_f32(), n), 1..5), params()))
}

/// A state and a batch of points whose slots come as shuffled ticks (mostly distinct within a SIMD block, with
/// repeats where ticks meet), as ticks in slot order (runs of consecutive slots), or at random (mostly repeated).
fn gather_case() -> impl Strategy<Value = (RobustState, Vec<u32>, Vec<f32>, RobustParams)> {
    (1usize..70)
        .prop_flat_map(|n| {
            let ticks = prop::collection::vec(Just((0..n as u32).collect::<Vec<_>>()).prop_shuffle(), 0..4)
                .prop_map(|t| t.concat());
            let in_order = (0usize..4).prop_map(move |t| (0..t * n).map(|i| (i % n) as u32).collect::<Vec<_>>());
            let random = prop::collection::vec(0..n as u32, 0..200);
            (state(n), prop_oneof![ticks, in_order, random], params())
        })
        .prop_flat_map(|(st, slots, p)| {
            let len = slots.len();
            (Just(st), Just(slots), prop::collection::vec(wide_f32(), len), Just(p))
        })
}

proptest! {
    #[test]
    fn dense_matches_scalar((st, rounds, p) in dense_case()) {
        let n = st.len();
        let mut oracle = st.clone();
        let mut got: Vec<RobustState> = impls().iter().map(|_| st.clone()).collect();
        for x in &rounds {
            let (mut zo, mut so) = (vec![0.0; n], vec![0.0; n]);
            Kernels::Scalar.robust_update_dense(oracle.as_slices_mut(), x, &mut zo, &mut so, &p);
            for (k, st) in impls().into_iter().zip(&mut got) {
                let (mut z, mut sigma) = (vec![0.0; n], vec![0.0; n]);
                k.robust_update_dense(st.as_slices_mut(), x, &mut z, &mut sigma, &p);
                assert_same("z", k, &z, &zo);
                assert_same("sigma", k, &sigma, &so);
            }
        }
        for (k, st) in impls().into_iter().zip(&got) {
            assert_same_state(k, st, &oracle);
        }
    }

    #[test]
    fn gather_matches_scalar((st, slots, x, p) in gather_case()) {
        let n = x.len();
        let mut oracle = st.clone();
        let (mut zo, mut so) = (vec![0.0; n], vec![0.0; n]);
        Kernels::Scalar.robust_update_gather(&mut oracle, &slots, &x, &mut zo, &mut so, &p);
        for k in impls() {
            let mut got = st.clone();
            let (mut z, mut sigma) = (vec![0.0; n], vec![0.0; n]);
            k.robust_update_gather(&mut got, &slots, &x, &mut z, &mut sigma, &p);
            assert_same("z", k, &z, &zo);
            assert_same("sigma", k, &sigma, &so);
            assert_same_state(k, &got, &oracle);
        }
    }
}
