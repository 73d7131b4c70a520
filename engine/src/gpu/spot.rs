//! The calibrated threshold on the device: each series' SPOT calibrator (`spot_update.wgsl`) resident in GPU memory.
//! Per chunk the host uploads the statistic of each point (12 bytes) and reads back its surprise and the calibrated
//! band (8 bytes); the calibrators never cross the bus. New series are initialised on the device from the host in
//! one contiguous write, as the engine's `Spot::new(t0)`.
// Hot path: no IO, no logging, no allocation per point (buffers grow geometrically and are reused).

use std::sync::Arc;

use faultline_shaders::spot::SPOT_WORKGROUP_SIZE;
use faultline_shaders::{SpotOutGpu, SpotParamsGpu, SpotPointGpu, SpotStateGpu};

use super::{ChunkBuffers, GpuContext, GpuError, STATE_USAGE, grown, slot_pieces};
use crate::detect::spot::{Spot, SpotParams};

/// One set of SPOT calibrators, resident on the device.
pub struct GpuSpot {
    ctx: Arc<GpuContext>,
    params: SpotParamsGpu,
    params_buf: wgpu::Buffer,
    state: wgpu::Buffer,
    capacity: u64,
    /// Series added, and how many of them the device has initialised.
    len: u32,
    initialised: u32,
    t0: f32,
    /// Points in, bands and surprises out.
    chunk: ChunkBuffers,
    bind_group: Option<wgpu::BindGroup>,
    upload: Vec<SpotPointGpu>,
    init: Vec<SpotStateGpu>,
    /// Calibrators `save_slots` stashed on the device, and the stash.
    saved: Vec<u32>,
    stash: Option<wgpu::Buffer>,
}

impl GpuSpot {
    /// Calibrators with the engine's parameters, each starting at threshold `t0`, judging at surprise `alarm`.
    pub fn new(ctx: Arc<GpuContext>, p: &SpotParams, alarm: f64, t0: f32) -> Self {
        let params = SpotParamsGpu {
            quantile: p.quantile,
            step: p.step,
            min_peaks: p.min_peaks,
            memory: p.memory,
            max_shape: p.max_shape,
            alarm: alarm as f32,
            n: 0,
            _pad: 0,
        };
        let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let params_buf = ctx.buffer("spot params", size_of::<SpotParamsGpu>() as u64, uniform);
        let state = ctx.buffer("spot state", 0, STATE_USAGE);
        let chunk =
            ChunkBuffers::new(&ctx, "spot points", size_of::<SpotPointGpu>() as u64, size_of::<SpotOutGpu>() as u64);
        Self {
            ctx,
            params,
            params_buf,
            state,
            capacity: 0,
            len: 0,
            initialised: 0,
            t0,
            chunk,
            bind_group: None,
            upload: Vec::new(),
            init: Vec::new(),
            saved: Vec::new(),
            stash: None,
        }
    }

    /// Adds a calibrator and returns its slot.
    pub fn push(&mut self) -> u32 {
        self.len += 1;
        self.len - 1
    }

    /// Makes calibrator `slot` fresh again, as [`GpuSpot::push`] leaves a new one (a slot reused for another series).
    pub fn reset(&mut self, slot: u32) {
        if slot < self.initialised {
            let fresh = Spot::new(self.t0);
            let st = SpotStateGpu { t: fresh.t, m1: fresh.m1, m2: fresh.m2, n: fresh.n, peaks: fresh.peaks };
            let at = u64::from(slot) * size_of::<SpotStateGpu>() as u64;
            self.ctx.queue.write_buffer(&self.state, at, bytemuck::bytes_of(&st));
        }
    }

    /// Writes saved calibrator states into the consecutive slots from `first` (series that take back their models
    /// after a restart), in one write.
    pub fn load_range(&mut self, first: u32, states: &[SpotStateGpu]) -> Result<(), GpuError> {
        self.reserve_state()?;
        let at = u64::from(first) * size_of::<SpotStateGpu>() as u64;
        self.ctx.queue.write_buffer(&self.state, at, bytemuck::cast_slice(states));
        Ok(())
    }

    /// Saves calibrators `slots` on the device (a learning pause), for [`GpuSpot::restore_slots`] to put back.
    pub fn save_slots(&mut self, slots: &[u32]) -> Result<(), GpuError> {
        self.reserve_state()?;
        self.saved.clear();
        self.saved.extend_from_slice(slots);
        let pieces = slot_pieces(&[(&self.state, size_of::<SpotStateGpu>() as u64)], self.saved.iter().copied());
        self.ctx.stash(&mut self.stash, &pieces);
        Ok(())
    }

