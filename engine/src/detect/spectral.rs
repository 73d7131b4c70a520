//! The spectral-residual channel of the ensemble (`[detector.spectral]`, off by default): per point, the
//! spectral-residual score of the series' newest 64-point window (`faultline_kernels::spectral`, or
//! `spectral_update.wgsl` on the GPU backend, state resident on the device), turned into a surprise `−log10 p` by
//! the score's rarity under the series' own history (a [`Sketch`] of `ln(1 + score)`, upper half only: a window
//! that is *less* salient than usual is no anomaly).
//!
//! It sees anomalies of shape (a spike, a dip or a change of rhythm within the window) that neither the value's nor
//! the residual's rarity show, at the cost of two 64-point FFTs per point: the heavier detector the GPU pays off for.
//! State per series: the window ring and count (260 bytes) and the score sketch (76 bytes).
// Hot path: no IO, no allocation per point, no logging per point.

use faultline_kernels::spectral::{SpectralParams, SpectralState, WINDOW, spectral_update_gather};

use super::ScoringBackend;
use super::sketch::{Sketch, SketchParams};
use crate::config::DetectorConfig;
#[cfg(feature = "gpu")]
use crate::gpu::GpuSpectral;

/// One series' spectral state as saved (`engine.state-dir`): its window ring, count and score sketch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpectralSaved {
    window: Vec<f32>,
    count: u32,
    #[serde(with = "super::persist::SketchDef")]
    sketch: Sketch,
}

impl SpectralSaved {
    /// What the channel relies on in a loaded series (see `persist::ModelFile::check`): a whole window.
    pub fn check(&self) -> Result<(), String> {
        if self.window.len() == WINDOW {
            return Ok(());
        }
        Err(format!("field `spectral.window`: {} values, the window holds {WINDOW}", self.window.len()))
    }
}

/// Where the windows live: the host, or the device the shard's robust state is on.
pub enum SpectralBackend {
    Cpu(SpectralState),
    #[cfg(feature = "gpu")]
    Gpu(Box<GpuSpectral>),
}

impl SpectralBackend {
    pub fn name(&self) -> &'static str {
        match self {
            SpectralBackend::Cpu(_) => "cpu",
            #[cfg(feature = "gpu")]
            SpectralBackend::Gpu(_) => "gpu",
        }
    }

    fn push(&mut self) {
        match self {
            SpectralBackend::Cpu(st) => {
                st.push();
            }
            #[cfg(feature = "gpu")]
            SpectralBackend::Gpu(g) => {
                g.push();
            }
        }
    }

    /// Makes slot `s` fresh again (a slot reused for another series).
    fn reset(&mut self, s: usize) {
        match self {
            SpectralBackend::Cpu(st) => st.reset(s),
            #[cfg(feature = "gpu")]
            SpectralBackend::Gpu(g) => g.reset(s as u32),
        }
    }

    /// Scores a chunk in which no series repeats.
    fn update(&mut self, slots: &[u32], x: &[f32], scores: &mut [f32], p: &SpectralParams) {
        match self {
            SpectralBackend::Cpu(st) => spectral_update_gather(st, slots, x, scores, p),
            #[cfg(feature = "gpu")]
            SpectralBackend::Gpu(g) => {
                if let Err(e) = g.update(slots, x, scores) {
                    // The GPU is an optimisation: move the windows to the CPU and score the chunk there.
                    self.move_to_cpu(e);
                    self.update(slots, x, scores, p);
                }
            }
        }
    }

    /// Moves the windows from the device to the host after the device failed with `e`.
    #[cfg(feature = "gpu")]
    fn move_to_cpu(&mut self, e: crate::gpu::GpuError) {
        let SpectralBackend::Gpu(g) = self else { return };
        tracing::error!(error = %e.0, "GPU spectral scoring failed; this shard continues on the CPU.");
        let state = match g.download() {
            Ok(state) => state,
            Err(e2) => panic!("GPU failed ({}) and its state cannot be recovered ({})", e.0, e2.0),
        };
        *self = SpectralBackend::Cpu(state);
    }

    /// The windows as the host sees them (downloaded from the device for the GPU backend). For tests.
    pub fn state(&mut self) -> SpectralState {
        match self {
            SpectralBackend::Cpu(st) => st.clone(),
            #[cfg(feature = "gpu")]
            SpectralBackend::Gpu(g) => g.download().unwrap_or_else(|e| panic!("cannot download GPU state: {}", e.0)),
        }
    }
}

