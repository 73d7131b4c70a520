#!/usr/bin/env python3
"""What an outage leaves behind: is a burst soon after a held shift still caught? Through `faultline run`.

    python3 benches/after-outage.py [FAULTLINE_BINARY [SHIFT_SIGMAS [BURST_SIGMAS]]]

Series of one-minute points at 100 with Gaussian noise of sigma 1 (8,000 points), then SHIFT_SIGMAS (8) higher for 100
points (an outage of an hour and forty minutes), then back at 100; GAP minutes after the outage ends, a burst of three
points BURST_SIGMAS (10) above 100. The same series without the outage is the control. Each noise draw is replayed
three times: as it comes, with an operator's `accept` verdict on each outage's first event (`[detector.feedback]
file`: the series learns nothing until it is back to normal), and stopped 50 minutes into the outage and started again
with the models saved in a state directory (`engine.state-dir`). For each gap, over eight draws,
prints in how many the burst raised an anomaly event, and the mean normal band half-width (upper − expected) of the
burst's first event where there is one. A model that learned nothing from the outage catches the burst as the
control does.
"""
import json
import os
import random
import sys
import tempfile

from replay_jsonl import replay

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/faultline"
SHIFT = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
BURST = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
GAPS = [30, 60, 120, 240, 480]
SEEDS = range(1, 9)
T0 = 1_767_571_200_000
START, LENGTH, BURST_LEN = 8000, 100, 3
END = START + LENGTH
KINDS = ("outage", "control")
RESTART = START + 50


def write_points(path, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(END + max(GAPS) + 200):
            for g in GAPS:
                for kind in KINDS:
                    x = 100 + rng.gauss(0, 1)
                    if kind == "outage" and START <= i < END:
                        x += SHIFT
                    if END + g <= i < END + g + BURST_LEN:
                        x += BURST
                    f.write(json.dumps({"time": T0 + i * 60_000, "service": f"{kind}-{g}", "metric": "m", "value": x}))
                    f.write("\n")


def split(points, at):
    """`points` cut at minute `at`: the paths of the part before it and the part from it."""
    parts = (points + ".before", points + ".after")
    with open(points) as f, open(parts[0], "w") as before, open(parts[1], "w") as after:
        for line in f:
            (before if (json.loads(line)["time"] - T0) // 60_000 < at else after).write(line)
    return parts


def minute(e):
    return (e["time_ms"] - T0) // 60_000


def burst_bands(events):
    """(gap, kind) → the band half-width of the burst's first event, or None where the burst raised none."""
    out = {}
    for g in GAPS:
        for kind in KINDS:
            at = [e for e in events if e["service"] == f"{kind}-{g}" and 0 <= minute(e) - (END + g) < 2 * BURST_LEN]
            out[(g, kind)] = at[0]["upper"] - at[0]["expected"] if at else None
    return out


def main():
    runs = {"as it comes": [], "first event accepted": [], "restarted inside it": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            d = os.path.join(tmp, str(seed))
            os.makedirs(d)
            points = os.path.join(d, "points.jsonl")
            write_points(points, seed)
            events = replay(BIN, points, d)
            runs["as it comes"].append(burst_bands(events))
            first = {}
            for e in events:
                if e["service"].startswith("outage") and START <= minute(e) < END:
                    first.setdefault(e["service"], e)
            verdicts = os.path.join(d, "feedback.jsonl")
            with open(verdicts, "w") as f:
                f.writelines(json.dumps({"verdict": "accept", "anomaly": e}) + "\n" for e in first.values())
            extra = f'[detector.feedback]\nfile = "{verdicts}"\n'
            runs["first event accepted"].append(burst_bands(replay(BIN, points, d, extra)))
            state = f'state-dir = "{os.path.join(d, "state")}"\n'
            restarted = [e for part in split(points, RESTART) for e in replay(BIN, part, d, engine=state)]
            runs["restarted inside it"].append(burst_bands(restarted))

    def cell(bands):
        caught = [b for b in bands if b is not None]
        return f"{len(caught)} of {len(bands)}" + (f" ({sum(caught) / len(caught):.1f})" if caught else "")

    print(f"Burst of +{BURST:g} sigma after an outage of +{SHIFT:g} sigma held {LENGTH} minutes: draws in which it")
    print("raised an event (mean band half-width of its first event, in the unit; noise sigma is 1)")
    print()
    print(
        "| minutes after the outage | after it | after it, its first event accepted "
        "| after it, restarted 50 minutes into it | no outage |"
    )
    print("|---:|---:|---:|---:|---:|")
    for g in GAPS:
        row = [cell([r[(g, "outage")] for r in runs[k]]) for k in runs]
        row.append(cell([r[(g, "control")] for r in runs["as it comes"]]))
        print(f"| {g} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
