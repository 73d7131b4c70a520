//! `faultline demo`: the simulator through the whole engine, and each injected fault matched to the incident the
//! engine reported for it, with the ranked root causes and whether the top one is the injected service.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::clock::fmt_hhmm;
use crate::config::{Config, EventKind, SinkConfig, SinkKind, SourceKind};
use crate::error::Result;
use crate::event::RootCauseReport;
use crate::metrics::RunSummary;
use crate::report::{ReportOptions, ReportSink};
use crate::sim::{InjectedFault, Simulator};
use crate::sink::{CollectSink, Sink, render_report};

/// How long after a fault ends its incident may still be open and be matched to it.
const MATCH_SLACK_MS: i64 = 15 * 60_000;

/// Whether a report's incident overlaps a fault's window (plus the slack for incidents that close late).
fn overlaps(r: &RootCauseReport, f: &InjectedFault) -> bool {
    r.window.start_ms <= f.end_ms + MATCH_SLACK_MS && r.window.end_ms >= f.start_ms
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultOutcome {
    pub fault: InjectedFault,
    pub incident_id: Option<String>,
    /// 1-based rank of the injected service among the candidates, if listed.
    pub rank: Option<u32>,
    pub top1: bool,
    pub top3: bool,
    #[serde(skip)]
    pub report: Option<RootCauseReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoOutcome {
    pub faults: Vec<FaultOutcome>,
    /// Incidents that match no injected fault (false alarms).
    pub unmatched_incidents: usize,
    /// Their final reports.
    #[serde(skip)]
    pub unmatched_reports: Vec<RootCauseReport>,
    pub top1: f64,
    pub top3: f64,
    pub summary: RunSummary,
}

/// Matches each injected fault to the report of the incident that overlaps it most (by anomaly count on ties).
pub fn match_faults(faults: &[InjectedFault], reports: &[RootCauseReport]) -> (Vec<FaultOutcome>, usize) {
    let mut used = vec![false; reports.len()];
    let outcomes = faults
        .iter()
        .map(|f| {
            // With another fault at the same time (the simulator's `concurrent` mode), the fault's incident is the
            // one that includes its service; otherwise the one overlapping it that absorbed the most anomalies.
            let concurrent = faults.iter().any(|g| g.id != f.id && g.start_ms < f.end_ms && f.start_ms < g.end_ms);
            let best = reports.iter().enumerate().filter(|(_, r)| overlaps(r, f)).max_by_key(|(i, r)| {
                let has = concurrent && r.affected_services.contains(&f.service);
                (has, r.anomaly_count, usize::MAX - i)
            });
            let (incident_id, rank, report) = match best {
                Some((i, r)) => {
                    used[i] = true;
                    let rank = r.candidates.iter().find(|c| c.service == f.service).map(|c| c.rank);
                    (Some(r.incident_id.clone()), rank, Some(r.clone()))
                }
                None => (None, None, None),
            };
            FaultOutcome {
                fault: f.clone(),
                incident_id,
                rank,
                top1: rank == Some(1),
                top3: rank.is_some_and(|r| r <= 3),
                report,
            }
        })
        .collect();
    // Reports overlapping a fault window count as that fault's (a split incident is not a false alarm).
    let unmatched = reports.iter().zip(&used).filter(|(r, u)| !**u && !faults.iter().any(|f| overlaps(r, f))).count();
    (outcomes, unmatched)
}

/// Runs the simulator described by `cfg` through the engine. The config's source is forced to the simulator; its
/// sinks run too (plus JSON lines under `out_dir` if given).
///
/// With `report`, also writes the run's HTML report (see [`crate::report`]) to its path.
pub fn run_demo(cfg: &Config, out_dir: Option<&Path>, report: Option<(&Path, &ReportOptions)>) -> Result<DemoOutcome> {
    let mut cfg = cfg.clone();
    cfg.source.kind = SourceKind::Simulator;
    // The demo prints its own report of every incident; a terminal summary sink would repeat it.
    cfg.sinks.retain(|s| s.kind != SinkKind::Summary);
    if let Some(dir) = out_dir {
        for (file, kind) in [("anomalies.jsonl", EventKind::Anomaly), ("root-causes.jsonl", EventKind::RootCause)] {
            cfg.sinks.push(SinkConfig {
                kind: SinkKind::Jsonl,
                path: Some(dir.join(file).display().to_string()),
                topic: None,
                events: vec![kind],
            });
        }
    }
    // Only the simulator's ground truth is needed here; the run builds its own simulator from the same config.
    let faults = Simulator::new(&cfg.simulator)?.faults().to_vec();
    let collect = CollectSink::default();
    let mut extra = vec![Box::new(collect.clone()) as Box<dyn Sink>];
    let for_report = ReportSink::default();
    if report.is_some() {
        extra.push(Box::new(for_report.clone()));
    }
    let summary = crate::app::run_config(&cfg, extra)?;
    if let Some((path, opts)) = report {
        let html = crate::report::build(&cfg, &for_report.take(), Some(&summary), opts)?;
        crate::report::write(path, &html)?;
    }
    let reports = crate::eval::rca::final_versions(collect.take().reports);
    let (outcomes, unmatched) = match_faults(&faults, &reports);
    let unmatched_reports = reports.iter().filter(|r| !faults.iter().any(|f| overlaps(r, f))).cloned().collect();
    let n = outcomes.len().max(1) as f64;
    Ok(DemoOutcome {
        top1: outcomes.iter().filter(|o| o.top1).count() as f64 / n,
        top3: outcomes.iter().filter(|o| o.top3).count() as f64 / n,
        faults: outcomes,
        unmatched_incidents: unmatched,
        unmatched_reports,
        summary,
    })
}

/// The demo's terminal report.
pub fn render_demo(o: &DemoOutcome) -> String {
    let mut s = String::new();
    for f in &o.faults {
        let ft = &f.fault;
        let _ = writeln!(
            s,
            "\n== fault {}: {} in {} at {}-{} ({})",
            ft.id,
            ft.kind.as_str(),
            ft.service,
            fmt_hhmm(ft.start_ms),
            fmt_hhmm(ft.end_ms),
            ft.description
        );
        match &f.report {
            None => {
                let _ = writeln!(s, "   MISSED: no incident was reported for this fault");
            }
            Some(r) => {
                for line in render_report(r).lines() {
                    let _ = writeln!(s, "   {line}");
                }
                if let Some(sug) = &r.suggestion {
                    let _ = writeln!(s, "   suggestion: {sug}");
                }
                let verdict = match f.rank {
                    Some(1) => "HIT: the top candidate is the injected service".to_string(),
                    Some(k) => format!("PARTIAL: the injected service is ranked {k}"),
                    None => "MISS: the injected service is not among the candidates".to_string(),
                };
                let _ = writeln!(s, "   {verdict}");
            }
        }
    }
    if !o.unmatched_reports.is_empty() {
        let _ = writeln!(s, "\n== incidents matching no injected fault (benign spikes, traffic swings):");
        for r in &o.unmatched_reports {
            let top = r.candidates.first().map_or("-", |c| c.service.as_str());
            let _ = writeln!(
                s,
                "   {} {}-{}: {} anomalies, top candidate {top}",
                r.incident_id,
                fmt_hhmm(r.window.start_ms),
                fmt_hhmm(r.window.end_ms),
                r.anomaly_count
            );
        }
    }
    let hits = o.faults.iter().filter(|f| f.top1).count();
    let _ = writeln!(
        s,
        "\n{} faults injected: top-1 {}/{} ({:.0} %), top-3 {:.0} %, missed {}, incidents matching no fault {}",
        o.faults.len(),
        hits,
        o.faults.len(),
        100.0 * o.top1,
        100.0 * o.top3,
        o.faults.iter().filter(|f| f.report.is_none()).count(),
        o.unmatched_incidents
    );
    s
}
