//! Robust update throughput by batch size on the CPU (the scalar kernel) and the GPU (`robust_update.wgsl` through
//! wgpu), the crossover batch size where the GPU starts to win, and the GPU's achieved memory bandwidth.
//!
//! A batch of `n` points updates `n` distinct series whose state is resident (host memory for the CPU, device memory
//! for the GPU). "gpu" rows are end to end: upload the points, dispatch, read back the scores. "gpu-resident" rows
//! re-run the kernel on resident state with no transfers: the update kernel's own throughput, the one that the
//! bandwidth target refers to.
//!
//! The same for the spectral residual (`spectral_update.wgsl`, two 64-point FFTs per update): [`spectral_sweep`], on
//! series whose windows are full, so every update computes a score.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline::gpu::{GpuContext, GpuRobust, GpuSpectral};
use faultline_kernels::spectral::{WINDOW, spectral_update_gather};
use faultline_kernels::{Kernels, RobustParams, RobustState, SpectralParams, SpectralState};
use faultline_shaders::robust::ROBUST_BYTES_PER_UPDATE;
use faultline_shaders::spectral::SPECTRAL_BYTES_PER_UPDATE;
use serde::Serialize;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub backend: &'static str,
    pub batch: usize,
    pub updates_per_s: f64,
    /// Bytes read and written per second, at `ROBUST_BYTES_PER_UPDATE` (or `SPECTRAL_BYTES_PER_UPDATE`) bytes per
    /// update.
    pub bytes_per_s: f64,
}

/// Inputs of a batch of `n` points over `n` series.
pub struct Inputs {
    pub slots: Vec<u32>,
    pub x: Vec<f32>,
    pub z: Vec<f32>,
    pub sigma: Vec<f32>,
    /// The level each point was measured against (read back from the device; gathered on the CPU).
    pub level: Vec<f32>,
}

impl Inputs {
    pub fn new(n: usize) -> Self {
        Self {
            slots: (0..n as u32).collect(),
            x: (0..n).map(|i| (i % 97) as f32 + (i % 7) as f32 * 0.25).collect(),
            z: vec![0.0; n],
            sigma: vec![0.0; n],
            level: vec![0.0; n],
        }
    }
}

/// The scalar kernel over `n` resident series.
pub struct CpuCase {
    pub state: RobustState,
    pub input: Inputs,
    pub params: RobustParams,
}

impl CpuCase {
    pub fn new(n: usize) -> Self {
        let mut state = RobustState::default();
        for _ in 0..n {
            state.push();
        }
        Self { state, input: Inputs::new(n), params: RobustParams::default() }
    }

    pub fn run(&mut self) {
        let Inputs { slots, x, z, sigma, level } = &mut self.input;
        // The detector reads each point's level before the kernel moves it, as the shader hands it back.
        for ((l, &s), &x) in level.iter_mut().zip(slots.iter()).zip(x.iter()) {
            let s = s as usize;
            *l = if self.state.count[s] == 0 { x } else { self.state.level[s] };
        }
        Kernels::Scalar.robust_update_gather(&mut self.state, slots, x, z, sigma, &self.params);
    }
}

/// The shader over `n` device-resident series.
pub struct GpuCase {
    pub gpu: GpuRobust,
    pub input: Inputs,
}

impl GpuCase {
    pub fn new(ctx: Arc<GpuContext>, n: usize) -> Self {
        let mut gpu = GpuRobust::new(ctx, &RobustParams::default());
        for _ in 0..n {
            gpu.push();
        }
        Self { gpu, input: Inputs::new(n) }
    }

    /// Upload, dispatch, read back.
    pub fn run(&mut self) {
        let Inputs { slots, x, z, sigma, level } = &mut self.input;
        self.gpu.update(slots, x, z, sigma, level).expect("GPU update");
    }
}

/// Best-of time per call of `f`, repeated until `budget` is spent (at least 3 calls after one warm-up call).
pub fn time_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let (start, mut best, mut calls) = (Instant::now(), f64::INFINITY, 0);
    while calls < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        calls += 1;
    }
    best
}

fn row(backend: &'static str, batch: usize, secs_per_batch: f64) -> Row {
    row_of(backend, batch, secs_per_batch, ROBUST_BYTES_PER_UPDATE)
}

fn row_of(backend: &'static str, batch: usize, secs_per_batch: f64, bytes_per_update: u64) -> Row {
    let ups = batch as f64 / secs_per_batch;
    Row { backend, batch, updates_per_s: ups, bytes_per_s: ups * bytes_per_update as f64 }
}

/// One value per series for one step: a different cycle per series, so windows are not flat.
fn spectral_inputs(n: usize, step: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 97) as f32 + ((step * (i % 7 + 1)) as f32 * 0.37).sin()).collect()
}

