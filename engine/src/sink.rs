//! Outputs: JSON lines (file or standard output), a human-readable terminal summary, and an in-memory collector.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};

use crate::clock::fmt_hhmm;
use crate::config::{EventKind, SinkConfig, SinkKind};
use crate::delivery::Ticket;
use crate::error::{Error, Result};
use crate::event::{AnomalyEvent, RootCauseReport};
use crate::kafka::producer::{KafkaProducer, KafkaSink};

/// Receives the engine's events in their final, deterministic order.
pub trait Sink: Send {
    fn anomaly(&mut self, ev: &AnomalyEvent) -> Result<()>;
    fn report(&mut self, r: &RootCauseReport) -> Result<()>;
    /// End of stream: flush.
    fn finish(&mut self) -> Result<()>;
    /// Called after each batch's outputs were written. A sink that delivers asynchronously (Kafka) returns a ticket
    /// that is acknowledged once everything it was given so far is delivered; a synchronous sink returns `None`.
    /// An error here (a record that failed for good) stops the pipeline.
    fn ticket(&mut self) -> Result<Option<Ticket>> {
        Ok(None)
    }
}

/// Builds the sinks a config lists; kind = "kafka" sinks share `producer` (required if there are any).
pub fn build_sinks(cfgs: &[SinkConfig], producer: Option<&Arc<KafkaProducer>>) -> Result<Vec<Box<dyn Sink>>> {
    cfgs.iter()
        .map(|c| -> Result<Box<dyn Sink>> {
            let anomalies = c.events.contains(&EventKind::Anomaly);
            let reports = c.events.contains(&EventKind::RootCause);
            Ok(match c.kind {
                SinkKind::Jsonl => {
                    let path = c.path.as_deref().unwrap_or("-");
                    Box::new(JsonlSink::new(path, open_output(path)?, anomalies, reports))
                }
                SinkKind::Summary => Box::new(SummarySink::new(Box::new(std::io::stderr()), anomalies, reports)),
                SinkKind::Kafka => {
                    let producer = producer
                        .ok_or_else(|| Error::Internal("a Kafka sink was configured without a producer".into()))?;
                    let topic = c.topic.as_deref().unwrap_or_default();
                    Box::new(KafkaSink::new(Arc::clone(producer), topic, anomalies, reports))
                }
            })
        })
        .collect()
}

/// `"-"` is standard output; otherwise a file, its directory created if needed.
pub fn open_output(path: &str) -> Result<Box<dyn Write + Send>> {
    if path == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(Box::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?))
}

/// One JSON object per line: anomaly events and/or root-cause reports. Buffered, and written out after each batch
/// that added lines (one write per batch): a live input's events appear as the batches that found them are done,
/// not when the buffer fills.
pub struct JsonlSink {
    name: String,
    w: BufWriter<Box<dyn Write + Send>>,
    anomalies: bool,
    reports: bool,
    /// Lines are waiting in the buffer.
    unwritten: bool,
}

impl JsonlSink {
    pub fn new(name: &str, w: Box<dyn Write + Send>, anomalies: bool, reports: bool) -> Self {
        Self { name: name.into(), w: BufWriter::with_capacity(1 << 16, w), anomalies, reports, unwritten: false }
    }

    fn line<T: serde::Serialize>(&mut self, v: &T) -> Result<()> {
        self.unwritten = true;
        serde_json::to_writer(&mut self.w, v).map_err(|e| Error::Internal(format!("serialising an event: {e}")))?;
        self.w.write_all(b"\n").map_err(|e| Error::io(&self.name, e))
    }
}

impl Sink for JsonlSink {
    fn anomaly(&mut self, ev: &AnomalyEvent) -> Result<()> {
        if self.anomalies { self.line(&ev.to_wire()) } else { Ok(()) }
    }

    fn report(&mut self, r: &RootCauseReport) -> Result<()> {
        if self.reports { self.line(r) } else { Ok(()) }
    }

    fn finish(&mut self) -> Result<()> {
        self.w.flush().map_err(|e| Error::io(&self.name, e))
    }

