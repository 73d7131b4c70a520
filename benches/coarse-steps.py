#!/usr/bin/env python3
"""Seasons found, and events raised, on series sampled coarsely: a Gaussian random walk (no season), white noise (no
season) and a daily wave with noise (a season), each at daily, 6-hourly, 2-hourly and half-hourly steps, through
`faultline run`.

    python3 benches/coarse-steps.py [FAULTLINE_BINARY [BASELINE_BINARY]]

None of these series has an anomaly: every event is a false alarm, and a season on the random walk or the noise is a
false season. For each series it prints the events, the model's stage and season at the end, and its sigma (what a
residual is measured against, from `faultline models --json`; the scale from a build before it reported sigma), for the
binary and, given a second, for that one beside it (an A/B of two builds on the same series).
"""
import json
import math
import os
import random
import subprocess
import sys
import tempfile

T0 = 1_767_571_200_000
BINS = sys.argv[1:] or ["target/release/faultline"]


def run(binary, points, d):
    with open(f"{d}/points.jsonl", "w") as f:
        for t, v in points:
            f.write(json.dumps({"time": T0 + int(t * 1000), "service": "s", "metric": "m", "value": v}) + "\n")
    with open(f"{d}/c.toml", "w") as f:
        f.write(
            f'[engine]\nstate-dir = "{d}/state"\n[source]\nkind = "jsonl"\npath = "{d}/points.jsonl"\n'
            f'[[sinks]]\nkind = "jsonl"\npath = "{d}/anomalies.jsonl"\nevents = ["anomaly"]\n'
        )
    r = subprocess.run([binary, "run", "--config", f"{d}/c.toml"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"faultline run failed: {r.stderr[-2000:]}")
    events = sum(1 for _ in open(f"{d}/anomalies.jsonl"))
    m = subprocess.run([binary, "models", f"{d}/state", "--series", "*", "--json"], capture_output=True, text=True)
    row = json.loads(m.stdout)["rows"][0]
    for p in (f"{d}/state/models.bin", f"{d}/anomalies.jsonl"):
        os.remove(p)
    return f"{events:>3} events, {row['stage']}, season {row['season'] or 'none'}, sigma {row.get('sigma', row['scale']):.2f}"


def main():
    rng = random.Random(3)
    cases = []
    for step, days in ((86_400, 400), (21_600, 120), (7_200, 60), (1_800, 30)):
        n = int(days * 86_400 / step)
        x, walk = 100.0, []
        for i in range(n):
            x += rng.gauss(0, 1)
            walk.append((i * step, x))
        noise = [(i * step, 100 + rng.gauss(0, 2)) for i in range(n)]
        wave = [(i * step, 100 + 30 * math.sin(2 * math.pi * i * step / 86_400) + rng.gauss(0, 2)) for i in range(n)]
        label = f"{step // 3600}h" if step >= 3600 else f"{step // 60}min"
        cases += [(f"random walk, {label} steps, {days} days", walk), (f"white noise, {label} steps, {days} days", noise)]
        cases.append((f"daily wave, {label} steps, {days} days", wave))
    with tempfile.TemporaryDirectory() as d:
        for name, points in cases:
            print(f"{name:<36}" + " | ".join(run(b, points, d) for b in BINS), flush=True)


main()