/// The channel for every series of one shard, and one round's input and output.
pub struct SpectralChannel {
    backend: SpectralBackend,
    params: SpectralParams,
    sketch_params: SketchParams,
    discount: f64,
    warmup: u32,
    /// Rarity of `ln(1 + score)` per series.
    sketch: Vec<Sketch>,
    /// One round's raw values (the detector fills them beside its kernel input) and scores.
    xs: Vec<f32>,
    scores: Vec<f32>,
    /// Windows restored from saved models that wait to be written into the device (`flush_restores`).
    #[cfg(feature = "gpu")]
    restores: Vec<(u32, Vec<f32>, u32)>,
}

impl SpectralChannel {
    /// The channel if `[detector.spectral]` enables it, on the device of `robust` when that is the GPU.
    pub fn configured(cfg: &DetectorConfig, sketch_params: SketchParams, robust: &ScoringBackend) -> Option<Self> {
        let sp = &cfg.spectral;
        if !sp.enabled {
            return None;
        }
        let params = sp.params();
        let backend = match robust {
            ScoringBackend::Cpu { .. } => SpectralBackend::Cpu(SpectralState::default()),
            #[cfg(feature = "gpu")]
            ScoringBackend::Gpu(g) => {
                SpectralBackend::Gpu(Box::new(GpuSpectral::new(std::sync::Arc::clone(g.robust.context()), &params)))
            }
        };
        Some(Self {
            backend,
            params,
            sketch_params,
            discount: sp.discount,
            warmup: sp.warmup_points,
            sketch: Vec::new(),
            xs: Vec::new(),
            scores: Vec::new(),
            #[cfg(feature = "gpu")]
            restores: Vec::new(),
        })
    }

    pub fn backend(&mut self) -> &mut SpectralBackend {
        &mut self.backend
    }

    pub fn push(&mut self) {
        self.backend.push();
        self.sketch.push(Sketch::default());
    }

    /// Makes slot `s` fresh again, as [`SpectralChannel::push`] leaves a new one (a slot reused for another series).
    pub fn reset(&mut self, s: usize) {
        self.backend.reset(s);
        self.sketch[s] = Sketch::default();
    }

    /// Slot `s`'s window, count and score sketch, for the saved models (`engine.state-dir`): the host's windows, or
    /// `device`, the windows read back from the device (`SpectralChannel::device_state`) where they live there.
    pub fn save(&self, s: usize, device: Option<&SpectralState>) -> Option<SpectralSaved> {
        #[cfg(feature = "gpu")]
        let st = match &self.backend {
            SpectralBackend::Cpu(st) => st,
            SpectralBackend::Gpu(_) => device?,
        };
        #[cfg(not(feature = "gpu"))]
        let (SpectralBackend::Cpu(st), _) = (&self.backend, device);
        Some(SpectralSaved {
            window: st.window[s * WINDOW..(s + 1) * WINDOW].to_vec(),
            count: st.count[s],
            sketch: self.sketch[s],
        })
    }

    /// The windows read back from the device (`None` where they live on the host).
    #[cfg(feature = "gpu")]
    pub fn device_state(&mut self) -> Result<Option<SpectralState>, crate::gpu::GpuError> {
        match &mut self.backend {
            SpectralBackend::Cpu(_) => Ok(None),
            SpectralBackend::Gpu(g) => g.download().map(Some),
        }
    }

    /// Puts back what [`SpectralChannel::save`] saved into slot `s` (a saved window of another length leaves the
    /// slot fresh). On the device the window waits for [`SpectralChannel::flush_restores`], which writes a batch's
    /// restored windows together.
    pub fn restore(&mut self, s: usize, saved: &SpectralSaved) {
        if saved.window.len() != WINDOW {
            return;
        }
        self.sketch[s] = saved.sketch;
        match &mut self.backend {
            SpectralBackend::Cpu(st) => {
                st.window[s * WINDOW..(s + 1) * WINDOW].copy_from_slice(&saved.window);
                st.count[s] = saved.count;
            }
            #[cfg(feature = "gpu")]
            SpectralBackend::Gpu(_) => self.restores.push((s as u32, saved.window.clone(), saved.count)),
        }
    }

