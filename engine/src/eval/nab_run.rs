//! `faultline eval nab`: streams the NAB corpus through the engine's own detector and scores it with [`super::nab`].
//!
//! Every data file is one series (service `nab`, metric `value`, label `file`), fed to a [`ShardDetector`] built from
//! the same `[detector]` configuration the engine runs, point by point in file order (in batches of
//! `engine.batch-size`, which does not change the result: the detector processes a series' points in order whatever
//! the batching). Each row's anomaly score is the detector's per-point score stream. Detection is causal (a row's
//! score depends only on the rows before it and itself) and uses no labels; the labels only enter the scoring. Files
//! run in parallel on `engine.shards` threads; each series is independent, so the scores do not depend on that.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use faultline_kernels::Kernels;
use serde::Serialize;

use super::nab::{
    NabFile, PROFILES, ProfileResult, Scorer, align_results, file_scores, format_timestamp, load_corpus, load_results,
    load_windows, validate,
};
use crate::config::Config;
use crate::detect::ShardDetector;
use crate::error::{Error, Result};
use crate::model::SeriesKey;

/// What `faultline eval nab` was asked to do.
#[derive(Debug, Clone)]
pub struct NabRun {
    /// NAB's `data/` directory (`<category>/<name>.csv`).
    pub data: PathBuf,
    /// NAB's `labels/combined_windows.json`.
    pub labels: PathBuf,
    /// Score this results file (`file,timestamp,anomaly_score`) instead of running the detector.
    pub scores: Option<PathBuf>,
    /// Write the per-row scores in NAB's results format here.
    pub out: Option<PathBuf>,
}

/// The outcome: NAB's three profiles, each at its own optimised threshold.
#[derive(Debug, Clone, Serialize)]
pub struct NabReport {
    /// `detector` or the results file scored.
    pub scored: String,
    pub files: usize,
    pub rows: usize,
    /// Seconds the detector took over the whole corpus (0 when scoring a results file).
    pub detect_s: f64,
    pub results: Vec<ProfileResult>,
}

/// Runs the engine's detector over every file of `corpus`; returns one score per row, in corpus order.
pub fn detect_corpus(cfg: &Config, corpus: &[NabFile]) -> Vec<Vec<f64>> {
    let threads = cfg.shard_count().min(corpus.len()).max(1);
    let next = AtomicUsize::new(0);
    let batch = cfg.engine.batch_size;
    let kernels = Kernels::detect();
    let mut parts: Vec<Vec<(usize, Vec<f64>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut det = ShardDetector::new(&cfg.detector, &cfg.rca, kernels);
                    let mut done = Vec::new();
                    let mut events = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = corpus.get(k) else { break };
                        done.push((k, score_file(&mut det, file, batch, &mut events)));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a NAB worker panicked")).collect()
    });
    let mut scores = vec![Vec::new(); corpus.len()];
    for (k, s) in parts.iter_mut().flat_map(|p| p.drain(..)) {
        scores[k] = s;
    }
    scores
}

/// One file through `det` as one series; events are discarded, the score stream is kept.
fn score_file(
    det: &mut ShardDetector,
    file: &NabFile,
    batch: usize,
    events: &mut Vec<crate::event::AnomalyEvent>,
) -> Vec<f64> {
    let key = Arc::new(SeriesKey::new("nab", "value", [("file", file.name.as_str())]));
    let n = file.times.len();
    let mut scores = vec![0.0; n];
    let ids = vec![key.id; batch.min(n)];
    let keys = vec![Arc::clone(&key); batch.min(n)];
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let len = end - start;
        events.clear();
        det.process_scored(
            &ids[..len],
            &keys[..len],
            &file.times[start..end],
            &file.values[start..end],
            events,
            Some(&mut scores[start..end]),
        );
        start = end;
    }
    scores
}

/// Loads the corpus and labels, obtains the scores (from the detector or a results file), optionally writes them, and
/// scores all three profiles.
pub fn run(cfg: &Config, run: &NabRun) -> Result<NabReport> {
    let corpus = load_corpus(&run.data)?;
    let windows = load_windows(&run.labels)?;
    let (scores, scored, detect_s) = match &run.scores {
        Some(path) => (align_results(&corpus, &load_results(path)?)?, path.display().to_string(), 0.0),
        None => {
            let started = Instant::now();
            let scores = detect_corpus(cfg, &corpus);
            (scores, "detector".to_owned(), started.elapsed().as_secs_f64())
        }
    };
    if let Some(out) = &run.out {
        write_results(out, &corpus, &scores)?;
    }
    let files = file_scores(&corpus, &scores);
    validate(&files, &windows)?;
    let scorer = Scorer::new(&files, &windows);
    let results = PROFILES.iter().map(|p| scorer.optimize(p)).collect();
    Ok(NabReport { scored, files: corpus.len(), rows: corpus.iter().map(|f| f.times.len()).sum(), detect_s, results })
}

/// Writes scores in NAB's results layout, `file,timestamp,anomaly_score`, one row per data row (readable by
/// [`load_results`], so `--scores` re-scores it exactly).
pub fn write_results(path: &Path, corpus: &[NabFile], scores: &[Vec<f64>]) -> Result<()> {
    let io = |e| Error::io(path, e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    writeln!(w, "file,timestamp,anomaly_score").map_err(io)?;
    for (file, scores) in corpus.iter().zip(scores) {
        for (&t, &s) in file.times.iter().zip(scores) {
            writeln!(w, "{},{},{s}", file.name, format_timestamp(t)).map_err(io)?;
        }
    }
    w.flush().map_err(io)
}

/// The report as a table for the terminal.
pub fn render(report: &NabReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "NAB scores of {} over {} files, {} rows{}",
        report.scored,
        report.files,
        report.rows,
        if report.detect_s > 0.0 { format!(" (detector: {:.2} s)", report.detect_s) } else { String::new() }
    );
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>10} {:>9} {:>7} {:>7} {:>7}",
        "profile", "score", "threshold", "raw", "TP", "FP", "FN"
    );
    for r in &report.results {
        let _ = writeln!(
            s,
            "{:<20} {:>8.2} {:>10.6} {:>9.3} {:>7} {:>7} {:>7}",
            r.profile, r.normalized, r.threshold, r.raw, r.tp, r.fp, r.fn_
        );
    }
    let _ = writeln!(s, "TP/FP/FN count rows (NAB's convention); each profile at its own optimised threshold.");
    let mut categories: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for (k, r) in report.results.iter().enumerate() {
        for name in r.per_category_raw.keys() {
            let row = categories.entry(name).or_insert_with(|| vec![None; report.results.len()]);
            row[k] = r.per_category.get(name).copied();
        }
    }
    let _ = write!(s, "\n{:<24}", "category");
    for r in &report.results {
        let _ = write!(s, " {:>20}", r.profile);
    }
    s.push('\n');
    for (name, row) in categories {
        let _ = write!(s, "{name:<24}");
        for v in row {
            match v {
                Some(v) => {
                    let _ = write!(s, " {v:>20.2}");
                }
                None => {
                    let _ = write!(s, " {:>20}", "(no windows)");
                }
            }
        }
        s.push('\n');
    }
    s
}
