//! Replay reports a capacity team can look at: one self-contained HTML file (inline SVG charts drawn with plotters; no
//! script, no stylesheet or font fetched from anywhere) built from a run's anomaly events and root-cause reports and
//! a second read of its input.
//!
//! The report holds the run's summary (when it was built by the run itself), a map of which services were anomalous
//! when with the incidents outlined, every incident's final report with its ranked candidates, a chart of each of the
//! most anomalous series (its values over the whole run as a min–max band and mean line, each anomaly marked at its
//! observed value with the expected value and normal band the detector gave, its service's incidents shaded), and a
//! table of every series with anomalies.
//!
//! Events come from a run's sinks ([`ReportSink`]) or from JSON-lines files a run wrote ([`Collector::read_events`]);
//! the values come from reading the configured source again (`read_points`), so only sources that can be read twice
//! (files and the simulator) can be reported on. Everything but the run summary is a function of the input and the
//! events: the same run gives the same report, byte for byte.
// Not on the hot path: the engine's shards never see this module; a run feeds it through a sink.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use crate::clock::fmt_time;
use crate::config::{Config, SourceKind};
use crate::error::{Error, Result};
use crate::event::{AnomalyEvent, Direction, RootCauseReport, Severity, Stage, num, round6};
use crate::metrics::RunSummary;
use crate::model::{Batch, SeriesId, TimeMs};
use crate::sink::Sink;
use crate::source::{DeadLetters, Source};

/// Anomaly marks kept per series; beyond it a series' anomalies are counted but not drawn.
pub const MAX_MARKS_PER_SERIES: usize = 20_000;
/// Time buckets a series' values are summarised in (min, max, mean), at most.
const BUCKETS: usize = 512;
/// Columns of the service map, and of a chart's anomaly markers (one marker per column where they crowd).
const COLUMNS: usize = 120;
const MARKER_COLUMNS: usize = 600;
/// Rows of the service map.
const MAP_SERVICES: usize = 24;
const CHART_SIZE: (u32, u32) = (1000, 260);

/// What to put in a report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Series charted, most anomalous first.
    pub charts: usize,
    /// Only series matching one of these (`service` or `service/metric`); all when empty.
    pub series: Vec<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self { charts: 12, series: Vec::new() }
    }
}

/// One anomaly event, as much of it as a chart draws (its fields as a published event names them).
#[derive(Debug, Clone, Copy, Deserialize)]
struct Mark {
    #[serde(rename = "time_ms")]
    time: TimeMs,
    observed: f64,
    expected: f64,
    lower: f64,
    upper: f64,
    score: f64,
    severity: Severity,
    direction: Direction,
    stage: Stage,
}

/// A series that had anomalies.
#[derive(Debug, Clone)]
struct SeriesAnomalies {
    service: String,
    metric: String,
    /// `k=v,…` in label order.
    labels: String,
    count: u64,
    critical: u64,
    score_sum: f64,
    max_score: f64,
    first: TimeMs,
    last: TimeMs,
    /// In arrival order (event time order within a series); at most [`MAX_MARKS_PER_SERIES`].
    marks: Vec<Mark>,
}

impl SeriesAnomalies {
    fn name(&self) -> String {
        let mut s = format!("{}/{}", self.service, self.metric);
        if !self.labels.is_empty() {
            let _ = write!(s, "{{{}}}", self.labels);
        }
        s
    }

    fn matches(&self, filters: &[String]) -> bool {
        filters.is_empty()
            || filters.iter().any(|f| match f.split_once('/') {
                Some((svc, metric)) => svc == self.service && metric == self.metric,
                None => f == &self.service,
            })
    }
}

/// One ranked root-cause candidate of an incident.
#[derive(Debug, Clone, Deserialize)]
struct CandidateRow {
    service: String,
    rank: u32,
    score: f64,
    explanation: String,
}

#[derive(Debug, Clone, Deserialize)]
struct WindowRow {
    start_ms: TimeMs,
    end_ms: TimeMs,
}

/// The latest version of one incident's root-cause report.
#[derive(Debug, Clone, Deserialize)]
struct IncidentRow {
    incident_id: String,
    report_version: u32,
    status: String,
    window: WindowRow,
    affected_services: Vec<String>,
    anomaly_count: usize,
    symptom: Option<String>,
    candidates: Vec<CandidateRow>,
    confidence: f64,
    explanation: String,
    suggestion: Option<String>,
}

/// The fields of a published anomaly event (`faultline.anomaly.v1`) a report reads.
#[derive(Deserialize)]
struct AnomalyLine {
    series_id: String,
    service: String,
    metric: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(flatten)]
    mark: Mark,
}

/// A line of a JSON-lines file of published events, by its `kind`.
#[derive(Deserialize)]
#[serde(tag = "kind")]
enum EventLine {
    #[serde(rename = "anomaly")]
    Anomaly(AnomalyLine),
    #[serde(rename = "root-cause")]
    RootCause(IncidentRow),
}

