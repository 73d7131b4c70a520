//! OpenTelemetry metrics (`ExportMetricsServiceRequest`, as the Collector's Kafka exporter writes it with
//! `encoding: otlp_proto` or `otlp_json`) decoded into the engine's [`Batch`].
//!
//! The message types are the published protobuf definitions from the `opentelemetry-proto` crate (prost, and its
//! serde support for OTLP/JSON). Mapping:
//!
//! - service = the resource attribute `service.name` (`unknown_service` when absent, as the OTel spec says);
//!   labels = the data point's attributes, plus the resource's `service.instance.id` when present.
//! - gauge, and sum that is not monotonic → series `<name>` with the point's value.
//! - monotonic sum → series `<name>.rate`: increase per second (cumulative: against the series' previous point;
//!   delta: over the point's own interval).
//! - histogram → `<name>.count_rate` (observations per second), `<name>.p50` and `<name>.p99` estimated from the
//!   bucket counts of the interval (linear interpolation inside the bucket, clamped to min/max when given).
//! - summary → `<name>.count_rate` and `<name>.p50` / `<name>.p99` when those quantiles are present.
//! - exponential histograms, points flagged "no recorded value" and values that are not finite or lie past
//!   ±[`MAX_VALUE`](crate::model::MAX_VALUE) (1e30) are skipped and counted.
//!
//! A record that does not parse is an error (the caller dead-letters it); decoding never fails a batch.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, NumberDataPoint, metric::Data, number_data_point,
};
use prost::Message;

use crate::model::{Batch, Recent, SeriesKey, TimeMs, series_id, series_id_in, sort_labels};

mod wire;
use wire::{Field, Fields};

const NO_RECORDED_VALUE: u32 = 1;
const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;

/// What the decoder did not turn into points, for the run's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OtlpStats {
    pub points: u64,
    /// Data points skipped: no recorded value, non-finite or past ±1e30, exponential histogram, or a first cumulative
    /// point with no start time (nothing to take a rate against).
    pub skipped: u64,
    /// Protobuf records the borrowing reader left to prost (see `otlp/wire.rs`): malformed ones, which prost then
    /// refuses, and valid ones in a form the reader does not take (a singular field given twice, deep nesting).
    pub prost_decoded: u64,
}

/// Previous cumulative state of one source series (for rates and interval histograms).
enum Prev {
    Sum { t: u64, start: u64, v: f64 },
    Hist { t: u64, start: u64, count: u64, buckets: Vec<u64> },
}

/// Decodes OTLP metrics, interning series keys and keeping cumulative state per series.
#[derive(Default)]
pub struct OtlpDecoder {
    /// Interned keys, and each cumulative series' previous point, forgetting series not seen for a while (see
    /// [`Recent`]: a counter back after that long gives its next rate since its start time).
    keys: Recent<Arc<SeriesKey>>,
    prev: Recent<Prev>,
    /// Scratch reused from point to point: no allocation per data point.
    delta_buckets: Vec<u64>,
    counts: Vec<u64>,
    bounds: Vec<f64>,
    labels: Labels<'static>,
    metric: String,
    id_buf: Vec<u8>,
    pub stats: OtlpStats,
}

/// An attribute's value as the mapping reads it.
#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Arrays, key-value lists, bytes: not a label.
    Other,
}

impl<'a> Val<'a> {
    fn of(v: &'a any_value::Value) -> Self {
        match v {
            any_value::Value::StringValue(s) => Val::Str(s),
            any_value::Value::BoolValue(b) => Val::Bool(*b),
            any_value::Value::IntValue(i) => Val::Int(*i),
            any_value::Value::DoubleValue(d) => Val::Double(*d),
            _ => Val::Other,
        }
    }

