#!/usr/bin/env python3
"""A new series' first week: how many events its learning costs, and what a warm-up setting changes. Through
`faultline run`.

    python3 benches/new-series.py [FAULTLINE_BINARY]

A service that appears on 2026-02-02 with a request rate on New York's business day (100 at night, ramps to 1000 from
7 to 9 a.m. and back from 5 to 8 p.m., 3 % Gaussian noise, 5-minute points, every day a working day), profiles on
New York's clock; on day 5 at 2 p.m. the requests surge to 160 % for an hour. Replayed with the defaults (the learned
model may raise events after `detector.warmup-points` = 60 points, five hours), with `warmup-points` = 864 for every
series (three days), and with 864 in a `[[detector.overrides]]` entry for this metric only (the models learn as
before, only their events wait); prints the anomaly events per day and stage, and those in the surge's hour (and 10
minutes), over four noise draws.
"""
import datetime
import json
import os
import random
import sys
import tempfile
from zoneinfo import ZoneInfo

from replay_jsonl import business_day, replay

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/faultline"
NEW_YORK = ZoneInfo("America/New_York")
START = datetime.datetime(2026, 2, 2, 5, tzinfo=datetime.timezone.utc)
SURGE = START + datetime.timedelta(days=5, hours=14)
DAYS = 7
ZONE = '[detector.seasonal]\ntimezone = "America/New_York"\n'
SETTINGS = {
    "defaults": "",
    "warmup-points = 864": "[detector]\nwarmup-points = 864\n",
    "override warmup-points = 864": '[[detector.overrides]]\nmetric = "requests"\nwarmup-points = 864\n',
}


def write_points(path, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(DAYS * 288):
            t = START + datetime.timedelta(minutes=5 * i)
            x = business_day(t.astimezone(NEW_YORK), False) * (1 + rng.gauss(0, 0.03))
            if SURGE <= t < SURGE + datetime.timedelta(hours=1):
                x *= 1.6
            f.write(json.dumps({"time": int(t.timestamp() * 1000), "service": "shop", "metric": "requests", "value": x}))
            f.write("\n")


def main():
    start_ms, surge_ms = START.timestamp() * 1000, SURGE.timestamp() * 1000
    print("| setting | draw | " + " | ".join(f"day {d}" for d in range(DAYS)) + " | in the surge |")
    print("|---|---:|" + "---:|" * DAYS + "---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, 5):
            points = os.path.join(tmp, f"points-{seed}.jsonl")
            write_points(points, seed)
            for name, extra in SETTINGS.items():
                events = replay(BIN, points, tmp, extra + ZONE)
                cells = []
                for d in range(DAYS):
                    day = [e for e in events if int((e["time_ms"] - start_ms) // 86_400_000) == d]
                    stages = sorted({e["stage"] for e in day})
                    cells.append(f"{len(day)}" + (f" ({', '.join(stages)})" if day else ""))
                surge = sum(1 for e in events if 0 <= e["time_ms"] - surge_ms < 4_200_000)
                print(f"| {name} | {seed} | " + " | ".join(cells) + f" | {surge} |")


if __name__ == "__main__":
    main()
