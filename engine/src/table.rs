//! Replaying tables of points: CSV, Parquet and Arrow IPC files, one row per point (`source.kind = "table"`).
//!
//! Capacity teams replay historical telemetry through the same engine. A table has one row per point, with columns
//! for the event time, the service, the metric and the value, and optionally columns copied into labels
//! (`[source.table]` names them). Every format is read as Arrow record batches (the `parquet`, `arrow-ipc` and
//! `arrow-csv` readers), and their columns are cast to the types a point needs (`arrow-cast`), so any integer or
//! float type serves as the value, text or dictionary-encoded text as the service, metric and labels, and integer
//! milliseconds, an Arrow timestamp of any unit or RFC 3339 text as the time. A Parquet file is read with only the
//! columns the source needs.
//!
//! A row that cannot be a point (a null or non-finite value, an unreadable time, an empty service or metric) is
//! dead-lettered with its row number and the column at fault, and the replay goes on. A file that cannot be read
//! at all, or lacks a configured column, is an error naming the file and the column.
// Hot path: per row, no allocation once a series is known (its key is interned), no logging.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};

use crate::clock::{check_time, parse_time};
use crate::config::{TableConfig, TableFormat};
use crate::error::{Error, Result};
use crate::model::{Batch, Recent, SeriesKey, series_id_in};
use crate::source::{DeadLetters, Source};

/// Rows read from the file at a time.
const READ_BATCH: usize = 8192;

/// A table file of points, read batch by batch.
pub struct TableSource {
    name: String,
    format: TableFormat,
    reader: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>,
    /// The columns a point needs, in the order of [`TableConfig::columns`]: time, service, metric, value, labels.
    columns: Vec<String>,
    /// The record batch being read, its columns cast (time as milliseconds or text, value as f64, the rest as text),
    /// and the next row in it.
    current: Option<Cast>,
    row: usize,
    /// Rows before the current batch (for dead letters: `row N` counts from 1, the header of a CSV not counted).
    rows_before: u64,
    /// Interned keys, forgetting series not seen for a while (see [`Recent`]).
    keys: Recent<Arc<SeriesKey>>,
    id_buf: Vec<u8>,
    /// The label columns (indices into `labels` of [`Cast`]) in the order of their names, as a key sorts its labels.
    label_order: Vec<usize>,
}

/// One record batch's columns, cast (and downcast) for reading points.
struct Cast {
    rows: usize,
    time: Time,
    service: StringArray,
    metric: StringArray,
    value: Float64Array,
    labels: Vec<StringArray>,
    /// The configured columns as read, in the order of [`TableConfig::columns`] (what a dead letter shows).
    raw: Vec<ArrayRef>,
}

/// The time column: integer milliseconds, a millisecond timestamp, or text to parse.
enum Time {
    Millis(Int64Array),
    Stamp(TimestampMillisecondArray),
    Text(StringArray),
}

