//! Wires a validated [`Config`] into a running pipeline: source, service graph, sinks and dead letters.

use crate::config::{Config, SourceKind};
use crate::error::Result;
use crate::metrics::RunSummary;
use crate::pipeline;
use crate::rca::{RcaInputs, ServiceGraph, load_changes};
use crate::sim::Simulator;
use crate::sink::{Sink, build_sinks};
use crate::source::{DeadLetters, JsonlSource, SimSource, Source};

/// The configured source, and what root-cause ranking starts with: the call graph (the config's edges plus the
/// simulator's topology) and change events (`rca.changes` plus the simulator's deploys).
pub fn build_source(cfg: &Config) -> Result<(Box<dyn Source>, RcaInputs)> {
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
        SourceKind::Jsonl => Box::new(JsonlSource::open(&cfg.source.path)?),
    };
    Ok((source, RcaInputs { graph: ServiceGraph::from_edges(edges), changes }))
}

/// Runs the pipeline a config describes, with its configured sinks plus `extra` ones.
pub fn run_config(cfg: &Config, extra: Vec<Box<dyn Sink>>) -> Result<RunSummary> {
    let (mut source, graph) = build_source(cfg)?;
    let mut sinks = build_sinks(&cfg.sinks)?;
    sinks.extend(extra);
    let mut dead = DeadLetters::open(&cfg.dead_letter.path)?;
    let summary = pipeline::run(cfg, source.as_mut(), graph, sinks, &mut dead)?;
    dead.flush()?;
    Ok(summary)
}
