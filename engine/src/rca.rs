//! Incidents and root-cause ranking across services.
//!
//! Anomaly events arrive in event-time order. Several incidents can be open at once. An anomaly joins an open
//! incident when it comes within `rca.incident-gap` of that incident's last anomaly *and* its service is near one of
//! the incident's services: the same service, or within `rca.group-hops` call-graph hops of it (configured and learned
//! edges, followed in either direction). Two services the graph knows nothing about are grouped by time alone. An
//! anomaly near no open incident opens a new one, so simultaneous faults in unrelated parts of the graph become
//! separate incidents, each with its own root cause. An incident closes when the event-time watermark passes its
//! last anomaly by `rca.close-after`; then its report is ranked and emitted.
//!
//! Ranking reasons over the call graph. A service's failure (latency, errors, saturation) travels from callee to
//! callers; a traffic increase travels from caller to callees. Service A *explains* service B when A sits where B's
//! symptoms could come from (a dependency of B for failures, an upstream caller for traffic), A's anomaly began no
//! later than B's (within `rca.onset-tolerance`) and lasted at least half as long. A root cause is explained by no one
//! and explains many; ties go to the earlier onset, then persistence and severity.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::clock::{fmt_hhmm, fmt_time};
use crate::config::{RcaConfig, Role};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{
    AnomalyEvent, CandidateEvidence, CandidateWire, ChangeWire, Direction, MetricEvidence, ROOT_CAUSE_SCHEMA,
    RootCauseReport, WindowWire, num, round6, sigmas,
};
use crate::model::TimeMs;

/// Longest call-graph path (in hops) through which one service is taken to explain another.
const MAX_HOPS: usize = 4;

/// A directed call graph: an edge `caller -> callee`. Edges come from configuration (permanent) or are learned from
/// telemetry ([`ServiceGraph::observe`]) and age out when not seen for a while ([`ServiceGraph::age`]).
#[derive(Debug, Clone, Default)]
pub struct ServiceGraph {
    names: Vec<Arc<str>>,
    index: BTreeMap<Arc<str>, usize>,
    callees: Vec<Vec<usize>>,
    callers: Vec<Vec<usize>>,
    /// Learned edges (not configured ones) and the event time they were last seen.
    learned: BTreeMap<(usize, usize), TimeMs>,
}

impl ServiceGraph {
    pub fn from_edges<S: AsRef<str>>(edges: impl IntoIterator<Item = (S, S)>) -> Self {
        let mut g = Self::default();
        for (a, b) in edges {
            let (a, b) = (g.intern(a.as_ref()), g.intern(b.as_ref()));
            if a != b && !g.callees[a].contains(&b) {
                g.callees[a].push(b);
                g.callers[b].push(a);
            }
        }
        g
    }

    /// Records a caller -> callee edge seen in telemetry at `time`; adds it if new. Configured edges stay permanent.
    pub fn observe(&mut self, caller: &str, callee: &str, time: TimeMs) {
        let (a, b) = (self.intern(caller), self.intern(callee));
        if a == b {
            return;
        }
        if !self.callees[a].contains(&b) {
            self.callees[a].push(b);
            self.callers[b].push(a);
        } else if !self.learned.contains_key(&(a, b)) {
            return; // configured
        }
        let t = self.learned.entry((a, b)).or_insert(time);
        *t = (*t).max(time);
    }

    /// Removes learned edges not seen for `ttl` before `now`; returns how many went.
    pub fn age(&mut self, now: TimeMs, ttl: TimeMs) -> usize {
        let stale: Vec<(usize, usize)> =
            self.learned.iter().filter(|(_, t)| **t + ttl < now).map(|(e, _)| *e).collect();
        for (a, b) in &stale {
            self.learned.remove(&(*a, *b));
            self.callees[*a].retain(|x| x != b);
            self.callers[*b].retain(|x| x != a);
        }
        stale.len()
    }

