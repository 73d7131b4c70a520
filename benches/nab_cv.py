#!/usr/bin/env python3
"""Which detector settings generalise on NAB: two-fold cross-validation over the corpus's files.

    python3 benches/nab_cv.py DATA_DIR LABELS_FILE [--faultline BIN] [--search] [--base K=V ...]

e.g. python3 benches/nab_cv.py ../shared/data/nab/data ../shared/data/nab/labels/combined_windows.json

The corpus is split into two halves (fold A and fold B): within each category, files sorted by name go to A and B in
turn, so each half holds every category. The folds are directories of symbolic links in a temporary directory.

Default mode: every setting of the grid below, changed alone from the defaults (plus any `--base`), is scored on fold
A, fold B and the whole corpus (`faultline eval nab`, standard profile, each at NAB's optimised threshold). A change
that raises the score on both halves is marked `both`: a change that fits one half's files raises only that half.

`--search`: coordinate search (each setting in turn, the best value taken if it gains more than 0.05, up to three
sweeps) on each half, then the tuned settings are scored on the other half. The gap between the in-sample and the
out-of-sample change is what tuning on NAB itself is worth.

Settings are passed as `FAULTLINE__DETECTOR__…` environment variables; nothing else is read from the environment.
Each evaluation takes about 0.1 s (the detector is under a tenth of it).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GRID = {
    "THRESHOLD": [4.0, 5.0, 6.0, 7.0, 8.0],
    "ALPHA": [0.03, 0.04, 0.05, 0.06, 0.08],
    "BETA": [0.02, 0.03, 0.04, 0.05],
    "HUBER": [2.0, 2.5, 3.0, 3.5, 4.0],
    "ANOMALY_WEIGHT": [0.0, 0.01, 0.02, 0.05, 0.1],
    "MIN_REL_DEVIATION": [0.0, 0.02, 0.05, 0.08],
    "RISK": [2e-4, 3e-4, 4e-4, 6e-4],
    "SCALE_FLOOR_ALPHA": [0.005, 0.01, 0.02],
    "WARMUP_POINTS": [40, 60, 80],
    "SEASONAL__RATE": [0.08, 0.1, 0.12],
    "SEASONAL__MIN_GAIN": [0.25, 0.3, 0.35],
    "LEVEL_SHIFT__DRIFT": [0.3, 0.5, 0.7, 1.0],
    "LEVEL_SHIFT__THRESHOLD": [10.0, 12.5, 15.0, 17.5, 20.0, 30.0],
    "LEVEL_SHIFT__SETTLE_AFTER": [10, 20, 30, 50],
    "CALIBRATION__QUANTILE": [0.95, 0.97, 0.98, 0.99],
    "CALIBRATION__MIN_PEAKS": [8, 12, 16, 24],
    "CALIBRATION__MEMORY": [128.0, 256.0, 512.0],
    "DENSITY__HALF_LIFE": [2000.0, 4000.0, 8000.0],
    "DENSITY__PRIOR": [0.05, 0.1, 0.2],
    "DENSITY__TAIL": [0.6, 0.75, 0.9],
    "DENSITY__RESIDUAL_DISCOUNT": [1.0, 1.25, 1.5, 1.75, 2.0],
    "DENSITY__WARMUP_POINTS": [50, 100, 150],
    "FATIGUE__SCALE": [15.0, 20.0, 25.0],
    "NOVELTY__HALF_LIFE": [30.0, 40.0, 50.0],
    "NOVELTY__MARGIN": [0.7, 0.8, 0.9],
    "BURST__HALF_LIFE": [10.0, 14.0, 20.0],
    "BURST__RECORD": [0.2, 0.3, 0.4],
}


def split(data: Path, into: Path) -> dict[str, Path]:
    """Fold A and fold B of the corpus under `into`, as directories of symbolic links."""
    folds = {name: into / name for name in "AB"}
    for category in sorted(p for p in data.iterdir() if p.is_dir()):
        for i, csv in enumerate(sorted(category.glob("*.csv"))):
            d = folds["AB"[i % 2]] / category.name
            d.mkdir(parents=True, exist_ok=True)
            (d / csv.name).symlink_to(csv.resolve())
    return folds


class Evaluator:
    def __init__(self, faultline: str, labels: Path):
        self.faultline, self.labels, self.cache = faultline, labels, {}

    def standard(self, data: Path, settings: dict) -> float:
        """NAB's standard-profile score of `data` with `settings` over the defaults."""
        key = (str(data), tuple(sorted(settings.items())))
        if key not in self.cache:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FAULTLINE__")}
            env.update({f"FAULTLINE__DETECTOR__{k}": str(v) for k, v in settings.items()})
            args = [self.faultline, "eval", "nab", "--data", str(data), "--labels", str(self.labels), "--json"]
            done = subprocess.run(args, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"faultline eval nab failed with {settings}:\n{done.stderr}")
            results = json.loads(done.stdout)["results"]
            self.cache[key] = next(r["normalized"] for r in results if r["profile"] == "standard")
        return self.cache[key]