    /// The value of an `AnyValue` message on the wire: its oneof's member (one at most: see `wire::check`), if set.
    fn of_wire(any: &'a [u8]) -> Option<Self> {
        Some(match Fields::new(any).ok().filter(|(t, _)| (1..=8).contains(t)).last()? {
            (1, Field::Len(b)) => Val::Str(wire::text(b)),
            (2, Field::Varint(v)) => Val::Bool(v != 0),
            (3, Field::Varint(v)) => Val::Int(v as i64),
            (4, Field::Fixed64(v)) => Val::Double(f64::from_bits(v)),
            _ => Val::Other,
        })
    }

    fn cow(self) -> Option<Cow<'a, str>> {
        let mut text = String::new();
        Some(match self.write(&mut text)? {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(text),
        })
    }

    /// The value as a label: borrowed (`Some(Some(_))`), written at the end of `text` (`Some(None)`), or none.
    fn write(self, text: &mut String) -> Option<Option<&'a str>> {
        match self {
            Val::Str(s) => Some(Some(s)),
            Val::Bool(b) => Some(Some(if b { "true" } else { "false" })),
            Val::Int(i) => {
                let _ = write!(text, "{i}");
                Some(None)
            }
            Val::Double(d) => {
                let _ = write!(text, "{d}");
                Some(None)
            }
            Val::Other => None,
        }
    }
}

/// A data point's (or a resource's) attributes: prost's messages, or the message on the wire (`tag`: its attributes
/// field).
#[derive(Clone, Copy)]
enum Attrs<'a> {
    Prost(&'a [KeyValue]),
    Wire { msg: &'a [u8], tag: u32 },
}

impl<'a> Attrs<'a> {
    /// Each attribute in order, with its value (`None`: no value, or one with no member of its oneof set).
    fn each(self, mut f: impl FnMut(&'a str, Option<Val<'a>>)) {
        match self {
            Attrs::Prost(kvs) => {
                for kv in kvs {
                    f(&kv.key, kv.value.as_ref().and_then(|a| a.value.as_ref()).map(Val::of));
                }
            }
            Attrs::Wire { msg, tag } => {
                for kv in Fields::new(msg).messages(tag) {
                    // The last key and the last value count (a value given twice is left to prost: `wire::check`).
                    let (mut key, mut value) = ("", None);
                    for (t, field) in Fields::new(kv).ok() {
                        match (t, field) {
                            (1, Field::Len(b)) => key = wire::text(b),
                            (2, Field::Len(b)) => value = Some(b),
                            _ => {}
                        }
                    }
                    f(key, value.and_then(Val::of_wire));
                }
            }
        }
    }

    /// The value of the last attribute named `key`, if it makes a label.
    fn find(self, key: &str) -> Option<Cow<'a, str>> {
        let mut found = None;
        self.each(|k, v| {
            if k == key {
                found = Some(v);
            }
        });
        found??.cow()
    }
}

/// One data point, whichever reader it came from.
struct Point<'a> {
    attrs: Attrs<'a>,
    start: u64,
    time: u64,
    flags: u32,
}

impl<'a> Point<'a> {
    /// A point of prost's messages.
    fn of(attrs: &'a [KeyValue], start: u64, time: u64, flags: u32) -> Self {
        Point { attrs: Attrs::Prost(attrs), start, time, flags }
    }
}

/// A data point's sorted labels: keys and values borrowed from the record, or (numbers and booleans) written out in
/// `text`.
#[derive(Default)]
struct Labels<'a> {
    pairs: Vec<(&'a str, Label<'a>)>,
    text: String,
}

#[derive(Clone, Copy)]
enum Label<'a> {
    Borrowed(&'a str),
    Written(u32, u32),
}

impl Labels<'_> {
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.pairs.iter().map(|&(k, v)| {
            (
                k,
                match v {
                    Label::Borrowed(s) => s,
                    Label::Written(a, b) => &self.text[a as usize..b as usize],
                },
            )
        })
    }
}

