//! NAB (Numenta Anomaly Benchmark v1.1) scoring: loads the corpus, the label windows and per-row detector results, and
//! scores a detector exactly as NAB does, including NAB's corpus-wide threshold optimiser.
//!
//! The algorithm and its constants follow `shared/specs/nab-scoring.md`:
//!
//! * The first `P = min(floor(0.15·n), 750)` rows of every file are *probation*. They are ignored when counting and
//!   scoring, but still take part in the window geometry (positions are absolute row indices).
//! * Every non-probation row gets a *sweep score*. Inside a window `[L, R]` of width `W = R − L + 1` it is
//!   `A_TP · S(−(R − i + 1)/W) / S(−1)`. Outside every window it is `A_FP · S(|i − R_prev| / (W_prev − 1))`, measured
//!   from the most recent window that ended before the row, or `−A_FP` when no window has ended yet. `S` is
//!   [`scaled_sigmoid`].
//! * At a threshold θ a row is *detected* when `anomaly_score ≥ θ`. The raw score sums, over the windows that hold at
//!   least one non-probation row, the best (= earliest) detected sweep score in the window or `−A_FN` when the window
//!   is missed, plus the sweep score of every detected row outside the windows.
//! * The NAB score is `100 · (raw − S_null) / (S_perfect − S_null)`, with `S_perfect = A_TP · N`,
//!   `S_null = −A_FN · N`, and N the number of labelled windows of the scored files (116 for the NAB corpus).
//! * [`optimize`] picks the threshold with the best corpus raw score among `1.1` (no detection) and every distinct
//!   anomaly score, ties going to the higher threshold. It sorts the rows once and sweeps them in one pass.
//!
//! Typical use:
//!
//! ```no_run
//! # use faultline::eval::nab::*;
//! # fn main() -> faultline::Result<()> {
//! let nab = std::path::Path::new("../shared/data/nab");
//! let corpus = load_corpus(&nab.join("data"))?;
//! let windows = load_windows(&nab.join("labels/combined_windows.json"))?;
//! let scores = align_results(&corpus, &load_results(&nab.join("results-numenta-htm.csv.gz"))?)?;
//! let files = file_scores(&corpus, &scores);
//! validate(&files, &windows)?;
//! let scorer = Scorer::new(&files, &windows);
//! for profile in &PROFILES {
//!     let result = scorer.optimize(profile);
//!     println!("{}: {:.4} at θ = {}", result.profile, result.normalized, result.threshold);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::error::{Error, Result};
use crate::model::TimeMs;

/// Fraction of every file (from its start) that is probation.
pub const PROBATION_FRACTION: f64 = 0.15;
/// Upper bound of the probation length in rows (`0.15 × 5000`).
pub const PROBATION_CAP_ROWS: usize = 750;
/// Steepness of the scaled sigmoid.
pub const SIGMOID_STEEPNESS: f64 = 5.0;
/// Relative positions beyond this score exactly −1.
pub const FP_CUTOFF: f64 = 3.0;
/// The optimiser's "no detection" candidate threshold, above any legal anomaly score.
pub const NO_DETECTION_THRESHOLD: f64 = 1.1;

/// An application profile: the weights of true positives, false positives and false negatives.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Profile {
    /// NAB's profile key (`standard`, `reward_low_FP_rate`, `reward_low_FN_rate`).
    pub name: &'static str,
    /// Weight of a true positive (the earliest detection in a window).
    pub a_tp: f64,
    /// Weight of a false positive (every detected row outside the windows).
    pub a_fp: f64,
    /// Cost of a missed window.
    pub a_fn: f64,
}

/// NAB's three profiles (`config/profiles.json`); the TN weight is never used and is left out.
pub const PROFILES: [Profile; 3] = [
    Profile { name: "standard", a_tp: 1.0, a_fp: 0.11, a_fn: 1.0 },
    Profile { name: "reward_low_FP_rate", a_tp: 1.0, a_fp: 0.22, a_fn: 1.0 },
    Profile { name: "reward_low_FN_rate", a_tp: 1.0, a_fp: 0.11, a_fn: 2.0 },
];

/// One data file of the corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct NabFile {
    /// Path relative to the data directory, with `/` separators, e.g. `realKnownCause/nyc_taxi.csv`.
    pub name: String,
    /// Row timestamps in file order (not necessarily increasing: a few NAB files repeat or go back in time).
    pub times: Vec<TimeMs>,
    /// Row values, parallel to `times`.
    pub values: Vec<f64>,
}

/// Ground-truth windows per file (relative path as in [`NabFile::name`]): inclusive `[start, end]` timestamps, in
/// order and non-overlapping.
pub type Windows = BTreeMap<String, Vec<(TimeMs, TimeMs)>>;

/// A detector's anomaly scores for one file, row by row (`times[i]` is the timestamp of `scores[i]`).
#[derive(Debug, Clone, Copy)]
pub struct FileScores<'a> {
    /// The file's name as in [`Windows`] (`realKnownCause/nyc_taxi.csv`).
    pub name: &'a str,
    /// Row timestamps, in file order.
    pub times: &'a [TimeMs],
    /// Anomaly scores in [0, 1], parallel to `times`.
    pub scores: &'a [f64],
}

/// The score of a detector for one profile at one threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProfileResult {
    /// [`Profile::name`].
    pub profile: &'static str,
    /// Rows with `anomaly_score ≥ threshold` are detections.
    pub threshold: f64,
    /// Raw corpus score: the sum of [`ProfileResult::per_file_raw`].
    pub raw: f64,
    /// NAB score, `100 · (raw − S_null) / (S_perfect − S_null)` with `S_perfect = A_TP · N`, `S_null = −A_FN · N`.
    /// NaN when the scored files have no window (N = 0).
    pub normalized: f64,
    /// Row counts over non-probation rows, as NAB writes them (they do not enter the score): detected rows in
    /// windows ...
    pub tp: usize,
    /// ... detected rows outside the windows ...
    pub fp: usize,
    /// ... undetected rows in windows ...
    pub fn_: usize,
    /// ... and undetected rows outside the windows.
    pub tn: usize,
    /// N: the number of labelled windows of the scored files (all windows of the windows map for a full corpus).
    pub windows: usize,
    /// Normalised score per category, the category being the directory part of the file name
    /// (`realKnownCause` for `realKnownCause/nyc_taxi.csv`). For a category `c` it is
    /// `100 · (raw_c − S_null,c) / (S_perfect,c − S_null,c)`, where `raw_c` is the sum of the raw scores of the files
    /// of `c` at the same (corpus-wide) threshold, `S_perfect,c = A_TP · N_c`, `S_null,c = −A_FN · N_c` and `N_c` the
    /// number of labelled windows of the files of `c`. Categories without any window (`artificialNoAnomaly`) have no
    /// defined normalised score and are left out here; their raw score is in [`ProfileResult::per_category_raw`].
    pub per_category: BTreeMap<String, f64>,
    /// Raw score per category (every category of the scored files).
    pub per_category_raw: BTreeMap<String, f64>,
    /// Raw score per file name.
    pub per_file_raw: BTreeMap<String, f64>,
}

// ---------------------------------------------------------------------------------------------------------------------
// Scoring primitives

/// NAB's scaled sigmoid: `−1` for `y > 3`, else `2·σ(−5·y) − 1` with `σ(x) = 1/(1 + e^(−x))`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > FP_CUTOFF { -1.0 } else { 2.0 * sigmoid(-SIGMOID_STEEPNESS * y) - 1.0 }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Probation length of a file of `n` rows: `min(floor(0.15·n), 750)`, computed in f64 as upstream does.
pub fn probation_length(n: usize) -> usize {
    // Both operands are non-negative whole numbers well inside f64's exact range.
    (PROBATION_FRACTION * n as f64).floor().min(PROBATION_CAP_ROWS as f64) as usize
}

/// The NAB score of a raw score for `n_windows` windows; NaN when `S_perfect = S_null` (no window).
pub fn normalize(raw: f64, n_windows: usize, profile: &Profile) -> f64 {
    let perfect = profile.a_tp * n_windows as f64;
    let null = -profile.a_fn * n_windows as f64;
    if perfect == null { f64::NAN } else { 100.0 * (raw - null) / (perfect - null) }
}

/// Scores `files` against `windows` at one threshold (a row is detected when `score ≥ threshold`).
///
/// The inputs are not checked (call [`validate`] for that) and bad ones never panic: only the first
/// `min(times.len(), scores.len())` rows of a file are used, a file missing from `windows` has no window, and a window
/// whose ends match no row exactly is narrowed to the rows it covers (and dropped if it covers none).
pub fn score_at_threshold(files: &[FileScores], windows: &Windows, profile: &Profile, threshold: f64) -> ProfileResult {
    Scorer::new(files, windows).score_at(profile, threshold)
}

/// NAB's threshold optimiser: scores `files` at the threshold with the best corpus raw score (see
/// [`Scorer::best_threshold`]). Inputs are handled as in [`score_at_threshold`].
pub fn optimize(files: &[FileScores], windows: &Windows, profile: &Profile) -> ProfileResult {
    Scorer::new(files, windows).optimize(profile)
}

const OUTSIDE: u32 = u32::MAX;

/// One non-probation row: its unweighted scaled-sigmoid value and its window (a global id) or [`OUTSIDE`].
#[derive(Debug, Clone, Copy)]
struct Row {
    s: f64,
    win: u32,
}

/// A non-probation row with its anomaly score, for the optimiser's sorted sweep.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    score: f64,
    s: f64,
    win: u32,
}