    /// Edges as `(caller, callee)` names.
    pub fn edges(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (a, cs) in self.callees.iter().enumerate() {
            for &b in cs {
                out.push((self.names[a].to_string(), self.names[b].to_string()));
            }
        }
        out
    }

    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let n: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&n));
        self.index.insert(n, self.names.len() - 1);
        self.callees.push(Vec::new());
        self.callers.push(Vec::new());
        self.names.len() - 1
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn callees_of(&self, i: usize) -> &[usize] {
        &self.callees[i]
    }

    /// Whether the graph knows anything about a service: it has at least one edge (a learned edge that aged out
    /// leaves its services unknown again).
    pub fn knows(&self, name: &str) -> bool {
        self.id(name).is_some_and(|i| !self.callees[i].is_empty() || !self.callers[i].is_empty())
    }

    /// Every node within `hops` edges of `from`, following edges in either direction, with its distance (`from`
    /// itself at 0).
    pub fn neighbourhood(&self, from: usize, hops: usize) -> BTreeMap<usize, usize> {
        let mut dist = BTreeMap::from([(from, 0)]);
        let mut frontier = vec![from];
        for d in 1..=hops {
            let mut next = Vec::new();
            for &u in &frontier {
                for &v in self.callees[u].iter().chain(&self.callers[u]) {
                    if let std::collections::btree_map::Entry::Vacant(e) = dist.entry(v) {
                        e.insert(d);
                        next.push(v);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        dist
    }

    /// Shortest path from `from` to `to` following edges forwards (`down = true`, caller to callee) or backwards,
    /// at most `MAX_HOPS` long.
    pub fn path(&self, from: usize, to: usize, down: bool) -> Option<Vec<usize>> {
        self.path_via(from, to, down, |_| true)
    }

    /// Every node reachable downstream (caller to callee) from `from` within `MAX_HOPS`, through intermediate nodes
    /// that satisfy `via` (the end nodes need not). Excludes `from` unless a cycle returns to it.
    pub fn reachable_down(&self, from: usize, via: impl Fn(usize) -> bool) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut frontier = vec![from];
        for _ in 0..MAX_HOPS {
            let mut next = Vec::new();
            for &u in &frontier {
                for &v in &self.callees[u] {
                    if seen.insert(v) && via(v) {
                        next.push(v);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        seen
    }

    /// Like [`ServiceGraph::path`], but every intermediate node must satisfy `via`.
    pub fn path_via(&self, from: usize, to: usize, down: bool, via: impl Fn(usize) -> bool) -> Option<Vec<usize>> {
        let adj = if down { &self.callees } else { &self.callers };
        let mut prev = vec![usize::MAX; self.len()];
        let mut depth = vec![0usize; self.len()];
        let mut q = VecDeque::from([from]);
        prev[from] = from;
        while let Some(u) = q.pop_front() {
            if u == to {
                let mut path = vec![to];
                let mut v = to;
                while v != from {
                    v = prev[v];
                    path.push(v);
                }
                path.reverse();
                return Some(path);
            }
            if depth[u] == MAX_HOPS {
                continue;
            }
            for &v in &adj[u] {
                if prev[v] == usize::MAX && (v == to || via(v)) {
                    prev[v] = u;
                    depth[v] = depth[u] + 1;
                    q.push_back(v);
                }
            }
        }
        None
    }
}

#[derive(Debug)]
struct Incident {
    /// Fixed when the incident opens, so every version of its report carries the same id.
    id: String,
    start: TimeMs,
    last: TimeMs,
    /// Per-service summaries, updated as anomalies arrive: a ranking costs O(services²), not O(anomalies).
    suspects: BTreeMap<Arc<str>, Suspect>,
    /// Distinct anomaly times, for the incident's time resolution.
    times: BTreeSet<TimeMs>,
    /// Anomaly events absorbed.
    count: usize,
    /// Versions emitted so far, and the event time of the last one.
    versions: u32,
    reported_at: TimeMs,
    /// An update due at this event time, made once the anomalies of that time have all been taken (see
    /// [`IncidentTracker::ingest`]).
    due: Option<TimeMs>,
}

impl Incident {
    fn open(ev: &AnomalyEvent, graph: &ServiceGraph) -> Self {
        let mut b = ev.id().into_bytes();
        b.extend_from_slice(&ev.started_at.to_le_bytes());
        let mut inc = Incident {
            id: format!("inc-{:016x}", xxhash_rust::xxh3::xxh3_64(&b)),
            start: ev.started_at,
            last: ev.time,
            suspects: BTreeMap::new(),
            times: BTreeSet::new(),
            count: 0,
            versions: 0,
            reported_at: ev.time,
            due: None,
        };
        inc.add(ev, graph);
        inc
    }

    fn add(&mut self, ev: &AnomalyEvent, graph: &ServiceGraph) {
        self.start = self.start.min(ev.started_at);
        self.last = self.last.max(ev.time);
        self.count += 1;
        self.times.insert(ev.time);
        let service = &ev.key.service;
        let sus = self.suspects.entry(Arc::clone(service)).or_insert_with(|| Suspect {
            name: Arc::clone(service),
            node: graph.id(service),
            onset: ev.started_at,
            last: ev.time,
            points: 0,
            max_z: 0.0,
            max_score: 0.0,
            failure: false,
            traffic_up_onset: None,
            metrics: BTreeMap::new(),
        });
        sus.onset = sus.onset.min(ev.started_at);
        sus.last = sus.last.max(ev.time);
        sus.points += 1;
        sus.max_z = sus.max_z.max(ev.z.abs());
        sus.max_score = sus.max_score.max(ev.score);
        sus.failure |= ev.role.is_failure();
        if ev.role == Role::Traffic && ev.direction == Direction::Up {
            sus.traffic_up_onset = Some(sus.traffic_up_onset.map_or(ev.started_at, |t| t.min(ev.started_at)));
        }
        let m = sus.metrics.entry(Arc::clone(&ev.key.metric)).or_insert(MetricAcc {
            role: ev.role,
            direction: ev.direction,
            max_abs_z: 0.0,
            peak_observed: ev.observed,
            peak_expected: ev.expected,
            first: ev.started_at,
            points: 0,
        });
        m.points += 1;
        m.first = m.first.min(ev.started_at);
        if ev.z.abs() >= m.max_abs_z {
            m.max_abs_z = ev.z.abs();
            m.peak_observed = ev.observed;
            m.peak_expected = ev.expected;
            m.direction = ev.direction;
        }
    }
}

/// A deploy or configuration change, joined with incidents by service and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEvent {
    /// Event time, Unix milliseconds (in files: RFC 3339 text or integer milliseconds).
    #[serde(deserialize_with = "de_time")]
    pub time: TimeMs,
    pub service: String,
    /// e.g. `deploy`, `config`, `feature-flag`.
    pub kind: String,
    pub description: String,
    /// Pause the learning of this service's series (those whose metric matches) from `time` until `until`: a
    /// maintenance or a load test announced where deploys are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_pause: Option<ChangePause>,
}

/// The learning pause a change event may carry (see [`ChangeEvent::learning_pause`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePause {
    /// Metric glob (`*` for every series of the service, the default).
    #[serde(default = "every_metric")]
    pub metric: String,
    /// End of the pause, exclusive (RFC 3339 text or milliseconds); it starts at the change's `time`.
    #[serde(deserialize_with = "de_time")]
    pub until: TimeMs,
}

fn every_metric() -> String {
    "*".into()
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<TimeMs, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| serde::de::Error::custom("time: not an integer")),
        serde_json::Value::String(s) => crate::clock::parse_time(&s).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("time: expected RFC 3339 text or milliseconds, got {other}"))),
    }
}

impl ChangeEvent {
    /// Parses one change event from JSON text (a line of a changes file, or a record of a change topic); the error
    /// names the field at fault.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let c: ChangeEvent = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if c.service.trim().is_empty() {
            return Err("field `service`: must name a service".into());
        }
        crate::clock::check_time(c.time).map_err(|e| format!("field `time`: {e}"))?;
        if c.kind.trim().is_empty() {
            return Err("field `kind`: must not be empty (e.g. \"deploy\", \"config\")".into());
        }
        if let Some(p) = &c.learning_pause {
            crate::clock::check_time(p.until).map_err(|e| format!("field `learning_pause.until`: {e}"))?;
            if p.until <= c.time {
                return Err("field `learning_pause.until`: must be later than the change's `time`".into());
            }
            if p.metric.trim().is_empty() {
                return Err("field `learning_pause.metric`: must not be empty (\"*\" for every metric)".into());
            }
        }
        Ok(c)
    }
}

/// Reads change events, one JSON object per line (`{"time", "service", "kind", "description"}`).
pub fn load_changes(path: &std::path::Path) -> Result<Vec<ChangeEvent>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // A byte order mark (files saved by some Windows tools) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let c = ChangeEvent::parse(line).map_err(|e| Error::decode(format!("{} line {}", path.display(), i + 1), e))?;
        out.push(c);
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.service.cmp(&b.service)));
    Ok(out)
}

/// A caller -> callee edge seen in telemetry (a point of the `rca.graph-metric` series with `client` and `server`
/// labels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeSeen {
    pub time: TimeMs,
    pub caller: Arc<str>,
    pub callee: Arc<str>,
}

