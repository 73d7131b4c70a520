//! Saving what a shard's series have learned and loading it again (`engine.state-dir`), so a restart keeps its
//! models: a deploy, a crash or a reboot of an instance whose input cannot be read again (OTLP/HTTP, standard input,
//! a Kafka topic past its retention) does not send every series back to the cold-start ladder's first rung.
//!
//! A saved series is every model's state of its slot ([`SeriesModel`]): the robust level and scale, the seasonal
//! profiles and tests, both calibrations, the change-point statistics and the event path's hold, the rarity sketches,
//! the burst and spectral channels, fatigue and novelty, the M-of-N history and its last event time; and its part in
//! its service's multivariate score ([`SeriesPart`]) beside the service's own state ([`ServiceModel`]). What config
//! decides (thresholds, noise controls, rules, pauses) is not saved: a restored series takes the configuration it
//! registers under. Loaded series wait in the shard until their first point; until then they cost only their saved
//! bytes, and a later save writes them again, so a series that stays quiet through a run keeps its model.
//!
//! The file (`models.bin`): the magic bytes `FLMODELS`, the format version (u32, little-endian), the payload's length
//! (u64) and its XXH3-64 (u64), then the payload: a [`ModelFile`] in postcard's wire format. It is written to a
//! temporary file beside it, synced and renamed over the old one (and the directory synced), so a crash mid-save
//! leaves the previous file whole.
// Not on the hot path: runs on a series' first point after a restart, and once a save.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::burst::Burst;
use super::cusum::Cusum;
use faultline_kernels::robust::RobustState;
use faultline_kernels::spectral::SpectralState;
#[cfg(feature = "gpu")]
use faultline_shaders::SpotStateGpu;
#[cfg(feature = "gpu")]
use faultline_shaders::seasonal::SeasonalBuffers;

#[cfg(feature = "gpu")]
use super::seasonal::SeasonalParams;
use super::seasonal::{self, MAX_PERIODS, SeasonalBank, SeasonalSaved, is_unit, to_steps};
use super::service::{SeriesPart, ServiceModel};
use super::sketch::{BINS, Sketch};
#[cfg(feature = "gpu")]
use super::spectral::SpectralChannel;
use super::spectral::SpectralSaved;
use super::spot::Spot;
use super::{BeforeShift, IdMap, ShardDetector, slot_id, take_shift_record};
#[cfg(feature = "gpu")]
use super::{GpuModels, ScoringBackend};
use crate::config::DetectorConfig;
use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::GpuError;
use crate::model::{SeriesId, TimeMs};

/// The saved file's first bytes.
const MAGIC: &[u8; 8] = b"FLMODELS";
/// The payload's format; a file of version 1 (before the profiles' bins were 16-bit) or 2 (before a series' record
/// from before a level shift was kept) is read and converted, one of any other version is refused with both named.
pub const FORMAT_VERSION: u32 = 3;
/// Magic, version, length and checksum.
const HEADER: usize = 8 + 4 + 8 + 8;
/// The file's name in `engine.state-dir`.
pub const FILE_NAME: &str = "models.bin";

/// Everything one series has learned.
pub type SeriesModel = SeriesModelOf<SeasonalParts, i16, Option<ShiftRecord>>;

/// [`SeriesModel`] with its seasonal parts, profile bins and level-shift record of one format version (postcard
/// writes a struct's fields in order and nothing else, so a version's file reads into its own `P`, `B` and `R`; `()`
/// is no bytes at all).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesModelOf<P, B, R> {
    pub id: SeriesId,
    pub service_id: u64,
    /// The series' key, for people reading the file (`faultline models`); a series takes its model back by its id.
    pub service: Arc<str>,
    pub metric: Arc<str>,
    pub labels: Box<[(Arc<str>, Arc<str>)]>,
    /// Robust level, mean absolute deviation and points seen.
    robust: (f32, f32, u32),
    seasonal: P,
    /// Every candidate period's profile bins, in order (version 2: step counts of each candidate's unit).
    bins: Vec<B>,
    spot_point: SpotParts,
    spot_shift: SpotParts,
    spectral: Option<SpectralSaved>,
    #[serde(with = "CusumDef")]
    cusum: Cusum,
    anchor: f32,
    /// The event path's hold: level, scale, points and sum.
    hold: (f32, f32, u16, f32),
    spread: f32,
    #[serde(with = "SketchDef")]
    value: Sketch,
    #[serde(with = "SketchDef")]
    resid: Sketch,
    #[serde(with = "BurstDef")]
    burst: Burst,
    alarms: f32,
    peak: f32,
    flags: u16,
    run_start: TimeMs,
    pub last_time: TimeMs,
    /// Its part in its service's multivariate score.
    part: SeriesPart,
    /// What its model held before a level shift it may still come back from (`detector.level-shift.revert-within`;
    /// version 3), so an outage a restart falls into is still undone when the series returns.
    shift: R,
}

/// A series' record from before a level shift, as saved.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ShiftRecord(#[serde(with = "BeforeShiftDef")] BeforeShift);

// The model types' serialised forms are declared here, not derived on the types: serde's generated code beside the
// detector's hot loops changed how the compiler laid them out (0.5 % more instructions a NAB point, 1.7 % slower).

/// [`SeasonalSaved`] as plain numbers: per candidate `[sum, base, spread, fast, err]` and its phase remainder; the
/// plain level test's fast level and error, points seen, active candidate + 1, first time and phase time; each
/// candidate's bin unit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SeasonalParts {
    pub cand: [[f32; 5]; MAX_PERIODS],
    pub rem: [TimeMs; MAX_PERIODS],
    pub flat: [f32; 2],
    pub n: u32,
    pub active: u8,
    pub first_time: TimeMs,
    pub phase_t: TimeMs,
    pub units: [f32; MAX_PERIODS],
}

/// [`SeasonalParts`] of format version 1: no units (its bins were `f32`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct SeasonalPartsV1 {
    cand: [[f32; 5]; MAX_PERIODS],
    rem: [TimeMs; MAX_PERIODS],
    flat: [f32; 2],
    n: u32,
    active: u8,
    first_time: TimeMs,
    phase_t: TimeMs,
}

/// [`ModelFile`] of an earlier format version, its series' models of type `S`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OldFile<S> {
    shape: ModelShape,
    saved_at_ms: i64,
    models: OldModels<S>,
}

/// [`ShardModels`] of an earlier format version.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OldModels<S> {
    series: Vec<S>,
    services: Vec<ServiceModel>,
}

/// Format version 1: the profiles' bins in `f32`, no level-shift records.
type ModelFileV1 = OldFile<SeriesModelOf<SeasonalPartsV1, f32, ()>>;
/// Format version 2: no level-shift records.
type ModelFileV2 = OldFile<SeriesModelOf<SeasonalParts, i16, ()>>;

impl<S> OldFile<S> {
    /// The file as this version holds it, each series' model as `f` makes it; nothing else changes.
    fn upgrade(self, f: impl FnMut(S) -> SeriesModel) -> ModelFile {
        let series = self.models.series.into_iter().map(f).collect();
        ModelFile {
            shape: self.shape,
            saved_at_ms: self.saved_at_ms,
            models: ShardModels { series, services: self.models.services },
        }
    }
}

impl ModelFileV1 {
    /// The file as this version holds it: each candidate's `f32` bins rounded to 16-bit steps of the smallest power
    /// of two that holds its largest (`seasonal::to_steps`), its sum the rounded bins'; no series has a level-shift
    /// record.
    fn upgrade_v1(self) -> ModelFile {
        let shape = self.shape.clone();
        self.upgrade(|m| {
            m.convert(
                |v1, values| {
                    let mut parts = SeasonalParts {
                        cand: v1.cand,
                        rem: v1.rem,
                        flat: v1.flat,
                        n: v1.n,
                        active: v1.active,
                        first_time: v1.first_time,
                        phase_t: v1.phase_t,
                        units: [0.0; MAX_PERIODS],
                    };
                    let mut bins = Vec::with_capacity(values.len());
                    let mut at = 0;
                    for (c, &n) in shape.bins.iter().enumerate().take(MAX_PERIODS) {
                        // A series whose bins do not match the shape keeps none: `check` names it.
                        let Some(mine) = values.get(at..at + n) else { break };
                        at += n;
                        (parts.units[c], parts.cand[c][0]) = to_steps(mine, &mut bins);
                    }
                    (parts, bins)
                },
                |()| None,
            )
        })
    }
}

