//! The seasonal baseline update (`seasonal_update.wgsl`) on the device: one shard's per-candidate profiles, bases,
//! trackers and errors resident there, as [`super::GpuRobust`] does for the robust model. The host keeps each series'
//! first event time (WGSL has no i64) and computes what needs event time per point (phase bins and fraction per
//! candidate, in f64 as the CPU does; time since the previous and the first point), so a point is 80 bytes up and a
//! 4-byte switch code down. Before the robust update, `seasonal_offset.wgsl` reads the active profile at each point's
//! phase from the same resident state (16 bytes up and 4 down per point of a series with a season; none for the
//! others, which the host knows from its mirror of the switch codes). When a season switches, the few bytes of its
//! tracker are copied back, to restart the robust model there. The shaders and their twins are checked against
//! `SeasonalBank` in `tests/it/gpu.rs`; on the `gpu` backend the detector's seasonal model lives here.
// Hot path: no IO, no logging, no allocation per point (scratch and device buffers grow geometrically and are reused).

use std::sync::Arc;

use faultline_shaders::seasonal::{
    CAND_FIELDS, SEASONAL_MAX_PERIODS, SEASONAL_WORKGROUP_SIZE, SeasonalBuffers, SeasonalParamsGpu, SeasonalPointGpu,
    SeasonalQueryGpu,
};

use super::{ChunkBuffers, GpuContext, GpuError, STATE_USAGE, grown, slot_pieces};
use crate::detect::seasonal::{SeasonalParams, Switch, phase};
use crate::model::TimeMs;

/// The shader's uniform block for `p` (at most [`SEASONAL_MAX_PERIODS`] candidates).
pub fn seasonal_params_gpu(p: &SeasonalParams) -> SeasonalParamsGpu {
    assert!(p.periods.len() <= SEASONAL_MAX_PERIODS, "at most {SEASONAL_MAX_PERIODS} candidate periods");
    let (mut periods, mut bins, mut offsets) =
        ([0.0; SEASONAL_MAX_PERIODS], [0; SEASONAL_MAX_PERIODS], [0; SEASONAL_MAX_PERIODS]);
    for (c, &period) in p.periods.iter().enumerate() {
        (periods[c], bins[c], offsets[c]) = (period as f32, p.bins[c] as u32, p.offset(c) as u32);
    }
    SeasonalParamsGpu {
        n: 0,
        cands: p.periods.len() as u32,
        stride: p.stride() as u32,
        rate: p.rate,
        alpha: p.alpha,
        min_periods: p.min_periods,
        min_gain: p.min_gain,
        shortest: p.periods.iter().copied().min().unwrap_or(1) as f32,
        periods,
        bins,
        offsets,
    }
}

/// The shader's input for point `(t, x)` of series `slot`, whose first point came at `first_time` (`TimeMs::MIN`:
/// this is its first), `dt` after its previous one: what `SeasonalBank::update` computes from event time.
pub fn seasonal_point(
    slot: u32,
    t: TimeMs,
    dt: TimeMs,
    x: f32,
    weight: f32,
    first_time: TimeMs,
    p: &SeasonalParams,
) -> SeasonalPointGpu {
    let first = first_time == TimeMs::MIN;
    let mut pt = SeasonalPointGpu {
        slot,
        x,
        weight,
        dt: dt.max(0) as f32,
        elapsed: if first { 0.0 } else { (t - first_time) as f32 },
        first: u32::from(first),
        ..Default::default()
    };
    for (c, (&period, &bins)) in p.periods.iter().zip(&p.bins).enumerate() {
        let (b0, b1, frac) = phase(t, period, bins);
        (pt.b0[c], pt.b1[c], pt.frac[c]) = (b0 as u32, b1 as u32, frac);
    }
    pt
}