/// What the incident tracker starts with: the call graph and known change events.
#[derive(Debug, Clone, Default)]
pub struct RcaInputs {
    pub graph: ServiceGraph,
    pub changes: Vec<ChangeEvent>,
}

impl From<ServiceGraph> for RcaInputs {
    fn from(graph: ServiceGraph) -> Self {
        Self { graph, changes: Vec::new() }
    }
}

/// Groups anomalies into incidents by time and call-graph proximity (see the module docs); while an incident is
/// open, a new version of its report every `update-interval` of event time when new evidence arrived; the final
/// version when it closes.
pub struct IncidentTracker {
    cfg: RcaConfig,
    graph: ServiceGraph,
    changes: Vec<ChangeEvent>,
    /// Open incidents, in the order they opened.
    open: Vec<Incident>,
    pub dropped_small: u64,
    /// Wall time of each ranking (one report version), in µs.
    pub update_cost: hdrhistogram::Histogram<u64>,
}

impl IncidentTracker {
    pub fn new(cfg: &RcaConfig, inputs: impl Into<RcaInputs>) -> Self {
        let RcaInputs { graph, mut changes } = inputs.into();
        changes.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.service.cmp(&b.service)));
        Self {
            cfg: cfg.clone(),
            graph,
            changes,
            open: Vec::new(),
            dropped_small: 0,
            update_cost: crate::metrics::latency_histogram(),
        }
    }

    pub fn graph(&self) -> &ServiceGraph {
        &self.graph
    }

    /// Incidents open now.
    pub fn open_incidents(&self) -> usize {
        self.open.len()
    }

    /// Applies call-graph edges learned from telemetry, then ages out learned edges older than `rca.edge-ttl`.
    pub fn learn_edges(&mut self, edges: &[EdgeSeen], watermark: TimeMs) {
        for e in edges {
            self.graph.observe(&e.caller, &e.callee, e.time);
        }
        self.graph.age(watermark, self.cfg.edge_ttl.as_millis_i64());
    }

    /// Adds change events that arrived while running (e.g. from a Kafka topic). They are joined exactly like the
    /// ones known at the start: a report made at event time `t` sees the changes with `time <= t` known by then.
    /// A change read twice (at-least-once delivery, e.g. after a rebalance) is kept once.
    pub fn add_changes(&mut self, new: impl IntoIterator<Item = ChangeEvent>) {
        for c in new {
            let at = self.changes.partition_point(|x| (x.time, &x.service) <= (c.time, &c.service));
            let same_key = self.changes[..at].iter().rev().take_while(|x| x.time == c.time && x.service == c.service);
            if !same_key.clone().any(|x| *x == c) {
                self.changes.insert(at, c);
            }
        }
    }

    /// Takes one anomaly (in event-time order). Returns the updates that were due before its time (below), then the
    /// final reports of incidents it closed (those it came more than `incident-gap` after).
    ///
    /// An anomaly that joins an incident `update-interval` of event time or more after that incident's last report
    /// makes an update due at its time; the update is made once an anomaly (or, in [`IncidentTracker::advance`], the
    /// watermark) is past that time, so it holds every anomaly of that time, however the input was batched: the
    /// anomalies of one minute from many series may be split across batches (a Kafka consumer's batches end where
    /// the records waiting end). Updates depend only on the anomalies' event times.
    pub fn ingest(&mut self, ev: &AnomalyEvent) -> Vec<RootCauseReport> {
        let gap = self.cfg.incident_gap.as_millis_i64();
        let mut out = self.due_before(ev.time);
        // Incidents this anomaly comes too late for can absorb nothing more.
        let mut i = 0;
        while i < self.open.len() {
            if ev.time > self.open[i].last + gap {
                let inc = self.open.remove(i);
                out.extend(self.close(inc));
            } else {
                i += 1;
            }
        }
        let at = match self.join(&ev.key.service) {
            Some(i) => {
                self.open[i].add(ev, &self.graph);
                i
            }
            None => {
                self.open.push(Incident::open(ev, &self.graph));
                self.open.len() - 1
            }
        };
        let every = self.cfg.update_interval.as_millis_i64();
        let inc = &mut self.open[at];
        if every > 0 && inc.due.is_none() && inc.count >= self.cfg.min_anomalies && ev.time >= inc.reported_at + every {
            inc.due = Some(ev.time);
        }
        out
    }

    /// Makes the updates due at event times before `t` (in the order the incidents opened).
    fn due_before(&mut self, t: TimeMs) -> Vec<RootCauseReport> {
        let mut out = Vec::new();
        for i in 0..self.open.len() {
            if let Some(at) = self.open[i].due.filter(|&at| at < t) {
                self.open[i].due = None;
                out.push(self.report(i, "open", at));
            }
        }
        out
    }

    /// The open incident an anomaly of `service` joins, if any: among the incidents with a service near it (the
    /// same service; within `group-hops` in the graph; or, when the graph knows neither, any), the nearest, then
    /// the most recently active, then the earliest opened.
    fn join(&self, service: &str) -> Option<usize> {
        let hops = self.cfg.group_hops;
        let known = self.graph.knows(service);
        let near = if known { self.graph.id(service).map(|n| self.graph.neighbourhood(n, hops)) } else { None };
        let distance = |inc: &Incident| -> Option<usize> {
            if inc.suspects.contains_key(service) {
                return Some(0);
            }
            inc.suspects
                .keys()
                .filter_map(|other| match &near {
                    Some(near) => self.graph.id(other).and_then(|o| near.get(&o).copied()),
                    // Neither service is in the graph: time alone groups them (the graph cannot tell).
                    None => (!self.graph.knows(other)).then_some(hops + 1),
                })
                .min()
        };
        self.open
            .iter()
            .enumerate()
            .filter_map(|(i, inc)| distance(inc).map(|d| (d, std::cmp::Reverse(inc.last), i)))
            .min()
            .map(|(_, _, i)| i)
    }

    /// At a batch boundary: makes the updates due before the watermark (every point up to it has been scored), then
    /// closes the open incidents the watermark has passed by `close-after` since their last anomaly (this decides
    /// only when the final report appears, not what it says).
    pub fn advance(&mut self, watermark: TimeMs) -> Vec<RootCauseReport> {
        let after = self.cfg.close_after.as_millis_i64();
        let mut out = self.due_before(watermark);
        let mut i = 0;
        while i < self.open.len() {
            if watermark >= self.open[i].last + after {
                let inc = self.open.remove(i);
                out.extend(self.close(inc));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Closes whatever is open (end of input).
    pub fn finish(&mut self) -> Vec<RootCauseReport> {
        let mut out = self.due_before(TimeMs::MAX);
        let open = std::mem::take(&mut self.open);
        out.extend(open.into_iter().filter_map(|inc| self.close(inc)));
        out
    }

    fn close(&mut self, mut inc: Incident) -> Option<RootCauseReport> {
        if inc.count < self.cfg.min_anomalies {
            self.dropped_small += 1;
            return None;
        }
        let last = inc.last;
        Some(self.version(&mut inc, "closed", last))
    }

    fn report(&mut self, i: usize, status: &'static str, at: TimeMs) -> RootCauseReport {
        let mut inc = self.open.swap_remove(i);
        let r = self.version(&mut inc, status, at);
        // Back in its place: the order of `open` is the order incidents opened.
        self.open.push(inc);
        let last = self.open.len() - 1;
        self.open.swap(i, last);
        r
    }

    /// Ranks an incident (not in `open` while it is ranked) as its next report version, made at event time `at`.
    fn version(&mut self, inc: &mut Incident, status: &'static str, at: TimeMs) -> RootCauseReport {
        let t = crate::clock::now();
        // Only changes already known at this event time are joined: the same input gives the same reports.
        let known = self.changes.partition_point(|c| c.time <= at);
        let mut r = rank(&self.cfg, &self.graph, inc, None, &self.changes[..known], &BTreeSet::new());
        inc.versions += 1;
        inc.reported_at = at;
        r.report_version = inc.versions;
        r.status = status;
        let _ = self.update_cost.record(crate::clock::elapsed_ns(t) / 1000);
        r
    }
}

/// Per-service summary of an incident.
#[derive(Debug, Clone)]
struct Suspect {
    name: Arc<str>,
    node: Option<usize>,
    onset: TimeMs,
    last: TimeMs,
    points: u32,
    max_z: f64,
    max_score: f64,
    failure: bool,
    traffic_up_onset: Option<TimeMs>,
    metrics: BTreeMap<Arc<str>, MetricAcc>,
}

#[derive(Debug, Clone)]
struct MetricAcc {
    role: Role,
    direction: Direction,
    max_abs_z: f64,
    peak_observed: f64,
    peak_expected: f64,
    first: TimeMs,
    points: u32,
}

/// Ranks a set of anomaly events as one incident: a focused investigation ("why did `symptom` degrade?"). With
/// `symptom` set, it is taken as the symptom instead of being inferred. `None` if there are no events.
pub fn rank_events<'a>(
    cfg: &RcaConfig,
    graph: &ServiceGraph,
    events: impl IntoIterator<Item = &'a AnomalyEvent>,
    symptom: Option<&str>,
) -> Option<RootCauseReport> {
    let events: Vec<&AnomalyEvent> = events.into_iter().collect();
    let mut inc: Option<Incident> = None;
    for ev in &events {
        match &mut inc {
            Some(i) => i.add(ev, graph),
            None => inc = Some(Incident::open(ev, graph)),
        }
    }
    let steady = symptom.map(|s| steady_services(&events, s)).unwrap_or_default();
    inc.map(|i| rank(cfg, graph, &i, symptom, &[], &steady))
}

/// Steady conditions in a focused investigation: services whose anomaly began first, alone or with a minority of
/// the others, before the named symptom's, and whose deviation did not grow when the symptom's began (peak |z| after
/// the symptom's onset below 1.5 × the peak up to it). That is a condition that was there before (a level shift, a
/// change of regime in a datastore) rather than the change that degraded the symptom: it explains no one and its
/// score is halved. When most services began together, nothing singles one out and no one is steady. Only a
/// focused investigation names its symptom, so only it uses this; the incident tracker does not.
fn steady_services(events: &[&AnomalyEvent], symptom: &str) -> BTreeSet<Arc<str>> {
    let Some(onset) = events.iter().filter(|e| &*e.key.service == symptom).map(|e| e.started_at).min() else {
        return BTreeSet::new();
    };
    // Per service: its onset, peak |z| up to the symptom's onset, and after it.
    let mut peak: BTreeMap<&Arc<str>, (TimeMs, f64, f64)> = BTreeMap::new();
    for e in events {
        let p = peak.entry(&e.key.service).or_insert((e.started_at, 0.0, 0.0));
        p.0 = p.0.min(e.started_at);
        if e.time <= onset {
            p.1 = p.1.max(e.z.abs());
        } else {
            p.2 = p.2.max(e.z.abs());
        }
    }
    let first = peak.values().map(|p| p.0).min().unwrap_or(onset);
    // When most services began together there is nothing to tell them apart by: no one is singled out.
    if 2 * peak.values().filter(|p| p.0 == first).count() > peak.len() {
        return BTreeSet::new();
    }
    peak.into_iter()
        .filter(|(s, (start, before, after))| {
            &***s != symptom && *start == first && *start < onset && *before > 0.0 && *after < 1.5 * before
        })
        .map(|(s, _)| Arc::clone(s))
        .collect()
}

fn rank(
    cfg: &RcaConfig,
    graph: &ServiceGraph,
    inc: &Incident,
    symptom_hint: Option<&str>,
    changes: &[ChangeEvent],
    steady: &BTreeSet<Arc<str>>,
) -> RootCauseReport {
    let sus: Vec<Suspect> = inc.suspects.values().cloned().collect();
    let n = sus.len();
    // The incident's time resolution: the smallest gap between distinct anomaly times (one sampling interval).
    let resolution = {
        let t: Vec<TimeMs> = inc.times.iter().copied().collect();
        t.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(60_000).max(1)
    };
    let tol = cfg.onset_tolerance.as_millis_i64().max(resolution);
    let duration = |s: &Suspect| (s.last - s.onset).max(0) + resolution;

    // The symptom: where the incident reaches users, i.e. the affected service with no affected callers that has
    // the most affected services downstream of it (then the most anomalies).
    let affected: BTreeSet<usize> = sus.iter().filter_map(|s| s.node).collect();
    let in_incident = |v: usize| affected.contains(&v);
    // Reachability, computed once: downstream through affected services, and downstream through any service.
    let via_affected: BTreeMap<usize, BTreeSet<usize>> =
        affected.iter().map(|&a| (a, graph.reachable_down(a, |v| affected.contains(&v)))).collect();
    let via_any: BTreeMap<usize, BTreeSet<usize>> =
        affected.iter().map(|&a| (a, graph.reachable_down(a, |_| true))).collect();
    let reaches = |from: usize, to: usize| via_affected.get(&from).is_some_and(|r| r.contains(&to));
    let downstream = |nd: usize| via_any.get(&nd).map_or(0, |r| r.iter().filter(|o| affected.contains(o)).count());
    let symptom = match symptom_hint.and_then(|h| sus.iter().position(|s| &*s.name == h)) {
        Some(i) => Some(i),
        None => sus
            .iter()
            .enumerate()
            .filter(|(_, s)| s.node.is_none_or(|nd| !graph.callers[nd].iter().any(|c| affected.contains(c))))
            .max_by_key(|(i, s)| (s.node.map_or(0, downstream), s.points, usize::MAX - i))
            .map(|(i, _)| i),
    };

    // explains[a][b]: a's anomaly accounts for b's. Faults travel through services that show them, so the path
    // between the two must run through affected services only.
    let mut explains = vec![vec![false; n]; n];
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            let (sa, sb) = (&sus[a], &sus[b]);
            // A steady condition (see `steady_services`) did not change when the others did: it explains no one.
            if steady.contains(&sa.name) {
                continue;
            }
            let (Some(na), Some(nb)) = (sa.node, sb.node) else { continue };
            // A cause begins no later than its effect, is still present when the effect begins, and lasts.
            if sa.onset > sb.onset + tol || sa.last + tol < sb.onset || 2 * duration(sa) < duration(sb) {
                continue;
            }
            // Failure travels up: a is a dependency of b, both show failure symptoms, and b is not itself the
            // source of a traffic increase that began before a's anomaly.
            let b_is_traffic_source = sb.traffic_up_onset.is_some_and(|t| t <= sa.onset);
            let failure = sa.failure && sb.failure && !b_is_traffic_source && reaches(nb, na);
            // Traffic travels down: a calls b (transitively), a's traffic rose, and b's traffic rose too.
            let traffic = sa.traffic_up_onset.is_some() && sb.traffic_up_onset.is_some() && reaches(na, nb);
            explains[a][b] = failure || traffic;
        }
    }

    let onsets: Vec<TimeMs> = sus.iter().map(|s| s.onset).collect();
    let (min_on, max_on) = (*onsets.iter().min().unwrap_or(&0), *onsets.iter().max().unwrap_or(&0));
    let max_points = sus.iter().map(|s| s.points).max().unwrap_or(1).max(1) as f64;
    // Severity on a log scale: a near-constant series can reach an enormous z that says little more than z = 50.
    let sev = |s: &Suspect| (1.0 + s.max_z).ln();
    let max_sev = sus.iter().map(sev).fold(1e-9, f64::max);
    // Whether the symptom reaches the candidate through affected services: the fault's way to the users.
    let sym_node = symptom.and_then(|y| sus[y].node);
    let reaches_symptom = |a: usize| match (sus[a].node, sym_node) {
        (Some(nd), Some(sy)) => nd == sy || reaches(sy, nd),
        _ => false,
    };
    // A cause is still anomalous when the symptom begins; one that had recovered by then did not cause it.
    let symptom_onset = symptom.map(|y| sus[y].onset);
    let active_at_symptom = |a: usize| symptom_onset.is_none_or(|t| sus[a].last + tol >= t);
    // Changes on a candidate shortly before (or at) its onset.
    let window = cfg.change_window.as_millis_i64();
    let changes_of = |a: usize| -> Vec<&ChangeEvent> {
        let s = &sus[a];
        changes
            .iter()
            .filter(|c| *c.service == *s.name && c.time <= s.onset + tol && c.time + window >= s.onset)
            .collect()
    };
    let mut raw: Vec<(usize, f64)> = (0..n)
        .map(|a| {
            let explained = (0..n).any(|b| explains[b][a]);
            let explains_frac =
                if n > 1 { (0..n).filter(|&b| explains[a][b]).count() as f64 / (n - 1) as f64 } else { 1.0 };
            let early = if max_on > min_on { (max_on - sus[a].onset) as f64 / (max_on - min_on) as f64 } else { 1.0 };
            let s = &sus[a];
            let score = if explained { 0.0 } else { 1.0 }
                // The symptom reaches it through affected services: the fault has a way to the users.
                + if reaches_symptom(a) { 0.5 } else { 0.0 }
                + explains_frac
                + 0.5 * early
                + 0.25 * f64::from(s.points) / max_points
                + 0.25 * (sev(s) / max_sev).max(s.max_score * 0.5);
            // A change made on it shortly before its anomaly began raises its rank.
            let score = score + if changes_of(a).is_empty() { 0.0 } else { 0.75 };
            let score = if active_at_symptom(a) { score } else { score * 0.25 };
            let score = if steady.contains(&s.name) { score * 0.5 } else { score };
            (a, score)
        })
        .collect();
    raw.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| sus[x.0].onset.cmp(&sus[y.0].onset)).then(x.0.cmp(&y.0)));

    let total: f64 = raw.iter().map(|r| r.1).sum::<f64>().max(1e-9);
    // The top candidate's share of the top two scores, mapped through the configured logistic calibration.
    let share = match raw.as_slice() {
        [] => 0.5,
        [_] => 1.0,
        [a, b, ..] => a.1 / (a.1 + b.1).max(1e-12),
    };
    let [ca, cb] = cfg.confidence_calibration;
    let confidence = 1.0 / (1.0 + (-(ca + cb * (share - 0.5))).exp());
    let candidates: Vec<CandidateWire> = raw
        .iter()
        .take(cfg.max_candidates)
        .enumerate()
        .map(|(rank, &(a, score))| {
            let s = &sus[a];
            let others: Vec<TimeMs> = (0..n).filter(|&b| b != a).map(|b| sus[b].onset).collect();
            let offset = if others.is_empty() { 0.0 } else { (s.onset - median(others)) as f64 / 1000.0 };
            let names = |v: Vec<usize>| v.into_iter().map(|b| sus[b].name.to_string()).collect::<Vec<_>>();
            let ex = names((0..n).filter(|&b| explains[a][b]).collect());
            let exby = names((0..n).filter(|&b| explains[b][a]).collect());
            let healthy: Vec<String> = s
                .node
                .map(|nd| {
                    graph.callees[nd]
                        .iter()
                        .filter(|c| !affected.contains(c))
                        .map(|&c| graph.name(c).to_string())
                        .collect()
                })
                .unwrap_or_default();
            let path = match (s.node, sym_node) {
                (Some(nd), Some(sy)) if nd != sy => graph
                    .path_via(nd, sy, false, in_incident)
                    .or_else(|| graph.path(nd, sy, false))
                    .or_else(|| graph.path(nd, sy, true))
                    .map(|p| p.into_iter().map(|i| graph.name(i).to_string()).collect())
                    .unwrap_or_default(),
                (Some(nd), Some(_)) => vec![graph.name(nd).to_string()],
                _ => Vec::new(),
            };
            let mut metrics: Vec<MetricEvidence> = s
                .metrics
                .iter()
                .map(|(m, acc)| MetricEvidence {
                    metric: m.to_string(),
                    role: acc.role.as_str(),
                    direction: acc.direction,
                    max_abs_z: round6(acc.max_abs_z),
                    peak_observed: acc.peak_observed,
                    peak_expected: round6(acc.peak_expected),
                    first_seen: fmt_time(acc.first),
                    anomalous_points: acc.points,
                })
                .collect();
            metrics.sort_by(|x, y| y.max_abs_z.total_cmp(&x.max_abs_z).then_with(|| x.metric.cmp(&y.metric)));
            let recent: Vec<ChangeWire> = changes_of(a)
                .into_iter()
                .map(|c| ChangeWire {
                    time: fmt_time(c.time),
                    kind: c.kind.clone(),
                    description: c.description.clone(),
                    before_onset_s: (s.onset - c.time) as f64 / 1000.0,
                })
                .collect();
            let mut explanation = candidate_sentence(s, &metrics, offset, &ex, &exby, &healthy);
            if let Some(c) = recent.last() {
                explanation.push_str(&format!(
                    " A {} ({}) was made on it {} before its anomalies began.",
                    c.kind,
                    c.description,
                    fmt_secs(c.before_onset_s.max(0.0))
                ));
            }
            CandidateWire {
                service: s.name.to_string(),
                rank: rank as u32 + 1,
                score: round6(score / total),
                evidence: CandidateEvidence {
                    metrics,
                    onset: fmt_time(s.onset),
                    onset_ms: s.onset,
                    onset_offset_s: offset,
                    explains: ex,
                    explained_by: exby,
                    healthy_dependencies: healthy,
                    path_to_symptom: path,
                    changes: recent,
                },
                explanation,
            }
        })
        .collect();

    let symptom_name = symptom.map(|y| sus[y].name.to_string());
    let explanation = report_paragraph(&candidates, symptom_name.as_deref(), n, inc.count, confidence);
    // A suggestion only: Faultline never acts on systems.
    let suggestion = candidates.first().and_then(|c| {
        let ch = c.evidence.changes.last()?;
        Some(format!(
            "Consider rolling back the {} of {} ({}, made at {}): it came {} before {}'s anomalies began. \
             This is a suggestion; Faultline takes no action.",
            ch.kind,
            c.service,
            ch.description,
            ch.time,
            fmt_secs(ch.before_onset_s.max(0.0)),
            c.service
        ))
    });
    RootCauseReport {
        schema: ROOT_CAUSE_SCHEMA,
        kind: "root-cause",
        incident_id: inc.id.clone(),
        report_version: 1,
        status: "closed",
        window: WindowWire::new(inc.start, inc.last),
        affected_services: sus.iter().map(|s| s.name.to_string()).collect(),
        anomaly_count: inc.count,
        symptom: symptom_name,
        candidates,
        confidence: round6(confidence),
        explanation,
        suggestion,
    }
}

