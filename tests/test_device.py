"""Runtime settings shared by training and benchmarks."""

import subprocess
import sys

import pytest

FAULTS_PER_STEP = """
import resource, sys, torch
from alexnet_perf.device import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    torch.ones(64 * 2**20, dtype=torch.uint8)  # a batch-512 activation's size, written, then freed
for _ in range(10):  # glibc's bins settle after a few (freed blocks merge into one that fits)
    step()
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sorted(faults)[4])  # the median step
"""


def _faults_per_step(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-fault counts and mallopt are glibc/Linux")
def test_keep_freed_memory_stops_large_allocations_faulting_in_fresh_pages_every_step():
    """Without it each 64 MiB allocation is a fresh mmap whose pages fault in again (16,384 4-KiB pages, or 32
    huge pages); with it, once the heap has settled, a freed block is reused with its pages already mapped."""
    kept, faults = _faults_per_step("keep")
    _, default_faults = _faults_per_step("default")
    assert kept == "True"
    assert default_faults >= 16
    assert faults <= 2


def test_gpus_with_only_emulated_bf16_train_in_fp16(monkeypatch):
    """torch.cuda.is_bf16_supported() says True for bf16 emulated in fp32 (pre-Ampere GPUs) unless asked for native
    support only: such a GPU must get fp16 with a GradScaler, and the bf16 inference backends must be refused."""
    import torch

    from alexnet_perf.backend_base import BackendUnavailable
    from alexnet_perf.device import amp_precision
    from alexnet_perf.torch_backends import check_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    cuda = torch.device("cuda", 0)
    assert amp_precision(cuda, True) == "fp16"
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        check_precision("bf16", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_precision(cuda, True) == "bf16"
    assert amp_precision(cuda, False) == "fp32"


@pytest.mark.parametrize("native", [False, True])
def test_cpus_that_only_emulate_bf16_refuse_the_bf16_inference_backends(monkeypatch, native):
    """As on such GPUs (and as OpenVINO does): emulated bf16 is slower than fp32, so it is a skip, not a figure."""
    import torch

    from alexnet_perf import device, torch_backends
    from alexnet_perf.backend_base import BackendUnavailable

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: native)
    cpu = torch.device("cpu")
    torch_backends.check_precision("fp32", cpu)
    if native:
        torch_backends.check_precision("bf16", cpu)
    else:
        with pytest.raises(BackendUnavailable, match="no native bf16"):
            torch_backends.check_precision("bf16", cpu)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_cpus_without_native_bf16_train_in_fp32(monkeypatch, machine):
    """On a CPU without bf16 instructions oneDNN emulates bf16 through fp32, 10× slower than fp32 for the training
    step on an AVX2 CPU: --amp must then mean fp32, and bf16 where the CPU has it."""
    import platform

    import torch

    from alexnet_perf.device import amp_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(platform, "machine", lambda: machine)
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
        assert amp_precision(cpu, True) == ("bf16" if native else "fp32")
        assert amp_precision(cpu, False) == "fp32"


SEED_AND_REPORT = """
import sys, torch
from alexnet_perf.device import seed_everything
seed_everything(0, sys.argv[1] == "deterministic")
print(torch.are_deterministic_algorithms_enabled(), "torch._inductor" in sys.modules)
"""


@pytest.mark.parametrize("mode, expected", [("default", "False False"), ("deterministic", "True True")])
def test_seeding_sets_deterministic_algorithms_and_imports_the_compiler_only_when_asked(mode, expected):
    out = subprocess.run([sys.executable, "-c", SEED_AND_REPORT, mode], capture_output=True, text=True, check=True)
    assert out.stdout.split() == expected.split()
