//! OTLP protobuf decoding, the source stage of Kafka and OTLP/HTTP ingest: Faultline points/s of
//! `OtlpDecoder::decode_proto` (read in place), against prost's decode into owned messages alone and prost's decode
//! with the same mapping (`decode_request`, the path of records the in-place reader leaves to prost), in one run.
//!
//! Inputs: the load generators' gauge records (1 000 points: 10 services × 10 gauges × 10 instances, one string
//! attribute each) and Collector-like records (20 service instances, each 4 gauges by route, 2 cumulative counters by
//! route and integer status code and a cumulative 10-bucket histogram by route: 1 040 points). Each iteration decodes
//! a run of 16 minutes of records, as a consumer would (cumulative state carries from one to the next).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faultline::model::Batch;
use faultline::otlp::OtlpDecoder;
use faultline_benches::telemetry::{collector_record, tick_records};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

const TICKS: u64 = 16;

fn inputs() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let gauges = (0..TICKS as usize).map(|t| tick_records(false, 1000, t, &mut rng).remove(0).1).collect();
    let collector = (0..TICKS).map(|t| collector_record(20, t)).collect();
    vec![("gauges", gauges), ("collector", collector)]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("otlp_decode");
    for (name, records) in inputs() {
        let (mut d, mut batch) = (OtlpDecoder::new(), Batch::with_capacity(2048));
        let points: usize = records
            .iter()
            .map(|r| {
                batch.clear();
                d.decode_proto(r, &mut batch).expect("valid")
            })
            .sum();
        assert_eq!(d.stats.prost_decoded, 0, "read in place");
        g.throughput(Throughput::Elements(points as u64));
        g.bench_function(BenchmarkId::new("in_place", name), |b| {
            let (mut d, mut batch) = (OtlpDecoder::new(), Batch::with_capacity(2048));
            b.iter(|| {
                for r in &records {
                    batch.clear();
                    d.decode_proto(r, &mut batch).expect("valid");
                }
            })
        });
        g.bench_function(BenchmarkId::new("prost_and_mapping", name), |b| {
            let (mut d, mut batch) = (OtlpDecoder::new(), Batch::with_capacity(2048));
            b.iter(|| {
                for r in &records {
                    batch.clear();
                    let req = ExportMetricsServiceRequest::decode(r.as_slice()).expect("valid");
                    d.decode_request(&req, &mut batch);
                }
            })
        });
        g.bench_function(BenchmarkId::new("prost_only", name), |b| {
            b.iter(|| {
                records
                    .iter()
                    .map(|r| ExportMetricsServiceRequest::decode(r.as_slice()).expect("valid").resource_metrics.len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
