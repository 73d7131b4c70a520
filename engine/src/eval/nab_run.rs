//! `faultline eval nab`: streams the NAB corpus through the engine's own detector and scores it with [`super::nab`].
//!
//! Every data file is one series (service: the file's name, metric `value`, label `file`), fed to a [`ShardDetector`]
//! built from the same `[detector]` configuration the engine runs, point by point in file order. The files a thread
//! runs are laid end to end in columns of about equal length, a multiple of the detector's eight vector lanes, and
//! interleaved into batches of `engine.batch-size` (so the detector's rounds hold many series and fill its lanes),
//! which does not change any score: the detector processes each series' points in order whatever the batching. Each
//! row's anomaly score is the detector's per-point score stream. Detection is causal (a row's score depends only on
//! the rows before it and itself) and uses no labels; the labels only enter the scoring. Files run in parallel on
//! `engine.shards` threads; each series is independent, so the scores do not depend on that.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use faultline_kernels::Kernels;
use serde::Serialize;

use super::nab::{
    Breakdown, NabFile, PROFILES, ProfileResult, Scorer, WindowOutcome, align_results, file_scores, format_timestamp,
    load_corpus, load_results, load_windows, validate,
};
use crate::config::Config;
use crate::detect::{LANES, ShardDetector};
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
    /// Also report every window and each file's false positives at the standard profile's optimised threshold.
    pub windows: bool,
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
    /// With [`NabRun::windows`]: where the standard profile's raw score comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
    /// The anomaly events the detector raised, scored as alerts (absent when scoring a results file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventReport>,
}

/// The detector's anomaly events scored as alerts: every event row a detection, and only each run's first row (an
/// alert's onset: an event whose series had none at its previous point), which is what pages someone.
#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    pub rows: EventScores,
    pub onsets: EventScores,
}

/// The detector's anomaly events, what an alert pipeline receives, scored by NAB as a detector whose every event row
/// is a detection (score 1) and every other row is not (score 0): each profile at threshold 0.5, no optimiser (the
/// events are already decisions). The score stream above is what NAB's threshold optimiser ranks; this is what the
/// engine would have paged for.
#[derive(Debug, Clone, Serialize)]
pub struct EventScores {
    /// Rows with an event (after NAB's probation period or not).
    pub events: usize,
    pub results: Vec<ProfileResult>,
    /// Labelled windows (past the probation period) with at least one event in them, of [`EventScores::windows`].
    pub windows_alerted: usize,
    pub windows: usize,
    /// Event rows outside every window, after the probation period.
    pub outside: usize,
    /// Files with no event at all (after the probation period), of those with a window.
    pub silent_files: Vec<String>,
    /// With [`NabRun::windows`]: every window (alerted at which row, or missed) and each file's alert rows outside the
    /// windows, at the standard profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
}

/// The detector's output for one file: its score stream, and 1 at each row the detector raised an anomaly event for
/// (0 elsewhere).
#[derive(Debug, Clone, Default)]
pub struct FileOutput {
    pub scores: Vec<f64>,
    pub events: Vec<f64>,
}

