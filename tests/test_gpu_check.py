"""benchmarks/gpu_check.sh and the suite's GPU stand-in: every CUDA backend has a CPU counterpart to rehearse it,
the GPU cases run on the CPU with --gpu-stand-in where OpenVINO is not installed (the lent GPU's image has none), and
the script refuses bad usage in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet_perf.backends import backend_specs
from alexnet_perf.recipes import RECIPES

from conftest import benchmark_script

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inference():
    yield from benchmark_script("test_inference")


@pytest.mark.parametrize("spec", backend_specs("cuda"), ids=lambda spec: spec.name)
def test_every_cuda_backend_has_a_cpu_stand_in_of_the_same_precision(inference, spec):
    cpu = inference.stand_in(spec)
    assert cpu.device == "cpu" and cpu.precision == spec.precision
    assert (cpu.artifact is None) == (spec.artifact is None)


def test_cuda_graph_variants_compile_as_the_compiled_ones_on_a_cpu():
    training = next(benchmark_script("test_training"))
    assert training.compile_mode("cuda-graphs", torch.device("cpu")) == training.compile_mode(
        "compiled", torch.device("cpu"))
    assert training.compile_mode("cuda-graphs", torch.device("cuda")) == "reduce-overhead"
    assert training.compile_mode("eager", torch.device("cuda")) is None


def test_gpu_cases_run_on_the_cpu_stand_in_without_openvino(tmp_path):
    """One inference and one recipe case of the GPU selection, untimed, with `import openvino` failing."""
    blocker = tmp_path / "no-openvino" / "openvino"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('openvino is not installed (test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)])}
    cases = ["benchmarks/test_inference.py::test_inference[eager-fp32-cuda-1]",
             f"benchmarks/test_training.py::test_recipe_step_cuda[{sorted(RECIPES)[0]}-eager]"]
    run = subprocess.run([sys.executable, "-m", "pytest", *cases, "--gpu-stand-in", "--benchmark-disable",
                          "-p", "no:cacheprovider", "-q"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 passed" in run.stdout


@pytest.mark.parametrize("args", [["a", "b"], ["--bogus"]])
def test_gpu_check_refuses_bad_usage(args):
    run = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), *args], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 2 and "Usage: benchmarks/gpu_check.sh [--rehearse] [OUTDIR]" in run.stderr
