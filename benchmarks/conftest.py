"""What the benchmark suite shares: the artifacts, the network, the inputs, the measuring, and the JSON's context.

Run it as `pytest benchmarks/ --benchmark-only --benchmark-json=PATH` (plain `python -m pytest` collects tests/
only). Every case warms up explicitly (compilation, cuDNN autotuning, ONNX Runtime's and OpenVINO's first run stay
out of the timings), then runs pedantic rounds sized from the warm call and pytest-benchmark's own
--benchmark-max-time and --benchmark-min-rounds. Each case's extra_info is an alexnet_perf.records.CaseInfo, which
the report reads back: it carries the figure users ask for, ms per sample and samples per second (from the median
round). The JSON also records the command, the artifacts used (a records.TimedArtifacts) and the reason of every
skipped case. `--exports DIR` picks the artifact set to time (default: the repository's exports/).

The GPU cases (marker gpu) run on the device of the `gpu_device` fixture: the GPU, or with --gpu-stand-in the CPU in
place of it (benchmarks/gpu_check.sh --rehearse: every step of the GPU check, where there is no GPU). They load only
the artifacts they need (`gpu_artifacts`), and compiled cases share torch.compile's caches while their input shape
stays the same (`compiled_graphs`), so that no graph is compiled twice.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from alexnet_perf.artifacts import (AOTI_CPU, AOTI_CUDA, EXPORTER_PACKAGES, FILES, ONNX, ArtifactMetadata,
                                    missing_artifacts, present_artifacts, read_source_sha256)
from alexnet_perf.backend_base import WARMUP_CALLS as BACKEND_WARMUP_CALLS
from alexnet_perf.data import CLASSES, preprocessing, random_images
from alexnet_perf.errors import UserError
from alexnet_perf.loader import normalize
from alexnet_perf.model import AlexNetCifar, flops_per_sample
from alexnet_perf.records import CaseInfo, TimedArtifacts, machine_description, versions

EXPORTS = Path(__file__).resolve().parent.parent / "exports"
CALIBRATION_IMAGES = 128  # a stand-in export calibrates on random pixels: the INT8 graph costs the same
WARMUP_CALLS = BACKEND_WARMUP_CALLS + 1  # untimed: the backend's own warm-up, then one call that sizes the rounds
MAX_ROUNDS = 100  # more calls than this per case are grouped into iterations of one round
ARTIFACTS_KEY = pytest.StashKey[dict]()


def random_batch(batch_size: int, device: torch.device) -> torch.Tensor:
    """A normalised float32 NCHW batch on device: what every backend takes."""
    return normalize(torch.from_numpy(random_images(batch_size)), channels_last=False).to(device)


def stand_in_metadata() -> ArtifactMetadata:
    """The metadata of an export of the randomly initialised network."""
    return ArtifactMetadata(classes=list(CLASSES), preprocessing=preprocessing(),
                            source_checkpoint="randomly initialised AlexNetCifar (benchmark stand-in)",
                            source_checkpoint_sha256="", source_epoch="",
                            exporter_versions=versions(EXPORTER_PACKAGES))


def export_random_network(model: torch.nn.Module, folder: Path) -> None:
    """Write the artifact set of model into folder with export.py's own exporters."""
    from alexnet_perf.export import calibration_images, export_all

    export_all(model, folder, calibration_images(random_images(CALIBRATION_IMAGES), CALIBRATION_IMAGES, seed=0),
               stand_in_metadata())


def set_source(folder: Path) -> str | None:
    """The checkpoint sha256 all the artifacts in folder record as their source (None: they disagree, or one is
    unreadable: the report then shows no parity accuracy for them)."""
    try:
        recorded = {read_source_sha256(path) for path in present_artifacts(folder).values()}
    except UserError:
        return None
    return recorded.pop() if len(recorded) == 1 and "" not in recorded else None


@pytest.fixture(scope="session")
def model() -> AlexNetCifar:
    """The network in eval mode, seeded random weights: latency does not depend on the weights' values."""
    torch.manual_seed(0)
    return AlexNetCifar().eval()


@pytest.fixture(scope="session")
def make_images() -> Callable[[int], np.ndarray]:
    """random_images, for the benchmark modules."""
    return random_images