impl TableSource {
    /// Opens `path` as `cfg` says (the format from the extension when `auto`).
    pub fn open(path: &str, cfg: &TableConfig) -> Result<Self> {
        let format = cfg.format.resolve(path)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let columns = cfg.columns();
        let bad = |e: &dyn std::fmt::Display| Error::decode(path, format!("cannot read it as {}: {e}", format.name()));
        let reader: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send> = match format {
            TableFormat::Parquet => {
                use parquet::arrow::ProjectionMask;
                use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
                let fields = builder.schema().fields();
                check_columns(path, &columns, |c| fields.iter().any(|f| f.name() == c))?;
                // Only the columns a point needs; for a nested column, its whole subtree.
                let roots: Vec<usize> =
                    fields.iter().enumerate().filter(|(_, f)| columns.contains(f.name())).map(|(i, _)| i).collect();
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                Box::new(builder.with_projection(mask).with_batch_size(READ_BATCH).build().map_err(|e| bad(&e))?)
            }
            TableFormat::Arrow => {
                let reader = arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| bad(&e))?;
                let schema = reader.schema();
                check_columns(path, &columns, |c| schema.field_with_name(c).is_ok())?;
                Box::new(reader)
            }
            TableFormat::Auto => unreachable!("resolved above"),
            TableFormat::Csv => {
                // Every column as text: the columns a point needs are converted (and checked) per row, so a bad cell
                // dead-letters its row instead of failing the file. The header names come from the CSV reader itself.
                let delimiter = cfg.delimiter.as_bytes().first().copied().unwrap_or(b',');
                let (header, _) = arrow_csv::reader::Format::default()
                    .with_header(true)
                    .with_delimiter(delimiter)
                    .infer_schema(&file, Some(0))
                    .map_err(|e| bad(&e))?;
                // A byte-order mark (spreadsheet exports write one) is not part of the first name.
                let names: Vec<String> =
                    header.fields().iter().map(|f| f.name().trim_start_matches('\u{feff}').trim().to_owned()).collect();
                check_columns(path, &columns, |c| names.iter().any(|n| n == c))?;
                let schema =
                    Schema::new(names.iter().map(|n| Field::new(n.as_str(), DataType::Utf8, true)).collect::<Vec<_>>());
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                Box::new(
                    arrow_csv::ReaderBuilder::new(Arc::new(schema))
                        .with_header(true)
                        .with_delimiter(delimiter)
                        // A short row reads its missing cells as empty: it is dead-lettered naming the column.
                        .with_truncated_rows(true)
                        .with_batch_size(READ_BATCH)
                        .build(file)
                        .map_err(|e| bad(&e))?,
                )
            }
        };
        let mut label_order: Vec<usize> = (0..cfg.labels.len()).collect();
        label_order.sort_by(|&a, &b| cfg.labels[a].cmp(&cfg.labels[b]));
        Ok(Self {
            name: path.to_owned(),
            format,
            reader,
            columns,
            current: None,
            row: 0,
            rows_before: 0,
            keys: Recent::default(),
            id_buf: Vec::new(),
            label_order,
        })
    }

    /// Casts the columns of a freshly read record batch.
    fn cast(&self, rb: &RecordBatch) -> Result<Cast> {
        let col = |name: &str| {
            rb.column_by_name(name).cloned().ok_or_else(|| Error::decode(&self.name, format!("no column `{name}`")))
        };
        let to = |name: &str, array: &ArrayRef, ty: &DataType| {
            arrow_cast::cast(array, ty).map_err(|e| {
                Error::decode(
                    &self.name,
                    format!("column `{name}` ({}): cannot be read as {ty}: {e}", array.data_type()),
                )
            })
        };
        let text = |name: &str| Ok(to(name, &col(name)?, &DataType::Utf8)?.as_string::<i32>().clone());
        let t = &self.columns[0];
        let time = col(t)?;
        let time = match time.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => {
                Time::Text(to(t, &time, &DataType::Utf8)?.as_string::<i32>().clone())
            }
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                let ms = to(t, &time, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                Time::Stamp(ms.as_primitive::<TimestampMillisecondType>().clone())
            }
            _ => Time::Millis(to(t, &time, &DataType::Int64)?.as_primitive::<Int64Type>().clone()),
        };
        let value = col(&self.columns[3])?;
        let value = to(&self.columns[3], &value, &DataType::Float64)?.as_primitive::<Float64Type>().clone();
        Ok(Cast {
            rows: rb.num_rows(),
            time,
            service: text(&self.columns[1])?,
            metric: text(&self.columns[2])?,
            value,
            labels: self.columns[4..].iter().map(|c| text(c)).collect::<Result<_>>()?,
            raw: self.columns.iter().map(|c| col(c)).collect::<Result<_>>()?,
        })
    }

    /// Row `r` of `c` as a point in `batch`, or why it cannot be one.
    fn push_row(&mut self, c: &Cast, r: usize, batch: &mut Batch) -> std::result::Result<(), String> {
        let column = |i: usize| &self.columns[i];
        let empty = || format!("column `{}`: empty", column(0));
        let time = match &c.time {
            Time::Millis(a) if a.is_null(r) => return Err(empty()),
            Time::Millis(a) => a.value(r),
            Time::Stamp(a) if a.is_null(r) => return Err(empty()),
            Time::Stamp(a) => a.value(r),
            Time::Text(a) if a.is_null(r) => return Err(empty()),
            Time::Text(a) => {
                let s = a.value(r).trim();
                match s.parse::<i64>() {
                    Ok(ms) => ms,
                    Err(_) => parse_time(s).map_err(|e| format!("column `{}`: {e}", column(0)))?,
                }
            }
        };
        check_time(time).map_err(|e| format!("column `{}`: {e}", column(0)))?;
        if c.value.is_null(r) || !c.value.value(r).is_finite() {
            return Err(format!("column `{}`: expected a finite number, got {:?}", column(3), cell(&c.raw[3], r)));
        }
        let value = c.value.value(r);
        if let Some(problem) = crate::model::value_problem(value) {
            return Err(format!("column `{}`: {problem}", column(3)));
        }
        fn text(a: &StringArray, r: usize) -> &str {
            if a.is_null(r) { "" } else { a.value(r) }
        }
        let required = |a: &StringArray, i: usize| -> std::result::Result<(), String> {
            if text(a, r).is_empty() { Err(format!("column `{}`: must not be empty", column(i))) } else { Ok(()) }
        };
        required(&c.service, 1)?;
        required(&c.metric, 2)?;
        let (service, metric) = (text(&c.service, r), text(&c.metric, r));
        // Labels in the order of their names (as a key sorts them), empty ones left out.
        let columns = &self.columns;
        let labels = self
            .label_order
            .iter()
            .map(|&i| (columns[4 + i].as_str(), text(&c.labels[i], r)))
            .filter(|(_, v)| !v.is_empty());
        let id = series_id_in(&mut self.id_buf, service, metric, labels.clone());
        let key = self.keys.get_or_insert_with(id, || Arc::new(SeriesKey::new(service, metric, labels)));
        batch.push(key, time, value);
        Ok(())
    }

    /// What a dead letter shows of row `r`: the configured columns' cells as read.
    fn raw_row(&self, c: &Cast, r: usize) -> String {
        let fields: serde_json::Map<String, serde_json::Value> =
            self.columns.iter().zip(&c.raw).map(|(n, a)| (n.clone(), serde_json::Value::String(cell(a, r)))).collect();
        serde_json::Value::Object(fields).to_string()
    }
}

