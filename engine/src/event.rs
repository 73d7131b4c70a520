//! Output events and their versioned JSON wire form: the anomaly event and the root-cause report.
//!
//! The wire structs are the schema: `engine/schemas/*.schema.json` describe them and a test validates every event
//! the engine emits against those files. Field order is fixed, so the same input serialises to the same bytes.
//! Bump [`ANOMALY_SCHEMA`] / [`ROOT_CAUSE_SCHEMA`] on any incompatible change.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::fmt_time;
use crate::config::Role;
use crate::model::{SeriesId, SeriesKey, TimeMs};

pub const ANOMALY_SCHEMA: &str = "faultline.anomaly.v1";
pub const ROOT_CAUSE_SCHEMA: &str = "faultline.root-cause.v1";
/// The JSON Schema documents, embedded so `faultline schema` can print them.
pub const ANOMALY_SCHEMA_JSON: &str = include_str!("../schemas/anomaly.v1.schema.json");
pub const ROOT_CAUSE_SCHEMA_JSON: &str = include_str!("../schemas/root-cause.v1.schema.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }

    pub fn from_score(score: f64) -> Self {
        if score >= 0.999 {
            Severity::Critical
        } else if score >= 0.9 {
            Severity::Major
        } else {
            Severity::Minor
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// Which rung of the cold-start ladder produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Only the configured absolute rules are active (too few points for a learned model).
    ColdStartRule,
    /// The robust level/scale model has warmed up.
    Robust,
    /// The series has a season (found from its data): the model expects level plus the seasonal profile.
    Seasonal,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::ColdStartRule => "cold-start-rule",
            Stage::Robust => "robust",
            Stage::Seasonal => "seasonal",
        }
    }

    /// Whether a learned model (and so a normal band) stands behind the event.
    pub fn learned(self) -> bool {
        self != Stage::ColdStartRule
    }
}

/// A change point found by the level-shift detector: the model was re-baselined from `from` to `to`, so values near
/// `to` are the new normal from this point on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelShift {
    pub from: f64,
    pub to: f64,
}

/// The detector's channels for one point, each as a score in [0, 1) (0.5 at the configured risk), after fatigue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Channels {
    /// Rarity of the value under the series' own history.
    pub value: f64,
    /// Rarity of the residual against the learned baseline (the robust z-score while the series is young).
    pub residual: f64,
    /// The level-shift (CUSUM) statistic, calibrated.
    pub shift: f64,
    /// The burst channel: the recent mean residual past its record range (`None` when the channel is off).
    pub burst: Option<f64>,
    /// The spectral-residual channel: the point's saliency in its window's shape (`None` when the channel is off).
    pub spectral: Option<f64>,
    /// The per-service multivariate score over all the service's metrics, calibrated.
    pub service: f64,
    /// Which residual: `robust-z` (young series), `residual` or `seasonal-residual`.
    pub residual_name: &'static str,
    /// How much the series' recent alarms discounted every channel, in log10 units.
    pub fatigue: f64,
}

/// One metric's part in its service's multivariate score.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricShare {
    pub key: Arc<SeriesKey>,
    /// Its latest standardised residual (signed).
    pub z: f64,
    /// Its share of the service's statistic, in [0, 1].
    pub share: f64,
}

/// A configured bound that a point crossed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RuleHit {
    pub bound: f64,
    pub direction: Direction,
}