@pytest.fixture(scope="session")
def make_batch() -> Callable[[int, torch.device], torch.Tensor]:
    """random_batch, for the benchmark modules."""
    return random_batch


@pytest.fixture(scope="session")
def gpu_device(request: pytest.FixtureRequest) -> torch.device:
    """Where the GPU cases run: the GPU, or the CPU with --gpu-stand-in; they are skipped where there is neither."""
    if request.config.getoption("gpu_stand_in"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA GPU here")
    return torch.device("cuda")


def gpu_artifact_kinds(device: torch.device) -> list[str]:
    """The artifacts the GPU cases load on device: the AOTInductor package for its type, and the ONNX file where
    ONNX Runtime can serve it there (its CPU provider stands in on the CPU; a GPU needs the CUDA provider)."""
    import onnxruntime

    kinds = [AOTI_CUDA if device.type == "cuda" else AOTI_CPU]
    if device.type == "cpu" or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        kinds.append(ONNX)
    return kinds


@pytest.fixture(scope="session")
def gpu_artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model: AlexNetCifar,
                  gpu_device: torch.device) -> TimedArtifacts:
    """--exports when it holds what the GPU cases load, else a one-off export of only those files of the random
    network (the CUDA AOTInductor package is built on the GPU itself)."""
    from alexnet_perf.export import export_aoti, export_onnx

    exports, kinds = Path(request.config.getoption("exports")), gpu_artifact_kinds(gpu_device)
    if all((exports / FILES[kind]).is_file() for kind in kinds):
        found = TimedArtifacts(str(exports), "exports", set_source(exports))
    else:
        folder = tmp_path_factory.mktemp("gpu-exports")
        meta = stand_in_metadata().to_strings()
        for kind in kinds:
            if kind == ONNX:
                export_onnx(model, folder / FILES[kind], meta)
            else:
                export_aoti(model, folder / FILES[kind], meta, gpu_device.type)
        found = TimedArtifacts(str(folder), "random-init", None)
    request.config.stash[ARTIFACTS_KEY] = asdict(found)
    return found


class CompiledGraphs:
    """torch.compile's caches across cases: reset when a case's input shape differs from the last compiled case's
    (each case then compiles its own static-shape graph, instead of a dynamic-shape one), kept otherwise, so that
    cases compiling the same network at the same shape (recipes with the same step, a CUDA-graph case's CPU
    stand-in) reuse the graph; dynamo's guards recompile whatever does differ."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None

    def prepare(self, shape: tuple[int, ...]) -> None:
        if shape != self.shape:
            torch.compiler.reset()
            self.shape = shape


@pytest.fixture(scope="session")
def compiled_graphs() -> CompiledGraphs:
    return CompiledGraphs()


@pytest.fixture(scope="session")
def artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              model: AlexNetCifar) -> TimedArtifacts:
    """--exports when it holds every required file, else a one-off export of the random network into a temporary
    folder. Requested only by the cases that load an artifact."""
    exports = Path(request.config.getoption("exports"))
    if not missing_artifacts(exports):
        found = TimedArtifacts(str(exports), "exports", set_source(exports))
    else:
        folder = tmp_path_factory.mktemp("exports")
        try:
            export_random_network(model, folder)
        except ImportError as e:
            pytest.skip(f"no artifacts in {exports} and they cannot be exported here ({e})")
        found = TimedArtifacts(str(folder), "random-init", None)
    request.config.stash[ARTIFACTS_KEY] = asdict(found)
    return found


class Measure:
    """Warm up, then time `run` in pedantic rounds; fill the benchmark's group and extra_info."""

    def __init__(self, benchmark, config: pytest.Config) -> None:
        self.benchmark = benchmark
        self.max_time = float(config.getoption("benchmark_max_time"))
        self.min_rounds = int(config.getoption("benchmark_min_rounds"))

    def __call__(self, run: Callable[[], object], *, kind: str, batch_size: int, backend: str,
                 device: torch.device, precision: str, threads: int | None, reference: bool,
                 recipe: str | None = None, images_per_epoch: int | None = None, epochs: int | None = None,
                 tf32: bool | None = None) -> None:
        """run() must finish its work before returning (synchronise on GPUs). reference: the case is the speed-up
        baseline of its kind on its device (PyTorch eager fp32). recipe, images_per_epoch, epochs: for training
        steps, so that the report can state the recipe's time per epoch and of its whole run. tf32: whether fp32
        convolutions and matmuls ran in TF32 (GPU cases)."""
        rounds, iterations = self.min_rounds, 1
        if self.benchmark.enabled:
            for _ in range(WARMUP_CALLS):
                start = time.perf_counter()
                run()
                call = time.perf_counter() - start
            wanted = max(self.min_rounds, math.ceil(self.max_time / call))
            iterations = math.ceil(wanted / MAX_ROUNDS)
            rounds = max(self.min_rounds, math.ceil(self.max_time / (call * iterations)))
        case = CaseInfo(kind=kind, backend=backend, device=str(device), precision=precision, threads=threads,
                        batch_size=batch_size, reference=reference, recipe=recipe,
                        images_per_epoch=images_per_epoch, epochs=epochs, tf32=tf32)
        self.benchmark.group = f"{kind} batch {batch_size}"
        self.benchmark.pedantic(run, rounds=rounds, iterations=iterations)
        if self.benchmark.stats:
            seconds = self.benchmark.stats.stats.median
            case = replace(case, ms_per_sample=1000 * seconds / batch_size,
                           samples_per_s=batch_size / seconds)
        self.benchmark.extra_info.update(asdict(case))


