"""Faultline next to well-known streaming detectors on NAB: the same corpus, one fresh model per file, causally.

Run through `run.sh`, which creates the virtual environment, builds Faultline and pins everything to one core. This
file does the work:

1. Reads every `<category>/<name>.csv` of NAB's data directory (outside the timed region).
2. Streams each file through each peer, point by point: score the point, then learn it (the score of row i depends
   only on rows 0..=i). Only the per-point work is timed (input scaling, score, learn, score map); reading the CSV and
   writing results are not.
3. Writes each peer's scores in NAB's results format (`file,timestamp,anomaly_score`) and scores them with
   `faultline eval nab --scores FILE` (all three profiles, NAB's threshold optimiser).
4. Runs `faultline eval nab` itself (one shard, on the same core) and prints one table. Each timed pass of a quick
   peer comes right after a Faultline run, so the two sides of a ratio see the same machine; the medians go in the
   table, and the median of the pairs' ratios is printed too.

Scores must lie in [0, 1] and should stay ordered: NAB's optimiser sweeps thresholds over the distinct scores, so a
detector that pins many rows at exactly 1.0 loses every distinction among them. Each peer's mapping is described
where it is built; the table's last column counts rows at exactly 1.0.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Imported here, not in the timed runners: importing river or PySAD takes longer than some peers' whole corpus.
from pysad.models import KNNCAD
from river.anomaly import GaussianScorer, HalfSpaceTrees

PEERS = ("knncad", "hst", "gaussian")


def load_corpus(data_dir: Path) -> list[tuple[str, list[str], list[float]]]:
    """Every `<category>/<name>.csv`, sorted by name as `faultline eval nab` sorts them: (name, timestamps, values)."""
    files = []
    for category in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for path in sorted(category.glob("*.csv")):
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            if not rows or [c.strip() for c in rows[0]] != ["timestamp", "value"]:
                sys.exit(f"{path}: expected the header `timestamp,value`")
            times = [r[0].strip() for r in rows[1:] if r]
            values = [float(r[1]) for r in rows[1:] if r]
            files.append((f"{category.name}/{path.name}", times, values))
    if not files:
        sys.exit(f"no `<category>/*.csv` files under {data_dir}")
    return files


def probation(n: int) -> int:
    """NAB's probationary period: min(floor(0.15 n), 750) rows (what NAB hands its detectors, KNN-CAD included)."""
    return min(math.floor(0.15 * n), 750)


def run_knncad(values: list[float]) -> list[float]:
    """PySAD's KNNCAD (a port of NAB's kNN-CAD) with NAB's probationary period, scores as they come.

    Its score is a conformal p-value rank in [0, 1] (plus NAB's 0.5 alarm suppression); it can be exactly 1.0 (the
    window is farther than every calibration window), which is how NAB scored it too, so it is left unchanged and the
    rows at 1.0 are counted in the table.
    """
    model = KNNCAD(probationary_period=max(probation(len(values)), 48))
    step = model.fit_score_partial
    return [step(v) for v in values]


def run_hst(values: list[float]) -> list[float]:
    """river's HalfSpaceTrees (10 trees, height 8, window 250: river's defaults; seed 42) on a causally scaled value.

    HalfSpaceTrees wants features in [0, 1]. Each value is scaled by the running minimum and maximum of the stream
    so far, the current value included ((v - min) / (max - min), 0.5 while max = min), so no future value is used.
    Its score `1 - mass / max_mass` is in [0, 1] and never reaches 1.0 once the first window is learned (the root
    always holds a window's mass), so it is used as it comes.
    """
    model = HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)
    score_one, learn_one = model.score_one, model.learn_one
    lo, hi = math.inf, -math.inf
    out = []
    append = out.append
    for v in values:
        if v < lo:
            lo = v
        if v > hi:
            hi = v
        x = {"v": (v - lo) / (hi - lo) if hi > lo else 0.5}
        append(score_one(x))
        learn_one(x)
    return out


def run_gaussian(values: list[float]) -> list[float]:
    """river's GaussianScorer (no window, grace period 100), its score mapped monotonically so it does not saturate.

    river scores `2 |CDF(y) - 0.5| = erf(|z| / sqrt 2)` with `z = (y - mu) / sigma` of the running Gaussian: it is
    exactly 1.0 in double precision once |z| exceeds about 8.3, so every large deviation ties at 1.0. The same
    ordering without saturation is `|z| / (1 + |z|)`, a strictly increasing function of river's score (0 during the
    grace period, as river returns). It reads mu and sigma from the model's own Gaussian before learning the point,
    which is what `score_one` does. A zero sigma is floored at 1e-12 (1 + |mu|) so a first departure from a constant
    stream is finite and still ordered by its size.
    """
    model = GaussianScorer(grace_period=100)
    gaussian = model.gaussian
    learn_one = model.learn_one
    grace = model.grace_period
    out = []
    append = out.append
    for v in values:
        if gaussian.n_samples < grace:
            append(0.0)
        else:
            mu = gaussian.mu
            sigma = max(gaussian.sigma, 1e-12 * (1.0 + abs(mu)))
            z = abs(v - mu) / sigma
            append(z / (1.0 + z))
        learn_one(None, v)
    return out


