//! The wgpu scoring backend. One device and queue per process ([`GpuContext::shared`]), shared by the shards; each
//! shard owns a [`GpuRobust`]: its series' robust state, resident on the device for the life of the run.
//!
//! Per chunk of points (no series repeats in a chunk) the host uploads only the new values (`PointGpu`: slot and
//! value, 8 bytes a point), dispatches `robust_update.wgsl` once, and reads back only the scores (`ScoreGpu`: z,
//! sigma and the level the point was measured against, 12 bytes a point). The state is never read back, except: the
//! host keeps a mirror of `count`
//! (it is a pure function of the points sent), and a re-baseline's new level is written into the device buffer
//! before the next chunk. New series need no upload: fresh device memory is zero, and `count == 0` makes the shader
//! initialise the slot from its first point.
//!
//! With the spectral-residual channel on, the shard's [`GpuSpectral`] (`gpu/spectral.rs`) keeps its series' windows
//! on the same device the same way.
// Hot path: no IO, no logging, no allocation per point (scratch and device buffers grow geometrically and are reused).

pub mod seasonal;
pub mod spectral;
pub mod spot;

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use faultline_kernels::{RobustParams, RobustState};
use faultline_shaders::robust::{ROBUST_WORKGROUP_SIZE, dispatch_size};
use faultline_shaders::{PointGpu, RobustParamsGpu, ScoreGpu};
use tracing::{info, warn};

pub use self::seasonal::GpuSeasonal;
pub use self::spectral::GpuSpectral;

/// The process's device, queue and compiled pipelines.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    robust_pipeline: wgpu::ComputePipeline,
    robust_layout: wgpu::BindGroupLayout,
    spectral_pipeline: wgpu::ComputePipeline,
    spectral_layout: wgpu::BindGroupLayout,
    seasonal_pipeline: wgpu::ComputePipeline,
    seasonal_layout: wgpu::BindGroupLayout,
    offset_pipeline: wgpu::ComputePipeline,
    offset_layout: wgpu::BindGroupLayout,
    spot_pipeline: wgpu::ComputePipeline,
    spot_layout: wgpu::BindGroupLayout,
    /// Largest storage binding, in bytes: bounds series per shard and points per dispatch.
    max_binding: u64,
    description: String,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext").field("adapter", &self.description).finish_non_exhaustive()
    }
}

static SHARED: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();

impl GpuContext {
    /// The process-wide context, created on first use; `Err` says why there is none (no adapter, no device). The
    /// attempt is made, and its outcome logged, once per process.
    pub fn shared() -> Result<Arc<GpuContext>, String> {
        SHARED
            .get_or_init(|| match Self::create() {
                Ok(ctx) => {
                    info!(adapter = %ctx.description, "GPU scoring backend ready.");
                    Ok(Arc::new(ctx))
                }
                Err(reason) => {
                    warn!(%reason, "No GPU for scoring.");
                    Err(reason)
                }
            })
            .clone()
    }

