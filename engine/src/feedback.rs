//! Operator feedback: a verdict on one anomaly event that changes the models of its series.
//!
//! An SRE who reads an anomaly event answers with a verdict:
//! - `reject`: the event was a false alarm and what it showed is normal;
//! - `accept`: it is a real anomaly.
//!
//! The verdict comes as a record of a Kafka feedback topic (`source.kafka.feedback-topics`) or a line of a feedback
//! file (`detector.feedback.file`). It carries the event as it was published (or its identifying fields). The
//! detector applies it to the event's series: see [`crate::detect::ShardDetector::add_feedback`] and the README's
//! "Operator feedback" section.
//!
//! Suggestion mode: feedback changes what Faultline reports about a series, and nothing outside Faultline.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::event::{Direction, LevelShift, anomaly_id};
use crate::model::{SeriesId, TimeMs};

/// The schema name a feedback record may carry (`"schema"`); any other value is rejected.
pub const FEEDBACK_SCHEMA: &str = "faultline.feedback.v1";
/// Its JSON Schema document (`faultline schema feedback`), for the alert pipelines that write verdicts.
pub const FEEDBACK_SCHEMA_JSON: &str = include_str!("../schemas/feedback.v1.schema.json");

/// What an operator says of an anomaly event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A real anomaly.
    Accept,
    /// A false alarm: what the event showed is normal for the series.
    Reject,
}

/// One verdict on one anomaly event (a line of a feedback file, or a record of a feedback topic).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// [`FEEDBACK_SCHEMA`] when present.
    #[serde(default)]
    pub schema: Option<String>,
    pub verdict: Verdict,
    /// The event judged.
    pub anomaly: AnomalyRef,
    /// Who gave the verdict, and why (for the log).
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub note: String,
}

/// The anomaly event a verdict is about, by the fields of `faultline.anomaly.v1` it needs. The whole published
/// event may be pasted: its other fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AnomalyRef {
    /// The event's `id`. It must be the id of `series_id` at `time_ms`, so a record assembled from two events is
    /// rejected.
    pub id: String,
    /// 16 hexadecimal digits.
    pub series_id: String,
    pub service: String,
    pub time_ms: TimeMs,
    pub observed: f64,
    pub expected: f64,
    pub direction: Direction,
    /// Only its `level_shift` is read: a level shift's deviation is how far the level moved.
    #[serde(default)]
    pub evidence: Option<EvidenceRef>,
}

/// The part of an event's evidence a verdict reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvidenceRef {
    #[serde(default)]
    pub level_shift: Option<LevelShift>,
}

impl Feedback {
    /// Parses one feedback record from JSON text; the error names the field at fault.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let f: Feedback = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(s) = f.schema.as_deref().filter(|&s| s != FEEDBACK_SCHEMA) {
            return Err(format!("field `schema`: expected {FEEDBACK_SCHEMA:?}, got {s:?}"));
        }
        let a = &f.anomaly;
        if a.service.trim().is_empty() {
            return Err("field `anomaly.service`: must name a service".into());
        }
        let series = parse_series_id(&a.series_id)?;
        crate::clock::check_time(a.time_ms).map_err(|e| format!("field `anomaly.time_ms`: {e}"))?;
        if a.id != anomaly_id(series, a.time_ms) {
            return Err(format!(
                "field `anomaly.id`: {:?} is not the id of series {} at {} (the event's own fields are needed)",
                a.id, a.series_id, a.time_ms
            ));
        }
        if !a.observed.is_finite() {
            return Err("field `anomaly.observed`: must be a finite number".into());
        }
        if !a.expected.is_finite() {
            return Err("field `anomaly.expected`: must be a finite number".into());
        }
        if let Some(ls) = a.evidence.as_ref().and_then(|e| e.level_shift)
            && !(ls.from.is_finite() && ls.to.is_finite())
        {
            return Err("field `anomaly.evidence.level_shift`: `from` and `to` must be finite numbers".into());
        }
        Ok(f)
    }

    /// The judged event's series.
    pub fn series(&self) -> SeriesId {
        parse_series_id(&self.anomaly.series_id).expect("checked by Feedback::parse")
    }

    /// How far the judged event lay from normal: the level's move for a level shift, else observed against expected.
    pub fn deviation(&self) -> f64 {
        let a = &self.anomaly;
        match a.evidence.as_ref().and_then(|e| e.level_shift) {
            Some(ls) => (ls.to - ls.from).abs(),
            None => (a.observed - a.expected).abs(),
        }
    }
}