impl<P, B, R> SeriesModelOf<P, B, R> {
    /// The same model with its seasonal parts and bins as `f` makes them, and its level-shift record as `g` does.
    fn convert<Q, C, S>(
        self,
        f: impl FnOnce(P, Vec<B>) -> (Q, Vec<C>),
        g: impl FnOnce(R) -> S,
    ) -> SeriesModelOf<Q, C, S> {
        let (seasonal, bins) = f(self.seasonal, self.bins);
        SeriesModelOf {
            id: self.id,
            service_id: self.service_id,
            service: self.service,
            metric: self.metric,
            labels: self.labels,
            robust: self.robust,
            seasonal,
            bins,
            spot_point: self.spot_point,
            spot_shift: self.spot_shift,
            spectral: self.spectral,
            cusum: self.cusum,
            anchor: self.anchor,
            hold: self.hold,
            spread: self.spread,
            value: self.value,
            resid: self.resid,
            burst: self.burst,
            alarms: self.alarms,
            peak: self.peak,
            flags: self.flags,
            run_start: self.run_start,
            last_time: self.last_time,
            part: self.part,
            shift: g(self.shift),
        }
    }
}

/// A [`Spot`] calibrator's state (its cached band is computed again when needed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SpotParts {
    t: f32,
    m1: f32,
    m2: f32,
    n: u32,
    peaks: u32,
}

impl From<&Spot> for SpotParts {
    fn from(s: &Spot) -> Self {
        Self { t: s.t, m1: s.m1, m2: s.m2, n: s.n, peaks: s.peaks }
    }
}

impl From<&SpotParts> for Spot {
    fn from(p: &SpotParts) -> Self {
        Spot::from_parts(p.t, p.m1, p.m2, p.n, p.peaks)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Cusum")]
struct CusumDef {
    up: f32,
    down: f32,
    up_sum: f32,
    down_sum: f32,
    up_w: f32,
    down_w: f32,
    up_n: u16,
    up_pushed: u16,
    down_n: u16,
    down_pushed: u16,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Sketch")]
pub(super) struct SketchDef {
    counts: [f32; BINS],
    lo: f32,
    hi: f32,
    total: f32,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "BeforeShift")]
struct BeforeShiftDef {
    since: TimeMs,
    level: f32,
    scale: f32,
    sigma: f32,
    spread: f32,
    anchor: f32,
    alarms: f32,
    #[serde(with = "SketchDef")]
    value: Sketch,
    #[serde(with = "SketchDef")]
    resid: Sketch,
    points: u32,
    back: u32,
    away: u32,
    back_sum: f32,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Burst")]
struct BurstDef {
    mean: f32,
    lo: f32,
    hi: f32,
}

/// What decides the shape of a series' state: a file saved under other seasonal periods or bins cannot be loaded
/// (its profiles would be read at the wrong phases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub periods: Vec<TimeMs>,
    pub bins: Vec<usize>,
}

/// One shard's saved models (its live series, and those loaded that have not come back yet).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ShardModels {
    pub series: Vec<SeriesModel>,
    pub services: Vec<ServiceModel>,
}

/// The saved file's payload: every shard's models, merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    pub shape: ModelShape,
    /// When it was saved (wall clock, ms since the epoch).
    pub saved_at_ms: i64,
    pub models: ShardModels,
}

impl ModelFile {
    /// Every shard's models in one file.
    pub fn merge(shape: ModelShape, parts: impl IntoIterator<Item = ShardModels>) -> Self {
        let mut models = ShardModels::default();
        for p in parts {
            models.series.extend(p.series);
            models.services.extend(p.services);
        }
        Self { shape, saved_at_ms: crate::clock::wall_ms(), models }
    }

    /// The file's bytes (header and payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        framed(&postcard::to_stdvec(self).expect("the models serialise (no maps with non-string keys, no I/O)"))
    }

    /// Reads a file's bytes; `at` names it in errors.
    pub fn from_bytes(bytes: &[u8], at: &str) -> Result<Self> {
        let bad = |reason: String| Error::decode(at, reason);
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("not a Faultline models file (no FLMODELS header)".into()));
        }
        let word = |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().expect("eight bytes"));
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(bad(format!("format version {version}; this build reads versions 1 to {FORMAT_VERSION}")));
        }
        let (len, sum) = (word(12..20), word(20..28));
        let payload = &bytes[HEADER..];
        if payload.len() as u64 != len {
            return Err(bad(format!("truncated or extended: {} payload bytes, the header says {len}", payload.len())));
        }
        if xxhash_rust::xxh3::xxh3_64(payload) != sum {
            return Err(bad("checksum mismatch: the file is corrupt".into()));
        }
        let payload_err = |e: postcard::Error| bad(format!("payload: {e}"));
        let file: Self = match version {
            1 => postcard::from_bytes::<ModelFileV1>(payload).map_err(payload_err)?.upgrade_v1(),
            2 => postcard::from_bytes::<ModelFileV2>(payload)
                .map_err(payload_err)?
                .upgrade(|m| m.convert(|parts, bins| (parts, bins), |()| None)),
            _ => postcard::from_bytes(payload).map_err(payload_err)?,
        };
        file.check().map_err(bad)?;
        Ok(file)
    }

    /// What the detector relies on in the models it loads, checked on every file read: the checksum says only that
    /// the bytes are the ones written, not that their writer (another build, a tool, a hand) wrote models this build
    /// can run. A seasonal phase off its period would send the seasonal lanes' stores outside the profile they
    /// address, an active season past the configured candidates would stop the shard, event times outside what a
    /// source accepts would overflow the time steps. The first model that breaks one is named, with its field.
    fn check(&self) -> std::result::Result<(), String> {
        let shape = &self.shape;
        if shape.periods.len() != shape.bins.len()
            || shape.periods.len() > MAX_PERIODS
            || shape.periods.iter().zip(&shape.bins).any(|(&p, &b)| p <= 0 || !(2..=1024).contains(&b))
        {
            return Err(format!(
                "seasonal shape: periods {:?} ms with {:?} bins (at most {MAX_PERIODS} periods, each positive, with 2 \
                 to 1024 bins, as detector.seasonal allows)",
                shape.periods, shape.bins
            ));
        }
        for m in &self.models.series {
            m.check(shape).map_err(|e| format!("series {}/{} ({:016x}): {e}", m.service, m.metric, m.id))?;
        }
        for v in &self.models.services {
            v.check().map_err(|e| format!("service {:016x}: {e}", v.id))?;
        }
        Ok(())
    }

    /// Loads `dir`'s file: `None` when there is none yet (a first start).
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => Self::from_bytes(&bytes, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes the file into `dir` (created if missing) atomically: a temporary file, synced, renamed over the old,
    /// and the directory synced so the rename outlives a power cut. Returns the file's path and size.
    pub fn save(&self, dir: &Path) -> Result<(PathBuf, u64)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (path, tmp) = (dir.join(FILE_NAME), dir.join(format!("{FILE_NAME}.tmp")));
        let bytes = self.to_bytes();
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        #[cfg(unix)]
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
        Ok((path, bytes.len() as u64))
    }

    /// Makes the file's models fit a detector of `shape`: nothing where the file has that shape; where only the bins
    /// differ (the same periods: `detector.seasonal.bins` changed, or its default, as the week's did from 48 bins to
    /// 84), every series' profiles are read at the new bins' centres by the interpolation a point's phase uses and
    /// rounded to 16-bit steps again, and the number of series resampled is returned; other periods are refused as
    /// [`ModelFile::check_shape`] refuses them.
    pub fn fit_shape(&mut self, shape: &ModelShape, at: &Path) -> Result<usize> {
        if self.shape == *shape
            || self.shape.periods != shape.periods
            || self.shape.bins.len() != shape.bins.len()
            || shape.bins.iter().any(|&b| !(2..=1024).contains(&b))
        {
            return self.check_shape(shape, at).map(|()| 0);
        }
        let (from, to) = (&self.shape.bins, &shape.bins);
        for m in &mut self.models.series {
            let mut bins = Vec::with_capacity(to.iter().sum());
            let mut at = 0;
            for (c, ((&old, &new), &period)) in from.iter().zip(to).zip(&shape.periods).enumerate() {
                let unit = m.seasonal.units[c];
                let steps = &m.bins[at..at + old];
                at += old;
                if old == new {
                    bins.extend_from_slice(steps);
                    continue;
                }
                let values: Vec<f32> = steps.iter().map(|&q| f32::from(q) * unit).collect();
                let resampled: Vec<f32> = (0..new)
                    .map(|j| {
                        // The old profile at the new bin's centre, as a point at that time reads it.
                        let centre = ((j as f64 + 0.5) * period as f64 / new as f64).round() as TimeMs;
                        let (b0, b1, frac) = seasonal::phase(centre, period, old);
                        (1.0 - frac) * values[b0] + frac * values[b1]
                    })
                    .collect();
                (m.seasonal.units[c], m.seasonal.cand[c][0]) = to_steps(&resampled, &mut bins);
            }
            m.bins = bins;
        }
        self.shape = shape.clone();
        Ok(self.models.series.len())
    }

    /// Checks that the file's models fit a detector of `shape`.
    pub fn check_shape(&self, shape: &ModelShape, at: &Path) -> Result<()> {
        if self.shape == *shape {
            return Ok(());
        }
        Err(Error::config(format!(
            "engine.state-dir: {} holds models of seasonal periods {:?} ms with {:?} bins, the configuration has {:?} \
             ms with {:?} bins; its series cannot be read under these (move the file away to start every series \
             fresh, or restore [detector.seasonal])",
            at.join(FILE_NAME).display(),
            self.shape.periods,
            self.shape.bins,
            shape.periods,
            shape.bins
        )))
    }
}

