//! Table replays: the fixture's points as CSV (UTC and local times), Parquet and Arrow IPC files (each with other
//! column types) give exactly the events of the JSON-lines replay.

use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_array::{TimestampMillisecondArray, TimestampSecondArray};
use faultline::config::{Config, TableFormat};
use faultline::table::write_table;

use crate::support::{fixture, run};

/// Columns of points: time (ms), service, metric, value, region ("" for none).
type Columns = (Vec<i64>, Vec<String>, Vec<String>, Vec<f64>, Vec<String>);

/// The fixture's valid points as columns.
fn fixture_columns() -> Columns {
    let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for line in std::fs::read_to_string(fixture("points.jsonl")).unwrap().lines() {
        let Ok(p) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        // Times come as milliseconds or as RFC 3339 text; the fixture's one invalid point has no number value.
        let t = p["time"].as_i64().or_else(|| p["time"].as_str().map(|s| faultline::clock::parse_time(s).unwrap()));
        let (Some(t), Some(v)) = (t, p["value"].as_f64()) else { continue };
        c.0.push(t);
        c.1.push(p["service"].as_str().unwrap().to_owned());
        c.2.push(p["metric"].as_str().unwrap().to_owned());
        c.3.push(v);
        c.4.push(p["labels"]["region"].as_str().unwrap_or("").to_owned());
    }
    c
}

fn replay(path: &std::path::Path, extra: &str) -> String {
    let text = format!(
        "[engine]\nshards = 2\n[source]\nkind = \"table\"\npath = {:?}\n[source.table]\nlabels = [\"region\"]\n{extra}\n\
         [graph]\nedges = [[\"frontend\", \"checkout\"], [\"checkout\", \"payments\"], [\"checkout\", \"cart\"]]\n",
        path.display().to_string()
    );
    run(&Config::from_layers(Some(("table.toml", &text)), []).unwrap()).anomalies
}

#[test]
fn tables_in_every_format_replay_exactly_like_json_lines() {
    let text = format!(
        "[engine]\nshards = 2\n[source]\nkind = \"jsonl\"\npath = {:?}\n\
         [graph]\nedges = [[\"frontend\", \"checkout\"], [\"checkout\", \"payments\"], [\"checkout\", \"cart\"]]\n",
        fixture("points.jsonl").display().to_string()
    );
    let want = run(&Config::from_layers(Some(("jsonl.toml", &text)), []).unwrap()).anomalies;
    assert!(want.lines().count() > 50, "the fixture's fault is found");

    let (times, services, metrics, values, regions) = fixture_columns();
    let dir = std::env::temp_dir().join(format!("faultline-tables-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = |v: &[String]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    // Parquet: a millisecond timestamp; Arrow: whole seconds and a dictionary-encoded service; CSV: RFC 3339 text,
    // in UTC, and local times with their offsets from UTC (an export from anywhere, zones changing row by row).
    let rfc3339: Vec<String> = times.iter().map(|&t| faultline::clock::fmt_time(t)).collect();
    let zones = [("-05:00", -300), ("+02:00", 120), ("+05:30", 330), ("+00:00", 0), ("-0330", -210)];
    let local: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let (zone, minutes) = zones[i % zones.len()];
            let text = faultline::clock::fmt_time(t + minutes * 60_000);
            format!("{}{zone}", text.strip_suffix('Z').unwrap()).replacen('T', if i % 2 == 0 { "T" } else { " " }, 1)
        })
        .collect();
    let dictionary: DictionaryArray<Int32Type> = services.iter().map(String::as_str).collect();
    let cases: [(&str, TableFormat, ArrayRef, ArrayRef); 4] = [
        (
            "points.parquet",
            TableFormat::Parquet,
            Arc::new(TimestampMillisecondArray::from(times.clone())),
            text(&services),
        ),
        (
            "points.arrow",
            TableFormat::Arrow,
            Arc::new(TimestampSecondArray::from(times.iter().map(|t| t / 1000).collect::<Vec<_>>())),
            Arc::new(dictionary),
        ),
        ("points.csv", TableFormat::Csv, text(&rfc3339), text(&services)),
        ("points-local.csv", TableFormat::Csv, text(&local), text(&services)),
    ];
    assert!(times.iter().all(|t| t % 1000 == 0), "the fixture's times are whole seconds");
    for (name, format, time, service) in cases {
        let batch = RecordBatch::try_from_iter([
            ("time", time),
            ("service", service),
            ("metric", text(&metrics)),
            ("value", Arc::new(Float64Array::from(values.clone())) as ArrayRef),
            ("region", text(&regions)),
            ("ignored", Arc::new(Int64Array::from(vec![7; times.len()])) as ArrayRef),
        ])
        .unwrap();
        let path = dir.join(name);
        write_table(&path, format, &batch).unwrap();
        let got = replay(&path, "");
        let diff = got.lines().zip(want.lines()).position(|(a, b)| a != b);
        assert_eq!(got.lines().count(), want.lines().count(), "{name}: event count");
        assert!(
            diff.is_none(),
            "{name}, event {diff:?}:\n{}\n{}",
            got.lines().nth(diff.unwrap()).unwrap(),
            want.lines().nth(diff.unwrap()).unwrap()
        );
    }
    // Column names are configurable.
    let renamed = RecordBatch::try_from_iter([
        ("ts", Arc::new(Int64Array::from(times.clone())) as ArrayRef),
        ("svc", text(&services)),
        ("name", text(&metrics)),
        ("v", Arc::new(Float64Array::from(values.clone())) as ArrayRef),
        ("region", text(&regions)),
    ])
    .unwrap();
    let path = dir.join("renamed.parquet");
    write_table(&path, TableFormat::Parquet, &renamed).unwrap();
    let columns = "time = \"ts\"\nservice = \"svc\"\nmetric = \"name\"\nvalue = \"v\"";
    assert!(replay(&path, columns) == want, "renamed columns give other events");
    std::fs::remove_dir_all(&dir).unwrap();
}
