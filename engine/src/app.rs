//! Wires a validated [`Config`] into a running pipeline: source, service graph, sinks and dead letters.

use crate::config::{Config, SourceKind};
use crate::error::Result;
use crate::metrics::RunSummary;
use crate::pipeline;
use crate::rca::ServiceGraph;
use crate::sim::Simulator;
use crate::sink::{Sink, build_sinks};
use crate::source::{DeadLetters, JsonlSource, SimSource, Source};

/// The configured source, and the call graph it implies (the config's edges plus the simulator's topology).
pub fn build_source(cfg: &Config) -> Result<(Box<dyn Source>, ServiceGraph)> {
    let mut edges: Vec<(String, String)> = cfg.graph.edges.iter().map(|[a, b]| (a.clone(), b.clone())).collect();
    let source: Box<dyn Source> = match cfg.source.kind {
        SourceKind::Simulator => {
            let sim = Simulator::new(&cfg.simulator)?;
            edges.extend(sim.topology().edge_names());
            Box::new(SimSource::new(sim))
        }
        SourceKind::Jsonl => Box::new(JsonlSource::open(&cfg.source.path)?),
    };
    Ok((source, ServiceGraph::from_edges(edges)))
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
