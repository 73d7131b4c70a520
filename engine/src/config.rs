//! Configuration: serde structs (kebab-case, unknown fields rejected), defaults from the embedded
//! `configs/default.toml`, the user's file merged on top, environment overrides, then one validation pass that
//! reports every problem at once.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::TimeMs;
use crate::sim::SimConfig;
use crate::units::HumanDuration;

/// The embedded defaults; every setting is present here.
pub const DEFAULT_TOML: &str = include_str!("../../configs/default.toml");

/// Prefix of environment overrides: `FAULTLINE__ENGINE__SHARDS=4` sets `engine.shards`.
pub const ENV_PREFIX: &str = "FAULTLINE__";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub engine: EngineConfig,
    pub source: SourceConfig,
    pub simulator: SimConfig,
    pub detector: DetectorConfig,
    pub rca: RcaConfig,
    pub graph: GraphConfig,
    pub sinks: Vec<SinkConfig>,
    pub dead_letter: DeadLetterConfig,
    pub kafka: KafkaConfig,
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the engine's own metrics, served over HTTP while it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// `host:port` to serve `/metrics` (Prometheus text), `/healthz` and `/readyz` on; empty = off.
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineConfig {
    pub shards: usize,
    pub batch_size: usize,
    pub queue_depth: usize,
    /// Where the robust models are updated and scored.
    pub backend: Backend,
    /// Points per batch when scoring on the GPU: larger batches amortise the dispatch and read-back.
    pub gpu_batch_size: usize,
    /// When scoring on the GPU, a batch is handed on once it is full or once this long has passed since the source
    /// began filling it, whichever comes first.
    pub gpu_max_wait: HumanDuration,
    /// The most series this instance models, all shards together (0: no limit). Points of further series are refused
    /// and counted (see `detect::SeriesLimit`).
    pub max_series: usize,
    /// Forget a series once it has sent no point for this long in event time (its model freed, its slot reused;
    /// see `ShardDetector::forget_idle_series`); 0s = never.
    pub series_idle: HumanDuration,
    /// A directory the models are saved in at the stop (and every `state-every`) and loaded from at the start
    /// (`detect::persist`); empty = models live in memory only.
    pub state_dir: String,
    /// Also save the models this often while running (wall clock); 0s = only at the stop.
    pub state_every: HumanDuration,
}

/// The scoring backend: the CPU kernels (the reference), the GPU (wgpu compute shaders, same answers), or the GPU
/// when an adapter is found and the CPU otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Cpu,
    Gpu,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Simulator,
    Jsonl,
    Kafka,
    /// A CSV, Parquet or Arrow IPC file of points, one per row (`[source.table]`).
    Table,
    /// An OTLP/HTTP receiver: metrics POSTed to `/v1/metrics` (`[source.otlp-http]`).
    OtlpHttp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceConfig {
    pub kind: SourceKind,
    pub path: String,
    /// Points stamped more than this past the machine's clock are dead-lettered (0s = accept any time).
    pub max_future: HumanDuration,
    pub kafka: KafkaSourceConfig,
    pub table: TableConfig,
    pub otlp_http: OtlpHttpConfig,
}

/// `[source.otlp-http]`: the OTLP/HTTP receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OtlpHttpConfig {
    /// `host:port` to receive `POST /v1/metrics` on (OTLP/HTTP's usual port is 4318).
    pub listen: String,
    /// Decoded requests queued for the shards; when full, senders get 503 and retry.
    pub queue: usize,
    /// A batch is handed to the shards when full or when its first point has waited this long.
    pub max_wait: HumanDuration,
    /// Stop (score what is queued, exit 0) once no request has arrived for this long; 0s = run until a signal.
    pub stop_when_idle: HumanDuration,
}

/// `[source.table]`: how a table file's rows are points.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableConfig {
    pub format: TableFormat,
    /// Column names: event time (integer milliseconds, an Arrow timestamp, or RFC 3339 text), service, metric and
    /// value (any number type).
    pub time: String,
    pub service: String,
    pub metric: String,
    pub value: String,
    /// Columns copied into the point's labels (by column name; an empty cell leaves the label out).
    pub labels: Vec<String>,
    /// A CSV file's cell separator: one ASCII character (`","`, `";"` in many European exports, `"\t"`).
    pub delimiter: String,
}

impl TableConfig {
    /// The columns a point needs: time, service, metric, value, then the labels.
    pub fn columns(&self) -> Vec<String> {
        let mut c = vec![self.time.clone(), self.service.clone(), self.metric.clone(), self.value.clone()];
        c.extend(self.labels.iter().cloned());
        c
    }
}

/// A table file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableFormat {
    /// From the file name: `.csv`, `.parquet` (`.pq`), `.arrow` (`.ipc`, `.feather`).
    Auto,
    Csv,
    Parquet,
    /// The Arrow IPC file format (Feather v2).
    Arrow,
}

impl TableFormat {
    /// The format of the file at `path`: this one, or the one its extension names when `Auto`.
    pub fn resolve(self, path: &str) -> Result<Self> {
        if self != TableFormat::Auto {
            return Ok(self);
        }
        let ext = std::path::Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Ok(TableFormat::Csv),
            "parquet" | "pq" => Ok(TableFormat::Parquet),
            "arrow" | "ipc" | "feather" => Ok(TableFormat::Arrow),
            _ => Err(Error::config(format!(
                "source.table.format = \"auto\" cannot tell the format of {path:?} from its extension (.csv, .parquet, \
                 .arrow): set it"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TableFormat::Auto => "auto",
            TableFormat::Csv => "CSV",
            TableFormat::Parquet => "Parquet",
            TableFormat::Arrow => "Arrow IPC",
        }
    }
}

/// How the records of the telemetry topics are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaFormat {
    /// By content: `{"resourceMetrics"…` is OTLP JSON, other JSON is Faultline points, anything else OTLP protobuf.
    Auto,
    /// Faultline JSON points: one object, an array, or newline-delimited objects per record.
    Json,
    /// `ExportMetricsServiceRequest` in protobuf (the Collector's Kafka exporter, `encoding: otlp_proto`).
    OtlpProto,
    /// `ExportMetricsServiceRequest` in OTLP/JSON (`encoding: otlp_json`).
    OtlpJson,
}

/// `[source.kafka]`: a consumer group reading telemetry topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSourceConfig {
    pub topics: Vec<String>,
    /// Topics of change events (deploys, config changes: `{"time","service","kind","description"}` JSON, one per
    /// record or newline-delimited), read by the same consumer and joined with incidents like `rca.changes`.
    pub change_topics: Vec<String>,
    /// Topics of operator feedback (verdicts on anomaly events, `faultline.feedback.v1` JSON, one per record or
    /// newline-delimited), read by the same consumer and applied to the judged series' models.
    pub feedback_topics: Vec<String>,
    pub group_id: String,
    pub format: KafkaFormat,
    /// A batch is handed to the shards when it is full or its first record has waited this long.
    pub max_wait: HumanDuration,
    /// Completed offsets are committed (asynchronously) at most this often; always on revoke and at shutdown.
    pub commit_interval: HumanDuration,
    /// Stop (drain, commit, exit 0) once partitions are assigned and no record has arrived for this long; 0s = run
    /// until a signal.
    pub stop_when_idle: HumanDuration,
    /// Upper bound on draining at shutdown or on a partition revoke: scoring, delivery acknowledgements, commit.
    pub drain_timeout: HumanDuration,
    /// Warm start: a partition this instance is assigned (at start or in a rebalance) is read again from this far
    /// back (by the records' broker timestamps) before its committed offset, so the models learn the recent past
    /// instead of starting cold; those records raise no event (they were published before). 0s = off.
    pub warm_up: HumanDuration,
    /// At most this many records a partition are read again for warm-up (0 = no bound); alone, without `warm-up`,
    /// it rewinds by this many records.
    pub warm_up_records: u64,
    /// librdkafka properties for the consumer only (over `[kafka.properties]`).
    pub properties: BTreeMap<String, String>,
}

