#!/usr/bin/env python3
"""A burst of a value orders of magnitude from its series' level, through `faultline run`.

    python3 benches/sentinel-burst.py [FAULTLINE_BINARY [VALUE...]]

Exporters write sentinels for "no reading" (4294967295, `u32::MAX`; 999999999) and unit mix-ups multiply a value by
1e6 or 1e9. This replays one series of one-minute points at 100 with uniform noise of 1 (3,000 points), five points at
VALUE, then 300 points at 100 again, and prints for each VALUE the anomaly events, what the first event of the burst
says the model expected, where its level shift says the series came from, and the events raised on the normal points
after the burst (there should be none: the series is back at its level). The models keep their state in 32-bit
floats, so the level must not be rebuilt from the burst's residual (at 1e9 the residual's rounding step is 64).
"""
import json
import os
import random
import sys
import tempfile

from replay_jsonl import replay

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/faultline"
VALUES = [float(v) for v in sys.argv[2:]] or [1e5, 1e6, 1e7, 1e8, 999_999_999, 4_294_967_295, 1e30]
T0 = 1_767_571_200_000
BEFORE, BURST, AFTER = 3000, 5, 300


def run(value, tmp):
    d = os.path.join(tmp, f"{value:e}")
    os.makedirs(d)
    rng = random.Random(1)
    with open(os.path.join(d, "points.jsonl"), "w") as f:
        for i in range(BEFORE + BURST + AFTER):
            x = value if BEFORE <= i < BEFORE + BURST else 100 + rng.random()
            f.write(json.dumps({"time": T0 + i * 60_000, "service": "svc", "metric": "latency_ms", "value": x}) + "\n")
    events = replay(BIN, os.path.join(d, "points.jsonl"), d)
    after = T0 + (BEFORE + BURST) * 60_000
    burst = [e for e in events if e["time_ms"] < after]
    shift = next((e["evidence"]["level_shift"] for e in burst if e["evidence"].get("level_shift")), None)
    return {
        "value": value,
        "events": len(events),
        "expected": burst[0]["expected"] if burst else None,
        "shift_from": shift["from"] if shift else None,
        "after": sum(1 for e in events if e["time_ms"] >= after),
    }


def main():
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(v, tmp) for v in VALUES]
    print("| value | events | expected (first event of the burst) | level shift from | events after the burst |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        fmt = lambda v: "–" if v is None else f"{v:,.2f}"  # noqa: E731
        value = f"{r['value']:,.0f}" if r["value"] < 1e12 else f"{r['value']:g}"
        print(f"| {value} | {r['events']} | {fmt(r['expected'])} | {fmt(r['shift_from'])} | {r['after']} |")
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
