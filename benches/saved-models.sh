#!/usr/bin/env bash
# Saved models (engine.state-dir): what saving and loading cost. SERIES series send POINTS points each (one series in
# a thousand jumps for its last three); a first run scores the first half and saves its models at the stop, a second
# run loads them and scores the second half, and a third scores the second half cold (an empty state directory:
# every series new, the same save at the stop). Prints the file's size, the save and load times, both second-half
# runs' times, and checks that the restart raised the events one run over the whole input raises. The cost per series
# of saving and of taking a model back, apart from reading JSON: `ensemble/save` and `ensemble/restored` against
# `ensemble/new` in `cargo bench -p faultline-benches --bench ensemble`.
#
#   benches/saved-models.sh [SERIES] [POINTS]     (defaults 100000 and 80)
#
# Environment: MODELS_DIR (default target/saved-models, the generated input and the runs' output).
set -euo pipefail
series=${1:-100000}
points=${2:-80}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
dir=${MODELS_DIR:-$root/target/saved-models}
rm -rf "$dir" && mkdir -p "$dir"
(cd "$root" && cargo build --release --quiet -p faultline-engine --bin faultline)
bin=$root/target/release/faultline

python3 - "$series" "$points" "$dir" <<'PY'
import math, sys
series, points, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t0 = 1_767_571_200_000
files = [open(f"{d}/{n}.jsonl", "w") for n in ("first", "second", "whole")]
for m in range(points):
    t = t0 + m * 60_000
    half = files[0] if m < points // 2 else files[1]
    for s in range(series):
        v = 50 + 10 * math.sin(m / 37 + s) + (s % 7) + (40 if s % 1000 == 0 and m >= points - 3 else 0)
        line = f'{{"time":{t},"service":"svc{s % 200}","metric":"m{s // 200}","value":{v:.3f}}}\n'
        half.write(line)
        files[2].write(line)
PY
echo "input: $series series, $points points each ($((series * points)) points), split in two halves" >&2

run() { # input, state (yes/no), name
    local engine="[engine]\nshards = 1\n"
    [ "$2" = yes ] && engine+="state-dir = \"$dir/state\"\n"
    [ "$2" = cold ] && engine+="state-dir = \"$dir/state-cold\"\n"
    printf "${engine}[source]\nkind = \"jsonl\"\npath = \"$dir/$1.jsonl\"\n[[sinks]]\nkind = \"jsonl\"\npath = \"$dir/out/$3.jsonl\"\n" > "$dir/$3.toml"
    "$bin" --log info run --config "$dir/$3.toml" --metrics-out "$dir/$3.json" 2> "$dir/$3.log" > /dev/null
}
run whole no whole
run first yes first
run second yes resumed
run second cold cold
python3 - "$dir" "$series" <<'PY'
import json, re, sys
d, series = sys.argv[1], int(sys.argv[2])
def field(log, name):
    m = re.search(name + r"=(\d+)", open(f"{d}/{log}.log").read())
    return int(m.group(1)) if m else None
size, save_ms, load_ms = field("first", "bytes"), field("first", "ms"), field("resumed", "ms")
resumed, cold = (json.load(open(f"{d}/{n}.json")) for n in ("resumed", "cold"))
def anomalies(n, after=None):
    out = []
    for l in open(f"{d}/out/{n}.jsonl"):
        e = json.loads(l)
        if e.get("kind") == "anomaly" and (after is None or e["time_ms"] >= after):
            out.append(l)
    # Events of one time come in batch order, and the halves are batched apart from the whole: compare as sets.
    return sorted(out)
second_start = min(json.loads(l)["time"] for l in open(f"{d}/second.jsonl").readlines()[:1])
same = anomalies("resumed") == anomalies("whole", second_start)
print(f"saved file: {size / 2**20:.1f} MiB, {size / series:.0f} bytes a series; save at the stop {save_ms} ms, "
      f"load at the start {load_ms} ms")
print(f"second half, both saving at the stop: resumed {resumed['elapsed_s']:.2f} s ({resumed['series_restored']} "
      f"series took their models back), cold {cold['elapsed_s']:.2f} s (a restored series runs the whole ensemble "
      f"from its first point, a new one its cheaper warm-up)")
print(f"anomaly events after the restart: resumed {len(anomalies('resumed'))}, one run over the whole input "
      f"{len(anomalies('whole', second_start))} (the same: {same}), cold {len(anomalies('cold'))}")
PY
