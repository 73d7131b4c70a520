#!/usr/bin/env python3
"""Does the weekly profile hold a working week? Through `faultline run`.

    python3 benches/business-week.py [FAULTLINE_BINARY] [WEEK_BINS ...]

One service's request rate every five minutes for eleven weeks from Monday 2026-01-05 (UTC): a business day (100 at
night, a ramp to 1000 from 7 to 9 a.m., down from 5 to 8 p.m.; 3 % Gaussian noise) with weekends at 30 % of the
swing, its hours moved later by 0 to 200 minutes (where the ramps fall against the profile's bins), two noise draws.
Replayed with the day at 96 bins and the week at each of WEEK_BINS (default: 48, 64, 84, 96; `bins = [96, N]`);
prints the anomaly events per week. A week that holds the pattern raises nothing from its third week (it becomes the
season after two); one that does not leaves the day as the season, and every weekend raises events.
"""
import datetime
import json
import os
import random
import sys
import tempfile

from replay_jsonl import business_day, replay

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/faultline"
WEEK_BINS = [int(b) for b in sys.argv[2:]] or [48, 64, 84, 96]
START = datetime.datetime(2026, 1, 5, tzinfo=datetime.timezone.utc)
WEEKS = 11
SHIFTS = [0, 30, 60, 100, 150, 200]
DRAWS = [3, 4]


def write_points(path, shift, seed):
    rng = random.Random(seed)
    t, end = START, START + datetime.timedelta(weeks=WEEKS)
    with open(path, "w") as f:
        while t < end:
            x = business_day(t + datetime.timedelta(minutes=shift), True) * (1 + rng.gauss(0, 0.03))
            f.write(json.dumps({"time": int(t.timestamp() * 1000), "service": "shop", "metric": "requests", "value": x}))
            f.write("\n")
            t += datetime.timedelta(minutes=5)


def main():
    print("| week bins | hours later | draw | " + " | ".join(f"week {w}" for w in range(WEEKS)) + " |")
    print("|---:|---:|---:|" + "---:|" * WEEKS)
    start_ms = START.timestamp() * 1000
    with tempfile.TemporaryDirectory() as tmp:
        for shift in SHIFTS:
            for seed in DRAWS:
                points = os.path.join(tmp, f"points-{shift}-{seed}.jsonl")
                write_points(points, shift, seed)
                for bins in WEEK_BINS:
                    events = replay(BIN, points, tmp, f"[detector.seasonal]\nbins = [96, {bins}]\n")
                    weeks = [0] * WEEKS
                    for e in events:
                        weeks[int((e["time_ms"] - start_ms) // (7 * 86_400_000))] += 1
                    cells = " | ".join(str(n) for n in weeks)
                    print(f"| {bins} | {shift / 60:.1f} | {seed} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