#[derive(Debug)]
struct PreparedFile<'a> {
    name: &'a str,
    category: &'a str,
    /// Anomaly scores of the non-probation rows, parallel to `rows`.
    scores: &'a [f64],
    rows: Vec<Row>,
    /// Global ids of this file's windows that hold at least one non-probation row.
    windows: Range<usize>,
    /// Labelled windows of this file (counted in N even if they hold no scorable row).
    labelled: usize,
    /// Each window's labelled index in the file, global id (`OUTSIDE`: it ends in the probation period) and row span
    /// (file rows, inclusive), for [`Scorer::breakdown`].
    spans: Vec<(usize, u32, usize, usize)>,
    /// Rows of the probation period (the first row of `rows`).
    probation: usize,
    /// The file's row timestamps.
    times: &'a [TimeMs],
}

/// One labelled window at a threshold (see [`Scorer::breakdown`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WindowOutcome {
    pub file: String,
    /// The window's position among the file's windows (0 first; a labelled window that covers no row is dropped, as
    /// upstream drops it).
    pub window: usize,
    /// The timestamps of its first and last row.
    pub start: String,
    pub end: String,
    /// Its scorable rows (outside the probation period).
    pub rows: usize,
    /// The highest anomaly score among them (NaN scores count as 0).
    pub best_score: f64,
    /// The first detected row, counted from the window's first row (None: missed).
    pub detected_at: Option<usize>,
    /// What the window adds to the raw score: `A_TP` times the scaled sigmoid at the first detection, or `−A_FN`.
    pub credit: f64,
}

/// One file's false positives at a threshold (see [`Scorer::breakdown`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FalsePositives {
    pub file: String,
    /// Detected rows outside the windows, after the probation period.
    pub rows: usize,
    /// What they add to the raw score: `A_FP` times each row's weight (NAB's scaled sigmoid of its distance after
    /// the last window, −1 far from any), summed; negative.
    pub cost: f64,
    /// The highest anomaly score among them.
    pub max_score: f64,
}

/// Where a profile's raw score comes from at one threshold: every labelled window that reaches past the probation
/// period, and the false positives of every file that has any.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Breakdown {
    pub profile: &'static str,
    pub threshold: f64,
    pub windows: Vec<WindowOutcome>,
    pub false_positives: Vec<FalsePositives>,
}

/// The window geometry of a set of files, computed once and reusable across profiles and thresholds.
#[derive(Debug)]
pub struct Scorer<'a> {
    files: Vec<PreparedFile<'a>>,
    /// Number of windows with at least one non-probation row (the global window ids).
    scorable: usize,
    /// N.
    labelled: usize,
    /// Non-probation rows sorted by anomaly score, highest first (built on first use by the optimiser).
    ranked: OnceLock<Vec<Ranked>>,
}

impl<'a> Scorer<'a> {
    /// Prepares `files` (see [`score_at_threshold`] for how unchecked inputs are treated).
    pub fn new(files: &[FileScores<'a>], windows: &Windows) -> Self {
        let mut scorable = 0;
        let prepared: Vec<_> = files.iter().map(|f| prepare_file(f, windows, &mut scorable)).collect();
        let labelled = prepared.iter().map(|f| f.labelled).sum();
        Self { files: prepared, scorable, labelled, ranked: OnceLock::new() }
    }

    /// N: the number of labelled windows of the scored files.
    pub fn windows(&self) -> usize {
        self.labelled
    }

    /// Scores at one threshold: a row is detected when `score ≥ threshold`.
    pub fn score_at(&self, profile: &Profile, threshold: f64) -> ProfileResult {
        let s_max = scaled_sigmoid(-1.0);
        let mut best = vec![-profile.a_fn; self.scorable];
        let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
        let mut raw = 0.0;
        let mut per_file_raw: BTreeMap<String, f64> = BTreeMap::new();
        let mut per_category_raw: BTreeMap<String, f64> = BTreeMap::new();
        let mut category_windows: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.files {
            let mut fp_sum = 0.0;
            for (row, &score) in f.rows.iter().zip(f.scores) {
                let detected = score >= threshold;
                match (row.win, detected) {
                    (OUTSIDE, true) => {
                        fp += 1;
                        fp_sum += row.s * profile.a_fp;
                    }
                    (OUTSIDE, false) => tn += 1,
                    (win, true) => {
                        tp += 1;
                        let b = &mut best[win as usize];
                        *b = b.max(row.s * profile.a_tp / s_max);
                    }
                    (_, false) => fn_ += 1,
                }
            }
            // Upstream sums the false positives first, then the windows in order.
            let file_raw = best[f.windows.clone()].iter().fold(fp_sum, |acc, b| acc + b);
            raw += file_raw;
            *per_file_raw.entry(f.name.to_owned()).or_insert(0.0) += file_raw;
            *per_category_raw.entry(f.category.to_owned()).or_insert(0.0) += file_raw;
            *category_windows.entry(f.category).or_insert(0) += f.labelled;
        }
        let per_category = per_category_raw
            .iter()
            .filter_map(|(category, &raw)| {
                let n = category_windows.get(category.as_str()).copied().unwrap_or(0);
                (n > 0).then(|| (category.clone(), normalize(raw, n, profile)))
            })
            .collect();
        ProfileResult {
            profile: profile.name,
            threshold,
            raw,
            normalized: normalize(raw, self.labelled, profile),
            tp,
            fp,
            fn_,
            tn,
            windows: self.labelled,
            per_category,
            per_category_raw,
            per_file_raw,
        }
    }

    /// NAB's optimal threshold for `profile` (spec §7).
    ///
    /// The candidates are [`NO_DETECTION_THRESHOLD`] and every distinct anomaly score; each is worth the corpus raw
    /// score with the rows `score ≥ candidate` detected. The rows are sorted by anomaly score, highest first, and swept
    /// once: the total starts at "every window missed", each row adds its false-positive sweep score or raises its
    /// window's best, and the total is recorded whenever the anomaly score changes. The first (highest) candidate
    /// with the maximal total wins. NaN scores are never detections and are no candidates.
    pub fn best_threshold(&self, profile: &Profile) -> f64 {
        let ranked = self.ranked();
        let s_max = scaled_sigmoid(-1.0);
        let mut best = vec![-profile.a_fn; self.scorable];
        let mut fp_sum = 0.0;
        // Recomputed from the parts (false positives first, then windows in order), as upstream does.
        let total = |fp_sum: f64, best: &[f64]| best.iter().fold(fp_sum, |acc, b| acc + b);
        let mut current = total(fp_sum, &best);
        let mut choice: Option<(f64, f64)> = None;
        let mut sentinel_done = false;
        let mut i = 0;
        while i < ranked.len() {
            let value = ranked[i].score;
            if !sentinel_done && value <= NO_DETECTION_THRESHOLD {
                if value < NO_DETECTION_THRESHOLD {
                    consider(&mut choice, NO_DETECTION_THRESHOLD, current);
                }
                sentinel_done = true;
            }
            let mut changed = false;
            while i < ranked.len() && ranked[i].score == value {
                let row = ranked[i];
                if row.win == OUTSIDE {
                    fp_sum += row.s * profile.a_fp;
                    changed = true;
                } else {
                    let sweep = row.s * profile.a_tp / s_max;
                    let b = &mut best[row.win as usize];
                    if sweep > *b {
                        *b = sweep;
                        changed = true;
                    }
                }
                i += 1;
            }
            if changed {
                current = total(fp_sum, &best);
            }
            consider(&mut choice, value, current);
        }
        if !sentinel_done {
            consider(&mut choice, NO_DETECTION_THRESHOLD, current);
        }
        choice.map_or(NO_DETECTION_THRESHOLD, |(threshold, _)| threshold)
    }

    /// Scores at [`Scorer::best_threshold`].
    pub fn optimize(&self, profile: &Profile) -> ProfileResult {
        self.score_at(profile, self.best_threshold(profile))
    }

    /// The windows and false positives behind [`Scorer::score_at`] at the same profile and threshold: the window
    /// credits plus the false-positive costs (negated) add up to its raw score.
    pub fn breakdown(&self, profile: &Profile, threshold: f64) -> Breakdown {
        let s_max = scaled_sigmoid(-1.0);
        let mut windows = Vec::new();
        let mut false_positives = Vec::new();
        for f in &self.files {
            for &(window, id, l, r) in &f.spans {
                if id == OUTSIDE {
                    continue;
                }
                let first = l.max(f.probation);
                let scores = &f.scores[first - f.probation..=r - f.probation];
                let detected = scores.iter().position(|&x| x >= threshold);
                let credit = match detected {
                    Some(k) => f.rows[first + k - f.probation].s * profile.a_tp / s_max,
                    None => -profile.a_fn,
                };
                windows.push(WindowOutcome {
                    file: f.name.to_owned(),
                    window,
                    start: format_timestamp(f.times[l]),
                    end: format_timestamp(f.times[r]),
                    rows: scores.len(),
                    best_score: scores.iter().fold(0.0, |m, &x| if x > m { x } else { m }),
                    detected_at: detected.map(|k| first + k - l),
                    credit,
                });
            }
            let (mut rows, mut cost, mut max_score) = (0, 0.0, f64::NEG_INFINITY);
            for (row, &score) in f.rows.iter().zip(f.scores) {
                if row.win == OUTSIDE && score >= threshold {
                    rows += 1;
                    cost += row.s * profile.a_fp;
                    max_score = max_score.max(score);
                }
            }
            if rows > 0 {
                false_positives.push(FalsePositives { file: f.name.to_owned(), rows, cost, max_score });
            }
        }
        Breakdown { profile: profile.name, threshold, windows, false_positives }
    }

    fn ranked(&self) -> &[Ranked] {
        self.ranked.get_or_init(|| {
            let mut ranked: Vec<Ranked> = self
                .files
                .iter()
                .flat_map(|f| {
                    f.rows.iter().zip(f.scores).filter(|(_, score)| !score.is_nan()).map(|(row, &score)| Ranked {
                        score,
                        s: row.s,
                        win: row.win,
                    })
                })
                .collect();
            // Stable, so equal scores keep file and row order (upstream's order of summation).
            ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
            ranked
        })
    }
}

/// Keeps the first candidate with the highest total (candidates arrive in descending threshold order).
fn consider(choice: &mut Option<(f64, f64)>, threshold: f64, total: f64) {
    if choice.is_none_or(|(_, best)| total > best) {
        *choice = Some((threshold, total));
    }
}

fn prepare_file<'a>(f: &FileScores<'a>, windows: &Windows, next_id: &mut usize) -> PreparedFile<'a> {
    let n = f.times.len().min(f.scores.len());
    let probation = probation_length(n);
    let labelled = windows.get(f.name).map_or(&[][..], Vec::as_slice);
    let spans = locate_windows(&f.times[..n], labelled);
    let first_id = *next_id;
    // Global ids only for windows that reach past probation; the others contribute nothing to the raw score.
    let ids: Vec<u32> = spans
        .iter()
        .map(|&(_, r)| {
            if r >= probation {
                *next_id += 1;
                (*next_id - 1) as u32
            } else {
                OUTSIDE
            }
        })
        .collect();
    let spans_out = spans.iter().zip(&ids).enumerate().map(|(k, (&(l, r), &id))| (k, id, l, r)).collect();
    let mut rows = Vec::with_capacity(n - probation);
    let mut k = 0;
    let mut previous: Option<(usize, usize)> = None; // (right edge, width) of the last window passed
    for i in 0..n {
        let row = match spans.get(k) {
            Some(&(l, r)) if i >= l => {
                let width = r - l + 1;
                let y = -((r - i + 1) as f64) / width as f64;
                let row = Row { s: scaled_sigmoid(y), win: ids[k] };
                if i == r {
                    previous = Some((r, width));
                    k += 1;
                }
                row
            }
            _ => {
                let s = match previous {
                    None => -1.0,
                    // `width − 1` is upstream's (NAB issue #366); a one-row window gives y = ∞, i.e. −1.
                    Some((r, width)) => scaled_sigmoid((i - r) as f64 / (width - 1) as f64),
                };
                Row { s, win: OUTSIDE }
            }
        };
        if i >= probation {
            rows.push(row);
        }
    }
    PreparedFile {
        name: f.name,
        category: f.name.rsplit_once('/').map_or("", |(category, _)| category),
        scores: &f.scores[probation..n],
        rows,
        windows: first_id..*next_id,
        labelled: labelled.len(),
        spans: spans_out,
        probation,
        times: &f.times[..n],
    }
}

