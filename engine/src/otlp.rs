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
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, NumberDataPoint, metric::Data, number_data_point,
};
use prost::Message;

use crate::model::{Batch, Recent, SeriesKey, TimeMs, series_id, series_id_in};

const NO_RECORDED_VALUE: u32 = 1;

/// What the decoder did not turn into points, for the run's log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OtlpStats {
    pub points: u64,
    /// Data points skipped: no recorded value, non-finite or past ±1e30, exponential histogram, or a first cumulative
    /// point with no start time (nothing to take a rate against).
    pub skipped: u64,
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
    delta_buckets: Vec<u64>,
    id_buf: Vec<u8>,
    pub stats: OtlpStats,
}

impl OtlpDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Protobuf (`otlp_proto`).
    pub fn decode_proto(&mut self, bytes: &[u8], batch: &mut Batch) -> Result<usize, String> {
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
            let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let service = find_str(attrs, "service.name").unwrap_or(Cow::Borrowed("unknown_service"));
            let instance = find_str(attrs, "service.instance.id");
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let ctx = Ctx { service: &service, instance: instance.as_deref(), name: &m.name };
                    match &m.data {
                        Some(Data::Gauge(g)) => {
                            for p in &g.data_points {
                                self.number(&ctx, p, false, false, batch);
                            }
                        }
                        Some(Data::Sum(s)) => {
                            let cumulative = s.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                            for p in &s.data_points {
                                self.number(&ctx, p, s.is_monotonic, cumulative, batch);
                            }
                        }
                        Some(Data::Histogram(h)) => {
                            let cumulative = h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                            for p in &h.data_points {
                                self.histogram(&ctx, p, cumulative, batch);
                            }
                        }
                        Some(Data::Summary(s)) => {
                            for p in &s.data_points {
                                let labels = labels(&ctx, &p.attributes);
                                let t = p.time_unix_nano;
                                if p.flags & NO_RECORDED_VALUE != 0 || t == 0 {
                                    self.stats.skipped += 1;
                                    continue;
                                }
                                // Summaries are cumulative by definition.
                                let base = series_id(ctx.service, ctx.name, labels.iter().map(|(k, v)| (*k, &**v)));
                                if let Some(rate) =
                                    self.cumulative_rate(base, p.start_time_unix_nano, t, p.count as f64)
                                {
                                    self.push(&ctx, ".count_rate", &labels, t, rate, batch);
                                }
                                for q in &p.quantile_values {
                                    let suffix = if q.quantile == 0.5 {
                                        ".p50"
                                    } else if q.quantile == 0.99 {
                                        ".p99"
                                    } else {
                                        continue;
                                    };
                                    self.push(&ctx, suffix, &labels, t, q.value, batch);
                                }
                            }
                        }
                        Some(Data::ExponentialHistogram(h)) => self.stats.skipped += h.data_points.len() as u64,
                        None => {}
                    }
                }
            }
        }
        let n = batch.len() - before;
        self.stats.points += n as u64;
        n
    }

    fn number(&mut self, ctx: &Ctx<'_>, p: &NumberDataPoint, monotonic: bool, cumulative: bool, batch: &mut Batch) {
        let v = match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => f64::NAN,
        };
        let t = p.time_unix_nano;
        if p.flags & NO_RECORDED_VALUE != 0 || !v.is_finite() || t == 0 {
            self.stats.skipped += 1;
            return;
        }
        let labels = labels(ctx, &p.attributes);
        if !monotonic {
            self.push(ctx, "", &labels, t, v, batch);
            return;
        }
        let rate = if cumulative {
            let base = series_id(ctx.service, ctx.name, labels.iter().map(|(k, v)| (*k, &**v)));
            self.cumulative_rate(base, p.start_time_unix_nano, t, v)
        } else {
            per_second(v, p.start_time_unix_nano, t)
        };
        match rate {
            Some(r) => self.push(ctx, ".rate", &labels, t, r, batch),
            None => self.stats.skipped += 1,
        }
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

    fn histogram(&mut self, ctx: &Ctx<'_>, p: &HistogramDataPoint, cumulative: bool, batch: &mut Batch) {
        let t = p.time_unix_nano;
        if p.flags & NO_RECORDED_VALUE != 0 || t == 0 {
            self.stats.skipped += 1;
            return;
        }
        let labels = labels(ctx, &p.attributes);
        // The interval's counts: as given (delta), or against the previous cumulative point.
        let mut delta = std::mem::take(&mut self.delta_buckets);
        delta.clear();
        delta.extend_from_slice(&p.bucket_counts);
        let (mut count, mut from) = (p.count, p.start_time_unix_nano);
        if cumulative {
            let base = series_id(ctx.service, ctx.name, labels.iter().map(|(k, v)| (*k, &**v)));
            let state =
                Prev::Hist { t, start: p.start_time_unix_nano, count: p.count, buckets: p.bucket_counts.clone() };
            if let Some(Prev::Hist { t: pt, start: ps, count: pc, buckets: pb }) = self.prev.insert(base, state)
                && pt < t
                && ps == p.start_time_unix_nano
                && pc <= p.count
                && pb.len() == delta.len()
                && pb.iter().zip(&delta).all(|(a, b)| a <= b)
            {
                for (d, b) in delta.iter_mut().zip(&pb) {
                    *d -= b;
                }
                count -= pc;
                from = pt;
            }
        }
        match per_second(count as f64, from, t) {
            Some(rate) => self.push(ctx, ".count_rate", &labels, t, rate, batch),
            None => self.stats.skipped += 1,
        }
        if count > 0 && delta.len() == p.explicit_bounds.len() + 1 {
            for (q, suffix) in [(0.5, ".p50"), (0.99, ".p99")] {
                if let Some(v) = bucket_quantile(q, &p.explicit_bounds, &delta, p.min, p.max) {
                    self.push(ctx, suffix, &labels, t, v, batch);
                }
            }
        }
        self.delta_buckets = delta;
    }

    fn push(&mut self, ctx: &Ctx<'_>, suffix: &str, labels: &[(&str, Cow<'_, str>)], t_ns: u64, v: f64, b: &mut Batch) {
        if crate::model::value_problem(v).is_some() {
            self.stats.skipped += 1;
            return;
        }
        let metric: Cow<'_, str> =
            if suffix.is_empty() { Cow::Borrowed(ctx.name) } else { Cow::Owned(format!("{}{suffix}", ctx.name)) };
        let id = series_id_in(&mut self.id_buf, ctx.service, &metric, labels.iter().map(|(k, v)| (*k, &**v)));
        let key = self.keys.get_or_insert_with(id, || {
            Arc::new(SeriesKey::new(ctx.service, &metric, labels.iter().map(|(k, v)| (*k, &**v))))
        });
        b.push(key, (t_ns / 1_000_000) as TimeMs, v);
    }
}