fn median(mut v: Vec<TimeMs>) -> TimeMs {
    v.sort_unstable();
    v[v.len() / 2]
}

fn candidate_sentence(
    s: &Suspect,
    metrics: &[MetricEvidence],
    offset_s: f64,
    explains: &[String],
    explained_by: &[String],
    healthy: &[String],
) -> String {
    let lead = metrics
        .iter()
        .take(2)
        .map(|m| {
            format!(
                "{} {} to {} (expected {}, {} sigma)",
                m.metric,
                if m.direction == Direction::Up { "rose" } else { "fell" },
                num(m.peak_observed),
                num(m.peak_expected),
                sigmas(m.max_abs_z)
            )
        })
        .collect::<Vec<_>>()
        .join(" and ");
    let mut out = format!("{}: {lead}, from {}", s.name, fmt_hhmm(s.onset));
    if offset_s < 0.0 {
        out.push_str(&format!(", {} before the other affected services", fmt_secs(-offset_s)));
    } else if offset_s > 0.0 {
        out.push_str(&format!(", {} after the other affected services", fmt_secs(offset_s)));
    }
    out.push('.');
    if !explains.is_empty() {
        out.push_str(&format!(" Accounts for {} through the call graph.", explains.join(", ")));
    }
    if explained_by.is_empty() {
        if !healthy.is_empty() {
            out.push_str(&format!(" Its dependencies {} stayed healthy.", healthy.join(", ")));
        }
    } else {
        out.push_str(&format!(" Could itself be a symptom of {}.", explained_by.join(", ")));
    }
    out
}