pub struct GpuSeasonal {
    ctx: Arc<GpuContext>,
    params: SeasonalParams,
    gpu_params: SeasonalParamsGpu,
    params_buf: wgpu::Buffer,
    /// profile, cand, plain, info (see the WGSL's bindings).
    state: [wgpu::Buffer; 4],
    capacity: u64,
    /// Points in, switch codes out.
    chunk: ChunkBuffers,
    bind_group: Option<wgpu::BindGroup>,
    /// Host mirror: each series' first event time (`TimeMs::MIN` before its first point).
    first_time: Vec<TimeMs>,
    /// Host mirror of each series' active candidate + 1 (0: none), kept from the switch codes.
    active: Vec<u8>,
    upload: Vec<SeasonalPointGpu>,
    codes: Vec<i32>,
    /// The offset pass: its uniform block, queries in, offsets out, and scratch.
    offset_params: wgpu::Buffer,
    queries: ChunkBuffers,
    offset_bind_group: Option<wgpu::BindGroup>,
    query_upload: Vec<SeasonalQueryGpu>,
    query_at: Vec<u32>,
    /// Series whose state `save_slots` stashed on the device, with their host mirrors, and the stash.
    saved: Vec<(u32, TimeMs, u8)>,
    stash: Option<wgpu::Buffer>,
}

impl GpuSeasonal {
    pub fn new(ctx: Arc<GpuContext>, p: &SeasonalParams) -> Self {
        let gpu_params = seasonal_params_gpu(p);
        let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let params_buf = ctx.buffer("seasonal params", size_of::<SeasonalParamsGpu>() as u64, uniform);
        let state = Self::state_buffers(&ctx, p, 0);
        let chunk = ChunkBuffers::new(&ctx, "seasonal points", size_of::<SeasonalPointGpu>() as u64, 4);
        let offset_params = ctx.buffer("seasonal offset params", size_of::<SeasonalParamsGpu>() as u64, uniform);
        let queries = ChunkBuffers::new(&ctx, "seasonal queries", size_of::<SeasonalQueryGpu>() as u64, 4);
        Self {
            ctx,
            params: p.clone(),
            gpu_params,
            params_buf,
            state,
            capacity: 0,
            chunk,
            bind_group: None,
            first_time: Vec::new(),
            active: Vec::new(),
            upload: Vec::new(),
            codes: Vec::new(),
            offset_params,
            queries,
            offset_bind_group: None,
            query_upload: Vec::new(),
            query_at: Vec::new(),
            saved: Vec::new(),
            stash: None,
        }
    }

    /// Bytes of each state buffer per series.
    fn strides(p: &SeasonalParams) -> [u64; 4] {
        let c = p.periods.len() as u64;
        [p.stride() as u64 * 4, c * CAND_FIELDS as u64 * 4, 8, 8]
    }

    fn state_buffers(ctx: &GpuContext, p: &SeasonalParams, series: u64) -> [wgpu::Buffer; 4] {
        let (strides, labels) =
            (Self::strides(p), ["seasonal profile", "seasonal cand", "seasonal plain", "seasonal info"]);
        std::array::from_fn(|i| ctx.buffer(labels[i], series * strides[i], STATE_USAGE))
    }

    /// Adds a fresh series and returns its slot.
    pub fn push(&mut self) -> u32 {
        self.first_time.push(TimeMs::MIN);
        self.active.push(0);
        (self.first_time.len() - 1) as u32
    }

    /// Makes `slot` fresh again, as [`GpuSeasonal::push`] leaves a new one (a slot reused for another series).
    pub fn reset(&mut self, slot: u32) {
        (self.first_time[slot as usize], self.active[slot as usize]) = (TimeMs::MIN, 0);
        let strides = Self::strides(&self.params);
        let buffers: [(&wgpu::Buffer, u64); 4] = std::array::from_fn(|i| (&self.state[i], strides[i]));
        self.ctx.zero_slot(&buffers, slot, self.capacity);
    }

    pub fn len(&self) -> usize {
        self.first_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first_time.is_empty()
    }

