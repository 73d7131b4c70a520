#!/usr/bin/env bash
# Faultline next to River's HalfSpaceTrees and GaussianScorer and PySAD's KNNCAD on NAB, all on one core.
#
#   benches/peers/run.sh DATA_DIR LABELS_FILE [-- extra peers.py options]
#
# e.g. benches/peers/run.sh ../shared/data/nab/data ../shared/data/nab/labels/combined_windows.json
#
# Environment: PEERS_VENV (default target/peers-venv), PEERS_OUT (default target/peers-out, results files),
# PEERS_CPU (default 0, the core everything is pinned to), PYTHON (default python3, used to create the venv).
# Needs Python >= 3.11 (river 0.26 requires it) with venv, pip access to PyPI (first run only), cargo and taskset.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 DATA_DIR LABELS_FILE [-- peers.py options]" >&2
    exit 2
fi
data=$1
labels=$2
shift 2
[[ ${1:-} == "--" ]] && shift
[[ -d $data ]] || { echo "$0: $data is not a directory (NAB's data/)" >&2; exit 2; }
[[ -f $labels ]] || { echo "$0: $labels is not a file (NAB's labels/combined_windows.json)" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${PEERS_VENV:-$root/target/peers-venv}
out=${PEERS_OUT:-$root/target/peers-out}
cpu=${PEERS_CPU:-0}

# Pinned peers; their dependencies (numpy, scipy, scikit-learn, ...) come as pip resolves them.
if ! "$venv/bin/python" -c 'import importlib.metadata as m; assert m.version("river") == "0.26.1" and m.version("pysad") == "0.7.0"' 2>/dev/null; then
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet river==0.26.1 pysad==0.7.0
fi

(cd "$root" && cargo build --release --quiet -p faultline-engine --bin faultline)

echo "versions: $("$venv/bin/python" --version); $("$venv/bin/pip" freeze | grep -Ei '^(river|pysad|numpy|scipy|scikit-learn)==' | tr '\n' ' ')" >&2
echo "faultline: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown); $(rustc --version)" >&2

# One core for everything; numerical libraries must not spawn helper threads either.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1
exec taskset -c "$cpu" "$venv/bin/python" "$here/peers.py" "$data" "$labels" \
    --faultline "$root/target/release/faultline" --out "$out" "$@"