    /// Writes the windows restored since the last call into the device, one write per buffer for each run of
    /// consecutive slots; a write that fails moves the windows to the CPU first, as a failed round does, and they are
    /// put back there.
    #[cfg(feature = "gpu")]
    pub fn flush_restores(&mut self) {
        if self.restores.is_empty() {
            return;
        }
        let mut restores = std::mem::take(&mut self.restores);
        restores.sort_unstable_by_key(|r| r.0);
        if let SpectralBackend::Gpu(g) = &mut self.backend {
            let mut write = || {
                for run in restores.chunk_by(|a, b| b.0 == a.0 + 1) {
                    let windows: Vec<f32> = run.iter().flat_map(|r| r.1.iter().copied()).collect();
                    let counts: Vec<u32> = run.iter().map(|r| r.2).collect();
                    g.load_range(run[0].0, &windows, &counts)?;
                }
                Ok(())
            };
            match write() {
                Ok(()) => return,
                Err(e) => self.backend.move_to_cpu(e),
            }
        }
        if let SpectralBackend::Cpu(st) = &mut self.backend {
            for (s, window, count) in &restores {
                let s = *s as usize;
                st.window[s * WINDOW..(s + 1) * WINDOW].copy_from_slice(window);
                st.count[s] = *count;
            }
        }
    }

    /// Starts a round's input.
    #[inline]
    pub fn clear(&mut self) {
        self.xs.clear();
    }

    /// The next point's raw value, in the order of the round's slots.
    #[inline]
    pub fn add(&mut self, x: f32) {
        self.xs.push(x);
    }

    /// Scores the round: one point per slot, in the order the values were added.
    pub fn update(&mut self, slots: &[u32]) {
        self.scores.resize(slots.len(), 0.0);
        self.backend.update(slots, &self.xs, &mut self.scores, &self.params);
    }

    /// The round's `k`-th score.
    #[inline]
    pub fn score(&self, k: usize) -> f32 {
        self.scores[k]
    }

    /// The surprise of a point of series `s` (`seen` points, this one included) whose window scored `score`, read
    /// before the score is counted in the series' history. 0 while the window fills or the channel warms up.
    #[inline]
    pub fn surprise(&mut self, s: usize, score: f32, seen: u32) -> f64 {
        // The kernel scores exactly 0 while the window fills and for flat windows: no evidence either way.
        if score == 0.0 || !score.is_finite() {
            return 0.0;
        }
        let v = score.max(0.0).ln_1p();
        let sk = &mut self.sketch[s];
        let upper = !sk.lo.is_nan() && v > 0.5 * (sk.lo + sk.hi);
        let surprise =
            if seen > self.warmup && upper { sk.surprise(v, &self.sketch_params) - self.discount } else { 0.0 };
        sk.update(v, &self.sketch_params);
        surprise.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use faultline_kernels::Kernels;

    use crate::config::Config;
    use crate::detect::ShardDetector;
    use crate::model::{SeriesKey, TimeMs};

    /// Deterministic pseudo-noise in [-1, 1).
    fn noise(i: usize) -> f64 {
        let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((h >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// The score stream of `xs` (one minute apart) with the spectral channel on or off.
    fn stream(xs: &[f64], spectral: bool) -> Vec<f64> {
        let mut cfg = Config::default_config().unwrap();
        cfg.detector.spectral.enabled = spectral;
        cfg.detector.spectral.warmup_points = 300;
        let mut det = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::detect());
        let key = Arc::new(SeriesKey::new("svc", "rhythm", [] as [(&str, &str); 0]));
        let n = xs.len();
        let times: Vec<TimeMs> = (0..n as i64).map(|i| i * 60_000).collect();
        let mut scores = vec![0.0; n];
        det.process_scored(&vec![key.id; n], &vec![key; n], &times, xs, &mut Vec::new(), Some(&mut scores));
        assert_eq!(det.spectral().is_some(), spectral);
        scores
    }

    #[test]
    fn a_broken_rhythm_inside_the_normal_range_is_seen_only_by_the_spectral_channel() {
        // A 16-point cycle of ±10 with noise; at 3000 the cycle stalls for 6 points at its mid value: every value
        // is well inside the range the series always had.
        let xs: Vec<f64> = (0..3400)
            .map(|i| {
                let phase = if (3000..3006).contains(&i) { 0.0 } else { std::f64::consts::TAU * i as f64 / 16.0 };
                100.0 + 10.0 * phase.sin() + 0.3 * noise(i)
            })
            .collect();
        let (off, on) = (stream(&xs, false), stream(&xs, true));
        let high = |s: &[f64], r: std::ops::Range<usize>| s[r].iter().any(|&v| v >= 0.5);
        assert!(!high(&off, 2990..3020), "without the channel the stall goes unseen");
        assert!(high(&on, 3000..3010), "the spectral channel flags the stall");
        assert!(!high(&on, 400..2990), "and stays quiet on the regular cycle");
    }
}