/// Maps windows to inclusive row spans, sorted and non-overlapping. An end matching a row exactly maps to the first
/// row with that timestamp (upstream's `timestamps.index`). An end matching no row is moved inwards to the nearest row;
/// windows covering no row are dropped, overlapping ones are cut to start after the previous one.
fn locate_windows(times: &[TimeMs], labelled: &[(TimeMs, TimeMs)]) -> Vec<(usize, usize)> {
    if labelled.is_empty() || times.is_empty() {
        return Vec::new();
    }
    let mut index: Vec<(TimeMs, usize)> = times.iter().copied().zip(0..).collect();
    index.sort_unstable();
    let mut spans: Vec<(usize, usize)> = labelled
        .iter()
        .filter_map(|&(start, end)| {
            let l = row_at_or_after(&index, start)?;
            let r = row_at_or_before(&index, end)?;
            (l <= r).then_some((l, r))
        })
        .collect();
    spans.sort_unstable();
    let mut out = Vec::with_capacity(spans.len());
    let mut free = 0;
    for (l, r) in spans {
        let l = l.max(free);
        if l <= r {
            out.push((l, r));
            free = r + 1;
        }
    }
    out
}

fn row_at_or_after(index: &[(TimeMs, usize)], t: TimeMs) -> Option<usize> {
    let j = index.partition_point(|&(x, _)| x < t);
    index.get(j).map(|&(_, i)| i)
}

fn row_at_or_before(index: &[(TimeMs, usize)], t: TimeMs) -> Option<usize> {
    let j = index.partition_point(|&(x, _)| x < t);
    match index.get(j) {
        Some(&(x, i)) if x == t => Some(i),
        _ => j.checked_sub(1).map(|j| index[j].1),
    }
}

/// Checks what the scorer silently tolerates; every problem found is reported, one per line: a file listed twice,
/// timestamps and scores of different lengths, a score outside [0, 1] (or NaN), a file without an entry in `windows`,
/// a window end that matches no row's timestamp, and windows out of order or overlapping.
pub fn validate(files: &[FileScores], windows: &Windows) -> Result<()> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for f in files {
        if !seen.insert(f.name) {
            problems.push(format!("{}: listed more than once", f.name));
        }
        if f.times.len() != f.scores.len() {
            problems.push(format!("{}: {} timestamps but {} scores", f.name, f.times.len(), f.scores.len()));
        }
        if let Some((i, s)) = f.scores.iter().enumerate().find(|(_, s)| !(0.0..=1.0).contains(*s)) {
            problems.push(format!("{}: data row {}: anomaly_score {s} is not in [0, 1]", f.name, i + 1));
        }
        let Some(list) = windows.get(f.name) else {
            problems
                .push(format!("{}: no entry in the windows (a file without anomalies needs an empty list)", f.name));
            continue;
        };
        let mut previous_end: Option<usize> = None;
        for (k, &(start, end)) in list.iter().enumerate() {
            let describe =
                || format!("{}: window {} [{}, {}]", f.name, k + 1, format_timestamp(start), format_timestamp(end));
            let l = f.times.iter().position(|&t| t == start);
            let r = f.times.iter().position(|&t| t == end);
            match (l, r) {
                (Some(l), Some(r)) => {
                    if l > r || previous_end.is_some_and(|p| l <= p) {
                        problems.push(format!("{}: out of order or overlapping the previous window", describe()));
                    } else {
                        previous_end = Some(r);
                    }
                }
                (l, _) => {
                    let which = if l.is_none() { "start" } else { "end" };
                    problems.push(format!("{}: the {which} matches no row's timestamp", describe()));
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Error::Config(problems)) }
}

// ---------------------------------------------------------------------------------------------------------------------
// Loading

/// Loads every `data_dir/<category>/*.csv` (header `timestamp,value`), sorted by name (`<category>/<file>.csv`).
/// Other entries (such as `data_dir/README.md`) are ignored. Timestamps need not be increasing: NAB has files with
/// repeated and even decreasing timestamps.
pub fn load_corpus(data_dir: &Path) -> Result<Vec<NabFile>> {
    let mut paths = Vec::new();
    for category in list_dir(data_dir)? {
        if !category.is_dir() {
            continue;
        }
        let category_name = utf8_name(&category)?;
        for file in list_dir(&category)? {
            if file.is_file() && file.extension().is_some_and(|e| e == "csv") {
                paths.push((format!("{category_name}/{}", utf8_name(&file)?), file));
            }
        }
    }
    if paths.is_empty() {
        return Err(Error::config(format!("no `<category>/*.csv` files under {}", data_dir.display())));
    }
    paths.sort();
    paths.into_iter().map(|(name, path)| parse_data_file(&path, name)).collect()
}

fn list_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    entries.map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(dir, e))).collect()
}

fn utf8_name(path: &Path) -> Result<&str> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::decode(path.display().to_string(), "name is not UTF-8"))
}

fn parse_data_file(path: &Path, name: String) -> Result<NabFile> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map_or("", |(_, line)| line);
    let columns: Vec<&str> = header.trim_start_matches('\u{feff}').split(',').map(str::trim).collect();
    if columns != ["timestamp", "value"] {
        return Err(Error::decode(at(path, 1), format!("expected the header `timestamp,value`, found {header:?}")));
    }
    let mut file = NabFile { name, times: Vec::new(), values: Vec::new() };
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let here = || at(path, index + 1);
        let Some((timestamp, value)) = line.split_once(',').filter(|(_, v)| !v.contains(',')) else {
            return Err(Error::decode(here(), format!("expected 2 fields `timestamp,value`, found {line:?}")));
        };
        file.times.push(parse_timestamp(timestamp.trim()).map_err(|reason| Error::decode(here(), reason))?);
        let value = value.trim();
        let value: f64 =
            value.parse().map_err(|_| Error::decode(here(), format!("value {value:?} is not a number")))?;
        if let Some(problem) = crate::model::value_problem(value) {
            return Err(Error::decode(here(), format!("value: {problem}")));
        }
        file.values.push(value);
    }
    Ok(file)
}

/// Loads NAB's `combined_windows.json`: an object mapping each file name to a list of `[start, end]` timestamp pairs
/// (`YYYY-MM-DD HH:MM:SS.ffffff`). Errors name the file, line and column; a window must not end before it starts or
/// start before the previous one ends, and a file name must not repeat.
pub fn load_windows(labels_path: &Path) -> Result<Windows> {
    let text = read_text(labels_path)?;
    match serde_json::from_str::<WindowsDe>(&text) {
        Ok(WindowsDe(windows)) => Ok(windows),
        Err(e) => {
            let message = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let reason = message.strip_suffix(&suffix).unwrap_or(&message);
            Err(Error::decode(format!("{}:{}:{}", labels_path.display(), e.line(), e.column()), reason))
        }
    }
}

