//! Checks `aarch64/neon.rs` on hosts that cannot run it: the file is compiled here against a lane-exact software
//! model of the NEON intrinsics it uses (their Arm-documented semantics, NaN and signed zeros included) and must
//! agree with the scalar oracle bit for bit. What this cannot catch is a wrong intrinsic signature; an aarch64 build
//! does.

/// The intrinsics `neon.rs` uses, lane by lane.
#[allow(non_camel_case_types)]
mod arch {
    #[derive(Clone, Copy)]
    pub struct float32x4_t([f32; 4]);
    #[derive(Clone, Copy)]
    pub struct uint32x4_t([u32; 4]);

    fn map(a: float32x4_t, f: impl Fn(f32) -> f32) -> float32x4_t {
        float32x4_t(a.0.map(f))
    }
    fn zip(a: float32x4_t, b: float32x4_t, f: impl Fn(f32, f32) -> f32) -> float32x4_t {
        float32x4_t(std::array::from_fn(|i| f(a.0[i], b.0[i])))
    }
    fn cmp(a: float32x4_t, b: float32x4_t, f: impl Fn(f32, f32) -> bool) -> uint32x4_t {
        uint32x4_t(std::array::from_fn(|i| if f(a.0[i], b.0[i]) { !0 } else { 0 }))
    }
    fn zip_u(a: uint32x4_t, b: uint32x4_t, f: impl Fn(u32, u32) -> u32) -> uint32x4_t {
        uint32x4_t(std::array::from_fn(|i| f(a.0[i], b.0[i])))
    }
    fn mask(b: bool) -> u32 {
        if b { !0 } else { 0 }
    }

    pub fn neon_detected() -> bool {
        true
    }
    /// # Safety
    /// `p` must be valid for reading 4 elements.
    pub unsafe fn vld1q_f32(p: *const f32) -> float32x4_t {
        // SAFETY: the caller's contract.
        float32x4_t(unsafe { p.cast::<[f32; 4]>().read_unaligned() })
    }
    /// # Safety
    /// `p` must be valid for reading 4 elements.
    pub unsafe fn vld1q_u32(p: *const u32) -> uint32x4_t {
        // SAFETY: the caller's contract.
        uint32x4_t(unsafe { p.cast::<[u32; 4]>().read_unaligned() })
    }
    /// # Safety
    /// `p` must be valid for writing 4 elements.
    pub unsafe fn vst1q_f32(p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller's contract.
        unsafe { p.cast::<[f32; 4]>().write_unaligned(v.0) }
    }
    /// # Safety
    /// `p` must be valid for writing 4 elements.
    pub unsafe fn vst1q_u32(p: *mut u32, v: uint32x4_t) {
        // SAFETY: the caller's contract.
        unsafe { p.cast::<[u32; 4]>().write_unaligned(v.0) }
    }
    pub fn vdupq_n_f32(v: f32) -> float32x4_t {
        float32x4_t([v; 4])
    }
    pub fn vdupq_n_u32(v: u32) -> uint32x4_t {
        uint32x4_t([v; 4])
    }
    pub fn vceqq_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        zip_u(a, b, |a, b| mask(a == b))
    }
    pub fn vcgeq_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        zip_u(a, b, |a, b| mask(a >= b))
    }
    pub fn vandq_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        zip_u(a, b, |a, b| a & b)
    }
    pub fn vqaddq_u32(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        zip_u(a, b, u32::saturating_add)
    }
    pub fn vcgeq_f32(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        cmp(a, b, |a, b| a >= b)
    }
    pub fn vcltq_f32(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        cmp(a, b, |a, b| a < b)
    }
    pub fn vcgtq_f32(a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        cmp(a, b, |a, b| a > b)
    }
    pub fn vaddq_f32(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        zip(a, b, |a, b| a + b)
    }
    pub fn vsubq_f32(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        zip(a, b, |a, b| a - b)
    }
    pub fn vmulq_f32(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        zip(a, b, |a, b| a * b)
    }
    pub fn vdivq_f32(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        zip(a, b, |a, b| a / b)
    }
    /// FMAXNM: a (quiet) NaN loses to a number, and +0 is above -0.
    pub fn vmaxnmq_f32(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        zip(a, b, |a, b| match (a.is_nan(), b.is_nan()) {
            (true, _) => b,
            (_, true) => a,
            _ if a == b => f32::from_bits(a.to_bits() & b.to_bits()),
            _ => {
                if a > b {
                    a
                } else {
                    b
                }
            }
        })
    }
    pub fn vabsq_f32(a: float32x4_t) -> float32x4_t {
        map(a, |v| f32::from_bits(v.to_bits() & 0x7fff_ffff))
    }
    pub fn vnegq_f32(a: float32x4_t) -> float32x4_t {
        map(a, |v| f32::from_bits(v.to_bits() ^ 0x8000_0000))
    }
    pub fn vcvtq_f32_u32(a: uint32x4_t) -> float32x4_t {
        float32x4_t(a.0.map(|v| v as f32))
    }
    /// Bitwise select: bits of `a` where `m` is set, of `b` elsewhere.
    pub fn vbslq_f32(m: uint32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        float32x4_t(std::array::from_fn(|i| f32::from_bits((m.0[i] & a.0[i].to_bits()) | (!m.0[i] & b.0[i].to_bits()))))
    }
}

