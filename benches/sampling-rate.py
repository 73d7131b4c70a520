#!/usr/bin/env python3
"""Detection against the sampling interval: one daily-seasonal series at 1-minute to 1-hour steps, through `faultline run`.

    python3 benches/sampling-rate.py [FAULTLINE_BINARY]

The series is 100 + 30 sin(2 pi t / day) plus Gaussian noise of sigma 2, sampled every STEP for DAYS days; a day and
a half before its end it rises by 25 (12 noise sigmas; under the daily swing's own amplitude) for half an hour, or
three points where a step is longer than ten minutes. For each step, history and setting it prints the anomaly
events inside the rise (and the hour after it), the events anywhere else, and the model's stage, season, scale and
sigma at the end, read back from the saved models (`faultline models --json`).
"""
import json
import math
import os
import random
import subprocess
import sys
import tempfile

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/faultline"
T0 = 1_767_571_200_000
SETTINGS = [("defaults", {}), ("seasonal.rate 0.3", {"FAULTLINE__DETECTOR__SEASONAL__RATE": "0.3"})]


def run(step_s, days, env, d):
    rng = random.Random(11)
    n = int(days * 86_400 / step_s)
    start, length = int((days - 1.5) * 86_400 / step_s), max(3, int(1_800 / step_s))
    with open(f"{d}/points.jsonl", "w") as f:
        for i in range(n):
            t = i * step_s
            v = 100 + 30 * math.sin(2 * math.pi * t / 86_400) + rng.gauss(0, 2) + (25 if start <= i < start + length else 0)
            f.write(json.dumps({"time": T0 + t * 1000, "service": "s", "metric": "m", "value": v}) + "\n")
    with open(f"{d}/c.toml", "w") as f:
        f.write(
            f'[engine]\nstate-dir = "{d}/state"\n[source]\nkind = "jsonl"\npath = "{d}/points.jsonl"\n'
            f'[[sinks]]\nkind = "jsonl"\npath = "{d}/anomalies.jsonl"\nevents = ["anomaly"]\n'
        )
    r = subprocess.run([BIN, "run", "--config", f"{d}/c.toml"], capture_output=True, text=True, env={**os.environ, **env})
    if r.returncode != 0:
        sys.exit(f"faultline run failed: {r.stderr[-2000:]}")
    events = [json.loads(line)["time_ms"] for line in open(f"{d}/anomalies.jsonl")]
    lo, hi = T0 + start * step_s * 1000, T0 + (start + length) * step_s * 1000 + 3_600_000
    inside = sum(1 for t in events if lo <= t < hi)
    m = subprocess.run([BIN, "models", f"{d}/state", "--series", "*", "--json"], capture_output=True, text=True)
    row = json.loads(m.stdout)["rows"][0]
    for p in (f"{d}/state/models.bin", f"{d}/anomalies.jsonl"):
        os.remove(p)
    return inside, len(events) - inside, row


def main():
    print(f"{'step':>6} {'days':>4}  {'setting':<18} {'in the rise':>11} {'elsewhere':>9}  model at the end")
    with tempfile.TemporaryDirectory() as d:
        for step_s in (60, 300, 900, 3600):
            for days in (10, 40):
                for name, env in SETTINGS:
                    inside, other, row = run(step_s, days, env, d)
                    model = f"{row['stage']}, season {row['season'] or 'none'}, scale {row['scale']:.2f}, sigma {row['sigma']:.2f}"
                    print(f"{step_s:>5}s {days:>4}  {name:<18} {inside:>11} {other:>9}  {model}", flush=True)


main()