/// `[kafka]`: the cluster, shared by the consumer, the producer of outputs and the dead-letter producer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `"broker-1:9092,broker-2:9092"`.
    pub brokers: String,
    /// librdkafka properties for every client: `security.protocol`, `sasl.*`, `ssl.*`, `client.id`, …
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (over `properties`), e.g. `linger.ms`, `compression.type`.
    pub producer_properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionFilter {
    Up,
    Down,
    Both,
}

/// What may open a run of anomalous points, so that it raises M-of-N alerts (`detector.onset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Onset {
    /// A point outside the band that the series' own history calls rare (its surprise at the alarm level, `risk`) or
    /// its service's multivariate score does, a level shift or the hold after one, or a rule's; the run then stays
    /// open while any of its last N points is outside the band, and the points before the opening count towards
    /// M-of-N and `started_at`.
    Rare,
    /// Any point outside the band (the behaviour before the twenty-third session).
    Band,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DetectorConfig {
    pub warmup_points: u32,
    pub threshold: f64,
    pub alpha: f64,
    pub beta: f64,
    pub huber: f64,
    pub anomaly_weight: f64,
    pub rel_floor: f64,
    /// Absolute floor on the robust scale, in the metric's unit.
    pub abs_floor: f64,
    pub m_of_n: [u32; 2],
    pub onset: Onset,
    pub direction: DirectionFilter,
    pub min_abs_deviation: f64,
    pub min_rel_deviation: f64,
    /// Per-point false-alarm probability the calibrated thresholds aim at.
    pub risk: f64,
    /// The kernel's robust scale is floored at this multiple of a slow, ungated mean absolute residual.
    pub scale_floor: f64,
    /// Weight of one point in that mean absolute residual.
    pub scale_floor_alpha: f64,
    pub seasonal: SeasonalConfig,
    pub level_shift: LevelShiftConfig,
    pub calibration: CalibrationConfig,
    pub density: DensityConfig,
    pub fatigue: FatigueConfig,
    pub novelty: NoveltyConfig,
    pub burst: BurstConfig,
    pub multivariate: MultivariateConfig,
    pub spectral: SpectralConfig,
    pub rules: Vec<RuleConfig>,
    pub overrides: Vec<OverrideConfig>,
    /// Windows of event time in which matching series score and alert as usual but none of their models learns.
    pub learning_pauses: Vec<LearningPauseConfig>,
    pub feedback: FeedbackConfig,
}

/// What operator feedback does to a series' models (`[detector.feedback]`; see [`crate::feedback`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FeedbackConfig {
    /// JSON-lines file of verdicts known at the start (`faultline.feedback.v1`); empty = none. Each applies from the
    /// event time of the anomaly it judges, so a replay with it is deterministic.
    pub file: String,
    /// A rejected deviation is tolerated with this margin: events of the series in that direction need a deviation
    /// more than `(1 + margin)` times it.
    pub margin: f64,
    /// The tolerance a rejection sets halves every this much event time (the series may change again).
    pub half_life: HumanDuration,
    /// An accepted anomaly holds the series' learning until the series is back to normal, at most this long.
    pub hold_max: HumanDuration,
}

/// Seasonality found per series (`[detector.seasonal]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SeasonalConfig {
    /// Candidate periods; empty turns seasonality off.
    pub periods: Vec<HumanDuration>,
    /// Profile bins per period: `"auto"` (by the period's length), one number for every period, or one per period
    /// (`[96, 84]`).
    pub bins: Bins,
    /// Learning weight of one point for the profile where each bin is visited three times a period or more (more
    /// for a sparser series: `detect::seasonal::visit_rate`).
    pub rate: f64,
    /// Periods of data before a season may become active.
    pub min_periods: f64,
    /// Fraction of the one-step error a season must remove to become active.
    pub min_gain: f64,
    /// The civil time zone (an IANA name: `"America/New_York"`, `"Europe/Berlin"`; `"UTC"` by default) whose clock
    /// the profiles follow, so a daily or weekly pattern of local time keeps its phase across daylight-saving changes.
    pub timezone: String,
}

/// Time zone `name` (an IANA name) for the seasonal profiles: `None` for UTC (no offset to add), or the reason it is
/// not one.
pub fn parse_timezone(name: &str) -> std::result::Result<Option<chrono_tz::Tz>, String> {
    match name.parse::<chrono_tz::Tz>() {
        Ok(chrono_tz::Tz::UTC) => Ok(None),
        Ok(tz) => Ok(Some(tz)),
        Err(_) => Err(format!(
            "unknown time zone {name:?}: an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\""
        )),
    }
}

/// Profile bins of the seasonal candidates (`detector.seasonal.bins`): `"auto"` (by each period's length), one count
/// for every period, or one per period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "detector.seasonal.bins must be \"auto\", a number (every period's bins) or a list of one number per \
                 period"
)]
pub enum Bins {
    All(usize),
    Each(Vec<usize>),
    /// `"auto"` (anything else is a configuration error).
    Rule(String),
}

/// `detector.seasonal.bins = "auto"`: a period of up to a day gets this many bins (a day's: one per quarter hour)...
pub const AUTO_BINS_UP_TO_A_DAY: usize = 96;
/// ...and a longer one this many (a week's: one per two hours, twelve a day, fine enough for a working day's ramps
/// against a quiet weekend; 48 bins of 3.5 hours were not: BENCHMARKS.md, "A week that holds a working day").
pub const AUTO_BINS_LONGER: usize = 84;

impl SeasonalConfig {
    /// The profile bins of each candidate period, in the order of `periods`.
    pub fn bins_per_period(&self) -> Vec<usize> {
        match &self.bins {
            Bins::All(b) => vec![*b; self.periods.len()],
            Bins::Each(b) => b.clone(),
            Bins::Rule(_) => self
                .periods
                .iter()
                .map(|p| if p.as_millis_i64() <= 86_400_000 { AUTO_BINS_UP_TO_A_DAY } else { AUTO_BINS_LONGER })
                .collect(),
        }
    }
}

/// Level-shift detection by CUSUM (`[detector.level-shift]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LevelShiftConfig {
    /// Reference value k, in sigmas (half the smallest shift worth detecting).
    pub drift: f64,
    /// Decision threshold h, in sigmas: reaching it re-baselines the model.
    pub threshold: f64,
    /// Residuals are clipped at this many sigmas before they accumulate.
    pub clip: f64,
    /// Fraction of the points of the excursion that must push it: intermittent outliers are no level shift.
    pub persistence: f64,
    /// Points a new level must hold, measured from its last change point, before the event path accepts it as the
    /// new normal: until then points are judged against the level and scale from before the shift (0 = at once).
    pub settle_after: u32,
    /// A shift the series undoes within this time of its change point (back inside the normal band of the level it
    /// left for `revert-after` points) was an excursion, an outage, not a new normal: the scale, the scale floor, the
    /// rarity sketches and fatigue go back to what they held before it ("0s" = never; the shift's points stay
    /// learned).
    pub revert_within: HumanDuration,
    /// Points in a row back inside the old level's band that undo a shift (see `revert-within`).
    pub revert_after: u32,
}