/// One anomalous point, as the shard that owns its series found it.
#[derive(Debug, Clone)]
pub struct AnomalyEvent {
    pub key: Arc<SeriesKey>,
    pub role: Role,
    pub time: TimeMs,
    /// Event time of the first anomalous point of the current run (M-of-N window).
    pub started_at: TimeMs,
    pub observed: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    /// Robust z-score against the learned model; 0 while only rules are active.
    pub z: f64,
    pub score: f64,
    pub direction: Direction,
    pub stage: Stage,
    pub model_fired: bool,
    /// What each of the detector's channels made of the point.
    pub channels: Channels,
    /// Set when this point completed a level shift and the model was re-baselined.
    pub level_shift: Option<LevelShift>,
    /// The service's metrics that contribute most to its multivariate score at this point, largest share first.
    pub attribution: Vec<MetricShare>,
    pub rule: Option<RuleHit>,
    /// Anomalous points among the last `window`.
    pub anomalous_in_window: u32,
    pub window: u32,
    pub points_seen: u32,
    /// A learning pause (`detector.learning-pauses`) applied to the point: it was judged against the models as they
    /// were when the pause began, and taught them nothing.
    pub learning_paused: bool,
    /// Operator feedback on the series that bears on this event (see [`crate::feedback`]).
    pub feedback: Option<FeedbackNote>,
}

/// What operator feedback on a series says of one of its events.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeedbackNote {
    /// The deviation an operator rejected as normal (with the margin, decayed to the event's time) that this
    /// event's deviation exceeds; 0 when none applies in its direction.
    pub tolerance: f64,
    /// An operator accepted an anomaly of this series and it is not over: its models learn nothing meanwhile.
    pub learning_held: bool,
}

impl AnomalyEvent {
    pub fn severity(&self) -> Severity {
        Severity::from_score(self.score)
    }

    /// Deterministic id from series id and event time, so consumers can drop duplicates after a restart.
    pub fn id(&self) -> String {
        anomaly_id(self.key.id, self.time)
    }