RUNNERS = {"knncad": run_knncad, "hst": run_hst, "gaussian": run_gaussian}
NAMES = {
    "knncad": "PySAD KNNCAD",
    "hst": "river HalfSpaceTrees",
    "gaussian": "river GaussianScorer",
}


def clean(s: float) -> float:
    """A score NAB's results format accepts: a number in [0, 1] (NaN becomes 0)."""
    s = float(s)
    if s != s:
        return 0.0
    return min(max(s, 0.0), 1.0)


def timed_pass(runner, corpus) -> tuple[float, list[list[float]]]:
    """One pass of `runner` over the corpus, a fresh model per file: the seconds spent in it, and each file's scores."""
    seconds = 0.0
    outputs = []
    for _, _, values in corpus:
        # Models may print (PySAD's KNNCAD reports singular matrices); keep stdout for the table.
        with contextlib.redirect_stdout(sys.stderr):
            started = time.perf_counter()
            scores = runner(values)
            seconds += time.perf_counter() - started
        outputs.append(scores)
    return seconds, outputs


def run_peer(peer: str, corpus, out_dir: Path) -> dict:
    """One pass of a peer over the corpus: its time, and its results file written. `main` times quick peers again,
    interleaved with Faultline's runs."""
    seconds, outputs = timed_pass(RUNNERS[peer], corpus)
    rows = 0
    at_one = 0
    path = out_dir / f"{peer}.csv"
    with path.open("w") as w:
        w.write("file,timestamp,anomaly_score\n")
        for (name, times, values), scores in zip(corpus, outputs):
            rows += len(values)
            for t, s in zip(times, scores):
                s = clean(s)
                at_one += s == 1.0
                w.write(f"{name},{t},{s!r}\n")
    return {"peer": peer, "rows": rows, "passes": [seconds], "at_one": at_one, "scores": str(path)}