#[path = "aarch64/neon.rs"]
#[allow(dead_code)]
mod neon;

use crate::{Kernels, RobustParams, RobustState};

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same(what: &str, got: (&RobustState, &[f32], &[f32]), want: (&RobustState, &[f32], &[f32])) {
    for i in 0..got.1.len() {
        assert!(same(got.1[i], want.1[i]) && same(got.2[i], want.2[i]), "{what}: z/sigma of point {i}");
    }
    for i in 0..got.0.len() {
        let ok = same(got.0.level[i], want.0.level[i])
            && same(got.0.mad[i], want.0.mad[i])
            && got.0.count[i] == want.0.count[i];
        assert!(ok, "{what}: state of series {i}");
    }
}

/// Every branch of the step with ordinary and extreme values, in dense and gathering form (distinct, repeated and
/// shuffled slots), over several parameter sets.
#[test]
fn neon_matches_scalar_bit_for_bit() {
    let counts = [0, 1, 2, 7, 8, 9, 20, 21, 1 << 24, (1 << 24) + 1, u32::MAX - 1, u32::MAX];
    let levels = [0.0, -0.0, 1.0, -3.5, 1e-30, 1e30, 3e38, f32::INFINITY, f32::NAN, 1e-40];
    let mads = [0.0, 0.25, 1e-38, 1e30, 3e38, f32::NAN, -1.0];
    let xs = [0.0, -0.0, 1.0, 1000.0, -1000.0, 3e38, -3e38, 1e-40, f32::NEG_INFINITY, f32::NAN, 7.0, 5.5, -2.25];
    let mut st = RobustState::default();
    let mut x = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        for (j, &l) in levels.iter().enumerate() {
            for (m, &md) in mads.iter().enumerate() {
                let s = st.push() as usize;
                (st.count[s], st.level[s], st.mad[s]) = (c, l, md);
                x.push(xs[(i + j + m) % xs.len()]);
            }
        }
    }
    // Not a multiple of 4, so the scalar tail runs too.
    x.pop();
    let n = x.len();
    let neon = neon::Neon::try_new().expect("the model always has NEON");
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
    let mut seed = 1u32;
    for p in &params {
        for round in 0..12 {
            let xr: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v + (i % 13) as f32 * round as f32).collect();
            let (mut zo, mut so, mut z, mut sg) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);

            let (mut want, mut got) = (st.clone(), st.clone());
            Kernels::Scalar.robust_update_dense(want.slices_mut(0..n), &xr, &mut zo, &mut so, p);
            neon.robust_update_dense(got.slices_mut(0..n), &xr, &mut z, &mut sg, p);
            assert_same("dense", (&got, &z, &sg), (&want, &zo, &so));

            let mut slots: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                slots.swap(i, (seed >> 8) as usize % (i + 1));
            }
            if round % 3 == 1 {
                for i in (0..n).step_by(7) {
                    slots[i] = slots[i / 2];
                }
            }
            let (mut want, mut got) = (st.clone(), st.clone());
            Kernels::Scalar.robust_update_gather(&mut want, &slots, &xr, &mut zo, &mut so, p);
            neon.robust_update_gather(&mut got, &slots, &xr, &mut z, &mut sg, p);
            assert_same("gather", (&got, &z, &sg), (&want, &zo, &so));
        }
    }
}