/// A run's anomaly events and root-cause reports, kept as compactly as the report needs them.
#[derive(Debug, Default)]
pub struct Collector {
    series: HashMap<SeriesId, SeriesAnomalies>,
    incidents: Vec<IncidentRow>,
    incident_at: HashMap<String, usize>,
    anomalies: u64,
}

impl Collector {
    /// Anomaly events seen.
    pub fn anomalies(&self) -> u64 {
        self.anomalies
    }

    /// Incidents seen (each counted once, whatever its number of report versions).
    pub fn incidents(&self) -> usize {
        self.incidents.len()
    }

    pub fn add_anomaly(&mut self, ev: &AnomalyEvent) {
        let k = &ev.key;
        // Rounded as the published event is (`AnomalyEvent::to_wire`), so a run's own report and one rebuilt from
        // the events it wrote are the same.
        let mark = Mark {
            time: ev.time,
            observed: ev.observed,
            expected: round6(ev.expected),
            lower: round6(ev.lower),
            upper: round6(ev.upper),
            score: round6(ev.score),
            severity: ev.severity(),
            direction: ev.direction,
            stage: ev.stage,
        };
        self.add(k.id, mark, || {
            let labels = k.labels.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",");
            (k.service.to_string(), k.metric.to_string(), labels)
        });
    }

    fn add(&mut self, id: SeriesId, mark: Mark, names: impl FnOnce() -> (String, String, String)) {
        self.anomalies += 1;
        let s = self.series.entry(id).or_insert_with(|| {
            let (service, metric, labels) = names();
            SeriesAnomalies {
                service,
                metric,
                labels,
                count: 0,
                critical: 0,
                score_sum: 0.0,
                max_score: 0.0,
                first: mark.time,
                last: mark.time,
                marks: Vec::new(),
            }
        });
        s.count += 1;
        s.critical += u64::from(mark.severity == Severity::Critical);
        s.score_sum += mark.score;
        s.max_score = s.max_score.max(mark.score);
        s.first = s.first.min(mark.time);
        s.last = s.last.max(mark.time);
        if s.marks.len() < MAX_MARKS_PER_SERIES {
            s.marks.push(mark);
        }
    }

    pub fn add_report(&mut self, r: &RootCauseReport) {
        self.put_incident(IncidentRow {
            incident_id: r.incident_id.clone(),
            report_version: r.report_version,
            status: r.status.to_string(),
            window: WindowRow { start_ms: r.window.start_ms, end_ms: r.window.end_ms },
            affected_services: r.affected_services.clone(),
            anomaly_count: r.anomaly_count,
            symptom: r.symptom.clone(),
            candidates: r
                .candidates
                .iter()
                .map(|c| CandidateRow {
                    service: c.service.clone(),
                    rank: c.rank,
                    score: c.score,
                    explanation: c.explanation.clone(),
                })
                .collect(),
            confidence: r.confidence,
            explanation: r.explanation.clone(),
            suggestion: r.suggestion.clone(),
        });
    }

    /// Keeps the latest version of each incident, in the order incidents first appeared.
    fn put_incident(&mut self, row: IncidentRow) {
        match self.incident_at.get(&row.incident_id) {
            Some(&i) if self.incidents[i].report_version <= row.report_version => self.incidents[i] = row,
            Some(_) => {}
            None => {
                self.incident_at.insert(row.incident_id.clone(), self.incidents.len());
                self.incidents.push(row);
            }
        }
    }

    /// Reads a JSON-lines file of published events (anomalies, root-cause reports or both, as a `jsonl` sink writes
    /// them; `.gz` too). A line that is not such an event is an error naming the file, the line and the field.
    pub fn read_events(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file)))
        } else {
            Box::new(std::io::BufReader::new(file))
        };
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| Error::io(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{} line {}", path.display(), i + 1);
            let event: EventLine = serde_json::from_str(&line).map_err(|e| {
                let e = e.to_string();
                // The tag's own error names the variants, not the field.
                Error::decode(at(), if e.starts_with("unknown variant") { format!("field `kind`: {e}") } else { e })
            })?;
            match event {
                EventLine::Anomaly(a) => {
                    let id = SeriesId::from_str_radix(&a.series_id, 16).map_err(|_| {
                        Error::decode(at(), format!("series_id {:?} is not 16 hex digits", a.series_id))
                    })?;
                    let labels = a.labels.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",");
                    self.add(id, a.mark, || (a.service, a.metric, labels));
                }
                EventLine::RootCause(r) => self.put_incident(r),
            }
        }
        Ok(())
    }
}

/// A sink that feeds a shared [`Collector`] (what `faultline run --report` adds to a run's sinks).
#[derive(Clone, Default)]
pub struct ReportSink(pub Arc<Mutex<Collector>>);