impl OtlpDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Protobuf (`otlp_proto`): read in place where the borrowing reader takes the record (see `otlp/wire.rs`),
    /// through prost otherwise; the same points either way.
    pub fn decode_proto(&mut self, bytes: &[u8], batch: &mut Batch) -> Result<usize, String> {
        if wire::check(bytes).is_ok() {
            return Ok(self.decode_wire(bytes, batch));
        }
        self.stats.prost_decoded += 1;
        let req = ExportMetricsServiceRequest::decode(bytes)
            .map_err(|e| format!("invalid OTLP protobuf ExportMetricsServiceRequest: {e}"))?;
        Ok(self.decode_request(&req, batch))
    }

    /// OTLP/JSON (`otlp_json`).
    pub fn decode_json(&mut self, bytes: &[u8], batch: &mut Batch) -> Result<usize, String> {
        let req: ExportMetricsServiceRequest =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid OTLP/JSON ExportMetricsServiceRequest: {e}"))?;
        Ok(self.decode_request(&req, batch))
    }

    /// Appends every usable data point of `req` to `batch`; returns how many points it appended.
    pub fn decode_request(&mut self, req: &ExportMetricsServiceRequest, batch: &mut Batch) -> usize {
        let before = batch.len();
        for rm in &req.resource_metrics {
            let attrs = Attrs::Prost(rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]));
            let (service, instance) = resource(attrs);
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                let ctx = Ctx { service: &service, instance: instance.as_deref(), name: &m.name };
                match &m.data {
                    Some(Data::Gauge(g)) => {
                        for p in &g.data_points {
                            self.number(&ctx, &prost_number(p), number_value(p), false, false, batch);
                        }
                    }
                    Some(Data::Sum(s)) => {
                        let cumulative = s.aggregation_temporality == CUMULATIVE;
                        for p in &s.data_points {
                            self.number(&ctx, &prost_number(p), number_value(p), s.is_monotonic, cumulative, batch);
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        let cumulative = h.aggregation_temporality == CUMULATIVE;
                        for p in &h.data_points {
                            let point = Point::of(&p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags);
                            let hist = Hist {
                                count: p.count,
                                counts: &p.bucket_counts,
                                bounds: &p.explicit_bounds,
                                min: p.min,
                                max: p.max,
                            };
                            self.histogram(&ctx, &point, &hist, cumulative, batch);
                        }
                    }
                    Some(Data::Summary(s)) => {
                        for p in &s.data_points {
                            let point = Point::of(&p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags);
                            let quantiles = p.quantile_values.iter().map(|q| (q.quantile, q.value));
                            self.summary(&ctx, &point, p.count, quantiles, batch);
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => self.stats.skipped += h.data_points.len() as u64,
                    None => {}
                }
            }
        }
        let n = batch.len() - before;
        self.stats.points += n as u64;
        n
    }

    /// [`Self::decode_request`] of a request read in place (one that `wire::check` took).
    fn decode_wire(&mut self, bytes: &[u8], batch: &mut Batch) -> usize {
        let before = batch.len();
        for rm in Fields::new(bytes).messages(1) {
            let rm = Fields::new(rm);
            let attrs = Attrs::Wire { msg: rm.last_len(1).unwrap_or_default(), tag: 1 };
            let (service, instance) = resource(attrs);
            for m in rm.messages(2).flat_map(|sm| Fields::new(sm).messages(2)) {
                let m = Fields::new(m);
                let name = m.last_len(1).map_or("", wire::text);
                let ctx = Ctx { service: &service, instance: instance.as_deref(), name };
                // The metric's data: one member of the oneof at most (`wire::check`).
                let Some((kind, data)) = m.ok().find_map(|(t, f)| match f {
                    Field::Len(b) if matches!(t, 5 | 7 | 9 | 10 | 11) => Some((t, Fields::new(b))),
                    _ => None,
                }) else {
                    continue;
                };
                // Sum and Histogram: temporality (2) and monotonicity (3) may come after the points.
                let (mut temporality, mut monotonic) = (0i32, false);
                for (t, f) in data.ok() {
                    match (t, f) {
                        (2, Field::Varint(v)) => temporality = v as i32,
                        (3, Field::Varint(v)) if kind == 7 => monotonic = v != 0,
                        _ => {}
                    }
                }
                let cumulative = temporality == CUMULATIVE;
                match kind {
                    5 | 7 => {
                        for p in data.messages(1) {
                            let (point, value) = wire_number(p);
                            self.number(&ctx, &point, value, monotonic, cumulative, batch);
                        }
                    }
                    9 => {
                        for p in data.messages(1) {
                            let (mut counts, mut bounds) =
                                (std::mem::take(&mut self.counts), std::mem::take(&mut self.bounds));
                            let (point, count, min, max) = wire_histogram(p, &mut counts, &mut bounds);
                            let hist = Hist { count, counts: &counts, bounds: &bounds, min, max };
                            self.histogram(&ctx, &point, &hist, cumulative, batch);
                            (self.counts, self.bounds) = (counts, bounds);
                        }
                    }
                    11 => {
                        for p in data.messages(1) {
                            let (point, count) = wire_summary(p);
                            self.summary(&ctx, &point, count, wire_quantiles(p), batch);
                        }
                    }
                    _ => self.stats.skipped += data.messages(1).count() as u64,
                }
            }
        }
        let n = batch.len() - before;
        self.stats.points += n as u64;
        n
    }

    fn number(&mut self, ctx: &Ctx<'_>, p: &Point<'_>, v: f64, monotonic: bool, cumulative: bool, batch: &mut Batch) {
        let t = p.time;
        if p.flags & NO_RECORDED_VALUE != 0 || !v.is_finite() || t == 0 {
            self.stats.skipped += 1;
            return;
        }
        let labels = self.labels(ctx, p.attrs);
        if !monotonic {
            self.push(ctx, "", &labels, t, v, batch);
        } else {
            let rate = if cumulative {
                let base = series_id(ctx.service, ctx.name, labels.iter());
                self.cumulative_rate(base, p.start, t, v)
            } else {
                per_second(v, p.start, t)
            };
            match rate {
                Some(r) => self.push(ctx, ".rate", &labels, t, r, batch),
                None => self.stats.skipped += 1,
            }
        }
        self.recycle(labels);
    }

    /// Increase per second of a cumulative value against the series' previous point (or its start time).
    fn cumulative_rate(&mut self, base: u64, start: u64, t: u64, v: f64) -> Option<f64> {
        let prev = self.prev.insert(base, Prev::Sum { t, start, v });
        match prev {
            Some(Prev::Sum { t: pt, start: ps, v: pv }) if pt < t && ps == start && v >= pv => {
                per_second(v - pv, pt, t)
            }
            // First point, a reset (new start time or a smaller value): the value accumulated since `start`.
            _ => per_second(v, start, t),
        }
    }

    fn histogram(&mut self, ctx: &Ctx<'_>, p: &Point<'_>, h: &Hist<'_>, cumulative: bool, batch: &mut Batch) {
        let t = p.time;
        if p.flags & NO_RECORDED_VALUE != 0 || t == 0 {
            self.stats.skipped += 1;
            return;
        }
        let labels = self.labels(ctx, p.attrs);
        // The interval's counts: as given (delta), or against the previous cumulative point.
        let mut delta = std::mem::take(&mut self.delta_buckets);
        delta.clear();
        delta.extend_from_slice(h.counts);
        let (mut count, mut from) = (h.count, p.start);
        if cumulative {
            let base = series_id(ctx.service, ctx.name, labels.iter());
            let fresh = || Prev::Hist { t: 0, start: 0, count: 0, buckets: Vec::new() };
            let prev = self.prev.get_or_insert_with(base, fresh);
            if let Prev::Hist { t: pt, start: ps, count: pc, buckets: pb } = prev
                && *pt != 0
                && *pt < t
                && *ps == p.start
                && *pc <= h.count
                && pb.len() == delta.len()
                && pb.iter().zip(&delta).all(|(a, b)| a <= b)
            {
                for (d, b) in delta.iter_mut().zip(pb.iter()) {
                    *d -= b;
                }
                count -= *pc;
                from = *pt;
            }
            // This point is the series' previous one from now on (its bucket vector reused).
            match prev {
                Prev::Hist { t: pt, start: ps, count: pc, buckets: pb } => {
                    (*pt, *ps, *pc) = (t, p.start, h.count);
                    pb.clear();
                    pb.extend_from_slice(h.counts);
                }
                other => *other = Prev::Hist { t, start: p.start, count: h.count, buckets: h.counts.to_vec() },
            }
        }
        match per_second(count as f64, from, t) {
            Some(rate) => self.push(ctx, ".count_rate", &labels, t, rate, batch),
            None => self.stats.skipped += 1,
        }
        if count > 0 && delta.len() == h.bounds.len() + 1 {
            for (q, suffix) in [(0.5, ".p50"), (0.99, ".p99")] {
                if let Some(v) = bucket_quantile(q, h.bounds, &delta, h.min, h.max) {
                    self.push(ctx, suffix, &labels, t, v, batch);
                }
            }
        }
        self.delta_buckets = delta;
        self.recycle(labels);
    }

    fn summary(
        &mut self,
        ctx: &Ctx<'_>,
        p: &Point<'_>,
        count: u64,
        quantiles: impl Iterator<Item = (f64, f64)>,
        batch: &mut Batch,
    ) {
        let t = p.time;
        if p.flags & NO_RECORDED_VALUE != 0 || t == 0 {
            self.stats.skipped += 1;
            return;
        }
        let labels = self.labels(ctx, p.attrs);
        // Summaries are cumulative by definition.
        let base = series_id(ctx.service, ctx.name, labels.iter());
        if let Some(rate) = self.cumulative_rate(base, p.start, t, count as f64) {
            self.push(ctx, ".count_rate", &labels, t, rate, batch);
        }
        for (q, v) in quantiles {
            let suffix = if q == 0.5 {
                ".p50"
            } else if q == 0.99 {
                ".p99"
            } else {
                continue;
            };
            self.push(ctx, suffix, &labels, t, v, batch);
        }
        self.recycle(labels);
    }

    /// The point's attributes (and the service instance) as sorted labels; the last value of a repeated key wins.
    /// Built in the decoder's scratch, which [`Self::recycle`] takes back.
    fn labels<'a>(&mut self, ctx: &Ctx<'a>, attrs: Attrs<'a>) -> Labels<'a> {
        let mut l: Labels<'a> = std::mem::take(&mut self.labels);
        l.pairs.clear();
        l.text.clear();
        if let Some(i) = ctx.instance {
            l.pairs.push(("service.instance.id", Label::Borrowed(i)));
        }
        attrs.each(|k, v| {
            let from = l.text.len() as u32;
            match v.and_then(|v| v.write(&mut l.text)) {
                Some(Some(s)) => l.pairs.push((k, Label::Borrowed(s))),
                Some(None) => l.pairs.push((k, Label::Written(from, l.text.len() as u32))),
                None => {}
            }
        });
        sort_labels(&mut l.pairs);
        l
    }

    /// Takes back the scratch of [`Self::labels`]. Emptied, its vector holds no borrow: collecting it into the
    /// `'static` type reuses its allocation in place (the map is never called).
    fn recycle(&mut self, l: Labels<'_>) {
        let Labels { mut pairs, text } = l;
        pairs.clear();
        self.labels = Labels { pairs: pairs.into_iter().map(|_| ("", Label::Written(0, 0))).collect(), text };
    }

    fn push(&mut self, ctx: &Ctx<'_>, suffix: &str, labels: &Labels<'_>, t_ns: u64, v: f64, b: &mut Batch) {
        if crate::model::value_problem(v).is_some() {
            self.stats.skipped += 1;
            return;
        }
        let mut metric = std::mem::take(&mut self.metric);
        metric.clear();
        metric.push_str(ctx.name);
        metric.push_str(suffix);
        let id = series_id_in(&mut self.id_buf, ctx.service, &metric, labels.iter());
        let key = self.keys.get_or_insert_with(id, || Arc::new(SeriesKey::new(ctx.service, &metric, labels.iter())));
        b.push(key, (t_ns / 1_000_000) as TimeMs, v);
        self.metric = metric;
    }
}