/// Loads per-row detector results: a CSV whose header names (at least) the columns `file`, `timestamp` and
/// `anomaly_score`, gzip-compressed if the name ends in `.gz`. Rows are grouped by `file`, keeping their order. Every
/// score must be a number in [0, 1].
pub fn load_results(path: &Path) -> Result<BTreeMap<String, Vec<(TimeMs, f64)>>> {
    let text = read_text(path)?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map_or("", |(_, line)| line);
    let columns: Vec<&str> = header.trim_start_matches('\u{feff}').split(',').map(str::trim).collect();
    let column = |name: &str| {
        columns.iter().position(|c| *c == name).ok_or_else(|| {
            Error::decode(
                at(path, 1),
                format!("the header has no `{name}` column (expected file,timestamp,anomaly_score)"),
            )
        })
    };
    let (file_col, time_col, score_col) = (column("file")?, column("timestamp")?, column("anomaly_score")?);
    let mut out: BTreeMap<String, Vec<(TimeMs, f64)>> = BTreeMap::new();
    let mut fields: Vec<&str> = Vec::with_capacity(columns.len());
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let here = || at(path, index + 1);
        fields.clear();
        fields.extend(line.split(',').map(str::trim));
        if fields.len() != columns.len() {
            return Err(Error::decode(here(), format!("expected {} fields, found {}", columns.len(), fields.len())));
        }
        let file = fields[file_col];
        if file.is_empty() {
            return Err(Error::decode(here(), "empty file name"));
        }
        let time = parse_timestamp(fields[time_col]).map_err(|reason| Error::decode(here(), reason))?;
        let raw = fields[score_col];
        let score: f64 =
            raw.parse().map_err(|_| Error::decode(here(), format!("anomaly_score {raw:?} is not a number")))?;
        if !(0.0..=1.0).contains(&score) {
            return Err(Error::decode(here(), format!("anomaly_score {raw} is not in [0, 1]")));
        }
        match out.get_mut(file) {
            Some(rows) => rows.push((time, score)),
            None => {
                out.insert(file.to_owned(), vec![(time, score)]);
            }
        }
    }
    Ok(out)
}

/// Lines up results with the corpus: one score vector per corpus file, in corpus order. Every corpus file needs
/// results with exactly its timestamps, row by row, and the results must not name a file outside the corpus.
pub fn align_results(corpus: &[NabFile], results: &BTreeMap<String, Vec<(TimeMs, f64)>>) -> Result<Vec<Vec<f64>>> {
    let known: BTreeSet<&str> = corpus.iter().map(|f| f.name.as_str()).collect();
    if let Some(extra) = results.keys().find(|name| !known.contains(name.as_str())) {
        return Err(Error::config(format!("the results name {extra:?}, which is not a file of the corpus")));
    }
    corpus
        .iter()
        .map(|f| {
            let rows = results
                .get(&f.name)
                .ok_or_else(|| Error::config(format!("the results have no rows for {}", f.name)))?;
            if rows.len() != f.times.len() {
                return Err(Error::config(format!(
                    "the results have {} rows for {}, the data file has {}",
                    rows.len(),
                    f.name,
                    f.times.len()
                )));
            }
            if let Some(i) = f.times.iter().zip(rows).position(|(&t, &(rt, _))| t != rt) {
                return Err(Error::decode(
                    format!("results for {} data row {}", f.name, i + 1),
                    format!(
                        "timestamp {} differs from the data file's {}",
                        format_timestamp(rows[i].0),
                        format_timestamp(f.times[i])
                    ),
                ));
            }
            Ok(rows.iter().map(|&(_, score)| score).collect())
        })
        .collect()
}

/// Pairs corpus files with score vectors (e.g. from [`align_results`]); extra entries of either are ignored.
pub fn file_scores<'a>(corpus: &'a [NabFile], scores: &'a [Vec<f64>]) -> Vec<FileScores<'a>> {
    corpus.iter().zip(scores).map(|(f, s)| FileScores { name: &f.name, times: &f.times, scores: s }).collect()
}

fn at(path: &Path, line: usize) -> String {
    format!("{}:{line}", path.display())
}

/// Reads a whole text file, gunzipping it when its name ends in `.gz`.
fn read_text(path: &Path) -> Result<String> {
    let raw = fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| Error::io(path, e))?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid].iter().filter(|&&b| b == b'\n').count();
        Error::decode(at(path, line), "invalid UTF-8")
    })
}

struct WindowsDe(Windows);

impl<'de> Deserialize<'de> for WindowsDe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(WindowsVisitor)
    }
}

struct WindowsVisitor;

impl<'de> Visitor<'de> for WindowsVisitor {
    type Value = WindowsDe;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object mapping file names to lists of [start, end] timestamp pairs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<WindowsDe, A::Error> {
        let mut out = Windows::new();
        while let Some(name) = map.next_key::<String>()? {
            if out.contains_key(&name) {
                return Err(de::Error::custom(format!("{name:?} is listed twice")));
            }
            let FileWindowsDe(list) = map.next_value()?;
            out.insert(name, list);
        }
        Ok(WindowsDe(out))
    }
}

struct FileWindowsDe(Vec<(TimeMs, TimeMs)>);

impl<'de> Deserialize<'de> for FileWindowsDe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let pairs: Vec<(TimestampDe, TimestampDe)> = Vec::deserialize(deserializer)?;
        let mut out: Vec<(TimeMs, TimeMs)> = Vec::with_capacity(pairs.len());
        for (TimestampDe(start), TimestampDe(end)) in pairs {
            if end < start {
                return Err(de::Error::custom(format!(
                    "window [{}, {}] ends before it starts",
                    format_timestamp(start),
                    format_timestamp(end)
                )));
            }
            if let Some(&(_, previous_end)) = out.last()
                && start <= previous_end
            {
                return Err(de::Error::custom(format!(
                    "window [{}, {}] starts before the previous one ends ({})",
                    format_timestamp(start),
                    format_timestamp(end),
                    format_timestamp(previous_end)
                )));
            }
            out.push((start, end));
        }
        Ok(Self(out))
    }
}

struct TimestampDe(TimeMs);

impl<'de> Deserialize<'de> for TimestampDe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_timestamp(&text).map(Self).map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Timestamps

/// Parses NAB's `YYYY-MM-DD HH:MM:SS` (also with `T` as separator) with an optional fraction `.f…` of up to 9 digits,
/// as UTC. The fraction must not go below milliseconds (NAB's labels carry `.000000`).
pub fn parse_timestamp(s: &str) -> std::result::Result<TimeMs, String> {
    let b = s.as_bytes();
    let malformed = || format!("expected a timestamp `YYYY-MM-DD HH:MM:SS`, found {s:?}");
    let shaped = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b' ' || b[10] == b'T')
        && b[13] == b':'
        && b[16] == b':';
    if !shaped {
        return Err(malformed());
    }
    let number = |r: Range<usize>| {
        let digits = &b[r];
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0')))
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (number(0..4), number(5..7), number(8..10), number(11..13), number(14..16), number(17..19))
    else {
        return Err(malformed());
    };
    let mut millis = 0;
    if b.len() > 19 {
        let fraction = &b[20..];
        if b[19] != b'.' || fraction.is_empty() || fraction.len() > 9 || !fraction.iter().all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        for (k, &c) in fraction.iter().enumerate() {
            let digit = i64::from(c - b'0');
            if k < 3 {
                millis += digit * [100, 10, 1][k];
            } else if digit != 0 {
                return Err(format!("timestamp {s:?} is more precise than a millisecond"));
            }
        }
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(format!("timestamp {s:?} is not a valid date and time"));
    }
    Ok((days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second) * 1000 + millis)
}

