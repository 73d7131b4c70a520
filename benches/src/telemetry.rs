//! Synthetic telemetry as records of 1000 points, Faultline JSON or OTLP protobuf: what the end-to-end load
//! generators send (Kafka records, OTLP/HTTP requests).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

/// Services per record; each service has 10 metrics × (series / 1000) instances.
const SERVICES_PER_RECORD: usize = 10;

/// Records for one tick: `series / 1000` records of 1000 points (10 services × 10 metrics × instances).
pub fn tick_records(json: bool, series: usize, tick: usize, rng: &mut u64) -> Vec<(String, Vec<u8>)> {
    let instances = (series / (SERVICES_PER_RECORD * 10 * (series / 1000).max(1))).max(1);
    let groups = (series / 1000).max(1);
    let t_ms = 1_767_571_200_000u64 + tick as u64 * 60_000;
    let mut value = |level: f64| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let spike = if *rng & 0xffff == 0 { 50.0 } else { 0.0 };
        level + (*rng >> 40) as f64 / (1u64 << 24) as f64 + spike
    };
    let kv = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }),
        ..Default::default()
    };
    (0..groups)
        .map(|g| {
            let services = (0..SERVICES_PER_RECORD).map(|s| format!("svc-{}", g * SERVICES_PER_RECORD + s));
            let payload = if json {
                let mut points = Vec::with_capacity(1000);
                for svc in services {
                    for m in 0..10 {
                        for i in 0..instances {
                            points.push(serde_json::json!({"time": t_ms, "service": svc, "metric": format!("m{m}"),
                                "labels": {"instance": format!("i{i}")}, "value": value(100.0 + m as f64)}));
                        }
                    }
                }
                serde_json::to_vec(&points).expect("serialisable")
            } else {
                let req = ExportMetricsServiceRequest {
                    resource_metrics: services
                        .map(|svc| ResourceMetrics {
                            resource: Some(Resource {
                                attributes: vec![kv("service.name", svc)],
                                ..Default::default()
                            }),
                            scope_metrics: vec![ScopeMetrics {
                                metrics: (0..10)
                                    .map(|m| Metric {
                                        name: format!("m{m}"),
                                        data: Some(metric::Data::Gauge(Gauge {
                                            data_points: (0..instances)
                                                .map(|i| NumberDataPoint {
                                                    attributes: vec![kv("instance", format!("i{i}"))],
                                                    time_unix_nano: t_ms * 1_000_000,
                                                    value: Some(number_data_point::Value::AsDouble(value(
                                                        100.0 + m as f64,
                                                    ))),
                                                    ..Default::default()
                                                })
                                                .collect(),
                                        })),
                                        ..Default::default()
                                    })
                                    .collect(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        })
                        .collect(),
                };
                req.encode_to_vec()
            };
            (format!("group-{g}"), payload)
        })
        .collect()
}

pub fn points_per_record(series: usize) -> usize {
    let instances = (series / (SERVICES_PER_RECORD * 10 * (series / 1000).max(1))).max(1);
    SERVICES_PER_RECORD * 10 * instances
}

/// One OpenTelemetry Collector-like record at minute `tick`: `services` resources (`service.name`,
/// `service.instance.id`, `host.name`), each with 4 gauges by route, 2 cumulative counters by route and status code
/// (an integer attribute) and a cumulative 10-bucket latency histogram by route: 52 Faultline points per service.
pub fn collector_record(services: usize, tick: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Sum, metric::Data,
    };
    let routes = ["/cart", "/checkout", "/search", "/login"];
    let t = (1_767_571_200 + tick * 60) * 1_000_000_000;
    let start = 1_767_571_200 * 1_000_000_000 - 60_000_000_000;
    let attr = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let text = |k: &str, v: &str| attr(k, any_value::Value::StringValue(v.into()));
    let point = |attributes: Vec<KeyValue>, v: f64| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let resource_metrics = (0..services)
        .map(|s| {
            let k = (tick + 1) * (s as u64 + 3);
            let mut metrics: Vec<Metric> = ["cpu.utilization", "memory.usage", "queue.depth", "threads"]
                .iter()
                .enumerate()
                .map(|(m, name)| Metric {
                    name: (*name).into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: routes
                            .iter()
                            .enumerate()
                            .map(|(r, route)| point(vec![text("http.route", route)], (k % 97 + (m * r) as u64) as f64))
                            .collect(),
                    })),
                    ..Default::default()
                })
                .collect();
            for name in ["http.server.requests", "http.server.bytes"] {
                let data_points = routes
                    .iter()
                    .flat_map(|route| [200i64, 404, 500].map(|code| (route, code)))
                    .map(|(route, code)| {
                        let attrs = vec![
                            text("http.route", route),
                            attr("http.response.status_code", any_value::Value::IntValue(code)),
                        ];
                        point(attrs, (k * 100 + code as u64) as f64)
                    })
                    .collect();
                metrics.push(Metric {
                    name: name.into(),
                    data: Some(Data::Sum(Sum { data_points, aggregation_temporality: cumulative, is_monotonic: true })),
                    ..Default::default()
                });
            }
            let bounds: Vec<f64> = [5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0].to_vec();
            metrics.push(Metric {
                name: "http.server.duration".into(),
                unit: "ms".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: routes
                        .iter()
                        .map(|route| {
                            let bucket_counts: Vec<u64> = (0..10).map(|b| k * (10 - b) + b).collect();
                            HistogramDataPoint {
                                attributes: vec![text("http.route", route)],
                                start_time_unix_nano: start,
                                time_unix_nano: t,
                                count: bucket_counts.iter().sum(),
                                sum: Some(1000.0),
                                bucket_counts,
                                explicit_bounds: bounds.clone(),
                                min: Some(1.0),
                                max: Some(2000.0),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: cumulative,
                })),
                ..Default::default()
            });
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", &format!("svc-{}", s / 2)),
                        text("service.instance.id", &format!("i-{s}")),
                        text("host.name", &format!("node-{}", s % 7)),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }.encode_to_vec()
}
