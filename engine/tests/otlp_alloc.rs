//! The OTLP protobuf decoder allocates nothing per data point once its series are known: a Collector-like record of
//! gauges, cumulative counters with an integer attribute and cumulative histograms, decoded after the record of the
//! minute before, makes no heap allocation at all. Counted by a global allocator, in a test binary of its own (one
//! test: nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use faultline::model::Batch;
use faultline::otlp::OtlpDecoder;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn record(minute: u64) -> Vec<u8> {
    let t = 1_767_571_200_000_000_000 + minute * 60_000_000_000;
    let start = 1_767_571_200_000_000_000 - 60_000_000_000;
    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let route = |r: &str| kv("http.route", any_value::Value::StringValue(r.into()));
    let number = |attributes, v: f64| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let k = minute + 1;
    let metrics = vec![
        Metric {
            name: "cpu.utilization".into(),
            data: Some(Data::Gauge(Gauge { data_points: vec![number(vec![], 0.4), number(vec![route("/a")], 0.5)] })),
            ..Default::default()
        },
        Metric {
            name: "http.server.requests".into(),
            data: Some(Data::Sum(Sum {
                data_points: [200, 500]
                    .map(|code| {
                        number(
                            vec![route("/a"), kv("http.response.status_code", any_value::Value::IntValue(code))],
                            (k * 60) as f64,
                        )
                    })
                    .to_vec(),
                aggregation_temporality: cumulative,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "http.server.duration".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![route("/a")],
                    start_time_unix_nano: start,
                    time_unix_nano: t,
                    count: 6 * k,
                    bucket_counts: vec![k, 2 * k, 3 * k],
                    explicit_bounds: vec![10.0, 100.0],
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            })),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", any_value::Value::StringValue("checkout".into())),
                    kv("service.instance.id", any_value::Value::StringValue("i-1".into())),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn decoding_a_record_of_known_series_allocates_nothing() {
    let records: Vec<Vec<u8>> = (0..3).map(record).collect();
    let (mut d, mut batch) = (OtlpDecoder::new(), Batch::with_capacity(64));
    // The first minute interns the series and sizes the scratch; the second is the first with rates everywhere.
    for r in &records[..2] {
        batch.clear();
        d.decode_proto(r, &mut batch).unwrap();
    }
    batch.clear();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let n = d.decode_proto(&records[2], &mut batch).unwrap();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    // 2 gauges, 2 rates, and the histogram's count rate, p50 and p99.
    assert_eq!(n, 7);
    assert_eq!(allocations, 0, "{allocations} allocations decoding {n} points");
    assert_eq!(d.stats.prost_decoded, 0);
    // Through prost, decoding into its messages allocates (why the reader in place exists); mapping them does not.
    let req = ExportMetricsServiceRequest::decode(records[2].as_slice()).unwrap();
    batch.clear();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    d.decode_request(&req, &mut batch);
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), before);
}
