"""The backends that run the exported ONNX files: ONNX Runtime (CPU and CUDA providers) and OpenVINO (CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .artifacts import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, load_artifact
from .backend_base import Backend, BackendUnavailable, target_device
from .errors import UserError

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT: int8 models keep
# their unquantised operations in f32
OPENVINO_PERFORMANCE_HINT = "LATENCY"  # one stream: faster than THROUGHPUT at batch 1 and 128 with one request at a
# time, equal at 1024 (exports/README.md)
OPENVINO_ONE_THREAD_BATCH = {"int8": 2}  # int8 batches up to this size run on one thread, their operators too small
# to share (2 cores: 71 µs a call on one thread, 87 on two at batch 1; 57 against 46 µs an image at 4); bf16 and fp32
# gain from a second thread from batch 1 on
OPENVINO_COPIED_BATCH = 8  # batches up to this size are copied into the request's own input buffer: wrapping a new
# array costs ≈ 10 µs a call, an eighth of a batch-1 call; larger ones are shared, not copied


def ort_session(path: str | Path, device: torch.device | str = "cpu", *, graph_optimization: str = "all",
                intra_op_threads: int = 0, inter_op_threads: int = 0):
    """The one place ONNX Runtime sessions are made: CPU provider, or the CUDA provider on a cuda device.

    graph_optimization: disable|basic|extended|all; thread counts 0 = ONNX Runtime's default. On CUDA, TF32 is off
    (fp32 means fp32), and the session is refused with BackendUnavailable unless the CUDA provider really is its
    first provider (ONNX Runtime would otherwise fall back to the CPU without a word).
    """
    import onnxruntime as ort

    device = target_device(device)
    if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
        raise UserError(f"graph optimisation must be one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}, "
                        f"got {graph_optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, "ORT_DISABLE_ALL" if graph_optimization == "disable"
        else f"ORT_ENABLE_{graph_optimization.upper()}")
    options.intra_op_num_threads, options.inter_op_num_threads = intra_op_threads, inter_op_threads
    if device.type == "cpu":
        providers: list = ["CPUExecutionProvider"]
    elif device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                                     f"(install onnxruntime-gpu)")
        providers = [("CUDAExecutionProvider", {"device_id": device.index, "use_tf32": 0})]
    else:
        raise UserError(f"ONNX Runtime backends run on cpu or cuda, not {device}")
    session = load_artifact(path, lambda p: ort.InferenceSession(p, options, providers=providers))
    if device.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise BackendUnavailable(f"ONNX Runtime could not start its CUDA provider (session providers: "
                                 f"{session.get_providers()}; see its log above for the missing library)")
    return session


class OrtBackend(Backend):
    """An ONNX Runtime session; on CUDA, inputs and outputs stay on the GPU through IOBinding (ONNX Runtime runs on
    its own stream, so torch's stream is synchronised before the run and ONNX Runtime's after it)."""

    def __init__(self, name: str, session, device: torch.device) -> None:
        self.name, self.session, self.device = name, session, device
        self.num_classes = int(session.get_outputs()[0].shape[1])

    def host_threads(self, batch_size: int) -> int | None:
        return self.session.get_session_options().intra_op_num_threads if self.device.type == "cpu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if self.device.type == "cpu":
            return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        logits = torch.empty((x.shape[0], self.num_classes), dtype=torch.float32, device=self.device)
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", self.device.index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", self.device.index, np.float32, tuple(logits.shape),
                            logits.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # x is written on torch's stream, read on ORT's
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return logits


def ort_backend(path: str | Path, device: torch.device | str = "cpu", *, name: str | None = None,
                graph_optimization: str = "all", intra_op_threads: int = 0, inter_op_threads: int = 0) -> OrtBackend:
    """An ONNX file (fp32 or the INT8 one) under ONNX Runtime; name defaults to onnxruntime-<device type>."""
    device = target_device(device)
    session = ort_session(path, device, graph_optimization=graph_optimization, intra_op_threads=intra_op_threads,
                          inter_op_threads=inter_op_threads)
    return OrtBackend(name or f"onnxruntime-{device.type}", session, device)


# --- OpenVINO -------------------------------------------------------------------------------------------------

def _openvino():
    """The openvino module; BackendUnavailable with the reason when it cannot be imported."""
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailable(f"OpenVINO is not importable here ({e}; pip install openvino)") from None
    return openvino


def openvino_config(precision: str, threads: int) -> dict[str, Any]:
    """compile_model's CPU configuration: the precision's inference precision hint (set explicitly: OpenVINO's
    default on a CPU with bf16 is bf16), the latency hint and threads host threads."""
    if precision not in OPENVINO_PRECISIONS:
        raise UserError(f"OpenVINO backends run in {', '.join(OPENVINO_PRECISIONS)}, not {precision!r}")
    return {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "PERFORMANCE_HINT": OPENVINO_PERFORMANCE_HINT, "INFERENCE_NUM_THREADS": threads}


def openvino_threads(precision: str, batch_size: int, threads: int) -> int:
    """One thread for the smallest int8 batches (OPENVINO_ONE_THREAD_BATCH), `threads` otherwise."""
    return 1 if batch_size <= OPENVINO_ONE_THREAD_BATCH.get(precision, 0) else threads


def compile_for_batch(core: Any, model: Any, precision: str, batch_size: int, threads: int,
                      extra: dict[str, Any] | None = None) -> Any:
    """model compiled for the CPU in precision for exactly batch_size images (a fixed shape: a dynamic batch
    dimension costs ≈ 15 µs a call in shape inference and allocation, a fifth of a batch-1 call), on
    openvino_threads(...) threads; extra: more compile_model properties."""
    model = model.clone()
    model.reshape([batch_size, *INPUT_SHAPE])
    config = {**openvino_config(precision, openvino_threads(precision, batch_size, threads)), **(extra or {})}
    return core.compile_model(model, "CPU", config)


def _check_openvino_precision(core: Any, compiled: Any, precision: str) -> None:
    """BackendUnavailable when this CPU cannot run the precision (OpenVINO would silently fall back to f32)."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    needed = {"bf16": "BF16", "int8": "INT8"}.get(precision)
    if needed and needed not in capabilities:
        raise BackendUnavailable(f"this CPU has no {needed} support in OpenVINO (capabilities: "
                                 f"{', '.join(capabilities)})")
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if used != OPENVINO_PRECISIONS[precision]:
        raise BackendUnavailable(f"OpenVINO compiled the {precision} model in {used} on this CPU")


