#!/usr/bin/env bash
# One-shot GPU machine check: builds in release, runs the GPU parity tests on the real device (robust and spectral
# residual), then the GPU vs CPU sweep (updates/s by batch size up to 10M, crossover, achieved bandwidth against the
# measured device copy bandwidth), the same sweep for the spectral-residual kernel up to 1M with its crossover and its
# cost per update against the robust kernel's, and the end-to-end pipeline on both backends. Everything lands in $OUT (default: ./gpu-results).
#
#   bash benches/gpu-device.sh            # on an NVIDIA box with a Vulkan driver (e.g. H200)
#
# Targets (issue 6): resident update kernel at >= 10M series reaches >= 50 % of the copy bandwidth; the pipeline on the
# GPU is >= 20x the 2-core CPU pipeline. The script prints both ratios; it does not fail on them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export CARGO_TERM_COLOR=never
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: not available"
  rustc --version
  git rev-parse HEAD 2>/dev/null || true
} | tee "$OUT/machine.txt"

# 1. Parity on the device (robust, spectral, seasonal and SPOT shaders; the detector and the simulator on both
#    backends). FMA contraction on a real driver may break bit-identity: retry tolerant and record it.
if cargo test --release -p faultline-tests --locked -- gpu:: threshold:: --nocapture >"$OUT/parity.log" 2>&1; then
  echo "parity: passed in strict mode (bit-identical where the tests demand it, else within their stated tolerances)" | tee -a "$OUT/summary.txt"
elif FAULTLINE_GPU_PARITY=tolerant cargo test --release -p faultline-tests --locked -- gpu:: threshold:: --nocapture \
  >"$OUT/parity-tolerant.log" 2>&1; then
  echo "parity: passed only in tolerant mode (FMA contraction; see parity.log)" | tee -a "$OUT/summary.txt"
else
  echo "parity: FAILED (see parity.log, parity-tolerant.log)" | tee -a "$OUT/summary.txt"
fi
grep -E "GPU adapter|skipped|test result" "$OUT/parity.log" | head -5 || true

# 2. Sweep 1k..10M (spectral residual: 1k..1M), 2 s per point, plus the pipeline on 1M series on both backends.
cargo run --release -p faultline-benches --bin gpubench --locked -- 10000000 2 1000000 1000000 \
  >"$OUT/gpubench.json" 2>"$OUT/gpubench.log"
cat "$OUT/gpubench.log"
# The 2-core CPU reference of the 20x target: the same pipeline pinned to two cores, two shards.
cargo build --release -p faultline-benches --bin loadgen --locked
taskset -c 0,1 target/release/loadgen 1000000 10 2 >"$OUT/cpu-2core.json"
python3 - "$OUT/gpubench.json" "$OUT/cpu-2core.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
print("adapter:", d["adapter"])
print("crossover batch (gpu end-to-end >= cpu from here up):", d["crossover_batch"])
copy = d["device_copy_bytes_per_s"]
for r in d["rows"]:
    if r["backend"] == "gpu-resident" and r["batch"] >= 10_000_000 and copy:
        print(f"resident update at {r['batch']}: {r['bytes_per_s']/1e12:.2f} TB/s = {100*r['bytes_per_s']/copy:.0f} % of copy "
              f"({copy/1e12:.2f} TB/s); target >= 50 %")
sp = d["spectral"]
print("spectral residual: crossover batch", sp["crossover_batch"], "; cost per update vs robust:", sp["cost_vs_robust"])
for r in sp["rows"]:
    print(f"  spectral {r['backend']:>12} batch {r['batch']:>8}: {r['updates_per_s']:.3e} updates/s")
p = {x["backend"]: x["summary"]["points_per_s"] for x in d["pipeline"]}
cpu2 = json.load(open(sys.argv[2]))["points_per_s"]
if "gpu" in p:
    print(f"pipeline on 1M series: gpu {p['gpu']:.0f} points/s, cpu (all cores) {p.get('cpu', 0):.0f}, "
          f"cpu (2 cores) {cpu2:.0f}: gpu / 2-core cpu = {p['gpu']/cpu2:.1f}x; target >= 20x")
PY
echo "results in $OUT/"