/// A file's bytes around `payload`: magic, version, length and checksum first.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A saved event time, field `field`: none yet (`TimeMs::MIN`), or within [`crate::clock::MAX_TIME_MS`] of the epoch
/// either way, so the detector's time steps cannot overflow (sources give 0 ..= that; the detector itself takes earlier
/// times too).
pub(super) fn check_time(field: &str, t: TimeMs) -> std::result::Result<(), String> {
    let max = crate::clock::MAX_TIME_MS;
    if t == TimeMs::MIN || (-max..=max).contains(&t) {
        return Ok(());
    }
    Err(format!("field `{field}`: {t} ms is no event time (they lie within {max} ms of 1970-01-01)"))
}

impl SeriesModel {
    /// What the detector relies on in one loaded series under the file's `shape` (see [`ModelFile::check`]).
    fn check(&self, shape: &ModelShape) -> std::result::Result<(), String> {
        let stride: usize = shape.bins.iter().sum();
        if self.bins.len() != stride {
            return Err(format!("field `bins`: {} values, the seasonal shape has {stride}", self.bins.len()));
        }
        let se = &self.seasonal;
        if usize::from(se.active) > shape.periods.len() {
            return Err(format!(
                "field `seasonal.active`: season {} of {} candidate periods",
                se.active,
                shape.periods.len()
            ));
        }
        let times = [
            ("last_time", self.last_time),
            ("run_start", self.run_start),
            ("seasonal.first_time", se.first_time),
            ("seasonal.phase_t", se.phase_t),
        ];
        for (field, t) in times {
            check_time(field, t)?;
        }
        if se.phase_t != TimeMs::MIN {
            for (c, &period) in shape.periods.iter().enumerate() {
                let want = se.phase_t.rem_euclid(period);
                if se.rem[c] != want {
                    return Err(format!(
                        "field `seasonal.rem[{c}]`: {} ms, but its phase time lies {want} ms into the {period} ms period",
                        se.rem[c]
                    ));
                }
            }
        }
        let mut at = 0;
        for (c, &n) in shape.bins.iter().enumerate() {
            let unit = se.units[c];
            if !is_unit(unit) {
                return Err(format!("field `seasonal.units[{c}]`: {unit} is neither 0 nor a power of two"));
            }
            let bins = &self.bins[at..at + n];
            at += n;
            if unit == 0.0 && bins.iter().any(|&q| q != 0) {
                return Err(format!("field `bins`: candidate {c}'s unit is 0 and its bins are not"));
            }
        }
        if let Some(sp) = &self.spectral {
            sp.check()?;
        }
        if let Some(ShiftRecord(b)) = &self.shift {
            check_time("shift.since", b.since)?;
            if b.since == TimeMs::MIN || b.back > b.points || b.away > b.points {
                return Err(format!(
                    "field `shift`: since {} ms, {} points of which {} back and {} away (a record starts at a change \
                     point and counts its points)",
                    b.since, b.points, b.back, b.away
                ));
            }
        }
        self.part.check()
    }
}

impl ShardDetector {
    /// The shape of this detector's series state (see [`ModelShape`]).
    pub fn model_shape(&self) -> ModelShape {
        ModelShape { periods: self.seasonal_params.periods.clone(), bins: self.seasonal_params.bins.clone() }
    }

    /// Everything this shard's series have learned, and the loaded models of series that have not come back yet.
    /// With the GPU backend the models that live on the device are read back first (one download of each model's
    /// state; a download that fails moves the shard to the CPU, as a failed round does, and the models are read there).
    pub fn save_models(&mut self) -> ShardModels {
        let device = self.device_models();
        let view = match &device {
            Some(d) => ModelsView {
                robust: &d.robust,
                seasonal: &d.seasonal,
                spot_point: &d.spot_point,
                spot_shift: &d.spot_shift,
                spectral: d.spectral.as_ref(),
            },
            None => ModelsView {
                robust: self.scoring.host_state_ref(),
                seasonal: &self.seasonal,
                spot_point: &self.spot_point,
                spot_shift: &self.spot_shift,
                spectral: None,
            },
        };
        let mut series: Vec<SeriesModel> = self.index.values().map(|&s| self.series_model(s as usize, &view)).collect();
        // In a fixed order (service, then series), so the same models save to the same bytes whatever their slots.
        series.sort_unstable_by_key(|m| (m.service_id, m.id));
        let mut pending: Vec<&SeriesModel> = self.pending.values().collect();
        pending.sort_unstable_by_key(|m| (m.service_id, m.id));
        series.extend(pending.into_iter().cloned());
        let mut services = self.service.save();
        services.sort_unstable_by_key(|m| m.id);
        ShardModels { series, services }
    }

    /// The models that live on the device, read back to the host (`None` with the CPU backend, or where the read
    /// failed and the shard moved to the CPU).
    #[cfg(feature = "gpu")]
    fn device_models(&mut self) -> Option<DeviceModels> {
        let ScoringBackend::Gpu(g) = &mut self.scoring else { return None };
        let n = g.robust.len();
        let read = |g: &mut GpuModels, spectral: Option<&mut SpectralChannel>, p: &SeasonalParams| {
            let robust = g.robust.download()?;
            let seasonal = match &mut g.seasonal {
                Some(se) => SeasonalBank::from_buffers(&se.download()?, se.first_times(), p),
                None => {
                    let mut bank = SeasonalBank::default();
                    (0..n).for_each(|_| bank.push(p));
                    bank
                }
            };
            let (spot_point, spot_shift) = match &mut g.spot {
                Some(sp) => {
                    let states = sp.download()?;
                    let spot = |st: &SpotStateGpu| Spot::from_parts(st.t, st.m1, st.m2, st.n, st.peaks);
                    (states.iter().step_by(2).map(spot).collect(), states.iter().skip(1).step_by(2).map(spot).collect())
                }
                None => (vec![Spot::new(1.0); n], vec![Spot::new(1.0); n]),
            };
            let spectral = match spectral {
                Some(sp) => sp.device_state()?,
                None => None,
            };
            Ok::<_, GpuError>(DeviceModels { robust, seasonal, spot_point, spot_shift, spectral })
        };
        match read(g, self.spectral.as_mut(), &self.seasonal_params) {
            Ok(d) => Some(d),
            Err(e) => {
                self.fall_back(e);
                None
            }
        }
    }