impl ReportSink {
    pub fn take(&self) -> Collector {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Sink for ReportSink {
    fn anomaly(&mut self, ev: &AnomalyEvent) -> Result<()> {
        self.0.lock().map_err(|_| Error::Internal("report collector lock poisoned".into()))?.add_anomaly(ev);
        Ok(())
    }

    fn report(&mut self, r: &RootCauseReport) -> Result<()> {
        self.0.lock().map_err(|_| Error::Internal("report collector lock poisoned".into()))?.add_report(r);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Whether a report can be built for runs of `cfg`: its source must be readable a second time.
pub fn check_source(cfg: &Config) -> Result<()> {
    match cfg.source.kind {
        SourceKind::Kafka => Err(Error::config(
            "a report reads the run's input again, and source.kind = \"kafka\" is a live stream: write the events \
             with a jsonl sink, replay the same telemetry from a file, and report on that",
        )),
        SourceKind::OtlpHttp => Err(Error::config(
            "a report reads the run's input again, and source.kind = \"otlp-http\" receives it once: write the \
             telemetry to a file as well and report on a replay of it",
        )),
        SourceKind::Jsonl | SourceKind::Table if cfg.source.path.trim() == "-" => Err(Error::config(
            "a report reads the run's input again, and source.path = \"-\" (standard input) can be read only once",
        )),
        _ => Ok(()),
    }
}

/// One time bucket of a series' values.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    min: f64,
    max: f64,
    sum: f64,
    n: u32,
}

const EMPTY: Bucket = Bucket { min: f64::INFINITY, max: f64::NEG_INFINITY, sum: 0.0, n: 0 };

impl Bucket {
    fn merge(self, o: Bucket) -> Bucket {
        Bucket { min: self.min.min(o.min), max: self.max.max(o.max), sum: self.sum + o.sum, n: self.n + o.n }
    }
}

/// A series' values over the run in at most [`BUCKETS`] buckets: buckets start one millisecond wide and double
/// (merging neighbours) whenever a point falls past the last, so memory is fixed whatever the run's length.
#[derive(Debug, Clone)]
struct Envelope {
    start: TimeMs,
    width: i64,
    buckets: Vec<Bucket>,
}

impl Envelope {
    fn new() -> Self {
        Self { start: 0, width: 1, buckets: Vec::new() }
    }

    fn add(&mut self, t: TimeMs, v: f64) {
        if !v.is_finite() {
            return;
        }
        if self.buckets.is_empty() {
            self.start = t;
        }
        // A point older than the first (a late point) joins the first bucket.
        let mut i = (t.saturating_sub(self.start).max(0) / self.width) as usize;
        while i >= BUCKETS {
            let merged: Vec<Bucket> =
                self.buckets.chunks(2).map(|p| p.iter().fold(EMPTY, |a, b| a.merge(*b))).collect();
            self.buckets = merged;
            self.width = self.width.saturating_mul(2);
            i = (t.saturating_sub(self.start).max(0) / self.width) as usize;
        }
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, EMPTY);
        }
        let b = &mut self.buckets[i];
        b.min = b.min.min(v);
        b.max = b.max.max(v);
        b.sum += v;
        b.n += 1;
    }

    /// `(bucket midpoint, bucket)` of every bucket holding points.
    fn filled(&self) -> impl Iterator<Item = (TimeMs, Bucket)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.n > 0)
            .map(|(i, b)| (self.start + i as i64 * self.width + self.width / 2, *b))
    }
}

/// What the second read of the input gave.
#[derive(Debug)]
pub struct PointPass {
    pub points: u64,
    pub series: usize,
    pub dead_letters: u64,
    /// Earliest and latest event time (`None` for an empty input).
    pub span: Option<(TimeMs, TimeMs)>,
    envelopes: HashMap<SeriesId, Envelope>,
}

/// Reads `source` to its end, summarising the values of the series in `want` (dead letters are counted, not written:
/// the run wrote them already; points past `max_future`, the run's `source.max-future`, are among them).
fn read_points(source: &mut dyn Source, want: &HashSet<SeriesId>, max_future: Option<TimeMs>) -> Result<PointPass> {
    let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
    let mut batch = Batch::with_capacity(4096);
    let mut seen = HashSet::new();
    let mut envelopes: HashMap<SeriesId, Envelope> = want.iter().map(|&id| (id, Envelope::new())).collect();
    let (mut points, mut lo, mut hi) = (0u64, TimeMs::MAX, TimeMs::MIN);
    loop {
        batch.clear();
        let more = source.next_batch(&mut batch, 4096, &mut dead)?;
        if let Some(ahead) = max_future {
            crate::source::refuse_future(&mut batch, ahead, &mut dead, "", "")?;
        }
        for ((&id, &t), &v) in batch.ids.iter().zip(&batch.times).zip(&batch.values) {
            points += 1;
            seen.insert(id);
            lo = lo.min(t);
            hi = hi.max(t);
            if let Some(e) = envelopes.get_mut(&id) {
                e.add(t, v);
            }
        }
        if !more {
            break;
        }
    }
    source.finish(true)?;
    Ok(PointPass {
        points,
        series: seen.len(),
        dead_letters: dead.count(),
        span: (points > 0).then_some((lo, hi)),
        envelopes,
    })
}