    /// A new context on the best Vulkan adapter. Prefer [`GpuContext::shared`]; this is for tests and benchmarks.
    pub fn create() -> Result<GpuContext, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| format!("no adapter: {e}"))?;
        let info = adapter.get_info();
        let description = format!("{} ({:?}, {:?}, {})", info.name, info.backend, info.device_type, info.driver_info);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("faultline"),
            required_features: wgpu::Features::empty(),
            // Everything the adapter offers: state buffers of tens of millions of series need large bindings.
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| format!("{description}: cannot open device: {e}"))?;
        let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        use Binding::{Read, Uniform, Write};
        let (robust_pipeline, robust_layout) = compute_pipeline(
            &device,
            "robust_update",
            faultline_shaders::ROBUST_UPDATE_WGSL,
            &[Uniform, Write, Write, Write, Read, Write],
        );
        let (spectral_pipeline, spectral_layout) = compute_pipeline(
            &device,
            "spectral_update",
            faultline_shaders::SPECTRAL_UPDATE_WGSL,
            &[Uniform, Write, Write, Read, Write],
        );
        let (seasonal_pipeline, seasonal_layout) = compute_pipeline(
            &device,
            "seasonal_update",
            faultline_shaders::SEASONAL_UPDATE_WGSL,
            &[Uniform, Write, Write, Write, Write, Read, Write],
        );
        let (offset_pipeline, offset_layout) = compute_pipeline(
            &device,
            "seasonal_offset",
            faultline_shaders::SEASONAL_OFFSET_WGSL,
            &[Uniform, Read, Read, Read, Read, Write],
        );
        let (spot_pipeline, spot_layout) = compute_pipeline(
            &device,
            "spot_update",
            faultline_shaders::SPOT_UPDATE_WGSL,
            &[Uniform, Write, Read, Write],
        );
        Ok(GpuContext {
            device,
            queue,
            robust_pipeline,
            robust_layout,
            spectral_pipeline,
            spectral_layout,
            seasonal_pipeline,
            seasonal_layout,
            offset_pipeline,
            offset_layout,
            spot_pipeline,
            spot_layout,
            max_binding,
            description,
        })
    }

    /// Adapter name, backend, device type and driver, for logs and metrics.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Device-to-device copy bandwidth in bytes/s, counting bytes read and written: `reps` copies of a `bytes`-long
    /// buffer in one submission. The yardstick for the update kernel's achieved bandwidth (benchmarks only).
    pub fn measure_copy_bandwidth(&self, bytes: u64, reps: u32) -> Result<f64, GpuError> {
        let bytes = bytes.min(self.max_binding) / 4 * 4;
        let (a, b) = (self.buffer("copy a", bytes, STATE_USAGE), self.buffer("copy b", bytes, STATE_USAGE));
        let run = |reps: u32| -> Result<f64, GpuError> {
            let mut enc = self.device.create_command_encoder(&Default::default());
            for i in 0..reps {
                let (src, dst) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
            }
            let t = std::time::Instant::now();
            self.queue.submit([enc.finish()]);
            self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError(format!("poll: {e}")))?;
            Ok(t.elapsed().as_secs_f64())
        };
        run(1)?;
        let secs = run(reps)?;
        Ok(2.0 * bytes as f64 * f64::from(reps) / secs)
    }

    /// An encoder holding `reps` dispatches of `pipeline` over `n` invocations in workgroups of `workgroup` (2-D, as
    /// every shader here indexes `gid.x + gid.y * nwg.x * size`).
    fn encode_dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        n: u32,
        workgroup: u32,
        reps: u32,
    ) -> wgpu::CommandEncoder {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            let (gx, gy) = dispatch_size(n, workgroup);
            for _ in 0..reps {
                pass.dispatch_workgroups(gx, gy, 1);
            }
        }
        enc
    }

    /// Submits `enc` after copying the first `bytes` of `src` into `readback`, and maps them (unmap `readback` after).
    fn submit_and_read(
        &self,
        mut enc: wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        readback: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<wgpu::BufferView, GpuError> {
        enc.copy_buffer_to_buffer(src, 0, readback, 0, bytes);
        self.queue.submit([enc.finish()]);
        self.map_read(readback, bytes)
    }

    /// Submits `enc` and waits for the device; returns the seconds that took (benchmarks).
    fn submit_timed(&self, enc: wgpu::CommandEncoder) -> Result<f64, GpuError> {
        let t = std::time::Instant::now();
        self.queue.submit([enc.finish()]);
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError(format!("poll: {e}")))?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Maps the first `bytes` of a `MAP_READ` buffer, waiting for the queue.
    fn map_read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<wgpu::BufferView, GpuError> {
        let (tx, rx) = mpsc::sync_channel(1);
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError(format!("poll: {e}")))?;
        rx.recv().map_err(|_| GpuError("map callback dropped".into()))?.map_err(|e| GpuError(format!("map: {e}")))?;
        buf.get_mapped_range(0..bytes).map_err(|e| GpuError(format!("mapped range: {e:?}")))
    }

    /// Copies the first `bytes` of each `src` to the start of its `dst`, in one submission: the state a wrapper keeps
    /// when it replaces its buffers with larger ones.
    fn copy_over(&self, copies: &[(&wgpu::Buffer, &wgpu::Buffer, u64)]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        for &(src, dst, bytes) in copies {
            enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
        }
        self.queue.submit([enc.finish()]);
    }

    /// Writes zeros over slot `slot` of the state buffers `buffers` (each with its bytes per slot), which hold room
    /// for `capacity` slots: a slot reused for another series starts from zeros, as a new slot does (buffers are
    /// created zeroed, so a slot past `capacity` is zero when they grow).
    pub(crate) fn zero_slot(&self, buffers: &[(&wgpu::Buffer, u64)], slot: u32, capacity: u64) {
        if u64::from(slot) >= capacity {
            return;
        }
        for &(buffer, stride) in buffers {
            let zeros = vec![0u8; stride as usize];
            self.queue.write_buffer(buffer, u64::from(slot) * stride, &zeros);
        }
    }

    /// Copies each piece `(buffer, offset, bytes)` into `stash`, one after another, in one submission, and makes the
    /// stash bigger first when it is too small: learning pauses save a few series' device state this way, and
    /// [`GpuContext::unstash`] puts it back. Offsets and sizes are multiples of 4, as every piece of state is.
    pub(crate) fn stash(&self, stash: &mut Option<wgpu::Buffer>, pieces: &[(&wgpu::Buffer, u64, u64)]) {
        let total: u64 = pieces.iter().map(|p| p.2).sum();
        if total == 0 {
            return;
        }
        if stash.as_ref().is_none_or(|b| b.size() < total) {
            *stash = Some(self.buffer("learning-pause stash", total.next_power_of_two(), STATE_USAGE));
        }
        self.copy_stash(stash.as_ref().expect("made above"), pieces, true);
    }

    /// Copies back what [`GpuContext::stash`] saved of the same `pieces`, in one submission (nothing when nothing was
    /// stashed).
    pub(crate) fn unstash(&self, stash: &Option<wgpu::Buffer>, pieces: &[(&wgpu::Buffer, u64, u64)]) {
        if let Some(stash) = stash {
            self.copy_stash(stash, pieces, false);
        }
    }

    /// The pieces into the stash, one after another (`into`), or back out of it, in one submission.
    fn copy_stash(&self, stash: &wgpu::Buffer, pieces: &[(&wgpu::Buffer, u64, u64)], into: bool) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for &(buf, offset, bytes) in pieces {
            if into {
                enc.copy_buffer_to_buffer(buf, offset, stash, at, bytes);
            } else {
                enc.copy_buffer_to_buffer(stash, at, buf, offset, bytes);
            }
            at += bytes;
        }
        self.queue.submit([enc.finish()]);
    }

    /// Reads `bytes` at `offset` of each piece's buffer back to the host through one staging buffer and one
    /// submission; `read` gets each piece's bytes, in order (4-byte aligned, as every piece is a multiple of 4).
    fn read_pieces<R>(
        &self,
        label: &str,
        pieces: &[(&wgpu::Buffer, u64, u64)],
        read: impl FnOnce(&[&[u8]]) -> R,
    ) -> Result<R, GpuError> {
        let total: u64 = pieces.iter().map(|p| p.2).sum();
        let staging = self.buffer(label, total, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let mut enc = self.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for &(buf, offset, bytes) in pieces {
            enc.copy_buffer_to_buffer(buf, offset, &staging, at, bytes);
            at += bytes;
        }
        self.queue.submit([enc.finish()]);
        let view = self.map_read(&staging, total)?;
        let mut parts = Vec::with_capacity(pieces.len());
        let mut at = 0;
        for &(_, _, bytes) in pieces {
            parts.push(&view[at..at + bytes as usize]);
            at += bytes as usize;
        }
        let out = read(&parts);
        drop(parts);
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// A bind group holding `buffers` whole at bindings 0, 1, … in order (how every shader here binds its buffers).
    fn bind_buffers(&self, label: &str, layout: &wgpu::BindGroupLayout, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
    }

    fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(16),
            usage,
            mapped_at_creation: false,
        })
    }
}

