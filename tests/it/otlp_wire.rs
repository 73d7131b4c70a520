//! The OTLP protobuf decoder reads records in place (`engine/src/otlp/wire.rs`) instead of through prost's owned
//! messages. Both must give the same points: on random requests with every kind of metric and attribute, with fields
//! in canonical and in reversed order, over runs of requests (cumulative sums and histograms keep state between
//! them), and on damaged requests (the same points, or an error from both).

use faultline::model::Batch;
use faultline::otlp::OtlpDecoder;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message as _;

const T0: u64 = 1_767_571_200_000_000_000;
const MIN: u64 = 60_000_000_000;

fn value() -> impl Strategy<Value = Option<any_value::Value>> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "eu-1", ""]).prop_map(|s| Some(any_value::Value::StringValue(s.into()))),
        1 => any::<bool>().prop_map(|b| Some(any_value::Value::BoolValue(b))),
        1 => (-3i64..300).prop_map(|i| Some(any_value::Value::IntValue(i))),
        1 => prop::sample::select(vec![0.5, -2.0, 1e21, f64::NAN]).prop_map(|d| Some(any_value::Value::DoubleValue(d))),
        1 => Just(Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(any_value::Value::IntValue(1)) }],
        }))),
        1 => Just(Some(any_value::Value::BytesValue(vec![1, 2]))),
        1 => Just(None),
    ]
}

fn attribute() -> impl Strategy<Value = KeyValue> {
    let keys = vec!["zone", "host", "code", "service.name", "service.instance.id"];
    (prop::sample::select(keys), value(), 0..8u8).prop_map(|(k, v, shape)| KeyValue {
        key: k.into(),
        // Sometimes no value at all, or a value with no member set.
        value: match shape {
            0 => None,
            1 => Some(AnyValue { value: None }),
            _ => Some(AnyValue { value: v }),
        },
        ..Default::default()
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(attribute(), 0..4)
}

/// A point's timestamps: usually a tick of the run, sometimes none (0), with a start time or without.
fn times() -> impl Strategy<Value = (u64, u64)> {
    (prop_oneof![8 => 1..4u64, 1 => Just(0u64)], 0..3u64)
        .prop_map(|(tick, start)| (if tick == 0 { 0 } else { T0 + tick * MIN }, if start == 0 { 0 } else { T0 }))
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    let v = prop_oneof![
        4 => (0.0..1e4f64).prop_map(number_data_point::Value::AsDouble).prop_map(Some),
        2 => (-5i64..100_000).prop_map(number_data_point::Value::AsInt).prop_map(Some),
        1 => prop::sample::select(vec![f64::NAN, 1e31, f64::INFINITY])
            .prop_map(number_data_point::Value::AsDouble)
            .prop_map(Some),
        1 => Just(None),
    ];
    (attributes(), times(), v, prop::sample::select(vec![0u32, 0, 0, 1, 2]), any::<bool>()).prop_map(
        |(attributes, (t, start), value, flags, exemplar)| NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: t,
            value,
            flags,
            exemplars: if exemplar {
                vec![Exemplar { span_id: vec![7; 8], filtered_attributes: vec![], ..Default::default() }]
            } else {
                vec![]
            },
        },
    )
}

fn histogram_point() -> impl Strategy<Value = HistogramDataPoint> {
    let counts = prop::collection::vec(0..50u64, 0..5);
    (attributes(), times(), counts, any::<bool>(), prop::sample::select(vec![0u32, 0, 1]), any::<bool>()).prop_map(
        |(attributes, (t, start), counts, bounded, flags, tight)| {
            let n = counts.len();
            HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: t,
                count: counts.iter().sum(),
                // Bounds that fit the counts, mostly.
                explicit_bounds: (1..n + usize::from(!bounded)).map(|i| 10.0 * i as f64).collect(),
                bucket_counts: counts,
                min: tight.then_some(1.0),
                max: tight.then_some(70.0),
                flags,
                ..Default::default()
            }
        },
    )
}

fn summary_point() -> impl Strategy<Value = SummaryDataPoint> {
    (attributes(), times(), 0..500u64, prop::collection::vec(prop::sample::select(vec![0.5, 0.9, 0.99]), 0..3))
        .prop_map(|(attributes, (t, start), count, qs)| SummaryDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: t,
            count,
            quantile_values: qs
                .into_iter()
                .map(|quantile| ValueAtQuantile { quantile, value: quantile * 100.0 })
                .collect(),
            ..Default::default()
        })
}

fn metric() -> impl Strategy<Value = Metric> {
    let numbers = || prop::collection::vec(number_point(), 0..3);
    let temporality = || 0..3i32;
    let data = prop_oneof![
        numbers().prop_map(|data_points| Some(metric::Data::Gauge(Gauge { data_points }))),
        (numbers(), temporality(), any::<bool>()).prop_map(|(data_points, aggregation_temporality, is_monotonic)| {
            Some(metric::Data::Sum(Sum { data_points, aggregation_temporality, is_monotonic }))
        }),
        (prop::collection::vec(histogram_point(), 0..3), temporality()).prop_map(
            |(data_points, aggregation_temporality)| {
                Some(metric::Data::Histogram(Histogram { data_points, aggregation_temporality }))
            }
        ),
        prop::collection::vec(summary_point(), 0..3)
            .prop_map(|data_points| Some(metric::Data::Summary(Summary { data_points }))),
        Just(Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint { count: 3, ..Default::default() }],
            aggregation_temporality: 2,
        }))),
        Just(None),
    ];
    (prop::sample::select(vec!["requests", "latency_ms", "queue"]), data).prop_map(|(name, data)| Metric {
        name: name.into(),
        description: "d".into(),
        data,
        ..Default::default()
    })
}