/// Fills every window with `WINDOW` points of [`spectral_inputs`], as if they had been scored one by one.
fn fill(st: &mut SpectralState) {
    let n = st.len();
    for step in 0..WINDOW {
        for (s, x) in spectral_inputs(n, step).into_iter().enumerate() {
            st.window[s * WINDOW + step] = x;
        }
    }
    st.count.fill(WINDOW as u32);
}

/// The spectral-residual kernel on the CPU over `n` series with full windows.
pub struct SpectralCpuCase {
    pub state: SpectralState,
    pub slots: Vec<u32>,
    pub x: Vec<f32>,
    pub scores: Vec<f32>,
    pub params: SpectralParams,
}

impl SpectralCpuCase {
    pub fn new(n: usize) -> Self {
        let mut state = SpectralState::default();
        for _ in 0..n {
            state.push();
        }
        fill(&mut state);
        Self {
            state,
            slots: (0..n as u32).collect(),
            x: spectral_inputs(n, WINDOW),
            scores: vec![0.0; n],
            params: SpectralParams::default(),
        }
    }

    pub fn run(&mut self) {
        spectral_update_gather(&mut self.state, &self.slots, &self.x, &mut self.scores, &self.params);
    }
}

/// The spectral-residual shader over `n` device-resident series with full windows.
pub struct SpectralGpuCase {
    pub gpu: GpuSpectral,
    pub slots: Vec<u32>,
    pub x: Vec<f32>,
    pub scores: Vec<f32>,
}

impl SpectralGpuCase {
    pub fn new(ctx: Arc<GpuContext>, n: usize) -> Self {
        let mut gpu = GpuSpectral::new(ctx, &SpectralParams::default());
        for _ in 0..n {
            gpu.push();
        }
        let mut state = SpectralState::default();
        for _ in 0..n {
            state.push();
        }
        fill(&mut state);
        gpu.load(&state).expect("GPU upload");
        Self { gpu, slots: (0..n as u32).collect(), x: spectral_inputs(n, WINDOW), scores: vec![0.0; n] }
    }

    /// Upload, dispatch, read back.
    pub fn run(&mut self) {
        self.gpu.update(&self.slots, &self.x, &mut self.scores).expect("GPU update");
    }
}

/// [`sweep`] for the spectral residual: rows "cpu", "gpu" (end to end) and "gpu-resident" by batch size.
pub fn spectral_sweep(ctx: Option<&Arc<GpuContext>>, batches: &[usize], budget: Duration) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in batches {
        let mut cpu = SpectralCpuCase::new(n);
        rows.push(row_of("cpu", n, time_per_call(budget, || cpu.run()), SPECTRAL_BYTES_PER_UPDATE));
        drop(cpu);
        if let Some(ctx) = ctx {
            let mut g = SpectralGpuCase::new(Arc::clone(ctx), n);
            rows.push(row_of("gpu", n, time_per_call(budget, || g.run()), SPECTRAL_BYTES_PER_UPDATE));
            // About 2^23 updates back to back (each is two FFTs), 2 to 64 dispatches.
            let reps = ((1usize << 23) / n).clamp(2, 64) as u32;
            let secs = time_per_call(budget, || {
                g.gpu.dispatch_resident(reps).expect("GPU dispatch");
            });
            rows.push(row_of("gpu-resident", n, secs / f64::from(reps), SPECTRAL_BYTES_PER_UPDATE));
        }
    }
    rows
}

/// Measures every backend at every batch size. `ctx` is `None` where there is no adapter (CPU rows only).
pub fn sweep(ctx: Option<&Arc<GpuContext>>, batches: &[usize], budget: Duration) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in batches {
        let mut cpu = CpuCase::new(n);
        rows.push(row("cpu", n, time_per_call(budget, || cpu.run())));
        drop(cpu);
        if let Some(ctx) = ctx {
            let mut g = GpuCase::new(Arc::clone(ctx), n);
            rows.push(row("gpu", n, time_per_call(budget, || g.run())));
            // Enough back-to-back dispatches to cover submission overhead: about 2^27 updates, 4 to 256 dispatches.
            let reps = ((1usize << 27) / n).clamp(4, 256) as u32;
            let secs = time_per_call(budget, || {
                g.gpu.dispatch_resident(reps).expect("GPU dispatch");
            });
            rows.push(row("gpu-resident", n, secs / f64::from(reps)));
        }
    }
    rows
}

/// The smallest batch size from which the GPU (end to end) is at least as fast as the CPU at every larger size.
pub fn crossover(rows: &[Row]) -> Option<usize> {
    let rate = |b: &str, n: usize| rows.iter().find(|r| r.backend == b && r.batch == n).map(|r| r.updates_per_s);
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.batch).collect();
    sizes.dedup();
    let mut found = None;
    for &n in sizes.iter().rev() {
        match (rate("gpu", n), rate("cpu", n)) {
            (Some(g), Some(c)) if g >= c => found = Some(n),
            _ => break,
        }
    }
    found
}