/// Extreme-value calibration of the thresholds (`[detector.calibration]`, streaming peaks-over-threshold).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CalibrationConfig {
    /// Quantile of a statistic above which values count as peaks.
    pub quantile: f64,
    /// Step of the streaming quantile estimate, in sigmas.
    pub step: f64,
    /// Peaks needed before the calibrated threshold replaces `threshold`.
    pub min_peaks: u32,
    /// Effective memory of the tail fit, in peaks.
    pub memory: f64,
    /// Largest tail shape accepted.
    pub max_shape: f64,
}

/// Rarity of the value and of the residual under the series' own history (`[detector.density]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DensityConfig {
    /// Points after which a count in the sketches has halved.
    pub half_life: f64,
    /// Pseudo-count of every bin.
    pub prior: f64,
    /// Pseudo-count of the unseen region beyond the range of values seen.
    pub unseen: f64,
    /// Surprise added per bin width a value lies beyond that range.
    pub tail: f64,
    /// Points a series needs before the sketches score.
    pub warmup_points: u32,
    /// Surprise subtracted from the residual channel (residuals are noisier evidence than values).
    pub residual_discount: f64,
}

/// Alarm fatigue (`[detector.fatigue]`): a series that alarmed `n` times lately (decaying count) has every surprise
/// discounted by `log10(1 + n / scale)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FatigueConfig {
    pub scale: f64,
    /// Points after which an alarm's weight in the count has halved.
    pub half_life: f64,
}

/// The spectral-residual channel (`[detector.spectral]`): a heavier, windowed detector of shape anomalies (Ren et al.,
/// KDD 2019) over each series' last 64 points, scored by the rarity of its saliency under the series' own history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpectralConfig {
    pub enabled: bool,
    /// Extrapolated points appended to the window (the paper's κ); the window holds `64 − extend` real points.
    pub extend: u32,
    /// Points whose mean slope extrapolates the series (the paper's m).
    pub look: u32,
    /// Bins of the average of the log-amplitude spectrum (odd; the paper's q).
    pub mag_window: u32,
    /// Newest points whose mean saliency a point's saliency is compared with (the paper's z).
    pub score_window: u32,
    /// Points a series needs before the channel scores.
    pub warmup_points: u32,
    /// Surprise subtracted from the channel (it sees shapes, which are noisier evidence than values).
    pub discount: f64,
}

impl SpectralConfig {
    /// The kernel's parameters.
    pub fn params(&self) -> faultline_kernels::SpectralParams {
        faultline_kernels::SpectralParams {
            extend: self.extend,
            look: self.look,
            mag_window: self.mag_window,
            score_window: self.score_window,
        }
    }
}

/// Post-detection suppression of the per-point score stream (`[detector.novelty]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NoveltyConfig {
    /// A point's score counts only if its surprise beats the series' recent peak by `margin`; the peak halves over
    /// this many points of the series.
    pub half_life: f64,
    pub margin: f64,
}

/// The burst channel (`[detector.burst]`): the recent mean of the standardised residual, scored by how far it breaks
/// the record range it has kept (see `detect::burst`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BurstConfig {
    pub enabled: bool,
    /// Points after which a residual's weight in the mean has halved.
    pub half_life: f64,
    /// The fraction of the record range the mean must go beyond it to reach the alarm level.
    pub record: f64,
}

/// The per-service multivariate score (`[detector.multivariate]`): every series of a service adds its latest squared
/// residual, weighted by recency; the sum is calibrated per service and attributed to its metrics in every event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MultivariateConfig {
    /// A series' contribution weighs `exp(−age / horizon)`: metrics that stopped reporting fade out.
    pub horizon: HumanDuration,
    /// Metrics listed in an event's attribution.
    pub top: usize,
    /// Smallest share of the service's score listed.
    pub min_share: f64,
}

/// Most entries of `detector.learning-pauses` (each series keeps a bit per entry that matches it).
pub const MAX_LEARNING_PAUSES: usize = 64;

/// A learning pause (`[[detector.learning-pauses]]`): from `from` (inclusive) to `until` (exclusive), in event time,
/// the series whose metric (and service, if given) match are scored and raise events as usual, but none of their
/// models learns from those points. Either end may be left out (open).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LearningPauseConfig {
    pub metric: String,
    #[serde(default)]
    pub service: Option<String>,
    /// RFC 3339 (or `YYYY-MM-DD HH:MM:SS`, UTC) event times.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
}

impl LearningPauseConfig {
    /// The window in event-time milliseconds, open ends as `TimeMs::MIN` / `TimeMs::MAX`, or what is wrong with it
    /// (naming the field, below `at`).
    pub fn window(&self, at: &str) -> std::result::Result<(TimeMs, TimeMs), String> {
        let time = |name: &str, v: &Option<String>, open: TimeMs| match v {
            None => Ok(open),
            Some(v) => crate::clock::parse_time(v).map_err(|e| format!("{at}.{name}: {e}")),
        };
        let (from, until) = (time("from", &self.from, TimeMs::MIN)?, time("until", &self.until, TimeMs::MAX)?);
        if from >= until {
            return Err(format!("{at}: `from` must be earlier than `until`"));
        }
        Ok((from, until))
    }
}

/// An absolute bound that applies from a series' first point: the cold-start rung of the ladder. It stops applying
/// once the learned model has warmed up, unless `always` is set (a hard bound such as an SLO).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    pub metric: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    #[serde(default)]
    pub always: bool,
}