    /// One human sentence.
    pub fn explanation(&self) -> String {
        let name = self.key.display_name();
        let verb = match self.direction {
            Direction::Up => "rose",
            Direction::Down => "fell",
        };
        // The sentence's numbers at the event's own scale: a model level of 1e-14 on a series whose band is ±0.6 is
        // float dust, and reads as 0.
        let scale = [self.observed, self.expected, self.lower, self.upper].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let at_scale = |x: f64| num(if x.abs() < 1e-4 * scale { 0.0 } else { x });
        let mut s = format!("{name} {verb} to {} (expected {}", at_scale(self.observed), at_scale(self.expected));
        if self.stage.learned() {
            s.push_str(&format!(", normal band {}..{}", at_scale(self.lower), at_scale(self.upper)));
        }
        if self.stage == Stage::Seasonal {
            s.push_str(", seasonal baseline");
        }
        s.push(')');
        if self.model_fired {
            s.push_str(&format!(", {} sigma {}", sigmas(self.z.abs()), if self.z >= 0.0 { "above" } else { "below" }));
        }
        if self.model_fired && self.level_shift.is_none() {
            let c = &self.channels;
            let rare: Vec<&str> = [
                ("value", c.value),
                ("residual", c.residual),
                ("recent mean residual", c.burst.unwrap_or(0.0)),
                ("shape (spectral residual)", c.spectral.unwrap_or(0.0)),
            ]
            .into_iter()
            .filter(|&(_, score)| score >= 0.5)
            .map(|(name, _)| name)
            .collect();
            if !rare.is_empty() {
                let listed = match rare.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                    _ => rare.join(""),
                };
                s.push_str(&format!("; its {listed} rarer than the configured risk for this series"));
            }
        }
        if let Some(shift) = self.level_shift {
            s.push_str(&format!(
                "; level shift from {} to {}: re-baselined, the new level is the new normal",
                num(shift.from),
                num(shift.to)
            ));
        }
        if self.attribution.len() > 1 {
            let parts: Vec<String> =
                self.attribution.iter().map(|m| format!("{} {:.0} %", m.key.metric_name(), 100.0 * m.share)).collect();
            s.push_str(&format!("; of {}'s deviation across its metrics: {}", self.key.service, parts.join(", ")));
        }
        if let Some(r) = self.rule {
            let side = if r.direction == Direction::Up { "above" } else { "below" };
            s.push_str(&format!(
                "{} configured bound {side} {}",
                if self.model_fired { "; crossed the" } else { ", crossing the" },
                num(r.bound)
            ));
        }
        s.push_str(&format!("; anomalous in {} of the last {} points", self.anomalous_in_window, self.window));
        if self.stage == Stage::ColdStartRule {
            s.push_str(&format!(" (cold start: {} points seen, rules only)", self.points_seen));
        }
        if self.learning_paused {
            s.push_str("; learning is paused for this series, so it is judged against the model from before the pause");
        }
        if let Some(f) = self.feedback {
            if f.tolerance > 0.0 {
                s.push_str(&format!(
                    "; it is past the deviation of {} an operator rejected as normal",
                    num(f.tolerance)
                ));
            }
            if f.learning_held {
                s.push_str(
                    "; an operator confirmed an anomaly here, so learning is held until the series is back to normal",
                );
            }
        }
        s.push('.');
        s
    }

    pub fn to_wire(&self) -> AnomalyWire<'_> {
        let mut detectors = Vec::with_capacity(4);
        if self.stage.learned() {
            let c = &self.channels;
            for (name, score) in [("value-rarity", c.value), (c.residual_name, c.residual), ("level-shift", c.shift)] {
                let fired = self.model_fired && score >= 0.5 || name == "level-shift" && self.level_shift.is_some();
                detectors.push(DetectorWire { name, fired, score: round6(score) });
            }
            // The optional channels are listed while they are on.
            for (name, score) in [("burst", c.burst), ("spectral-residual", c.spectral)] {
                if let Some(score) = score {
                    detectors.push(DetectorWire {
                        name,
                        fired: self.model_fired && score >= 0.5,
                        score: round6(score),
                    });
                }
            }
            detectors.push(DetectorWire {
                name: "service-multivariate",
                fired: self.model_fired && c.service >= 0.5,
                score: round6(c.service),
            });
        }
        if let Some(r) = self.rule {
            detectors.push(DetectorWire {
                name: "rule",
                fired: true,
                score: round6(rule_score(self.observed, r.bound)),
            });
        }
        AnomalyWire {
            schema: ANOMALY_SCHEMA,
            kind: "anomaly",
            id: self.id(),
            series_id: format!("{:016x}", self.key.id),
            service: &self.key.service,
            metric: &self.key.metric,
            labels: self.key.labels.iter().map(|(k, v)| (&**k, &**v)).collect(),
            time: fmt_time(self.time),
            time_ms: self.time,
            started_at: fmt_time(self.started_at),
            observed: self.observed,
            expected: round6(self.expected),
            lower: round6(self.lower),
            upper: round6(self.upper),
            score: round6(self.score),
            severity: self.severity(),
            direction: self.direction,
            stage: self.stage,
            evidence: EvidenceWire {
                z: round6(self.z),
                detectors,
                rule_bound: self.rule.map(|r| r.bound),
                level_shift: self.level_shift,
                attribution: self
                    .attribution
                    .iter()
                    .map(|m| ShareWire {
                        metric: m.key.metric_name(),
                        series_id: format!("{:016x}", m.key.id),
                        z: round6(m.z),
                        share: round6(m.share),
                    })
                    .collect(),
                fatigue: round6(self.channels.fatigue),
                anomalous_in_window: self.anomalous_in_window,
                window: self.window,
                points_seen: self.points_seen,
                role: self.role.as_str(),
                learning_paused: self.learning_paused,
                feedback: self.feedback.map(|f| FeedbackNote { tolerance: round6(f.tolerance), ..f }),
            },
            explanation: self.explanation(),
        }
    }
}

/// The id of the anomaly event of series `series` at event time `time` (see [`AnomalyEvent::id`]).
pub fn anomaly_id(series: SeriesId, time: TimeMs) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&series.to_le_bytes());
    b[8..].copy_from_slice(&time.to_le_bytes());
    format!("an-{:016x}", xxhash_rust::xxh3::xxh3_64(&b))
}

