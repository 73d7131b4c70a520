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
