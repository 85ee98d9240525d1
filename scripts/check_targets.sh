#!/usr/bin/env bash
# Cross-compile jimm's attention backends for H100 and TPU v5e, and check the Pallas kernels' numerics in
# interpret mode, on a CPU-only machine (docs/attention.md, "Checked without the hardware").
#
# Two legs, each in its own cached virtual environment under $JIMM_TARGETS_CACHE (default ~/.cache/jimm-targets):
#   py311: Python 3.11, jax 0.10.2, tokamax 0.0.12, jax-cuda12-pjrt/plugin 0.10.2, libtpu (jax[tpu]'s pin), cuDNN
#   py312: Python 3.12, jax 0.12.0, tokamax 0.0.17, jax-cuda13-pjrt/plugin 0.12.0, libtpu (jax[tpu]'s pin), cuDNN.
#          Not 0.12.1: jax[tpu]==0.12.1 pins libtpu 0.0.53, which the registry does not have.
# Each leg runs `pytest -m targets tests/test_attention_targets.py tests/test_scaling_targets.py` (attention
# backends; the FSDP training step on TPU v5e 2x2 and 8 x H100, docs/scaling.md) and prints its tables; the script exits
# non-zero only when a check fails (or an environment cannot be built). A leg whose Python is missing fails.
#
#   bash scripts/check_targets.sh            # both legs
#   JIMM_TARGETS_LEGS=py311 bash scripts/check_targets.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${JIMM_TARGETS_CACHE:-$HOME/.cache/jimm-targets}"
LEGS="${JIMM_TARGETS_LEGS:-py311 py312}"
mkdir -p "$CACHE"

find_python() {  # $1 = 3.11 or 3.12: pyenv's build, else pythonX.Y on PATH
    local v="$1" p
    for p in "$HOME"/.pyenv/versions/"$v".*/bin/python /root/.pyenv/versions/"$v".*/bin/python "$(command -v "python$v" || true)"; do
        if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
    done
    return 1
}

leg_requirements() {
    case "$1" in
        py311) echo "jax==0.10.2 jaxlib==0.10.2 jax[tpu]==0.10.2 jax-cuda12-pjrt==0.10.2 jax-cuda12-plugin==0.10.2 nvidia-cudnn-cu12 tokamax==0.0.12 flax==0.12.8" ;;
        py312) echo "jax==0.12.0 jaxlib==0.12.0 jax[tpu]==0.12.0 jax-cuda13-pjrt==0.12.0 jax-cuda13-plugin==0.12.0 nvidia-cudnn-cu13 tokamax==0.0.17 flax==0.12.12" ;;
    esac
}

# The pinned stack compiles the full H100 grid (the memory table of docs/attention.md); TPU and the current stack
# compile the shortest and longest sequences, the current stack without xla_chunked (the same XLA code as on the
# pinned stack), and three interpret-mode rows a kernel. The FSDP step: ViT-B/16 (with and without remat) and
# DINOv2-L/14 on the pinned stack, ViT-B/16 on the current one. jax's persistent cache cannot reload executables of
# compile-only devices, so every run compiles everything (2-20 s per ViT-B/16 step for H100, 5-50 s for TPU).
leg_env() {
    case "$1" in
        py311) echo "JIMM_TARGETS_TOKENS=197,257,1025,4097 JIMM_TARGETS_TPU_TOKENS=197,4097 JIMM_TARGETS_NUMERIC_ROWS=3" ;;
        *) echo "JIMM_TARGETS_TOKENS=197,4097 JIMM_TARGETS_TPU_TOKENS=197,4097 JIMM_TARGETS_SKIP=xla_chunked JIMM_TARGETS_NUMERIC_ROWS=3 JIMM_TARGETS_SCALING_MODELS=vit_b16" ;;
    esac
}

leg_dependencies() {  # what the legs install from pyproject: the core dependencies and the tokamax extra only
    python3 -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(sorted(p["dependencies"]), sorted(p["optional-dependencies"]["tokamax"]))' "$REPO/pyproject.toml"
}

setup_leg() {  # build (once) the leg's venv; the stamp records what it was built from
    local leg="$1" version venv python reqs stamp
    version="${leg#py}"; version="${version:0:1}.${version:1}"
    venv="$CACHE/$leg"
    reqs="$(leg_requirements "$leg") pytest"
    stamp="$reqs | $(leg_dependencies | sha256sum | cut -c1-16)"
    if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp" ]; then return 0; fi
    python="$(find_python "$version")" || { echo "check_targets: no Python $version found (pyenv or python$version)" >&2; return 1; }
    echo "check_targets: building $venv ($reqs)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --progress-bar off --upgrade pip
    # jimm's own dependencies from pyproject (the package itself is imported from $REPO/src, not installed)
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --progress-bar off "$REPO[tokamax]" $reqs
    "$venv/bin/pip" uninstall -q -y jimm
    echo "$stamp" > "$venv/.stamp"
}

run_leg() {
    local leg="$1" venv="$CACHE/$1"
    echo "=== leg $leg: $("$venv/bin/python" -c 'import sys, jax, importlib.metadata as m; print("python", sys.version.split()[0], "jax", jax.__version__, "tokamax", m.version("tokamax"), "flax", m.version("flax"))' 2>/dev/null)"
    # XLA's Triton GEMM emitter needs autotuning a compile-only device cannot do: cuBLASLt instead.
    # libtpu takes a machine-wide lock file by default; other processes (another leg, a colleague) may hold it.
    # shellcheck disable=SC2046
    (cd "$REPO" && export $(leg_env "$leg") && JAX_PLATFORMS=cpu PYTHONPATH="$REPO/src" JIMM_TARGETS_LEG="$leg" \
        ALLOW_MULTIPLE_LIBTPU_LOAD=1 \
        XLA_FLAGS="--xla_gpu_enable_triton_gemm=false --xla_gpu_autotune_level=0" \
        TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -m pytest -p no:xdist -p no:cacheprovider -o addopts="" \
        -m targets -q -rs -s tests/test_attention_targets.py tests/test_scaling_targets.py 2>&1) | grep -av --line-buffered -e "Autotuning cache miss" \
        -e "^[IWE]0000 " -e "^WARNING: All log messages" -e "^WARNING: Logging before" -e "cudart_stub" \
        -e "could not determine TPU" -e "^=== Source Location Trace" -e "libtpu_init_utils" -e "^\.\.\.$" \
        -e "Loading cache file" -e "cache file not found"
}

if [ "${1:-}" = "--setup-only" ]; then
    for leg in $LEGS; do setup_leg "$leg"; done
    exit 0
fi

status=0
for leg in $LEGS; do
    if ! setup_leg "$leg"; then status=1; continue; fi
    run_leg "$leg" || status=1
done
exit $status
