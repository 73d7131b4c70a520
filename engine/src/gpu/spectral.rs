//! One shard's spectral-residual state (a 64-value window ring and a count per series), resident on the device, and
//! the buffers of one chunk in flight: `spectral_update.wgsl` through wgpu, as [`super::GpuRobust`] does for the
//! robust model. Per chunk the host uploads only the new values (`PointGpu`, 8 bytes a point), dispatches once and
//! reads back only the scores (4 bytes a point); the windows never cross the bus. New series need no upload: fresh
//! device memory is zero, and `count == 0` is an empty window.
// Hot path: no IO, no logging, no allocation per point (scratch and device buffers grow geometrically and are reused).

use std::sync::Arc;

use faultline_kernels::spectral::{SpectralParams, SpectralState, WINDOW, twiddles};
use faultline_shaders::PointGpu;
use faultline_shaders::spectral::{SPECTRAL_WORKGROUP_SIZE, SpectralParamsGpu};

use super::{ChunkBuffers, GpuContext, GpuError, STATE_USAGE, grown};

pub struct GpuSpectral {
    ctx: Arc<GpuContext>,
    params: SpectralParamsGpu,
    params_buf: wgpu::Buffer,
    window: wgpu::Buffer,
    count: wgpu::Buffer,
    /// Series the state buffers hold room for.
    capacity: u64,
    /// Points in, scores out.
    chunk: ChunkBuffers,
    bind_group: Option<wgpu::BindGroup>,
    /// Series added so far.
    series: usize,
    upload: Vec<PointGpu>,
}

impl GpuSpectral {
    pub fn new(ctx: Arc<GpuContext>, p: &SpectralParams) -> Self {
        let params = SpectralParamsGpu::new(p.extend, p.look, p.mag_window, p.score_window, twiddles());
        let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let params_buf = ctx.buffer("spectral params", size_of::<SpectralParamsGpu>() as u64, uniform);
        let (window, count) = Self::state_buffers(&ctx, 0);
        let chunk = ChunkBuffers::new(&ctx, "spectral points", size_of::<PointGpu>() as u64, 4);
        Self {
            ctx,
            params,
            params_buf,
            window,
            count,
            capacity: 0,
            chunk,
            bind_group: None,
            series: 0,
            upload: Vec::new(),
        }
    }

    fn state_buffers(ctx: &GpuContext, series: u64) -> (wgpu::Buffer, wgpu::Buffer) {
        (
            ctx.buffer("spectral window", series * WINDOW as u64 * 4, STATE_USAGE),
            ctx.buffer("spectral count", series * 4, STATE_USAGE),
        )
    }

    /// Adds a fresh series and returns its slot. Device memory grows lazily, at the next chunk.
    pub fn push(&mut self) -> u32 {
        self.series += 1;
        (self.series - 1) as u32
    }

    /// Makes `slot` fresh again, as [`GpuSpectral::push`] leaves a new one (a slot reused for another series).
    pub fn reset(&mut self, slot: u32) {
        self.ctx.zero_slot(&[(&self.window, WINDOW as u64 * 4), (&self.count, 4)], slot, self.capacity);
    }

