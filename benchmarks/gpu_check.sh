#!/usr/bin/env bash
# GPU check: one time-boxed run (6 minutes at most) that measures every CUDA path of the project on a lent GPU and
# writes into OUTDIR (default .cache/gpu-check):
#   gpu_check.log   this script's own output: versions, the device, each step and its time
#   bench.json      pytest-benchmark JSON of the GPU cases (ms/sample, samples/s, the skipped cases and why)
#   bench.log       the benchmark run's output
#   RESULTS.md      its RESULTS section (python -m alexnet_perf.report), latency.png its plot, report.log
# The GPU cases, GPU only, GPU-first: inference latency at batch 1, 128 and 1024 of every CUDA backend (eager fp32
# and bf16, compiled, CUDA graphs, AOTInductor, ONNX Runtime CUDA where the provider exists), and each recipe's
# training step (eager, compiled, CUDA graphs) with its time per epoch and the projected time of its run. Cases
# that cannot run (no CUDA provider in ONNX Runtime, ...) are skipped with their reason; OpenVINO is not needed.
# Compiled graphs are shared between cases of one input shape (recipes with the same step compile once), and only
# the artifacts the cases load are exported, on the device (a random network: latency does not depend on the
# weights): nothing needs carrying, and nothing is installed or downloaded.
#
# On the lent GPU machine (nothing carried; the command runs in the repository root, $OUT comes back):
#   benchmarks/gpu_check.sh "$OUT"
# Rehearsal where there is no GPU: the same steps with the CPU in place of the GPU (--gpu-stand-in: each CUDA
# backend rehearsed by its CPU counterpart, CUDA graphs by plain compilation), the same budget and files:
#   PYTHON=/path/to/venv/bin/python3 benchmarks/gpu_check.sh --rehearse [OUTDIR]
# with a virtualenv holding the GPU image's packages (torch 2.11.0, torchvision 0.26.0, onnx 1.23.1, onnxscript
# 0.7.2, onnxruntime 1.30.0, numpy, pytest, pytest-benchmark, pillow, matplotlib, tqdm, tensorboard; no openvino).
#
# Usage: benchmarks/gpu_check.sh [--rehearse] [OUTDIR]   (PYTHON picks the interpreter; default python3)
# Runs from a plain checkout: the package is put on PYTHONPATH, not installed. Exit status: 0 when every case that
# could run was measured and the report written, 1 otherwise (a failed case, the deadline, no GPU), 2 bad usage.
set -uo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
rehearse=0
if [ "${1:-}" = "--rehearse" ]; then rehearse=1; shift; fi
arg=${1:-}
[ $# -le 1 ] && [ "${arg:0:1}" != "-" ] || { usage >&2; exit 2; }
cd "$(dirname "$0")/.." || exit 2
OUT=${1:-.cache/gpu-check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PIP_NO_INDEX=1
PY=${PYTHON:-python3}
BUDGET_S=360
REPORT_S=40  # kept back for the report
exec > >(tee "$OUT/gpu_check.log") 2>&1
tee_pid=$!
trap 'exec >&- 2>&-; wait $tee_pid' EXIT  # the log is complete when the script returns
status=0

if [ $rehearse -eq 1 ]; then  # a CPU is some 100x slower than the GPU: one timed round per case is enough to
    # prove each step, whose figures mean nothing for the GPU anyway
    label=gpu-rehearsal options=(--gpu-stand-in --benchmark-min-rounds=1 --benchmark-max-time=0)
else
    label=gpu options=(--benchmark-max-time=0.5)
fi
"$PY" - "$rehearse" <<'EOF' || exit 1
import importlib.util, platform, sys
import torch
missing = [m for m in ("pytest", "pytest_benchmark", "onnx", "onnxscript", "onnxruntime", "matplotlib")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: {', '.join(missing)} missing from {sys.executable}")
import onnxruntime
print(f"python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__} "
      f"({', '.join(onnxruntime.get_available_providers())}), "
      f"openvino {'present' if importlib.util.find_spec('openvino') else 'absent'}")
if sys.argv[1] == "1":
    print(f"rehearsal: the CPU stands in for the GPU ({torch.get_num_threads()} torch threads)")
elif not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA GPU (--rehearse runs the steps on the CPU)")
else:
    print(f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF

# Half a second of timed rounds per case (at least 5 rounds) leaves the budget to compilation; bench.log ends with
# each case's duration. SIGINT at the deadline: pytest stops and pytest-benchmark still writes the cases measured
# so far.
left=$((BUDGET_S - REPORT_S - SECONDS))
echo "== GPU benchmark cases (${left} s at most)"
timeout -s INT -k 15 "$left" "$PY" -m pytest benchmarks/ -m gpu -k "test_inference or test_recipe_step_cuda" \
    "${options[@]}" --benchmark-only --benchmark-json="$OUT/bench.json" --durations=0 -p no:cacheprovider -rs \
    >"$OUT/bench.log" 2>&1
rc=$?
grep -E "^(SKIPPED|FAILED|ERROR)|passed|failed|error" "$OUT/bench.log" | tail -n 30
if [ $rc -ne 0 ]; then
    echo "gpu_check: the benchmark run exited with $rc (124: cut at the deadline); see $OUT/bench.log"
    status=1
fi
echo "benchmarks done at ${SECONDS} s"

echo "== report"
if [ -s "$OUT/bench.json" ]; then
    timeout "$REPORT_S" "$PY" -m alexnet_perf.report --benchmark-json "$OUT/bench.json" --label "$label" \
        --results "$OUT/RESULTS.md" --plot "$OUT/latency.png" >"$OUT/report.log" 2>&1 || status=1
    tail -n 1 "$OUT/report.log"
else
    echo "gpu_check: no benchmark JSON was written"
    status=1
fi
echo "gpu_check: done in ${SECONDS} s, exit $status; files in $OUT"
exit $status
