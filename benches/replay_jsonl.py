"""Replays a file of JSON points through `faultline run` (one shard, anomaly events to JSON lines) and returns the
events; shared by the scripts in this folder that replay crafted series. Also the business day they replay."""
import json
import os
import subprocess
import sys


def replay(binary, points, workdir, extra="", engine=""):
    """The anomaly events of `points` (a JSON-lines file) replayed by `binary`, with `extra` TOML ahead of the
    config and `engine` TOML lines in its `[engine]` table; config and events go to `workdir`."""
    config, events = os.path.join(workdir, "c.toml"), os.path.join(workdir, "anomalies.jsonl")
    with open(config, "w") as f:
        f.write(
            extra
            + f"""[engine]
shards = 1
{engine}[source]
kind = "jsonl"
path = "{points}"
[[sinks]]
kind = "jsonl"
path = "{events}"
events = ["anomaly"]
"""
        )
    done = subprocess.run([binary, "run", "--config", config], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"faultline run failed on {points}:\n{done.stderr}")
    with open(events) as f:
        return [json.loads(line) for line in f]


def business_day(local, weekends):
    """A request rate on a local business day at local time `local`: 100 at night, a ramp to 1000 from 7 to 9 a.m.,
    1000 through the day, down to 100 from 5 to 8 p.m.; weekends at 30 % of the swing where `weekends`."""
    h = local.hour + local.minute / 60
    if h < 7:
        base = 100
    elif h < 9:
        base = 100 + 450 * (h - 7)
    elif h < 17:
        base = 1000
    elif h < 20:
        base = 1000 - 300 * (h - 17)
    else:
        base = 100
    if weekends and local.weekday() >= 5:
        base = 100 + (base - 100) * 0.3
    return base