/// Score of a rule hit in [0.5, 1): 0.5 at the bound, approaching 1 as the value moves far past it.
pub fn rule_score(observed: f64, bound: f64) -> f64 {
    let rel = ((observed - bound).abs() / bound.abs().max(1e-9)).min(50.0);
    0.5 + 0.5 * (1.0 - (-4.0 * rel).exp())
}

#[derive(Debug, Serialize)]
pub struct AnomalyWire<'a> {
    pub schema: &'static str,
    pub kind: &'static str,
    pub id: String,
    pub series_id: String,
    pub service: &'a str,
    pub metric: &'a str,
    pub labels: BTreeMap<&'a str, &'a str>,
    pub time: String,
    pub time_ms: TimeMs,
    pub started_at: String,
    pub observed: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
    pub score: f64,
    pub severity: Severity,
    pub direction: Direction,
    pub stage: Stage,
    pub evidence: EvidenceWire,
    pub explanation: String,
}

#[derive(Debug, Serialize)]
pub struct EvidenceWire {
    pub z: f64,
    pub detectors: Vec<DetectorWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_bound: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level_shift: Option<LevelShift>,
    /// The service's metrics by their share of its multivariate score (empty at cold start).
    pub attribution: Vec<ShareWire>,
    pub fatigue: f64,
    pub anomalous_in_window: u32,
    pub window: u32,
    pub points_seen: u32,
    pub role: &'static str,
    /// Present (and true) only while a learning pause applies to the series.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub learning_paused: bool,
    /// Present only when operator feedback on the series bears on the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackNote>,
}