/// Builds the report of a run of `cfg` whose events `events` holds, reading the configured source again.
pub fn build(cfg: &Config, events: &Collector, summary: Option<&RunSummary>, opts: &ReportOptions) -> Result<String> {
    check_source(cfg)?;
    let chosen = choose(events, opts);
    let want: HashSet<SeriesId> = chosen.iter().copied().collect();
    let (mut source, _) = crate::app::build_source(cfg)?;
    let pass = read_points(source.as_mut(), &want, cfg.source.max_future.millis_unless_zero())?;
    render(&source.describe(), events, &chosen, &pass, summary, opts)
}

/// The series to chart: the matching series with the largest sum of anomaly scores (ties by id).
fn choose(events: &Collector, opts: &ReportOptions) -> Vec<SeriesId> {
    let mut ranked: Vec<(&SeriesId, &SeriesAnomalies)> =
        events.series.iter().filter(|(_, s)| s.matches(&opts.series)).collect();
    ranked.sort_by(|a, b| b.1.score_sum.total_cmp(&a.1.score_sum).then(a.0.cmp(b.0)));
    ranked.into_iter().take(opts.charts).map(|(&id, _)| id).collect()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const DAY_MS: i64 = 86_400_000;

/// The shortest whole-minute, hour or day step that cuts `span` ms into at most `max` pieces.
fn nice_step(span: i64, max: usize) -> i64 {
    const STEPS: [i64; 17] = [
        60_000,
        300_000,
        600_000,
        900_000,
        1_800_000,
        3_600_000,
        7_200_000,
        10_800_000,
        21_600_000,
        43_200_000,
        DAY_MS,
        2 * DAY_MS,
        7 * DAY_MS,
        14 * DAY_MS,
        28 * DAY_MS,
        91 * DAY_MS,
        364 * DAY_MS,
    ];
    let max = max.max(1) as i64;
    STEPS.into_iter().find(|s| span / s < max).unwrap_or(span / max + 1)
}

/// A time axis whose ticks fall on whole minutes, hours or days (UTC), not on round numbers of milliseconds.
#[derive(Debug, Clone)]
struct TimeAxis(std::ops::Range<TimeMs>);

impl Ranged for TimeAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = TimeMs;

    fn map(&self, v: &TimeMs, limit: (i32, i32)) -> i32 {
        let f = (*v - self.0.start) as f64 / (self.0.end - self.0.start).max(1) as f64;
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<TimeMs> {
        let (lo, hi) = (self.0.start, self.0.end);
        let step = nice_step(hi - lo, hint.max_num_points());
        let first = lo.div_euclid(step) * step + if lo.rem_euclid(step) == 0 { 0 } else { step };
        (0..).map(|i| first + i * step).take_while(|t| *t <= hi).collect()
    }

    fn range(&self) -> std::ops::Range<TimeMs> {
        self.0.clone()
    }
}

/// An axis label: `MM-DD` at midnight UTC, `HH:MM` otherwise.
fn axis_time(ms: TimeMs) -> String {
    let s = fmt_time(ms);
    let (date, time) = (s.get(5..10).unwrap_or(&s), s.get(11..16).unwrap_or(&s));
    if ms.rem_euclid(DAY_MS) == 0 { date.to_string() } else { time.to_string() }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for tables.
fn table_time(ms: TimeMs) -> String {
    let s = fmt_time(ms);
    s.get(..19).map_or(s.clone(), |t| t.replace('T', " "))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Internal(format!("drawing a report chart: {e:?}"))
}

const INCIDENT_FILL: RGBColor = RGBColor(253, 226, 226);
const ENVELOPE_FILL: RGBAColor = RGBAColor(70, 130, 180, 0.25);
const MEAN_LINE: RGBColor = RGBColor(31, 90, 160);
const BAND_LINE: RGBColor = RGBColor(40, 150, 70);

fn severity_color(s: Severity) -> RGBColor {
    match s {
        Severity::Critical => RGBColor(200, 20, 30),
        Severity::Major => RGBColor(235, 120, 10),
        Severity::Minor => RGBColor(200, 170, 0),
    }
}

fn x_range(span: (TimeMs, TimeMs)) -> TimeAxis {
    let (lo, hi) = span;
    TimeAxis(lo..hi.max(lo + 1))
}

/// One series' chart: its values, its anomalies with the expected value and band, its service's incidents.
fn series_chart(
    s: &SeriesAnomalies,
    env: Option<&Envelope>,
    span: (TimeMs, TimeMs),
    incidents: &[&IncidentRow],
) -> Result<(String, usize)> {
    let xr = x_range(span).0;
    // Markers where they crowd: the highest-scoring anomaly of each of MARKER_COLUMNS columns.
    let col_of = |t: TimeMs| {
        (((t - xr.start) as f64 / (xr.end - xr.start) as f64 * MARKER_COLUMNS as f64) as usize).min(MARKER_COLUMNS - 1)
    };
    let mut best: BTreeMap<usize, Mark> = BTreeMap::new();
    for m in &s.marks {
        let e = best.entry(col_of(m.time)).or_insert(*m);
        if m.score > e.score {
            *e = *m;
        }
    }
    let drawn: Vec<Mark> = best.into_values().collect();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, b) in env.into_iter().flat_map(Envelope::filled) {
        lo = lo.min(b.min);
        hi = hi.max(b.max);
    }
    for m in &drawn {
        for v in [m.observed, m.expected, m.lower, m.upper] {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.06).max(hi.abs().max(1.0) * 1e-6);
    let yr = (lo - pad)..(hi + pad);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(64)
            .build_cartesian_2d(TimeAxis(xr.clone()), yr.clone())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(5)
            .x_label_formatter(&|t| axis_time(*t))
            .y_label_formatter(&|v| num(*v))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(incidents.iter().map(|w| {
                let end = w.window.end_ms.max(w.window.start_ms + (xr.end - xr.start) / 500 + 1);
                Rectangle::new([(w.window.start_ms, yr.start), (end, yr.end)], INCIDENT_FILL.filled())
            }))
            .map_err(plot_err)?;
        if let Some(env) = env {
            let upper: Vec<(i64, f64)> = env.filled().map(|(t, b)| (t, b.max)).collect();
            let lower: Vec<(i64, f64)> = env.filled().map(|(t, b)| (t, b.min)).collect();
            let outline: Vec<(i64, f64)> = upper.iter().copied().chain(lower.iter().rev().copied()).collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, ENVELOPE_FILL))).map_err(plot_err)?;
            chart
                .draw_series(LineSeries::new(env.filled().map(|(t, b)| (t, b.sum / f64::from(b.n))), &MEAN_LINE))
                .map_err(plot_err)?;
        }
        // The normal band the detector gave at each drawn anomaly (learned stages only), and its expected value.
        let learned: Vec<&Mark> = drawn.iter().filter(|m| m.stage.learned()).collect();
        chart
            .draw_series(
                learned.iter().map(|m| PathElement::new(vec![(m.time, m.lower), (m.time, m.upper)], BAND_LINE)),
            )
            .map_err(plot_err)?;
        chart.draw_series(learned.iter().map(|m| Cross::new((m.time, m.expected), 3, BAND_LINE))).map_err(plot_err)?;
        chart
            .draw_series(
                drawn.iter().map(|m| Circle::new((m.time, m.observed), 3, severity_color(m.severity).filled())),
            )
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok((svg, drawn.len()))
}