class _Compiled(NamedTuple):
    """One batch size's compiled model, its infer request and the arrays the request reads and writes."""

    model: Any
    request: Any
    input: np.ndarray | None  # None: larger batches are shared with the request, not copied (OPENVINO_COPIED_BATCH)
    output: np.ndarray


class OpenVinoBackend(Backend):
    """An OpenVINO model compiled for the CPU once for each batch size it meets (compile_for_batch), each run through
    one reused infer request (one call at a time) writing into an array of ours, copied out (the next call
    overwrites it)."""

    def __init__(self, name: str, core: Any, model: Any, precision: str, threads: int) -> None:
        self.name, self.device = name, torch.device("cpu")
        self.core, self.model, self.precision, self.threads = core, model, precision, threads
        self.batches: dict[int, _Compiled] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self._compiled(x.shape[0])
        if run.input is not None:
            np.copyto(run.input, x.numpy())
            run.request.infer()
        else:
            run.request.infer({0: x.contiguous().numpy()}, share_inputs=True)
        return torch.from_numpy(run.output.copy())

    def compiled(self, batch_size: int) -> Any:
        """The OpenVINO compiled model for batch_size images (compiled at its first use)."""
        return self._compiled(batch_size).model

    def _compiled(self, batch_size: int) -> _Compiled:
        run = self.batches.get(batch_size)
        if run is None:
            ov = _openvino()
            compiled = compile_for_batch(self.core, self.model, self.precision, batch_size, self.threads)
            request, output = compiled.create_infer_request(), np.empty(compiled.output(0).shape, np.float32)
            request.set_output_tensor(ov.Tensor(output, shared_memory=True))
            inputs = None
            if batch_size <= OPENVINO_COPIED_BATCH:
                inputs = np.empty((batch_size, *INPUT_SHAPE), np.float32)
                request.set_input_tensor(ov.Tensor(inputs, shared_memory=True))
            run = self.batches[batch_size] = _Compiled(compiled, request, inputs, output)
        return run

    def host_threads(self, batch_size: int) -> int:
        return openvino_threads(self.precision, batch_size, self.threads)


def openvino_backend(path: str | Path, precision: str = "fp32") -> OpenVinoBackend:
    """openvino-<precision>: an ONNX file (the fp32 one, or the QDQ INT8 one for precision int8) read by OpenVINO
    and compiled for the CPU with as many threads as torch uses (like compared with like; the smallest int8 batches
    on one), checked by compiling it for one image."""
    ov = _openvino()
    threads = torch.get_num_threads()
    openvino_config(precision, threads)  # an unknown precision: a UserError before any file is read
    core = ov.Core()

    def read_and_compile(file: str) -> OpenVinoBackend:
        backend = OpenVinoBackend(f"openvino-{precision}", core, core.read_model(file), precision, threads)
        backend.compiled(1)
        return backend

    backend = load_artifact(path, read_and_compile)
    _check_openvino_precision(core, backend.compiled(1), precision)
    return backend
