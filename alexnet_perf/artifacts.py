"""The exported artifact set: what export writes and what the backends, parity and the benchmarks read.

Five files in one folder, and a sixth where the export ran on a machine with a CUDA GPU (OPTIONAL: the AOTInductor
package compiled for CUDA), all taking the same input (float32 (N, 3, 32, 32), named INPUT_NAME in the ONNX graphs,
preprocessed as data.preprocessing() says) and returning float32 logits (N, classes), named OUTPUT_NAME. Each file
carries the same string metadata (ArtifactMetadata): in the ONNX models as metadata_props, in the TorchScript,
torch.export and AOTInductor archives as the extra file metadata.json (the AOTInductor packages also hold it in the
compiled model, returned by its get_metadata()). The source checkpoint's sha256 in it is what ties an artifact to
the checkpoint it was exported from; read_source_sha256 reads it back from any of the formats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError

INPUT_SHAPE = (3, 32, 32)
INPUT_NAME, OUTPUT_NAME = "input", "logits"  # the ONNX graphs' input and output names
TORCHSCRIPT, ONNX, INT8, EXPORTED_PROGRAM = "torchscript", "onnx", "int8", "torch.export"  # the artifact kinds
AOTI_CPU, AOTI_CUDA = "aoti-cpu", "aoti-cuda"  # the torch.export program compiled ahead of time by AOTInductor
FILES = {TORCHSCRIPT: "alexnet_cifar.ts.pt", ONNX: "alexnet_cifar.onnx", INT8: "alexnet_cifar.int8.onnx",
         EXPORTED_PROGRAM: "alexnet_cifar.pt2", AOTI_CPU: "alexnet_cifar.aoti-cpu.pt2",
         AOTI_CUDA: "alexnet_cifar.aoti-cuda.pt2"}
OPTIONAL = frozenset({AOTI_CUDA})  # written only by an export on a machine with a CUDA GPU
METADATA_FILE = "metadata.json"  # the extra file holding the metadata in the TorchScript and torch.export archives
PARITY_FILES = ("PARITY.md", "parity.json")  # parity's report on the set, written beside it
SOURCE_SHA256_KEY = "source_checkpoint_sha256"
EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript")  # their versions are recorded as exporter_versions


@dataclass(frozen=True)
class ArtifactMetadata:
    """What every artifact records about itself, stored as strings (JSON for the structured values)."""

    classes: list[str]
    preprocessing: dict
    source_checkpoint: str  # the checkpoint's file name, or what the network is when it was not a checkpoint
    source_checkpoint_sha256: str  # "" when the network came from no checkpoint (the benchmarks' stand-in)
    source_epoch: str
    exporter_versions: dict[str, str]

    def to_strings(self) -> dict[str, str]:
        """The key/value strings written into each file."""
        return {"classes": json.dumps(self.classes), "preprocessing": json.dumps(self.preprocessing),
                "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "source_checkpoint": self.source_checkpoint,
                SOURCE_SHA256_KEY: self.source_checkpoint_sha256, "source_epoch": self.source_epoch,
                "exporter_versions": json.dumps(self.exporter_versions)}


def artifact_paths(folder: str | Path) -> dict[str, Path]:
    """Every artifact kind's path in folder, optional ones included, whether or not the file is there."""
    return {kind: Path(folder) / name for kind, name in FILES.items()}


def present_artifacts(folder: str | Path) -> dict[str, Path]:
    """The paths of the artifacts that are in folder, by kind."""
    return {kind: path for kind, path in artifact_paths(folder).items() if path.is_file()}


def missing_artifacts(folder: str | Path) -> list[str]:
    """The file names of the required (not OPTIONAL) artifacts that folder lacks."""
    return [path.name for kind, path in artifact_paths(folder).items() if kind not in OPTIONAL and not path.is_file()]


