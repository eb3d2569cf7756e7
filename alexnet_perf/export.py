"""`python -m alexnet_perf.export`: write the checkpoint's network as TorchScript, ONNX (fp32 and static INT8), a
torch.export program and that program compiled ahead of time by AOTInductor for the CPU (and for CUDA where a GPU is
available) (the artifact set of artifacts.py), then, from the command line, prove with parity.py that each computes
what the checkpoint computes.

Every artifact takes the same input: float32 (N, 3, 32, 32) RGB, pixels scaled by 1/255 then standardised with
data.MEAN/STD per channel. The preprocessing is not part of any graph; it is recorded in each file's metadata and
documented in exports/README.md. The set changes as a whole: it is written into a staging folder inside --out,
verified, and only then swapped for the previous one (rolled back if a move fails), so a failed, interrupted or
terminated export leaves the previous set (and parity's report on it) as it was. An export holds a claim on --out
while it runs: a second export or parity run into the same folder is refused in one line.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import flags
from .artifacts import (AOTI_CPU, AOTI_CUDA, EXPORTED_PROGRAM, EXPORTER_PACKAGES, FILES, INPUT_NAME, INPUT_SHAPE, INT8,
                        METADATA_FILE, ONNX, OUTPUT_NAME, PARITY_FILES, TORCHSCRIPT, ArtifactMetadata, artifact_paths,
                        missing_artifacts, read_source_sha256, torchscript_deprecation_silenced)
from .atomic import check_writable_dir, claim_output, os_error_in, write_atomic, write_failure
from .checkpoint import DEFAULT_CHECKPOINT, load_model, sha256_file
from .data import CLASSES, DATA_DIR_HELP, load_cifar10, preprocessing
from .errors import UserError
from .isa_probe import remember_vec_isa_checks
from .loader import normalize
from .records import versions

OPSET = 18
EXAMPLE_BATCH = 2  # ≥ 2, so that the exporters keep the batch axis symbolic instead of specialising it to 1
CALIBRATION_BATCH = 64
PROG = "python -m alexnet_perf.export"
DESCRIPTION = ("Export a checkpoint as TorchScript, ONNX, INT8 ONNX, a torch.export program and its "
               "AOTInductor compilation, then check every artifact against it (exports/PARITY.md, "
               "exports/parity.json).")


@dataclass
class ExportConfig:
    checkpoint: str = flags.option(DEFAULT_CHECKPOINT, "checkpoint to export (loaded weights-only)")
    out: str = flags.option("exports", "folder the artifacts, PARITY.md and parity.json are written to")
    data_dir: str | None = flags.option(None, DATA_DIR_HELP + "; INT8 calibration uses its training "
                                            "images, parity its test images")
    download: bool = flags.option(False, "download CIFAR-10 if it is missing")
    calibration_images: int = flags.option(512, "training images (a seeded random sample, never test images) the "
                                              "INT8 model's activation ranges are calibrated on", at_least=1,
                                          at_most=50_000)
    seed: int = flags.option(0, "seed of the calibration sample", at_least=0)
    parity: bool = flags.option(True, "run parity on the artifacts afterwards (exit status 1 if one is out of "
                                    "tolerance)")


def metadata(checkpoint: str | Path, ckpt: dict[str, Any]) -> ArtifactMetadata:
    """What every artifact records: classes, preprocessing, source checkpoint and its sha256, exporter versions."""
    return ArtifactMetadata(classes=list(ckpt.get("classes", CLASSES)), preprocessing=preprocessing(),
                            source_checkpoint=Path(checkpoint).name, source_checkpoint_sha256=sha256_file(checkpoint),
                            source_epoch=str(ckpt.get("epoch")), exporter_versions=versions(EXPORTER_PACKAGES))


def _example() -> torch.Tensor:
    return torch.randn(EXAMPLE_BATCH, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))


def _batch_dim() -> dict[str, dict[int, Any]]:
    return {"x": {0: torch.export.Dim("batch", min=1)}}


def export_torchscript(model: nn.Module, path: Path, meta: dict[str, str]) -> None:
    """Traced and frozen TorchScript; the metadata travels as the extra file METADATA_FILE."""
    with torchscript_deprecation_silenced():
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(model, _example()))
        write_atomic(path, lambda f: torch.jit.save(frozen, f, _extra_files={METADATA_FILE: json.dumps(meta)}))


def exported_program(model: nn.Module, device: str = "cpu") -> torch.export.ExportedProgram:
    """model (left as it is) exported by torch.export on device, with a dynamic batch axis."""
    if device != "cpu":
        model = copy.deepcopy(model).to(device)
    return torch.export.export(model, (_example().to(device),), dynamic_shapes=_batch_dim())


def export_program(model: nn.Module, path: Path, meta: dict[str, str]) -> None:
    """torch.export program with a dynamic batch axis (TorchScript's successor); loads with torch.export.load."""
    program = exported_program(model)
    write_atomic(path, lambda f: torch.export.save(program, f, extra_files={METADATA_FILE: json.dumps(meta)}))


def aoti_devices() -> dict[str, str]:
    """The AOTInductor artifacts this machine can compile, by kind: the CPU one, and the CUDA one on a GPU."""
    return {AOTI_CPU: "cpu", **({AOTI_CUDA: "cuda"} if torch.cuda.is_available() else {})}


def add_archive_metadata(package: Path, meta: dict[str, str]) -> None:
    """Append meta as <root>/extra/METADATA_FILE to a PT2 archive, where the TorchScript and torch.export archives
    keep it too, so that it is read from the zip without loading the compiled code."""
    with zipfile.ZipFile(package, "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{root}/extra/{METADATA_FILE}", json.dumps(meta))


def export_aoti(model: nn.Module, path: Path, meta: dict[str, str], device: str) -> None:
    """The torch.export program compiled ahead of time by AOTInductor for device, weights frozen into the compiled
    graph, dynamic batch axis; loads with torch._inductor.aoti_load_package. meta goes into the compiled model
    (its get_metadata()) and into the archive (read_metadata)."""
    from torch._inductor import aoti_compile_and_package

    remember_vec_isa_checks()
    program = exported_program(model, device)
    with tempfile.TemporaryDirectory(prefix=".aoti-", dir=path.parent) as tmp:
        package = Path(tmp) / path.name  # the archive's root folder is named after the file
        aoti_compile_and_package(program, package_path=str(package),
                                 inductor_configs={"freezing": True, "aot_inductor.metadata": meta})
        add_archive_metadata(package, meta)
        os.replace(package, path)


def _save_onnx(proto, path: Path, meta: dict[str, str]) -> None:
    """Attach metadata and the input's description, run the full checker, write atomically."""
    import onnx

    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **meta})
    proto.graph.input[0].doc_string = ("float32 (N, 3, 32, 32) RGB: pixels / 255, minus mean, divided by std "
                                       "per channel (metadata 'preprocessing')")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise RuntimeError(f"{path.name} fails onnx.checker: {e}") from e
    write_atomic(path, lambda f: f.write(proto.SerializeToString()))