    #[cfg(not(feature = "gpu"))]
    fn device_models(&mut self) -> Option<DeviceModels> {
        None
    }

    /// Slot `s`'s state, its robust, seasonal and calibration models read from `v`.
    fn series_model(&self, s: usize, v: &ModelsView) -> SeriesModel {
        let mut bins = Vec::with_capacity(self.seasonal_params.stride());
        let seasonal = v.seasonal.save(s, &self.seasonal_params, &mut bins);
        let key = &self.keys[s];
        SeriesModel {
            id: key.id,
            service_id: key.service_id,
            service: Arc::clone(&key.service),
            metric: Arc::clone(&key.metric),
            labels: key.labels.clone(),
            robust: (v.robust.level[s], v.robust.mad[s], v.robust.count[s]),
            seasonal: seasonal.to_parts(),
            bins,
            spot_point: (&v.spot_point[s]).into(),
            spot_shift: (&v.spot_shift[s]).into(),
            spectral: self.spectral.as_ref().and_then(|sp| sp.save(s, v.spectral)),
            cusum: self.cusum[s],
            anchor: self.anchor[s],
            hold: (self.hold_level[s], self.hold_sigma[s], self.hold_n[s], self.hold_sum[s]),
            spread: self.spread[s],
            value: self.value[s],
            resid: self.resid[s],
            burst: self.burst[s],
            alarms: self.alarms[s],
            peak: self.peak[s],
            flags: self.flags[s],
            run_start: self.run_start[s],
            last_time: self.last_time[s],
            part: self.service.part(s),
            shift: self.shifted[s].then(|| self.before_shift.get(&slot_id(s)).copied().map(ShiftRecord)).flatten(),
        }
    }

    /// Loads saved models: each series takes its model back at its first point (from the cold-start ladder's rung
    /// it had reached, its points up to its saved last time late; with the GPU backend, written into the device's
    /// state then). Call before the first batch; the models must be of this detector's shape
    /// ([`ModelFile::check_shape`]; a series of another is skipped). Returns how many series were loaded.
    pub fn load_models(&mut self, models: ShardModels) -> Result<usize> {
        let stride = self.seasonal_params.stride();
        let before = self.pending.len();
        for m in models.series {
            if m.bins.len() == stride && !self.index.contains_key(&m.id) {
                self.pending.insert(m.id, m);
            }
        }
        let n = self.pending.len() - before;
        self.service.load(models.services);
        Ok(n)
    }

    /// Series loaded that have not come back yet.
    pub fn pending_models(&self) -> usize {
        self.pending.len()
    }

    /// Puts a loaded model into series slot `s` (fresh, the series just registered).
    pub(super) fn restore_series(&mut self, s: usize, m: SeriesModel) {
        if self.scoring.on_host() {
            self.restore_host_models(s, &m);
        }
        if let (Some(sp), Some(saved)) = (&mut self.spectral, &m.spectral) {
            sp.restore(s, saved);
        }
        self.cusum[s] = m.cusum;
        self.anchor[s] = m.anchor;
        (self.hold_level[s], self.hold_sigma[s], self.hold_n[s], self.hold_sum[s]) = m.hold;
        self.spread[s] = m.spread;
        self.value[s] = m.value;
        self.resid[s] = m.resid;
        self.burst[s] = m.burst;
        self.alarms[s] = m.alarms;
        self.peak[s] = m.peak;
        self.flags[s] = m.flags;
        self.run_start[s] = m.run_start;
        self.last_time[s] = m.last_time;
        self.service.restore_part(s, &m.part, &self.service_params);
        take_shift_record(&mut self.shifted, &mut self.before_shift, s);
        // Kept while `revert-within` is on: the series' first point says whether it has passed since the shift.
        if let (Some(ShiftRecord(b)), true) = (m.shift, self.revert_within_ms > 0) {
            self.shifted[s] = true;
            self.before_shift.insert(slot_id(s), b);
        }
        // The models on the device are written for the whole batch's registrations at once (`flush_device_loads`).
        #[cfg(feature = "gpu")]
        {
            self.loads_pending = true;
            if !self.scoring.on_host() {
                self.device_loads.push((s, m));
            }
        }
    }

    /// Slot `s`'s robust, seasonal and calibration models from `m`, on the host.
    fn restore_host_models(&mut self, s: usize, m: &SeriesModel) {
        let state = self.scoring.host_state();
        (state.level[s], state.mad[s], state.count[s]) = m.robust;
        let saved = SeasonalSaved::from_parts(&m.seasonal);
        self.seasonal.restore(s, &self.seasonal_params, &saved, &m.bins);
        self.spot_point[s] = (&m.spot_point).into();
        self.spot_shift[s] = (&m.spot_shift).into();
    }

    /// Writes the models that series registered in this batch took back into their device slots: one write per
    /// device buffer for each run of consecutive slots (a restart registers its series in consecutive slots), where
    /// one write per series and buffer cost about 50 µs a series on lavapipe. A write that fails moves the shard to
    /// the CPU, as a failed round does, and the models are put back there. Called after a batch's registrations,
    /// before its first device pass.
    #[cfg(feature = "gpu")]
    #[cold]
    #[inline(never)]
    pub(super) fn flush_device_loads(&mut self) {
        self.loads_pending = false;
        if let Some(sp) = &mut self.spectral {
            sp.flush_restores();
        }
        if self.device_loads.is_empty() {
            return;
        }
        let mut loads = std::mem::take(&mut self.device_loads);
        loads.sort_unstable_by_key(|l| l.0);
        if let ScoringBackend::Gpu(g) = &mut self.scoring
            && let Err(e) = write_device_loads(g, &loads, &self.seasonal_params)
        {
            self.fall_back(e);
        }
        if self.scoring.on_host() {
            for (s, m) in &loads {
                self.restore_host_models(*s, m);
            }
        }
    }

    /// Drops loaded models of series quiet since before `cutoff` (`engine.series-idle`): they are forgotten as a live
    /// series would be. Returns how many.
    pub(super) fn forget_pending(&mut self, cutoff: TimeMs) -> usize {
        let before = self.pending.len();
        let service = &mut self.service;
        self.pending.retain(|_, m| {
            let keep = m.last_time >= cutoff;
            if !keep {
                service.forget_part(m.service_id, &m.part);
            }
            keep
        });
        before - self.pending.len()
    }
}

/// Where a save reads each series' robust, seasonal and calibration models: the host's own, or a copy read back from
/// the device.
struct ModelsView<'a> {
    robust: &'a RobustState,
    seasonal: &'a SeasonalBank,
    spot_point: &'a [Spot],
    spot_shift: &'a [Spot],
    /// The spectral channel's windows read back from the device (`None`: on the host, or no channel).
    spectral: Option<&'a SpectralState>,
}

/// The models that live on the device with the GPU backend, read back for a save.
struct DeviceModels {
    robust: RobustState,
    seasonal: SeasonalBank,
    spot_point: Vec<Spot>,
    spot_shift: Vec<Spot>,
    spectral: Option<SpectralState>,
}