/// How a shader binds one of its buffers, in binding order.
#[derive(Clone, Copy)]
enum Binding {
    Uniform,
    Read,
    Write,
}

/// Compiles `wgsl` (entry point `main`) into a compute pipeline whose bind group 0 holds `bindings` in order.
fn compute_pipeline(
    device: &wgpu::Device,
    name: &str,
    wgsl: &str,
    bindings: &[Binding],
) -> (wgpu::ComputePipeline, wgpu::BindGroupLayout) {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
    });
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b {
                    Binding::Uniform => wgpu::BufferBindingType::Uniform,
                    Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Binding::Write => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout =
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(name), entries: &entries });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: Some(&device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        })),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    (pipeline, layout)
}

/// The capacity a growing buffer moves to when it must hold `need` entries: at least double the `current` one (and
/// 1024), at most `limit`. The caller checks that it reaches `need`.
fn grown(need: u64, current: u64, limit: u64) -> u64 {
    need.max(current * 2).max(1024).min(limit)
}

/// A pass's per-item buffers: the input it uploads, the output the shader writes and the staging buffer it is read
/// back through, grown together (see [`grown`]) up to what the device's largest binding holds.
pub(crate) struct ChunkBuffers {
    pub input: wgpu::Buffer,
    pub output: wgpu::Buffer,
    pub readback: wgpu::Buffer,
    /// Items the buffers hold room for.
    capacity: u64,
    /// Most items a chunk may hold.
    max_items: u64,
    /// What an item is (buffer labels and errors), and its bytes in the input and in the output.
    what: &'static str,
    strides: (u64, u64),
}

