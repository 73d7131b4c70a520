#!/usr/bin/env python3
"""What range of values the models hold: the same six series at scales from 1e-13 to 1e39, through `faultline run`.

    python3 benches/value-range.py [FAULTLINE_BINARY [EXPONENT...]]   # scales 10^EXPONENT; the first is the reference

The models keep their state in 32-bit floats. This replays six series of 4,000 one-minute points (a daily wave with
noise; spikes of ten times the level; uniform noise from zero to the scale; sign flips; a jump to the scale halfway,
from a thousandth of it; the wave alternating with zeros), all multiplied by one scale, with and without the spectral
channel, and prints for each scale the events raised, whether they are the same (series, time, stage, direction) as
at the first scale, the dead letters, and the series whose saved level or scale is not finite. The sources refuse
values past 1e30 (`model::MAX_VALUE`): past it the points are dead letters and nothing reaches the models. Below
`detector.abs-floor` (1e-12) a series' noise is under the least scale its z-scores are measured against.
"""
import json
import math
import os
import random
import subprocess
import sys
import tempfile

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/faultline"
EXPONENTS = [int(e) for e in sys.argv[2:]] or [3, -13, -12, -11, -10, -9, -6, -5, -3, 0, 9, 15, 19, 25, 28, 31, 33, 35, 39]
T0 = 1_767_571_200_000


def write_points(path, scale):
    rng = random.Random(3)
    with open(path, "w") as f:
        for i in range(4000):
            day = math.sin(2 * math.pi * i / 1440)
            v = [
                scale * (1 + 0.3 * day + 0.01 * rng.random()),
                scale * (1 + 0.01 * rng.random()) * (10 if i % 97 == 0 else 1),
                scale * rng.random(),
                (scale if rng.random() < 0.5 else -scale) * (1 + 0.01 * rng.random()),
                scale * rng.random() if i > 2000 else scale * 1e-3,
                scale * (1 + 0.3 * day) if i % 2 else 0.0,
            ]
            for s, x in enumerate(v):
                f.write(json.dumps({"time": T0 + i * 60_000, "service": "s", "metric": f"m{s}", "value": x}) + "\n")


def run(scale, spectral, tmp):
    d = os.path.join(tmp, f"{scale:e}-{spectral}")
    os.makedirs(d)
    write_points(os.path.join(d, "points.jsonl"), scale)
    with open(os.path.join(d, "c.toml"), "w") as f:
        f.write(
            f"""[engine]
shards = 1
state-dir = "{d}/state"
[source]
kind = "jsonl"
path = "{d}/points.jsonl"
[detector.spectral]
enabled = {str(spectral).lower()}
[[sinks]]
kind = "jsonl"
path = "{d}/anomalies.jsonl"
events = ["anomaly"]
[dead-letter]
path = "{d}/dead.jsonl"
"""
        )
    r = subprocess.run([BIN, "run", "--config", f"{d}/c.toml"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"faultline run failed at scale {scale:e}: {r.stderr[-2000:]}")
    events = [json.loads(line) for line in open(f"{d}/anomalies.jsonl")]
    dead = sum(1 for _ in open(f"{d}/dead.jsonl")) if os.path.exists(f"{d}/dead.jsonl") else 0
    broken = []
    if os.path.exists(f"{d}/state/models.bin"):
        m = subprocess.run([BIN, "models", f"{d}/state", "--series", "*", "--json"], capture_output=True, text=True)
        for row in json.loads(m.stdout)["rows"]:
            if any(not isinstance(row[k], (int, float)) or not math.isfinite(row[k]) for k in ("level", "scale")):
                broken.append(row["series"])
    key = [(e["metric"], e["time_ms"], e["stage"], e["direction"]) for e in events]
    return key, dead, broken


def main():
    first = f"as at 1e{EXPONENTS[0]}"
    print(f"{'scale':>7} {'spectral':>8} {'events':>6} {first:>9} {'dead letters':>12}  models not finite")
    with tempfile.TemporaryDirectory() as tmp:
        for spectral in (False, True):
            reference = None
            for e in EXPONENTS:
                key, dead, broken = run(10.0**e, spectral, tmp)
                reference = key if reference is None else reference
                same = "yes" if key == reference else "no"
                print(f"{'1e%d' % e:>7} {str(spectral):>8} {len(key):>6} {same:>9} {dead:>12}  {', '.join(broken) or '-'}")


main()