struct Ctx<'a> {
    service: &'a str,
    instance: Option<&'a str>,
    name: &'a str,
}

/// The point's attributes (and the service instance) as sorted labels; the last value of a repeated key wins.
fn labels<'a>(ctx: &Ctx<'a>, attrs: &'a [KeyValue]) -> Vec<(&'a str, Cow<'a, str>)> {
    let mut v: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(attrs.len() + 1);
    if let Some(i) = ctx.instance {
        v.push(("service.instance.id", Cow::Borrowed(i)));
    }
    for kv in attrs {
        if let Some(s) = kv.value.as_ref().and_then(|a| a.value.as_ref()).and_then(value_str) {
            v.push((&kv.key, s));
        }
    }
    if v.len() > 1 {
        // Stable sort keeps input order among equal keys; keep the last of each run.
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.reverse();
        v.dedup_by(|a, b| a.0 == b.0);
        v.reverse();
    }
    v
}

fn value_str(v: &any_value::Value) -> Option<Cow<'_, str>> {
    Some(match v {
        any_value::Value::StringValue(s) => Cow::Borrowed(s.as_str()),
        any_value::Value::BoolValue(b) => Cow::Owned(b.to_string()),
        any_value::Value::IntValue(i) => Cow::Owned(i.to_string()),
        any_value::Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        _ => return None,
    })
}

fn find_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<Cow<'a, str>> {
    attrs.iter().rev().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref().and_then(value_str)
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
        Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum, metric,
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