    fn reserve(&mut self, n: u64) -> Result<(), GpuError> {
        let need = self.first_time.len() as u64;
        if need > self.capacity {
            let strides = Self::strides(&self.params);
            let widest = strides.iter().copied().max().unwrap_or(8).max(1);
            let cap = grown(need, self.capacity, self.ctx.max_binding / widest);
            if cap < need {
                return Err(GpuError(format!("{need} seasonal series exceed the device's largest binding")));
            }
            let state = Self::state_buffers(&self.ctx, &self.params, cap);
            if self.capacity > 0 {
                let copies: Vec<_> = self
                    .state
                    .iter()
                    .zip(&state)
                    .zip(strides)
                    .map(|((old, new), s)| (old, new, self.capacity * s))
                    .collect();
                self.ctx.copy_over(&copies);
            }
            (self.state, self.capacity) = (state, cap);
            self.bind_group = None;
            self.offset_bind_group = None;
        }
        if self.chunk.reserve(&self.ctx, n)? {
            self.bind_group = None;
        }
        Ok(())
    }

    fn bind_group(&mut self) -> wgpu::BindGroup {
        if let Some(bg) = &self.bind_group {
            return bg.clone();
        }
        let [a, b, c, d] = &self.state;
        let buffers = [&self.params_buf, a, b, c, d, &self.chunk.input, &self.chunk.output];
        let bg = self.ctx.bind_buffers("seasonal_update", &self.ctx.seasonal_layout, &buffers);
        self.bind_group = Some(bg.clone());
        bg
    }

    /// Learns one chunk, as `SeasonalBank::update` does point by point: `(times[i], values[i])` of series
    /// `slots[i]`, `dts[i]` after its previous point, profile step scaled by `weights[i]`; `out[i]` says what changed
    /// about the series' season. No slot may repeat within `slots`.
    pub fn update(
        &mut self,
        slots: &[u32],
        times: &[TimeMs],
        dts: &[TimeMs],
        values: &[f32],
        weights: &[f32],
        out: &mut [Switch],
    ) -> Result<(), GpuError> {
        let n = slots.len();
        assert!([times.len(), dts.len(), values.len(), weights.len(), out.len()].iter().all(|&l| l == n));
        out.fill(Switch::Unchanged);
        if self.params.periods.is_empty() || n == 0 {
            return Ok(());
        }
        self.upload.clear();
        for i in 0..n {
            // A non-finite value changes nothing, as on the CPU.
            if !values[i].is_finite() {
                continue;
            }
            let s = slots[i] as usize;
            let pt =
                seasonal_point(slots[i], times[i], dts[i], values[i], weights[i], self.first_time[s], &self.params);
            if self.first_time[s] == TimeMs::MIN {
                self.first_time[s] = times[i];
            }
            self.upload.push(pt);
        }
        let m = self.upload.len();
        if m == 0 {
            return Ok(());
        }
        self.reserve(m as u64)?;
        self.gpu_params.n = m as u32;
        self.ctx.queue.write_buffer(&self.params_buf, 0, bytemuck::bytes_of(&self.gpu_params));
        self.ctx.queue.write_buffer(&self.chunk.input, 0, bytemuck::cast_slice(&self.upload));
        let bg = self.bind_group();
        let enc = self.ctx.encode_dispatch(&self.ctx.seasonal_pipeline, &bg, m as u32, SEASONAL_WORKGROUP_SIZE, 1);
        let bytes = (m * 4) as u64;
        let view = self.ctx.submit_and_read(enc, &self.chunk.output, &self.chunk.readback, bytes)?;
        self.codes.clear();
        self.codes.extend_from_slice(bytemuck::cast_slice(&view));
        drop(view);
        self.chunk.readback.unmap();
        let mut k = 0;
        for i in 0..n {
            if !values[i].is_finite() {
                continue;
            }
            out[i] = match self.codes[k] {
                0 => Switch::Unchanged,
                -1 => Switch::Deactivated,
                c => Switch::Activated(c as usize - 1),
            };
            match out[i] {
                Switch::Unchanged => {}
                Switch::Deactivated => self.active[slots[i] as usize] = 0,
                Switch::Activated(c) => self.active[slots[i] as usize] = c as u8 + 1,
            }
            k += 1;
        }
        Ok(())
    }

