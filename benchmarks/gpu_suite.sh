#!/usr/bin/env bash
# The GPU suite: one command, under 8 minutes on one H100/H200. Run it from anywhere whenever a GPU is lent:
#
#     benchmarks/gpu_suite.sh              # adds one section to docs/benchmarks.md and updates its summary
#     benchmarks/gpu_suite.sh --dry-run    # the same steps on CPU with tiny models, into a temp copy of the page
#
# Steps: (a) the device (nvidia-smi, jax.devices()), (b) the `gpu`-marked tests, (c) attention backends at 197
# and 4,097 tokens (benchmarks/attention_gpu.py; each row first goes through jimm's own selection, the one every
# model call makes, so a backend this GPU cannot run is a `refused: <reason>` row and the spec's list
# `mosaic+triton+xla` names what it chose), (d) images/s, MFU and peak memory of every model in
# benchmarks/gpu_models.py, jimm next to transformers (benchmarks/gpu_throughput.py). Each step has a time
# budget, and a step that fails or runs out of time is named in the page instead of stopping the suite; the
# page is written once, at the end (each script also stops its own children at its budget; `timeout` is only
# the backstop). Environment: PYTHON (default python3) needs jimm's test extras with jax for
# CUDA (`pip install -e '.[test]' 'jax[cuda12]'`; the gpu tests import torch, CPU torch will do); torch with CUDA
# adds the transformers rows. TESTS_S, ATTENTION_S and TOTAL_S (default 120, 100 and 455 seconds) are the
# budgets; the throughput step gets what is left of TOTAL_S. ATTENTION_BACKENDS overrides step (c)'s list.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
DRY=()
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY=(--dry-run)
    export JAX_PLATFORMS=cpu
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--dry-run]" >&2
    exit 2
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"  # jax preallocates 75% by default
START=$SECONDS
OUT="$(mktemp -d -t jimm-gpu-suite-XXXXXX)"
stage() { echo; echo "=== [$((SECONDS - START)) s] $*"; }

stage "(a) device"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
else
    echo "nvidia-smi: not found"
fi
read -r BACKEND DEVICE < <("$PYTHON" - <<'EOF'
import sys

import jax
import jaxlib

print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}; devices {jax.devices()}", file=sys.stderr)
print(jax.default_backend(), jax.devices()[0].device_kind)
EOF
)
echo "device: ${DEVICE:-none} (jax backend ${BACKEND:-none})"
if [[ ${#DRY[@]} -eq 0 && "${BACKEND:-}" != "gpu" ]]; then
    echo "JAX sees no GPU: install jax[cuda12] for $PYTHON, or run $0 --dry-run" >&2
    exit 1
fi

stage "(b) pytest -m gpu"
TESTS_PLATFORM="${JAX_PLATFORMS:-cuda}"  # tests/conftest.py defaults to cpu unless told
mapfile -t GPU_TESTS < <(grep -l "mark.gpu" tests/test_*.py)  # collecting only these files is faster
timeout "${TESTS_S:-120}" env JAX_PLATFORMS="$TESTS_PLATFORM" "$PYTHON" -m pytest "${GPU_TESTS[@]}" -m gpu -q \
    -p no:xdist -o addopts="-ra --strict-markers" 2>&1 | tee "$OUT/tests.log"
TESTS_RC=${PIPESTATUS[0]}
TESTS="$(grep -E '(passed|failed|skipped|error|no tests ran)' "$OUT/tests.log" | tail -1 | tr -d '=' | xargs)"
[[ $TESTS_RC -eq 124 ]] && TESTS="timed out after ${TESTS_S:-120} s (${TESTS:-no summary})"
TESTS_END=$((SECONDS - START))

stage "(c) attention backends"
timeout $((${ATTENTION_S:-100} + 15)) "$PYTHON" benchmarks/attention_gpu.py "${DRY[@]}" \
    --backends "${ATTENTION_BACKENDS:-xla,jax_cudnn,mosaic,triton,mosaic+triton+xla}" \
    --budget-s "${ATTENTION_S:-100}" --fragment "$OUT/attention.json"
ATTENTION_END=$((SECONDS - START))

LEFT=$((${TOTAL_S:-455} - (SECONDS - START)))
((LEFT < 1)) && LEFT=1  # --budget-s 0 would mean no budget
stage "(d) throughput and MFU (budget ${LEFT} s)"
timeout $((LEFT + 15)) "$PYTHON" benchmarks/gpu_throughput.py "${DRY[@]}" --budget-s "$LEFT" \
    --fragment "$OUT/throughput.json"

stage "report"
if [[ ${#DRY[@]} -gt 0 ]]; then
    REPORT="$OUT/benchmarks.md"
    cp docs/benchmarks.md "$REPORT"
    TITLE="GPU suite: dry run on CPU (tiny models, not a measurement)"
else
    REPORT=docs/benchmarks.md
    TITLE="GPU suite: $DEVICE"
fi
NOTES="One run of \`benchmarks/gpu_suite.sh\`. \`pytest -m gpu\`: ${TESTS:-no result}. Seconds from the start: tests \
done at ${TESTS_END}, attention at ${ATTENTION_END}, throughput at $((SECONDS - START))."
"$PYTHON" benchmarks/_report.py --title "$TITLE" --notes "$NOTES" --report "$REPORT" \
    "$OUT/attention.json" "$OUT/throughput.json"
stage "done: $REPORT (logs and fragments in $OUT)"
