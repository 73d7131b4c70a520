#!/usr/bin/env bash
# Series churn: pods come and go (a rolling deploy every hour), each pod a series of its own. Runs the same replay
# with engine.series-idle off and on, and prints the series held at the end, the series forgotten, the largest
# resident set and the throughput of each.
#
#   benches/series-churn.sh [HOURS] [PODS]     (defaults 24 and 500: 24 generations of 500 pods, each living 2 hours)
#
# Environment: CHURN_DIR (default target/churn, the generated input and the runs' output), CHURN_IDLE (default "1h").
set -euo pipefail
hours=${1:-24}
pods=${2:-500}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
dir=${CHURN_DIR:-$root/target/churn}
idle=${CHURN_IDLE:-1h}
mkdir -p "$dir"
(cd "$root" && cargo build --release --quiet -p faultline-engine --bin faultline)
bin=$root/target/release/faultline

# Minute by minute: every pod alive then (generation g lives from hour g for two hours) sends its latency.
python3 - "$hours" "$pods" > "$dir/points.jsonl" <<'PY'
import math, sys
hours, pods = int(sys.argv[1]), int(sys.argv[2])
t0 = 1_767_571_200_000
out = sys.stdout
for m in range((hours + 1) * 60):
    t = t0 + m * 60_000
    for g in range(max(0, m // 60 - 1), min(hours, m // 60 + 1)):
        for p in range(pods):
            v = 50 + 10 * math.sin(m / 37 + p) + (p % 7)
            out.write(f'{{"time":{t},"service":"svc{p % 20}","metric":"latency","labels":{{"pod":"pod-{g}-{p}"}},"value":{v:.3f}}}\n')
PY
points=$(wc -l < "$dir/points.jsonl")
echo "input: $points points, $((hours * pods)) series, at most $((2 * pods)) reporting at once; series-idle $idle" >&2

for setting in 0s "$idle"; do
    cat > "$dir/run.toml" <<TOML
[engine]
shards = 1
series-idle = "$setting"
[source]
kind = "jsonl"
path = "$dir/points.jsonl"
[[sinks]]
kind = "jsonl"
path = "$dir/out/anomalies.jsonl"
TOML
    /usr/bin/time -f "%M" -o "$dir/rss" "$bin" run --config "$dir/run.toml" --metrics-out "$dir/metrics.json" 2>/dev/null
    python3 - "$setting" "$dir/metrics.json" "$(cat "$dir/rss")" <<'PY'
import json, sys
setting, m, rss_kib = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
print(f"series-idle {setting:>4}: series held at the end {m['series']:>6}, forgotten {m['series_forgotten']:>6}, "
      f"max RSS {rss_kib / 1024:7.1f} MiB, {m['points_per_s'] / 1e6:5.2f} M points/s, anomalies {m['anomalies']}")
PY
done