    /// Writes saved states into the consecutive slots from `first` (`series`: those series in the shader's layout,
    /// `SeasonalBank::to_buffers`), with their first event times: series that take back their models after a
    /// restart. One write per state buffer for the whole run of slots.
    pub fn load_range(&mut self, first: u32, series: &SeasonalBuffers, first_times: &[TimeMs]) -> Result<(), GpuError> {
        self.reserve(0)?;
        let n = first_times.len();
        let strides = Self::strides(&self.params);
        let parts: [&[u8]; 4] = [
            bytemuck::cast_slice(&series.profile),
            bytemuck::cast_slice(&series.cand),
            bytemuck::cast_slice(&series.plain),
            bytemuck::cast_slice(&series.info),
        ];
        for ((buf, stride), bytes) in self.state.iter().zip(strides).zip(parts) {
            assert_eq!(bytes.len() as u64, stride * n as u64, "the series' state");
            if !bytes.is_empty() {
                self.ctx.queue.write_buffer(buf, u64::from(first) * stride, bytes);
            }
        }
        let slots = first as usize..first as usize + n;
        self.first_time[slots.clone()].copy_from_slice(first_times);
        for (active, info) in self.active[slots].iter_mut().zip(series.info.chunks_exact(2)) {
            *active = info[1] as u8;
        }
        Ok(())
    }

    /// Saves the state of series `slots` on the device (a learning pause), for [`GpuSeasonal::restore_slots`].
    pub fn save_slots(&mut self, slots: &[u32]) -> Result<(), GpuError> {
        self.saved.clear();
        if self.params.periods.is_empty() {
            return Ok(());
        }
        self.reserve(0)?;
        self.saved.extend(slots.iter().map(|&s| (s, self.first_time[s as usize], self.active[s as usize])));
        let pieces = slot_pieces(&Self::arrays(&self.state, &self.params), self.saved.iter().map(|p| p.0));
        self.ctx.stash(&mut self.stash, &pieces);
        Ok(())
    }

    /// Puts back what [`GpuSeasonal::save_slots`] saved.
    pub fn restore_slots(&mut self) {
        if self.saved.is_empty() {
            return;
        }
        for &(s, first, active) in &self.saved {
            (self.first_time[s as usize], self.active[s as usize]) = (first, active);
        }
        let pieces = slot_pieces(&Self::arrays(&self.state, &self.params), self.saved.iter().map(|p| p.0));
        self.ctx.unstash(&self.stash, &pieces);
        self.saved.clear();
    }