def export_onnx(model: nn.Module, path: Path, meta: dict[str, str]) -> None:
    """The dynamo-based ONNX exporter at a stated opset, named input/output, dynamic batch axis."""
    program = torch.onnx.export(model, (_example(),), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=_batch_dim(), verbose=False)
    _save_onnx(program.model_proto, path, meta)


def calibration_images(train_images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded random sample of training images, normalised exactly as inference inputs are."""
    if not 1 <= count <= len(train_images):
        raise UserError(f"--calibration-images must be in 1..{len(train_images)}, got {count}")
    picked = np.random.default_rng(seed).choice(len(train_images), size=count, replace=False)
    return normalize(torch.from_numpy(train_images[np.sort(picked)]), channels_last=False).numpy()


def export_int8(onnx_path: Path, path: Path, images: np.ndarray, meta: dict[str, str]) -> None:
    """ONNX Runtime static quantization of the fp32 ONNX model: quant_pre_process, then QDQ with per-channel
    int8 weights and uint8 activations (U8S8), min-max calibrated. u8 activations are what the CPUs' int8 units
    take natively: with s8 ones OpenVINO runs the convolutions in fp32 on an AMX CPU (8× slower at batch 128).
    The weights use 7 bits (reduce_range): CPUs without VNNI (AVX2, early AVX-512) multiply u8 activations by s8
    weights and add the products in pairs in saturating int16, which 8-bit weights overflow (logits off by more than
    1 on an AVX2 CPU, in both ONNX Runtime and OpenVINO); 7-bit weights are computed exactly on every CPU."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter([{INPUT_NAME: images[i:i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(prepared, quantized, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax)
        proto = onnx.load(str(quantized))
    quantization = {"tool": f"onnxruntime {onnxruntime.__version__} quantize_static", "format": "QDQ",
                    "weights": "int8 per channel, 7-bit range", "activations": "uint8 per tensor",
                    "calibration": "MinMax", "calibration_images": f"{len(images)} CIFAR-10 training images"}
    _save_onnx(proto, path, {**meta, "quantization": json.dumps(quantization)})


def check_out(out: Path) -> None:
    """UserError unless out can take a new set: a writable folder in which no artifact or report name is taken by
    anything but a regular file (a folder there would make the swap fail half-way)."""
    check_writable_dir(out, "--out")
    for name in (*FILES.values(), *PARITY_FILES):
        path = out / name
        if path.exists() and not path.is_file():
            raise UserError(f"--out {out}: {path} is not a regular file; move it away so that the set can be "
                            f"replaced")


def run_export(cfg: ExportConfig) -> dict[str, Path]:
    """Write the artifact set into cfg.out; returns their paths by kind. An unusable --out, or one that another
    export or parity run holds, is refused before any work."""
    flags.validate(cfg)  # Python callers get the CLI's range checks too
    out = Path(cfg.out)
    check_out(out)
    with claim_output(out, "--out"):
        model, ckpt = load_model(cfg.checkpoint)
        data = load_cifar10(cfg.data_dir, download=cfg.download)
        images = calibration_images(data.train_images, cfg.calibration_images, cfg.seed)
        return export_all(model, out, images, metadata(cfg.checkpoint, ckpt))


def write_set(model: nn.Module, folder: Path, calibration: np.ndarray, meta: dict[str, str]) -> None:
    """Write the artifacts of model into folder (INT8 calibrated on `calibration`; the CUDA AOTInductor package
    only where a GPU is available)."""
    paths = artifact_paths(folder)
    export_torchscript(model, paths[TORCHSCRIPT], meta)
    export_onnx(model, paths[ONNX], meta)
    export_int8(paths[ONNX], paths[INT8], calibration, meta)
    export_program(model, paths[EXPORTED_PROGRAM], meta)
    for kind, device in aoti_devices().items():
        export_aoti(model, paths[kind], meta, device)


def verify_set(staging: Path, sha256: str) -> None:
    """UserError unless the staged set is whole: every required file there, and each one's metadata readable and
    naming the checkpoint it was exported from."""
    missing = missing_artifacts(staging)
    if missing:
        raise UserError(f"the new set lacks {', '.join(missing)} after writing; the previous set is unchanged")
    for kind, path in artifact_paths(staging).items():
        if path.is_file() and read_source_sha256(path) != sha256:
            raise UserError(f"the new {kind} artifact records another source checkpoint; the previous set is "
                            f"unchanged")


def install_set(staging: Path, out: Path, sha256: str) -> dict[str, Path]:
    """Verify the staged set, then swap it for the previous one; the new paths by kind. The previous artifacts and
    parity's report on them are first moved into a backup folder inside out, then the new files are moved in; if
    any move fails, the new files are taken out and the backup moved back, so that out holds either the whole new
    set (without a report, which would describe other files) or the previous set and report byte for byte."""
    verify_set(staging, sha256)
    try:
        backup = Path(tempfile.mkdtemp(prefix=".previous-", dir=out))
    except OSError as e:
        raise write_failure(out, e) from None
    saved: list[str] = []
    installed: list[Path] = []
    try:
        for name in (*FILES.values(), *PARITY_FILES):
            if (out / name).is_file():
                os.replace(out / name, backup / name)
                saved.append(name)
        for kind, path in artifact_paths(out).items():
            if (staging / FILES[kind]).is_file():
                os.replace(staging / FILES[kind], path)
                installed.append(path)
    except BaseException as e:
        for path in installed:
            path.unlink(missing_ok=True)
        for name in saved:
            os.replace(backup / name, out / name)
        shutil.rmtree(backup, ignore_errors=True)
        if isinstance(e, OSError):
            raise UserError(f"cannot move the new set into {out} ({e.strerror or e}); the previous set and its "
                            f"report are back in place") from None
        raise
    shutil.rmtree(backup, ignore_errors=True)
    return {kind: path for kind, path in artifact_paths(out).items() if path in installed}


def remove_stale_staging(out: Path) -> None:
    """Remove the staging folders of exports into out that were killed before they could clean up (only called
    while holding out's claim, so none of them belongs to a running export)."""
    for stale in out.glob(".staging-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def export_all(model: nn.Module, out: Path, calibration: np.ndarray, meta: ArtifactMetadata) -> dict[str, Path]:
    """Write the artifact set of model into out as a whole (staged inside out, verified, then swapped in); their
    paths by kind. Until every file is written and verified, out is left untouched; a write the machine refuses
    (full disk) is a UserError, and the staging folder is removed whatever happens."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    except OSError as e:
        raise write_failure(out, e) from None
    try:
        try:
            write_set(model, staging, calibration, meta.to_strings())
        except UserError:
            raise
        except Exception as e:
            cause = os_error_in(e)
            if cause is None:
                raise
            raise UserError(f"cannot write the new set into {out} ({cause.strerror or cause}); the previous set is "
                            f"unchanged") from None
        return install_set(staging, out, meta.source_checkpoint_sha256)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(cfg: ExportConfig) -> int:
    """Export, then (unless --no-parity) run parity on the new set."""
    for kind, path in run_export(cfg).items():
        print(f"wrote {path} ({kind}, {path.stat().st_size / 1e6:.2f} MB)")
    if not cfg.parity:
        return 0
    from .parity import ParityConfig, run_and_report

    parity = ParityConfig(checkpoint=cfg.checkpoint, exports=cfg.out, data_dir=cfg.data_dir, download=cfg.download)
    return run_and_report(parity, flags.command_line(PROG, cfg))


if __name__ == "__main__":
    flags.exit_with(flags.run(ExportConfig, main, PROG, DESCRIPTION))
