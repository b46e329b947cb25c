#!/usr/bin/env bash
# One run on the device machine (CUDA GPU): environment, kernel checks, GPU tests, engine-vs-reference
# agreement and `qwen35 bench` on the 0.8B shape. It runs this checkout with the machine's python3
# (torch, triton, transformers there), importing `qwen35` through a symlink; the only installs are
# the wheels carried in .whl/, into a scratch directory.
# Under $OUT (the device tool returns at most 8 files): run.log (every step's output), kernels.json,
# agreement.json, bench.json and summary.txt; the summary is also printed last.
#
#   bash benchmarks/gpu_run.sh                # full run (predicted 6-9 minutes on an H100)
#   STEPS="agreement bench" bash benchmarks/gpu_run.sh     # a subset, e.g. in a second call
#
# The server part of the bench needs fastapi and uvicorn, which the device image lacks: fetch them with
# `bash benchmarks/device_wheels.sh` and carry .whl (run(..., carry=[".whl"])), or the bench reports it
# skipped.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-out}"
STEPS="${STEPS:-env kernels tests agreement bench}"
# The device tool stops a command at 600 s: steps share this deadline, so the summary always prints.
DEADLINE_S="${DEADLINE_S:-570}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
LOGS="$(mktemp -d)"

# Wheels carried in .whl/ (benchmarks/device_wheels.sh fetches them) go into a scratch directory first.
if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/qwen35-site \
        "$ROOT"/.whl/*.whl && export PYTHONPATH="/tmp/qwen35-site${PYTHONPATH:+:$PYTHONPATH}" \
        || echo "installing the carried wheels failed: the server bench and fla-core baseline may be skipped" >&2
fi

# setup.py maps qwen35.<part> onto <repo>/<part>: a symlink named qwen35 does the same without installing.
IMPORT_ROOT="$(mktemp -d)"
ln -s "$ROOT" "$IMPORT_ROOT/qwen35"
export PYTHONPATH="$IMPORT_ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export QWEN35_BENCH_DIR="${QWEN35_BENCH_DIR:-/tmp/qwen35-bench}"
QWEN35=("$PY" -c "from qwen35.launcher.cli import main; main()")

declare -A STATUS
step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $OUT/NAME.log, remember the exit code
    local name=$1 limit=$2; shift 2
    case " $STEPS " in *" $name "*) ;; *) STATUS[$name]="not run"; return 0 ;; esac
    local left=$((DEADLINE_S - SECONDS))
    if (( left < 30 )); then STATUS[$name]="skipped: deadline"; return 0; fi
    (( limit > left )) && limit=$left
    echo "=== $name (at most ${limit} s): $*" >&2
    local start=$SECONDS
    echo "=== $name: $*" >> "$OUT/run.log"
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log" >> "$OUT/run.log"
    local rc=${PIPESTATUS[0]}
    STATUS[$name]="rc=$rc ($((SECONDS - start)) s)"
}

step env 60 bash -c "nvidia-smi; $PY - <<'EOF'
import importlib, torch, triton
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)
print('gpu', torch.cuda.get_device_name(0), torch.cuda.mem_get_info())
for name in ('transformers', 'fla', 'fastapi', 'uvicorn', 'httpx', 'typer', 'safetensors', 'tokenizers', 'jinja2'):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, '__version__', 'present'))
    except ImportError as error:
        print(name, 'MISSING', error)
EOF"

# Kernel checks and timings (the kernel engineer's script): error vs reference in fp32/bf16, GB/s.
step kernels 150 "$PY" "$ROOT/benchmarks/kernels.py" --models 0.8B --json "$OUT/kernels.json"

# GPU-marked tests of the engine: CUDA-graph decode vs eager, the Triton kernel set vs the torch set,
# measured pool sizing and `serve` on CUDA.
step tests 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider "$ROOT/tests/runtime/engine/test_engine.py" \
    "$ROOT/tests/runtime/engine/test_memory_sizing.py"

SHAPE_DIR="$QWEN35_BENCH_DIR/random-0.8b"
if [[ " $STEPS " == *" agreement "* || " $STEPS " == *" bench "* ]]; then
    "$PY" -c "from qwen35.runtime.bench.shapes import write_shape_checkpoint as w; print(w('0.8b', '$SHAPE_DIR'))" \
        >> "$OUT/run.log" 2>&1 || echo "writing the 0.8B shape failed: see run.log" >&2
fi

# The engine on the Triton kernel set vs the torch set, greedy, 256 tokens per prompt, fp32.
step agreement 200 "$PY" "$ROOT/benchmarks/engine_agreement.py" --model "$SHAPE_DIR" --tokens 256 \
    --json "$OUT/agreement.json"

# The bench: ours vs transformers on the 0.8B shape, the HTTP server under Poisson load.
step bench 330 "${QWEN35[@]}" bench --model "$SHAPE_DIR" --device cuda --speculative-tokens 2 --save "$OUT/bench.json"

{
    echo "================ summary ================"
    for name in env kernels tests agreement bench; do
        printf '%-10s %s\n' "$name" "${STATUS[$name]:-not run}"
    done
    [[ -s "$LOGS/kernels.log" ]] && { echo; echo "--- kernels"; grep -v " ms, err " "$LOGS/kernels.log" | tail -n 40; }
    [[ -s "$LOGS/tests.log" ]] && { echo; echo "--- gpu tests"; tail -n 8 "$LOGS/tests.log"; }
    [[ -s "$LOGS/agreement.log" ]] && { echo; echo "--- agreement"; tail -n 4 "$LOGS/agreement.log"; }
    [[ -s "$LOGS/bench.log" ]] && { echo; echo "--- bench"; grep -v "^bench \[" "$LOGS/bench.log" | tail -n 30; }
} | tee "$OUT/summary.txt"
rm -rf "$IMPORT_ROOT" "$LOGS"
