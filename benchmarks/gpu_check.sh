#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU and torch, run the GPU-only tests and the whole benchmark suite within
# 6 minutes and write everything under OUTDIR:
#   gpu-tests.log              tests/ whose id names cuda or gpu
#   bench.json, bench.log      pytest-benchmark JSON (ms/sample per backend and batch size) and the suite's output
#   RESULTS.md, latency-gpu.png  python -m alexnet_perf.report --label gpu
# Usage: benchmarks/gpu_check.sh OUTDIR      (PYTHON=... picks the interpreter; default python)
# Runs from a plain checkout (the package is put on PYTHONPATH); uses exports/ when it holds the artifacts, else
# the suite exports a random network itself. Exit status: 0 when every step passed, 1 otherwise.
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1" && OUT=$(cd "$1" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
BUDGET_S=360
REPORT_S=30  # kept back for the report
status=0

"$PY" -c '
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
' || exit 1

# Install only what is missing, briefly: an offline machine carries on, and the suite skips what it cannot run.
missing=$("$PY" -c '
import importlib.util
wanted = {"pytest": "pytest", "pytest_benchmark": "pytest-benchmark", "numpy": "numpy", "onnx": "onnx",
          "onnxscript": "onnxscript", "onnxruntime": "onnxruntime", "matplotlib": "matplotlib"}
print(" ".join(pip for module, pip in wanted.items() if importlib.util.find_spec(module) is None))
')
if [ -n "$missing" ]; then
    echo "installing $missing"
    # shellcheck disable=SC2086  # one word per package
    timeout 60 "$PY" -m pip install -q --disable-pip-version-check --retries 0 --timeout 10 $missing \
        || echo "gpu_check: could not install $missing; carrying on without"
fi
"$PY" -c 'import pytest, pytest_benchmark' 2>/dev/null \
    || { echo "gpu_check: pytest and pytest-benchmark are needed and could not be installed" >&2; exit 1; }

echo "== GPU-only tests"
timeout -s INT -k 10 90 "$PY" -m pytest tests -k "cuda or gpu" -p no:cacheprovider -rs >"$OUT/gpu-tests.log" 2>&1
rc=$?
tail -n 5 "$OUT/gpu-tests.log"
case $rc in
    0) ;;
    5) echo "(no GPU-only tests in tests/)" ;;
    *) echo "gpu_check: GPU-only tests failed (exit $rc); see $OUT/gpu-tests.log"; status=1 ;;
esac

# Half a second of timed rounds per case (at least 5 rounds) leaves the budget to compilation. SIGINT at the
# deadline: pytest stops and pytest-benchmark still writes the cases measured so far (GPU ones first).
left=$((BUDGET_S - REPORT_S - SECONDS))
echo "== benchmark suite (${left} s at most)"
timeout -s INT -k 15 "$left" "$PY" -m pytest benchmarks/ --benchmark-only --benchmark-max-time=0.5 \
    --benchmark-json="$OUT/bench.json" -p no:cacheprovider -rs >"$OUT/bench.log" 2>&1
rc=$?
grep -E "^(SKIPPED|FAILED|ERROR)|passed|failed" "$OUT/bench.log" | tail -n 30
if [ $rc -ne 0 ]; then
    echo "gpu_check: the benchmark suite exited with $rc (124: cut at the deadline); see $OUT/bench.log"
    status=1
fi

echo "== report"
if [ -s "$OUT/bench.json" ]; then
    timeout "$REPORT_S" "$PY" -m alexnet_perf.report --benchmark-json "$OUT/bench.json" --label gpu \
        --results "$OUT/RESULTS.md" >"$OUT/report.log" 2>&1 || status=1
    tail -n 3 "$OUT/report.log"
else
    echo "gpu_check: no benchmark JSON was written"
    status=1
fi
echo "gpu_check: done in ${SECONDS} s, exit $status; files in $OUT"
exit $status