def faultline_json(faultline: str, args: list[str], env: dict | None = None) -> dict:
    done = subprocess.run([faultline, "eval", "nab", *args, "--json"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"faultline eval nab {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def count_at_one(path: Path) -> int:
    """Rows of a results file whose anomaly score is exactly 1.0."""
    with path.open(newline="") as f:
        return sum(1 for row in csv.DictReader(f) if float(row["anomaly_score"]) == 1.0)


def profiles(report: dict) -> dict[str, float]:
    return {r["profile"]: r["normalized"] for r in report["results"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="NAB's data directory (<category>/<name>.csv)")
    ap.add_argument("labels", type=Path, help="NAB's labels/combined_windows.json")
    ap.add_argument("--faultline", default="target/release/faultline", help="the faultline binary")
    ap.add_argument("--out", type=Path, default=Path("target/peers-out"), help="where the results files go")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument(
        "--faultline-runs",
        type=int,
        default=5,
        help="Faultline detector runs (median time is kept) when no peer is quick; else one before each quick "
        "peer's timed pass",
    )
    ap.add_argument(
        "--peer-runs", type=int, default=5, help="passes of each quick peer over the corpus (median time is kept)"
    )
    ap.add_argument(
        "--repeat-under",
        type=float,
        default=15.0,
        help="a peer whose first pass takes under this many seconds is timed --peer-runs times; slower ones once",
    )
    a = ap.parse_args()

    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in RUNNERS]
    if unknown:
        sys.exit(f"unknown peer(s) {unknown}; expected some of {','.join(PEERS)}")
    if a.faultline_runs < 1 or a.peer_runs < 1:
        sys.exit("--faultline-runs and --peer-runs must be at least 1")
    a.out.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    print(f"CPU affinity: {cpus}; load average at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)

    corpus = load_corpus(a.data)
    rows = sum(len(v) for _, _, v in corpus)
    print(f"{len(corpus)} files, {rows} rows", file=sys.stderr)

    # Faultline first: one shard thread, so its time is one core's work. Then each peer's first pass (its scores).
    env = dict(os.environ, FAULTLINE__ENGINE__SHARDS="1")
    data_args = ["--data", str(a.data), "--labels", str(a.labels)]
    runs = [faultline_json(a.faultline, [*data_args, "--out", str(a.out / "faultline.csv")], env)]
    own = runs[0]
    if own["rows"] != rows:
        sys.exit(f"faultline read {own['rows']} rows, this script {rows}")
    results = [run_peer(peer, corpus, a.out) for peer in peers]
    # The timing runs: Faultline's and each quick peer's (a first pass under --repeat-under seconds; a slower peer,
    # such as KNN-CAD at minutes a pass, is timed once), each peer's pass right after a Faultline run, so both sides
    # of a ratio see the same machine. A pass of well under a second is at the mercy of whatever else the shared
    # machine does for part of it; the medians, and the median of the ratios of the pairs, are what is reported.
    for r in results:
        r["quick"] = r["passes"][0] < a.repeat_under
        r["beside"] = []
    quick = [r for r in results if r["quick"]]
    if not quick:
        runs += [faultline_json(a.faultline, data_args, env) for _ in range(a.faultline_runs - 1)]
    for _ in range(a.peer_runs - 1 if quick else 0):
        for r in quick:
            runs.append(faultline_json(a.faultline, data_args, env))
            r["beside"].append(runs[-1]["detect_s"])
            r["passes"].append(timed_pass(RUNNERS[r["peer"]], corpus)[0])
    own_s = statistics.median(r["detect_s"] for r in runs)
    table = [("Faultline (full ensemble)", profiles(own), rows / own_s, count_at_one(a.out / "faultline.csv"))]

    timings = []
    for r in results:
        seconds = statistics.median(r["passes"])
        all_s = ", ".join(f"{p:.3f}" for p in r["passes"])
        print(
            f"{NAMES[r['peer']]}: {r['rows']} rows in {seconds:.3f} s, median of {len(r['passes'])} pass(es) "
            f"(all: {all_s}; {r['rows'] / seconds:,.0f} points/s)",
            file=sys.stderr,
        )
        # Side by side: the k-th timing run of Faultline and of the peer came one after the other.
        paired = [p / f for p, f in zip(r["passes"][1:], r["beside"])]
        timings.append((NAMES[r["peer"]], seconds, r["passes"], paired))
        report = faultline_json(a.faultline, [*data_args, "--scores", r["scores"]])
        table.append((NAMES[r["peer"]], profiles(report), r["rows"] / seconds, r["at_one"]))

    fastest_peer = max((t[2] for t in table[1:]), default=None)
    print()
    print(f"NAB, {len(corpus)} files, {rows} rows; each detector on one core (CPU {','.join(map(str, cpus))})")
    print(
        f"| detector | standard | low FP | low FN | points/s per core | Faultline / this | rows at 1.0 |\n"
        f"|---|---|---|---|---|---|---|"
    )
    own_rate = table[0][2]
    for name, p, rate, at_one in table:
        ratio = own_rate / rate
        print(
            f"| {name} | {p['standard']:.2f} | {p['reward_low_FP_rate']:.2f} | {p['reward_low_FN_rate']:.2f} "
            f"| {rate:,.0f} | {ratio:.2f}× | {at_one} |"
        )
    if fastest_peer is not None:
        best_peer = max(table[1:], key=lambda t: t[1]["standard"])
        speed = own_rate / fastest_peer
        beats = all(table[0][1][k] > t[1][k] for t in table[1:] for k in table[0][1])
        print()
        print(
            f"Faultline / fastest peer: {speed:.2f}× points/s per core (target ≥ 10×: "
            f"{'met' if speed >= 10 else 'NOT met'}); best peer standard score {best_peer[1]['standard']:.2f} "
            f"({best_peer[0]}); Faultline scores higher than every peer on all three profiles: "
            f"{'yes' if beats else 'no'}"
        )
    all_s = ", ".join(f"{r['detect_s']:.3f}" for r in runs)
    print(f"Faultline detector time: median of {len(runs)} runs, {own_s:.3f} s (all: {all_s})")
    for name, seconds, passes, paired in timings:
        all_p = ", ".join(f"{p:.3f}" for p in passes)
        print(f"{name} time: median of {len(passes)} pass(es), {seconds:.3f} s (all: {all_p})")
        if paired:
            all_r = ", ".join(f"{q:.2f}" for q in paired)
            print(
                f"Faultline / {name}, run by run (each pair timed one after the other): median "
                f"{statistics.median(paired):.2f}× (all: {all_r})"
            )
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other processes share the machine)")


if __name__ == "__main__":
    main()
