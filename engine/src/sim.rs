//! Built-in telemetry simulator: a seeded microservice call graph whose services emit seven golden-signal metrics
//! every interval, with injected faults (the ground truth) that propagate along the call graph with delay, and
//! benign distractors that are not part of any fault.
//!
//! # Model
//!
//! * **Topology.** Either the explicit `edges` or a generated layered DAG: 1–2 entry services, layers of
//!   application services, and datastores as the leaves. Every non-entry service has a caller; every non-leaf calls
//!   1–3 services in lower layers.
//! * **Traffic.** Entry services get 200–1000 req/s with daily seasonality (about ±40 %, peak mid-day UTC) and slow
//!   random swings. A callee's rate is the sum over its callers of the caller's rate one interval earlier × the
//!   edge's fan-out (0.3–2.0), plus retries of its own errors on retrying edges.
//! * **Latency.** `p50 = own latency (2–40 ms) × load factor + Σ callees (callee p50, 1–2 intervals earlier) ×
//!   call probability (0.3–0.9)`. On retrying edges (about a third) a callee's positive deviation passes in full ×
//!   1.2–2.5 instead of × call probability, so a caller can deviate more (in z-score terms) than the service at
//!   fault. `p99 = 3–6 × p50` with its own slow noise, plus tail excess (GC pauses) that callers inherit the same way.
//! * **Errors.** Own baseline 0.05–0.5 % plus callee errors (1–2 intervals earlier) × call probability × 0.3–0.9,
//!   amplified like latency on retrying edges; the measured rate has binomial noise from the request count.
//! * **Resources.** CPU follows load (0.15–0.6 at mean load, capped at 1); above ~80 % the load factor rises steeply;
//!   over 100 % demand the service sheds load (errors, latency). Queue saturation combines the CPU run queue (steep
//!   near 1) with the request pool (in-flight = rate × latency, so slow callees fill their callers' pools). Memory
//!   sits at 0.3–0.6 with a slow GC saw-tooth and a little per in-flight request.
//! * **Noise.** Per-service noise levels (0.5–2×) of a few percent, log-normal with occasional heavier tails, all
//!   scaled by `noise`; slow process noise on traffic, own latency and errors propagates to callers, measurement
//!   noise does not.
//! * **Faults.** After `fault-free`, one fault every `fault-spacing` (±10 % jitter, aligned to the tick grid),
//!   lasting 20–45 minutes and never overlapping the next; see [`FaultKind`] for each kind's effect. With
//!   `concurrent`, every fault gets a twin of the next kind in the cycle that starts and ends with it, at the eligible
//!   service farthest from the first one in the call graph (two simultaneous faults, in as unrelated parts of the
//!   graph as the topology has).
//! * **Distractors.** Benign spikes (1–3 points, 4–10× the metric's noise) at a Poisson rate per service, and during
//!   every fault 1–2 extra spikes or short local traffic swings on services off the fault's propagation path.
//!
//! Everything is a pure function of the configuration: topology, baselines, schedule, distractors and noise each
//! draw from their own ChaCha8 stream of the seed, so changing `noise` does not move the faults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Batch, SeriesKey, TimeMs};
use crate::rca::ChangeEvent;
use crate::units::HumanDuration;

/// The metrics every service emits, in the order of [`Simulator::series`].
pub const METRICS: [&str; 7] = [
    "request_rate",
    "latency_p50_ms",
    "latency_p99_ms",
    "error_rate",
    "cpu_utilization",
    "memory_utilization",
    "queue_saturation",
];

const M_RATE: usize = 0;
const M_P50: usize = 1;
const M_P99: usize = 2;
const M_ERR: usize = 3;
const M_CPU: usize = 4;
const M_MEM: usize = 5;
const M_QUEUE: usize = 6;
const NM: usize = METRICS.len();

/// Log-scale measurement noise per metric at `noise = 1`, before the per-service factor.
const METRIC_SIGMA: [f64; NM] = [0.025, 0.03, 0.07, 0.05, 0.025, 0.006, 0.06];

const MIN_SERVICES: usize = 4;
const MAX_SERVICES: usize = 200;
const MAX_EDGE_SERVICES: usize = 1000;
const MAX_TICKS: i64 = 100_000_000;
const MAX_NOISE: f64 = 10.0;
const MAX_BENIGN_SPIKES: f64 = 1000.0;
/// Faults start at least this many intervals apart (before jitter).
const MIN_SPACING_INTERVALS: i64 = 5;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Simulator configuration (`[simulator]` in the engine's configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SimConfig {
    pub seed: u64,
    /// Size of the generated topology (4..=200); ignored when `edges` is set.
    pub services: usize,
    /// Explicit call graph as `[caller, callee]` pairs; service names come from the edges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<[String; 2]>>,
    pub interval: HumanDuration,
    /// RFC 3339 start time (`Z` or a numeric offset).
    pub start: String,
    pub duration: HumanDuration,
    /// No fault starts before `start + fault-free` (models warm up).
    pub fault_free: HumanDuration,
    /// Time between fault starts.
    pub fault_spacing: HumanDuration,
    /// Cycled through in a seeded shuffled order; empty means no faults.
    pub fault_kinds: Vec<FaultKind>,
    /// Multiplier on every noise level (0 gives noise-free, spike-free data).
    pub noise: f64,
    /// Expected benign spikes per service per day.
    pub benign_spikes: f64,
    /// Every fault gets a simultaneous twin far away in the call graph (see the module docs).
    pub concurrent: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            services: 16,
            edges: None,
            interval: HumanDuration::from_secs(60),
            start: "2026-01-05T00:00:00Z".to_owned(),
            duration: HumanDuration::from_secs(2 * 86_400),
            fault_free: HumanDuration::from_secs(86_400),
            fault_spacing: HumanDuration::from_secs(2 * 3_600),
            fault_kinds: FaultKind::ALL.to_vec(),
            noise: 1.0,
            benign_spikes: 2.0,
            concurrent: false,
        }
    }
}

impl SimConfig {
    /// Pushes one message per problem, naming the field as `simulator.<field>`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        match &self.edges {
            None => {
                if !(MIN_SERVICES..=MAX_SERVICES).contains(&self.services) {
                    problems.push(format!(
                        "simulator.services must be between {MIN_SERVICES} and {MAX_SERVICES}, got {}",
                        self.services
                    ));
                }
            }
            Some(edges) => validate_edges(edges, problems),
        }

        let interval = self.interval.0;
        let interval_ok = if interval.is_zero() {
            problems.push("simulator.interval must be positive".to_owned());
            false
        } else if !interval.subsec_nanos().is_multiple_of(1_000_000) {
            problems.push(format!("simulator.interval must be a whole number of milliseconds, got {}", self.interval));
            false
        } else {
            true
        };
        let interval_ms = self.interval.as_millis_i64();

        let start = match parse_start(&self.start) {
            Ok(ms) => Some(ms),
            Err(e) => {
                problems.push(format!("simulator.start {e}"));
                None
            }
        };

        let duration_ms = self.duration.as_millis_i64();
        if self.duration.0.is_zero() {
            problems.push("simulator.duration must be positive".to_owned());
        } else if interval_ok && duration_ms < interval_ms {
            problems.push(format!(
                "simulator.duration ({}) must be at least one simulator.interval ({})",
                self.duration, self.interval
            ));
        } else if interval_ok && duration_ms / interval_ms > MAX_TICKS {
            problems.push(format!(
                "simulator.duration ({}) is {} intervals of {}; at most {MAX_TICKS} are allowed",
                self.duration,
                duration_ms / interval_ms,
                self.interval
            ));
        }
        if start.is_some_and(|start| start.checked_add(duration_ms).is_none_or(|end| end == i64::MAX)) {
            problems
                .push(format!("simulator.duration ({}) overflows the timeline from simulator.start", self.duration));
        }

        if self.fault_spacing.0.is_zero() {
            problems.push("simulator.fault-spacing must be positive".to_owned());
        } else if interval_ok && self.fault_spacing.as_millis_i64() < MIN_SPACING_INTERVALS.saturating_mul(interval_ms)
        {
            problems.push(format!(
                "simulator.fault-spacing ({}) must be at least {MIN_SPACING_INTERVALS} × simulator.interval ({})",
                self.fault_spacing, self.interval
            ));
        }

        if !self.noise.is_finite() || !(0.0..=MAX_NOISE).contains(&self.noise) {
            problems.push(format!("simulator.noise must be a number between 0 and {MAX_NOISE}, got {}", self.noise));
        }
        if !self.benign_spikes.is_finite() || !(0.0..=MAX_BENIGN_SPIKES).contains(&self.benign_spikes) {
            problems.push(format!(
                "simulator.benign-spikes must be a number of spikes per service per day between 0 and \
                 {MAX_BENIGN_SPIKES}, got {}",
                self.benign_spikes
            ));
        }
    }
}

fn validate_edges(edges: &[[String; 2]], problems: &mut Vec<String>) {
    if edges.is_empty() {
        problems.push("simulator.edges must list at least one [caller, callee] pair".to_owned());
        return;
    }
    let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut bad_name = false;
    for (i, [a, b]) in edges.iter().enumerate() {
        for name in [a, b] {
            if let Some(why) = invalid_name(name) {
                problems.push(format!("simulator.edges[{i}]: service name {name:?} {why}"));
                bad_name = true;
            }
            names.insert(name);
        }
        if a == b {
            problems.push(format!("simulator.edges[{i}]: {a:?} calls itself"));
        } else if let Some(first) = seen.insert((a, b), i) {
            seen.insert((a, b), first);
            problems.push(format!("simulator.edges[{i}]: duplicate edge {a:?} -> {b:?} (first at edges[{first}])"));
        }
    }
    if names.len() > MAX_EDGE_SERVICES {
        problems
            .push(format!("simulator.edges name {} services; at most {MAX_EDGE_SERVICES} are allowed", names.len()));
    }
    if bad_name {
        return;
    }
    let topo = Topology::from_edges(edges);
    let order = topo.topo_order();
    if order.len() < topo.services.len() {
        let mut on_cycle = vec![true; topo.services.len()];
        for &s in &order {
            on_cycle[s] = false;
        }
        let cyclic: Vec<&str> =
            topo.services.iter().zip(&on_cycle).filter(|(_, c)| **c).map(|(n, _)| n.as_str()).collect();
        problems.push(format!(
            "simulator.edges must form an acyclic call graph; these services are on or behind a cycle: {}",
            cyclic.join(", ")
        ));
    }
}