/// Runs the engine's detector over every file of `corpus`; returns each file's output, in corpus order.
pub fn detect_corpus(cfg: &Config, corpus: &[NabFile]) -> Vec<FileOutput> {
    let threads = cfg.shard_count().min(corpus.len()).max(1);
    // Files go to threads longest first, each to the least loaded one.
    let mut order: Vec<usize> = (0..corpus.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(corpus[k].times.len()));
    let mut groups: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); threads];
    for k in order {
        let g = groups.iter_mut().min_by_key(|g| g.0).expect("at least one thread");
        g.0 += corpus[k].times.len();
        g.1.push(k);
    }
    let batch = cfg.engine.batch_size.max(1);
    let kernels = Kernels::detect();
    let parts: Vec<Vec<(usize, FileOutput)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = groups
            .iter()
            .map(|(_, files)| {
                scope.spawn(move || {
                    let mut det = ShardDetector::new(&cfg.detector, &cfg.rca, kernels);
                    score_files(&mut det, corpus, files, batch)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a NAB worker panicked")).collect()
    });
    let mut outputs = vec![FileOutput::default(); corpus.len()];
    for (k, o) in parts.into_iter().flatten() {
        outputs[k] = o;
    }
    outputs
}

/// The files `files` of `corpus` through `det`, each its own series (and service), interleaved so a batch holds many
/// series and the detector's rounds vectorise; each file's points stay in order, so every score is what the file
/// alone would give. Each file's score stream is kept, and the rows its anomaly events are for.
///
/// The files are laid end to end in [`columns`] of about equal length, so every round holds one point of each column
/// (a multiple of the detector's eight vector lanes) until the columns run out: a column's next file starts where
/// its last one ends, as a new series. A batch is a block of consecutive rows of every column (at most `batch` points,
/// at least one row), laid out column by column: its values are copied a file's slice at a time, its scores go back
/// the same way, and the detector's `k`-th round holds each column's `k`-th row of the block, as if the rows were
/// interleaved one by one. Blocks end where a column moves to its next file, so within a run of blocks of one shape
/// the ids and keys are the same: they are built once per shape (no `Arc` clone per row).
fn score_files(det: &mut ShardDetector, corpus: &[NabFile], files: &[usize], batch: usize) -> Vec<(usize, FileOutput)> {
    let keys: Vec<Arc<SeriesKey>> = files
        .iter()
        .map(|&k| Arc::new(SeriesKey::new(&corpus[k].name, "value", [("file", corpus[k].name.as_str())])))
        .collect();
    let len: Vec<usize> = files.iter().map(|&k| corpus[k].times.len()).collect();
    let mut scores: Vec<Vec<f64>> = len.iter().map(|&n| vec![0.0; n]).collect();
    let mut alerts: Vec<Vec<f64>> = len.iter().map(|&n| vec![0.0; n]).collect();
    // An event's series is its file (keys are per file; `f` indexes `files`).
    let file_of: std::collections::HashMap<_, usize> = keys.iter().enumerate().map(|(f, k)| (k.id, f)).collect();
    let columns = columns(&len, LANES);
    let longest = columns.iter().map(|c| c.iter().map(|&f| len[f]).sum::<usize>()).max().unwrap_or(0);
    // Per column: its next file (an index into the column) and the row its current file starts at.
    let mut cursor = vec![(0, 0); columns.len()];
    let (mut block_ids, mut block_keys) = (Vec::new(), Vec::new());
    let (mut times, mut values, mut out, mut events) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // `active`: the file each column holds at `row` and the row it started at, in column order.
    let (mut active, mut shape): (Vec<(usize, usize)>, _) = (Vec::new(), (Vec::new(), 0));
    let mut row = 0;
    while row < longest {
        active.clear();
        for (column, (next, start)) in columns.iter().zip(&mut cursor) {
            while *next < column.len() && *start + len[column[*next]] <= row {
                *start += len[column[*next]];
                *next += 1;
            }
            if let Some(&f) = column.get(*next) {
                active.push((f, *start));
            }
        }
        // In the order the files started (and so the order the detector registered them in: its rounds stay in
        // slot order, which it would otherwise put them in).
        active.sort_by_key(|&(_, start)| start);
        // The row where the first of the active files runs out.
        let end = active.iter().map(|&(f, start)| start + len[f]).min().unwrap_or(longest);
        // More columns than a batch holds: each batch is one row of a group of them.
        let group = active.len().min(batch);
        let rows = (batch / group).max(1);
        while row < end {
            let k = rows.min(end - row);
            for part in active.chunks(group) {
                if shape.0 != part || shape.1 != k {
                    block_ids.clear();
                    block_keys.clear();
                    for &(f, _) in part {
                        block_ids.extend(std::iter::repeat_n(keys[f].id, k));
                        block_keys.extend(std::iter::repeat_n(&keys[f], k).cloned());
                    }
                    shape = (part.to_vec(), k);
                }
                times.clear();
                values.clear();
                for &(f, start) in part {
                    let file = &corpus[files[f]];
                    times.extend_from_slice(&file.times[row - start..row - start + k]);
                    values.extend_from_slice(&file.values[row - start..row - start + k]);
                }
                out.clear();
                out.resize(times.len(), 0.0);
                events.clear();
                det.process_scored(&block_ids, &block_keys, &times, &values, &mut events, Some(&mut out));
                for (&(f, start), got) in part.iter().zip(out.chunks_exact(k)) {
                    scores[f][row - start..row - start + k].copy_from_slice(got);
                }
                // Each event is for a point of this block: the first row of its file's rows in the block with its
                // time (a late point, not newer than the one before it, is skipped by the detector and raises none).
                for e in &events {
                    let f = file_of[&e.key.id];
                    let Some(&(_, start)) = part.iter().find(|&&(g, _)| g == f) else { continue };
                    let block = row - start..row - start + k;
                    if let Some(r) = corpus[files[f]].times[block.clone()].iter().position(|&t| t == e.time) {
                        alerts[f][block.start + r] = 1.0;
                    }
                }
            }
            row += k;
        }
    }
    files
        .iter()
        .copied()
        .zip(scores.into_iter().zip(alerts).map(|(scores, events)| FileOutput { scores, events }))
        .collect()
}

/// Files of `lengths` rows laid end to end in columns (each a list of indices into `lengths`, in the order they
/// run), so that the rounds of a batch, one row of every column, hold a multiple of `lanes` points for as long as
/// possible: as many columns as fit in a multiple of `lanes` without any column outlasting the longest file by
/// much (`total / longest` rounded down to a multiple of `lanes`, at least `lanes`), each file to the column with
/// the fewest rows so far, longest files first. Fewer files than that: one column each.
fn columns(lengths: &[usize], lanes: usize) -> Vec<Vec<usize>> {
    let total: usize = lengths.iter().sum();
    let longest = lengths.iter().copied().max().unwrap_or(0).max(1);
    let count = (total / longest / lanes * lanes).max(lanes);
    if lengths.len() <= count {
        return (0..lengths.len()).map(|f| vec![f]).collect();
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&f| std::cmp::Reverse(lengths[f]));
    let mut columns = vec![(0, Vec::new()); count];
    for f in order {
        let c = columns.iter_mut().min_by_key(|c| c.0).expect("at least one column");
        c.0 += lengths[f];
        c.1.push(f);
    }
    columns.into_iter().map(|(_, files)| files).collect()
}

/// Loads the corpus and labels, obtains the scores (from the detector or a results file), optionally writes them, and
/// scores all three profiles.
pub fn run(cfg: &Config, run: &NabRun) -> Result<NabReport> {
    let corpus = load_corpus(&run.data)?;
    let windows = load_windows(&run.labels)?;
    let (scores, alerts, scored, detect_s) = match &run.scores {
        Some(path) => (align_results(&corpus, &load_results(path)?)?, None, path.display().to_string(), 0.0),
        None => {
            let started = Instant::now();
            let outputs = detect_corpus(cfg, &corpus);
            let detect_s = started.elapsed().as_secs_f64();
            let (scores, alerts): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
                outputs.into_iter().map(|o| (o.scores, o.events)).unzip();
            (scores, Some(alerts), "detector".to_owned(), detect_s)
        }
    };
    if let Some(out) = &run.out {
        write_results(out, &corpus, &scores)?;
    }
    let files = file_scores(&corpus, &scores);
    validate(&files, &windows)?;
    let scorer = Scorer::new(&files, &windows);
    let results: Vec<ProfileResult> = PROFILES.iter().map(|p| scorer.optimize(p)).collect();
    let breakdown = run.windows.then(|| scorer.breakdown(&PROFILES[0], results[0].threshold));
    let events = alerts.map(|alerts| {
        let onsets: Vec<Vec<f64>> = alerts
            .iter()
            .map(|a| (0..a.len()).map(|r| if a[r] > 0.0 && (r == 0 || a[r - 1] == 0.0) { 1.0 } else { 0.0 }).collect())
            .collect();
        EventReport {
            rows: score_events(&corpus, &alerts, &windows, false),
            onsets: score_events(&corpus, &onsets, &windows, run.windows),
        }
    });
    Ok(NabReport {
        scored,
        files: corpus.len(),
        rows: corpus.iter().map(|f| f.times.len()).sum(),
        detect_s,
        results,
        breakdown,
        events,
    })
}

/// NAB's scores of the detector's events (`alerts`: 1 at each event row) as a detector of their own, each profile at
/// threshold 0.5, and how the windows and the rows outside them fared (see [`EventScores`]); with `detailed`, the
/// standard profile's breakdown too.
fn score_events(corpus: &[NabFile], alerts: &[Vec<f64>], windows: &super::nab::Windows, detailed: bool) -> EventScores {
    let files = file_scores(corpus, alerts);
    let scorer = Scorer::new(&files, windows);
    let results: Vec<ProfileResult> = PROFILES.iter().map(|p| scorer.score_at(p, 0.5)).collect();
    let b = scorer.breakdown(&PROFILES[0], 0.5);
    let silent: Vec<String> = corpus
        .iter()
        .zip(alerts)
        .filter(|(f, a)| {
            windows.get(&f.name).is_some_and(|w| !w.is_empty())
                && a[super::nab::probation_length(f.times.len())..].iter().all(|&v| v == 0.0)
        })
        .map(|(f, _)| f.name.clone())
        .collect();
    EventScores {
        events: alerts.iter().map(|a| a.iter().filter(|&&v| v > 0.0).count()).sum(),
        windows_alerted: b.windows.iter().filter(|w| w.detected_at.is_some()).count(),
        windows: b.windows.len(),
        outside: b.false_positives.iter().map(|f| f.rows).sum(),
        results,
        silent_files: silent,
        breakdown: detailed.then_some(b),
    }
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
    if let Some(ev) = &report.events {
        let _ = writeln!(
            s,
            "\nanomaly events as alerts (a detection each, no threshold to optimise; files with windows and no event: {})",
            ev.rows.silent_files.len()
        );
        let _ = writeln!(
            s,
            "{:<20} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "as detections", "standard", "low FP", "low FN", "rows", "windows", "outside"
        );
        for (name, e) in [("every event row", &ev.rows), ("each run's onset", &ev.onsets)] {
            let _ = writeln!(
                s,
                "{:<20} {:>10.2} {:>10.2} {:>10.2} {:>9} {:>5} of {:<3} {:>7}",
                name,
                e.results[0].normalized,
                e.results[1].normalized,
                e.results[2].normalized,
                e.events,
                e.windows_alerted,
                e.windows,
                e.outside
            );
        }
        if let Some(b) = &ev.onsets.breakdown {
            render_alerts(&mut s, b);
        }
    }
    if let Some(b) = &report.breakdown {
        render_breakdown(&mut s, b);
    }
    s
}

/// The windows (missed first, by best score; then found, least credited first) and the false positives by file
/// (costliest first) of a [`Breakdown`]; credits and costs are what each adds to the raw score.
fn render_breakdown(s: &mut String, b: &Breakdown) {
    let (found, missed): (Vec<&WindowOutcome>, Vec<&WindowOutcome>) =
        b.windows.iter().partition(|w| w.detected_at.is_some());
    let credit = |ws: &[&WindowOutcome]| ws.iter().map(|w| w.credit).sum::<f64>();
    let fp_rows: usize = b.false_positives.iter().map(|f| f.rows).sum();
    let _ = writeln!(
        s,
        "\nwindows at the {} profile's threshold {:.6}: {} of {} found ({:+.2}), {} missed ({:+.2}); false positives: \
         {} rows in {} files ({:+.2})",
        b.profile,
        b.threshold,
        found.len(),
        b.windows.len(),
        credit(&found),
        missed.len(),
        credit(&missed),
        fp_rows,
        b.false_positives.len(),
        b.false_positives.iter().map(|f| f.cost).sum::<f64>(),
    );
    // Missed first, best score first; then found, least credited first.
    let mut windows = missed;
    windows.sort_by(|x, y| y.best_score.total_cmp(&x.best_score));
    let mut found = found;
    found.sort_by(|x, y| x.credit.total_cmp(&y.credit));
    windows.extend(found);
    let _ = writeln!(
        s,
        "{:<58} {:>3} {:<19} {:>5} {:>6} {:>9} {:>7}",
        "file", "win", "start", "rows", "best", "found at", "credit"
    );
    for w in windows {
        let at = w.detected_at.map_or("missed".to_owned(), |k| format!("row {k}"));
        let _ = writeln!(
            s,
            "{:<58} {:>3} {:<19} {:>5} {:>6.3} {:>9} {:>+7.3}",
            w.file, w.window, w.start, w.rows, w.best_score, at, w.credit
        );
    }
    let mut fps: Vec<_> = b.false_positives.iter().collect();
    fps.sort_by(|x, y| x.cost.total_cmp(&y.cost));
    let _ = writeln!(s, "\n{:<58} {:>5} {:>7} {:>6}", "false positives: file", "rows", "cost", "max");
    for f in fps {
        let _ = writeln!(s, "{:<58} {:>5} {:>+7.3} {:>6.3}", f.file, f.rows, f.cost, f.max_score);
    }
}

/// The alerts' side of `--windows`: the windows no alert began in, and each file's alert onsets outside every window
/// (most first).
fn render_alerts(s: &mut String, b: &Breakdown) {
    let missed: Vec<_> = b.windows.iter().filter(|w| w.detected_at.is_none()).collect();
    let _ = writeln!(s, "\nwindows no alert began in ({} of {}):", missed.len(), b.windows.len());
    for w in missed {
        let _ = writeln!(s, "  {:<58} {:>3} {:<19} {:>5} rows", w.file, w.window, w.start, w.rows);
    }
    let mut fps: Vec<_> = b.false_positives.iter().collect();
    fps.sort_by(|x, y| y.rows.cmp(&x.rows).then_with(|| x.file.cmp(&y.file)));
    let _ = writeln!(s, "alert onsets outside every window, by file:");
    for f in fps {
        let _ = writeln!(s, "  {:<58} {:>5}", f.file, f.rows);
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use super::*;
    use crate::eval::nab::format_timestamp;
    use crate::model::TimeMs;

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!("faultline-nab-run-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic noise in [-1, 1).
    fn noise(i: usize, seed: u64) -> f64 {
        let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        ((h >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// 2016-01-01 00:00:00, 5-minute rows.
    const T0: TimeMs = 1_451_606_400_000;
    const STEP: TimeMs = 300_000;

    fn csv(values: impl Iterator<Item = f64>) -> String {
        let mut s = String::from("timestamp,value\n");
        for (i, v) in values.enumerate() {
            let _ = writeln!(s, "{},{v:.3}", format_timestamp(T0 + i as TimeMs * STEP));
        }
        s
    }

    fn window(l: usize, r: usize) -> String {
        let at = |i: usize| format!("\"{}.000000\"", format_timestamp(T0 + i as TimeMs * STEP));
        format!("[{}, {}]", at(l), at(r))
    }

    /// Three NAB-layout files: a spike, a level shift with a second spike, and quiet noise (no windows).
    fn fixture(dir: &TempDir) -> NabRun {
        let n = 800;
        dir.write("data/catA/spike.csv", &csv((0..n).map(|i| 50.0 + noise(i, 1) + if i == 600 { 25.0 } else { 0.0 })));
        dir.write(
            "data/catA/shift.csv",
            &csv((0..n).map(|i| {
                let level = if i >= 500 { 80.0 } else { 60.0 };
                level + 2.0 * noise(i, 2) + if i == 700 { -30.0 } else { 0.0 }
            })),
        );
        dir.write("data/catB/quiet.csv", &csv((0..n).map(|i| 10.0 + noise(i, 3))));
        let labels = format!(
            "{{\n \"catA/spike.csv\": [{}],\n \"catA/shift.csv\": [{}, {}],\n \"catB/quiet.csv\": []\n}}\n",
            window(560, 640),
            window(460, 540),
            window(660, 740)
        );
        NabRun {
            data: dir.0.join("data"),
            labels: dir.write("labels/windows.json", &labels),
            scores: None,
            out: Some(dir.0.join("out/results.csv")),
            windows: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn eval_nab_runs_the_detector_end_to_end_and_rescoring_its_output_agrees() {
        let dir = TempDir::new("e2e");
        let cfg = Config::default_config().unwrap();
        let run_cfg = fixture(&dir);
        let report = run(&cfg, &run_cfg).unwrap();
        assert_eq!((report.files, report.rows, report.scored.as_str()), (3, 2400, "detector"));
        let table = render(&report);
        // All three windows are found exactly at their anomaly, 41 rows before each window's end (81 rows wide), and
        // only there; the quiet file raises nothing. Each hit is worth S(−41/81) / S(−1) = 0.8641 of an early one.
        let hit = crate::eval::nab::scaled_sigmoid(-41.0 / 81.0) / crate::eval::nab::scaled_sigmoid(-1.0);
        assert!(close(hit, 0.864_121_7), "{hit}");
        let standard = &report.results[0];
        assert_eq!(standard.profile, "standard");
        assert!(close(standard.raw, 3.0 * hit), "raw {}", standard.raw);
        assert_eq!((standard.tp, standard.fp, standard.fn_, standard.windows), (3, 0, 240, 3));
        assert!(close(standard.normalized, 100.0 * (3.0 * hit + 3.0) / 6.0), "{}", standard.normalized);
        assert!(close(standard.normalized, 93.206_082_7));
        assert!(close(standard.per_category["catA"], 93.206_082_7));
        assert_eq!(standard.per_category_raw["catB"], 0.0);
        assert!(close(report.results[1].normalized, 93.206_082_7), "low FP {}", report.results[1].normalized);
        assert!(close(report.results[2].normalized, 95.470_721_8), "low FN {}", report.results[2].normalized);
        assert!(table.contains("catB") && table.contains("(no windows)"), "{table}");

        // The written results are NAB's format, one row per data row, and score to the same numbers.
        let written = std::fs::read_to_string(dir.0.join("out/results.csv")).unwrap();
        assert_eq!(written.lines().next(), Some("file,timestamp,anomaly_score"));
        assert_eq!(written.lines().count(), 2401);
        let rescored = run(&cfg, &NabRun { scores: run_cfg.out.clone(), out: None, ..run_cfg.clone() }).unwrap();
        assert_eq!(rescored.results, report.results);
        assert!(rescored.scored.ends_with("results.csv"));
        assert!(report.breakdown.is_none() && !table.contains("found at"));

        // `--windows`: each window found at its anomaly, 40 rows in, for `hit` each; no false positives.
        let detailed = run(&cfg, &NabRun { windows: true, ..run_cfg.clone() }).unwrap();
        let b = detailed.breakdown.as_ref().unwrap();
        assert_eq!((b.profile, b.threshold), ("standard", standard.threshold));
        let found: Vec<_> = b.windows.iter().map(|w| (w.file.as_str(), w.window, w.detected_at)).collect();
        assert_eq!(
            found,
            [("catA/shift.csv", 0, Some(40)), ("catA/shift.csv", 1, Some(40)), ("catA/spike.csv", 0, Some(40))]
        );
        assert!(b.windows.iter().all(|w| close(w.credit, hit) && w.rows == 81));
        assert!(b.false_positives.is_empty());
        let table = render(&detailed);
        assert!(
            table.contains("3 of 3 found") && table.contains("catA/spike.csv") && table.contains("row 40"),
            "{table}"
        );
        let json = serde_json::to_value(&detailed).unwrap();
        assert_eq!(json["breakdown"]["windows"][2]["detected_at"], 40);
        // And the alerts' side: the two spikes' windows without an alert, no alert outside a window.
        let alerts = detailed.events.as_ref().unwrap().onsets.breakdown.as_ref().unwrap();
        let missed: Vec<_> =
            alerts.windows.iter().filter(|w| w.detected_at.is_none()).map(|w| (w.file.as_str(), w.window)).collect();
        assert_eq!(missed, [("catA/shift.csv", 1), ("catA/spike.csv", 0)]);
        assert!(alerts.false_positives.is_empty());
        assert!(table.contains("windows no alert began in (2 of 3)"), "{table}");

        // The events, as alerts. With the default M-of-N (2 of 3), a lone spike raises none: the shift's window alone
        // has events, a run from its change point (one onset), and nothing fires outside a window.
        let ev = report.events.as_ref().unwrap();
        assert_eq!((ev.rows.windows_alerted, ev.rows.windows, ev.rows.outside), (1, 3, 0));
        assert_eq!(ev.rows.silent_files, ["catA/spike.csv"]);
        assert_eq!((ev.onsets.events, ev.onsets.windows_alerted, ev.onsets.outside), (1, 1, 0));
        assert!(ev.rows.events > 1, "a run of event rows: {}", ev.rows.events);
        // Found at the change point, a row or two after the shift (40 rows into its window); two windows missed.
        let raw = ev.onsets.results[0].raw;
        assert!(raw <= hit - 2.0 && raw > 0.8 - 2.0, "{raw}");
        assert!(table.contains("each run's onset") && table.contains("1 of 3"), "{table}");
        assert_eq!(json["events"]["onsets"]["windows_alerted"], 1);
        // One point is enough with `m-of-n = [1, 1]`: every window is alerted at its anomaly, and the alerts' onsets
        // score what the score stream does.
        let mut single = cfg.clone();
        single.detector.m_of_n = [1, 1];
        let report = run(&single, &run_cfg).unwrap();
        let ev = report.events.as_ref().unwrap();
        assert_eq!((ev.onsets.windows_alerted, ev.onsets.outside), (3, 0));
        assert!(ev.rows.silent_files.is_empty());
        assert!(close(ev.onsets.results[0].normalized, 93.206_082_7), "{}", ev.onsets.results[0].normalized);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = TempDir::new("errors");
        let cfg = Config::default_config().unwrap();
        let mut run_cfg = fixture(&dir);
        run_cfg.data = dir.0.join("nope");
        let err = run(&cfg, &run_cfg).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let mut run_cfg = fixture(&dir);
        run_cfg.scores =
            Some(dir.write("bad.csv", "file,timestamp,anomaly_score\ncatA/spike.csv,2016-01-01 00:00:00,2\n"));
        let err = run(&cfg, &run_cfg).unwrap_err().to_string();
        assert!(err.contains("bad.csv:2") && err.contains("not in [0, 1]"), "{err}");
    }

    /// NAB's 58 file lengths pack into 16 columns (two blocks of the detector's eight lanes a round) that outlast the
    /// longest file by under 6 %, each file in exactly one column; few or equal files keep a column each.
    #[test]
    fn files_pack_into_columns_of_about_the_longest_files_length() {
        let nab = [
            1126, 1243, 1538, 1538, 1624, 1624, 1643, 1643, 1882, 2161, 2380, 2494, 2499, 2499, 2499, 4032, 4032, 4032,
            4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032, 4032,
            4032, 4032, 4032, 4032, 4621, 4730, 4730, 5315, 7267, 10319, 15831, 15833, 15842, 15851, 15853, 15858,
            15866, 15893, 15902, 15902, 18050, 22695,
        ];
        let cols = columns(&nab, LANES);
        assert_eq!(cols.len(), 16);
        let mut seen: Vec<usize> = cols.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..nab.len()).collect::<Vec<_>>());
        let longest = cols.iter().map(|c| c.iter().map(|&f| nab[f]).sum::<usize>()).max().unwrap();
        assert!(longest >= 22695 && longest * 100 < 22695 * 106, "{longest}");
        // A file as long as all the others together: the lanes' minimum of columns, the long file alone in one.
        let cols = columns(&[100, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10], LANES);
        assert_eq!(cols.len(), 8);
        assert!(cols.contains(&vec![0]), "{cols:?}");
        assert_eq!(columns(&[5, 3, 9], LANES), [vec![0], vec![1], vec![2]]);
        assert!(columns(&[], LANES).is_empty());
    }

    /// Files laid end to end in columns, in batches that cut them anywhere, score every row as each file alone
    /// through a detector of its own: a column's next file is a series of its own, and its rows are its own.
    #[test]
    fn files_in_columns_score_as_each_file_alone() {
        let corpus: Vec<NabFile> = (0..40)
            .map(|f| {
                let rows = 200 + (f * 37) % 240;
                let times = (0..rows).map(|i| T0 + i as TimeMs * STEP).collect();
                // A spike three quarters in; every third file also shifts up from four fifths in, by a fifth of its
                // level and more (past the default minimum relative deviation: events).
                let values = (0..rows).map(|i| {
                    let shift = if f % 3 == 0 && i >= rows * 4 / 5 { 9.0 + 2.0 * f as f64 } else { 0.0 };
                    10.0 * f as f64 + noise(i, f as u64) + shift + if i == rows * 3 / 4 { 9.0 } else { 0.0 }
                });
                NabFile { name: format!("cat/f{f}.csv"), times, values: values.collect() }
            })
            .collect();
        let lengths: Vec<usize> = corpus.iter().map(|f| f.times.len()).collect();
        assert!(columns(&lengths, LANES).len() < corpus.len(), "the files share columns");
        let cfg = Config::default_config().unwrap();
        let detector = || ShardDetector::new(&cfg.detector, &cfg.rca, Kernels::detect());
        let alone: Vec<FileOutput> =
            (0..corpus.len()).map(|f| score_files(&mut detector(), &corpus, &[f], 4096).remove(0).1).collect();
        assert!(alone.iter().all(|o| o.scores.iter().any(|&v| v > 0.0)), "each file scores its spike");
        assert!(alone.iter().step_by(3).all(|o| o.events.contains(&1.0)), "each shifting file raises events");
        let files: Vec<usize> = (0..corpus.len()).collect();
        for batch in [7, 64, 4096] {
            let together = score_files(&mut detector(), &corpus, &files, batch);
            for (f, o) in together {
                let same = o.scores.iter().zip(&alone[f].scores).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && o.scores.len() == alone[f].scores.len(), "file {f}, batch {batch}");
                assert_eq!(o.events, alone[f].events, "file {f}, batch {batch}: its events at the same rows");
            }
        }
    }

    /// The full corpus through the default configuration (needs `../shared/data/nab`; skipped without it): the
    /// standard profile must stay above Numenta HTM's 70.1.
    #[test]
    fn default_config_beats_htm_on_the_nab_corpus() {
        let nab = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/nab"));
        if !nab.is_dir() {
            println!("skipped: NAB shared data not found at {}", nab.display());
            return;
        }
        let cfg = Config::default_config().unwrap();
        let run_cfg = NabRun {
            data: nab.join("data"),
            labels: nab.join("labels/combined_windows.json"),
            scores: None,
            out: None,
            windows: false,
        };
        let report = run(&cfg, &run_cfg).unwrap();
        println!("{}", render(&report));
        assert_eq!(report.rows, 365_558);
        assert!(report.results[0].normalized > 70.1011, "standard {}", report.results[0].normalized);
    }
}