struct Ctx<'a> {
    service: &'a str,
    instance: Option<&'a str>,
    name: &'a str,
}

/// A histogram data point's counts, as [`OtlpDecoder::histogram`] reads them.
struct Hist<'a> {
    count: u64,
    counts: &'a [u64],
    bounds: &'a [f64],
    min: Option<f64>,
    max: Option<f64>,
}

/// The service (`service.name`, `unknown_service` when absent) and instance of a resource's attributes.
fn resource(attrs: Attrs<'_>) -> (Cow<'_, str>, Option<Cow<'_, str>>) {
    (attrs.find("service.name").unwrap_or(Cow::Borrowed("unknown_service")), attrs.find("service.instance.id"))
}

fn prost_number(p: &NumberDataPoint) -> Point<'_> {
    Point::of(&p.attributes, p.start_time_unix_nano, p.time_unix_nano, p.flags)
}

fn number_value(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => f64::NAN,
    }
}

/// A `HistogramDataPoint` on the wire: the point, its count, min and max, and its bucket counts and bounds into
/// `counts` and `bounds` (cleared first; either field packed or not).
fn wire_histogram<'a>(
    p: &'a [u8],
    counts: &mut Vec<u64>,
    bounds: &mut Vec<f64>,
) -> (Point<'a>, u64, Option<f64>, Option<f64>) {
    counts.clear();
    bounds.clear();
    let mut point = Point { attrs: Attrs::Wire { msg: p, tag: 9 }, start: 0, time: 0, flags: 0 };
    let (mut count, mut min, mut max) = (0, None, None);
    for (t, f) in Fields::new(p).ok() {
        match (t, f) {
            (2, Field::Fixed64(v)) => point.start = v,
            (3, Field::Fixed64(v)) => point.time = v,
            (4, Field::Fixed64(v)) => count = v,
            (6, f) => wire::fixed64s(f, counts),
            (7, f) => {
                let from = counts.len();
                wire::fixed64s(f, counts);
                bounds.extend(counts.drain(from..).map(f64::from_bits));
            }
            (10, Field::Varint(v)) => point.flags = v as u32,
            (11, Field::Fixed64(v)) => min = Some(f64::from_bits(v)),
            (12, Field::Fixed64(v)) => max = Some(f64::from_bits(v)),
            _ => {}
        }
    }
    (point, count, min, max)
}