    pub fn len(&self) -> usize {
        self.series
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    fn reserve_state(&mut self) -> Result<(), GpuError> {
        let need = self.series as u64;
        if need <= self.capacity {
            return Ok(());
        }
        let cap = grown(need, self.capacity, self.ctx.max_binding / (WINDOW as u64 * 4));
        if cap < need {
            return Err(GpuError(format!(
                "{need} spectral windows exceed the device's largest binding ({} B)",
                self.ctx.max_binding
            )));
        }
        let (window, count) = Self::state_buffers(&self.ctx, cap);
        if self.capacity > 0 {
            let ring = self.capacity * WINDOW as u64 * 4;
            self.ctx.copy_over(&[(&self.window, &window, ring), (&self.count, &count, self.capacity * 4)]);
        }
        (self.window, self.count, self.capacity) = (window, count, cap);
        self.bind_group = None;
        Ok(())
    }

    fn bind_group(&mut self) -> wgpu::BindGroup {
        if let Some(bg) = &self.bind_group {
            return bg.clone();
        }
        let buffers = [&self.params_buf, &self.window, &self.count, &self.chunk.input, &self.chunk.output];
        let bg = self.ctx.bind_buffers("spectral_update", &self.ctx.spectral_layout, &buffers);
        self.bind_group = Some(bg.clone());
        bg
    }

    /// Scores one chunk, as `faultline_kernels::spectral::spectral_update_gather` does: `scores[i]` for `x[i]` of
    /// series `slots[i]`. No slot may repeat within `slots`.
    pub fn update(&mut self, slots: &[u32], x: &[f32], scores: &mut [f32]) -> Result<(), GpuError> {
        assert!(slots.len() == x.len() && x.len() == scores.len(), "one entry per point");
        if slots.is_empty() {
            return Ok(());
        }
        self.reserve_state()?;
        let mut start = 0;
        while start < slots.len() {
            let end = slots.len().min(start + self.chunk.max_items());
            self.dispatch(&slots[start..end], &x[start..end], &mut scores[start..end])?;
            start = end;
        }
        Ok(())
    }

    fn dispatch(&mut self, slots: &[u32], x: &[f32], out: &mut [f32]) -> Result<(), GpuError> {
        let n = slots.len();
        // Chunks never exceed `max_items`, so this cannot fail.
        if self.chunk.reserve(&self.ctx, n as u64).expect("a chunk within max_items") {
            self.bind_group = None;
        }
        self.upload.clear();
        self.upload.extend(slots.iter().zip(x).map(|(&slot, &x)| PointGpu { slot, x }));
        self.params.n = n as u32;
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.params_buf, 0, bytemuck::bytes_of(&self.params));
        queue.write_buffer(&self.chunk.input, 0, bytemuck::cast_slice(&self.upload));
        let bg = self.bind_group();
        let enc = self.ctx.encode_dispatch(&self.ctx.spectral_pipeline, &bg, n as u32, SPECTRAL_WORKGROUP_SIZE, 1);
        let bytes = (n * 4) as u64;
        let view = self.ctx.submit_and_read(enc, &self.chunk.output, &self.chunk.readback, bytes)?;
        out.copy_from_slice(bytemuck::cast_slice(&view));
        drop(view);
        self.chunk.readback.unmap();
        Ok(())
    }

    /// Re-runs the update over the points of the last chunk `reps` times in one submission, with no upload or
    /// read-back, and returns the seconds it took: the kernel's own throughput on resident state (benchmarks only).
    pub fn dispatch_resident(&mut self, reps: u32) -> Result<f64, GpuError> {
        let n = self.params.n;
        if n == 0 {
            return Err(GpuError("no chunk uploaded yet".into()));
        }
        let bg = self.bind_group();
        let enc = self.ctx.encode_dispatch(&self.ctx.spectral_pipeline, &bg, n, SPECTRAL_WORKGROUP_SIZE, reps);
        self.ctx.submit_timed(enc)
    }

    /// Writes saved windows and counts into the consecutive slots from `first` (series that take back their models
    /// after a restart), one write per buffer.
    pub fn load_range(&mut self, first: u32, windows: &[f32], counts: &[u32]) -> Result<(), GpuError> {
        assert_eq!(windows.len(), counts.len() * WINDOW, "one window per count");
        self.reserve_state()?;
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.window, u64::from(first) * WINDOW as u64 * 4, bytemuck::cast_slice(windows));
        queue.write_buffer(&self.count, u64::from(first) * 4, bytemuck::cast_slice(counts));
        Ok(())
    }

    /// Replaces the device state with `st` (one window and count per series added so far): the inverse of
    /// [`GpuSpectral::download`], for benchmarks that start from full windows.
    pub fn load(&mut self, st: &SpectralState) -> Result<(), GpuError> {
        assert_eq!(st.len(), self.series, "one window per series");
        self.reserve_state()?;
        self.ctx.queue.write_buffer(&self.window, 0, bytemuck::cast_slice(&st.window));
        self.ctx.queue.write_buffer(&self.count, 0, bytemuck::cast_slice(&st.count));
        Ok(())
    }

    /// Copies the device state back to the host: for tests, and for moving a shard to the CPU if the device fails.
    pub fn download(&mut self) -> Result<SpectralState, GpuError> {
        self.reserve_state()?;
        let n = self.series as u64;
        if n == 0 {
            return Ok(SpectralState::default());
        }
        let pieces = [(&self.window, 0, n * WINDOW as u64 * 4), (&self.count, 0, n * 4)];
        self.ctx.read_pieces("spectral download", &pieces, |p| SpectralState {
            window: bytemuck::cast_slice(p[0]).to_vec(),
            count: bytemuck::cast_slice(p[1]).to_vec(),
        })
    }
}