/// Formats a timestamp as `YYYY-MM-DD HH:MM:SS` (UTC), with `.mmm` when it has milliseconds.
pub fn format_timestamp(t: TimeMs) -> String {
    let (days, ms_of_day) = (t.div_euclid(86_400_000), t.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (secs, millis) = (ms_of_day / 1000, ms_of_day % 1000);
    let time = format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if millis == 0 { time } else { format!("{time}.{millis:03}") }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    const STANDARD: Profile = PROFILES[0];
    const LOW_FP: Profile = PROFILES[1];
    const LOW_FN: Profile = PROFILES[2];
    /// 2014-04-01 00:00:00 UTC.
    const T0: TimeMs = 1_396_310_400_000;

    fn grid(n: usize) -> Vec<TimeMs> {
        (0..n as i64).map(|i| T0 + i * 300_000).collect()
    }

    fn span(times: &[TimeMs], l: usize, r: usize) -> (TimeMs, TimeMs) {
        (times[l], times[r])
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    /// Scores of `n` rows, all 0 except `hits`.
    fn detections(n: usize, hits: &[usize]) -> Vec<f64> {
        let mut scores = vec![0.0; n];
        for &i in hits {
            scores[i] = 1.0;
        }
        scores
    }

    /// One file `cat/a.csv` of 100 rows (probation 15) with the given windows, scored at θ = 0.5.
    fn single(window_rows: &[(usize, usize)], hits: &[usize], profile: &Profile) -> ProfileResult {
        let times = grid(100);
        let scores = detections(100, hits);
        let windows: Windows =
            [("cat/a.csv".to_owned(), window_rows.iter().map(|&(l, r)| span(&times, l, r)).collect())]
                .into_iter()
                .collect();
        let files = [FileScores { name: "cat/a.csv", times: &times, scores: &scores }];
        validate(&files, &windows).unwrap();
        score_at_threshold(&files, &windows, profile, 0.5)
    }

    /// `S(y) = −tanh(5y/2)`: an independent form of the scaled sigmoid for y ≤ 3.
    fn s_ref(y: f64) -> f64 {
        -(2.5 * y).tanh()
    }

    #[test]
    fn scaled_sigmoid_reference_values() {
        assert!(close(scaled_sigmoid(-1.0), 0.9866142981514305, 1e-16));
        assert!(close(scaled_sigmoid(-0.5), 0.8482836399575131, 1e-16));
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!(close(scaled_sigmoid(1.0), -0.9866142981514303, 1e-16));
        assert!(close(scaled_sigmoid(3.0), -0.99999939, 1e-8));
        assert_ne!(scaled_sigmoid(3.0), -1.0);
        assert_eq!(scaled_sigmoid(3.0 + 1e-9), -1.0);
        assert_eq!(scaled_sigmoid(f64::INFINITY), -1.0);
        for y in [-1.0, -0.7, -0.1, 0.25, 2.0, 2.999] {
            assert!(close(scaled_sigmoid(y), s_ref(y), 1e-15), "y = {y}");
        }
    }

    #[test]
    fn probation_length_matches_nab() {
        assert_eq!(probation_length(0), 0);
        assert_eq!(probation_length(6), 0); // 0.8999…
        assert_eq!(probation_length(7), 1);
        assert_eq!(probation_length(100), 15);
        assert_eq!(probation_length(4032), 604);
        assert_eq!(probation_length(5000), 750);
        assert_eq!(probation_length(10_320), 750);
    }

    #[test]
    fn probation_rows_are_ignored() {
        // Detections at rows 5 and 14 are in probation (P = 15): no FP, the window is missed.
        let r = single(&[(40, 49)], &[5, 14], &STANDARD);
        assert_eq!((r.raw, r.fp, r.tp, r.fn_, r.tn), (-1.0, 0, 0, 10, 75));
        // Row 15 is the first scored row; before any window an FP costs exactly A_FP.
        let r = single(&[(40, 49)], &[15], &STANDARD);
        assert!(close(r.raw, -1.11, 1e-15), "{}", r.raw);
        assert_eq!(r.fp, 1);
        // A window inside probation (rows 2..=6) adds nothing, detected or not, but still counts in N.
        let r = single(&[(2, 6), (40, 49)], &[2], &STANDARD);
        assert_eq!((r.raw, r.windows, r.tp, r.fn_), (-1.0, 2, 0, 10));
        assert_eq!(r.normalized, 25.0); // 100 · (−1 + 2) / (2 + 2)
        // ... but it still ends before row 15, so an FP there is measured from it: y = (15 − 6) / (5 − 1).
        let r = single(&[(2, 6), (40, 49)], &[15], &STANDARD);
        assert!(close(r.raw, -1.0 + 0.11 * s_ref(9.0 / 4.0), 1e-15), "{}", r.raw);
    }

    #[test]
    fn early_detection_scores_more_than_late() {
        // Window rows 40..=49, W = 10.
        let early = single(&[(40, 49)], &[40], &STANDARD);
        assert_eq!(early.raw, 1.0); // exactly A_TP at the left edge
        let late = single(&[(40, 49)], &[49], &STANDARD);
        let expected = s_ref(-0.1) / s_ref(-1.0); // y = −1/W at the right edge
        assert!(close(late.raw, expected, 1e-15), "{} vs {expected}", late.raw);
        assert!(close(expected, 0.24824154977542992, 1e-15));
        assert!(early.raw > late.raw);
        let middle = single(&[(40, 49)], &[45], &STANDARD); // y = −(49 − 45 + 1)/10 = −0.5
        assert!(close(middle.raw, 0.8598, 5e-5), "{}", middle.raw);
        // Only the earliest detection counts; later ones in the same window add and cost nothing.
        let both = single(&[(40, 49)], &[40, 45, 49], &STANDARD);
        assert_eq!((both.raw, both.tp, both.fn_, both.fp), (1.0, 3, 7, 0));
        // Every in-window row is worth more than 0.
        for i in 40..=49 {
            assert!(single(&[(40, 49)], &[i], &STANDARD).raw > 0.0);
        }
    }

    #[test]
    fn false_positives_are_weighted_by_distance_after_a_window() {
        // Window rows 40..=49 (W = 10, W − 1 = 9), missed unless noted: raw = −1 + the FP's sweep score.
        let fp = |row: usize, profile: &Profile| single(&[(40, 49)], &[row], profile).raw + 1.0;
        assert!(close(fp(50, &STANDARD), 0.11 * s_ref(1.0 / 9.0), 1e-15));
        assert!(close(fp(58, &STANDARD), 0.11 * s_ref(1.0), 1e-15));
        assert!(close(fp(76, &STANDARD), 0.11 * s_ref(3.0), 1e-15)); // y = 3 is still on the sigmoid
        assert!(!close(fp(76, &STANDARD), -0.11, 1e-9));
        assert!(close(fp(77, &STANDARD), -0.11, 1e-15)); // y = 28/9 > 3: exactly −A_FP
        assert!(close(fp(99, &STANDARD), -0.11, 1e-15));
        assert!(close(fp(50, &LOW_FP), 2.0 * fp(50, &STANDARD), 1e-15));
        assert!(fp(50, &STANDARD) > fp(58, &STANDARD) && fp(58, &STANDARD) > fp(77, &STANDARD));
        // An FP just before a window is penalised in full: only the preceding window counts.
        assert!(close(fp(39, &STANDARD), -0.11, 1e-15));
        // ... or measured from the window before that.
        let r = single(&[(20, 29), (40, 49)], &[20, 39], &STANDARD);
        assert!(close(r.raw, 1.0 - 1.0 + 0.11 * s_ref(10.0 / 9.0), 1e-15), "{}", r.raw);
        // Every FP row pays on its own.
        let r = single(&[(40, 49)], &[90, 91, 92], &STANDARD);
        assert!(close(r.raw, -1.0 - 0.33, 1e-15));
        assert_eq!(r.fp, 3);
        // The spec's example: the first row after a 403-row window scores −0.000684.
        let times = grid(1000);
        let windows: Windows = [("c/x.csv".to_owned(), vec![span(&times, 200, 602)])].into_iter().collect();
        let scores = detections(1000, &[603]);
        let files = [FileScores { name: "c/x.csv", times: &times, scores: &scores }];
        let r = score_at_threshold(&files, &windows, &STANDARD, 1.0);
        assert!(close(r.raw + 1.0, -0.000684, 5e-7), "{}", r.raw);
    }

    #[test]
    fn the_breakdown_names_each_window_and_false_positive_and_adds_up_to_the_raw_score() {
        // Windows on rows 10..=19 (partly inside the 15-row probation period: only rows 15..=19 count; found at
        // row 17), 40..=49 (found at its third row) and 60..=69 (missed: its best score is 0.4, and a NaN is no
        // score); detections outside them at row 5 (probation: not counted), 55 and 90.
        let times = grid(100);
        let mut scores = detections(100, &[5, 17, 42, 55, 90]);
        scores[65] = 0.4;
        scores[66] = f64::NAN;
        let windows: Windows = [(
            "cat/a.csv".to_owned(),
            [(10, 19), (40, 49), (60, 69)].iter().map(|&(l, r)| span(&times, l, r)).collect(),
        )]
        .into_iter()
        .collect();
        let files = [FileScores { name: "cat/a.csv", times: &times, scores: &scores }];
        let scorer = Scorer::new(&files, &windows);
        for profile in &PROFILES {
            let b = scorer.breakdown(profile, 0.5);
            let result = scorer.score_at(profile, 0.5);
            let sum =
                b.windows.iter().map(|w| w.credit).sum::<f64>() + b.false_positives.iter().map(|f| f.cost).sum::<f64>();
            assert!(close(sum, result.raw, 1e-12), "{}: {sum} against {}", profile.name, result.raw);
        }
        let b = scorer.breakdown(&STANDARD, 0.5);
        let found: Vec<_> = b.windows.iter().map(|w| (w.window, w.rows, w.detected_at, w.best_score)).collect();
        assert_eq!(found, [(0, 5, Some(7), 1.0), (1, 10, Some(2), 1.0), (2, 10, None, 0.4)]);
        assert_eq!(b.windows[1].start, format_timestamp(times[40]));
        assert!(close(b.windows[1].credit, scaled_sigmoid(-8.0 / 10.0) / scaled_sigmoid(-1.0), 1e-15));
        assert_eq!(b.windows[2].credit, -1.0);
        assert_eq!(b.false_positives.len(), 1);
        let fp = &b.false_positives[0];
        assert_eq!((fp.file.as_str(), fp.rows, fp.max_score), ("cat/a.csv", 2, 1.0));
        assert!(fp.cost < 0.0);
        // Nothing detected: every window missed, no false positives.
        let none = scorer.breakdown(&STANDARD, NO_DETECTION_THRESHOLD);
        assert!(none.windows.iter().all(|w| w.detected_at.is_none()) && none.false_positives.is_empty());
    }

    #[test]
    fn missed_windows_count_as_false_negatives() {
        let r = single(&[(20, 29), (40, 49)], &[], &STANDARD);
        assert_eq!((r.raw, r.tp, r.fp, r.fn_, r.tn, r.windows), (-2.0, 0, 0, 20, 65, 2));
        assert_eq!(r.normalized, 0.0);
        let r = single(&[(20, 29), (40, 49)], &[], &LOW_FN);
        assert_eq!((r.raw, r.normalized), (-4.0, 0.0));
        let r = single(&[(20, 29), (40, 49)], &[20], &LOW_FN);
        assert_eq!((r.raw, r.tp, r.fn_), (-1.0, 1, 19));
        assert!(close(r.normalized, 100.0 * 3.0 / 6.0, 1e-12));
    }

    /// Three files in two categories plus a file without windows.
    struct Fixture {
        times: Vec<Vec<TimeMs>>,
        windows: Windows,
    }

    const FIXTURE_NAMES: [&str; 4] = ["a/one.csv", "a/two.csv", "b/three.csv", "n/none.csv"];
    const FIXTURE_WINDOWS: [&[(usize, usize)]; 4] = [&[(30, 39)], &[(20, 29), (60, 79)], &[(50, 59)], &[]];

    impl Fixture {
        fn new() -> Self {
            let times: Vec<_> = (0..4).map(|k| grid(100 + 20 * k)).collect();
            let windows = FIXTURE_NAMES
                .iter()
                .zip(FIXTURE_WINDOWS)
                .zip(&times)
                .map(|((name, rows), t)| (name.to_string(), rows.iter().map(|&(l, r)| span(t, l, r)).collect()))
                .collect();
            Self { times, windows }
        }

        fn files<'a>(&'a self, scores: &'a [Vec<f64>]) -> Vec<FileScores<'a>> {
            FIXTURE_NAMES
                .iter()
                .zip(&self.times)
                .zip(scores)
                .map(|((name, times), scores)| FileScores { name, times, scores })
                .collect()
        }

        fn constant(&self, value: f64) -> Vec<Vec<f64>> {
            self.times.iter().map(|t| vec![value; t.len()]).collect()
        }
    }

    #[test]
    fn null_detector_scores_zero() {
        let fixture = Fixture::new();
        for value in [0.5, 0.0] {
            let scores = fixture.constant(value);
            let files = fixture.files(&scores);
            validate(&files, &fixture.windows).unwrap();
            for profile in &PROFILES {
                let r = optimize(&files, &fixture.windows, profile);
                assert_eq!(r.threshold, NO_DETECTION_THRESHOLD, "{}", profile.name);
                assert_eq!(r.raw, -profile.a_fn * 4.0);
                assert_eq!(r.normalized, 0.0);
                assert_eq!((r.tp, r.fp), (0, 0));
                assert_eq!(r.per_category.values().copied().collect::<Vec<_>>(), [0.0, 0.0]);
                let stored = score_at_threshold(&files, &fixture.windows, profile, 0.625);
                assert_eq!(stored.normalized, 0.0);
            }
        }
    }

    #[test]
    fn perfect_detector_scores_hundred() {
        let fixture = Fixture::new();
        let scores: Vec<Vec<f64>> = fixture
            .times
            .iter()
            .zip(FIXTURE_WINDOWS)
            .map(|(t, rows)| detections(t.len(), &rows.iter().map(|&(l, _)| l).collect::<Vec<_>>()))
            .collect();
        let files = fixture.files(&scores);
        for profile in &PROFILES {
            let r = optimize(&files, &fixture.windows, profile);
            assert_eq!(r.threshold, 1.0);
            assert_eq!((r.raw, r.tp, r.fp, r.windows), (4.0, 4, 0, 4));
            assert_eq!(r.normalized, 100.0, "{}", profile.name);
            assert_eq!(r.per_category.get("a"), Some(&100.0));
            assert_eq!(r.per_category.get("b"), Some(&100.0));
        }
    }

    #[test]
    fn per_category_scores_are_normalised_per_category() {
        let fixture = Fixture::new();
        let mut scores = fixture.constant(0.0);
        scores[0][30] = 0.9; // a/one: window detected at its first row: +1
        scores[1][50] = 0.9; // a/two: both windows missed (−2) and an FP 21 rows after a 10-row window
        scores[2][20] = 0.9; // b/three: in probation (P = 21), ignored
        scores[2][25] = 0.9; // b/three: FP before the window (−0.11), window missed (−1)
        scores[3][100] = 0.9; // n/none: FP, no window at all (−0.11)
        let files = fixture.files(&scores);
        let r = score_at_threshold(&files, &fixture.windows, &STANDARD, 0.9);
        let two = -2.0 + 0.11 * s_ref(21.0 / 9.0);
        assert!(close(r.per_file_raw["a/two.csv"], two, 1e-15));
        assert!(close(r.per_category_raw["a"], 1.0 + two, 1e-15));
        assert!(close(r.per_category_raw["b"], -1.11, 1e-15));
        assert!(close(r.per_category_raw["n"], -0.11, 1e-15));
        // a: N = 3, S_null = −3, S_perfect = 3.
        assert!(close(r.per_category["a"], 100.0 * (1.0 + two + 3.0) / 6.0, 1e-12));
        // b: N = 1.
        assert!(close(r.per_category["b"], 100.0 * (-1.11 + 1.0) / 2.0, 1e-12));
        assert!(!r.per_category.contains_key("n"));
        assert!(close(r.raw, 1.0 + two - 1.11 - 0.11, 1e-14));
        assert!(close(r.normalized, 100.0 * (r.raw + 4.0) / 8.0, 1e-12));
        assert_eq!((r.tp, r.fp, r.windows), (1, 3, 4));
    }

    #[test]
    fn optimiser_breaks_ties_towards_the_higher_threshold() {
        let fixture = Fixture::new();
        let mut scores = fixture.constant(0.0);
        scores[0][30] = 0.9; // first row of a/one's window
        scores[0][35] = 0.8; // later in the same window: adds nothing
        scores[1][70] = 0.7; // in a/two's second window, worth > 0
        scores[3][50] = 0.6; // an FP
        let files = fixture.files(&scores);
        let r = optimize(&files, &fixture.windows, &STANDARD);
        assert_eq!(r.threshold, 0.7);
        let equal = score_at_threshold(&files, &fixture.windows, &STANDARD, 0.8);
        let chosen = score_at_threshold(&files, &fixture.windows, &STANDARD, 0.9);
        assert_eq!(equal.raw, chosen.raw);
        scores[1][70] = 0.0;
        let files = fixture.files(&scores);
        assert_eq!(optimize(&files, &fixture.windows, &STANDARD).threshold, 0.9);
    }

    #[test]
    fn optimiser_matches_brute_force() {
        let fixture = Fixture::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Coarse values so that many rows share a score.
            (state % 41) as f64 / 40.0
        };
        for round in 0..20 {
            let scores: Vec<Vec<f64>> = fixture
                .times
                .iter()
                .map(|t| (0..t.len()).map(|_| if round % 2 == 0 { next() } else { next().powi(8) }).collect())
                .collect();
            let files = fixture.files(&scores);
            let scorer = Scorer::new(&files, &fixture.windows);
            let mut candidates: Vec<f64> = scores.iter().flatten().copied().collect();
            candidates.push(NO_DETECTION_THRESHOLD);
            candidates.sort_by(|a, b| b.total_cmp(a));
            candidates.dedup();
            for profile in &PROFILES {
                let brute = candidates
                    .iter()
                    .map(|&theta| scorer.score_at(profile, theta))
                    .fold(None::<ProfileResult>, |best, r| match best {
                        Some(b) if b.raw >= r.raw - 1e-12 => Some(b),
                        _ => Some(r),
                    })
                    .unwrap();
                let fast = scorer.optimize(profile);
                assert!(close(fast.raw, brute.raw, 1e-12), "round {round} {}: {fast:?} vs {brute:?}", profile.name);
                assert_eq!(fast.threshold, brute.threshold, "round {round} {}", profile.name);
            }
        }
    }

    #[test]
    fn windows_map_to_the_first_row_of_a_repeated_timestamp() {
        // Rows 40 and 41 share a timestamp (as around NAB's DST changes); the window starts at the first of them.
        let mut times = grid(100);
        times[41] = times[40];
        let windows: Windows = [("c/d.csv".to_owned(), vec![(times[40], times[49])])].into_iter().collect();
        let scores = detections(100, &[40]);
        let files = [FileScores { name: "c/d.csv", times: &times, scores: &scores }];
        validate(&files, &windows).unwrap();
        assert_eq!(score_at_threshold(&files, &windows, &STANDARD, 1.0).raw, 1.0);
        // A decreasing timestamp elsewhere does not disturb the geometry.
        times[70] = times[10];
        let files = [FileScores { name: "c/d.csv", times: &times, scores: &scores }];
        assert_eq!(score_at_threshold(&files, &windows, &STANDARD, 1.0).raw, 1.0);
    }

    #[test]
    fn bad_scoring_inputs_are_reported_by_validate_and_do_not_panic() {
        let times = grid(50);
        let scores = vec![f64::NAN; 40];
        let windows: Windows = [
            ("c/a.csv".to_owned(), vec![(times[30], times[40]), (times[10], times[12]), (times[45], times[20] + 1)]),
            ("c/b.csv".to_owned(), vec![(T0 - 10, T0 + 10_000_000_000)]),
        ]
        .into_iter()
        .collect();
        let files = [
            FileScores { name: "c/a.csv", times: &times, scores: &scores },
            FileScores { name: "c/a.csv", times: &times, scores: &scores[..0] },
            FileScores { name: "c/b.csv", times: &times[..3], scores: &[1.5, 0.0, 1.0] },
            FileScores { name: "c/zzz.csv", times: &[], scores: &[] },
        ];
        let message = validate(&files, &windows).unwrap_err().to_string();
        for needle in [
            "c/a.csv: listed more than once",
            "c/a.csv: 50 timestamps but 40 scores",
            "c/a.csv: data row 1: anomaly_score NaN is not in [0, 1]",
            "c/a.csv: window 2 [2014-04-01 00:50:00, 2014-04-01 01:00:00]: out of order or overlapping",
            "c/a.csv: window 3 [2014-04-01 03:45:00, 2014-04-01 01:40:00.001]: the end matches no row",
            "c/b.csv: data row 1: anomaly_score 1.5",
            "c/b.csv: window 1 [2014-03-31 23:59:59.990, 2014-07-25 17:46:40]: the start matches no row",
            "c/zzz.csv: no entry in the windows",
        ] {
            assert!(message.contains(needle), "{needle:?} missing from:\n{message}");
        }
        for profile in &PROFILES {
            let r = optimize(&files, &windows, profile);
            assert!(r.raw.is_finite());
            let r = score_at_threshold(&files, &windows, profile, f64::NAN);
            assert_eq!(r.tp + r.fp, 0);
        }
        assert!(optimize(&[], &Windows::new(), &STANDARD).normalized.is_nan());
    }

    #[test]
    fn timestamps_parse_and_format() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Ok(0));
        assert_eq!(parse_timestamp("2014-07-01 00:00:00"), Ok(1_404_172_800_000));
        assert_eq!(parse_timestamp("2014-04-01 00:00:00"), Ok(T0));
        assert_eq!(parse_timestamp("2014-04-10 07:15:00.000000"), parse_timestamp("2014-04-10 07:15:00"));
        assert_eq!(
            parse_timestamp("2014-04-10T07:15:00.25"),
            Ok(parse_timestamp("2014-04-10 07:15:00").unwrap() + 250)
        );
        assert_eq!(parse_timestamp("2000-02-29 23:59:59"), Ok(951_868_799_000));
        assert_eq!(parse_timestamp("1969-12-31 23:59:59"), Ok(-1000));
        for bad in [
            "",
            "2014-07-01",
            "2014-07-01 00:00",
            "2014/07/01 00:00:00",
            "2014-13-01 00:00:00",
            "2015-02-29 00:00:00",
            "2014-07-01 24:00:00",
            "2014-07-01 00:00:00.",
            "2014-07-01 00:00:00.0001",
            "2014-07-01 00:00:00Z",
            "2014-07-01 00:00:0x",
            "２０１４-07-01 00:00:00",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?}");
        }
        for t in [0, -1000, T0, 951_868_799_000, 1_404_172_800_123, 253_402_300_799_000] {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Ok(t), "{}", format_timestamp(t));
        }
        assert_eq!(format_timestamp(1_404_172_800_123), "2014-07-01 00:00:00.123");
    }

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("faultline-nab-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, relative: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn loaders_report_file_and_line() {
        let dir = TempDir::new("errors");
        let expect = |result: Result<()>, needles: &[&str]| {
            let message = result.unwrap_err().to_string();
            for needle in needles {
                assert!(message.contains(needle), "{needle:?} missing from {message:?}");
            }
        };
        let count = std::cell::Cell::new(0);
        let corpus = |files: &[(&str, &str)]| {
            count.set(count.get() + 1);
            let root = dir.0.join(format!("corpus{}", count.get()));
            for (name, text) in files {
                let path = root.join(name);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
            load_corpus(&root).map(|_| ())
        };
        expect(
            corpus(&[
                ("c/ok.csv", "timestamp,value\n2014-04-01 00:00:00,1\n"),
                ("c/x.csv", "timestamp,value\n2014-04-01 00:00:00,1\n\n2014-04-01 00:05:00;2\n"),
            ]),
            &["x.csv:4", "expected 2 fields"],
        );
        expect(corpus(&[("c/y.csv", "time,value\n")]), &["y.csv:1", "header"]);
        expect(
            corpus(&[
                ("c/a.csv", "timestamp,value\n2014-04-01 00:00:00,1\n"),
                ("c/b.csv", "timestamp,value\r\n2014-04-01 00:00:00,1\r\n2014-04-31 00:00:00,1\r\n"),
                ("d/c.csv", ""),
            ]),
            &["b.csv:3", "not a valid date"],
        );
        expect(
            corpus(&[
                ("c/a.csv", "timestamp,value\n2014-04-01 00:00:00,1\n"),
                ("c/b.csv", "timestamp,value\n2014-04-01 00:00:00,1\n"),
                ("c/c.csv", "timestamp,value\n2014-04-01 00:00:00,abc\n"),
                ("c/d.csv", ""),
            ]),
            &["c.csv:2", "\"abc\""],
        );
        expect(load_corpus(&dir.0.join("missing")).map(|_| ()), &["missing"]);
        fs::create_dir_all(dir.0.join("empty/cat")).unwrap();
        expect(load_corpus(&dir.0.join("empty")).map(|_| ()), &["no `<category>/*.csv` files"]);

        let windows = |text: &str| load_windows(&dir.write("w.json", text.as_bytes())).map(|_| ());
        expect(
            windows("{\n \"a.csv\": [\n  [\"2014-04-01 00:00:00.000000\", \"2014-04-01 99:00:00.000000\"]\n ]\n}"),
            &["w.json:3:", "not a valid date"],
        );
        expect(
            windows("{\"a.csv\": [[\"2014-04-02 00:00:00\", \"2014-04-01 00:00:00\"]]}"),
            &["w.json:1:", "ends before it starts"],
        );
        expect(
            windows(
                "{\"a.csv\": [[\"2014-04-01 00:00:00\", \"2014-04-02 00:00:00\"], [\"2014-04-01 12:00:00\", \"2014-04-03 00:00:00\"]]}",
            ),
            &["starts before the previous one ends"],
        );
        expect(windows("{\"a.csv\": [],\n\"a.csv\": []}"), &["w.json:2:", "listed twice"]);
        expect(windows("{\"a.csv\": [[\"2014-04-01 00:00:00\"]]}"), &["w.json:1:"]);
        expect(windows("[1, 2]"), &["w.json:1:"]);
        expect(windows("{\"a.csv\": [}"), &["w.json:1:"]);

        let results = |name: &str, text: &[u8]| load_results(&dir.write(name, text)).map(|_| ());
        let header = "file,timestamp,anomaly_score\n";
        expect(
            results(
                "r.csv",
                format!("{header}c/a.csv,2014-04-01 00:00:00,0.5\nc/a.csv,2014-04-01 00:05:00,1.5\n").as_bytes(),
            ),
            &["r.csv:3", "not in [0, 1]"],
        );
        expect(results("r.csv", format!("{header}c/a.csv,2014-04-01 00:00:00,NaN\n").as_bytes()), &["r.csv:2"]);
        expect(
            results("r.csv", format!("{header}c/a.csv,2014-04-01 00:00:00\n").as_bytes()),
            &["r.csv:2", "expected 3 fields"],
        );
        expect(results("r.csv", b"file,time,anomaly_score\n"), &["r.csv:1", "`timestamp`"]);
        expect(
            results("r.csv.gz", &gzip(format!("{header}c/a.csv,2014-04-01 00:00:00,0.5\nc/a.csv,x,0.5\n").as_bytes())),
            &["r.csv.gz:3", "expected a timestamp"],
        );
        expect(
            results("r.csv", b"file,timestamp,anomaly_score\nc/a.csv,2014-04-01 00:00:00,0.5\n\xff\n"),
            &["r.csv:3", "UTF-8"],
        );
        expect(results("bad.csv.gz", b"not gzip at all"), &["bad.csv.gz"]);

        let corpus = vec![NabFile { name: "c/a.csv".into(), times: vec![T0, T0 + 1000], values: vec![0.0; 2] }];
        let mut loaded = BTreeMap::new();
        loaded.insert("c/a.csv".to_owned(), vec![(T0, 0.1), (T0 + 2000, 0.2)]);
        expect(align_results(&corpus, &loaded).map(|_| ()), &["c/a.csv data row 2", "2014-04-01 00:00:02"]);
        loaded.insert("c/b.csv".to_owned(), vec![]);
        expect(align_results(&corpus, &loaded).map(|_| ()), &["c/b.csv"]);
        expect(align_results(&corpus, &BTreeMap::new()).map(|_| ()), &["no rows for c/a.csv"]);
    }

    /// A sparse excerpt of Numenta HTM's published results for one NAB file: every row scores 0 except `high` (all
    /// rows with score ≥ 0.5). Row count, window rows and NAB's per-file standard raw score are those of the real file.
    struct Excerpt {
        name: &'static str,
        rows: usize,
        step_s: i64,
        windows: &'static [(usize, usize)],
        high: &'static [(usize, f64)],
        standard_raw: f64,
    }

    /// Stored NAB thresholds for Numenta HTM (standard, reward_low_FP_rate, reward_low_FN_rate).
    const HTM_THRESHOLDS: [f64; 3] = [0.5421876907348634, 0.5751955032348636, 0.5421876907348634];

    const HTM_EXCERPTS: [Excerpt; 4] = [
        Excerpt {
            name: "artificialNoAnomaly/art_daily_small_noise.csv",
            rows: 4032,
            step_s: 300,
            windows: &[],
            high: &[
                (23, 1.0),
                (108, 1.0),
                (111, 1.0),
                (120, 1.0),
                (693, 0.648519645084),
                (1675, 0.538105001041),
                (3278, 0.621884537891),
                (3566, 0.510369432921),
            ],
            standard_raw: -0.22,
        },
        Excerpt {
            name: "artificialWithAnomaly/art_daily_jumpsup.csv",
            rows: 4032,
            step_s: 300,
            windows: &[(2787, 3189)],
            high: &[
                (3, 1.0),
                (6, 1.0),
                (8, 1.0),
                (29, 1.0),
                (108, 1.0),
                (120, 1.0),
                (125, 1.0),
                (134, 1.0),
                (2988, 1.0),
                (2989, 0.999727278412),
                (3001, 1.0),
                (3061, 0.545756534569),
                (3097, 0.588986543264),
            ],
            standard_raw: 0.86067182427,
        },
        Excerpt {
            name: "realKnownCause/machine_temperature_system_failure.csv",
            rows: 22695,
            step_s: 300,
            windows: &[(2126, 2692), (3703, 4269), (16057, 16623), (19232, 19798)],
            high: &[
                (2, 1.0),
                (3, 1.0),
                (4, 1.0),
                (6, 1.0),
                (10, 1.0),
                (16, 1.0),
                (27, 1.0),
                (48, 1.0),
                (62, 1.0),
                (69, 1.0),
                (72, 1.0),
                (74, 1.0),
                (312, 1.0),
                (317, 1.0),
                (320, 1.0),
                (843, 0.512785187567),
                (2133, 0.512785183326),
                (2147, 0.602095149663),
                (2173, 0.602095154293),
                (2405, 0.552879606735),
                (3969, 0.999999132114),
                (7168, 0.516461938651),
                (7170, 0.581168593042),
                (9703, 0.65379719017),
                (14558, 0.571455623189),
                (14560, 0.571455623189),
                (16219, 0.699225051746),
                (16699, 0.60209517976),
                (21018, 0.54168599589), // just below the standard threshold
            ],
            standard_raw: 1.36013273774,
        },
        Excerpt {
            name: "realKnownCause/nyc_taxi.csv",
            rows: 10320,
            step_s: 1800,
            windows: &[(5839, 6045), (7080, 7286), (8423, 8629), (8731, 8937), (9977, 10183)],
            high: &[
                (2, 1.0),
                (3, 1.0),
                (4, 1.0),
                (5, 1.0),
                (6, 1.0),
                (14, 1.0),
                (15, 1.0),
                (16, 1.0),
                (17, 1.0),
                (36, 1.0),
                (37, 1.0),
                (134, 1.0),
                (3262, 0.760362739813),
                (3582, 0.513361579102),
                (5928, 0.956019626703),
                (5954, 1.0),
                (5955, 1.0),
                (8523, 0.623966091786),
                (8834, 0.710693965895),
                (10063, 0.957592268819),
                (10107, 0.865876890565),
            ],
            standard_raw: 2.43572773247,
        },
    ];

    /// Not skippable: writes the excerpts as a NAB-layout corpus (data CSVs, windows JSON, gzipped results), loads it
    /// back through the public loaders and reproduces NAB's per-file raw scores from `numenta_standard_scores.csv`.
    #[test]
    fn committed_htm_excerpt_reproduces_nab_per_file_scores() {
        let dir = TempDir::new("excerpt");
        let mut windows_json = BTreeMap::new();
        let mut results = String::from("file,timestamp,anomaly_score\n");
        for e in &HTM_EXCERPTS {
            let times: Vec<TimeMs> = (0..e.rows as i64).map(|i| T0 + i * e.step_s * 1000).collect();
            let mut scores = vec![0.0; e.rows];
            for &(i, s) in e.high {
                scores[i] = s;
            }
            let mut data = String::from("timestamp,value\n");
            for (i, (&t, s)) in times.iter().zip(&scores).enumerate() {
                data.push_str(&format!("{},{}\n", format_timestamp(t), i % 7));
                results.push_str(&format!("{},{},{s}\n", e.name, format_timestamp(t)));
            }
            dir.write(&format!("data/{}", e.name), data.as_bytes());
            let pairs: Vec<[String; 2]> = e
                .windows
                .iter()
                .map(|&(l, r)| [l, r].map(|i| format!("{}.000000", format_timestamp(times[i]))))
                .collect();
            windows_json.insert(e.name, pairs);
        }
        dir.write("data/README.md", b"not a category");
        let labels =
            dir.write("labels/combined_windows.json", serde_json::to_string_pretty(&windows_json).unwrap().as_bytes());
        let results_path = dir.write("results.csv.gz", &gzip(results.as_bytes()));

        let corpus = load_corpus(&dir.0.join("data")).unwrap();
        let names: Vec<&str> = corpus.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, HTM_EXCERPTS.map(|e| e.name));
        let windows = load_windows(&labels).unwrap();
        let scores = align_results(&corpus, &load_results(&results_path).unwrap()).unwrap();
        let files = file_scores(&corpus, &scores);
        validate(&files, &windows).unwrap();
        let scorer = Scorer::new(&files, &windows);
        assert_eq!(scorer.windows(), 10);

        let r = scorer.score_at(&STANDARD, HTM_THRESHOLDS[0]);
        for e in &HTM_EXCERPTS {
            let got = r.per_file_raw[e.name];
            assert!(close(got, e.standard_raw, 1e-10), "{}: {got} vs NAB's {}", e.name, e.standard_raw);
        }
        // The same at the threshold as NAB writes it in the score files.
        let r2 = scorer.score_at(&STANDARD, 0.542187690735);
        assert_eq!(r2.raw, r.raw);
        let expected_raw: f64 = HTM_EXCERPTS.iter().map(|e| e.standard_raw).sum();
        assert!(close(r.raw, expected_raw, 1e-9));
        assert!(close(r.normalized, 100.0 * (expected_raw + 10.0) / 20.0, 1e-8));
        // Null: every file scores −A_FN × its windows (nyc_taxi −5).
        for profile in &PROFILES {
            let null = scorer.score_at(profile, NO_DETECTION_THRESHOLD);
            assert_eq!(null.per_file_raw["realKnownCause/nyc_taxi.csv"], -5.0 * profile.a_fn);
            assert_eq!(null.normalized, 0.0);
        }
        // The optimiser never does worse than the stored threshold.
        for (profile, &theta) in PROFILES.iter().zip(&HTM_THRESHOLDS) {
            assert!(scorer.optimize(profile).raw >= scorer.score_at(profile, theta).raw - 1e-12);
        }
    }

    fn shared_nab() -> Option<PathBuf> {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/nab"));
        if dir.is_dir() {
            Some(dir)
        } else {
            println!("skipped: NAB shared data not found at {}", dir.display());
            None
        }
    }

    /// Reproduces NAB's published Numenta HTM scores from the full corpus (needs `../shared/data/nab`).
    #[test]
    fn htm_reproduces_published_nab_scores() {
        let Some(nab) = shared_nab() else { return };
        let corpus = load_corpus(&nab.join("data")).unwrap();
        let windows = load_windows(&nab.join("labels/combined_windows.json")).unwrap();
        let results = load_results(&nab.join("results-numenta-htm.csv.gz")).unwrap();
        let scores = align_results(&corpus, &results).unwrap();
        let files = file_scores(&corpus, &scores);
        validate(&files, &windows).unwrap();
        assert_eq!(corpus.len(), 58);
        assert_eq!(corpus.iter().map(|f| f.times.len()).sum::<usize>(), 365_558);
        assert_eq!(windows.values().map(Vec::len).sum::<usize>(), 116);

        let scorer = Scorer::new(&files, &windows);
        assert_eq!(scorer.windows(), 116);
        let published = [(70.1011, 46.6345), (63.1168, 30.4311), (74.3202, 26.6345)];
        for ((profile, &theta), &(score, raw)) in PROFILES.iter().zip(&HTM_THRESHOLDS).zip(&published) {
            let r = scorer.score_at(profile, theta);
            println!("{} at stored θ {theta}: {:.4} (raw {:.4})", profile.name, r.normalized, r.raw);
            assert!(close(r.normalized, score, 5e-5), "{}: {} vs {score}", profile.name, r.normalized);
            assert!(close(r.raw, raw, 5e-5), "{}: raw {} vs {raw}", profile.name, r.raw);
            // No window reaches into probation: every in-window row is counted.
            assert_eq!(r.tp + r.fn_, 33_495);
        }
        let r = scorer.score_at(&STANDARD, HTM_THRESHOLDS[0]);
        for e in &HTM_EXCERPTS {
            assert!(close(r.per_file_raw[e.name], e.standard_raw, 1e-10), "{}", e.name);
        }

        let optimised = [70.1011, 63.2092, 74.3202];
        for (profile, &score) in PROFILES.iter().zip(&optimised) {
            let started = Instant::now();
            let r = optimize(&files, &windows, profile);
            let elapsed = started.elapsed();
            println!(
                "{}: optimiser θ* = {} → {:.4} (raw {:.4}, tp {} fp {}) in {elapsed:.2?}; per category {:?}",
                profile.name, r.threshold, r.normalized, r.raw, r.tp, r.fp, r.per_category
            );
            assert!(close(r.normalized, score, 5e-5), "{}: {} vs {score}", profile.name, r.normalized);
        }
        // The stored standard threshold lies between two distinct HTM scores; the optimiser's candidate is the next
        // score above it (realTraffic/speed_7578.csv), which detects the same rows, so the tie goes to it.
        let r = scorer.optimize(&STANDARD);
        assert_eq!(r.threshold, 0.543099145074);
        assert_eq!(r.raw, scorer.score_at(&STANDARD, HTM_THRESHOLDS[0]).raw);

        // Null (constant 0.5) and perfect detectors on the real geometry.
        let null: Vec<Vec<f64>> = corpus.iter().map(|f| vec![0.5; f.times.len()]).collect();
        let null_files = file_scores(&corpus, &null);
        for (profile, raw) in PROFILES.iter().zip([-116.0, -116.0, -232.0]) {
            let r = optimize(&null_files, &windows, profile);
            assert_eq!((r.threshold, r.raw, r.normalized), (NO_DETECTION_THRESHOLD, raw, 0.0));
        }
        let perfect: Vec<Vec<f64>> = corpus
            .iter()
            .map(|f| {
                let starts: BTreeSet<TimeMs> = windows[&f.name].iter().map(|w| w.0).collect();
                f.times.iter().map(|t| if starts.contains(t) { 1.0 } else { 0.0 }).collect()
            })
            .collect();
        let perfect_files = file_scores(&corpus, &perfect);
        for profile in &PROFILES {
            let r = optimize(&perfect_files, &windows, profile);
            assert!(close(r.normalized, 100.0, 1e-9), "{}: {}", profile.name, r.normalized);
        }
    }
}