/// A `SummaryDataPoint` on the wire and its count (its quantiles: [`wire_quantiles`]).
fn wire_summary(p: &[u8]) -> (Point<'_>, u64) {
    let mut point = Point { attrs: Attrs::Wire { msg: p, tag: 7 }, start: 0, time: 0, flags: 0 };
    let mut count = 0;
    for (t, f) in Fields::new(p).ok() {
        match (t, f) {
            (2, Field::Fixed64(v)) => point.start = v,
            (3, Field::Fixed64(v)) => point.time = v,
            (4, Field::Fixed64(v)) => count = v,
            (8, Field::Varint(v)) => point.flags = v as u32,
            _ => {}
        }
    }
    (point, count)
}

/// The `(quantile, value)` pairs of a `SummaryDataPoint` on the wire, in order.
fn wire_quantiles(p: &[u8]) -> impl Iterator<Item = (f64, f64)> + '_ {
    Fields::new(p).messages(6).map(|q| {
        let (mut quantile, mut value) = (0.0, 0.0);
        for (t, f) in Fields::new(q).ok() {
            match (t, f) {
                (1, Field::Fixed64(v)) => quantile = f64::from_bits(v),
                (2, Field::Fixed64(v)) => value = f64::from_bits(v),
                _ => {}
            }
        }
        (quantile, value)
    })
}