def check_artifact_set(folder: str | Path) -> dict[str, Path]:
    """The paths of the artifacts in folder, or a UserError naming its missing required files and how to write
    them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"exports folder not found: {folder} (write it with `python -m alexnet_perf.export`)")
    missing = missing_artifacts(folder)
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)} (write the set with `python -m alexnet_perf.export "
                        f"--out {folder}`)")
    return present_artifacts(folder)


@contextlib.contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    """TorchScript is deprecated upstream (torch.export is its successor, also exported); it is still shipped for
    runtimes that only load TorchScript, so its FutureWarnings are silenced where this package uses it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _archive_metadata(path: Path) -> dict[str, str]:
    """metadata.json of a TorchScript, torch.export or AOTInductor archive (zips holding it as <root>/extra/...)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_FILE}")]
            if not names:
                raise UserError(f"{path}: holds no {METADATA_FILE} (not written by alexnet_perf.export)")
            meta = json.loads(archive.read(names[0]))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: damaged or not an exported model ({e})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: its {METADATA_FILE} is not a JSON object")
    return meta


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as e:
        raise UserError(f"{path}: damaged or not an ONNX model ({e})") from None
    return {p.key: p.value for p in proto.metadata_props}


def check_external_data(path: str | Path) -> None:
    """UserError if an ONNX model keeps tensor data in files outside its own folder (an absolute path or one
    climbing out with ..): a runtime would read whatever file that names."""
    import onnx

    path = Path(path)
    folder = path.parent.resolve()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable here: the runtime's own load then reports the damage
        return
    attributes = [a for node in proto.graph.node for a in node.attribute]
    tensors = [*proto.graph.initializer, *(a.t for a in attributes if a.HasField("t")),
               *(t for a in attributes for t in a.tensors)]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or target != folder and folder not in target.parents:
            raise UserError(f"{path}: tensor {tensor.name!r} keeps its data in {location!r}, outside the model's "
                            f"folder; refused unread")


def existing_artifact(path: str | Path) -> Path:
    """path, or a UserError saying the exported file is missing and how to write it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported model not found: {path} (write it with `python -m alexnet_perf.export`)")
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata strings an artifact carries, read from any of its formats; a damaged file is a UserError."""
    path = existing_artifact(path)
    return _onnx_metadata(path) if path.suffix == ".onnx" else _archive_metadata(path)


def read_source_sha256(path: str | Path) -> str:
    """The sha256 of the checkpoint the artifact was exported from ("" for one exported from no checkpoint)."""
    meta = read_metadata(path)
    if SOURCE_SHA256_KEY not in meta:
        raise UserError(f"{path}: records no source checkpoint (not written by alexnet_perf.export)")
    return str(meta[SOURCE_SHA256_KEY])


def error_reason(error: BaseException) -> str:
    """The line of an exception's message that says what went wrong: runtimes prefix it with source locations
    (OpenVINO: `Exception from src/inference/src/cpp/core.cpp:84:`, then `Check '...' failed at ...:`), which
    are skipped; a line ending in a colon gets the line after it."""
    location = re.compile(r"^(Exception from |Check .* failed at )?\S+\.(cpp|cc|h|hpp|c):\d+:?$")
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not location.match(ln)] or lines
    if not lines:
        return type(error).__name__
    reason = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")
    return reason[:300]


@contextlib.contextmanager
def runtime_output_held() -> Iterator[None]:
    """Hold what the runtimes print while an artifact loads: Python log records (torch.export logs a whole
    traceback before raising on a damaged .pt2) are dropped, and what native code writes to stderr (OpenVINO's
    frontends log each parser they try on a damaged file) is kept back, then shown if the load succeeds and dropped
    if it fails, where the one-line UserError that follows says what went wrong."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                if not failed:
                    held.seek(0)
                    os.write(2, held.read())
    finally:
        os.close(saved)
        logging.disable(previous)


def load_artifact(path: str | Path, load: Callable[[str], Any]) -> Any:
    """load(path) for an exported file; a missing one, an ONNX file whose external data lies outside its folder,
    or one its runtime cannot read, is a UserError naming it.

    The runtimes raise whatever their parsers meet in a damaged file (RuntimeError, protobuf and zip errors, ONNX
    Runtime's own classes), so any exception of the load itself is taken as a damaged file."""
    path = existing_artifact(path)
    if path.suffix == ".onnx":
        check_external_data(path)
    try:
        with runtime_output_held():
            return load(str(path))
    except Exception as e:
        raise UserError(f"{path}: damaged or not loadable ({error_reason(e)})") from None