fn request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let resource = prop::option::of(attributes().prop_map(|mut attributes| {
        attributes.push(KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("checkout".into())) }),
            ..Default::default()
        });
        attributes.rotate_right(1);
        Resource { attributes, ..Default::default() }
    }));
    let scope = prop::collection::vec(metric(), 0..4).prop_map(|metrics| ScopeMetrics {
        metrics,
        schema_url: "s".into(),
        ..Default::default()
    });
    let rm = (resource, prop::collection::vec(scope, 1..3)).prop_map(|(resource, scope_metrics)| ResourceMetrics {
        resource,
        scope_metrics,
        ..Default::default()
    });
    prop::collection::vec(rm, 1..3).prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

/// A length-delimited field.
fn field(tag: u32, payload: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// `req` with the fields of its resource metrics, scope metrics and metrics in reverse order, each message's parts
/// as protobuf allows them (a later field of a message is the same message; the metric's name after its data, the
/// resource after its scopes).
fn reversed(req: &ExportMetricsServiceRequest) -> Vec<u8> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let mut rm_bytes = Vec::new();
        for sm in rm.scope_metrics.iter().rev() {
            let mut sm_bytes = Vec::new();
            for m in sm.metrics.iter().rev() {
                let data = Metric { data: m.data.clone(), ..Default::default() }.encode_to_vec();
                let rest = Metric { data: None, ..m.clone() }.encode_to_vec();
                field(2, &[data, rest].concat(), &mut sm_bytes);
            }
            sm_bytes.extend(ScopeMetrics { metrics: vec![], ..sm.clone() }.encode_to_vec());
            field(2, &sm_bytes, &mut rm_bytes);
        }
        rm_bytes.extend(ResourceMetrics { scope_metrics: vec![], ..rm.clone() }.encode_to_vec());
        field(1, &rm_bytes, &mut out);
    }
    out
}

/// What a decoder gave for one record: its points (series, time, value bits), or that it refused it.
fn outcome(r: Result<usize, String>, b: &Batch) -> Option<Vec<(String, i64, u64)>> {
    r.ok()?;
    Some(b.keys.iter().zip(&b.times).zip(&b.values).map(|((k, &t), v)| (k.display_name(), t, v.to_bits())).collect())
}

/// prost's decode and the mapping of its messages: the reference.
fn through_prost(d: &mut OtlpDecoder, bytes: &[u8], b: &mut Batch) -> Result<usize, String> {
    let req = ExportMetricsServiceRequest::decode(bytes).map_err(|e| e.to_string())?;
    Ok(d.decode_request(&req, b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn the_wire_reader_decodes_as_prost_does(
        reqs in prop::collection::vec(request(), 1..4),
        reverse in prop::collection::vec(any::<bool>(), 4),
    ) {
        let (mut reference, mut wire) = (OtlpDecoder::new(), OtlpDecoder::new());
        for (req, rev) in reqs.iter().zip(reverse) {
            let bytes = if rev { reversed(req) } else { req.encode_to_vec() };
            let (mut a, mut b) = (Batch::default(), Batch::default());
            let want = outcome(through_prost(&mut reference, &bytes, &mut a), &a);
            let got = outcome(wire.decode_proto(&bytes, &mut b), &b);
            prop_assert!(want.is_some());
            prop_assert_eq!(got, want);
            prop_assert_eq!(a.ids, b.ids);
        }
        prop_assert_eq!((wire.stats.points, wire.stats.skipped), (reference.stats.points, reference.stats.skipped));
        prop_assert_eq!(wire.stats.prost_decoded, 0, "every one of these records is read in place");
    }

    #[test]
    fn a_damaged_request_gives_the_same_points_or_an_error_from_both(
        req in request(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = req.encode_to_vec();
        prop_assume!(!bytes.is_empty());
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        bytes.truncate(bytes.len() - cut.index(bytes.len().min(3) + 1));
        let (mut a, mut b) = (Batch::default(), Batch::default());
        let want = outcome(through_prost(&mut OtlpDecoder::new(), &bytes, &mut a), &a);
        let got = outcome(OtlpDecoder::new().decode_proto(&bytes, &mut b), &b);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn records_the_reader_does_not_take_go_to_prost_and_decode_the_same() {
    // A metric's data given twice (protobuf merges two gauges into one of both points) and a resource given twice.
    let gauge = |v: f64| Metric {
        name: "queue".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: T0,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let metric = [gauge(1.0).encode_to_vec(), gauge(2.0).encode_to_vec()].concat();
    let mut sm = Vec::new();
    field(2, &metric, &mut sm);
    let mut rm = Vec::new();
    field(2, &sm, &mut rm);
    let svc = |s: &str| Resource {
        attributes: vec![KeyValue {
            key: if s.is_empty() { "host".into() } else { "service.name".into() },
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(s.into())) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    field(1, &svc("checkout").encode_to_vec(), &mut rm);
    field(1, &svc("").encode_to_vec(), &mut rm);
    let mut bytes = Vec::new();
    field(1, &rm, &mut bytes);

    let (mut d, mut b) = (OtlpDecoder::new(), Batch::default());
    assert_eq!(d.decode_proto(&bytes, &mut b), Ok(2));
    assert_eq!(d.stats.prost_decoded, 1);
    let names: Vec<String> = b.keys.iter().map(|k| k.display_name()).collect();
    assert_eq!(names, ["checkout/queue", "checkout/queue"], "the merged resource keeps its service name");
    assert_eq!(b.values, [1.0, 2.0]);
    let mut a = Batch::default();
    assert_eq!(outcome(through_prost(&mut OtlpDecoder::new(), &bytes, &mut a), &a), outcome(Ok(2), &b));
}
