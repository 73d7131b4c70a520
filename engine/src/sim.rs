//! TEMPORARY stub of the simulator API (replaced by the real simulator).
#![allow(dead_code)]
use crate::error::Result;
use crate::model::{Batch, SeriesKey, TimeMs};
use crate::units::HumanDuration;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SimConfig {
    pub seed: u64,
    pub services: usize,
    #[serde(default)]
    pub edges: Option<Vec<[String; 2]>>,
    pub interval: HumanDuration,
    pub start: String,
    pub duration: HumanDuration,
    pub fault_free: HumanDuration,
    pub fault_spacing: HumanDuration,
    pub fault_kinds: Vec<FaultKind>,
    pub noise: f64,
    pub benign_spikes: f64,
}
impl SimConfig {
    pub fn validate(&self, _p: &mut Vec<String>) {}
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    LatencyRegression,
    ErrorBurst,
    CpuSaturation,
    MemoryLeak,
    FailingDependency,
    TrafficSurge,
}
impl FaultKind {
    pub fn as_str(self) -> &'static str {
        "x"
    }
}
pub struct Topology {
    pub services: Vec<String>,
    pub edges: Vec<(usize, usize)>,
}
impl Topology {
    pub fn edge_names(&self) -> Vec<(String, String)> {
        vec![]
    }
}
#[derive(Debug, Clone, Serialize)]
pub struct InjectedFault {
    pub id: usize,
    pub kind: FaultKind,
    pub service: String,
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
    pub description: String,
}
pub struct Simulator {
    t: Topology,
    s: Vec<Arc<SeriesKey>>,
    f: Vec<InjectedFault>,
}
impl Simulator {
    pub fn new(_c: &SimConfig) -> Result<Self> {
        Ok(Self { t: Topology { services: vec![], edges: vec![] }, s: vec![], f: vec![] })
    }
    pub fn topology(&self) -> &Topology {
        &self.t
    }
    pub fn faults(&self) -> &[InjectedFault] {
        &self.f
    }
    pub fn series(&self) -> &[Arc<SeriesKey>] {
        &self.s
    }
    pub fn next_tick(&mut self, _out: &mut Batch) -> bool {
        false
    }
}