/// Writes the models of `loads` (slot, model; sorted by slot) into the device, one write per device buffer for each
/// run of consecutive slots.
#[cfg(feature = "gpu")]
fn write_device_loads(
    g: &mut GpuModels,
    loads: &[(usize, SeriesModel)],
    p: &SeasonalParams,
) -> std::result::Result<(), GpuError> {
    let spot = |x: &SpotParts| SpotStateGpu { t: x.t, m1: x.m1, m2: x.m2, n: x.n, peaks: x.peaks };
    for run in loads.chunk_by(|a, b| b.0 == a.0 + 1) {
        let first = run[0].0 as u32;
        let robust = |f: fn(&SeriesModel) -> f32| run.iter().map(|(_, m)| f(m)).collect::<Vec<f32>>();
        let counts: Vec<u32> = run.iter().map(|(_, m)| m.robust.2).collect();
        g.robust.load_range(first, &robust(|m| m.robust.0), &robust(|m| m.robust.1), &counts)?;
        if let Some(se) = &mut g.seasonal {
            // The shader's layout (`SeasonalBank::to_buffers`), from the saved parts as they are. (Built here rather
            // than through a `SeasonalBank`: calling the bank's methods from this module changed how the compiler
            // laid out the seasonal lanes, and the CPU's NAB loop ran 8-12 % slower.)
            let mut buffers = SeasonalBuffers::default();
            for (_, m) in run {
                let parts = &m.seasonal;
                buffers.profile.extend(m.bins.iter().map(|&q| i32::from(q)));
                for (cand, unit) in parts.cand.iter().zip(parts.units).take(p.periods.len()) {
                    buffers.cand.extend(cand.iter().copied().chain([unit]));
                }
                buffers.plain.extend(parts.flat);
                buffers.info.extend([parts.n, u32::from(parts.active)]);
            }
            let first_times: Vec<TimeMs> = run.iter().map(|(_, m)| m.seasonal.first_time).collect();
            se.load_range(first, &buffers, &first_times)?;
        }
        if let Some(sp) = &mut g.spot {
            let states: Vec<SpotStateGpu> =
                run.iter().flat_map(|(_, m)| [spot(&m.spot_point), spot(&m.spot_shift)]).collect();
            sp.load_range(2 * first, &states)?;
        }
    }
    Ok(())
}

/// Splits loaded models by the shard that owns their service (`shard_of` the service id over `shards`).
pub fn split(models: ShardModels, shards: usize, shard_of: impl Fn(u64, usize) -> usize) -> Vec<ShardModels> {
    let mut parts: Vec<ShardModels> = (0..shards).map(|_| ShardModels::default()).collect();
    for m in models.series {
        parts[shard_of(m.service_id, shards)].series.push(m);
    }
    for m in models.services {
        parts[shard_of(m.id, shards)].services.push(m);
    }
    parts
}

/// Loaded models by series id (for [`ShardDetector`]'s waiting series).
pub type Pending = IdMap<SeriesModel>;

/// What `faultline models` says about a saved models file: when and under what shape it was saved, how many series
/// stand at each rung of the cold-start ladder, and, for the series asked about, what each model holds as normal.
#[derive(Debug, Serialize)]
pub struct ModelsReport {
    pub path: String,
    pub bytes: u64,
    /// The format version the file was written in (this build reads it converted to [`FORMAT_VERSION`]).
    pub format_version: u32,
    pub saved_at: String,
    pub periods: Vec<String>,
    pub bins: Vec<usize>,
    pub series: usize,
    pub services: usize,
    /// Series by the rung they had reached: cold-start rules, robust model, seasonal model.
    pub cold_start: usize,
    pub robust: usize,
    pub seasonal: usize,
    /// The oldest and newest last points among the series.
    pub oldest_last_point: Option<String>,
    pub newest_last_point: Option<String>,
    /// The series asked about (`--series`), in service, metric and label order.
    pub rows: Vec<SeriesRow>,
}

/// A seasonal period as people write it (`1day`, `7days`).
fn period(ms: TimeMs) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// One series' model as saved.
#[derive(Debug, Serialize)]
pub struct SeriesRow {
    /// `service/metric{label=value,…}`.
    pub series: String,
    pub id: String,
    pub stage: &'static str,
    pub points: u32,
    /// The active season's period (none: the series has no season).
    pub season: Option<String>,
    /// The robust model's level (of the value less its seasonal profile where a season is active) and scale (sigma).
    pub level: f32,
    pub scale: f32,
    /// What a point's residual is measured against (its z-score's denominator): the larger of `scale` and the floors,
    /// the slow scale floor (`scale-floor` times the mean absolute residual of the series' normal points),
    /// `rel-floor` of the level and `abs-floor`. Above `scale` while a floor holds it (the scale floor remembers a
    /// noisier past for about `1 / scale-floor-alpha` points; when a season is found, it starts again no higher than
    /// the season's own spread).
    pub sigma: f32,
    /// Of the last points in the M-of-N window, how many were anomalous.
    pub anomalous_recently: u32,
    pub last_point: String,
    /// A level shift the series may still come back from (`detector.level-shift.revert-within`): when its first
    /// change point came, and the level the model goes back to if the series returns.
    pub shifted_since: Option<String>,
    pub level_before_shift: Option<f32>,
}

