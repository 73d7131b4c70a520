//! Inputs and the bandwidth reference shared by the kernel benchmark (`benches/kernels.rs`) and the best-of table
//! (`bin/kernel_table.rs`).

use faultline_kernels::{Kernels, RobustParams, RobustState};

/// Bytes each point reads (level, mad, count, x: 16) and writes (level, mad, count, z, sigma: 20), in the kernels
/// and in [`triad`] alike.
pub const BYTES_PER_POINT: u64 = 16 + 20;

/// Series counts the kernels are measured at.
pub const SERIES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// Two batches of one point per series (level ± noise, the first with 1 % spikes, so the model stays in its steady
/// state with real residuals and some anomalous points), and two orders of the series.
pub struct Input {
    pub x: [Vec<f32>; 2],
    pub sequential: Vec<u32>,
    pub shuffled: Vec<u32>,
}

impl Input {
    pub fn new(n: usize) -> Self {
        let mut s = 0x9e37_79b9u32;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let mut a = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        for i in 0..n {
            let base = 10.0 + (i % 997) as f32;
            let noise = (next() >> 8) as f32 / (1u32 << 24) as f32;
            let spike = if next() % 100 == 0 { 50.0 } else { 0.0 };
            a.push(base + noise + spike);
            b.push(base - noise);
        }
        let mut shuffled: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            shuffled.swap(i, next() as usize % (i + 1));
        }
        Self { x: [a, b], sequential: (0..n as u32).collect(), shuffled }
    }

    /// Both batches in the order of `slots`, for the gathering form.
    pub fn permuted(&self, slots: &[u32]) -> [Vec<f32>; 2] {
        self.x.clone().map(|x| slots.iter().map(|&s| x[s as usize]).collect())
    }

    /// A state of one slot per series, past its warm-up.
    pub fn warm_state(&self, p: &RobustParams) -> RobustState {
        let n = self.sequential.len();
        let mut st = RobustState::default();
        for _ in 0..n {
            st.push();
        }
        let (mut z, mut sigma) = (vec![0.0; n], vec![0.0; n]);
        for round in 0..32 {
            Kernels::Scalar.robust_update_dense(st.as_slices_mut(), &self.x[round % 2], &mut z, &mut sigma, p);
        }
        st
    }
}

/// STREAM-like triad over the kernel's arrays: the same 36 bytes per point with next to no arithmetic, compiled
/// for the widest vectors the CPU has, so it is bound by memory (or by cache) and not by the SSE2 baseline.
pub fn triad(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { triad_avx512(level, mad, count, x, z, sigma) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { triad_avx2(level, mad, count, x, z, sigma) };
        }
    }
    triad_body(level, mad, count, x, z, sigma)
}

#[inline(always)]
fn triad_body(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    let s = 0.5f32;
    for (((((l, m), c), &x), z), sg) in level.iter_mut().zip(mad).zip(count).zip(x).zip(z).zip(sigma) {
        let (l0, m0) = (*l, *m);
        *l = l0 + s * x;
        *m = m0 + s * x;
        *c = c.wrapping_add(1);
        *z = x - l0;
        *sg = m0 + x;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn triad_avx2(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    triad_body(level, mad, count, x, z, sigma)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn triad_avx512(level: &mut [f32], mad: &mut [f32], count: &mut [u32], x: &[f32], z: &mut [f32], sigma: &mut [f32]) {
    triad_body(level, mad, count, x, z, sigma)
}

/// One measured case at one series count: its name and a closure that runs it once over every series.
pub struct Case<'a> {
    pub name: String,
    pub run: Box<dyn FnMut() + 'a>,
}

/// Buffers owned by the cases of one series count.
pub struct Bench {
    pub input: Input,
    pub p: RobustParams,
    states: Vec<RobustState>,
    outs: Vec<(Vec<f32>, Vec<f32>)>,
    permuted: [[Vec<f32>; 2]; 2],
}

impl Bench {
    pub fn new(n: usize) -> Self {
        let input = Input::new(n);
        let p = RobustParams::default();
        let impls = Kernels::available().len();
        // dense and two gather orders per implementation, and the triad.
        let cases = 3 * impls + 1;
        let states = (0..cases).map(|_| input.warm_state(&p)).collect();
        let outs = (0..cases).map(|_| (vec![0.0; n], vec![0.0; n])).collect();
        let permuted = [input.permuted(&input.sequential), input.permuted(&input.shuffled)];
        Self { input, p, states, outs, permuted }
    }

    /// Every case, named as the criterion benchmark names them (`dense-avx2`, `gather-shuffled-scalar`, `triad`).
    /// Each call alternates between the two input batches.
    pub fn cases(&mut self) -> Vec<Case<'_>> {
        let impls = Kernels::available();
        let Self { input, p, states, outs, permuted } = self;
        let p = &*p;
        let mut states = states.iter_mut();
        let mut outs = outs.iter_mut();
        let mut cases = Vec::new();
        for &k in &impls {
            let (st, (z, sigma)) = (states.next().unwrap(), outs.next().unwrap());
            let x = &input.x;
            let mut round = 0;
            cases.push(Case {
                name: format!("dense-{k}"),
                run: Box::new(move || {
                    round ^= 1;
                    k.robust_update_dense(st.as_slices_mut(), std::hint::black_box(&x[round]), z, sigma, p)
                }),
            });
        }
        for (order, slots, x) in [("seq", &input.sequential, &permuted[0]), ("shuffled", &input.shuffled, &permuted[1])]
        {
            for &k in &impls {
                let (st, (z, sigma)) = (states.next().unwrap(), outs.next().unwrap());
                let mut round = 0;
                cases.push(Case {
                    name: format!("gather-{order}-{k}"),
                    run: Box::new(move || {
                        round ^= 1;
                        k.robust_update_gather(st, slots, std::hint::black_box(&x[round]), z, sigma, p)
                    }),
                });
            }
        }
        let (st, (z, sigma)) = (states.next().unwrap(), outs.next().unwrap());
        let x = &input.x[0];
        cases.push(Case {
            name: "triad".into(),
            run: Box::new(move || {
                let s = st.as_slices_mut();
                triad(s.level, s.mad, s.count, std::hint::black_box(x), z, sigma)
            }),
        });
        cases
    }
}