impl ChunkBuffers {
    pub fn new(ctx: &GpuContext, what: &'static str, input_stride: u64, output_stride: u64) -> Self {
        let max_items = (ctx.max_binding / input_stride.max(output_stride)).min(1 << 26);
        let [input, output, readback] = Self::buffers(ctx, what, (input_stride, output_stride), 0);
        Self { input, output, readback, capacity: 0, max_items, what, strides: (input_stride, output_stride) }
    }

    /// Most items one chunk may hold: the device's largest binding over the wider stride, and at most 2^26.
    pub fn max_items(&self) -> usize {
        self.max_items as usize
    }

    /// Makes room for `n` items. `Ok(true)` when the buffers were replaced: bind groups over them must be rebuilt.
    pub fn reserve(&mut self, ctx: &GpuContext, n: u64) -> Result<bool, GpuError> {
        if n <= self.capacity {
            return Ok(false);
        }
        let cap = grown(n, self.capacity, self.max_items);
        if cap < n {
            return Err(GpuError(format!("a chunk of {n} {} exceeds the device's largest binding", self.what)));
        }
        [self.input, self.output, self.readback] = Self::buffers(ctx, self.what, self.strides, cap);
        self.capacity = cap;
        Ok(true)
    }

    fn buffers(ctx: &GpuContext, what: &str, (input, output): (u64, u64), n: u64) -> [wgpu::Buffer; 3] {
        use wgpu::BufferUsages as U;
        [
            ctx.buffer(&format!("{what} input"), n * input, U::STORAGE | U::COPY_DST),
            ctx.buffer(&format!("{what} output"), n * output, U::STORAGE | U::COPY_SRC),
            ctx.buffer(&format!("{what} readback"), n * output, U::MAP_READ | U::COPY_DST),
        ]
    }
}

/// Why the GPU backend could not score a chunk. The detector then moves the state to the CPU and carries on.
#[derive(Debug)]
pub struct GpuError(pub String);

