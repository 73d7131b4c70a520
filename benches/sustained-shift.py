#!/usr/bin/env python3
"""Sustained shifts smaller than the event band, through `faultline run`: which ones raise anomaly events.

    python3 benches/sustained-shift.py [FAULTLINE_BINARY [SIGMAS...]]

One series per shift size: one-minute points at 100 with Gaussian noise of sigma 1 for 8,000 points, then SIGMAS
sigmas higher for 100 points (an hour and forty minutes), then back for 1,900 points; and a count, Poisson with mean
3, tripling to 10 for the same 100 points. Prints, per series, the anomaly events inside the shift (and up to 30
points after it), the first of them, and the events elsewhere. The event path judges each point against a band of
about `threshold` (6) sigmas or more (the calibrated quantile at `detector.risk`); a shift inside it is seen by the
level-shift CUSUM and the score stream's burst channel, but raises no event (README, "How detection works").
"""
import json
import math
import os
import random
import sys
import tempfile

from replay_jsonl import replay

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/faultline"
SIGMAS = [float(v) for v in sys.argv[2:]] or [3, 4, 5, 6, 7, 8, 10]
T0 = 1_767_571_200_000
START, LENGTH, TOTAL = 8000, 100, 10000


def poisson(rng, lam):
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def main():
    rng = random.Random(12)
    names = [f"gauss+{s:g}sigma" for s in SIGMAS] + ["poisson-3-to-10"]
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "points.jsonl"), "w") as f:
            for i in range(TOTAL):
                inside = START <= i < START + LENGTH
                for name, s in zip(names, SIGMAS):
                    x = 100 + rng.gauss(0, 1) + (s if inside else 0)
                    f.write(json.dumps({"time": T0 + i * 60_000, "service": name, "metric": "m", "value": x}) + "\n")
                x = poisson(rng, 10 if inside else 3)
                f.write(json.dumps({"time": T0 + i * 60_000, "service": names[-1], "metric": "m", "value": x}) + "\n")
        events = replay(BIN, os.path.join(d, "points.jsonl"), d)
    print("| series | events in the shift | first, points after its start | events elsewhere |")
    print("|---|---:|---:|---:|")
    for name in names:
        rows = [(e["time_ms"] - T0) // 60_000 for e in events if e["service"] == name]
        inside = [r for r in rows if START <= r < START + LENGTH + 30]
        first = min(inside) - START if inside else "–"
        print(f"| {name} | {len(inside)} | {first} | {len(rows) - len(inside)} |")


if __name__ == "__main__":
    main()
