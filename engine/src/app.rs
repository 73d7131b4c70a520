//! Wires a validated [`Config`] into a running pipeline: source, service graph, sinks and dead letters.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{Config, SinkKind, SourceKind};
use crate::delivery::AckTracker;
use crate::error::Result;
use crate::kafka::producer::KafkaProducer;
use crate::kafka::source::KafkaSource;
use crate::metrics::RunSummary;
use crate::pipeline;
use crate::rca::{RcaInputs, ServiceGraph, load_changes};
use crate::sim::Simulator;
use crate::sink::{Sink, build_sinks};
use crate::source::{DeadLetters, JsonlSource, SimSource, Source};

/// The configured source, and what root-cause ranking starts with: the call graph (the config's edges plus the
/// simulator's topology) and change events (`rca.changes` plus the simulator's deploys).
pub fn build_source(cfg: &Config) -> Result<(Box<dyn Source>, RcaInputs)> {
    build_source_with(cfg, Arc::new(AtomicBool::new(false)), None)
}

/// As [`build_source`]; a Kafka source, an OTLP/HTTP receiver and standard input stop when `stop` is set, and a
/// Kafka source waits for `dead_letters` on a revoke.
pub fn build_source_with(
    cfg: &Config,
    stop: Arc<AtomicBool>,
    dead_letters: Option<Arc<AckTracker>>,
) -> Result<(Box<dyn Source>, RcaInputs)> {
    let mut edges: Vec<(String, String)> = cfg.graph.edges.iter().map(|[a, b]| (a.clone(), b.clone())).collect();
    let mut changes = if cfg.rca.changes.trim().is_empty() {
        Vec::new()
    } else {
        load_changes(std::path::Path::new(cfg.rca.changes.trim()))?
    };
    let source: Box<dyn Source> = match cfg.source.kind {
        SourceKind::Simulator => {
            let sim = Simulator::new(&cfg.simulator)?;
            edges.extend(sim.topology().edge_names());
            changes.extend(sim.changes().iter().cloned());
            Box::new(SimSource::new(sim))
        }
        SourceKind::Jsonl => Box::new(JsonlSource::open(&cfg.source.path, Arc::clone(&stop))?),
        SourceKind::Kafka => Box::new(KafkaSource::new(&cfg.kafka, &cfg.source.kafka, dead_letters, stop)?),
        SourceKind::OtlpHttp => Box::new(crate::otlp_http::OtlpHttpSource::new(&cfg.source.otlp_http, stop)?),
        #[cfg(feature = "tables")]
        SourceKind::Table => Box::new(crate::table::TableSource::open(&cfg.source.path, &cfg.source.table)?),
        #[cfg(not(feature = "tables"))]
        SourceKind::Table => {
            return Err(crate::Error::config("source.kind = \"table\" needs a build with the `tables` feature"));
        }
    };
    Ok((source, RcaInputs { graph: ServiceGraph::from_edges(edges), changes }))
}

/// Runs the pipeline a config describes, with its configured sinks plus `extra` ones.
pub fn run_config(cfg: &Config, extra: Vec<Box<dyn Sink>>) -> Result<RunSummary> {
    run_config_until(cfg, extra, Arc::new(AtomicBool::new(false)))
}

/// As [`run_config`]; a Kafka source drains, commits and ends once `stop` is set (SIGTERM/SIGINT in `main`), and an
/// OTLP/HTTP receiver or standard input ends there, the points read so far processed and the sinks flushed.
pub fn run_config_until(cfg: &Config, extra: Vec<Box<dyn Sink>>, stop: Arc<AtomicBool>) -> Result<RunSummary> {
    let needs_producer = cfg.sinks.iter().any(|s| s.kind == SinkKind::Kafka) || !cfg.dead_letter.topic.is_empty();
    let producer =
        if needs_producer { Some(KafkaProducer::new(&cfg.kafka, cfg.source.kafka.drain_timeout.0)?) } else { None };
    let mut dead = DeadLetters::open(&cfg.dead_letter.path)?;
    let mut dead_tracker = None;
    if let Some(p) = producer.as_ref().filter(|_| !cfg.dead_letter.topic.is_empty()) {
        dead = dead.with_kafka(Arc::clone(p), &cfg.dead_letter.topic);
        dead_tracker = Some(Arc::clone(p.tracker()));
    }
    let (mut source, graph) = build_source_with(cfg, stop, dead_tracker)?;
    let mut sinks = build_sinks(&cfg.sinks, producer.as_ref())?;
    sinks.extend(extra);
    let summary = pipeline::run(cfg, source.as_mut(), graph, sinks, &mut dead)?;
    dead.flush()?;
    Ok(summary)
}