type ServiceAnomalies = (f64, Vec<(TimeMs, Severity)>);

/// The service map: one row per service (the most anomalous first), one column per slice of the run, each cell
/// coloured by the most severe anomaly in it; incidents outlined over the services they affected.
fn service_map(events: &Collector, span: (TimeMs, TimeMs), incidents: &[IncidentRow]) -> Result<Option<String>> {
    // Per service: summed anomaly score, and every drawn anomaly's time and severity.
    let mut by_service: BTreeMap<&str, ServiceAnomalies> = BTreeMap::new();
    for s in events.series.values() {
        let e = by_service.entry(&s.service).or_default();
        e.0 += s.score_sum;
        e.1.extend(s.marks.iter().map(|m| (m.time, m.severity)));
    }
    if by_service.is_empty() {
        return Ok(None);
    }
    let mut services: Vec<(&str, f64)> = by_service.iter().map(|(k, v)| (*k, v.0)).collect();
    services.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    services.truncate(MAP_SERVICES);
    let rows = services.len();
    let xr = x_range(span).0;
    // Columns of a whole number of minutes, hours or days, aligned to them.
    let col_w = nice_step(xr.end - xr.start, COLUMNS);
    let col0 = xr.start.div_euclid(col_w) * col_w;
    let height = 40 + 22 * rows as u32;
    let mut svg = String::new();
    {
        let root: DrawingArea<SVGBackend, Shift> =
            SVGBackend::with_string(&mut svg, (CHART_SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let names: Vec<String> = services.iter().map(|(n, _)| n.to_string()).collect();
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(140)
            .build_cartesian_2d(TimeAxis(xr.clone()), 0f64..rows as f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(8)
            .y_labels(rows * 2 + 1)
            .x_label_formatter(&|t| axis_time(*t))
            .y_label_formatter(&|v| {
                // Labels at row centres only (rows are drawn top down from the most anomalous service).
                let r = v - v.floor();
                if (r - 0.5).abs() < 1e-6 {
                    names.get(rows - 1 - v.floor() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .light_line_style(RGBColor(245, 245, 245))
            .draw()
            .map_err(plot_err)?;
        let mut cells: BTreeMap<(usize, i64), Severity> = BTreeMap::new();
        for (row, (name, _)) in services.iter().enumerate() {
            for &(t, sev) in &by_service[name].1 {
                let col = (t - col0).div_euclid(col_w);
                let c = cells.entry((row, col)).or_insert(sev);
                *c = (*c).max(sev);
            }
        }
        chart
            .draw_series(cells.iter().map(|(&(row, col), &sev)| {
                let y = (rows - 1 - row) as f64;
                let x0 = (col0 + col * col_w).max(xr.start);
                let x1 = (col0 + (col + 1) * col_w).min(xr.end);
                Rectangle::new([(x0, y + 0.1), (x1, y + 0.9)], severity_color(sev).filled())
            }))
            .map_err(plot_err)?;
        let row_of: HashMap<&str, usize> = services.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect();
        for inc in incidents {
            let rs: Vec<usize> = inc.affected_services.iter().filter_map(|s| row_of.get(s.as_str()).copied()).collect();
            let (Some(&top), Some(&bottom)) = (rs.iter().min(), rs.iter().max()) else { continue };
            let y0 = (rows - 1 - bottom) as f64;
            let y1 = (rows - top) as f64;
            let end = inc.window.end_ms.max(inc.window.start_ms + col_w);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(inc.window.start_ms, y0), (end, y1)],
                    ShapeStyle::from(&BLACK).stroke_width(1),
                )))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(Some(svg))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1040px;color:#222}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px;margin:20px 0 4px}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;\
text-align:left;vertical-align:top}th{background:#f5f5f5}td.n{text-align:right}.meta,.note{color:#666;font-size:13px}\
.critical{color:#c8141e}.major{color:#eb780a}.minor{color:#b09500}details{margin:4px 0}svg{display:block}";

fn render(
    source: &str,
    events: &Collector,
    chosen: &[SeriesId],
    pass: &PointPass,
    summary: Option<&RunSummary>,
    opts: &ReportOptions,
) -> Result<String> {
    let mut h = String::new();
    let span = pass.span.unwrap_or((0, 1));
    let title = format!("Faultline report: {}", html_escape(source));
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n<p class=\"meta\">Faultline {} · event time {} \
         to {} UTC · {} points of {} series</p>\n",
        env!("CARGO_PKG_VERSION"),
        table_time(span.0),
        table_time(span.1),
        pass.points,
        pass.series,
    );
    write_summary(&mut h, events, pass, summary);
    h.push_str("<h2>Where and when</h2>\n");
    let col_w = nice_step(span.1.max(span.0 + 1) - span.0, COLUMNS);
    match service_map(events, span, &events.incidents)? {
        Some(svg) => {
            let _ = write!(
                h,
                "<p class=\"note\">One row per service with anomalies ({} most anomalous by summed anomaly score), \
                 one column per {} of event time; a cell takes the colour of its most severe anomaly \
                 (<span class=\"critical\">critical</span>, <span class=\"major\">major</span>, \
                 <span class=\"minor\">minor</span>). Black outlines: incidents, over the services they \
                 affected.</p>\n{svg}\n",
                MAP_SERVICES,
                human_span(col_w),
            );
        }
        None => h.push_str("<p>No anomalies.</p>\n"),
    }
    write_incidents(&mut h, &events.incidents);
    write_charts(&mut h, events, chosen, pass, opts)?;
    write_series_table(&mut h, events, chosen);
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

fn human_span(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs((ms.max(60_000) / 60_000 * 60) as u64)).to_string()
}

fn write_summary(h: &mut String, events: &Collector, pass: &PointPass, summary: Option<&RunSummary>) {
    h.push_str("<h2>Summary</h2>\n<table>\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{k}</th><td class=\"n\">{}</td></tr>", html_escape(&v));
    };
    row("points", pass.points.to_string());
    row("series", pass.series.to_string());
    row("records dead-lettered", pass.dead_letters.to_string());
    row("anomaly events", events.anomalies.to_string());
    row("series with anomalies", events.series.len().to_string());
    row("incidents", events.incidents.len().to_string());
    if let Some(s) = summary {
        row("run time", format!("{:.2} s ({:.0} points/s)", s.elapsed_s, s.points_per_s));
        row(
            "engine",
            format!(
                "{} shards, {} kernels, seasonal lanes {}, backend {}",
                s.shards, s.kernel, s.seasonal_lanes, s.backend
            ),
        );
        row("CPU cost", format!("{:.3} CPU-seconds per million points", s.cpu_s_per_million_points));
        row("late points skipped", s.late_points.to_string());
        row("points refused by the series limit", s.series_limit_refused_points.to_string());
        if s.series_forgotten > 0 {
            row("series forgotten after going quiet", s.series_forgotten.to_string());
        }
        if s.series_restored > 0 {
            row("series that took back a saved model", s.series_restored.to_string());
        }
        row("silenced by the low-volume guard", s.suppressed_low_volume.to_string());
        if s.feedback_verdicts > 0 {
            row("operator verdicts applied", s.feedback_verdicts.to_string());
        }
    }
    h.push_str("</table>\n");
}

fn write_incidents(h: &mut String, incidents: &[IncidentRow]) {
    let _ = writeln!(h, "<h2>Incidents ({})</h2>", incidents.len());
    if incidents.is_empty() {
        h.push_str("<p>None.</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>#</th><th>window (UTC)</th><th>services</th><th>symptom</th><th>most likely cause</th>\
         <th>confidence</th><th>anomalies</th><th>status</th></tr>\n",
    );
    for (i, r) in incidents.iter().enumerate() {
        let top = r.candidates.iter().min_by_key(|c| c.rank);
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{id}\">{n}</a></td><td>{} – {}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{:.2}</td><td class=\"n\">{}</td><td>{} (v{})</td></tr>",
            table_time(r.window.start_ms),
            table_time(r.window.end_ms),
            html_escape(&r.affected_services.join(", ")),
            html_escape(r.symptom.as_deref().unwrap_or("")),
            top.map_or(String::new(), |c| format!("{} ({:.2})", html_escape(&c.service), c.score)),
            r.confidence,
            r.anomaly_count,
            html_escape(&r.status),
            r.report_version,
            id = html_escape(&r.incident_id),
            n = i + 1,
        );
    }
    h.push_str("</table>\n");
    for (i, r) in incidents.iter().enumerate() {
        let _ = write!(
            h,
            "<details id=\"{}\"><summary>Incident {}: {}</summary>\n<p>{}</p>\n",
            html_escape(&r.incident_id),
            i + 1,
            html_escape(&r.incident_id),
            html_escape(&r.explanation)
        );
        if let Some(s) = &r.suggestion {
            let _ = writeln!(h, "<p><b>Suggestion</b> (never acted on): {}</p>", html_escape(s));
        }
        h.push_str("<table>\n<tr><th>rank</th><th>service</th><th>score</th><th>why</th></tr>\n");
        for c in &r.candidates {
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{:.3}</td><td>{}</td></tr>",
                c.rank,
                html_escape(&c.service),
                c.score,
                html_escape(&c.explanation)
            );
        }
        h.push_str("</table>\n</details>\n");
    }
}

fn write_charts(
    h: &mut String,
    events: &Collector,
    chosen: &[SeriesId],
    pass: &PointPass,
    opts: &ReportOptions,
) -> Result<()> {
    let _ = writeln!(h, "<h2>Most anomalous series ({} charted)</h2>", chosen.len());
    let filter = if opts.series.is_empty() {
        String::new()
    } else {
        format!(" among those matching {}", html_escape(&opts.series.join(", ")))
    };
    let _ = writeln!(
        h,
        "<p class=\"note\">The {} series with the largest summed anomaly score{filter}. Blue: the series' values \
         (min–max per time slice, and their mean). Dots: anomalies, coloured by severity (the highest-scoring one \
         where they crowd). Green: the expected value (×) and the normal band the detector gave at each anomaly. \
         Red shading: incidents that affected the series' service.</p>",
        opts.charts
    );
    let span = pass.span.unwrap_or((0, 1));
    for id in chosen {
        let s = &events.series[id];
        let incidents: Vec<&IncidentRow> =
            events.incidents.iter().filter(|r| r.affected_services.contains(&s.service)).collect();
        let (svg, drawn) = series_chart(s, pass.envelopes.get(id), span, &incidents)?;
        let stages: Vec<&str> = {
            let mut v: Vec<&str> = s.marks.iter().map(|m| m.stage.as_str()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let ups = s.marks.iter().filter(|m| m.direction == Direction::Up).count();
        let _ = writeln!(
            h,
            "<h3 id=\"s-{id:016x}\">{}</h3>\n<p class=\"note\">{} anomalies ({} critical; {} up, {} down), {} to {}, \
             highest score {:.4}, stages: {}; {} markers drawn{}.</p>\n{svg}",
            html_escape(&s.name()),
            s.count,
            s.critical,
            ups,
            s.marks.len() - ups,
            table_time(s.first),
            table_time(s.last),
            s.max_score,
            stages.join(", "),
            drawn,
            if s.count as usize > s.marks.len() {
                format!(" (from its first {} anomalies)", s.marks.len())
            } else {
                String::new()
            },
        );
    }
    Ok(())
}

fn write_series_table(h: &mut String, events: &Collector, chosen: &[SeriesId]) {
    let mut all: Vec<(&SeriesId, &SeriesAnomalies)> = events.series.iter().collect();
    all.sort_by(|a, b| b.1.score_sum.total_cmp(&a.1.score_sum).then(a.0.cmp(b.0)));
    let _ = writeln!(h, "<h2>Every series with anomalies ({})</h2>", all.len());
    if all.is_empty() {
        return;
    }
    h.push_str(
        "<table>\n<tr><th>series</th><th>anomalies</th><th>critical</th><th>first (UTC)</th><th>last</th>\
         <th>highest score</th></tr>\n",
    );
    let charted: HashSet<&SeriesId> = chosen.iter().collect();
    for (id, s) in all {
        let name = html_escape(&s.name());
        let name = if charted.contains(id) { format!("<a href=\"#s-{id:016x}\">{name}</a>") } else { name };
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{:.4}</td></tr>",
            s.count,
            s.critical,
            table_time(s.first),
            table_time(s.last),
            s.max_score
        );
    }
    h.push_str("</table>\n");
}

/// Writes `html` to `path` (its directory created if needed).
pub fn write(path: &Path, html: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, html).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_keeps_every_value_in_a_fixed_number_of_buckets() {
        let mut e = Envelope::new();
        let n = 100_000i64;
        for i in 0..n {
            e.add(1_000 + i * 60_000, (i % 1000) as f64);
        }
        assert!(e.buckets.len() <= BUCKETS && e.buckets.len() > BUCKETS / 2, "{}", e.buckets.len());
        let total: u32 = e.buckets.iter().map(|b| b.n).sum();
        assert_eq!(total as i64, n);
        let lo = e.buckets.iter().map(|b| b.min).fold(f64::INFINITY, f64::min);
        let hi = e.buckets.iter().map(|b| b.max).fold(f64::NEG_INFINITY, f64::max);
        assert_eq!((lo, hi), (0.0, 999.0));
        // Every point lies in the bucket the midpoints say.
        for (t, _) in e.filled() {
            assert!(t >= 1_000 && t < 1_000 + n * 60_000 + e.width);
        }
        // A late point and a non-finite one.
        e.add(0, -5.0);
        e.add(2_000, f64::NAN);
        assert_eq!(e.buckets[0].min, -5.0);
        assert_eq!(e.buckets.iter().map(|b| b.n).sum::<u32>() as i64, n + 1);
        // What BENCHMARKS.md states of the report's memory.
        assert_eq!((size_of::<Mark>(), size_of::<Bucket>()), (56, 32));
    }

    fn line(kind: &str, extra: &str) -> String {
        format!("{{\"kind\":\"{kind}\"{extra}}}")
    }

    #[test]
    fn event_files_are_read_and_bad_lines_named() {
        let dir = std::env::temp_dir().join(format!("faultline-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("events.jsonl");
        let anomaly = line(
            "anomaly",
            ",\"series_id\":\"00000000000000ff\",\"service\":\"api\",\"metric\":\"lat\",\"labels\":{\"az\":\"a\"},\
             \"time_ms\":60000,\"observed\":5.0,\"expected\":1.0,\"lower\":0.5,\"upper\":1.5,\"score\":0.9995,\"severity\":\"critical\",\
             \"direction\":\"up\",\"stage\":\"robust\"",
        );
        let report = |v: u32| {
            line(
                "root-cause",
                &format!(
                    ",\"incident_id\":\"inc-1\",\"report_version\":{v},\"status\":\"open\",\"window\":{{\"start_ms\":0,\
                     \"end_ms\":60000}},\"affected_services\":[\"api\"],\"anomaly_count\":{v},\"symptom\":null,\
                     \"candidates\":[{{\"service\":\"api\",\"rank\":1,\"score\":0.9,\"explanation\":\"why\"}}],\
                     \"confidence\":0.5,\"explanation\":\"x\",\"suggestion\":null"
                ),
            )
        };
        std::fs::write(&good, format!("{anomaly}\n{}\n\n{}\n{anomaly}\n", report(1), report(2))).unwrap();
        let mut c = Collector::default();
        c.read_events(&good).unwrap();
        assert_eq!((c.anomalies(), c.incidents()), (2, 1));
        assert_eq!(c.incidents[0].report_version, 2, "the latest version of an incident is kept");
        let s = &c.series[&0xff];
        assert_eq!((s.name().as_str(), s.count, s.critical), ("api/lat{az=a}", 2, 2));

        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, format!("{anomaly}\n{}\n", anomaly.replace("\"observed\":5.0", "\"observed\":\"x\"")))
            .unwrap();
        let err = Collector::default().read_events(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl line 2") && err.contains("invalid type"), "{err}");
        std::fs::write(&bad, line("metrics", "")).unwrap();
        let err = Collector::default().read_events(&bad).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("`kind`"), "{err}");
        std::fs::write(&bad, anomaly.replace("00000000000000ff", "zz")).unwrap();
        let err = Collector::default().read_events(&bad).unwrap_err().to_string();
        assert!(err.contains("series_id \"zz\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn series_filters_match_a_service_or_a_service_and_metric() {
        let s = SeriesAnomalies {
            service: "api".into(),
            metric: "lat".into(),
            labels: String::new(),
            count: 0,
            critical: 0,
            score_sum: 0.0,
            max_score: 0.0,
            first: 0,
            last: 0,
            marks: Vec::new(),
        };
        assert!(s.matches(&[]));
        assert!(s.matches(&["api".into()]));
        assert!(s.matches(&["db".into(), "api/lat".into()]));
        assert!(!s.matches(&["api/err".into()]));
        assert!(!s.matches(&["ap".into()]));
    }

    #[test]
    fn time_ticks_fall_on_whole_minutes_hours_and_days() {
        let t0 = 1_767_571_200_000; // 2026-01-05T00:00Z
        let axis = TimeAxis(t0 + 7 * 60_000..t0 + 2 * DAY_MS);
        let ticks = axis.key_points(8usize);
        assert_eq!(ticks.len(), 8, "{ticks:?}");
        assert!(ticks.iter().all(|t| t % 21_600_000 == 0), "six-hour steps");
        assert_eq!(ticks[0], t0 + 21_600_000, "the first whole step after the start");
        assert_eq!(axis_time(ticks[0]), "06:00");
        assert_eq!(axis_time(ticks[3]), "01-06");
        assert_eq!(nice_step(45 * 60_000, 10), 300_000);
        assert_eq!(nice_step(90 * DAY_MS, 120), DAY_MS);
        assert_eq!(axis.map(&(t0 + 7 * 60_000), (0, 100)), 0);
        assert_eq!(axis.map(&(t0 + 2 * DAY_MS), (0, 100)), 100);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