/// A `NumberDataPoint` on the wire and its value (NaN when it has none; the last of the oneof's members counts).
fn wire_number(p: &[u8]) -> (Point<'_>, f64) {
    let mut point = Point { attrs: Attrs::Wire { msg: p, tag: 7 }, start: 0, time: 0, flags: 0 };
    let mut value = f64::NAN;
    for (t, f) in Fields::new(p).ok() {
        match (t, f) {
            (2, Field::Fixed64(v)) => point.start = v,
            (3, Field::Fixed64(v)) => point.time = v,
            (4, Field::Fixed64(v)) => value = f64::from_bits(v),
            (6, Field::Fixed64(v)) => value = v as i64 as f64,
            (8, Field::Varint(v)) => point.flags = v as u32,
            _ => {}
        }
    }
    (point, value)
}

fn per_second(increase: f64, from_ns: u64, to_ns: u64) -> Option<f64> {
    (from_ns > 0 && to_ns > from_ns).then(|| increase / ((to_ns - from_ns) as f64 / 1e9))
}

/// Quantile `q` of a histogram with explicit bounds: bucket `i` holds values in `(bounds[i-1], bounds[i]]`, the
/// first from -inf (or `min`), the last up to +inf (or `max`). Linear interpolation inside the bucket; in an open
/// bucket the finite edge (or min/max) is the estimate.
pub fn bucket_quantile(q: f64, bounds: &[f64], counts: &[u64], min: Option<f64>, max: Option<f64>) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || counts.len() != bounds.len() + 1 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 || ((seen + c) as f64) < rank {
            seen += c;
            continue;
        }
        let lo = if i == 0 { min.or_else(|| bounds.first().map(|b| b.min(0.0))) } else { Some(bounds[i - 1]) };
        let hi = if i == bounds.len() { max.or(bounds.last().copied()) } else { Some(bounds[i]) };
        let est = match (lo, hi) {
            (Some(lo), Some(hi)) if hi >= lo => lo + (hi - lo) * ((rank - seen as f64) / c as f64).clamp(0.0, 1.0),
            (Some(lo), _) => lo,
            (None, Some(hi)) => hi,
            (None, None) => return None,
        };
        let est = min.map_or(est, |m| est.max(m));
        return Some(max.map_or(est, |m| est.min(m)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, Sum, metric,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    const T0: u64 = 1_767_571_200_000_000_000;
    const MIN: u64 = 60_000_000_000;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    fn request(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn number(t: u64, start: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    }

    fn names(b: &Batch) -> Vec<String> {
        b.keys.iter().map(|k| k.display_name()).collect()
    }

    #[test]
    fn gauge_points_become_series_keyed_by_service_name_and_attributes() {
        let req = request(
            "checkout",
            vec![Metric {
                name: "queue_depth".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![number(T0, 0, 3.0, vec![kv("zone", "a")]), number(T0 + MIN, 0, 4.0, vec![])],
                })),
                ..Default::default()
            }],
        );
        let mut d = OtlpDecoder::new();
        let mut b = Batch::default();
        assert_eq!(d.decode_proto(&req.encode_to_vec(), &mut b).unwrap(), 2);
        assert_eq!(names(&b), ["checkout/queue_depth{zone=a}", "checkout/queue_depth"]);
        assert_eq!(b.times, [1_767_571_200_000, 1_767_571_260_000]);
        assert_eq!(b.values, [3.0, 4.0]);
        // The same request in OTLP/JSON decodes to the same points.
        let json = serde_json::to_vec(&req).unwrap();
        let mut b2 = Batch::default();
        assert_eq!(d.decode_json(&json, &mut b2).unwrap(), 2);
        assert_eq!((b2.ids, b2.values), (b.ids, b.values));
        // A value past the range the models hold is skipped and counted, as a non-finite one is; ±1e30 is a value.
        let points = [4e38, -2e30, f64::INFINITY, 1e30].map(|v| number(T0, 0, v, vec![]));
        let req = request(
            "checkout",
            vec![Metric {
                name: "queue_depth".into(),
                data: Some(metric::Data::Gauge(Gauge { data_points: points.to_vec() })),
                ..Default::default()
            }],
        );
        let (mut d, mut b) = (OtlpDecoder::new(), Batch::default());
        assert_eq!(d.decode_proto(&req.encode_to_vec(), &mut b).unwrap(), 1);
        assert_eq!((b.values.as_slice(), d.stats.skipped), (&[1e30][..], 3));
    }

    #[test]
    fn cumulative_monotonic_sum_becomes_a_rate() {
        let sum = |points| Metric {
            name: "requests".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let start = T0 - MIN;
        let mut d = OtlpDecoder::new();
        let mut b = Batch::default();
        d.decode_request(&request("api", vec![sum(vec![number(T0, start, 600.0, vec![])])]), &mut b);
        d.decode_request(&request("api", vec![sum(vec![number(T0 + MIN, start, 1800.0, vec![])])]), &mut b);
        assert_eq!(names(&b), ["api/requests.rate", "api/requests.rate"]);
        assert_eq!(b.values, [10.0, 20.0], "600 over the first minute, then 1200 more in the next");
    }

    #[test]
    fn histogram_gives_count_rate_and_interval_percentiles() {
        let hist = |t: u64, counts: Vec<u64>| Metric {
            name: "latency_ms".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: T0 - MIN,
                    time_unix_nano: t,
                    count: counts.iter().sum(),
                    bucket_counts: counts,
                    explicit_bounds: vec![10.0, 20.0, 50.0, 100.0],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        };
        let mut d = OtlpDecoder::new();
        let mut b = Batch::default();
        d.decode_request(&request("api", vec![hist(T0, vec![0, 60, 0, 0, 0])]), &mut b);
        assert_eq!(names(&b), ["api/latency_ms.count_rate", "api/latency_ms.p50", "api/latency_ms.p99"]);
        assert_eq!(b.values, [1.0, 15.0, 19.9]);
        // The next minute's 60 observations all fall in (50, 100]: percentiles come from the interval only.
        b.clear();
        d.decode_request(&request("api", vec![hist(T0 + MIN, vec![0, 60, 0, 60, 0])]), &mut b);
        assert_eq!(b.values, [1.0, 75.0, 99.5]);
    }

    #[test]
    fn bucket_quantile_edges() {
        assert_eq!(bucket_quantile(0.5, &[1.0], &[0, 0], None, None), None);
        assert_eq!(bucket_quantile(0.99, &[10.0], &[0, 5], None, Some(40.0)), Some(39.7));
        assert_eq!(bucket_quantile(0.99, &[10.0], &[0, 5], None, None), Some(10.0), "open bucket: its finite edge");
        assert_eq!(bucket_quantile(0.5, &[10.0], &[4, 0], Some(2.0), None), Some(6.0));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = OtlpDecoder::new();
        let mut b = Batch::default();
        assert!(d.decode_proto(&[0xff, 0xff, 0xff], &mut b).is_err());
        assert!(d.decode_json(b"{\"resourceMetrics\": 3}", &mut b).is_err());
        assert!(b.is_empty());
    }
}