#[derive(Debug, Serialize)]
pub struct ShareWire {
    /// `metric{labels}` within the event's service.
    pub metric: String,
    pub series_id: String,
    pub z: f64,
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct DetectorWire {
    pub name: &'static str,
    pub fired: bool,
    pub score: f64,
}

/// A root-cause report for one incident (one version of it).
#[derive(Debug, Clone, Serialize)]
pub struct RootCauseReport {
    pub schema: &'static str,
    pub kind: &'static str,
    pub incident_id: String,
    pub report_version: u32,
    pub status: &'static str,
    pub window: WindowWire,
    pub affected_services: Vec<String>,
    pub anomaly_count: usize,
    pub symptom: Option<String>,
    pub candidates: Vec<CandidateWire>,
    pub confidence: f64,
    pub explanation: String,
    /// A remediation suggestion when the evidence points at a recent change. Never acted on.
    pub suggestion: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowWire {
    pub start: String,
    pub end: String,
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
}

impl WindowWire {
    pub fn new(start_ms: TimeMs, end_ms: TimeMs) -> Self {
        Self { start: fmt_time(start_ms), end: fmt_time(end_ms), start_ms, end_ms }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateWire {
    pub service: String,
    pub rank: u32,
    pub score: f64,
    pub evidence: CandidateEvidence,
    pub explanation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateEvidence {
    pub metrics: Vec<MetricEvidence>,
    pub onset: String,
    pub onset_ms: TimeMs,
    /// Seconds between this candidate's onset and the median onset of the other affected services (negative: earlier).
    pub onset_offset_s: f64,
    /// Affected services whose anomalies this candidate explains through the call graph.
    pub explains: Vec<String>,
    /// Affected services that would explain this candidate's anomalies.
    pub explained_by: Vec<String>,
    /// Its own dependencies that stayed healthy.
    pub healthy_dependencies: Vec<String>,
    /// From this candidate to the symptom, along the direction the fault travels.
    pub path_to_symptom: Vec<String>,
    /// Deploys and configuration changes on this candidate shortly before its onset.
    pub changes: Vec<ChangeWire>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeWire {
    pub time: String,
    pub kind: String,
    pub description: String,
    /// Seconds between the change and the candidate's onset.
    pub before_onset_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricEvidence {
    pub metric: String,
    pub role: &'static str,
    pub direction: Direction,
    pub max_abs_z: f64,
    pub peak_observed: f64,
    pub peak_expected: f64,
    pub first_seen: String,
    pub anomalous_points: u32,
}

/// Rounds a number for the wire, so float noise does not bloat output: six decimals, and six significant digits
/// where that is more (below 0.1), so a metric in small units (a latency of 40 µs in seconds, an error ratio of 1e-7)
/// keeps its expected value and band instead of rounding to 0. Non-finite numbers become 0.
pub fn round6(x: f64) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    let a = x.abs();
    if a >= 0.1 || a == 0.0 {
        return (x * 1e6).round() / 1e6;
    }
    // Decimals for six significant digits; a power of ten up to 1e22 is exact, so the quotient is the double
    // nearest the rounded decimal, and prints as it.
    let decimals = 5 - a.log10().floor() as i32;
    if decimals <= 22 {
        let p = 10f64.powi(decimals);
        (x * p).round() / p
    } else {
        format!("{x:.5e}").parse().unwrap_or(x)
    }
}

/// A number for human text: at least three significant digits, up to three decimals at or above 1, none from 1000;
/// scientific notation below 1e-4 and from 1e15 (`4.2e-7`, `1e30`), trailing zeros trimmed.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        return x.to_string();
    }
    if a == 0.0 {
        return "0".to_owned();
    }
    if !(1e-4..1e15).contains(&a) {
        let s = format!("{x:.2e}");
        let (mantissa, exp) = s.split_once('e').expect("`{:e}` writes an exponent");
        return format!("{}e{exp}", mantissa.trim_end_matches('0').trim_end_matches('.'));
    }
    if a >= 1000.0 {
        return format!("{x:.0}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(3, 6) as usize;
    format!("{x:.decimals$}").trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A count of sigmas for human text: one decimal, scientific notation from a million (a point at a sentinel value
/// on a series that barely moves is 1e30 sigmas out, which 31 digits do not say better).
pub fn sigmas(z: f64) -> String {
    if z.abs() >= 1e6 { num(z) } else { format!("{z:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_the_wire_keep_six_significant_digits_below_a_tenth() {
        for (x, want) in [
            (18.667_572_3, 18.667_572),
            (0.123_456_78, 0.123_457),
            (0.002_073_456, 0.002_073_46),
            (4.123_456_7e-5, 4.123_46e-5),
            (1e-9, 1e-9),
            (-2.5e-12, -2.5e-12),
            (1.234_567_89e-20, 1.234_57e-20),
            (1.234_567_89e-30, 1.234_57e-30),
            (0.0, 0.0),
            (1e30, 1e30),
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
        ] {
            assert_eq!(round6(x), want, "{x}");
        }
        // The wire prints the rounded decimal, not a neighbour of it.
        assert_eq!(serde_json::to_string(&round6(0.000_123_456_789)).unwrap(), "0.000123457");
        assert_eq!(serde_json::to_string(&round6(4.123_456_7e-19)).unwrap(), "4.12346e-19");
    }

    #[test]
    fn numbers_for_people_keep_three_significant_digits_at_any_scale() {
        for (x, want) in [
            (60.547_250_474, "60.547"),
            (18.667_572, "18.668"),
            (0.274_1, "0.274"),
            (0.5, "0.5"),
            (0.002_073_4, "0.00207"),
            (0.020_734, "0.0207"),
            (0.000_123_4, "0.000123"),
            (4.2e-5, "4.2e-5"),
            (1e-9, "1e-9"),
            (-1.234e-7, "-1.23e-7"),
            (1234.6, "1235"),
            (4_294_967_295.0, "4294967295"),
            (1e30, "1e30"),
            (-0.000_1, "-0.0001"),
            (0.0, "0"),
            (-0.0, "0"),
            (-0.000_000_4, "-4e-7"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(num(x), want, "{x}");
        }
        assert_eq!(sigmas(26.384_504), "26.4");
        assert_eq!(sigmas(-3.0), "-3.0");
        assert_eq!(sigmas(1.469_948_9e30), "1.47e30");
    }
}