/// Cell `r` of `a` as text (empty for a null).
fn cell(a: &ArrayRef, r: usize) -> String {
    if a.is_null(r) { String::new() } else { arrow_cast::display::array_value_to_string(a, r).unwrap_or_default() }
}

/// Fails naming the first configured column that `has` says the file lacks.
fn check_columns(path: &str, columns: &[String], has: impl Fn(&str) -> bool) -> Result<()> {
    match columns.iter().find(|c| !has(c)) {
        Some(c) => Err(Error::decode(path, format!("no column `{c}` (set the column names in [source.table])"))),
        None => Ok(()),
    }
}

impl Source for TableSource {
    fn next_batch(&mut self, batch: &mut Batch, max: usize, dead: &mut DeadLetters) -> Result<bool> {
        while batch.len() < max {
            let Some(c) = self.current.take() else {
                match self.reader.next() {
                    None => return Ok(false),
                    Some(rb) => {
                        let rb = rb.map_err(|e| Error::decode(&self.name, format!("{}: {e}", self.format.name())))?;
                        self.current = Some(self.cast(&rb)?);
                        self.row = 0;
                    }
                }
                continue;
            };
            while self.row < c.rows && batch.len() < max {
                let r = self.row;
                self.row += 1;
                if let Err(reason) = self.push_row(&c, r, batch) {
                    let at = format!("row {}", self.rows_before + r as u64 + 1);
                    dead.record(&self.name, &at, &reason, &self.raw_row(&c, r))?;
                }
            }
            if self.row < c.rows {
                self.current = Some(c);
            } else {
                self.rows_before += c.rows as u64;
            }
        }
        Ok(true)
    }

    fn describe(&self) -> String {
        format!("table {} ({})", self.name, self.format.name())
    }
}