fn fmt_secs(s: f64) -> String {
    if s >= 90.0 { format!("{:.0} min", s / 60.0) } else { format!("{s:.0} s") }
}

fn report_paragraph(
    c: &[CandidateWire],
    symptom: Option<&str>,
    services: usize,
    anomalies: usize,
    conf: f64,
) -> String {
    let Some(top) = c.first() else { return "No candidate.".into() };
    let mut s = format!(
        "{anomalies} anomalies across {services} service{} form one incident. Most likely root cause: {} (confidence {:.2}).",
        if services == 1 { "" } else { "s" },
        top.service,
        conf
    );
    if let Some(sym) = symptom
        && sym != top.service
        && top.evidence.path_to_symptom.len() > 1
    {
        s.push_str(&format!(" The fault reaches {sym} along {}.", top.evidence.path_to_symptom.join(" -> ")));
    }
    s.push(' ');
    s.push_str(&top.explanation);
    if let Some(second) = c.get(1) {
        s.push_str(&format!(" Next candidate: {} (score {:.2}).", second.service, second.score));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A changes file: sorted by time, a byte order mark before the first line ignored, a bad line named.
    #[test]
    fn a_changes_file_is_read_line_by_line_and_sorted() {
        let path = std::env::temp_dir().join(format!("faultline-changes-{}.jsonl", std::process::id()));
        let line = |t: &str, svc: &str| {
            format!("{{\"time\": \"{t}\", \"service\": \"{svc}\", \"kind\": \"deploy\", \"description\": \"v2\"}}\n")
        };
        let text = format!("\u{feff}{}\n{}", line("2026-01-05T02:00:00Z", "b"), line("2026-01-05T01:00:00Z", "a"));
        std::fs::write(&path, text).unwrap();
        let got: Vec<String> = load_changes(&path).unwrap().iter().map(|c| c.service.to_string()).collect();
        assert_eq!(got, ["a", "b"]);
        std::fs::write(&path, format!("{}{{\"service\": \"c\"}}\n", line("2026-01-05T02:00:00Z", "b"))).unwrap();
        let e = load_changes(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("{} line 2", path.display())), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn learned_edges_join_and_age_out_but_configured_edges_stay() {
        let mut g = ServiceGraph::from_edges([("web", "api")]);
        g.observe("api", "db", 1_000);
        g.observe("web", "api", 1_000);
        assert_eq!(g.edges(), vec![("web".to_string(), "api".to_string()), ("api".to_string(), "db".to_string())]);
        g.observe("api", "db", 50_000);
        assert_eq!(g.age(60_000, 20_000), 0, "seen 10 s ago");
        assert_eq!(g.age(80_000, 20_000), 1, "not seen for 30 s");
        assert_eq!(g.edges(), vec![("web".to_string(), "api".to_string())], "the configured edge stays");
        let api = g.id("api").unwrap();
        assert!(g.callees_of(api).is_empty());
    }

    fn event(service: &str, metric: &str, role: Role, time: TimeMs, started_at: TimeMs) -> AnomalyEvent {
        use crate::event::{Channels, Stage};
        AnomalyEvent {
            key: Arc::new(crate::model::SeriesKey::new(service, metric, [] as [(&str, &str); 0])),
            role,
            time,
            started_at,
            observed: 10.0,
            expected: 5.0,
            lower: 4.0,
            upper: 6.0,
            z: 8.0,
            score: 0.9,
            direction: Direction::Up,
            stage: Stage::Robust,
            model_fired: true,
            channels: Channels {
                value: 0.9,
                residual: 0.9,
                shift: 0.0,
                burst: None,
                spectral: None,
                service: 0.9,
                residual_name: "residual",
                fatigue: 0.0,
            },
            level_shift: None,
            attribution: Vec::new(),
            rule: None,
            anomalous_in_window: 3,
            window: 3,
            points_seen: 1000,
            learning_paused: false,
            feedback: None,
        }
    }

    /// A fault at the bottom of `chain` (callers first) reaching each caller one minute later, ten points each.
    fn fault(chain: &[&str], t0: TimeMs) -> Vec<AnomalyEvent> {
        let mut out = Vec::new();
        for (depth, svc) in chain.iter().rev().enumerate() {
            let onset = t0 + depth as i64 * 60_000;
            for p in 0..10 {
                out.push(event(svc, "latency_p50_ms", Role::Latency, onset + p * 60_000, onset));
            }
        }
        out
    }

    fn track(cfg: &RcaConfig, graph: ServiceGraph, mut events: Vec<AnomalyEvent>) -> Vec<RootCauseReport> {
        events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.key.service.cmp(&b.key.service)));
        let mut t = IncidentTracker::new(cfg, graph);
        let mut out = Vec::new();
        for e in &events {
            out.extend(t.ingest(e));
        }
        out.extend(t.finish());
        out.retain(|r| r.status == "closed");
        out
    }

    fn rca_config() -> RcaConfig {
        crate::config::Config::default_config().expect("defaults load").rca
    }

    /// An open update holds every anomaly of its event time, whatever order that minute's anomalies came in: a
    /// Kafka consumer's batch may end in the middle of a minute, and the next batch's anomalies of that minute then
    /// come after the first batch's, where a file replay sorts them all together. (Updates were made at the anomaly
    /// that made them due, so an update holding 9 of a candidate's anomalies in one run held 10 in the other.)
    #[test]
    fn open_updates_hold_every_anomaly_of_their_time_whatever_order_that_time_came_in() {
        let graph = || ServiceGraph::from_edges([("web", "api"), ("api", "db")]);
        let mut cfg = rca_config();
        cfg.update_interval = crate::units::HumanDuration::from_secs(120);
        let mut events = fault(&["web", "api", "db"], 1_700_000_000_000);
        let run = |events: &[AnomalyEvent]| {
            let mut t = IncidentTracker::new(&cfg, graph());
            let mut out = Vec::new();
            for e in events {
                out.extend(t.ingest(e));
                // Each anomaly its own batch: the watermark is its time.
                out.extend(t.advance(e.time));
            }
            out.extend(t.finish());
            out.iter().map(|r| serde_json::to_string(r).expect("a report serialises")).collect::<Vec<_>>()
        };
        events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.key.service.cmp(&b.key.service)));
        let forward = run(&events);
        events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| b.key.service.cmp(&a.key.service)));
        let backward = run(&events);
        assert_eq!(forward, backward, "the same anomalies in another order within each minute");
        let open: Vec<serde_json::Value> = forward
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .filter(|r: &serde_json::Value| r["status"] == "open")
            .collect();
        assert!(open.len() >= 2, "{} open updates", open.len());
        for r in &open {
            let at = r["window"]["end_ms"].as_i64().unwrap();
            let upto = events.iter().filter(|e| e.time <= at).count();
            assert_eq!(
                r["anomaly_count"].as_u64(),
                Some(upto as u64),
                "the update at {at} holds every anomaly up to it"
            );
        }
    }

    #[test]
    fn simultaneous_faults_in_unrelated_parts_of_the_graph_give_two_incidents_with_their_own_roots() {
        let graph = ServiceGraph::from_edges([
            ("web", "api"),
            ("api", "db"),
            ("shop", "cart"),
            ("cart", "redis"),
            ("admin", "reports"),
        ]);
        let mut events = fault(&["web", "api", "db"], 0);
        events.extend(fault(&["shop", "cart", "redis"], 30_000));
        let reports = track(&rca_config(), graph, events);
        assert_eq!(reports.len(), 2, "{reports:#?}");
        let mut roots: Vec<(&str, Vec<String>)> =
            reports.iter().map(|r| (r.candidates[0].service.as_str(), r.affected_services.clone())).collect();
        roots.sort();
        assert_eq!(roots[0], ("db", vec!["api".to_string(), "db".to_string(), "web".to_string()]));
        assert_eq!(roots[1], ("redis", vec!["cart".to_string(), "redis".to_string(), "shop".to_string()]));
    }

    #[test]
    fn group_hops_bounds_how_far_apart_services_of_one_incident_may_be() {
        // db and redis are 5 hops apart through the shared frontend: db - api - web - shop - cart - redis.
        let graph = ServiceGraph::from_edges([
            ("web", "api"),
            ("api", "db"),
            ("web", "shop"),
            ("shop", "cart"),
            ("cart", "redis"),
        ]);
        let events = || {
            let mut e = fault(&["api", "db"], 0);
            e.extend(fault(&["cart", "redis"], 0));
            e
        };
        let mut cfg = rca_config();
        cfg.group_hops = 3;
        // api is 3 hops from cart but 1 from db, whose incident it joins; cart likewise joins redis's.
        assert_eq!(track(&cfg, graph.clone(), events()).len(), 2);
        cfg.group_hops = 4;
        assert_eq!(track(&cfg, graph.clone(), events()).len(), 2);
        cfg.group_hops = 5;
        let one = track(&cfg, graph, events());
        assert_eq!(one.len(), 1, "within 5 hops: one incident");
        assert_eq!(one[0].affected_services.len(), 4);
    }

    #[test]
    fn services_the_graph_does_not_know_are_grouped_by_time_alone() {
        let mut events = fault(&["web", "api", "db"], 0);
        events.extend(fault(&["shop", "cart", "redis"], 30_000));
        let reports = track(&rca_config(), ServiceGraph::default(), events.clone());
        assert_eq!(reports.len(), 1, "no graph: one incident, as before proximity grouping");
        assert_eq!(reports[0].affected_services.len(), 6);
        // A known service does not join an incident of services the graph does not know, and vice versa.
        let reports = track(&rca_config(), ServiceGraph::from_edges([("web", "api"), ("api", "db")]), events);
        assert_eq!(reports.len(), 2);
    }

    #[test]
    fn an_incident_closes_on_its_own_gap_while_another_stays_open() {
        let graph = ServiceGraph::from_edges([("web", "api"), ("shop", "cart")]);
        let mut events = fault(&["web", "api"], 0);
        // The second fault starts while the first is open and lasts an hour (an anomaly every minute).
        for p in 0..60 {
            events.push(event("cart", "error_rate", Role::Errors, 5 * 60_000 + p * 60_000, 5 * 60_000));
        }
        events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.key.service.cmp(&b.key.service)));
        let cfg = rca_config();
        let mut t = IncidentTracker::new(&cfg, graph);
        let mut closed_at = Vec::new();
        for e in &events {
            for r in t.ingest(e) {
                if r.status == "closed" {
                    closed_at.push((e.time, r.candidates[0].service.clone()));
                }
            }
            for r in t.advance(e.time) {
                closed_at.push((e.time, r.candidates[0].service.clone()));
            }
        }
        // web/api's last anomaly is at 11 min; the first anomaly more than incident-gap (10 min) later, cart's at
        // 21 min, closes it, while cart's incident goes on.
        assert_eq!(closed_at, vec![(21 * 60_000, "api".to_string())]);
        assert_eq!(t.open_incidents(), 1);
        let last = t.finish();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].candidates[0].service, "cart");
    }

    #[test]
    fn a_change_event_may_carry_a_learning_pause() {
        let c = ChangeEvent::parse(
            r#"{"time": "2026-01-05T10:00:00Z", "service": "checkout", "kind": "maintenance", "description": "db failover",
                "learning_pause": {"until": "2026-01-05T12:00:00Z"}}"#,
        )
        .unwrap();
        let p = c.learning_pause.expect("a pause");
        assert_eq!((p.metric.as_str(), p.until - c.time), ("*", 7_200_000), "every metric by default");
        let plain = r#"{"time": 1, "service": "s", "kind": "deploy", "description": "v2"}"#;
        assert_eq!(ChangeEvent::parse(plain).unwrap().learning_pause, None);
        let err = |pause: &str| {
            let text = format!(
                r#"{{"time": 5000, "service": "s", "kind": "k", "description": "", "learning_pause": {pause}}}"#
            );
            ChangeEvent::parse(&text).unwrap_err()
        };
        assert!(
            err(r#"{"until": 4000}"#).contains("`learning_pause.until`: must be later"),
            "{}",
            err(r#"{"until": 4000}"#)
        );
        assert!(err(r#"{"until": 9000, "metric": ""}"#).contains("`learning_pause.metric`"));
        assert!(err(r#"{"until": 9000, "from": 1}"#).contains("unknown field `from`"));
        assert!(err(r#"{"metric": "*"}"#).contains("missing field `until`"));
    }

    #[test]
    fn changes_added_while_running_are_joined_once_even_if_read_twice() {
        let cfg = rca_config();
        let mut t = IncidentTracker::new(&cfg, ServiceGraph::from_edges([("web", "db")]));
        let t0 = 1_767_571_200_000;
        let deploy = ChangeEvent {
            time: t0 - 60_000,
            service: "db".into(),
            kind: "deploy".into(),
            description: "v2".into(),
            learning_pause: None,
        };
        t.add_changes([deploy.clone()]);
        t.add_changes([deploy.clone(), ChangeEvent { description: "v3".into(), ..deploy }]);
        for e in &fault(&["web", "db"], t0) {
            t.ingest(e);
        }
        let r = t.finish().pop().expect("a report");
        let top = &r.candidates[0];
        assert_eq!(top.service, "db");
        let seen: Vec<&str> = top.evidence.changes.iter().map(|c| c.description.as_str()).collect();
        assert_eq!(seen, ["v2", "v3"]);
        assert!(r.suggestion.is_some_and(|s| s.contains("deploy of db (v3")));
    }

    #[test]
    fn a_focused_investigation_does_not_blame_a_lone_steady_condition_that_predates_the_symptom() {
        // site -> pay -> db, plus web -> site and a healthy cache. db's latency has been up (z 8) since before the
        // fault; pay's latency jumps two minutes later and site's with it.
        let graph = ServiceGraph::from_edges([("web", "site"), ("site", "pay"), ("pay", "db"), ("site", "cache")]);
        let t0 = 1_767_571_200_000;
        let mut events = Vec::new();
        let mut push = |svc: &str, start: i64, z: &dyn Fn(i64) -> f64| {
            for p in 0..6 {
                let mut e = event(svc, "latency_p50_ms", Role::Latency, t0 + (start + p) * 60_000, t0 + start * 60_000);
                e.z = z(start + p);
                events.push(e);
            }
        };
        push("db", 0, &|_| 8.0);
        push("pay", 2, &|m| if m >= 2 { 20.0 } else { 0.0 });
        push("site", 2, &|_| 12.0);
        events.sort_by_key(|e| e.time);
        let cfg = rca_config();
        let r = rank_events(&cfg, &graph, &events, Some("site")).unwrap();
        assert_eq!(r.candidates[0].service, "pay", "{r:#?}");
        // The same db that grows when the symptom begins is a cause, and ranks first as before.
        for e in events.iter_mut().filter(|e| &*e.key.service == "db" && e.time >= t0 + 3 * 60_000) {
            e.z = 30.0;
        }
        let r = rank_events(&cfg, &graph, &events, Some("site")).unwrap();
        assert_eq!(r.candidates[0].service, "db", "{r:#?}");
    }
}
