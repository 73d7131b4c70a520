#!/usr/bin/env python3
"""Seasonal profiles across a daylight-saving change, in UTC and on the service's own clock. Through `faultline run`.

    python3 benches/daylight-saving.py [FAULTLINE_BINARY]

One service's request rate every five minutes for eight weeks before one of New York's clock changes of 2026 and
three after it (forward on 2026-03-08, back on 2026-11-01), following a business day on New York's clock (100 at
night, a ramp to 1000 from 7 to 9 a.m., down from 5 to 8 p.m.; 3 % Gaussian noise): in UTC every ramp comes an hour
earlier (or later) from the change on. Two series: every day a working day,
and working days with weekends at 30 % of the day's swing. Each is replayed with the seasonal profiles in UTC (the
default) and in `America/New_York` (`detector.seasonal.timezone`), with the default profiles (96 bins for the day,
84 for the week) and with the week at 48 bins, the default before the twenty-ninth session (`bins = [96, 48]`);
prints the anomaly events per week, week 0 the one that starts with the change.
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
# The instants of New York's clock changes in 2026 (2 a.m. local), in UTC.
CHANGES = {
    "forward": datetime.datetime(2026, 3, 8, 7, tzinfo=datetime.timezone.utc),
    "back": datetime.datetime(2026, 11, 1, 6, tzinfo=datetime.timezone.utc),
}
WEEKS = range(-4, 3)


def write_points(path, weekends, change):
    rng = random.Random(3)
    t = (change - datetime.timedelta(weeks=8)).replace(hour=0)
    end = change + datetime.timedelta(weeks=3)
    with open(path, "w") as f:
        while t < end:
            x = business_day(t.astimezone(NEW_YORK), weekends) * (1 + rng.gauss(0, 0.03))
            f.write(json.dumps({"time": int(t.timestamp() * 1000), "service": "shop", "metric": "requests", "value": x}))
            f.write("\n")
            t += datetime.timedelta(minutes=5)


def by_week(events, change):
    change_ms = change.timestamp() * 1000
    weeks = [(e["time_ms"] - change_ms) // (7 * 86_400_000) for e in events]
    return [sum(1 for w in weeks if w == k) for k in WEEKS]


def main():
    settings = [
        ("daily and weekly (defaults: 96 and 84 bins)", ""),
        ("the week at 48 bins (the defaults before)", "[detector.seasonal]\nbins = [96, 48]\n"),
    ]
    print("| clocks go | series | profiles | clock | " + " | ".join(f"week {w}" for w in WEEKS) + " |")
    print("|---|---|---|---|" + "---:|" * len(WEEKS))
    with tempfile.TemporaryDirectory() as tmp:
        for direction, change in CHANGES.items():
            for weekends in (False, True):
                points = os.path.join(tmp, f"points-{direction}-{weekends}.jsonl")
                write_points(points, weekends, change)
                series = "working days and weekends" if weekends else "every day a working day"
                for name, extra in settings:
                    for zone in ("UTC", "America/New_York"):
                        toml = extra.replace("[detector.seasonal]\n", "") if extra else ""
                        toml = f'[detector.seasonal]\ntimezone = "{zone}"\n{toml}'
                        counts = by_week(replay(BIN, points, tmp, toml), change)
                        cells = " | ".join(str(c) for c in counts)
                        print(f"| {direction} | {series} | {name} | {zone} | {cells} |")


if __name__ == "__main__":
    main()