/// Noise controls for the series whose metric (and service, if given) match; unset fields keep the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OverrideConfig {
    pub metric: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub direction: Option<DirectionFilter>,
    #[serde(default)]
    pub min_abs_deviation: Option<f64>,
    #[serde(default)]
    pub min_rel_deviation: Option<f64>,
    #[serde(default)]
    pub m_of_n: Option<[u32; 2]>,
    #[serde(default)]
    pub onset: Option<Onset>,
    /// Low-volume guard: no events for these series while their service's traffic (the sum of the latest values of
    /// its traffic-role series) is below this. A service with no traffic series is not guarded.
    #[serde(default)]
    pub min_volume: Option<f64>,
    /// The time zone these series' seasonal profiles follow (see [`SeasonalConfig::timezone`]).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Points these series must have before their learned model may raise anomalies (cold-start rules apply until
    /// then); the models learn from `detector.warmup-points` on as for every series, only the events wait.
    #[serde(default)]
    pub warmup_points: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Traffic,
    Latency,
    Errors,
    Saturation,
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Traffic => "traffic",
            Role::Latency => "latency",
            Role::Errors => "errors",
            Role::Saturation => "saturation",
            Role::Other => "other",
        }
    }

    /// Latency, errors and saturation: the roles a failure propagates through, from callee to caller.
    pub fn is_failure(self) -> bool {
        matches!(self, Role::Latency | Role::Errors | Role::Saturation)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoleConfig {
    pub metric: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RcaConfig {
    pub incident_gap: HumanDuration,
    pub close_after: HumanDuration,
    pub min_anomalies: usize,
    pub onset_tolerance: HumanDuration,
    pub max_candidates: usize,
    /// An anomaly joins an open incident only if its service is within this many call-graph hops (either
    /// direction) of one of the incident's services; services the graph does not know are grouped by time alone.
    pub group_hops: usize,
    /// While an incident is open, a new report version at most this often (event time); 0s = only when it closes.
    pub update_interval: HumanDuration,
    /// A change on a candidate this long before its onset raises its rank.
    pub change_window: HumanDuration,
    /// JSON-lines file of deploy/config change events (`{"time","service","kind","description"}`); empty = none.
    pub changes: String,
    /// Metric whose series (with `client` and `server` labels) report caller -> callee calls; each point teaches
    /// the call graph an edge (OpenTelemetry's service-graph connector). Empty = do not learn edges.
    pub graph_metric: String,
    /// Learned edges not seen for this long (event time) are forgotten.
    pub edge_ttl: HumanDuration,
    /// `[a, b]`: confidence = logistic(a + b · (share − 0.5)), where share is the top candidate's share of the top
    /// two scores. The default was fitted on simulator scenarios; refit on your own cases with `eval rca cases`.
    pub confidence_calibration: [f64; 2],
    pub roles: Vec<RoleConfig>,
}

impl RcaConfig {
    /// The role of a metric name: the first matching entry of `roles`, else `Other`.
    pub fn role_of(&self, metric: &str) -> Role {
        self.roles.iter().find(|r| glob_match(&r.metric, metric)).map_or(Role::Other, |r| r.role)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GraphConfig {
    pub edges: Vec<[String; 2]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    Jsonl,
    Summary,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Anomaly,
    RootCause,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SinkConfig {
    pub kind: SinkKind,
    #[serde(default)]
    pub path: Option<String>,
    /// For kind = "kafka": the topic (anomalies keyed by service, reports by incident id).
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
}

fn all_events() -> Vec<EventKind> {
    vec![EventKind::Anomaly, EventKind::RootCause]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeadLetterConfig {
    pub path: String,
    /// Kafka source only: a topic for undecodable records (original bytes, headers say where from and why);
    /// empty = use `path`.
    pub topic: String,
}

/// `host:port`: an IP socket address, or a host name and a port.
fn is_listen_address(a: &str) -> bool {
    a.parse::<std::net::SocketAddr>().is_ok()
        || a.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && !h.contains(':') && port.parse::<u16>().is_ok())
}

impl Config {
    /// The embedded defaults, validated.
    pub fn default_config() -> Result<Self> {
        Self::from_layers(None, std::iter::empty())
    }

    /// Defaults, then the file at `path`, then `FAULTLINE__…` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let user = match path {
            Some(p) => Some((p.display().to_string(), std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?)),
            None => None,
        };
        Self::from_layers(user.as_ref().map(|(n, s)| (n.as_str(), s.as_str())), std::env::vars())
    }

    /// Defaults, then a named TOML text, then `(name, value)` environment pairs (only `FAULTLINE__` ones are used).
    pub fn from_layers(user: Option<(&str, &str)>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut root: toml::Table = DEFAULT_TOML.parse().map_err(|e| Error::Internal(format!("default.toml: {e}")))?;
        if let Some((name, text)) = user {
            let table: toml::Table =
                text.parse().map_err(|e: toml::de::Error| Error::config(format!("{name}: {e}")))?;
            merge(&mut root, table);
        }
        let mut problems = Vec::new();
        // The settings the environment set, as dotted paths, and the variable that set each.
        let mut from_env = Vec::new();
        for (k, v) in env {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else { continue };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase().replace('_', "-")).collect();
            if let Err(e) = set_path(&mut root, &path, parse_env_value(&v)) {
                problems.push(format!("{k}: {e}"));
            }
            from_env.push((path.join("."), k));
        }
        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        // The merged table has no spans left: the error names the setting by its path (`engine.shards`,
        // `detector.overrides[0].direction`), and the variable or file it came from.
        let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let at = e.path().to_string();
            let message = e.inner().message().trim().to_owned();
            let under =
                |path: &str| at == path || at.starts_with(&format!("{path}.")) || at.starts_with(&format!("{path}["));
            let source = match from_env.iter().find(|(path, _)| under(path)) {
                Some((_, var)) => format!("environment variable {var}"),
                None => user.map_or("the defaults", |(n, _)| n).to_owned(),
            };
            if at == "." {
                Error::config(format!("{source}: {message}"))
            } else {
                Error::config(format!("{source}: {at}: {message}"))
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<()> {
        let mut p = Vec::new();
        let e = &self.engine;
        if e.batch_size == 0 || e.batch_size > 1 << 24 {
            p.push(format!("engine.batch-size must be in 1..=16777216, got {}", e.batch_size));
        }
        if e.queue_depth == 0 {
            p.push("engine.queue-depth must be at least 1".into());
        }
        if e.gpu_batch_size == 0 || e.gpu_batch_size > 1 << 26 {
            p.push(format!("engine.gpu-batch-size must be in 1..=67108864, got {}", e.gpu_batch_size));
        }
        if e.gpu_max_wait.0.is_zero() || e.gpu_max_wait.0 > std::time::Duration::from_secs(10) {
            p.push(format!("engine.gpu-max-wait must be longer than 0s and at most 10s, got {:?}", e.gpu_max_wait.0));
        }
        if e.backend == Backend::Gpu && !cfg!(feature = "gpu") {
            p.push("engine.backend = \"gpu\" needs a build with the `gpu` feature (use \"cpu\" or \"auto\")".into());
        }
        let idle = e.series_idle.0;
        if !idle.is_zero() && idle < std::time::Duration::from_secs(1) {
            p.push(format!("engine.series-idle must be 0s (never forget a series) or at least 1s, got {idle:?}"));
        }
        let every = e.state_every.0;
        if !every.is_zero() && every < std::time::Duration::from_secs(1) {
            p.push(format!("engine.state-every must be 0s (save at the stop only) or at least 1s, got {every:?}"));
        }
        if !every.is_zero() && e.state_dir.trim().is_empty() {
            p.push("engine.state-every needs engine.state-dir (the directory the models are saved in)".into());
        }
        if e.shards > 1024 {
            p.push(format!("engine.shards must be at most 1024 (0 = one per core), got {}", e.shards));
        }
        let listen = self.metrics.listen.trim();
        if !listen.is_empty() && !is_listen_address(listen) {
            p.push(format!("metrics.listen must be host:port (e.g. \"0.0.0.0:9464\"), got {listen:?}"));
        }
        if self.source.kind == SourceKind::OtlpHttp {
            let o = &self.source.otlp_http;
            if !is_listen_address(o.listen.trim()) {
                p.push(format!(
                    "source.otlp-http.listen must be host:port (e.g. \"0.0.0.0:4318\"), got {:?}",
                    o.listen
                ));
            }
            if o.queue == 0 {
                p.push("source.otlp-http.queue must be at least 1".into());
            }
            if o.max_wait.0.is_zero() {
                p.push("source.otlp-http.max-wait must be longer than 0s".into());
            }
        }
        if self.source.kind == SourceKind::Jsonl && self.source.path.trim().is_empty() {
            p.push("source.path must name a file or \"-\" for standard input".into());
        }
        self.validate_kafka(&mut p);
        self.simulator.validate(&mut p);
        let d = &self.detector;
        check_range(&mut p, "detector.threshold", d.threshold, 0.5, 1000.0);
        check_range(&mut p, "detector.alpha", d.alpha, 1e-6, 1.0);
        check_range(&mut p, "detector.beta", d.beta, 1e-6, 1.0);
        check_range(&mut p, "detector.huber", d.huber, 0.1, 100.0);
        check_range(&mut p, "detector.anomaly-weight", d.anomaly_weight, 0.0, 1.0);
        check_range(&mut p, "detector.rel-floor", d.rel_floor, 0.0, 1.0);
        check_range(&mut p, "detector.abs-floor", d.abs_floor, 1e-30, 1e30);
        check_range(&mut p, "detector.min-abs-deviation", d.min_abs_deviation, 0.0, f64::MAX);
        check_range(&mut p, "detector.min-rel-deviation", d.min_rel_deviation, 0.0, 100.0);
        check_m_of_n(&mut p, "detector.m-of-n", d.m_of_n);
        check_range(&mut p, "detector.risk", d.risk, 1e-300, 0.5);
        check_range(&mut p, "detector.scale-floor", d.scale_floor, 0.0, 100.0);
        check_range(&mut p, "detector.scale-floor-alpha", d.scale_floor_alpha, 1e-6, 1.0);
        let de = &d.density;
        check_range(&mut p, "detector.density.half-life", de.half_life, 1.0, 1e12);
        check_range(&mut p, "detector.density.prior", de.prior, 1e-6, 1e6);
        check_range(&mut p, "detector.density.unseen", de.unseen, 1e-6, 1e6);
        check_range(&mut p, "detector.density.tail", de.tail, 0.0, 1e6);
        check_range(&mut p, "detector.density.residual-discount", de.residual_discount, 0.0, 1e6);
        check_range(&mut p, "detector.fatigue.scale", d.fatigue.scale, 1e-6, 1e12);
        check_range(&mut p, "detector.fatigue.half-life", d.fatigue.half_life, 1.0, 1e12);
        check_range(&mut p, "detector.novelty.half-life", d.novelty.half_life, 1e-3, 1e12);
        check_range(&mut p, "detector.novelty.margin", d.novelty.margin, 0.0, 1e6);
        check_range(&mut p, "detector.burst.half-life", d.burst.half_life, 1.0, 1e9);
        check_range(&mut p, "detector.burst.record", d.burst.record, 1e-3, 1e3);
        let mv = &d.multivariate;
        if mv.horizon.as_millis_i64() < 1000 {
            p.push(format!("detector.multivariate.horizon must be at least 1s, got {}", mv.horizon));
        }
        if !(1..=64).contains(&mv.top) {
            p.push(format!("detector.multivariate.top must be in 1..=64, got {}", mv.top));
        }
        check_range(&mut p, "detector.multivariate.min-share", mv.min_share, 0.0, 1.0);
        if let Err(e) = d.spectral.params().check() {
            p.push(format!("detector.spectral: {e}"));
        }
        check_range(&mut p, "detector.spectral.discount", d.spectral.discount, 0.0, 1e6);
        let se = &d.seasonal;
        if se.periods.len() > crate::detect::seasonal::MAX_PERIODS {
            p.push(format!(
                "detector.seasonal.periods lists {} periods; at most {} are supported",
                se.periods.len(),
                crate::detect::seasonal::MAX_PERIODS
            ));
        }
        for (i, period) in se.periods.iter().enumerate() {
            if period.as_millis_i64() < 1000 {
                p.push(format!("detector.seasonal.periods[{i}] must be at least 1s, got {period}"));
            }
        }
        match &se.bins {
            Bins::Each(b) if b.len() != se.periods.len() => p.push(format!(
                "detector.seasonal.bins has {} entries for {} periods: give one per period, one number for all, \
                 or \"auto\"",
                b.len(),
                se.periods.len()
            )),
            Bins::Rule(rule) if rule != "auto" => p.push(format!(
                "detector.seasonal.bins must be \"auto\", a number or a list of one number per period, got {rule:?}"
            )),
            _ => {}
        }
        for (i, b) in se.bins_per_period().into_iter().enumerate() {
            if !(2..=1024).contains(&b) {
                p.push(format!("detector.seasonal.bins[{i}] must be in 2..=1024, got {b}"));
            }
        }
        check_range(&mut p, "detector.seasonal.rate", se.rate, 1e-6, 1.0);
        check_range(&mut p, "detector.seasonal.min-periods", se.min_periods, 1.0, 1000.0);
        if let Err(e) = parse_timezone(&se.timezone) {
            p.push(format!("detector.seasonal.timezone: {e}"));
        }
        check_range(&mut p, "detector.seasonal.min-gain", se.min_gain, 0.0, 1.0);
        let ls = &d.level_shift;
        check_range(&mut p, "detector.level-shift.drift", ls.drift, 0.0, 100.0);
        check_range(&mut p, "detector.level-shift.threshold", ls.threshold, 0.1, 1e6);
        check_range(&mut p, "detector.level-shift.clip", ls.clip, 0.1, 1000.0);
        check_range(&mut p, "detector.level-shift.persistence", ls.persistence, 0.0, 1.0);
        check_range(&mut p, "detector.level-shift.settle-after", f64::from(ls.settle_after), 0.0, 10_000.0);
        check_range(&mut p, "detector.level-shift.revert-after", f64::from(ls.revert_after), 1.0, 10_000.0);
        let ca = &d.calibration;
        check_range(&mut p, "detector.calibration.quantile", ca.quantile, 0.5, 0.9999);
        check_range(&mut p, "detector.calibration.step", ca.step, 1e-6, 10.0);
        check_range(&mut p, "detector.calibration.memory", ca.memory, 1.0, 1e9);
        if ca.min_peaks == 0 {
            p.push("detector.calibration.min-peaks must be at least 1".into());
        }
        check_range(&mut p, "detector.calibration.max-shape", ca.max_shape, 0.0, 0.95);
        for (i, r) in d.rules.iter().enumerate() {
            let at = format!("detector.rules[{i}]");
            if r.metric.is_empty() {
                p.push(format!("{at}.metric must not be empty"));
            }
            if r.above.is_none() && r.below.is_none() {
                p.push(format!("{at} needs `above` or `below`"));
            }
            for (name, v) in [("above", r.above), ("below", r.below)] {
                if let Some(v) = v
                    && !v.is_finite()
                {
                    p.push(format!("{at}.{name} must be a finite number, got {v}"));
                }
            }
        }
        check_range(&mut p, "detector.feedback.margin", d.feedback.margin, 0.0, 100.0);
        if d.feedback.half_life.0.is_zero() {
            p.push("detector.feedback.half-life must be longer than 0s".into());
        }
        if d.feedback.hold_max.0.is_zero() {
            p.push("detector.feedback.hold-max must be longer than 0s".into());
        }
        if d.learning_pauses.len() > MAX_LEARNING_PAUSES {
            p.push(format!(
                "detector.learning-pauses may have at most {MAX_LEARNING_PAUSES} entries, got {}",
                d.learning_pauses.len()
            ));
        }
        for (i, lp) in d.learning_pauses.iter().enumerate() {
            let at = format!("detector.learning-pauses[{i}]");
            if lp.metric.is_empty() {
                p.push(format!("{at}.metric must not be empty"));
            }
            if let Err(e) = lp.window(&at) {
                p.push(e);
            }
        }
        for (i, o) in d.overrides.iter().enumerate() {
            let at = format!("detector.overrides[{i}]");
            if o.metric.is_empty() {
                p.push(format!("{at}.metric must not be empty"));
            }
            if let Some(v) = o.threshold {
                check_range(&mut p, &format!("{at}.threshold"), v, 0.5, 1000.0);
            }
            if let Some(v) = o.min_abs_deviation {
                check_range(&mut p, &format!("{at}.min-abs-deviation"), v, 0.0, f64::MAX);
            }
            if let Some(v) = o.min_rel_deviation {
                check_range(&mut p, &format!("{at}.min-rel-deviation"), v, 0.0, 100.0);
            }
            if let Some(m) = o.m_of_n {
                check_m_of_n(&mut p, &format!("{at}.m-of-n"), m);
            }
            if let Some(v) = o.min_volume {
                check_range(&mut p, &format!("{at}.min-volume"), v, 0.0, f64::MAX);
            }
            if let Some(v) = o.warmup_points {
                check_range(&mut p, &format!("{at}.warmup-points"), f64::from(v), 0.0, 10_000_000.0);
            }
            if let Some(Err(e)) = o.timezone.as_deref().map(parse_timezone) {
                p.push(format!("{at}.timezone: {e}"));
            }
        }
        let r = &self.rca;
        if r.close_after.0.is_zero() {
            p.push("rca.close-after must be longer than 0s".into());
        }
        if r.max_candidates == 0 {
            p.push("rca.max-candidates must be at least 1".into());
        }
        if r.group_hops == 0 || r.group_hops > 16 {
            p.push(format!(
                "rca.group-hops must be in 1..=16 (call-graph hops between services of one incident), got {}",
                r.group_hops
            ));
        }
        for (i, v) in r.confidence_calibration.iter().enumerate() {
            if !v.is_finite() {
                p.push(format!("rca.confidence-calibration[{i}] must be a finite number, got {v}"));
            }
        }
        for (i, [a, b]) in self.graph.edges.iter().enumerate() {
            if a.is_empty() || b.is_empty() {
                p.push(format!("graph.edges[{i}] must name two services"));
            } else if a == b {
                p.push(format!("graph.edges[{i}] is a self-edge on {a:?}"));
            }
        }
        if self.sinks.is_empty() {
            p.push("sinks must list at least one output".into());
        }
        for (i, s) in self.sinks.iter().enumerate() {
            if s.kind == SinkKind::Kafka && s.topic.as_deref().is_none_or(|t| t.trim().is_empty()) {
                p.push(format!("sinks[{i}].topic is required for kind = \"kafka\""));
            }
            if s.kind != SinkKind::Kafka && s.topic.is_some() {
                p.push(format!("sinks[{i}].topic only applies to kind = \"kafka\""));
            }
            if s.kind == SinkKind::Jsonl && s.path.as_deref().is_none_or(|p| p.trim().is_empty()) {
                p.push(format!(
                    "sinks[{i}].path is required for kind = \"jsonl\" (a file, or \"-\" for standard output)"
                ));
            }
            if s.events.is_empty() {
                p.push(format!("sinks[{i}].events must list \"anomaly\" and/or \"root-cause\""));
            }
        }
        if self.dead_letter.path.trim().is_empty() {
            p.push("dead-letter.path must name a file or \"-\" for standard error".into());
        }
        if p.is_empty() { Ok(()) } else { Err(Error::Config(p)) }
    }

    /// Whether any part of this config talks to Kafka.
    pub fn uses_kafka(&self) -> bool {
        self.source.kind == SourceKind::Kafka
            || self.sinks.iter().any(|s| s.kind == SinkKind::Kafka)
            || !self.dead_letter.topic.is_empty()
    }

    fn validate_kafka(&self, p: &mut Vec<String>) {
        let k = &self.source.kafka;
        if self.uses_kafka() && self.kafka.brokers.trim().is_empty() {
            p.push(
                "kafka.brokers must list the bootstrap servers (\"host:port,…\") when a Kafka source, sink or \
                    dead-letter topic is configured"
                    .into(),
            );
        }
        if self.source.kind == SourceKind::Table {
            let t = &self.source.table;
            if !cfg!(feature = "tables") {
                p.push("source.kind = \"table\" needs a build with the `tables` feature (on by default)".into());
            }
            if self.source.path.trim().is_empty() || self.source.path == "-" {
                p.push("source.path must name a table file for source.kind = \"table\"".into());
            } else if let Err(e) = t.format.resolve(&self.source.path) {
                p.push(e.to_string().trim_start_matches("invalid configuration: ").to_string());
            }
            for (name, column) in
                [("time", &t.time), ("service", &t.service), ("metric", &t.metric), ("value", &t.value)]
            {
                if column.trim().is_empty() {
                    p.push(format!("source.table.{name} must name a column"));
                }
            }
            if !(t.delimiter.len() == 1 && t.delimiter.is_ascii() && t.delimiter != "\"") {
                p.push(format!(
                    "source.table.delimiter must be one ASCII character other than '\"', got {:?}",
                    t.delimiter
                ));
            }
            let columns = t.columns();
            for (i, c) in columns.iter().enumerate() {
                if columns[..i].contains(c) {
                    p.push(format!("source.table: column {c:?} is named twice"));
                }
            }
        }
        if self.source.kind == SourceKind::Kafka {
            if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
                p.push("source.kafka.topics must list at least one topic, none empty".into());
            }
            if k.group_id.trim().is_empty() {
                p.push("source.kafka.group-id must not be empty".into());
            }
            if k.change_topics.iter().any(|t| t.trim().is_empty()) {
                p.push("source.kafka.change-topics must not contain an empty topic name".into());
            }
            for t in k.change_topics.iter().filter(|t| k.topics.contains(t)) {
                p.push(format!(
                    "source.kafka.change-topics lists {t:?}, which is also in source.kafka.topics (a topic holds \
                     either telemetry or change events)"
                ));
            }
            if k.feedback_topics.iter().any(|t| t.trim().is_empty()) {
                p.push("source.kafka.feedback-topics must not contain an empty topic name".into());
            }
            for t in k.feedback_topics.iter().filter(|t| k.topics.contains(t) || k.change_topics.contains(t)) {
                p.push(format!(
                    "source.kafka.feedback-topics lists {t:?}, which is also a telemetry or change topic (a topic \
                     holds one kind of record)"
                ));
            }
        } else {
            if !k.change_topics.is_empty() {
                p.push(
                    "source.kafka.change-topics needs source.kind = \"kafka\" (other sources read changes from \
                     rca.changes)"
                        .into(),
                );
            }
            if !k.feedback_topics.is_empty() {
                p.push(
                    "source.kafka.feedback-topics needs source.kind = \"kafka\" (other sources read feedback from \
                     detector.feedback.file)"
                        .into(),
                );
            }
        }
        if self.source.kind != SourceKind::Kafka && !self.dead_letter.topic.is_empty() {
            p.push(
                "dead-letter.topic needs source.kind = \"kafka\" (other sources dead-letter to dead-letter.path)"
                    .into(),
            );
        }
        if k.commit_interval.0.is_zero() {
            p.push("source.kafka.commit-interval must be longer than 0s".into());
        }
        if k.drain_timeout.0.is_zero() {
            p.push("source.kafka.drain-timeout must be longer than 0s".into());
        }
        // Faultline owns these: committing only what is scored and delivered is the delivery guarantee.
        let owned = ["enable.auto.commit", "enable.auto.offset.store", "bootstrap.servers", "group.id"];
        for (section, props) in
            [("kafka.properties", &self.kafka.properties), ("source.kafka.properties", &k.properties)]
        {
            for key in props.keys().filter(|k| owned.contains(&k.as_str())) {
                p.push(format!(
                    "{section}.\"{key}\" is set by Faultline (use kafka.brokers / source.kafka.group-id; offsets are \
                     committed only after outputs are acknowledged)"
                ));
            }
        }
        for key in self.kafka.producer_properties.keys() {
            if ["enable.idempotence", "acks", "bootstrap.servers"].contains(&key.as_str()) {
                p.push(format!(
                    "kafka.producer-properties.\"{key}\" is set by Faultline (the producer is idempotent with \
                     acks=all)"
                ));
            }
        }
    }

    /// Number of shard workers to run: `engine.shards`, or one per core when 0.
    pub fn shard_count(&self) -> usize {
        if self.engine.shards > 0 {
            self.engine.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

fn check_range(p: &mut Vec<String>, name: &str, v: f64, lo: f64, hi: f64) {
    // Exact, and in scientific notation where the decimals would run on (`1e-300`, not 300 zeros).
    let show = |x: f64| if x != 0.0 && !(1e-6..1e16).contains(&x.abs()) { format!("{x:e}") } else { format!("{x}") };
    let (lo_s, hi_s) = (show(lo), show(hi));
    if v.is_nan() {
        p.push(format!("{name} is NaN; expected a number in [{lo_s}, {hi_s}]"));
    } else if !(lo..=hi).contains(&v) {
        p.push(format!("{name} must be in [{lo_s}, {hi_s}], got {}", show(v)));
    }
}

fn check_m_of_n(p: &mut Vec<String>, name: &str, [m, n]: [u32; 2]) {
    if !(1..=15).contains(&n) || m == 0 || m > n {
        p.push(format!("{name} must be [M, N] with 1 <= M <= N <= 15, got [{m}, {n}]"));
    }
}

/// Deep merge: tables merge key by key, anything else (arrays included) replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(root: &mut toml::Table, path: &[String], value: toml::Value) -> std::result::Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut t = root;
    for p in parents {
        t = match t.entry(p.clone()).or_insert_with(|| toml::Value::Table(Default::default())) {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{p}` is not a section")),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// An environment value as TOML if it parses as a TOML value (number, bool, array, quoted string), else a string.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Glob match where `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) || s.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("*latency*", "latency_p99_ms"));
        assert!(glob_match("error*", "error_rate"));
        assert!(glob_match("*utilization", "cpu_utilization"));
        assert!(!glob_match("*utilization", "utilization_x"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn defaults_load_and_env_overrides_apply() {
        let cfg = Config::default_config().unwrap();
        assert_eq!(cfg.detector.m_of_n, [2, 3]);
        let env = [("FAULTLINE__ENGINE__SHARDS".to_string(), "3".to_string()), ("PATH".into(), "/bin".into())];
        let cfg = Config::from_layers(None, env).unwrap();
        assert_eq!(cfg.engine.shards, 3);
        let env = [("FAULTLINE__DETECTOR__M_OF_N".to_string(), "[3, 4]".to_string())];
        assert_eq!(Config::from_layers(None, env).unwrap().detector.m_of_n, [3, 4]);
    }

    /// A value of the wrong type or an unknown name is reported with the setting's path and where it came from.
    #[test]
    fn a_bad_value_names_its_setting_and_its_source() {
        let err = |user: Option<&str>, env: &[(&str, &str)]| {
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            Config::from_layers(user.map(|u| ("x.toml", u)), env).unwrap_err().to_string()
        };
        let e = err(Some("[engine]\nshards = \"four\"\n"), &[]);
        assert!(e.contains("x.toml: engine.shards: invalid type: string \"four\""), "{e}");
        let e = err(
            Some(
                "[[detector.overrides]]\nmetric = \"a\"\n[[detector.overrides]]\nmetric = \"b\"\ndirection = \"sideways\"\n",
            ),
            &[],
        );
        assert!(e.contains("x.toml: detector.overrides[1].direction: unknown variant `sideways`"), "{e}");
        let e = err(Some("[engine]\nshard = 2\n"), &[]);
        assert!(e.contains("x.toml: engine.shard: unknown field `shard`"), "{e}");
        let e = err(None, &[("FAULTLINE__DETECTOR__M_OF_N", "[2, \"x\"]")]);
        assert!(e.contains("environment variable FAULTLINE__DETECTOR__M_OF_N: detector.m-of-n[1]"), "{e}");
        // From the environment, over a file that is fine: the variable is named.
        let e = err(Some("[engine]\nshards = 2\n"), &[("FAULTLINE__DETECTOR__CALIBRATION__QUANTILE", "high")]);
        assert!(
            e.contains(
                "environment variable FAULTLINE__DETECTOR__CALIBRATION__QUANTILE: detector.calibration.quantile"
            ),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let user =
            "[engine]\nbatch-size = 0\n[detector]\nthreshold = nan\nm-of-n = [4, 3]\n[rca]\nmax-candidates = 0\n";
        let err = Config::from_layers(Some(("bad.toml", user)), []).unwrap_err().to_string();
        for needle in ["engine.batch-size", "detector.threshold is NaN", "detector.m-of-n", "rca.max-candidates"] {
            assert!(err.contains(needle), "{needle} missing from:\n{err}");
        }
    }

    #[test]
    fn backend_is_validated() {
        let cfg = Config::default_config().unwrap();
        assert_eq!(cfg.engine.backend, Backend::Cpu, "the CPU is the default");
        let env = [("FAULTLINE__ENGINE__BACKEND".to_string(), "auto".to_string())];
        assert_eq!(Config::from_layers(None, env).unwrap().engine.backend, Backend::Auto);
        let err = Config::from_layers(Some(("x.toml", "[engine]\nbackend = \"fpga\"\n")), []).unwrap_err().to_string();
        assert!(err.contains("fpga") && err.contains("auto"), "{err}");
        let user = "[engine]\ngpu-batch-size = 0\ngpu-max-wait = \"0s\"\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("engine.gpu-batch-size") && err.contains("engine.gpu-max-wait"), "{err}");
    }

    #[test]
    fn spectral_settings_are_validated() {
        let cfg = Config::default_config().unwrap();
        assert!(!cfg.detector.spectral.enabled, "the spectral channel is opt-in");
        let user = "[detector.spectral]\nenabled = true\nmag-window = 4\ndiscount = nan\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("detector.spectral: mag-window must be odd"), "{err}");
        assert!(err.contains("detector.spectral.discount is NaN"), "{err}");
        let err = Config::from_layers(Some(("x.toml", "[detector.spectral]\nlook = 58\n")), []).unwrap_err();
        assert!(err.to_string().contains("look must be in 1..58"), "{err}");
    }

    #[test]
    fn burst_settings_are_validated() {
        let cfg = Config::default_config().unwrap();
        assert!(cfg.detector.burst.enabled, "the burst channel is on by default");
        let user = "[detector.burst]\nhalf-life = 0.5\nrecord = nan\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("detector.burst.half-life must be in [1, 1000000000], got 0.5"), "{err}");
        assert!(err.contains("detector.burst.record is NaN"), "{err}");
        let off = Config::from_layers(Some(("x.toml", "[detector.burst]\nenabled = false\n")), []).unwrap();
        assert!(!off.detector.burst.enabled);
    }

    /// A bound far from 1 is named in scientific notation, not as a run of 300 zeros.
    #[test]
    fn range_errors_name_tiny_and_huge_bounds_readably() {
        let err = Config::from_layers(Some(("x.toml", "[detector]\nrisk = 0\n")), []).unwrap_err().to_string();
        assert!(err.contains("detector.risk must be in [1e-300, 0.5], got 0"), "{err}");
        let err = Config::from_layers(Some(("x.toml", "[detector]\nrisk = 1e-320\n")), []).unwrap_err().to_string();
        assert!(err.contains("detector.risk must be in [1e-300, 0.5], got 1e-320"), "{err}");
    }

    #[test]
    fn time_zones_are_iana_names_and_overrides_take_their_own() {
        let user = "[detector.seasonal]\ntimezone = \"Europe/Berlin\"\n[[detector.overrides]]\nmetric = \"*\"\n\
                    service = \"shop-us\"\ntimezone = \"America/New_York\"\n";
        let cfg = Config::from_layers(Some(("x.toml", user)), []).unwrap();
        let zone = |service| crate::detect::Profile::resolve(&cfg.detector, &cfg.rca, service, "requests").zone;
        assert_eq!(zone("shop-eu"), Some(chrono_tz::Tz::Europe__Berlin));
        assert_eq!(zone("shop-us"), Some(chrono_tz::Tz::America__New_York));
        assert_eq!(parse_timezone("UTC"), Ok(None), "UTC adds no offset");
        let user = "[detector.seasonal]\ntimezone = \"Europe/Berln\"\n[[detector.overrides]]\nmetric = \"*\"\n\
                    timezone = \"EST5\"\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("detector.seasonal.timezone: unknown time zone \"Europe/Berln\": an IANA name"), "{err}");
        assert!(err.contains("detector.overrides[0].timezone: unknown time zone \"EST5\""), "{err}");
    }

    #[test]
    fn learning_pauses_are_read_and_validated() {
        assert!(Config::default_config().unwrap().detector.learning_pauses.is_empty(), "no pause by default");
        let user = "[[detector.learning-pauses]]\nmetric = \"*\"\nservice = \"checkout\"\n\
                    from = \"2026-01-05T10:00:00Z\"\nuntil = \"2026-01-05 12:00:00\"\n\
                    [[detector.learning-pauses]]\nmetric = \"latency_*\"\n";
        let cfg = Config::from_layers(Some(("x.toml", user)), []).unwrap();
        let lp = &cfg.detector.learning_pauses;
        assert_eq!(lp.len(), 2);
        assert_eq!(lp[0].window("p").unwrap(), (1_767_607_200_000, 1_767_614_400_000));
        assert_eq!(lp[1].window("p").unwrap(), (TimeMs::MIN, TimeMs::MAX), "open at both ends");
        let user = "[[detector.learning-pauses]]\nmetric = \"\"\nfrom = \"soon\"\n\
                    [[detector.learning-pauses]]\nmetric = \"x\"\nfrom = \"2026-01-05T10:00:00Z\"\n\
                    until = \"2026-01-05T09:00:00Z\"\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("detector.learning-pauses[0].metric must not be empty"), "{err}");
        assert!(err.contains("detector.learning-pauses[0].from: ") && err.contains("soon"), "{err}");
        assert!(err.contains("detector.learning-pauses[1]: `from` must be earlier than `until`"), "{err}");
        let user = "[[detector.learning-pauses]]\nmetric = \"*\"\n".repeat(MAX_LEARNING_PAUSES + 1);
        let err = Config::from_layers(Some(("x.toml", &user)), []).unwrap_err().to_string();
        assert!(err.contains("detector.learning-pauses may have at most 64 entries, got 65"), "{err}");
    }

    #[test]
    fn group_hops_and_change_topics_are_validated() {
        let err = Config::from_layers(Some(("x.toml", "[rca]\ngroup-hops = 0\n")), []).unwrap_err().to_string();
        assert!(err.contains("rca.group-hops must be in 1..=16"), "{err}");
        let user = "[source.kafka]\nchange-topics = [\"deploys\"]\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("source.kafka.change-topics needs source.kind = \"kafka\""), "{err}");
        let user = "[source]\nkind = \"kafka\"\n[source.kafka]\ntopics = [\"t\"]\nchange-topics = [\"t\", \"\"]\n\
                    [kafka]\nbrokers = \"b:9092\"\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("\"t\", which is also in source.kafka.topics"), "{err}");
        assert!(err.contains("change-topics must not contain an empty topic name"), "{err}");
    }

    #[test]
    fn feedback_settings_are_read_and_validated() {
        let f = Config::default_config().unwrap().detector.feedback;
        assert_eq!((f.file.as_str(), f.margin, f.half_life.as_millis_i64()), ("", 0.1, 7 * 86_400_000));
        let user = "[detector.feedback]\nmargin = -1.0\nhalf-life = \"0s\"\nhold-max = \"0s\"\n\
                    [source.kafka]\nfeedback-topics = [\"verdicts\"]\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("detector.feedback.margin must be in [0, 100], got -1"), "{err}");
        assert!(err.contains("detector.feedback.half-life must be longer than 0s"), "{err}");
        assert!(err.contains("detector.feedback.hold-max must be longer than 0s"), "{err}");
        assert!(err.contains("source.kafka.feedback-topics needs source.kind = \"kafka\""), "{err}");
        let user = "[source]\nkind = \"kafka\"\n[source.kafka]\ntopics = [\"t\"]\nchange-topics = [\"c\"]\n\
                    feedback-topics = [\"c\", \"\"]\n[kafka]\nbrokers = \"b:9092\"\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("feedback-topics lists \"c\", which is also a telemetry or change topic"), "{err}");
        assert!(err.contains("feedback-topics must not contain an empty topic name"), "{err}");
    }

    #[test]
    fn metrics_listen_is_a_host_and_port_and_warm_up_is_read() {
        let cfg = Config::default_config().unwrap();
        assert_eq!((cfg.metrics.listen.as_str(), cfg.source.kafka.warm_up.0.as_secs()), ("", 0));
        for ok in ["0.0.0.0:9464", "[::1]:9464", "localhost:9464"] {
            let user = format!("[metrics]\nlisten = {ok:?}\n[source.kafka]\nwarm-up = \"7d\"\nwarm-up-records = 10\n");
            let cfg = Config::from_layers(Some(("x.toml", &user)), []).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!((cfg.source.kafka.warm_up.0.as_secs(), cfg.source.kafka.warm_up_records), (7 * 86_400, 10));
        }
        for bad in ["9464", "host:", ":9464", "host:port", "0.0.0.0:70000"] {
            let user = format!("[metrics]\nlisten = {bad:?}\n");
            let err = Config::from_layers(Some(("x.toml", &user)), []).unwrap_err().to_string();
            assert!(err.contains("metrics.listen must be host:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn seasonal_bins_are_one_number_or_one_per_period() {
        let bins = |cfg: Config| cfg.detector.seasonal.bins_per_period();
        assert_eq!(bins(Config::default_config().unwrap()), [96, 84], "a quarter-hour day, a week of 2 hours");
        // "auto" (the default) follows the periods a user sets, with no bins of their own to keep in step.
        let user = "[detector.seasonal]\nperiods = [\"1h\", \"1d\", \"7d\"]\n";
        assert_eq!(bins(Config::from_layers(Some(("x.toml", user)), []).unwrap()), [96, 96, 84]);
        let user = "[detector.seasonal]\nperiods = []\n";
        assert!(bins(Config::from_layers(Some(("x.toml", user)), []).unwrap()).is_empty());
        let env = [("FAULTLINE__DETECTOR__SEASONAL__BINS".to_string(), "24".to_string())];
        assert_eq!(bins(Config::from_layers(None, env).unwrap()), [24, 24]);
        let user = "[detector.seasonal]\nperiods = [\"1h\", \"1d\", \"7d\"]\nbins = [12, 96, 56]\n";
        assert_eq!(bins(Config::from_layers(Some(("x.toml", user)), []).unwrap()), [12, 96, 56]);
        let err = Config::from_layers(Some(("x.toml", "[detector.seasonal]\nbins = [96]\n")), []).unwrap_err();
        assert!(err.to_string().contains("detector.seasonal.bins has 1 entries for 2 periods"), "{err}");
        let err = Config::from_layers(Some(("x.toml", "[detector.seasonal]\nbins = [96, 1]\n")), []).unwrap_err();
        assert!(err.to_string().contains("detector.seasonal.bins[1] must be in 2..=1024, got 1"), "{err}");
        let err = Config::from_layers(Some(("x.toml", "[detector.seasonal]\nbins = \"many\"\n")), []).unwrap_err();
        assert!(err.to_string().contains("detector.seasonal.bins must be \"auto\", a number"), "{err}");
        assert!(err.to_string().contains("got \"many\""), "{err}");
        let err = Config::from_layers(Some(("x.toml", "[detector.seasonal]\nbins = -3\n")), []).unwrap_err();
        assert!(err.to_string().contains("detector.seasonal.bins must be \"auto\", a number"), "{err}");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Config::from_layers(Some(("x.toml", "[detector]\ntreshold = 3\n")), []).unwrap_err().to_string();
        assert!(err.contains("treshold"), "{err}");
    }
}
