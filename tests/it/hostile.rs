//! Bad input never panics: every decoder of outside input, fed random bytes and mutated valid records, returns
//! points or an error saying what is wrong. Points it does return are usable (values finite and within the ±1e30 the
//! models hold, times in range), and a table source accounts for every row: a point or a dead letter, never both,
//! never neither.

use faultline::clock::MAX_TIME_MS;
use faultline::config::Config;
use faultline::feedback::Feedback;
use faultline::model::{Batch, MAX_VALUE};
use faultline::otlp::OtlpDecoder;
use faultline::rca::ChangeEvent;
use faultline::source::{DeadLetters, PointDecoder, Source};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message as _;

use crate::support::fixture;

/// What every decoded point must be.
fn usable(batch: &Batch) -> Result<(), TestCaseError> {
    for (&t, &v) in batch.times.iter().zip(&batch.values) {
        prop_assert!(v.is_finite() && v.abs() <= MAX_VALUE, "value {v} past what the models hold");
        prop_assert!((0..=MAX_TIME_MS).contains(&t), "time {t} out of range");
    }
    Ok(())
}

/// One decoder's answer: points that are usable, or a reason that says something.
fn answered(r: Result<usize, String>, batch: &Batch) -> Result<(), TestCaseError> {
    match r {
        Ok(n) => prop_assert_eq!(n, batch.len()),
        Err(e) => {
            prop_assert!(!e.trim().is_empty());
            prop_assert!(batch.is_empty(), "a failed record left {} points behind", batch.len());
        }
    }
    usable(batch)
}

fn valid_lines() -> Vec<String> {
    std::fs::read_to_string(fixture("points.jsonl"))
        .unwrap()
        .lines()
        // Lines the decoder takes as they are: the fixture also holds bad lines (an empty service, say), whose error
        // names their own fault rather than the field a case replaces.
        .filter(|l| PointDecoder::new().decode_record(l, &mut Batch::default()).is_ok())
        .map(String::from)
        .collect()
}

/// JSON values to put where a field was: wrong types, extremes, nesting.
fn hostile_json() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(-1e308)),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::json!("2026-13-45T99:99:99Z")),
        Just(serde_json::json!("NaN")),
        Just(serde_json::json!([1, 2, {"a": []}])),
        Just(serde_json::json!({"nested": {"deeper": [null]}})),
    ]
}

fn otlp_request() -> Vec<u8> {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    let point = |t: u64, v: f64| NumberDataPoint {
        attributes: vec![kv("region", "eu-1")],
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", "payments")], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "latency_ms".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![
                            point(1_767_571_200_000_000_000, 12.5),
                            point(1_767_571_260_000_000_000, 13.0),
                        ],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let mut batch = Batch::default();
        answered(PointDecoder::new().decode_record(&text, &mut batch), &batch)?;
        let mut batch = Batch::default();
        answered(OtlpDecoder::new().decode_proto(&bytes, &mut batch), &batch)?;
        let mut batch = Batch::default();
        answered(OtlpDecoder::new().decode_json(&bytes, &mut batch), &batch)?;
        if let Err(e) = ChangeEvent::parse(&text) {
            prop_assert!(!e.is_empty());
        }
        if let Err(e) = Feedback::parse(&text) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn a_point_with_any_field_replaced_or_dropped_decodes_or_names_the_field(
        line in proptest::sample::select(valid_lines()),
        field in proptest::sample::select(vec!["time", "service", "metric", "value", "labels"]),
        replacement in proptest::option::of(hostile_json()),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        match &replacement {
            Some(r) => v[field] = r.clone(),
            None => {
                v.as_object_mut().unwrap().remove(field);
            }
        }
        let mut text = v.to_string();
        if truncate {
            let at = cut.index(text.len() + 1);
            text = String::from_utf8_lossy(&text.as_bytes()[..at]).into_owned();
        }
        let mut batch = Batch::default();
        let r = PointDecoder::new().decode_record(&text, &mut batch);
        if let Err(e) = &r {
            // A well-formed object that fails names the field it failed on.
            if !truncate && serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                prop_assert!(e.contains(field) || e.contains("invalid JSON point"), "{e} (field {field})");
            }
        }
        answered(r, &batch)?;
    }

    #[test]
    fn a_damaged_otlp_request_decodes_or_is_refused(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = otlp_request();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let mut batch = Batch::default();
        answered(OtlpDecoder::new().decode_proto(&bytes, &mut batch), &batch)?;
    }
}

/// A CSV cell: mostly sensible, sometimes not (no quotes, separators or line breaks: those change the row count).
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        4 => "[a-z]{1,8}",
        4 => any::<i64>().prop_map(|i| i.to_string()),
        4 => any::<f64>().prop_map(|f| f.to_string()),
        2 => Just("2026-01-05T10:00:00Z".to_string()),
        2 => Just("1767571200000".to_string()),
        1 => Just("NaN".to_string()),
        1 => Just("inf".to_string()),
        1 => "[ -~&&[^,\"]]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_csv_table_accounts_for_every_row_as_a_point_or_a_dead_letter(
        rows in proptest::collection::vec(proptest::collection::vec(cell(), 4), 1..40),
    ) {
        let dir = std::env::temp_dir().join(format!("faultline-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.csv");
        let mut csv = String::from("time,service,metric,value\n");
        for r in &rows {
            csv += &r.join(",");
            csv.push('\n');
        }
        std::fs::write(&path, &csv).unwrap();
        let cfg = Config::default_config().unwrap();
        let mut source = faultline::table::TableSource::open(path.to_str().unwrap(), &cfg.source.table).unwrap();
        let mut dead = DeadLetters::to_writer(Box::new(std::io::sink()));
        let mut points = 0;
        loop {
            let mut batch = Batch::default();
            let more = source.next_batch(&mut batch, 16, &mut dead).unwrap();
            usable(&batch)?;
            points += batch.len();
            if !more {
                break;
            }
        }
        prop_assert_eq!(points as u64 + dead.count(), rows.len() as u64, "{}", csv);
    }
}