@pytest.fixture
def measure(benchmark, request: pytest.FixtureRequest) -> Measure:
    return Measure(benchmark, request.config)


class SuiteRecorder:
    """Adds what a figure needs to be read and reproduced to --benchmark-json: the command, the machine, the
    versions, the artifacts used, why each skipped case was skipped, and the system's 1-minute load average at the
    start and the end (other work on the machine slows multi-threaded CPU cases disproportionately)."""

    def __init__(self) -> None:
        self.skipped: list[dict[str, str]] = []
        self.load_at_start = os.getloadavg()[0]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple):
            self.skipped.append({"test": report.nodeid.split("::")[-1],
                                 "reason": str(report.longrepr[2]).removeprefix("Skipped: ")})

    def pytest_benchmark_update_machine_info(self, config: pytest.Config, machine_info: dict) -> None:
        machine_info["description"] = machine_description()
        machine_info["versions"] = versions(("torch", "onnxruntime", "openvino", "numpy"))
        machine_info["torch_threads"] = torch.get_num_threads()

    def pytest_benchmark_update_json(self, config: pytest.Config, benchmarks: list, output_json: dict) -> None:
        output_json["command"] = shlex.join(["pytest", *config.invocation_params.args])
        output_json["artifacts"] = config.stash.get(ARTIFACTS_KEY, None)
        output_json["skipped"] = self.skipped
        output_json["flops_per_sample"] = flops_per_sample()
        output_json["load_average"] = {"start": self.load_at_start, "end": os.getloadavg()[0],
                                       "cores": os.cpu_count()}
        output_json["gpu_stand_in"] = bool(config.getoption("gpu_stand_in"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--exports", default=str(EXPORTS), help="folder of the artifact set to time (default: "
                     "%(default)s; when it lacks a file, a randomly initialised network is exported instead)")
    parser.addoption("--gpu-stand-in", action="store_true", help="run the GPU cases on the CPU in place of a GPU, "
                     "each CUDA backend by its CPU counterpart: a rehearsal of benchmarks/gpu_check.sh where there "
                     "is no GPU")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: a benchmark case that runs on a CUDA GPU (skipped where none is usable; "
                            "on the CPU with --gpu-stand-in)")
    config.pluginmanager.register(SuiteRecorder(), "alexnet_perf_benchmark_recorder")
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # autotuned convolutions; the tuning runs in the warm-up


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """GPU cases first: a time-boxed run on a GPU machine (gpu_check.sh) measures them before the CPU ones. Within
    a module, the cases of one batch size run together, so that compiled ones share their graphs (CompiledGraphs)."""
    def order(item: pytest.Item) -> tuple[bool, str, int]:
        params = getattr(item, "callspec", None)
        return (item.get_closest_marker("gpu") is None, str(item.path),
                params.params.get("batch_size", 0) if params else 0)

    items.sort(key=order)
