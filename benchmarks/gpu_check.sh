#!/usr/bin/env bash
# One check of a fresh GPU machine, in under 8 minutes: install (a .venv, as .ci/run does), the CUDA tests,
# then a table for the paper recipe (recipes/diving_mtl.yaml, C3D-AVG-MTL) and the best modern one
# (recipes/paper/core_i3d.yaml, CoRe on Inception-I3D) at paper size on rendered dives: clips/s and dives/s
# for training and evaluation, TFLOP/s and MFU against the card's bf16 peak, peak memory, the loader's share
# of the step with 0 / 4 / all CPU workers, and predict latency on a 10 s 720p mp4 (diving_mtl only:
# predict does not serve CoRe's exemplar head).
#
#   bash benchmarks/gpu_check.sh [--no-install] [--cpu-smoke] [--out DIR]
#
# Each section runs under `timeout` with its own limit (below; together 8 minutes at most) and the table
# shows what every section measured, and which failed, even when some did. --cpu-smoke runs every section
# on the CPU at tiny sizes (tests/test_gpu_check.py); --out keeps the rows (results.jsonl) and logs.
set -uo pipefail
cd "$(dirname "$0")/.."

install=1
smoke=()
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) install=0 ;;
        --cpu-smoke) smoke=(--cpu-smoke) ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0" | cut -c3-; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
out="${out:-$(mktemp -d -t aqakit-gpu-check.XXXXXX)}"
mkdir -p "$out"
: > "$out/status.tsv"
: > "$out/results.jsonl"

# section NAME LIMIT COMMAND...: run it under `timeout`, record its exit code, never stop the script
section() {
    local name="$1" limit="$2" start code
    shift 2
    echo "== $name (limit ${limit} s)"
    start=$(date +%s)
    timeout --kill-after=3 "$limit" "$@"
    code=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$limit" "$(( $(date +%s) - start ))" >> "$out/status.tsv"
    [ "$code" -eq 0 ] || echo "== $name FAILED (exit $code)"
}

install() {  # --system-site-packages: keep the machine's own CUDA build of torch where it has one
    python3 -m venv --system-site-packages .venv && . .venv/bin/activate \
        && python -m pip install --quiet --upgrade pip \
        && pip install --quiet -e ".[dev]" ./tests/plugins/aqakit-plugin-toy
}

if [ "$install" -eq 1 ]; then
    section install 115 bash -c "$(declare -f install); install"
    . .venv/bin/activate 2>/dev/null || true
fi
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 AQAKIT_LOAD_PLUGINS="${AQAKIT_LOAD_PLUGINS-aqakit-plugin-toy}"
measure=("$python" benchmarks/gpu_check.py)
where=(--out "$out" "${smoke[@]}")

section prepare 45 "${measure[@]}" prepare "${where[@]}"
section tests 135 bash -o pipefail -c '"$0" -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tee "$1"' \
    "$python" "$out/tests.log"
for recipe in diving_mtl core_i3d; do
    section "train:$recipe" 35 "${measure[@]}" train "$recipe" "${where[@]}"
done
for recipe in diving_mtl core_i3d; do
    section "loader:$recipe" 30 "${measure[@]}" loader "$recipe" "${where[@]}"
done
section predict 30 "${measure[@]}" predict "${where[@]}"
"${measure[@]}" table "${where[@]}"
echo "rows and logs: $out"