    /// Puts back what [`GpuSpot::save_slots`] saved.
    pub fn restore_slots(&mut self) {
        if self.saved.is_empty() {
            return;
        }
        let pieces = slot_pieces(&[(&self.state, size_of::<SpotStateGpu>() as u64)], self.saved.iter().copied());
        self.ctx.unstash(&self.stash, &pieces);
        self.saved.clear();
    }

    fn reserve_state(&mut self) -> Result<(), GpuError> {
        let bytes = size_of::<SpotStateGpu>() as u64;
        let need = u64::from(self.len);
        if need > self.capacity {
            let cap = grown(need, self.capacity, self.ctx.max_binding / bytes);
            if cap < need {
                return Err(GpuError(format!("{need} calibrators exceed the device's largest binding")));
            }
            let state = self.ctx.buffer("spot state", cap * bytes, STATE_USAGE);
            if self.capacity > 0 {
                self.ctx.copy_over(&[(&self.state, &state, u64::from(self.initialised) * bytes)]);
            }
            (self.state, self.capacity, self.bind_group) = (state, cap, None);
        }
        if self.initialised < self.len {
            let fresh = Spot::new(self.t0);
            let st = SpotStateGpu { t: fresh.t, m1: fresh.m1, m2: fresh.m2, n: fresh.n, peaks: fresh.peaks };
            self.init.clear();
            self.init.resize((self.len - self.initialised) as usize, st);
            let at = u64::from(self.initialised) * bytes;
            self.ctx.queue.write_buffer(&self.state, at, bytemuck::cast_slice(&self.init));
            self.initialised = self.len;
        }
        Ok(())
    }

    /// Scores and learns one chunk: `outs[i]` for statistic `x[i]` of calibrator `slots[i]` (no slot repeats), each
    /// point learnable while its calibrator is young.
    pub fn update(&mut self, slots: &[u32], x: &[f32], outs: &mut [SpotOutGpu]) -> Result<(), GpuError> {
        assert!(slots.len() == x.len() && x.len() == outs.len(), "one entry per point");
        let mut points = std::mem::take(&mut self.upload);
        points.clear();
        points.extend(slots.iter().zip(x).map(|(&slot, &x)| SpotPointGpu { slot, x, learn: 1 }));
        let done = self.update_points(&points, outs);
        self.upload = points;
        done
    }

    /// Scores and learns one chunk of points (no slot repeats): `outs[i]` for `points[i]`.
    pub fn update_points(&mut self, points: &[SpotPointGpu], outs: &mut [SpotOutGpu]) -> Result<(), GpuError> {
        assert_eq!(points.len(), outs.len(), "one entry per point");
        if points.is_empty() {
            return Ok(());
        }
        self.reserve_state()?;
        let n = points.len() as u64;
        if self.chunk.reserve(&self.ctx, n)? {
            self.bind_group = None;
        }
        self.params.n = n as u32;
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.params_buf, 0, bytemuck::bytes_of(&self.params));
        queue.write_buffer(&self.chunk.input, 0, bytemuck::cast_slice(points));
        let bg = self.bind_group();
        let enc = self.ctx.encode_dispatch(&self.ctx.spot_pipeline, &bg, n as u32, SPOT_WORKGROUP_SIZE, 1);
        let bytes = n * size_of::<SpotOutGpu>() as u64;
        let view = self.ctx.submit_and_read(enc, &self.chunk.output, &self.chunk.readback, bytes)?;
        outs.copy_from_slice(bytemuck::cast_slice(&view));
        drop(view);
        self.chunk.readback.unmap();
        Ok(())
    }

    fn bind_group(&mut self) -> wgpu::BindGroup {
        if let Some(bg) = &self.bind_group {
            return bg.clone();
        }
        let bg = self.ctx.bind_buffers(
            "spot_update",
            &self.ctx.spot_layout,
            &[&self.params_buf, &self.state, &self.chunk.input, &self.chunk.output],
        );
        self.bind_group = Some(bg.clone());
        bg
    }

    /// Copies the calibrators back to the host (tests, and moving to the CPU).
    pub fn download(&mut self) -> Result<Vec<SpotStateGpu>, GpuError> {
        self.reserve_state()?;
        let bytes = u64::from(self.len) * size_of::<SpotStateGpu>() as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        self.ctx.read_pieces("spot download", &[(&self.state, 0, bytes)], |p| bytemuck::cast_slice(p[0]).to_vec())
    }
}
