#!/usr/bin/env bash
# Instructions the detector executes per NAB point, in total and by part, counted by valgrind's callgrind.
#
#   bash benches/detector-instructions.sh DATA_DIR LABELS_FILE [FAULTLINE_BINARY]
#   bash benches/detector-instructions.sh ../shared/data/nab/data ../shared/data/nab/labels/combined_windows.json
#
# Wall-clock times on a shared 2-core machine move by 5-10 % between runs; an instruction count does not (the same
# binary on the same input counts the same, whatever else the machine is doing). Use it to compare two builds of the
# detector exactly; time them too (A/B, alternating), since fewer instructions are not always less time.
#
# Counts only `ShardDetector::process_scored` and what it calls (one shard; loading the corpus and scoring are not
# counted). Needs valgrind (`apt-get install valgrind`). The count takes a few seconds after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: detector-instructions.sh DATA_DIR LABELS_FILE [FAULTLINE_BINARY]}
labels=${2:?usage: detector-instructions.sh DATA_DIR LABELS_FILE [FAULTLINE_BINARY]}
bin=${3:-target/release/faultline}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
if [[ $# -lt 3 ]]; then
  cargo build --release --locked -p faultline-engine --bin faultline >&2
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
FAULTLINE__ENGINE__SHARDS=1 valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
  --toggle-collect='*ShardDetector::process_scored*' \
  "$bin" eval nab --data "$data" --labels "$labels" --json >"$out/report.json" 2>"$out/valgrind.log" \
  || { cat "$out/valgrind.log" >&2; exit 1; }
callgrind_annotate --threshold=100 --auto=no "$out/cg" >"$out/annotated.txt" 2>/dev/null
python3 - "$out/report.json" "$out/annotated.txt" <<'EOF'
import json, re, sys
from collections import Counter

rows = json.load(open(sys.argv[1]))["rows"]
parts = Counter()
std = Counter()
total = 0
line = re.compile(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+?):(\S.*?)(?: \[.*\])?$")
for text in open(sys.argv[2]):
    m = line.match(text)
    if not m or "PROGRAM TOTALS" in text:
        continue
    n = int(m.group(1).replace(",", ""))
    path, func = m.group(2), m.group(3)
    file = path.rsplit("/", 1)[-1]
    phase = re.search(r"ShardDetector::(\w+)", func)
    if "SeasonalBank::" in func or "seasonal::lanes::" in func:
        part = "seasonal learning (SeasonalBank: update_round, phases_of, learn; lanes::learn8)"
    elif "Sketch::" in func or "sketch::lanes::" in func:
        part = "rarity sketches (Sketch::observe, widen; lanes::observe8)"
    elif "cusum::lanes::" in func:
        part = "the level-shift CUSUMs' lanes (cusum::lanes::update8)"
    elif "sketch::ln_slice" in func:
        part = "the round's logarithms (sketch::ln_slice)"
    elif "libm" in text or file.startswith(("e_", "w_", "s_")):
        part = "libm (ln, exp)"
    elif "faultline_kernels" in func:
        part = "robust kernel (kernels crate)"
    elif "libc" in text or file.startswith(("memmove", "memset", "memcmp", "memcpy")):
        part = "libc (memcpy, memset)"
    elif phase:
        part = f"ShardDetector::{phase.group(1)} (with what is inlined into it)"
        if path.startswith("/rustc/") or "/rust/deps/" in path or "/.cargo/registry/" in path:
            std["/".join(path.split("/")[-2:])] += n
    else:
        part = "other"
    parts[part] += n
    total += n
print(f"detector instructions per NAB point: {total / rows:.0f} ({rows} points, one shard)")
for part, n in parts.most_common():
    print(f"  {n / rows:7.0f}  {100 * n / total:5.1f} %  {part}")
print("standard library code inlined into the detector's phases, by source file:")
for file, n in std.most_common(8):
    print(f"  {n / rows:7.0f}  {file}")
EOF