/// Writes `batch` to `path` as `format` (tests and the replay benchmark make their tables with it).
pub fn write_table(path: &Path, format: TableFormat, batch: &RecordBatch) -> Result<()> {
    let io = |e: std::io::Error| Error::io(path, e);
    let arrow = |e: &dyn std::fmt::Display| Error::Internal(format!("writing {}: {e}", path.display()));
    let file = File::create(path).map_err(io)?;
    match format {
        TableFormat::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| arrow(&e))?;
            w.write(batch).map_err(|e| arrow(&e))?;
            w.close().map_err(|e| arrow(&e))?;
        }
        TableFormat::Arrow => {
            let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).map_err(|e| arrow(&e))?;
            w.write(batch).map_err(|e| arrow(&e))?;
            w.finish().map_err(|e| arrow(&e))?;
        }
        TableFormat::Auto => return Err(Error::config("write_table needs a concrete format")),
        TableFormat::Csv => {
            let mut w = arrow_csv::WriterBuilder::new().with_header(true).build(file);
            w.write(batch).map_err(|e| arrow(&e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn scratch(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("faultline-table-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read_all(path: &std::path::Path, cfg: &TableConfig) -> (Batch, Vec<serde_json::Value>) {
        let mut src = TableSource::open(path.to_str().unwrap(), cfg).unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut dead = DeadLetters::to_writer(Box::new(Buf(out.clone())));
        let mut batch = Batch::with_capacity(16);
        // Small batches: rows carry over between calls.
        loop {
            let max = batch.len() + 2;
            if !src.next_batch(&mut batch, max, &mut dead).unwrap() {
                break;
            }
        }
        dead.flush().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        (batch, text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
    }

    #[test]
    fn bad_rows_are_dead_lettered_naming_row_and_column_and_the_rest_is_read() {
        let csv = "\u{feff}time,service,metric,value,host\n\
                   2026-01-05T00:00:00Z,api,latency,1.5,h1\n\
                   1767571260000,api,latency,abc,h1\n\
                   soon,api,latency,2,h1\n\
                   1767571320000,,latency,2,h1\n\
                   1767571330000,api\n\
                   1767571340000,api,latency,4e38,h1\n\
                   1767571380000,\"api\",latency,2.5,\n";
        let path = scratch("bad.csv", csv);
        let mut cfg = Config::default_config().unwrap().source.table;
        cfg.labels = vec!["host".into()];
        let (batch, dead) = read_all(&path, &cfg);
        assert_eq!(batch.times, [1_767_571_200_000, 1_767_571_380_000]);
        assert_eq!(batch.values, [1.5, 2.5]);
        assert_eq!(batch.keys[0].labels.len(), 1, "host = h1");
        assert!(batch.keys[1].labels.is_empty(), "an empty cell leaves the label out");
        let at: Vec<&str> = dead.iter().map(|d| d["at"].as_str().unwrap()).collect();
        assert_eq!(at, ["row 2", "row 3", "row 4", "row 5", "row 6"]);
        assert!(dead[0]["reason"].as_str().unwrap().starts_with("column `value`"), "{}", dead[0]);
        assert!(dead[1]["reason"].as_str().unwrap().starts_with("column `time`"), "{}", dead[1]);
        assert!(dead[2]["reason"].as_str().unwrap().starts_with("column `service`"), "{}", dead[2]);
        assert!(
            dead[3]["reason"].as_str().unwrap().starts_with("column `value`: expected a finite number, got \"\""),
            "{}",
            dead[3]
        );
        assert!(dead[0]["raw"].as_str().unwrap().contains("\"value\":\"abc\""), "{}", dead[0]);
        let past = dead[4]["reason"].as_str().unwrap();
        assert!(past.starts_with("column `value`: 4e38 lies past ±1e30"), "{past}");

        // Semicolons, as many European spreadsheet exports write them.
        let path2 = scratch(
            "semicolons.csv",
            "time;service;metric;value\n1767571200000;api;latency;\"1,5\"\n1767571260000;api;latency;2\n",
        );
        let mut semi = Config::default_config().unwrap().source.table;
        semi.delimiter = ";".into();
        let (batch, dead) = read_all(&path2, &semi);
        assert_eq!((batch.values.as_slice(), dead.len()), (&[2.0][..], 1), "\"1,5\" is not a number: {dead:?}");
        std::fs::remove_dir_all(path2.parent().unwrap()).unwrap();

        // A missing column stops the replay before it starts, naming the column; so does an unreadable file.
        cfg.labels = vec!["zone".into()];
        let err = TableSource::open(path.to_str().unwrap(), &cfg).err().unwrap().to_string();
        assert!(err.contains("no column `zone`"), "{err}");
        let junk = scratch("junk.parquet", "not a parquet file");
        let err = TableSource::open(junk.to_str().unwrap(), &cfg).err().unwrap().to_string();
        assert!(err.contains("cannot read it as Parquet"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        std::fs::remove_dir_all(junk.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_format_comes_from_the_extension_or_the_config() {
        assert_eq!(TableFormat::Auto.resolve("a/b.PARQUET").unwrap(), TableFormat::Parquet);
        assert_eq!(TableFormat::Auto.resolve("b.feather").unwrap(), TableFormat::Arrow);
        assert_eq!(TableFormat::Csv.resolve("b.txt").unwrap(), TableFormat::Csv);
        assert!(TableFormat::Auto.resolve("b.txt").unwrap_err().to_string().contains("cannot tell the format"));
        let user = "[source]\nkind = \"table\"\npath = \"x.dat\"\n[source.table]\nvalue = \"\"\nlabels = [\"time\"]\n\
                    delimiter = \"::\"\n";
        let err = Config::from_layers(Some(("x.toml", user)), []).unwrap_err().to_string();
        assert!(err.contains("cannot tell the format of \"x.dat\""), "{err}");
        assert!(err.contains("source.table.value must name a column"), "{err}");
        assert!(err.contains("column \"time\" is named twice"), "{err}");
        assert!(err.contains("source.table.delimiter must be one ASCII character"), "{err}");
    }
}