fn parse_series_id(hex: &str) -> std::result::Result<SeriesId, String> {
    if hex.len() != 16 {
        return Err(format!("field `anomaly.series_id`: expected 16 hexadecimal digits, got {hex:?}"));
    }
    SeriesId::from_str_radix(hex, 16).map_err(|_| format!("field `anomaly.series_id`: {hex:?} is not hexadecimal"))
}

/// Reads a feedback file: one JSON verdict per line (blank lines skipped). The error names the line.
pub fn load_feedback(path: &std::path::Path) -> Result<Vec<Feedback>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // A byte order mark (files saved by some Windows tools) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        out.push(Feedback::parse(line).map_err(|e| Error::decode(format!("{} line {}", path.display(), i + 1), e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verdict: &str, id: &str, extra: &str) -> String {
        format!(
            "{{\"verdict\": \"{verdict}\", \"anomaly\": {{\"id\": \"{id}\", \"series_id\": \"00000000000000ff\", \
             \"service\": \"checkout\", \"time_ms\": 60000, \"observed\": 130.0, \"expected\": 100.0, \
             \"direction\": \"up\"{extra}}}, \"by\": \"alice\"}}"
        )
    }

    /// A feedback file: blank lines skipped, a byte order mark before the first line ignored, a bad line named.
    #[test]
    fn a_feedback_file_is_read_line_by_line() {
        let path = std::env::temp_dir().join(format!("faultline-feedback-{}.jsonl", std::process::id()));
        let id = anomaly_id(0xff, 60_000);
        std::fs::write(&path, format!("\u{feff}{}\n\n{}\n", record("reject", &id, ""), record("accept", &id, "")))
            .unwrap();
        let verdicts: Vec<Verdict> = load_feedback(&path).unwrap().iter().map(|f| f.verdict).collect();
        assert_eq!(verdicts, [Verdict::Reject, Verdict::Accept]);
        std::fs::write(&path, format!("{}\n{{\n", record("reject", &id, ""))).unwrap();
        let e = load_feedback(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("{} line 2", path.display())), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_verdict_names_its_event_and_reads_its_deviation() {
        let id = anomaly_id(0xff, 60_000);
        let f = Feedback::parse(&record("reject", &id, "")).unwrap();
        assert_eq!((f.verdict, f.series(), f.deviation()), (Verdict::Reject, 0xff, 30.0));
        assert_eq!(f.anomaly.direction, Direction::Up);
        // A pasted event's other fields are ignored; a level shift is judged by how far the level moved.
        let shift = r#", "score": 0.9, "evidence": {"z": 9.0, "level_shift": {"from": 100.0, "to": 150.0}}"#;
        let f = Feedback::parse(&record("accept", &id, shift)).unwrap();
        assert_eq!((f.verdict, f.deviation()), (Verdict::Accept, 50.0));
    }

    #[test]
    fn a_bad_verdict_names_the_field() {
        let id = anomaly_id(0xff, 60_000);
        let bad = |text: &str| Feedback::parse(text).unwrap_err();
        assert!(
            bad(&record("maybe", &id, "")).contains("unknown variant `maybe`"),
            "{}",
            bad(&record("maybe", &id, ""))
        );
        let wrong = record("reject", &anomaly_id(0xff, 60_001), "");
        assert!(bad(&wrong).starts_with("field `anomaly.id`"), "{}", bad(&wrong));
        let hex = record("reject", &id, "").replace("00000000000000ff", "xyz");
        assert!(bad(&hex).starts_with("field `anomaly.series_id`"), "{}", bad(&hex));
        let schema = record("reject", &id, "").replacen('{', r#"{"schema": "faultline.feedback.v9", "#, 1);
        assert!(bad(&schema).starts_with("field `schema`"), "{}", bad(&schema));
        let extra = record("reject", &id, "").replacen('{', r#"{"verdit": "reject", "#, 1);
        assert!(bad(&extra).contains("unknown field `verdit`"), "{}", bad(&extra));
    }
}