/// The pieces of state `(buffer, offset, bytes)` of series `slots` in per-series arrays of `(buffer, bytes per
/// series)`: what a learning pause stashes ([`GpuContext::stash`]).
pub(crate) fn slot_pieces<'a>(
    arrays: &[(&'a wgpu::Buffer, u64)],
    slots: impl Iterator<Item = u32>,
) -> Vec<(&'a wgpu::Buffer, u64, u64)> {
    slots.flat_map(|s| arrays.iter().map(move |&(b, w)| (b, u64::from(s) * w, w))).collect()
}

const STATE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// One shard's robust state, resident on the device, and the buffers of one chunk in flight.
pub struct GpuRobust {
    ctx: Arc<GpuContext>,
    params: RobustParamsGpu,
    params_buf: wgpu::Buffer,
    level: wgpu::Buffer,
    mad: wgpu::Buffer,
    count_buf: wgpu::Buffer,
    /// Series the state buffers hold room for.
    capacity: u64,
    /// Points in, z-scores and sigmas out.
    chunk: ChunkBuffers,
    bind_group: Option<wgpu::BindGroup>,
    /// Host mirror of the device's `count`: points seen per series (the detector's warm-up reads it per point).
    pub count: Vec<u32>,
    /// Level writes (re-baselines) to apply before the next dispatch.
    pending_levels: Vec<(u32, f32)>,
    /// Scale writes (a model restarted on a seasonal switch) to apply before the next dispatch.
    pending_mads: Vec<(u32, f32)>,
    upload: Vec<PointGpu>,
    /// Slots whose state `save_slots` stashed on the device (with their host count), and the stash.
    saved: Vec<(u32, u32)>,
    stash: Option<wgpu::Buffer>,
}

impl GpuRobust {
    pub fn new(ctx: Arc<GpuContext>, p: &RobustParams) -> Self {
        let params = RobustParamsGpu {
            alpha: p.alpha,
            beta: p.beta,
            huber: p.huber,
            threshold: p.threshold,
            anomaly_weight: p.anomaly_weight,
            abs_floor: p.abs_floor,
            rel_floor: p.rel_floor,
            n: 0,
            _pad: [0; 4],
        };
        let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let params_buf = ctx.buffer("robust params", size_of::<RobustParamsGpu>() as u64, uniform);
        let (level, mad, count_buf) = Self::state_buffers(&ctx, 0);
        let chunk =
            ChunkBuffers::new(&ctx, "robust points", size_of::<PointGpu>() as u64, size_of::<ScoreGpu>() as u64);
        Self {
            ctx,
            params,
            params_buf,
            level,
            mad,
            count_buf,
            capacity: 0,
            chunk,
            bind_group: None,
            count: Vec::new(),
            pending_levels: Vec::new(),
            pending_mads: Vec::new(),
            upload: Vec::new(),
            saved: Vec::new(),
            stash: None,
        }
    }

    fn state_buffers(ctx: &GpuContext, series: u64) -> (wgpu::Buffer, wgpu::Buffer, wgpu::Buffer) {
        (
            ctx.buffer("robust level", series * 4, STATE_USAGE),
            ctx.buffer("robust mad", series * 4, STATE_USAGE),
            ctx.buffer("robust count", series * 4, STATE_USAGE),
        )
    }

    /// The device this shard's state lives on (the spectral channel puts its state there too).
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Adds a fresh series and returns its slot. Device memory grows lazily, at the next chunk.
    pub fn push(&mut self) -> u32 {
        self.count.push(0);
        (self.count.len() - 1) as u32
    }

    pub fn len(&self) -> usize {
        self.count.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }

    /// Makes `slot` fresh again, as [`GpuRobust::push`] leaves a new one (a slot reused for another series).
    pub fn reset(&mut self, slot: u32) {
        self.pending_levels.retain(|&(s, _)| s != slot);
        self.pending_mads.retain(|&(s, _)| s != slot);
        self.count[slot as usize] = 0;
        self.ctx.zero_slot(&[(&self.level, 4), (&self.mad, 4), (&self.count_buf, 4)], slot, self.capacity);
    }

    /// Sets the level of `slot` (a re-baseline); it takes effect before the next chunk is scored.
    pub fn set_level(&mut self, slot: u32, level: f32) {
        self.pending_levels.push((slot, level));
    }

    /// Sets the robust scale (MAD) of `slot`; it takes effect before the next chunk is scored.
    pub fn set_mad(&mut self, slot: u32, mad: f32) {
        self.pending_mads.push((slot, mad));
    }

    /// Writes saved models into the consecutive slots from `first` (series that take back their models after a
    /// restart, `engine.state-dir`): their levels, robust scales (MAD) and points seen, replacing what the slots held.
    /// One write per buffer for the whole run of slots.
    pub fn load_range(&mut self, first: u32, level: &[f32], mad: &[f32], count: &[u32]) -> Result<(), GpuError> {
        assert!(level.len() == mad.len() && mad.len() == count.len(), "one value of each per slot");
        self.reserve_state()?;
        let slots = first..first + level.len() as u32;
        self.pending_levels.retain(|(s, _)| !slots.contains(s));
        self.pending_mads.retain(|(s, _)| !slots.contains(s));
        self.count[slots.start as usize..slots.end as usize].copy_from_slice(count);
        let at = u64::from(first) * 4;
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.level, at, bytemuck::cast_slice(level));
        queue.write_buffer(&self.mad, at, bytemuck::cast_slice(mad));
        queue.write_buffer(&self.count_buf, at, bytemuck::cast_slice(count));
        Ok(())
    }

    /// Saves the state of `slots` on the device (a learning pause), for [`GpuRobust::restore_slots`] to put back.
    pub fn save_slots(&mut self, slots: &[u32]) -> Result<(), GpuError> {
        self.reserve_state()?;
        self.flush_levels();
        self.saved.clear();
        self.saved.extend(slots.iter().map(|&s| (s, self.count[s as usize])));
        let pieces =
            slot_pieces(&[(&self.level, 4), (&self.mad, 4), (&self.count_buf, 4)], self.saved.iter().map(|p| p.0));
        self.ctx.stash(&mut self.stash, &pieces);
        Ok(())
    }

    /// Puts back what [`GpuRobust::save_slots`] saved, dropping the level and scale writes made to those slots since.
    pub fn restore_slots(&mut self) {
        if self.saved.is_empty() {
            return;
        }
        let saved = &self.saved;
        self.pending_levels.retain(|(s, _)| !saved.iter().any(|&(t, _)| t == *s));
        self.pending_mads.retain(|(s, _)| !saved.iter().any(|&(t, _)| t == *s));
        for &(s, count) in saved {
            self.count[s as usize] = count;
        }
        let pieces = slot_pieces(&[(&self.level, 4), (&self.mad, 4), (&self.count_buf, 4)], saved.iter().map(|p| p.0));
        self.ctx.unstash(&self.stash, &pieces);
        self.saved.clear();
    }

    /// Grows the device state to hold every series, keeping what is there (new memory is zero: `count == 0`).
    fn reserve_state(&mut self) -> Result<(), GpuError> {
        let need = self.count.len() as u64;
        if need <= self.capacity {
            return Ok(());
        }
        let cap = grown(need, self.capacity, self.ctx.max_binding / 4);
        if cap < need {
            return Err(GpuError(format!(
                "{need} series exceed the device's largest binding ({} B)",
                self.ctx.max_binding
            )));
        }
        let (level, mad, count) = Self::state_buffers(&self.ctx, cap);
        if self.capacity > 0 {
            let bytes = self.capacity * 4;
            self.ctx.copy_over(&[
                (&self.level, &level, bytes),
                (&self.mad, &mad, bytes),
                (&self.count_buf, &count, bytes),
            ]);
        }
        (self.level, self.mad, self.count_buf, self.capacity) = (level, mad, count, cap);
        self.bind_group = None;
        Ok(())
    }

    fn bind_group(&mut self) -> wgpu::BindGroup {
        if let Some(bg) = &self.bind_group {
            return bg.clone();
        }
        let buffers =
            [&self.params_buf, &self.level, &self.mad, &self.count_buf, &self.chunk.input, &self.chunk.output];
        let bg = self.ctx.bind_buffers("robust_update", &self.ctx.robust_layout, &buffers);
        self.bind_group = Some(bg.clone());
        bg
    }

    fn flush_levels(&mut self) {
        for &(slot, level) in &self.pending_levels {
            self.ctx.queue.write_buffer(&self.level, u64::from(slot) * 4, bytemuck::bytes_of(&level));
        }
        self.pending_levels.clear();
        for &(slot, mad) in &self.pending_mads {
            self.ctx.queue.write_buffer(&self.mad, u64::from(slot) * 4, bytemuck::bytes_of(&mad));
        }
        self.pending_mads.clear();
    }

    /// Scores one chunk, as `Kernels::robust_update_gather` does: `z[i]`, `sigma[i]` for `x[i]` of series
    /// `slots[i]`, against the model before the update, and `level[i]`, that model's level (`x[i]` for a series'
    /// first point). No slot may repeat within `slots`.
    pub fn update(
        &mut self,
        slots: &[u32],
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        level: &mut [f32],
    ) -> Result<(), GpuError> {
        let n = slots.len();
        assert!(x.len() == n && z.len() == n && sigma.len() == n && level.len() == n, "one entry per point");
        if slots.is_empty() {
            return Ok(());
        }
        self.reserve_state()?;
        self.flush_levels();
        let mut start = 0;
        while start < slots.len() {
            let end = slots.len().min(start + self.chunk.max_items());
            let chunk = start..end;
            self.dispatch(
                &slots[chunk.clone()],
                &x[chunk.clone()],
                &mut z[chunk.clone()],
                &mut sigma[chunk.clone()],
                &mut level[chunk],
            )?;
            start = end;
        }
        for &s in slots {
            let c = &mut self.count[s as usize];
            *c = c.saturating_add(1);
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        slots: &[u32],
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        level: &mut [f32],
    ) -> Result<(), GpuError> {
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
        let enc = self.ctx.encode_dispatch(&self.ctx.robust_pipeline, &bg, n as u32, ROBUST_WORKGROUP_SIZE, 1);
        let bytes = (n * size_of::<ScoreGpu>()) as u64;
        let view = self.ctx.submit_and_read(enc, &self.chunk.output, &self.chunk.readback, bytes)?;
        let scores: &[ScoreGpu] = bytemuck::cast_slice(&view);
        for (((s, zi), si), li) in scores.iter().zip(z.iter_mut()).zip(sigma.iter_mut()).zip(level.iter_mut()) {
            (*zi, *si, *li) = (s.z, s.sigma, s.level);
        }
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
        let enc = self.ctx.encode_dispatch(&self.ctx.robust_pipeline, &bg, n, ROBUST_WORKGROUP_SIZE, reps);
        let secs = self.ctx.submit_timed(enc)?;
        for p in &self.upload {
            let c = &mut self.count[p.slot as usize];
            *c = c.saturating_add(reps);
        }
        Ok(secs)
    }

    /// Copies the device state back to the host (pending level writes applied): for tests, and for moving a shard
    /// to the CPU if the device fails.
    pub fn download(&mut self) -> Result<RobustState, GpuError> {
        self.reserve_state()?;
        self.flush_levels();
        let n = self.count.len() as u64;
        if n == 0 {
            return Ok(RobustState::default());
        }
        let pieces = [(&self.level, 0, n * 4), (&self.mad, 0, n * 4), (&self.count_buf, 0, n * 4)];
        self.ctx.read_pieces("robust download", &pieces, |p| RobustState {
            level: bytemuck::cast_slice(p[0]).to_vec(),
            mad: bytemuck::cast_slice(p[1]).to_vec(),
            count: bytemuck::cast_slice(p[2]).to_vec(),
        })
    }
}