    fn ticket(&mut self) -> Result<Option<Ticket>> {
        if std::mem::take(&mut self.unwritten) {
            self.w.flush().map_err(|e| Error::io(&self.name, e))?;
        }
        Ok(None)
    }
}

/// Human-readable: each incident's ranked root causes as it closes, and a count of anomalies per service at the end.
pub struct SummarySink {
    w: Box<dyn Write + Send>,
    anomalies: bool,
    reports: bool,
    per_service: BTreeMap<String, u64>,
}

impl SummarySink {
    pub fn new(w: Box<dyn Write + Send>, anomalies: bool, reports: bool) -> Self {
        Self { w, anomalies, reports, per_service: BTreeMap::new() }
    }
}

/// Renders a report for the terminal.
pub fn render_report(r: &RootCauseReport) -> String {
    let mut s = format!(
        "incident {} v{} {}-{}: {} anomalies across {} services (symptom: {}), confidence {:.2}\n",
        r.incident_id,
        r.report_version,
        fmt_hhmm(r.window.start_ms),
        fmt_hhmm(r.window.end_ms),
        r.anomaly_count,
        r.affected_services.len(),
        r.symptom.as_deref().unwrap_or("-"),
        r.confidence
    );
    for c in &r.candidates {
        s.push_str(&format!("  {}. {:<18} score {:.2}  {}\n", c.rank, c.service, c.score, c.explanation));
    }
    s
}

impl Sink for SummarySink {
    fn anomaly(&mut self, ev: &AnomalyEvent) -> Result<()> {
        if self.anomalies {
            *self.per_service.entry(ev.key.service.to_string()).or_default() += 1;
        }
        Ok(())
    }

    fn report(&mut self, r: &RootCauseReport) -> Result<()> {
        // The terminal shows each incident once, when it closes; the JSON outputs carry every version.
        if self.reports && r.status == "closed" {
            self.w.write_all(render_report(r).as_bytes()).map_err(|e| Error::io("terminal", e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.anomalies && !self.per_service.is_empty() {
            let list: Vec<String> = self.per_service.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(self.w, "anomaly events per service: {}", list.join(", "))
                .map_err(|e| Error::io("terminal", e))?;
        }
        self.w.flush().map_err(|e| Error::io("terminal", e))
    }
}

/// Everything the engine emitted, kept in memory (demo, evaluation, tests).
#[derive(Debug, Default)]
pub struct Collected {
    pub anomalies: Vec<AnomalyEvent>,
    pub reports: Vec<RootCauseReport>,
}

/// A sink that appends to a shared [`Collected`].
#[derive(Clone, Default)]
pub struct CollectSink(pub Arc<Mutex<Collected>>);

impl CollectSink {
    pub fn take(&self) -> Collected {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Sink for CollectSink {
    fn anomaly(&mut self, ev: &AnomalyEvent) -> Result<()> {
        self.0.lock().map_err(|_| Error::Internal("collector lock poisoned".into()))?.anomalies.push(ev.clone());
        Ok(())
    }

    fn report(&mut self, r: &RootCauseReport) -> Result<()> {
        self.0.lock().map_err(|_| Error::Internal("collector lock poisoned".into()))?.reports.push(r.clone());
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A `Write` into shared memory, for tests and for capturing JSON lines in-process.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tests::Buf;

    /// A JSON-lines sink writes a batch's lines out when the batch is done (`ticket`), not when its buffer fills.
    #[test]
    fn a_jsonl_sink_writes_each_batch_out() {
        let out = Buf::default();
        let mut sink = JsonlSink::new("test", Box::new(out.clone()), true, true);
        sink.line(&serde_json::json!({"kind": "anomaly"})).unwrap();
        assert!(out.0.lock().unwrap().is_empty(), "buffered within the batch");
        assert!(sink.ticket().unwrap().is_none());
        assert_eq!(out.0.lock().unwrap().iter().filter(|&&b| b == b'\n').count(), 1, "written at the batch's end");
    }
}