fn invalid_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 128 {
        Some("is longer than 128 bytes")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters")
    } else {
        None
    }
}

/// Parses an RFC 3339 time (`Z` or a numeric `±hh:mm` offset; see [`crate::clock::parse_time`]) to Unix milliseconds.
fn parse_start(s: &str) -> std::result::Result<TimeMs, String> {
    let bad = |why: &str| format!("must be an RFC 3339 time such as \"2026-01-05T00:00:00Z\", got {s:?} ({why})");
    match crate::clock::parse_time(s) {
        Ok(ms) if ms < 0 => Err(bad("before 1970")),
        Ok(ms) => Ok(ms),
        Err(e) => Err(bad(e.rsplit_once(": ").map_or(e.as_str(), |(_, why)| why))),
    }
}

/// The kinds of injected fault. The ground-truth root cause of each is the service it is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Own latency grows so that the service's observed p50/p99 rise 1.6–3× (a non-entry service); callers see it
    /// 1–2 intervals later per hop.
    LatencyRegression,
    /// Own error rate +5–30 points (a non-entry service); callers see a share of it 1–2 intervals later per hop.
    ErrorBurst,
    /// CPU pinned at 93–100 %, queue saturation high, latency 2–4× (any service).
    CpuSaturation,
    /// Memory ramps to ~97 % over the fault; above ~85 % GC pauses raise p99 up to 3× (p50 a little) and OOM
    /// restarts add errors; callers see the latency and errors after the delay (any service).
    MemoryLeak,
    /// A datastore (leaf) fails: 20–60 % errors and latency 3–6× from timeouts; callers see both after the delay.
    FailingDependency,
    /// An entry service's traffic grows 2–4×; each hop of callees follows one interval later, their CPU and queues
    /// climb, services near saturation slow down and shed load.
    TrafficSurge,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::LatencyRegression,
        FaultKind::ErrorBurst,
        FaultKind::CpuSaturation,
        FaultKind::MemoryLeak,
        FaultKind::FailingDependency,
        FaultKind::TrafficSurge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::LatencyRegression => "latency-regression",
            FaultKind::ErrorBurst => "error-burst",
            FaultKind::CpuSaturation => "cpu-saturation",
            FaultKind::MemoryLeak => "memory-leak",
            FaultKind::FailingDependency => "failing-dependency",
            FaultKind::TrafficSurge => "traffic-surge",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call graph. Service indices are positions in `services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub services: Vec<String>,
    /// `(caller, callee)`.
    pub edges: Vec<(usize, usize)>,
}

impl Topology {
    /// The services that call `s`.
    pub fn callers(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges.iter().filter(move |e| e.1 == s).map(|e| e.0)
    }

    /// The services `s` calls.
    pub fn callees(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges.iter().filter(move |e| e.0 == s).map(|e| e.1)
    }

    /// The edges as `(caller, callee)` names.
    pub fn edge_names(&self) -> Vec<(String, String)> {
        self.edges.iter().map(|&(a, b)| (self.services[a].clone(), self.services[b].clone())).collect()
    }

    /// Names in order of first appearance; edges in the given order.
    fn from_edges(edges: &[[String; 2]]) -> Self {
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut services = Vec::new();
        let mut out = Vec::with_capacity(edges.len());
        for [a, b] in edges {
            let mut ends = [0usize; 2];
            for (end, name) in ends.iter_mut().zip([a, b]) {
                *end = *index.entry(name.as_str()).or_insert_with(|| {
                    services.push(name.clone());
                    services.len() - 1
                });
            }
            out.push((ends[0], ends[1]));
        }
        Self { services, edges: out }
    }

    /// Kahn's algorithm, smallest index first; shorter than `services` when there is a cycle.
    fn topo_order(&self) -> Vec<usize> {
        let n = self.services.len();
        let mut indeg = vec![0usize; n];
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(a, b) in &self.edges {
            indeg[b] += 1;
            out[a].push(b);
        }
        let mut ready: BTreeSet<usize> = (0..n).filter(|&s| indeg[s] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(s) = ready.pop_first() {
            order.push(s);
            for &c in &out[s] {
                indeg[c] -= 1;
                if indeg[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        order
    }
}

/// Marks every service reachable from `s` through `adj` (edge indices per service, followed to `end(edge)`).
fn reach(s: usize, adj: &[Vec<usize>], end: impl Fn(usize) -> usize) -> Vec<bool> {
    let mut seen = vec![false; adj.len()];
    let mut stack = vec![s];
    while let Some(x) = stack.pop() {
        for &e in &adj[x] {
            let to = end(e);
            if !seen[to] {
                seen[to] = true;
                stack.push(to);
            }
        }
    }
    seen
}

const ENTRY_NAMES: [&str; 2] = ["frontend", "api-gateway"];
/// Roughly from user-facing to supporting, so upper layers get user-facing names.
const APP_NAMES: [&str; 28] = [
    "checkout",
    "cart",
    "catalog",
    "search",
    "users",
    "orders",
    "recommendations",
    "reviews",
    "payments",
    "shipping",
    "inventory",
    "pricing",
    "auth",
    "notifications",
    "currency",
    "ads",
    "fraud-detection",
    "sessions",
    "profiles",
    "coupons",
    "tax",
    "loyalty",
    "geo",
    "media",
    "email",
    "warehouse",
    "ratings",
    "feeds",
];
const STORE_NAMES: [&str; 8] = [
    "postgres-main",
    "redis-cache",
    "kafka-queue",
    "elasticsearch",
    "mongo-catalog",
    "memcached",
    "postgres-orders",
    "object-store",
];

fn nth_name(list: &[&str], i: usize) -> String {
    let round = i / list.len();
    if round == 0 { list[i].to_owned() } else { format!("{}-{}", list[i % list.len()], round + 1) }
}

fn pick_weighted(rng: &mut ChaCha8Rng, items: &[(usize, f64)]) -> Option<usize> {
    let total: f64 = items.iter().map(|x| x.1).sum();
    if total <= 0.0 {
        return None;
    }
    let mut r = rng.gen_range(0.0..total);
    for &(item, w) in items {
        if r < w {
            return Some(item);
        }
        r -= w;
    }
    items.iter().rev().find(|x| x.1 > 0.0).map(|x| x.0)
}

/// A layered DAG: entries, layers of application services, then datastores (the leaves).
fn generate_topology(n: usize, rng: &mut ChaCha8Rng) -> Topology {
    let entries = if n >= 10 && rng.gen_bool(0.5) { 2 } else { 1 };
    let stores = ((n as f64 * rng.gen_range(0.15..0.25)).round() as usize).clamp(1, n - entries - 1);
    let apps = n - entries - stores;

    let mut layers: Vec<Vec<usize>> = vec![(0..entries).collect()];
    let mut next = entries;
    while next < entries + apps {
        let prev = layers.last().map_or(1, Vec::len);
        let size = rng.gen_range(prev.clamp(2, 3 * prev)..=3 * prev).min(entries + apps - next);
        layers.push((next..next + size).collect());
        next += size;
    }
    let app_layers = layers.len() - 1;
    layers.push((next..n).collect());
    let mut layer_of = vec![0usize; n];
    for (li, layer) in layers.iter().enumerate() {
        for &s in layer {
            layer_of[s] = li;
        }
    }

    let mut services = Vec::with_capacity(n);
    services.extend(ENTRY_NAMES.iter().take(entries).map(|s| (*s).to_owned()));
    services.extend((0..apps).map(|i| nth_name(&APP_NAMES, i)));
    services.extend((0..stores).map(|i| nth_name(&STORE_NAMES, i)));

    let mut callees: Vec<Vec<usize>> = vec![Vec::new(); n];
    // Spanning: every application service gets a caller in the layer above (3 slots each suffice by construction).
    for li in 1..=app_layers {
        for &s in &layers[li] {
            let cands: Vec<(usize, f64)> =
                layers[li - 1].iter().map(|&p| (p, 3usize.saturating_sub(callees[p].len()) as f64)).collect();
            let p = pick_weighted(rng, &cands).unwrap_or(layers[li - 1][0]);
            callees[p].push(s);
        }
    }
    // Every datastore gets a caller, preferring deeper application services.
    for s in entries + apps..n {
        let cands: Vec<(usize, f64)> = (entries..entries + apps)
            .map(|p| (p, 3usize.saturating_sub(callees[p].len()) as f64 * layer_of[p] as f64))
            .collect();
        let p = pick_weighted(rng, &cands).unwrap_or_else(|| rng.gen_range(entries..entries + apps));
        callees[p].push(s);
    }
    // Extra calls so that each non-leaf calls 1–3 services in lower layers.
    for s in 0..entries + apps {
        let target = match rng.gen_range(0..100) {
            0..30 => 1,
            30..75 => 2,
            _ => 3,
        };
        while callees[s].len() < target {
            let cands: Vec<(usize, f64)> = (0..n)
                .filter(|&c| layer_of[c] > layer_of[s] && !callees[s].contains(&c))
                .map(|c| {
                    let w = if layer_of[c] == app_layers + 1 {
                        if s < entries {
                            0.0
                        } else if layer_of[s] == app_layers {
                            4.0
                        } else {
                            2.0
                        }
                    } else if layer_of[c] == layer_of[s] + 1 {
                        3.0
                    } else {
                        1.0
                    };
                    (c, w)
                })
                .collect();
            match pick_weighted(rng, &cands) {
                Some(c) => callees[s].push(c),
                None => break,
            }
        }
    }
    let mut edges: Vec<(usize, usize)> =
        callees.iter().enumerate().flat_map(|(a, cs)| cs.iter().map(move |&b| (a, b))).collect();
    edges.sort_unstable();
    Topology { services, edges }
}

/// One injected fault: the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InjectedFault {
    pub id: usize,
    pub kind: FaultKind,
    /// The root cause.
    pub service: String,
    /// First tick affected (on the tick grid).
    pub start_ms: TimeMs,
    /// Exclusive; on the tick grid.
    pub end_ms: TimeMs,
    pub description: String,
}

/// Per-fault runtime parameters.
#[derive(Debug, Clone)]
struct FaultPlan {
    kind: FaultKind,
    target: usize,
    start_ms: TimeMs,
    end_ms: TimeMs,
    /// Ramp-in: intensity at `j` intervals after start is `min(1, (j + phase) / ramp)`.
    ramp: f64,
    phase: f64,
    /// Kind-specific magnitudes (see `schedule_faults`).
    a: f64,
    b: f64,
    c: f64,
}

#[derive(Debug, Clone)]
struct Svc {
    entry: bool,
    /// Mean request rate (req/s) at mean seasonal load.
    base_rate: f64,
    season_amp: f64,
    season_peak_h: f64,
    own50: f64,
    ratio99: f64,
    own_err: f64,
    cpu_base: f64,
    cpu_idle: f64,
    mem_base: f64,
    saw_amp: f64,
    saw_period_ms: f64,
    saw_phase_ms: f64,
    /// Per-service noise level.
    nf: f64,
    /// Steady-state values at mean load without noise.
    base50: f64,
    base_err: f64,
    /// In-flight requests at mean load (rate × p50), and the pool size as a multiple of it.
    base_conc: f64,
    pool_headroom: f64,
}

#[derive(Debug, Clone)]
struct Edge {
    caller: usize,
    callee: usize,
    fanout: f64,
    /// Call probability: weight of the callee's p50 in the caller's.
    weight: f64,
    /// Share of the callee's p99 excess that reaches the caller's p99, relative to `weight`.
    tail: f64,
    prop_err: f64,
    /// Retry amplification (1 on most edges, 1.2–2.5 on retrying ones).
    amp: f64,
    /// How much of the callee's positive latency / error deviation reaches the caller: `amp` on retrying edges,
    /// the call probability (× error propagation) on the others.
    lat_gain: f64,
    err_gain: f64,
    /// Intervals before the callee's latency and errors reach the caller (1 or 2).
    delay: usize,
}

#[derive(Debug, Clone)]
enum EventKind {
    /// Adds `mag` (in the metric's noise sigmas, decaying over the points) to one measured metric.
    Spike { metric: usize, mag: f64 },
    /// Multiplies the service's own traffic by up to `1 + dev` (local: not propagated to callees).
    Swing { dev: f64 },
}

#[derive(Debug, Clone)]
struct Event {
    tick: u64,
    len: u64,
    service: usize,
    kind: EventKind,
}

#[derive(Debug, Clone, Copy)]
struct Ou {
    phi: f64,
    innov: f64,
}

impl Ou {
    fn new(sigma: f64, tau_ms: f64, dt_ms: f64) -> Self {
        let phi = (-dt_ms / tau_ms).exp();
        Self { phi, innov: sigma * (1.0 - phi * phi).sqrt() }
    }

    #[inline]
    fn step(self, x: f64, z: f64) -> f64 {
        self.phi * x + self.innov * z
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct SvcState {
    /// Log traffic swing (entries) or fan-out drift (others).
    rate: f64,
    lat: f64,
    /// Log noise of the p99/p50 ratio.
    tail: f64,
    err: f64,
}

/// Three-tick history of the values that propagate along edges; slot `step % 3`.
#[derive(Debug, Clone)]
struct History {
    rate: Vec<f64>,
    p50: Vec<f64>,
    /// p99 excess over the service's nominal ratio (GC pauses and callees' excess), in ms.
    tail: Vec<f64>,
    err: Vec<f64>,
}

const RING: usize = 3;

/// The simulator. Create it with [`Simulator::new`], then call [`Simulator::next_tick`] until it returns false.
#[derive(Debug)]
pub struct Simulator {
    /// Deploys and config changes: most latency regressions and error bursts follow a deploy of their service;
    /// benign changes happen elsewhere too. Known up front, like the fault schedule.
    changes: Vec<ChangeEvent>,
    topo: Topology,
    faults: Vec<InjectedFault>,
    plans: Vec<FaultPlan>,
    series: Vec<Arc<SeriesKey>>,
    interval_ms: TimeMs,
    start_ms: TimeMs,
    end_ms: TimeMs,
    ticks: u64,
    noise: f64,
    svc: Vec<Svc>,
    edges: Vec<Edge>,
    out_edges: Vec<Vec<usize>>,
    in_edges: Vec<Vec<usize>>,
    events: Vec<Event>,
    next_event: usize,
    active: Vec<usize>,
    state: Vec<SvcState>,
    hist: History,
    ou_traffic: Ou,
    ou_fanout: Ou,
    ou_lat: Ou,
    ou_err: Ou,
    ou_tail: Ou,
    /// Internal steps taken, warm-up included.
    steps: u64,
    /// Next tick to emit.
    tick: u64,
    fault_cursor: usize,
    rng: ChaCha8Rng,
    spike: Vec<f64>,
    swing: Vec<f64>,
    values: Vec<f64>,
}

fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(id);
    r
}

/// A standard normal with occasional heavier tails (1.5 % of draws scaled 2.5–4×).
#[inline]
fn heavy_z(rng: &mut ChaCha8Rng) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    if rng.gen_bool(0.015) { z * rng.gen_range(2.5..4.0) } else { z }
}

impl Simulator {
    pub fn new(cfg: &SimConfig) -> Result<Self> {
        let mut problems = Vec::new();
        cfg.validate(&mut problems);
        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        let start_ms = parse_start(&cfg.start).map_err(|e| Error::config(format!("simulator.start {e}")))?;
        let interval_ms = cfg.interval.as_millis_i64();
        let end_ms = start_ms + cfg.duration.as_millis_i64();
        let ticks = u64::try_from((end_ms - start_ms + interval_ms - 1) / interval_ms)
            .map_err(|_| Error::Internal("negative tick count".to_owned()))?;

        let topo = match &cfg.edges {
            Some(edges) => Topology::from_edges(edges),
            None => generate_topology(cfg.services, &mut stream(cfg.seed, 1)),
        };
        let n = topo.services.len();
        let order = topo.topo_order();
        if order.len() != n {
            return Err(Error::Internal("call graph is not acyclic after validation".to_owned()));
        }

        // Baselines.
        let mut rng = stream(cfg.seed, 2);
        let has_caller: Vec<bool> = (0..n).map(|s| topo.callers(s).next().is_some()).collect();
        let is_leaf: Vec<bool> = (0..n).map(|s| topo.callees(s).next().is_none()).collect();
        let mut svc: Vec<Svc> = (0..n)
            .map(|s| {
                let cpu_base = rng.gen_range(0.15..0.6);
                Svc {
                    entry: !has_caller[s],
                    base_rate: rng.gen_range(200.0..1000.0),
                    season_amp: rng.gen_range(0.3..0.45),
                    season_peak_h: rng.gen_range(12.0..15.5),
                    own50: if is_leaf[s] { log_uniform(&mut rng, 2.0, 15.0) } else { log_uniform(&mut rng, 2.0, 40.0) },
                    ratio99: rng.gen_range(3.0..6.0),
                    own_err: log_uniform(&mut rng, 0.0005, 0.005),
                    cpu_base,
                    cpu_idle: rng.gen_range(0.02f64..0.08).min(cpu_base * 0.5),
                    mem_base: rng.gen_range(0.3..0.6),
                    saw_amp: rng.gen_range(0.02..0.06),
                    saw_period_ms: rng.gen_range(8.0..24.0) * HOUR_MS as f64,
                    saw_phase_ms: rng.gen_range(0.0..24.0) * HOUR_MS as f64,
                    nf: log_uniform(&mut rng, 0.5, 2.0),
                    pool_headroom: rng.gen_range(4.0..8.0),
                    base50: 0.0,
                    base_err: 0.0,
                    base_conc: 0.0,
                }
            })
            .collect();
        let edges: Vec<Edge> = topo
            .edges
            .iter()
            .map(|&(caller, callee)| {
                let fanout: f64 = rng.gen_range(0.3..2.0);
                let weight = rng.gen_range(0.3..0.9);
                let prop_err = rng.gen_range(0.3..0.9);
                let retrying = rng.gen_bool(0.35);
                let amp = if retrying { rng.gen_range(1.2..2.5) } else { 1.0 };
                Edge {
                    caller,
                    callee,
                    fanout,
                    weight,
                    tail: rng.gen_range(0.5..0.9),
                    prop_err,
                    amp,
                    lat_gain: if retrying { amp } else { weight },
                    err_gain: if retrying { amp } else { weight * prop_err },
                    delay: rng.gen_range(1..=2),
                }
            })
            .collect();
        let mut out_edges = vec![Vec::new(); n];
        let mut in_edges = vec![Vec::new(); n];
        for (i, e) in edges.iter().enumerate() {
            out_edges[e.caller].push(i);
            in_edges[e.callee].push(i);
        }
        for &s in &order {
            if !svc[s].entry {
                svc[s].base_rate = in_edges[s].iter().map(|&e| edges[e].fanout * svc[edges[e].caller].base_rate).sum();
            }
        }
        for &s in order.iter().rev() {
            let (mut l50, mut ok) = (svc[s].own50, 1.0 - svc[s].own_err);
            for &e in &out_edges[s] {
                let (e, c) = (&edges[e], &svc[edges[e].callee]);
                l50 += e.weight * c.base50;
                ok *= 1.0 - e.weight * e.prop_err * c.base_err;
            }
            svc[s].base50 = l50;
            svc[s].base_err = 1.0 - ok;
            svc[s].base_conc = svc[s].base_rate * l50 / 1000.0;
        }
        // Longest path, for the warm-up length.
        let mut depth = vec![0usize; n];
        for &s in order.iter().rev() {
            depth[s] = out_edges[s].iter().map(|&e| depth[edges[e].callee] + 1).max().unwrap_or(0);
        }
        let max_depth = depth.iter().copied().max().unwrap_or(0);

        // Fault schedule.
        let (plans, faults) = schedule_faults(cfg, &topo, &svc, start_ms, end_ms, interval_ms);

        // Distractors: benign spikes everywhere, plus 1–2 off-path events per fault.
        let mut events = Vec::new();
        let mut rng = stream(cfg.seed, 4);
        if cfg.benign_spikes > 0.0 {
            let per_ms = cfg.benign_spikes / DAY_MS as f64;
            let exp = Exp::new(per_ms).map_err(|e| Error::Internal(format!("spike rate: {e}")))?;
            for s in 0..n {
                let mut t = exp.sample(&mut rng);
                while t < (end_ms - start_ms) as f64 {
                    let tick = (t / interval_ms as f64) as u64;
                    events.push(Event { tick, len: rng.gen_range(1..=3), service: s, kind: random_spike(&mut rng) });
                    t += exp.sample(&mut rng);
                }
            }
        }
        let mut rng = stream(cfg.seed, 5);
        for p in &plans {
            let up = reach(p.target, &in_edges, |e| edges[e].caller);
            let down = reach(p.target, &out_edges, |e| edges[e].callee);
            let off: Vec<usize> = (0..n).filter(|&s| s != p.target && !up[s] && !down[s]).collect();
            if off.is_empty() {
                continue;
            }
            let first = ((p.start_ms - start_ms) / interval_ms - 2).max(0) as u64;
            let last = ((p.end_ms - start_ms) / interval_ms) as u64;
            for _ in 0..rng.gen_range(1..=2) {
                let service = off[rng.gen_range(0..off.len())];
                let tick = rng.gen_range(first..last.max(first + 1));
                let (len, kind) = if rng.gen_bool(0.5) {
                    (rng.gen_range(1..=3), random_spike(&mut rng))
                } else {
                    let dev = rng.gen_range(0.3..0.8) * if rng.gen_bool(0.8) { 1.0 } else { -0.6 };
                    (rng.gen_range(3..=8), EventKind::Swing { dev })
                };
                events.push(Event { tick, len, service, kind });
            }
        }
        events.sort_by_key(|e| e.tick);

        let series: Vec<Arc<SeriesKey>> = topo
            .services
            .iter()
            .flat_map(|s| METRICS.iter().map(move |m| Arc::new(SeriesKey::new(s, m, [] as [(&str, &str); 0]))))
            .collect();

        let dt = interval_ms as f64;
        let noise = cfg.noise;
        let ou_traffic = Ou::new(0.08 * noise, 2.0 * HOUR_MS as f64, dt);
        let ou_fanout = Ou::new(0.03 * noise, HOUR_MS as f64, dt);
        let ou_lat = Ou::new(0.03 * noise, 15.0 * MINUTE_MS as f64, dt);
        let ou_err = Ou::new(0.12 * noise, 20.0 * MINUTE_MS as f64, dt);
        let ou_tail = Ou::new(0.05 * noise, 10.0 * MINUTE_MS as f64, dt);
        let mut rng = stream(cfg.seed, 6);
        let state: Vec<SvcState> = svc
            .iter()
            .map(|p| {
                let zr: f64 = rng.sample(StandardNormal);
                let zl: f64 = rng.sample(StandardNormal);
                let ze: f64 = rng.sample(StandardNormal);
                let zt: f64 = rng.sample(StandardNormal);
                let rate_sigma = if p.entry { 0.08 } else { 0.03 };
                SvcState {
                    rate: zr * rate_sigma * noise,
                    lat: zl * 0.03 * noise,
                    tail: zt * 0.05 * noise,
                    err: ze * 0.12 * noise,
                }
            })
            .collect();
        let ring = |f: fn(&Svc) -> f64| -> Vec<f64> { (0..RING).flat_map(|_| svc.iter().map(f)).collect() };
        let hist = History {
            rate: ring(|s| s.base_rate),
            p50: ring(|s| s.base50),
            tail: vec![0.0; RING * n],
            err: ring(|s| s.base_err),
        };

        let changes = plan_changes(cfg.seed, &topo, &faults, start_ms, end_ms, interval_ms);
        let mut sim = Self {
            changes,
            topo,
            faults,
            plans,
            series,
            interval_ms,
            start_ms,
            end_ms,
            ticks,
            noise,
            svc,
            edges,
            out_edges,
            in_edges,
            events,
            next_event: 0,
            active: Vec::new(),
            state,
            hist,
            ou_traffic,
            ou_fanout,
            ou_lat,
            ou_err,
            ou_tail,
            steps: 0,
            tick: 0,
            fault_cursor: 0,
            rng,
            spike: vec![0.0; n * NM],
            swing: vec![1.0; n],
            values: vec![0.0; n * NM],
        };
        // Warm up so that propagated rates and latencies start consistent with the start time.
        let warm = 2 * max_depth as i64 + 3;
        for w in (1..=warm).rev() {
            sim.advance(start_ms - w * interval_ms, false);
        }
        Ok(sim)
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The whole fault schedule (the ground truth), in time order.
    pub fn faults(&self) -> &[InjectedFault] {
        &self.faults
    }

    /// Change events (deploys, config changes), in time order.
    pub fn changes(&self) -> &[ChangeEvent] {
        &self.changes
    }

    /// Services × [`METRICS`], service-major; the order of every tick's points.
    pub fn series(&self) -> &[Arc<SeriesKey>] {
        &self.series
    }

    pub fn interval_ms(&self) -> TimeMs {
        self.interval_ms
    }

    pub fn start_ms(&self) -> TimeMs {
        self.start_ms
    }

    /// Exclusive end of the run.
    pub fn end_ms(&self) -> TimeMs {
        self.end_ms
    }

    pub fn total_points(&self) -> u64 {
        self.ticks * self.series.len() as u64
    }

    /// Appends one interval's points (every series, in `series()` order, all with the tick's event time) to `out`.
    /// Returns false, leaving `out` untouched, when the run is over.
    pub fn next_tick(&mut self, out: &mut Batch) -> bool {
        if self.tick >= self.ticks {
            return false;
        }
        let t = self.start_ms + self.tick as i64 * self.interval_ms;
        self.advance(t, true);
        self.tick += 1;
        out.ids.reserve(self.series.len());
        out.keys.reserve(self.series.len());
        out.times.reserve(self.series.len());
        out.values.reserve(self.series.len());
        for (key, &v) in self.series.iter().zip(&self.values) {
            out.push(key, t, v);
        }
        true
    }

    /// One step of the dynamics at time `t`; with `emit`, also applies distractors and measurement noise into
    /// `self.values` for tick `self.tick`.
    fn advance(&mut self, t: TimeMs, emit: bool) {
        let n = self.svc.len();
        let cur = (self.steps % RING as u64) as usize * n;
        let prev1 = ((self.steps + RING as u64 - 1) % RING as u64) as usize * n;
        let prev2 = ((self.steps + RING as u64 - 2) % RING as u64) as usize * n;
        self.steps += 1;

        // The active faults: none, one, or a concurrent pair (twins start and end together, so plans stay sorted
        // by start and by end).
        while self.fault_cursor < self.plans.len() && self.plans[self.fault_cursor].end_ms <= t {
            self.fault_cursor += 1;
        }
        let faults: Vec<FaultPlan> =
            self.plans[self.fault_cursor..].iter().take_while(|p| p.start_ms <= t).cloned().collect();
        // Intensity ramps in over 1–2 intervals; progress runs 0 → 1 over the fault.
        let interval_ms = self.interval_ms as f64;
        let shape = |p: &FaultPlan| {
            let j = (t - p.start_ms) as f64 / interval_ms;
            (((j + p.phase) / p.ramp).min(1.0), j / ((p.end_ms - p.start_ms) as f64 / interval_ms))
        };

        // Distractors for this tick.
        if emit {
            let k = self.tick;
            self.spike.fill(0.0);
            self.swing.fill(1.0);
            while self.next_event < self.events.len() && self.events[self.next_event].tick <= k {
                self.active.push(self.next_event);
                self.next_event += 1;
            }
            let events = &self.events;
            self.active.retain(|&i| events[i].tick + events[i].len > k);
            for &i in &self.active {
                let ev = &events[i];
                let j = k - ev.tick;
                match ev.kind {
                    EventKind::Spike { metric, mag } => {
                        self.spike[ev.service * NM + metric] += mag * 0.6f64.powi(j as i32);
                    }
                    EventKind::Swing { dev } => {
                        let shape = ((j + 1) as f64 / 2.0).min((ev.len - j) as f64 / 2.0).min(1.0);
                        self.swing[ev.service] *= 1.0 + dev * shape * self.noise.min(1.5);
                    }
                }
            }
        }

        let hod = (t.rem_euclid(DAY_MS)) as f64 / HOUR_MS as f64;
        let interval_s = self.interval_ms as f64 / 1000.0;
        let noise = self.noise;
        let (ou_traffic, ou_fanout, ou_lat, ou_err, ou_tail) =
            (self.ou_traffic, self.ou_fanout, self.ou_lat, self.ou_err, self.ou_tail);
        let Self { svc, edges, out_edges, in_edges, state, hist, rng, values, spike, swing, .. } = self;
        for s in 0..n {
            let p = &svc[s];
            let st = &mut state[s];
            let zr: f64 = rng.sample(StandardNormal);
            let zl: f64 = rng.sample(StandardNormal);
            let ze: f64 = rng.sample(StandardNormal);
            let zt: f64 = rng.sample(StandardNormal);
            st.tail = ou_tail.step(st.tail, zt);
            st.rate = if p.entry { ou_traffic.step(st.rate, zr) } else { ou_fanout.step(st.rate, zr) };
            st.lat = ou_lat.step(st.lat, zl);
            st.err = ou_err.step(st.err, ze);

            // The active fault's plan, at its target only.
            let fx = faults.iter().find(|f| f.target == s);
            let (intensity, progress) = fx.map_or((0.0, 0.0), shape);

            // Traffic.
            let mut rate = if p.entry {
                let season = 1.0 + p.season_amp * (std::f64::consts::TAU * (hod - p.season_peak_h) / 24.0).cos();
                p.base_rate * season
            } else {
                let err_prev = hist.err[prev1 + s];
                in_edges[s]
                    .iter()
                    .map(|&e| {
                        let e = &edges[e];
                        // Retries of this service's errors on retrying edges (at most one per failed call).
                        let retry = (e.amp - 1.0).min(1.0) * (err_prev - svc[s].base_err).max(0.0);
                        e.fanout * hist.rate[prev1 + e.caller] * (1.0 + retry)
                    })
                    .sum()
            };
            rate *= st.rate.exp();
            if let Some(f) = fx.filter(|f| f.kind == FaultKind::TrafficSurge) {
                rate *= 1.0 + (f.a - 1.0) * intensity;
            }
            hist.rate[cur + s] = rate;
            let rate_local = rate * swing[s];
            let load = rate_local / p.base_rate;

            // Memory (needed for GC effects).
            let saw = ((t as f64 + p.saw_phase_ms) / p.saw_period_ms).fract();
            let mut mem = p.mem_base + p.saw_amp * saw;
            let mut gc = 0.0;
            let mut oom = 0.0;
            if let Some(f) = fx.filter(|f| f.kind == FaultKind::MemoryLeak) {
                let prog = (progress / f.b).clamp(0.0, 1.0);
                mem += (f.a - mem).max(0.0) * prog;
                gc = ((mem - 0.85) / 0.12).clamp(0.0, 1.0);
                oom = f.c * gc;
            }

            // CPU, load factor, queue.
            let demand = p.cpu_idle + (p.cpu_base - p.cpu_idle) * load + 0.12 * gc;
            let overload = (demand - 1.0).max(0.0);
            let rho = demand.min(1.0);
            let congestion = if rho > 0.8 { 4.0 * (rho - 0.8).powi(2) / (1.05 - rho) } else { 0.0 };
            let lf = (1.0 + 0.15 * (load - 1.0)).max(0.8) + congestion + 2.0 * overload.min(2.0);
            let mut cpu = rho;
            let mut lat_extra = 0.0;
            let mut err_add = 0.1 * overload.min(1.5) + oom;
            if let Some(f) = fx {
                match f.kind {
                    FaultKind::LatencyRegression => lat_extra = (f.a - 1.0) * intensity,
                    FaultKind::ErrorBurst => err_add += f.a * intensity,
                    FaultKind::CpuSaturation => {
                        cpu += (f.a - cpu).max(0.0) * intensity;
                        lat_extra = (f.b - 1.0) * intensity;
                        err_add += 0.005 * intensity;
                    }
                    FaultKind::FailingDependency => {
                        err_add += f.a * intensity;
                        lat_extra = (f.b - 1.0) * intensity;
                    }
                    FaultKind::MemoryLeak | FaultKind::TrafficSurge => {}
                }
            }

            // Latency and errors, with callee values from 1–2 intervals ago.
            let mut l50 = p.own50 * lf * st.lat.exp() + lat_extra * p.base50 * lf;
            let mut tail_in = 0.0;
            let mut ok = 1.0 - (p.own_err * st.err.exp() + err_add).min(1.0);
            for &e in &out_edges[s] {
                let e = &edges[e];
                let c = e.callee;
                let at = if e.delay == 1 { prev1 } else { prev2 } + c;
                let cs = &svc[c];
                let (c50, cerr) = (hist.p50[at], hist.err[at]);
                // Baseline share by call probability; a positive deviation passes in full × amp on retrying edges.
                let dev50 = c50 - cs.base50;
                l50 += e.weight * cs.base50 + dev50 * if dev50 > 0.0 { e.lat_gain } else { e.weight };
                tail_in += e.tail * e.lat_gain * hist.tail[at];
                let share = e.weight * e.prop_err;
                let dev_err = cerr - cs.base_err;
                let ce = share * cs.base_err + dev_err * if dev_err > 0.0 { e.err_gain } else { share };
                ok *= 1.0 - ce.clamp(0.0, 1.0);
            }
            // p99 is the service's own 3–6× of p50 (with its own slow noise), plus tail excess: GC pauses here and
            // the callees' excess, which is what makes a callee's tail visible in its callers' p99.
            let nominal99 = p.ratio99 * l50 * st.tail.exp();
            let excess = nominal99 * 2.0 * gc.powf(1.5) + tail_in;
            let l99 = nominal99 + excess;
            l50 *= 1.0 + 0.3 * gc;
            let err = (1.0 - ok).clamp(0.0, 1.0);
            // Queue saturation: CPU run queue and the request pool (in-flight requests = rate × latency, so a
            // slow callee fills its callers' pools too); in-flight requests also hold memory.
            let conc = (rate_local * l50 / 1000.0) / p.base_conc.max(1e-9);
            let cpu_queue = (0.01 + 0.03 * cpu + 0.95 * cpu.powi(10) + 0.5 * overload).min(1.0);
            let pool = (conc / p.pool_headroom).powi(2).min(1.0);
            let queue = 1.0 - (1.0 - cpu_queue) * (1.0 - pool);
            let mem = (mem + 0.02 * (conc - 1.0).clamp(-0.5, 5.0)).clamp(0.0, 1.0);
            hist.p50[cur + s] = l50;
            hist.tail[cur + s] = excess;
            hist.err[cur + s] = err;

            if !emit {
                continue;
            }
            // Measurement: log-normal noise with heavier tails, distractor spikes, physical bounds.
            let sig = |m: usize| METRIC_SIGMA[m] * p.nf * noise;
            let v = &mut values[s * NM..(s + 1) * NM];
            let sp = &spike[s * NM..(s + 1) * NM];
            let meas = |m: usize, x: f64, rng: &mut ChaCha8Rng| -> f64 { x * (sig(m) * (heavy_z(rng) + sp[m])).exp() };
            v[M_RATE] = meas(M_RATE, rate_local, rng);
            let p50 = meas(M_P50, l50, rng);
            v[M_P50] = p50;
            v[M_P99] = meas(M_P99, l99, rng).max(p50 * 1.05);
            let requests = (rate_local * interval_s).max(1.0);
            let bin = (err * (1.0 - err) / requests).sqrt();
            let zb = heavy_z(rng);
            let ze = heavy_z(rng);
            let rel = (sig(M_ERR).powi(2) + (bin * noise / err.max(1e-9)).powi(2)).sqrt().min(1.0);
            v[M_ERR] = ((err + bin * noise * zb) * (sig(M_ERR) * ze).exp() * (rel * sp[M_ERR]).exp()).clamp(0.0, 1.0);
            v[M_CPU] = meas(M_CPU, cpu, rng).clamp(0.0, 1.0);
            v[M_MEM] = meas(M_MEM, mem, rng).clamp(0.0, 1.0);
            v[M_QUEUE] = meas(M_QUEUE, queue, rng).clamp(0.0, 1.0);
        }
    }
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (rng.gen_range(lo.ln()..hi.ln())).exp()
}

fn random_spike(rng: &mut ChaCha8Rng) -> EventKind {
    let metric = rng.gen_range(0..NM);
    let mut mag = rng.gen_range(4.0..10.0);
    if metric == M_RATE && rng.gen_bool(0.5) {
        mag = -mag;
    }
    EventKind::Spike { metric, mag }
}

/// Lays out the faults: starts on the tick grid after `fault-free`, one per `fault-spacing` with ±10 % jitter,
/// lasting 20–45 minutes (at least 3 intervals) and ending at least one interval before the next starts.
fn schedule_faults(
    cfg: &SimConfig,
    topo: &Topology,
    svc: &[Svc],
    start_ms: TimeMs,
    end_ms: TimeMs,
    interval_ms: TimeMs,
) -> (Vec<FaultPlan>, Vec<InjectedFault>) {
    let mut rng = stream(cfg.seed, 3);
    // Twins (`concurrent`) draw from their own stream, so the first faults are the same with and without them.
    let mut twin_rng = stream(cfg.seed, 8);
    let mut kinds = cfg.fault_kinds.clone();
    kinds.shuffle(&mut rng);
    if kinds.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let spacing = cfg.fault_spacing.as_millis_i64();
    let first = start_ms.saturating_add(cfg.fault_free.as_millis_i64());
    let align = |t: i64| start_ms + (t - start_ms + interval_ms - 1).div_euclid(interval_ms) * interval_ms;
    let mut starts = Vec::new();
    for i in 0i64.. {
        let nominal = first.saturating_add(i.saturating_mul(spacing)).saturating_add(spacing / 10);
        if nominal.saturating_sub(spacing / 10) >= end_ms {
            break;
        }
        let jitter = (rng.gen_range(-0.1..=0.1) * spacing as f64) as i64;
        let s = align(nominal.saturating_add(jitter).max(first));
        if s >= end_ms {
            break;
        }
        starts.push(s);
    }

    let n = topo.services.len();
    let entries: Vec<usize> = (0..n).filter(|&s| svc[s].entry).collect();
    let non_entry: Vec<usize> = (0..n).filter(|&s| !svc[s].entry).collect();
    let leaves: Vec<usize> = (0..n).filter(|&s| topo.callees(s).next().is_none()).collect();
    let all: Vec<usize> = (0..n).collect();

    let mut plans = Vec::new();
    let mut faults = Vec::new();
    let mut last_target = usize::MAX;
    // Faults scheduled one per start (not counting concurrent twins): the kind cycle follows them.
    let mut primaries = 0usize;
    for (i, &s) in starts.iter().enumerate() {
        let mut len = rng.gen_range(20 * MINUTE_MS..=45 * MINUTE_MS).max(3 * interval_ms);
        len = (len + interval_ms - 1) / interval_ms * interval_ms;
        if let Some(&next) = starts.get(i + 1) {
            len = len.min(next - s - interval_ms);
        }
        len = len.min(end_ms - s);
        if len < 2 * interval_ms {
            continue;
        }
        let kind = kinds[primaries % kinds.len()];
        let cands = match kind {
            FaultKind::LatencyRegression | FaultKind::ErrorBurst => &non_entry,
            FaultKind::CpuSaturation | FaultKind::MemoryLeak => &all,
            FaultKind::FailingDependency => &leaves,
            FaultKind::TrafficSurge => &entries,
        };
        if cands.is_empty() {
            continue;
        }
        let fresh: Vec<usize> = cands.iter().copied().filter(|&c| c != last_target).collect();
        let pool = if fresh.is_empty() { cands } else { &fresh };
        let target = pool[rng.gen_range(0..pool.len())];
        last_target = target;
        let name = &topo.services[target];
        let (a, b, c, description) = match kind {
            FaultKind::LatencyRegression => {
                let m = rng.gen_range(1.6..3.0);
                (m, 0.0, 0.0, format!("latency regression ×{m:.1} in {name}"))
            }
            FaultKind::ErrorBurst => {
                let add = rng.gen_range(0.05..0.30);
                (add, 0.0, 0.0, format!("error burst in {name}: error rate up {:.0} points", add * 100.0))
            }
            FaultKind::CpuSaturation => {
                let (cpu, m) = (rng.gen_range(0.93..1.0), rng.gen_range(2.0..4.0));
                (cpu, m, 0.0, format!("CPU saturation in {name}: CPU at {:.0} %, latency ×{m:.1}", cpu * 100.0))
            }
            FaultKind::MemoryLeak => {
                let (to, ramp_end, oom) =
                    (rng.gen_range(0.95..0.985), rng.gen_range(0.55..0.75), rng.gen_range(0.005..0.03));
                (
                    to,
                    ramp_end,
                    oom,
                    format!(
                        "memory leak in {name}: memory climbs to {:.0} %, GC pauses slow p99 and OOM restarts add errors",
                        to * 100.0
                    ),
                )
            }
            FaultKind::FailingDependency => {
                let (err, m) = (rng.gen_range(0.2..0.6), rng.gen_range(3.0..6.0));
                (
                    err,
                    m,
                    0.0,
                    format!("failing dependency {name}: {:.0} % errors and latency ×{m:.1} from timeouts", err * 100.0),
                )
            }
            FaultKind::TrafficSurge => {
                let m = rng.gen_range(2.0..4.0);
                (m, 0.0, 0.0, format!("traffic surge ×{m:.1} at entry service {name}"))
            }
        };
        let id = faults.len();
        plans.push(FaultPlan {
            kind,
            target,
            start_ms: s,
            end_ms: s + len,
            ramp: rng.gen_range(1.0..2.0),
            phase: rng.gen_range(0.3..0.8),
            a,
            b,
            c,
        });
        faults.push(InjectedFault { id, kind, service: name.clone(), start_ms: s, end_ms: s + len, description });
        primaries += 1;
        if cfg.concurrent {
            let twin_kind = kinds[primaries % kinds.len()];
            let twin_cands = match twin_kind {
                FaultKind::LatencyRegression | FaultKind::ErrorBurst => &non_entry,
                FaultKind::CpuSaturation | FaultKind::MemoryLeak => &all,
                FaultKind::FailingDependency => &leaves,
                FaultKind::TrafficSurge => &entries,
            };
            let dist = undirected_distances(topo, target);
            let far = twin_cands.iter().copied().filter(|&c| c != target).max_by_key(|&c| (dist[c], usize::MAX - c));
            if let Some(twin) = far {
                // Same shape as the first fault, the twin kind's typical magnitude, from a stream of its own.
                let (a, b, c) = twin_magnitudes(twin_kind, &mut twin_rng);
                let tname = &topo.services[twin];
                plans.push(FaultPlan { kind: twin_kind, target: twin, a, b, c, ..plans[plans.len() - 1].clone() });
                faults.push(InjectedFault {
                    id: faults.len(),
                    kind: twin_kind,
                    service: tname.clone(),
                    start_ms: s,
                    end_ms: s + len,
                    description: format!("{twin_kind} in {tname}, concurrent with fault {id}"),
                });
            }
        }
    }
    (plans, faults)
}

/// Hops from `from` to every service, following edges in either direction (`usize::MAX`: unreachable).
fn undirected_distances(topo: &Topology, from: usize) -> Vec<usize> {
    let mut dist = vec![usize::MAX; topo.services.len()];
    dist[from] = 0;
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(u) = queue.pop_front() {
        for v in topo.callers(u).chain(topo.callees(u)) {
            if dist[v] == usize::MAX {
                dist[v] = dist[u] + 1;
                queue.push_back(v);
            }
        }
    }
    dist
}

/// Magnitudes of a concurrent twin fault, in the ranges of `schedule_faults`.
fn twin_magnitudes(kind: FaultKind, rng: &mut ChaCha8Rng) -> (f64, f64, f64) {
    match kind {
        FaultKind::LatencyRegression => (rng.gen_range(1.6..3.0), 0.0, 0.0),
        FaultKind::ErrorBurst => (rng.gen_range(0.05..0.30), 0.0, 0.0),
        FaultKind::CpuSaturation => (rng.gen_range(0.93..1.0), rng.gen_range(2.0..4.0), 0.0),
        FaultKind::MemoryLeak => (rng.gen_range(0.95..0.985), rng.gen_range(0.55..0.75), rng.gen_range(0.005..0.03)),
        FaultKind::FailingDependency => (rng.gen_range(0.2..0.6), rng.gen_range(3.0..6.0), 0.0),
        FaultKind::TrafficSurge => (rng.gen_range(2.0..4.0), 0.0, 0.0),
    }
}

/// Change events for a run, from their own seeded stream (so they do not move the telemetry): a deploy of the
/// faulty service 1–3 intervals before three in four latency regressions and error bursts, and about three benign
/// deploys or config changes per simulated day at random services.
fn plan_changes(
    seed: u64,
    topo: &Topology,
    faults: &[InjectedFault],
    start_ms: TimeMs,
    end_ms: TimeMs,
    interval_ms: TimeMs,
) -> Vec<ChangeEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00c4_a65e_d3b1_0c0d);
    let mut out = Vec::new();
    let mut version = 100u32;
    for f in faults {
        if matches!(f.kind, FaultKind::LatencyRegression | FaultKind::ErrorBurst) && rng.gen_bool(0.75) {
            version += 1;
            out.push(ChangeEvent {
                learning_pause: None,
                time: f.start_ms - rng.gen_range(1..=3) * interval_ms,
                service: f.service.clone(),
                kind: "deploy".into(),
                description: format!("deploy v1.{version} of {}", f.service),
            });
        }
    }
    let days = (end_ms - start_ms) as f64 / 86_400_000.0;
    let benign = (3.0 * days).round() as usize;
    for _ in 0..benign {
        let svc = &topo.services[rng.gen_range(0..topo.services.len())];
        let time = start_ms + rng.gen_range(0..(end_ms - start_ms).max(1));
        let time = time - time.rem_euclid(interval_ms.max(1));
        version += 1;
        let (kind, description) = if rng.gen_bool(0.5) {
            ("deploy", format!("deploy v1.{version} of {svc}"))
        } else {
            ("config", format!("config change #{version} on {svc}"))
        };
        out.push(ChangeEvent { time, service: svc.clone(), kind: kind.into(), description, learning_pause: None });
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.service.cmp(&b.service)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> HumanDuration {
        s.parse().unwrap()
    }

    /// Runs to the end; one row of values (in `series()` order) per tick.
    fn run(cfg: &SimConfig) -> (Simulator, Vec<Vec<f64>>) {
        let mut sim = Simulator::new(cfg).unwrap();
        let mut rows = Vec::new();
        let mut batch = Batch::default();
        while sim.next_tick(&mut batch) {
            rows.push(std::mem::take(&mut batch.values));
            batch.clear();
        }
        (sim, rows)
    }

    fn col(sim: &Simulator, service: usize, metric: usize) -> usize {
        let c = service * NM + metric;
        assert_eq!(*sim.series()[c].service, *sim.topology().services[service]);
        assert_eq!(&*sim.series()[c].metric, METRICS[metric]);
        c
    }

    fn tick_of(sim: &Simulator, t: TimeMs) -> usize {
        ((t - sim.start_ms()) / sim.interval_ms()) as usize
    }

    fn service_index(sim: &Simulator, name: &str) -> usize {
        sim.topology().services.iter().position(|s| s == name).unwrap()
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Noise-free, distractor-free runs with and without faults differ exactly by the faults' effects.
    fn clean(seed: u64) -> SimConfig {
        SimConfig { seed, noise: 0.0, benign_spikes: 0.0, ..SimConfig::default() }
    }

    #[test]
    fn same_seed_same_batches_different_seed_different() {
        let collect = |seed: u64| {
            let mut sim = Simulator::new(&SimConfig { seed, ..SimConfig::default() }).unwrap();
            let mut out = Vec::new();
            let mut b = Batch::default();
            while sim.next_tick(&mut b) {
                out.extend(b.ids.iter().zip(&b.times).zip(&b.values).map(|((i, t), v)| (*i, *t, v.to_bits())));
                b.clear();
            }
            (out, sim.faults().to_vec(), sim.topology().clone())
        };
        let a = collect(7);
        let b = collect(7);
        assert!(a == b, "same seed must give identical output");
        let c = collect(8);
        assert_ne!(a.0, c.0);
        assert_ne!(a.1, c.1);
    }

    #[test]
    fn every_series_every_tick_at_the_tick_time() {
        let cfg = SimConfig { duration: dur("3h 30s"), ..SimConfig::default() };
        let mut sim = Simulator::new(&cfg).unwrap();
        let n = sim.series().len();
        assert_eq!(n, 16 * METRICS.len());
        let ids: Vec<u64> = sim.series().iter().map(|k| k.id).collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), n);
        assert!(sim.series().iter().all(|k| k.labels.is_empty()));
        let mut b = Batch::default();
        let mut ticks = 0i64;
        while sim.next_tick(&mut b) {
            assert_eq!(b.len(), n);
            assert_eq!(b.ids, ids);
            assert!(b.keys.iter().zip(sim.series()).all(|(a, b)| Arc::ptr_eq(a, b)));
            let t = sim.start_ms() + ticks * sim.interval_ms();
            assert!(b.times.iter().all(|&x| x == t));
            assert!(t < sim.end_ms());
            ticks += 1;
            b.clear();
        }
        assert_eq!(ticks, 181, "3h30s at 1m is 181 ticks (the last one partial)");
        assert_eq!(sim.total_points(), 181 * n as u64);
        b.push(&sim.series()[0], 1, 2.0);
        assert!(!sim.next_tick(&mut b));
        assert_eq!(b.len(), 1, "out is untouched once the run is over");
    }

    #[test]
    fn default_run_has_twelve_faults_of_all_kinds_on_schedule() {
        let cfg = SimConfig::default();
        let sim = Simulator::new(&cfg).unwrap();
        let topo = sim.topology();
        let faults = sim.faults();
        assert_eq!(faults.len(), 12);
        let kinds: BTreeSet<FaultKind> = faults.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), 6, "all six kinds: {kinds:?}");
        // Cycled through one shuffled order.
        for f in &faults[6..] {
            assert_eq!(f.kind, faults[f.id - 6].kind);
        }
        let first = sim.start_ms() + cfg.fault_free.as_millis_i64();
        let spacing = cfg.fault_spacing.as_millis_i64();
        for (i, f) in faults.iter().enumerate() {
            assert_eq!(f.id, i);
            assert_eq!((f.start_ms - sim.start_ms()) % sim.interval_ms(), 0, "on the tick grid");
            assert_eq!((f.end_ms - sim.start_ms()) % sim.interval_ms(), 0, "on the tick grid");
            let nominal = first + i as i64 * spacing;
            assert!(f.start_ms >= nominal && f.start_ms <= nominal + spacing / 5 + sim.interval_ms(), "{f:?}");
            assert!((20 * MINUTE_MS..=45 * MINUTE_MS).contains(&(f.end_ms - f.start_ms)), "{f:?}");
            assert!(f.end_ms <= sim.end_ms());
            if let Some(next) = faults.get(i + 1) {
                assert!(f.end_ms + sim.interval_ms() <= next.start_ms, "faults overlap: {f:?} {next:?}");
            }
            let root = service_index(&sim, &f.service);
            let entry = topo.callers(root).next().is_none();
            let leaf = topo.callees(root).next().is_none();
            match f.kind {
                FaultKind::TrafficSurge => assert!(entry, "{f:?}"),
                FaultKind::FailingDependency => assert!(leaf, "{f:?}"),
                FaultKind::LatencyRegression | FaultKind::ErrorBurst => assert!(!entry, "{f:?}"),
                FaultKind::CpuSaturation | FaultKind::MemoryLeak => {}
            }
            assert!(f.description.contains(&f.service), "{}", f.description);
        }
        assert!(faults.iter().all(|f| f.start_ms >= first));
    }

    #[test]
    fn each_fault_shows_up_at_its_root_and_nowhere_before() {
        for seed in [7, 11] {
            let (sim, rows) = run(&SimConfig { seed, ..SimConfig::default() });
            for f in sim.faults() {
                let root = service_index(&sim, &f.service);
                let (k0, k1) = (tick_of(&sim, f.start_ms), tick_of(&sim, f.end_ms));
                let before = |m: usize| median(rows[k0 - 10..k0].iter().map(|r| r[col(&sim, root, m)]).collect());
                let during = |m: usize| median(rows[k0 + 3..k1].iter().map(|r| r[col(&sim, root, m)]).collect());
                let last = |m: usize| rows[k1 - 1][col(&sim, root, m)];
                let why = format!("seed {seed}: {}", f.description);
                match f.kind {
                    FaultKind::LatencyRegression => assert!(during(M_P50) >= 1.5 * before(M_P50), "{why}"),
                    FaultKind::ErrorBurst => assert!(during(M_ERR) >= before(M_ERR) + 0.04, "{why}"),
                    FaultKind::CpuSaturation => {
                        assert!(during(M_CPU) >= 0.9 && during(M_QUEUE) >= 0.4, "{why}");
                        assert!(during(M_P50) >= 1.8 * before(M_P50), "{why}");
                    }
                    FaultKind::MemoryLeak => {
                        assert!(before(M_MEM) < 0.75 && last(M_MEM) >= 0.9, "{why}");
                        assert!(last(M_P99) >= 1.8 * before(M_P99), "{why}");
                    }
                    FaultKind::FailingDependency => {
                        assert!(during(M_ERR) >= 0.15 && during(M_P50) >= 2.5 * before(M_P50), "{why}");
                    }
                    FaultKind::TrafficSurge => assert!(during(M_RATE) >= 1.8 * before(M_RATE), "{why}"),
                }
            }
        }
    }

    #[test]
    fn latency_regression_reaches_callers_one_or_two_intervals_later() {
        let mut checked = 0;
        for seed in 0..4 {
            let (sim, rows) = run(&clean(seed));
            let (_, base) = run(&SimConfig { fault_kinds: vec![], ..clean(seed) });
            let topo = sim.topology();
            for f in sim.faults().iter().filter(|f| f.kind == FaultKind::LatencyRegression) {
                let root = service_index(&sim, &f.service);
                let k0 = tick_of(&sim, f.start_ms);
                let effect = |s: usize, k: usize| rows[k][col(&sim, s, M_P50)] / base[k][col(&sim, s, M_P50)];
                assert_eq!(effect(root, k0 - 1), 1.0);
                assert!(effect(root, k0) > 1.0, "the root moves at onset");
                assert!(effect(root, k0 + 3) >= 1.5, "root p50 ×{} for {}", effect(root, k0 + 3), f.description);
                for caller in topo.callers(root) {
                    assert_eq!(effect(caller, k0), 1.0, "a caller must not move at onset");
                    let first = (k0..k0 + 10).find(|&k| effect(caller, k) > 1.0).unwrap();
                    assert!((k0 + 1..=k0 + 2).contains(&first), "caller moved at +{}", first - k0);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 4, "only {checked} callers checked");
    }

    #[test]
    fn traffic_surge_starts_at_an_entry_and_reaches_callees_one_interval_later() {
        let (sim, rows) = run(&clean(3));
        let (_, base) = run(&SimConfig { fault_kinds: vec![], ..clean(3) });
        let topo = sim.topology();
        let surges: Vec<&InjectedFault> = sim.faults().iter().filter(|f| f.kind == FaultKind::TrafficSurge).collect();
        assert!(!surges.is_empty());
        for f in surges {
            let root = service_index(&sim, &f.service);
            assert!(topo.callers(root).next().is_none(), "{} is not an entry service", f.service);
            let k0 = tick_of(&sim, f.start_ms);
            let effect = |s: usize, m: usize, k: usize| rows[k][col(&sim, s, m)] / base[k][col(&sim, s, m)];
            assert!(effect(root, M_RATE, k0) > 1.0);
            assert!(effect(root, M_RATE, k0 + 3) >= 2.0);
            for callee in topo.callees(root) {
                assert_eq!(effect(callee, M_RATE, k0), 1.0);
                assert!(effect(callee, M_RATE, k0 + 1) > 1.0);
                assert!(effect(callee, M_CPU, k0 + 4) > 1.0);
            }
        }
    }

    #[test]
    fn validate_reports_every_problem_by_field() {
        let cfg = SimConfig {
            services: 2,
            interval: dur("0s"),
            start: "yesterday".to_owned(),
            fault_spacing: dur("0s"),
            noise: f64::NAN,
            benign_spikes: -1.0,
            ..SimConfig::default()
        };
        let mut problems = Vec::new();
        cfg.validate(&mut problems);
        for field in ["services", "interval", "start", "fault-spacing", "noise", "benign-spikes"] {
            let name = format!("simulator.{field} ");
            assert!(problems.iter().any(|p| p.starts_with(&name)), "no problem for {name}in {problems:#?}");
        }
        match Simulator::new(&cfg) {
            Err(Error::Config(all)) => assert_eq!(all, problems),
            other => panic!("expected a config error, got {other:?}"),
        }

        let cfg = SimConfig {
            interval: dur("5m"),
            duration: dur("1m"),
            fault_spacing: dur("10m"),
            noise: -0.5,
            edges: Some(vec![
                ["web".into(), "api".into()],
                ["api".into(), "api".into()],
                ["web".into(), "api".into()],
                ["".into(), "db".into()],
            ]),
            ..SimConfig::default()
        };
        let mut problems = Vec::new();
        cfg.validate(&mut problems);
        let text = problems.join("\n");
        for needle in [
            "simulator.duration (1m) must be at least one simulator.interval (5m)",
            "simulator.fault-spacing",
            "simulator.noise",
            "simulator.edges[1]: \"api\" calls itself",
            "simulator.edges[2]: duplicate edge",
            "simulator.edges[3]: service name \"\" is empty",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
        assert_eq!(problems.len(), 6, "{text}");

        let cyclic = [["a", "b"], ["b", "c"], ["c", "a"], ["c", "d"], ["x", "a"]];
        let cfg = SimConfig {
            edges: Some(cyclic.map(|[a, b]| [a.to_owned(), b.to_owned()]).to_vec()),
            ..SimConfig::default()
        };
        let mut problems = Vec::new();
        cfg.validate(&mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("simulator.edges must form an acyclic call graph"), "{problems:?}");
        assert!(problems[0].contains("a, b, c") && !problems[0].contains('x'), "{problems:?}");

        let mut problems = Vec::new();
        SimConfig::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn values_are_physically_valid() {
        let stress = SimConfig {
            services: 200,
            noise: MAX_NOISE,
            benign_spikes: 200.0,
            duration: dur("6h"),
            fault_free: dur("10m"),
            fault_spacing: dur("40m"),
            ..SimConfig::default()
        };
        let coarse = SimConfig { seed: 5, interval: dur("5m"), ..SimConfig::default() };
        let fine = SimConfig {
            seed: 6,
            interval: dur("15s"),
            duration: dur("8h"),
            fault_free: dur("1h"),
            fault_spacing: dur("1h"),
            ..SimConfig::default()
        };
        for cfg in [SimConfig::default(), stress, coarse, fine] {
            let (sim, rows) = run(&cfg);
            assert_eq!(rows.len() as u64 * sim.series().len() as u64, sim.total_points());
            assert!(!sim.faults().is_empty());
            for row in &rows {
                for (s, v) in row.chunks_exact(NM).enumerate() {
                    let who = &sim.topology().services[s];
                    assert!(v.iter().all(|x| x.is_finite()), "{who}: {v:?}");
                    assert!(v[M_RATE] >= 0.0 && v[M_P50] > 0.0 && v[M_P99] >= v[M_P50], "{who}: {v:?}");
                    for m in [M_ERR, M_CPU, M_MEM, M_QUEUE] {
                        assert!((0.0..=1.0).contains(&v[m]), "{who} {}: {}", METRICS[m], v[m]);
                    }
                }
            }
        }
    }

    #[test]
    fn explicit_edges_define_the_topology() {
        let edges = [["web", "api"], ["api", "db"], ["api", "cache"], ["web", "search"], ["search", "db"]];
        let cfg = SimConfig {
            services: 0, // ignored with explicit edges
            edges: Some(edges.map(|[a, b]| [a.to_owned(), b.to_owned()]).to_vec()),
            ..SimConfig::default()
        };
        let (sim, rows) = run(&cfg);
        let topo = sim.topology();
        assert_eq!(topo.services, ["web", "api", "db", "cache", "search"]);
        assert_eq!(topo.edges, [(0, 1), (1, 2), (1, 3), (0, 4), (4, 2)]);
        let names: Vec<(String, String)> = edges.iter().map(|[a, b]| ((*a).to_owned(), (*b).to_owned())).collect();
        assert_eq!(topo.edge_names(), names);
        assert_eq!(topo.callers(2).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(topo.callees(0).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(sim.series().len(), 5 * NM);
        assert_eq!(rows.len(), 2880);
        assert_eq!(sim.faults().len(), 12);
        for f in sim.faults() {
            match f.kind {
                FaultKind::TrafficSurge => assert_eq!(f.service, "web"),
                FaultKind::FailingDependency => assert!(f.service == "db" || f.service == "cache"),
                FaultKind::LatencyRegression | FaultKind::ErrorBurst => assert_ne!(f.service, "web"),
                _ => {}
            }
        }
    }

    #[test]
    fn generated_topologies_are_layered_dags() {
        for n in [4, 5, 9, 10, 16, 37, 100, 200] {
            for seed in 0..4 {
                let sim = Simulator::new(&SimConfig { seed, services: n, ..SimConfig::default() }).unwrap();
                let topo = sim.topology();
                assert_eq!(topo.services.len(), n);
                assert_eq!(topo.topo_order().len(), n, "acyclic");
                let names: BTreeSet<&String> = topo.services.iter().collect();
                assert_eq!(names.len(), n, "unique names");
                let edges: BTreeSet<(usize, usize)> = topo.edges.iter().copied().collect();
                assert_eq!(edges.len(), topo.edges.len(), "no duplicate edges");
                let entries = (0..n).filter(|&s| topo.callers(s).next().is_none()).count();
                assert!((1..=2).contains(&entries), "n={n} seed={seed}: {entries} entries");
                for s in 0..n {
                    let callees = topo.callees(s).count();
                    let store = STORE_NAMES.iter().any(|p| topo.services[s].starts_with(p));
                    assert!(callees <= 3, "{} calls {callees}", topo.services[s]);
                    assert_eq!(callees == 0, store, "{}: datastores and only datastores are leaves", topo.services[s]);
                }
            }
        }
        let sim = Simulator::new(&SimConfig::default()).unwrap();
        let names = &sim.topology().services;
        assert_eq!(names[0], "frontend");
        assert!(names.iter().any(|s| s == "postgres-main"));
        let big = Simulator::new(&SimConfig { services: 200, ..SimConfig::default() }).unwrap();
        assert!(big.topology().services.iter().any(|s| s == "checkout-2"));
    }

    #[test]
    fn concurrent_mode_adds_a_far_twin_to_every_fault_and_keeps_the_first_ones() {
        let one = Simulator::new(&SimConfig { seed: 3, ..SimConfig::default() }).unwrap();
        let two = Simulator::new(&SimConfig { seed: 3, concurrent: true, ..SimConfig::default() }).unwrap();
        let (a, b) = (one.faults(), two.faults());
        assert_eq!(b.len(), 2 * a.len(), "{b:#?}");
        for (i, f) in a.iter().enumerate() {
            let (first, twin) = (&b[2 * i], &b[2 * i + 1]);
            assert_eq!(
                (first.kind, &first.service, first.start_ms, first.end_ms),
                (f.kind, &f.service, f.start_ms, f.end_ms)
            );
            assert_eq!((twin.start_ms, twin.end_ms), (f.start_ms, f.end_ms));
            assert_ne!(twin.service, f.service);
            assert_ne!(twin.kind, f.kind);
            let topo = two.topology();
            let idx = |n: &str| topo.services.iter().position(|s| s == n).unwrap();
            let d = undirected_distances(topo, idx(&f.service));
            assert!(d[idx(&twin.service)] >= 2, "the twin is not next to the first fault: {twin:?}");
        }
    }

    #[test]
    fn config_deserializes_kebab_case_with_defaults() {
        let cfg: SimConfig = serde_json::from_str(
            r#"{"seed": 3, "interval": "30s", "fault-free": "2h", "fault-kinds": ["memory-leak", "traffic-surge"],
                "benign-spikes": 0.5, "edges": [["a", "b"]]}"#,
        )
        .unwrap();
        assert_eq!(cfg.seed, 3);
        assert_eq!(cfg.interval.as_millis_i64(), 30_000);
        assert_eq!(cfg.fault_free.as_millis_i64(), 2 * HOUR_MS);
        assert_eq!(cfg.fault_kinds, [FaultKind::MemoryLeak, FaultKind::TrafficSurge]);
        assert_eq!(cfg.duration, SimConfig::default().duration);
        assert_eq!(cfg.edges.as_deref().map(<[_]>::len), Some(1));
        assert!(serde_json::from_str::<SimConfig>(r#"{"sead": 3}"#).is_err());
        let json = serde_json::to_value(SimConfig::default()).unwrap();
        assert_eq!(json["fault-spacing"], "2h");
        assert_eq!(json["fault-kinds"][0], "latency-regression");
        for k in FaultKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn start_time_offsets_and_no_fault_runs() {
        assert_eq!(parse_start("2026-01-05T01:30:00+01:30"), parse_start("2026-01-05T00:00:00Z"));
        assert_eq!(parse_start("2026-01-04T22:00:00-02:00"), parse_start("2026-01-05T00:00:00Z"));
        assert_eq!(parse_start("2026-01-05T00:00:00Z"), Ok(1_767_571_200_000));
        assert!(parse_start("2026-01-05").is_err());
        let quiet = Simulator::new(&SimConfig { fault_free: dur("3d"), ..SimConfig::default() }).unwrap();
        assert!(quiet.faults().is_empty());
        let none = Simulator::new(&SimConfig { fault_kinds: vec![], ..SimConfig::default() }).unwrap();
        assert!(none.faults().is_empty());
    }
}