impl ModelsReport {
    /// Reads `dir`'s file and describes it under settings `cfg` (the robust rung starts after `warmup-points`; the
    /// floors give `sigma`); `series` are patterns (`service`, `service/metric`, `*` anywhere) of the series to list.
    pub fn read(dir: &Path, cfg: &DetectorConfig, series: &[String]) -> Result<Self> {
        let warmup = cfg.warmup_points;
        let robust = ShardDetector::robust_params(cfg);
        let path = dir.join(FILE_NAME);
        let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let file = ModelFile::from_bytes(&raw, &path.display().to_string())?;
        // The header was checked: the version the file was written in (an older one is converted as it is read).
        let format_version = u32::from_le_bytes(raw[8..12].try_into().expect("four bytes"));
        let bytes = raw.len() as u64;
        let stage = |m: &SeriesModel| match (m.robust.2 > warmup, m.seasonal.active > 0) {
            (false, _) => "cold-start",
            (true, false) => "robust",
            (true, true) => "seasonal",
        };
        let count = |name: &str| file.models.series.iter().filter(|m| stage(m) == name).count();
        let last = file.models.series.iter().map(|m| m.last_time).filter(|&t| t != TimeMs::MIN);
        let wanted = |m: &SeriesModel| {
            series.iter().any(|p| match p.split_once('/') {
                Some((sv, me)) => crate::config::glob_match(sv, &m.service) && crate::config::glob_match(me, &m.metric),
                None => crate::config::glob_match(p, &m.service),
            })
        };
        let mut rows: Vec<(&SeriesModel, SeriesRow)> = file
            .models
            .series
            .iter()
            .filter(|m| wanted(m))
            .map(|m| {
                let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let name = if labels.is_empty() {
                    format!("{}/{}", m.service, m.metric)
                } else {
                    format!("{}/{}{{{}}}", m.service, m.metric, labels.join(","))
                };
                let season = (m.seasonal.active > 0)
                    .then(|| file.shape.periods.get(usize::from(m.seasonal.active) - 1))
                    .flatten()
                    .map(|&p| period(p));
                let row = SeriesRow {
                    series: name,
                    id: format!("{:016x}", m.id),
                    stage: stage(m),
                    points: m.robust.2,
                    season,
                    level: m.robust.0,
                    scale: m.robust.1 * faultline_kernels::robust::MAD_TO_SIGMA,
                    sigma: super::floored_scale(
                        faultline_kernels::robust::floored_sigma(m.robust.0, m.robust.1, &robust),
                        m.spread,
                        cfg.scale_floor,
                    ),
                    anomalous_recently: u32::from(m.flags & !super::RUN_OPEN).count_ones(),
                    last_point: crate::clock::fmt_time(m.last_time),
                    shifted_since: m.shift.map(|ShiftRecord(b)| crate::clock::fmt_time(b.since)),
                    level_before_shift: m.shift.map(|ShiftRecord(b)| b.level),
                };
                (m, row)
            })
            .collect();
        rows.sort_by(|a, b| (&a.0.service, &a.0.metric, &a.0.labels).cmp(&(&b.0.service, &b.0.metric, &b.0.labels)));
        Ok(Self {
            path: path.display().to_string(),
            bytes,
            format_version,
            saved_at: crate::clock::fmt_time(file.saved_at_ms),
            periods: file.shape.periods.iter().map(|&p| period(p)).collect(),
            bins: file.shape.bins.clone(),
            series: file.models.series.len(),
            services: file.models.services.len(),
            cold_start: count("cold-start"),
            robust: count("robust"),
            seasonal: count("seasonal"),
            oldest_last_point: last.clone().min().map(crate::clock::fmt_time),
            newest_last_point: last.max().map(crate::clock::fmt_time),
            rows: rows.into_iter().map(|(_, r)| r).collect(),
        })
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} ({} bytes, format {}{}), saved {}\nseasonal periods {} with {:?} bins\n{} series of {} services: {} on \
             cold-start rules, {} on the robust model, {} seasonal\n",
            self.path,
            self.bytes,
            self.format_version,
            if self.format_version < FORMAT_VERSION {
                format!(", read as {FORMAT_VERSION}: the next save writes {FORMAT_VERSION}")
            } else {
                String::new()
            },
            self.saved_at,
            self.periods.join(", "),
            self.bins,
            self.series,
            self.services,
            self.cold_start,
            self.robust,
            self.seasonal
        );
        if let (Some(a), Some(b)) = (&self.oldest_last_point, &self.newest_last_point) {
            out += &format!("last points from {a} to {b}\n");
        }
        if !self.rows.is_empty() {
            out += &format!(
                "\n{:<48} {:<10} {:>8} {:>8} {:>12} {:>12} {:>12} {:>6}  {}\n",
                "series", "stage", "points", "season", "level", "scale", "sigma", "recent", "last point"
            );
            for r in &self.rows {
                out += &format!(
                    "{:<48} {:<10} {:>8} {:>8} {:>12.4} {:>12.4} {:>12.4} {:>6}  {}\n",
                    r.series,
                    r.stage,
                    r.points,
                    r.season.as_deref().unwrap_or("none"),
                    r.level,
                    r.scale,
                    r.sigma,
                    r.anomalous_recently,
                    r.last_point
                );
            }
            let shifted: Vec<&SeriesRow> = self.rows.iter().filter(|r| r.shifted_since.is_some()).collect();
            if !shifted.is_empty() {
                out += "\nlevel shifts these series may still come back from (the model goes back if they do):\n";
                for r in shifted {
                    out += &format!(
                        "{:<48} since {}, level before {:.4}\n",
                        r.series,
                        r.shifted_since.as_deref().unwrap_or_default(),
                        r.level_before_shift.unwrap_or(f32::NAN)
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use faultline_kernels::Kernels;
    use proptest::prelude::*;

    use super::*;
    use crate::clock;
    use crate::config::Config;
    use crate::model::SeriesKey;

    const DAY: usize = 288; // 5-minute points
    const T0: TimeMs = 1_700_006_400_000; // a midnight, UTC

    fn detector() -> ShardDetector {
        let cfg = Config::default_config().unwrap();
        ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::detect())
    }

    /// Eight series of three services: a round of eight, so the seasonal, sketch and CUSUM lanes run where they can.
    fn keys() -> Vec<Arc<SeriesKey>> {
        let names = [("a", "latency"), ("a", "errors"), ("a", "requests"), ("b", "latency"), ("b", "errors")];
        let names = names.into_iter().chain([("b", "requests"), ("c", "latency"), ("c", "errors")]);
        names.map(|(sv, me)| Arc::new(SeriesKey::new(sv, me, [] as [(&str, &str); 0]))).collect()
    }

    /// Points `from..to` of every series (a daily wave and noise; a spike on the afternoon of day 6), one batch a step.
    fn feed(det: &mut ShardDetector, keys: &[Arc<SeriesKey>], from: usize, to: usize) -> usize {
        let ids: Vec<SeriesId> = keys.iter().map(|k| k.id).collect();
        let (mut out, mut events) = (Vec::new(), 0);
        for i in from..to {
            let xs: Vec<f64> = (0..keys.len())
                .map(|k| {
                    let wave = (std::f64::consts::TAU * (i % DAY) as f64 / DAY as f64).sin();
                    let noise = ((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5;
                    let spike = if (6 * DAY + 150..6 * DAY + 153).contains(&i) { 30.0 } else { 0.0 };
                    (k + 1) as f64 * (100.0 + 40.0 * wave + 4.0 * noise + spike)
                })
                .collect();
            out.clear();
            det.process(&ids, keys, &vec![T0 + i as i64 * 300_000; keys.len()], &xs, &mut out);
            events += out.len();
        }
        events
    }

    /// The models of eight series after six days, their daily season found, as a file's bytes.
    fn saved() -> &'static [u8] {
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        BYTES.get_or_init(|| {
            let mut det = detector();
            feed(&mut det, &keys(), 0, 6 * DAY);
            ModelFile::merge(det.model_shape(), [det.save_models()]).to_bytes()
        })
    }

    /// Loads `file` into a fresh detector and scores day 7 with it: the events it raises.
    fn run_on(file: ModelFile) -> usize {
        let mut det = detector();
        file.check_shape(&det.model_shape(), Path::new("dir")).unwrap();
        assert_eq!(det.load_models(file.models).unwrap(), 8);
        feed(&mut det, &keys(), 6 * DAY, 7 * DAY)
    }

    /// A file whose checksum holds but whose models break what the detector relies on (a seasonal phase off its
    /// period, which the seasonal lanes address profile bins by; a season past the configured candidates; event times
    /// no source gives; a profile or window of the wrong length; a shape that cannot be) is refused, naming the series
    /// or service and the field; the file as saved loads and runs on.
    #[test]
    fn a_models_file_that_breaks_what_the_detector_relies_on_is_refused_naming_the_series_and_field() {
        let file = ModelFile::from_bytes(saved(), "dir/models.bin").unwrap();
        fn a(f: &mut ModelFile) -> &mut SeriesModel {
            f.models.series.iter_mut().find(|m| &*m.service == "a" && &*m.metric == "latency").unwrap()
        }
        let m = a(&mut file.clone()).clone();
        assert_eq!((m.seasonal.active, m.seasonal.rem[0]), (1, (m.seasonal.phase_t - T0) % 86_400_000), "daily season");
        let with_json = |v: &mut serde_json::Value, field: &str, to: serde_json::Value| v[field] = to;
        type Break = Box<dyn Fn(&mut ModelFile)>;
        let breaks: Vec<(&str, Break)> = vec![
            ("field `seasonal.rem[0]`", Box::new(move |f| a(f).seasonal.rem[0] += 1)),
            ("field `seasonal.rem[1]`", Box::new(move |f| a(f).seasonal.rem[1] = 7 * 86_400_000 + 5)),
            ("field `seasonal.active`: season 3 of 2", Box::new(move |f| a(f).seasonal.active = 3)),
            ("field `last_time`", Box::new(move |f| a(f).last_time = -clock::MAX_TIME_MS - 5)),
            ("field `run_start`", Box::new(move |f| a(f).run_start = i64::MAX)),
            ("field `seasonal.first_time`", Box::new(move |f| a(f).seasonal.first_time = clock::MAX_TIME_MS + 1)),
            ("field `seasonal.phase_t`", Box::new(move |f| a(f).seasonal.phase_t = TimeMs::MIN + 1)),
            ("field `bins`", Box::new(move |f| _ = a(f).bins.pop())),
            ("field `seasonal.units[0]`: 3 is neither", Box::new(move |f| a(f).seasonal.units[0] = 3.0)),
            ("field `seasonal.units[1]`: NaN", Box::new(move |f| a(f).seasonal.units[1] = f32::NAN)),
            ("candidate 0's unit is 0", Box::new(move |f| a(f).seasonal.units[0] = 0.0)),
            (
                "field `part.base`",
                Box::new(move |f| {
                    let mut v = serde_json::to_value(a(f).part).unwrap();
                    with_json(&mut v, "base", (TimeMs::MIN / 2).into());
                    // JSON has no NaN: a series that is not a traffic series has none.
                    with_json(&mut v, "last_volume", 0.0.into());
                    a(f).part = serde_json::from_value(v).unwrap();
                }),
            ),
            (
                "field `spectral.window`",
                Box::new(move |f| {
                    let sketch = serde_json::json!({"counts": vec![0.0; BINS], "lo": 0.0, "hi": 1.0,
                        "total": 0.0});
                    let v = serde_json::json!({"window": vec![0.0; 3], "count": 3, "sketch": sketch});
                    a(f).spectral = Some(serde_json::from_value(v).unwrap());
                }),
            ),
            ("seasonal shape", Box::new(|f| f.shape.periods[1] = 0)),
            ("seasonal shape", Box::new(|f| f.shape.bins.push(4))),
            ("seasonal shape", Box::new(|f| f.shape.bins[0] = usize::MAX)),
        ];
        let series = format!("series a/latency ({:016x})", m.id);
        for (field, break_it) in &breaks {
            let mut f = file.clone();
            break_it(&mut f);
            let err = ModelFile::from_bytes(&f.to_bytes(), "dir/models.bin").unwrap_err().to_string();
            assert!(err.starts_with("cannot decode dir/models.bin") && err.contains(field), "{field}: {err}");
            assert!(err.contains(&series) || field.starts_with("seasonal shape"), "{err}");
        }
        // A service's time base.
        let mut f = file.clone();
        let mut v = serde_json::to_value(f.models.services[0]).unwrap();
        with_json(&mut v, "now", (clock::MAX_TIME_MS + 1).into());
        f.models.services[0] = serde_json::from_value(v).unwrap();
        let err = ModelFile::from_bytes(&f.to_bytes(), "x").unwrap_err().to_string();
        assert!(err.contains(&format!("service {:016x}: field `now`", f.models.services[0].id)), "{err}");
        // As saved, it loads and runs on: day 7's spike is found.
        assert!(run_on(file) > 0);
    }

    /// A file saved with the week at 48 bins (the default before the twenty-ninth session) loads into a detector whose
    /// week has 84: each of its weekly profiles read at the new bins' centres (within a step of the old profile's
    /// interpolated value there), the daily ones as they were, and the models run on; other periods are refused.
    #[test]
    fn a_file_of_other_bins_is_resampled_to_the_configured_ones() {
        let mut cfg = Config::default_config().unwrap();
        cfg.detector.seasonal.bins = crate::config::Bins::Each(vec![96, 48]);
        let mut old = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::detect());
        feed(&mut old, &keys(), 0, 6 * DAY);
        let mut file = ModelFile::merge(old.model_shape(), [old.save_models()]);
        let before = file.clone();
        let shape = detector().model_shape();
        assert_eq!(shape.bins, [96, 84]);
        assert!(file.check_shape(&shape, Path::new("dir")).is_err());
        assert_eq!(file.fit_shape(&shape, Path::new("dir")).unwrap(), 8);
        assert_eq!(file.shape, shape);
        // The old profile's value at a phase (a fraction of the period), as a point there reads it.
        let at = |steps: &[i16], unit: f32, phase: f64| {
            let pos = phase * steps.len() as f64 - 0.5;
            let lo = pos.floor();
            let b0 = (lo as i64).rem_euclid(steps.len() as i64) as usize;
            let frac = (pos - lo) as f32;
            (1.0 - frac) * f32::from(steps[b0]) * unit + frac * f32::from(steps[(b0 + 1) % steps.len()]) * unit
        };
        let mut largest = 0f32;
        for (m, b) in file.models.series.iter().zip(&before.models.series) {
            assert_eq!((&m.bins[..96], m.seasonal.units[0]), (&b.bins[..96], b.seasonal.units[0]), "the day's");
            let (unit, old_unit) = (m.seasonal.units[1], b.seasonal.units[1]);
            for j in 0..84 {
                let want = at(&b.bins[96..], old_unit, (j as f64 + 0.5) / 84.0);
                let got = f32::from(m.bins[96 + j]) * unit;
                assert!((got - want).abs() <= unit, "{}/{} week bin {j}: {got} against {want}", m.service, m.metric);
                largest = largest.max(want.abs());
            }
            let steps: i32 = m.bins[96..].iter().map(|&q| i32::from(q)).sum();
            assert_eq!(m.seasonal.cand[1][0], steps as f32 * unit);
        }
        assert!(largest > 1.0, "the weeks had learned something: {largest}");
        assert!(run_on(file) > 0);
        // Other periods are not resampled.
        let mut daily = ModelFile::from_bytes(saved(), "x").unwrap();
        let err = daily.fit_shape(&ModelShape { periods: vec![86_400_000], bins: vec![96] }, Path::new("dir"));
        assert!(err.unwrap_err().to_string().contains("engine.state-dir"));
    }

    /// A file of format version 1 (the profiles' bins in `f32`, written by builds before 16-bit bins) loads: every
    /// bin holds the value it held, in steps of a power of two, the sums are the bins', and the models run on.
    #[test]
    fn a_version_1_file_loads_with_its_bins_in_steps() {
        let file = ModelFile::from_bytes(saved(), "dir/models.bin").unwrap();
        let shape = file.shape.clone();
        // The same models as version 1 wrote them: each bin's value in `f32`, no units.
        let series = file
            .models
            .series
            .iter()
            .cloned()
            .map(|m| {
                m.convert(
                    |parts, steps| {
                        let mut values = Vec::new();
                        let mut at = 0;
                        for (c, &n) in shape.bins.iter().enumerate() {
                            values.extend(steps[at..at + n].iter().map(|&q| f32::from(q) * parts.units[c]));
                            at += n;
                        }
                        // Version 1's sums were the steps learned, not exactly the bins' sum.
                        let mut cand = parts.cand;
                        for k in &mut cand {
                            k[0] += 0.001;
                        }
                        let v1 = SeasonalPartsV1 {
                            cand,
                            rem: parts.rem,
                            flat: parts.flat,
                            n: parts.n,
                            active: parts.active,
                            first_time: parts.first_time,
                            phase_t: parts.phase_t,
                        };
                        (v1, values)
                    },
                    |_| (),
                )
            })
            .collect::<Vec<_>>();
        let v1 = ModelFileV1 {
            shape: shape.clone(),
            saved_at_ms: file.saved_at_ms,
            models: OldModels { series: series.clone(), services: file.models.services.clone() },
        };
        let payload = postcard::to_stdvec(&v1).unwrap();
        let mut bytes = framed(&payload);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let loaded = ModelFile::from_bytes(&bytes, "dir/models.bin").unwrap();
        let mut upgraded = 0;
        for (m, old) in loaded.models.series.iter().zip(&series) {
            let mut at = 0;
            for (c, &n) in shape.bins.iter().enumerate() {
                let unit = m.seasonal.units[c];
                let values: Vec<f32> = m.bins[at..at + n].iter().map(|&q| f32::from(q) * unit).collect();
                assert_eq!(values, old.bins[at..at + n], "{}/{} candidate {c}", m.service, m.metric);
                let sum: i32 = m.bins[at..at + n].iter().map(|&q| i32::from(q)).sum();
                assert_eq!(m.seasonal.cand[c][0], sum as f32 * unit);
                upgraded += usize::from(unit > 0.0);
                at += n;
            }
        }
        assert!(upgraded >= 8, "profiles with values: {upgraded}");
        assert!(run_on(loaded) > 0);
        // Another version is refused, naming both.
        bytes[8..12].copy_from_slice(&4u32.to_le_bytes());
        let err = ModelFile::from_bytes(&bytes, "x").unwrap_err().to_string();
        assert!(err.contains("format version 4; this build reads versions 1 to 3"), "{err}");
    }

    /// A file of format version 2 (before level-shift records were saved) loads as the same models, none with a
    /// record, and they run on.
    #[test]
    fn a_version_2_file_loads_as_the_same_models_without_shift_records() {
        let file = ModelFile::from_bytes(saved(), "dir/models.bin").unwrap();
        let v2 = ModelFileV2 {
            shape: file.shape.clone(),
            saved_at_ms: file.saved_at_ms,
            models: OldModels {
                series: file.models.series.iter().cloned().map(|m| m.convert(|p, b| (p, b), |_| ())).collect(),
                services: file.models.services.clone(),
            },
        };
        let mut bytes = framed(&postcard::to_stdvec(&v2).unwrap());
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(bytes.len() < saved().len(), "version 3 writes a byte a series more");
        let loaded = ModelFile::from_bytes(&bytes, "dir/models.bin").unwrap();
        assert!(loaded.models.series.iter().all(|m| m.shift.is_none()));
        assert_eq!(loaded.to_bytes()[HEADER..], saved()[HEADER..], "the same models");
        assert!(run_on(loaded) > 0);
        // `faultline models` says which version the file is in.
        let dir = std::env::temp_dir().join(format!("faultline-persist-v2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE_NAME), &bytes).unwrap();
        let report = ModelsReport::read(&dir, &Config::default_config().unwrap().detector, &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((report.format_version, report.series), (2, 8));
        assert!(report.render().contains("format 2, read as 3: the next save writes 3"), "{}", report.render());
    }

    /// A restart that falls inside an outage keeps the model's record from before the level shift: when the series
    /// comes back after the restart, the shift is undone as it would have been without the restart, and a burst 40
    /// minutes later is caught. Without the record (as before it was saved) the restarted model has learned the
    /// outage, and the burst is missed. `faultline models` names the shift; a record that cannot be is refused.
    #[test]
    fn an_outage_a_restart_falls_into_is_still_undone_when_the_series_returns() {
        const MINUTE: TimeMs = 60_000;
        const END: usize = 3_100;
        let k = Arc::new(SeriesKey::new("queue", "depth", [] as [(&str, &str); 0]));
        let value = |i: usize| {
            let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let noise = ((h >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0;
            let outage = if (3_000..END).contains(&i) { 10.0 } else { 0.0 };
            let burst = if (END + 40..END + 43).contains(&i) { 12.0 } else { 0.0 };
            100.0 + noise + outage + burst
        };
        let run = |det: &mut ShardDetector, from: usize, to: usize| {
            let xs: Vec<f64> = (from..to).map(value).collect();
            let times: Vec<TimeMs> = (from..to).map(|i| T0 + i as TimeMs * MINUTE).collect();
            let mut out = Vec::new();
            let stats = det.process(&vec![k.id; xs.len()], &vec![Arc::clone(&k); xs.len()], &times, &xs, &mut out);
            let burst = out.iter().filter(|e| (END + 40..END + 46).contains(&(((e.time - T0) / MINUTE) as usize)));
            (stats.shifts_reverted, burst.count())
        };
        // Stopped 50 minutes into the outage, after its change point.
        let mut before = detector();
        assert_eq!(run(&mut before, 0, 3_050), (0, 0));
        let file = ModelFile::merge(before.model_shape(), [before.save_models()]);
        let file = ModelFile::from_bytes(&file.to_bytes(), "dir/models.bin").unwrap();
        let record = file.models.series[0].shift.expect("the record of the model before the outage is saved");
        assert_eq!((record.0.since - T0) / MINUTE / 10, 300, "from the outage's change point");
        let restarted = |file: &ModelFile| {
            let mut det = detector();
            det.load_models(file.models.clone()).unwrap();
            run(&mut det, 3_050, END + 60)
        };
        let (reverted, burst) = restarted(&file);
        assert_eq!(reverted, 1, "the return after the restart undid the shift");
        assert!(burst > 0, "the burst after the outage is caught");
        let mut lost = file.clone();
        lost.models.series[0].shift = None;
        assert_eq!(restarted(&lost), (0, 0), "without the record the restarted model learned the outage");

        let dir = std::env::temp_dir().join(format!("faultline-persist-shift-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        file.save(&dir).unwrap();
        let cfg = Config::default_config().unwrap();
        let report = ModelsReport::read(&dir, &cfg.detector, &["queue".into()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(report.format_version, FORMAT_VERSION);
        let row = &report.rows[0];
        assert_eq!(row.shifted_since.as_deref(), Some(clock::fmt_time(record.0.since).as_str()));
        assert!((row.level_before_shift.unwrap() - 100.0).abs() < 1.0, "{:?}", row.level_before_shift);
        assert!(report.render().contains("level shifts these series may still come back from"));

        let mut bad = file;
        bad.models.series[0].shift.as_mut().unwrap().0.back = record.0.points + 1;
        let err = ModelFile::from_bytes(&bad.to_bytes(), "dir/models.bin").unwrap_err().to_string();
        assert!(err.contains("series queue/depth") && err.contains("field `shift`"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any bytes under a valid header (the payload changed here and there, the checksum made to match): the file
        /// is refused with its reason, or it loads, and a detector with its models scores a day on; never a panic.
        #[test]
        fn a_models_file_changed_anywhere_is_refused_or_runs(
            changes in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6),
        ) {
            let mut payload = saved()[HEADER..].to_vec();
            for (at, flip) in &changes {
                let i = at.index(payload.len());
                payload[i] ^= flip;
            }
            match ModelFile::from_bytes(&framed(&payload), "dir/models.bin") {
                Err(e) => prop_assert!(e.to_string().starts_with("cannot decode dir/models.bin"), "{e}"),
                Ok(file) if file.shape == detector().model_shape() => {
                    let mut det = detector();
                    det.load_models(file.models).unwrap();
                    feed(&mut det, &keys(), 6 * DAY, 7 * DAY);
                }
                Ok(_) => {}
            }
        }
    }

    /// `faultline models` reports `sigma`, what the series' next residual is measured against: above the robust scale
    /// while the slow scale floor still holds a noisier past (a series whose noise fell tenfold 80 points ago), and
    /// exactly what the next event's z-score divides by.
    #[test]
    fn the_models_report_gives_what_the_next_residual_is_measured_against() {
        const MINUTE: TimeMs = 60_000;
        let mut cfg = Config::default_config().unwrap();
        // One anomalous point is an event, so the spike's own event shows what it was measured against.
        cfg.detector.m_of_n = [1, 1];
        let mut det = ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::detect());
        let key = Arc::new(SeriesKey::new("shop", "orders", [] as [(&str, &str); 0]));
        let value = |i: usize| {
            let noise = ((i * 7919) % 1000) as f64 / 1000.0 - 0.5;
            100.0 + if i < 400 { 40.0 } else { 4.0 } * noise
        };
        let n = 480;
        let xs: Vec<f64> = (0..n).map(value).collect();
        let times: Vec<TimeMs> = (0..n as i64).map(|i| T0 + i * MINUTE).collect();
        let mut out = Vec::new();
        det.process(&vec![key.id; n], &vec![Arc::clone(&key); n], &times, &xs, &mut out);
        let dir = std::env::temp_dir().join(format!("faultline-models-sigma-{}", std::process::id()));
        ModelFile::merge(det.model_shape(), [det.save_models()]).save(&dir).unwrap();
        let report = ModelsReport::read(&dir, &cfg.detector, &["*".to_owned()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let row = &report.rows[0];
        assert_eq!(row.stage, "robust", "{row:?}");
        assert!(row.sigma > 1.5 * row.scale, "the floor holds the noisier past: {row:?}");
        // A spike at the next minute: its event's residual over its z is the sigma reported.
        out.clear();
        det.process(&[key.id], &[Arc::clone(&key)], &[T0 + n as i64 * MINUTE], &[value(n) + 200.0], &mut out);
        let e = out.iter().find(|e| e.time == T0 + n as i64 * MINUTE).expect("the spike raises an event");
        let sigma = (e.observed - e.expected) / e.z;
        assert!((sigma - f64::from(row.sigma)).abs() < 1e-3 * f64::from(row.sigma), "{sigma} against {row:?}");
    }
}
