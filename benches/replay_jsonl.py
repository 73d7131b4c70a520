"""Replays a file of JSON points through `faultline run` (one shard, anomaly events to JSON lines) and returns the
events; shared by the scripts in this folder that replay crafted series (`sentinel-burst.py`, `sustained-shift.py`)."""
import json
import os
import subprocess
import sys


def replay(binary, points, workdir, extra=""):
    """The anomaly events of `points` (a JSON-lines file) replayed by `binary`, with `extra` TOML ahead of the
    config; config and events go to `workdir`."""
    config, events = os.path.join(workdir, "c.toml"), os.path.join(workdir, "anomalies.jsonl")
    with open(config, "w") as f:
        f.write(
            extra
            + f"""[engine]
shards = 1
[source]
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