    /// Each state buffer with its bytes per series.
    fn arrays<'a>(state: &'a [wgpu::Buffer; 4], p: &SeasonalParams) -> Vec<(&'a wgpu::Buffer, u64)> {
        state.iter().zip(Self::strides(p)).collect()
    }

    /// The active candidate of series `slot`, if it has a season (the host's mirror of the device state).
    #[inline]
    pub fn active(&self, slot: usize) -> Option<usize> {
        self.active[slot].checked_sub(1).map(usize::from)
    }

    /// Each series' first event time (`TimeMs::MIN` before its first point): the part of the state the host keeps.
    pub fn first_times(&self) -> &[TimeMs] {
        &self.first_time
    }

    /// `out[i]`: the seasonal offset of series `slots[i]` at `times[i]` under its active season, 0 without one, as
    /// `SeasonalBank::offset` computes it. Only series with a season are sent to the device.
    pub fn offsets(&mut self, slots: &[u32], times: &[TimeMs], out: &mut [f32]) -> Result<(), GpuError> {
        assert!(slots.len() == times.len() && times.len() == out.len(), "one entry per point");
        out.fill(0.0);
        self.query_upload.clear();
        self.query_at.clear();
        for (i, (&slot, &t)) in slots.iter().zip(times).enumerate() {
            if let Some(c) = self.active(slot as usize) {
                let (b0, b1, frac) = phase(t, self.params.periods[c], self.params.bins[c]);
                self.query_upload.push(SeasonalQueryGpu { slot, b0: b0 as u32, b1: b1 as u32, frac });
                self.query_at.push(i as u32);
            }
        }
        let m = self.query_upload.len() as u64;
        if m == 0 {
            return Ok(());
        }
        self.reserve(0)?;
        if self.queries.reserve(&self.ctx, m)? {
            self.offset_bind_group = None;
        }
        let params = SeasonalParamsGpu { n: m as u32, ..self.gpu_params };
        self.ctx.queue.write_buffer(&self.offset_params, 0, bytemuck::bytes_of(&params));
        self.ctx.queue.write_buffer(&self.queries.input, 0, bytemuck::cast_slice(&self.query_upload));
        let bg = self.offset_bind_group();
        let enc = self.ctx.encode_dispatch(&self.ctx.offset_pipeline, &bg, m as u32, SEASONAL_WORKGROUP_SIZE, 1);
        let view = self.ctx.submit_and_read(enc, &self.queries.output, &self.queries.readback, m * 4)?;
        let values: &[f32] = bytemuck::cast_slice(&view);
        for (&i, &v) in self.query_at.iter().zip(values) {
            out[i as usize] = v;
        }
        drop(view);
        self.queries.readback.unmap();
        Ok(())
    }

    fn offset_bind_group(&mut self) -> wgpu::BindGroup {
        if let Some(bg) = &self.offset_bind_group {
            return bg.clone();
        }
        let [profile, cand, _, info] = &self.state;
        let buffers = [&self.offset_params, profile, cand, info, &self.queries.input, &self.queries.output];
        let bg = self.ctx.bind_buffers("seasonal_offset", &self.ctx.offset_layout, &buffers);
        self.offset_bind_group = Some(bg.clone());
        bg
    }

    /// The fast level tracker and its mean absolute error of each `(slot, candidate)` in `which` (the plain level's
    /// for `None`), and a candidate's spread (infinity for the plain level), copied back from the device: where the
    /// robust model restarts when a season switches (`SeasonalBank::tracker`). Switches are rare, so this moves a few
    /// bytes now and then.
    pub fn trackers(&mut self, which: &[(u32, Option<usize>)], out: &mut Vec<(f32, f32, f32)>) -> Result<(), GpuError> {
        out.clear();
        if which.is_empty() {
            return Ok(());
        }
        self.reserve(0)?;
        let cands = self.params.periods.len() as u64;
        // [spread, fast, err] are adjacent in a candidate's fields, as [flat_fast, flat_err] are in `plain`.
        let pieces: Vec<_> = which
            .iter()
            .map(|&(slot, c)| match c {
                Some(c) => (&self.state[1], ((u64::from(slot) * cands + c as u64) * CAND_FIELDS as u64 + 2) * 4, 12),
                None => (&self.state[2], u64::from(slot) * 8, 8),
            })
            .collect();
        self.ctx.read_pieces("seasonal trackers", &pieces, |p| {
            out.extend(p.iter().map(|b| match bytemuck::cast_slice::<u8, f32>(b) {
                &[spread, fast, err] => (fast, err, spread),
                v => (v[0], v[1], f32::INFINITY),
            }));
        })
    }

    /// Copies the device state back to the host, in the shader's layout (for tests).
    pub fn download(&mut self) -> Result<SeasonalBuffers, GpuError> {
        self.reserve(0)?;
        let n = self.first_time.len() as u64;
        let strides = Self::strides(&self.params);
        let total: u64 = strides.iter().map(|s| s * n).sum();
        if n == 0 || total == 0 {
            return Ok(SeasonalBuffers::default());
        }
        let pieces: Vec<_> = self.state.iter().zip(strides).map(|(buf, stride)| (buf, 0, stride * n)).collect();
        self.ctx.read_pieces("seasonal download", &pieces, |p| SeasonalBuffers {
            profile: bytemuck::cast_slice(p[0]).to_vec(),
            cand: bytemuck::cast_slice(p[1]).to_vec(),
            plain: bytemuck::cast_slice(p[2]).to_vec(),
            info: bytemuck::cast_slice(p[3]).to_vec(),
        })
    }
}