def singles(ev: Evaluator, folds: dict, data: Path, base: dict) -> None:
    ref = {name: ev.standard(d, base) for name, d in [("A", folds["A"]), ("B", folds["B"]), ("all", data)]}
    print(f"base {base or 'defaults'}: fold A {ref['A']:.2f}, fold B {ref['B']:.2f}, corpus {ref['all']:.2f}")
    print(f"{'setting':<32} {'value':>8} {'Δ fold A':>9} {'Δ fold B':>9} {'Δ corpus':>9}")
    for k, values in GRID.items():
        for v in values:
            s = dict(base, **{k: v})
            if s == base:
                continue  # a value `--base` sets already (a default value shows as +0.00)
            da = ev.standard(folds["A"], s) - ref["A"]
            db = ev.standard(folds["B"], s) - ref["B"]
            dc = ev.standard(data, s) - ref["all"]
            mark = "both" if da > 0 and db > 0 else ""
            print(f"{k:<32} {v:>8} {da:>+9.2f} {db:>+9.2f} {dc:>+9.2f}  {mark}", flush=True)


def search(ev: Evaluator, data: Path, base: dict) -> dict:
    best, tuned = ev.standard(data, base), dict(base)
    for _ in range(3):
        improved = False
        for k, values in GRID.items():
            score, v = max((ev.standard(data, dict(tuned, **{k: v})), v) for v in values)
            if score > best + 0.05:
                best, tuned[k], improved = score, v, True
        if not improved:
            break
    return tuned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="NAB's data directory")
    ap.add_argument("labels", type=Path, help="NAB's labels/combined_windows.json")
    ap.add_argument("--faultline", default="target/release/faultline", help="the faultline binary")
    ap.add_argument("--search", action="store_true", help="tune on each half, score on the other")
    ap.add_argument("--base", nargs="*", default=[], metavar="K=V", help="settings every run starts from")
    a = ap.parse_args()
    base = dict(kv.split("=", 1) for kv in a.base)
    ev = Evaluator(a.faultline, a.labels)
    with tempfile.TemporaryDirectory() as tmp:
        folds = split(a.data, Path(tmp))
        if not a.search:
            singles(ev, folds, a.data, base)
            return
        for tune, test in [("A", "B"), ("B", "A")]:
            tuned = search(ev, folds[tune], base)
            print(f"tuned on fold {tune}: {tuned}")
            for name, d in [(f"fold {tune}", folds[tune]), (f"fold {test}", folds[test]), ("corpus", a.data)]:
                before, after = ev.standard(d, base), ev.standard(d, tuned)
                where = {folds[tune]: "in sample", folds[test]: "out of sample"}.get(d, "whole corpus")
                print(f"  {name:<7} ({where}): {before:.2f} -> {after:.2f} ({after - before:+.2f})", flush=True)


if __name__ == "__main__":
    main()
