"""`python -m alexnet_perf.parity`: does every backend compute what the checkpoint computes?

Every backend of the registry (backends.BACKENDS: PyTorch eager and compiled, fp32 and bf16 + channels-last, the
exported artifacts under TorchScript (optimised for inference), torch.export, AOTInductor, ONNX Runtime CPU, CUDA
and INT8, and OpenVINO fp32, bf16 and INT8, and the GPU variants, skipped with the reason where they cannot run)
gets the same inputs: the CIFAR-10 test split and 256 images of uniformly random pixels, both normalised once on the
CPU, at batch sizes 1 and 256. The reference is PyTorch eager fp32 on the CPU at batch size 256. Each artifact must
first record the reference checkpoint's sha256 as its source; then fp32 backends must agree with the reference
within an absolute tolerance on every logit and on every top-1 class, and reduced-precision ones (bf16, int8) must
keep the test accuracy within a few tenths of a percentage point and predict the reference's class on nearly every
test image. Anything out of tolerance, and any artifact that cannot be read, is a failed row and makes the command
exit with status 1. The report (ParityReport) is written as parity.json, which report.py reads back, and as
PARITY.md.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import flags
from .artifacts import FILES, OPTIONAL, check_artifact_set, read_source_sha256
from .atomic import check_writable_dir, claim_output, write_text_atomic
from .backend_base import Backend, BackendUnavailable
from .backends import REFERENCE, BackendSpec, backend_specs, create_backend
from .checkpoint import DEFAULT_CHECKPOINT, load_model, sha256_file
from .data import DATA_DIR_HELP, load_cifar10, random_images
from .loader import normalize
from .records import (PARITY_PROG, Inputs, OnRandomImages, OnTestImages, ParityReport, ParityRow, Reference, Tolerances,
                      machine_description, versions)

PROG = PARITY_PROG
DESCRIPTION = ("Check every backend (each exported artifact, and PyTorch on the checkpoint) against the "
               "checkpoint (source sha256, logit differences, top-1 agreement, test accuracy) and write "
               "PARITY.md and parity.json.")
PARITY_PACKAGES = ("torch", "numpy", "onnx", "onnxscript", "onnxruntime", "openvino")  # the versions a report records
BATCH_SIZES = (1, 256)
RANDOM_SEED = 0
FP32_TOP1_AGREEMENT = 1.0  # fp32 backends must predict the reference's class on every input


@dataclass
class ParityConfig:
    checkpoint: str = flags.option(DEFAULT_CHECKPOINT, "the checkpoint the artifacts were exported "
                                                     "from (the reference, loaded weights-only)")
    exports: str = flags.option("exports", "folder holding the artifacts; PARITY.md and parity.json go there too")
    data_dir: str | None = flags.option(None, DATA_DIR_HELP)
    download: bool = flags.option(False, "download CIFAR-10 if it is missing")
    batch1_images: int = flags.option(10_000, "test images also fed one at a time (the first N; the default is the "
                                            "whole split)", at_least=1, at_most=10_000)
    random_inputs: int = flags.option(256, "images of uniformly random pixels fed at every batch size",
                                     at_least=1)
    atol: float = flags.option(1e-4, "largest absolute logit difference allowed for fp32 backends",
                              at_least=0)
    accuracy_tolerance_pp: float = flags.option(0.5, "largest test-accuracy difference from the reference allowed for "
                                                   "reduced-precision backends (bf16, int8), in percentage points",
                                              at_least=0, at_most=100)
    min_agreement_pct: float = flags.option(97.0, "smallest share of test images on which a reduced-precision backend "
                                                "(bf16, int8) must predict the reference's class, in percent: a model "
                                                "computing something else can keep the accuracy, not the predictions",
                                          at_least=0, at_most=100)


def run_logits(backend: Backend, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of backend on every row of inputs (CPU float32), fed batch_size at a time; logits on the CPU.

    Slices of one pre-normalised tensor rather than a DeviceLoader: every backend sees bit-identical inputs,
    whichever device it runs on.
    """
    return torch.cat([backend(inputs[i:i + batch_size].to(backend.device)).cpu()
                      for i in range(0, len(inputs), batch_size)])


def compare(logits: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """The Comparison fields of logits against the reference's."""
    diff = (logits - reference).abs()
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).float().mean())}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def verdict(precision: str, test: OnTestImages, random: OnRandomImages, cfg: ParityConfig) -> list[str]:
    """Why the figures are out of tolerance (empty: within). NaN compares false, so it always fails."""
    failures = []
    if precision != "fp32":
        delta = test.accuracy_delta_pp
        if not abs(delta) <= cfg.accuracy_tolerance_pp:
            failures.append(f"test accuracy differs from the reference by {delta:+.2f} pp "
                            f"(tolerance ±{cfg.accuracy_tolerance_pp:g} pp)")
        if not 100 * test.top1_agreement >= cfg.min_agreement_pct:
            failures.append(f"test inputs: top-1 agreement {100 * test.top1_agreement:.2f}% < "
                            f"{cfg.min_agreement_pct:g}%")
        return failures
    for inputs, figures in (("test", test), ("random", random)):
        if not figures.max_abs_diff <= cfg.atol:
            failures.append(f"{inputs} inputs: max |Δlogit| {figures.max_abs_diff:.3g} > atol {cfg.atol:g}")
        if not figures.top1_agreement >= FP32_TOP1_AGREEMENT:
            failures.append(f"{inputs} inputs: top-1 agreement {100 * figures.top1_agreement:.2f}% < "
                            f"{100 * FP32_TOP1_AGREEMENT:.0f}%")
    return failures


def source_mismatch(spec: BackendSpec, exports: Path, checkpoint: str, sha256: str) -> str | None:
    """Why spec's artifact does not come from the checkpoint (None: it does, spec loads no artifact, or its
    optional artifact was not exported, which building the backend reports as a skip); a damaged file is a
    UserError."""
    if spec.artifact is None or (spec.artifact in OPTIONAL and not (exports / FILES[spec.artifact]).is_file()):
        return None
    recorded = read_source_sha256(exports / FILES[spec.artifact])
    if recorded == sha256:
        return None
    source = f"checkpoint sha256 {recorded[:12]}…" if recorded else "no checkpoint (a randomly initialised network)"
    return f"{FILES[spec.artifact]} was exported from {source}, not from {checkpoint} (sha256 {sha256[:12]}…)"


@dataclass(frozen=True)
class FedInputs:
    """The tensors every backend is fed, and the reference's logits on them."""

    test: torch.Tensor
    labels: torch.Tensor
    random: torch.Tensor
    reference_test: torch.Tensor
    reference_random: torch.Tensor


def measure_row(spec: BackendSpec, backend: Backend, batch_size: int, n: int, data: FedInputs,
                cfg: ParityConfig) -> ParityRow:
    """Feed backend the first n test images and the random ones at batch_size; its row, verdict included."""
    start = time.perf_counter()
    test_logits = run_logits(backend, data.test[:n], batch_size)
    random_logits = run_logits(backend, data.random, batch_size)
    seconds = time.perf_counter() - start
    own, ref = accuracy(test_logits, data.labels[:n]), accuracy(data.reference_test[:n], data.labels[:n])
    test = OnTestImages(**compare(test_logits, data.reference_test[:n]), images=n, accuracy=own,
                       reference_accuracy=ref, accuracy_delta_pp=100 * (own - ref))
    random = OnRandomImages(**compare(random_logits, data.reference_random), inputs=len(data.random))
    is_reference = spec.name == REFERENCE["cpu"] and batch_size == max(BATCH_SIZES)
    failures = [] if is_reference else verdict(spec.precision, test, random, cfg)
    status = "reference" if is_reference else "fail" if failures else "pass"
    return ParityRow(spec.name, spec.precision, str(backend.device), status, batch_size,
                     FILES[spec.artifact] if spec.artifact else None, failures=failures, seconds=seconds,
                     test=test, random=random)


def check_backend(spec: BackendSpec, model: torch.nn.Module, cfg: ParityConfig, sha256: str,
                  data: FedInputs) -> list[ParityRow]:
    """spec's rows: one per batch size, or one skipped or failed row when it cannot run or its file is wrong.

    A damaged artifact may make its runtime raise anything while loading or running; that is its failed row."""
    artifact = FILES[spec.artifact] if spec.artifact else None
    counts = {1: min(cfg.batch1_images, len(data.test)), max(BATCH_SIZES): len(data.test)}
    try:
        mismatch = source_mismatch(spec, Path(cfg.exports), cfg.checkpoint, sha256)
        if mismatch:
            return [ParityRow(spec.name, spec.precision, spec.device, "fail", artifact=artifact, failures=[mismatch])]
        backend = create_backend(spec.name, model, cfg.exports)
        return [measure_row(spec, backend, bs, counts[bs], data, cfg) for bs in BATCH_SIZES]
    except BackendUnavailable as e:
        return [ParityRow(spec.name, spec.precision, spec.device, "skipped", artifact=artifact, reason=str(e))]
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        return [ParityRow(spec.name, spec.precision, spec.device, "fail", artifact=artifact,
                          failures=[f"could not be run: {reason}"])]


def run_parity(cfg: ParityConfig, command: str) -> ParityReport:
    """Check every backend of the registry against the reference; missing files or an unwritable exports folder
    are refused before any work."""
    flags.validate(cfg)  # Python callers get the CLI's range checks too
    check_artifact_set(cfg.exports)
    check_writable_dir(cfg.exports, "--exports")
    model, _ = load_model(cfg.checkpoint)
    sha256 = sha256_file(cfg.checkpoint)
    cifar = load_cifar10(cfg.data_dir, download=cfg.download, test_only=True)
    test = normalize(torch.from_numpy(cifar.test_images), channels_last=False)
    random = normalize(torch.from_numpy(random_images(cfg.random_inputs, RANDOM_SEED)), channels_last=False)
    reference = create_backend(REFERENCE["cpu"], model, cfg.exports)
    data = FedInputs(test, torch.from_numpy(cifar.test_labels), random,
                   run_logits(reference, test, max(BATCH_SIZES)), run_logits(reference, random, max(BATCH_SIZES)))
    rows = [row for spec in backend_specs() for row in check_backend(spec, model, cfg, sha256, data)]
    return ParityReport(
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), machine=machine_description(), command=command,
        versions=versions(PARITY_PACKAGES), checkpoint=str(cfg.checkpoint), checkpoint_sha256=sha256,
        exports=str(cfg.exports),
        reference=Reference(reference.name, str(reference.device), max(BATCH_SIZES),
                            accuracy(data.reference_test, data.labels)),
        inputs=Inputs(len(test), min(cfg.batch1_images, len(test)), cfg.random_inputs, RANDOM_SEED, list(BATCH_SIZES)),
        tolerances=Tolerances(cfg.atol, FP32_TOP1_AGREEMENT, cfg.accuracy_tolerance_pp, cfg.min_agreement_pct / 100),
        results=rows, passed=all(r.status != "fail" for r in rows))


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _table_row(r: ParityRow) -> str:
    t, x = r.test, r.random
    return (f"| {r.backend} ({r.precision}) | {r.batch_size} | {t.images:,} | {t.max_abs_diff:.2e} | "
            f"{t.mean_abs_diff:.2e} | {_pct(t.top1_agreement)} | {_pct(t.accuracy)} | {t.accuracy_delta_pp:+.2f} | "
            f"{x.max_abs_diff:.2e} | {x.mean_abs_diff:.2e} | {_pct(x.top1_agreement)} | "
            f"{'FAIL' if r.status == 'fail' else r.status} |")


def format_markdown(report: ParityReport) -> str:
    """PARITY.md: the conditions, then one table row per backend and batch size."""
    tol, inputs, ref = report.tolerances, report.inputs, report.reference
    lines = [
        "# Export parity",
        "",
        f"Every backend of `alexnet_perf.backends` (the exported artifacts in `{report.exports}/`, and PyTorch eager "
        f"and compiled on the checkpoint) against the checkpoint, on the same inputs: the {inputs.test_images:,} "
        f"CIFAR-10 test images and {inputs.random_inputs} images of uniformly random pixels (seed "
        f"{inputs.random_seed}), all normalised once as `alexnet_perf.data.normalize` does, at batch sizes "
        f"{' and '.join(map(str, inputs.batch_sizes))} (batch size 1: the first {inputs.batch1_test_images:,} test "
        f"images). Differences are taken against the reference's logits for the same images. Each artifact must "
        f"record the checkpoint's sha256 as its source.",
        "",
        f"- **Date:** {report.date}",
        f"- **Machine:** {report.machine}",
        f"- **Command:** `{report.command}`",
        f"- **Checkpoint:** `{report.checkpoint}` (sha256 `{report.checkpoint_sha256}`)",
        "- **Versions:** " + ", ".join(f"{k} {val}" for k, val in report.versions.items()),
        f"- **Reference:** PyTorch {ref.backend} on {ref.device} at batch size {ref.batch_size}; test "
        f"accuracy {_pct(ref.test_accuracy)}",
        f"- **Tolerances:** fp32 backends: max |Δlogit| ≤ {tol.fp32_atol:g} and "
        f"{100 * tol.fp32_top1_agreement:.0f}% top-1 agreement, on test and random inputs. Reduced precision (bf16, "
        f"int8): test accuracy within ±{tol.accuracy_delta_pp:g} pp of the reference on the same images and top-1 "
        f"agreement ≥ {100 * tol.min_top1_agreement:g}% on them (their logit differences are reported, not held to "
        f"the fp32 tolerance).",
        "",
        "| backend | batch | test images | test max \\|Δ\\| | test mean \\|Δ\\| | test top-1 agreement | "
        "test accuracy | Δ accuracy (pp) | random max \\|Δ\\| | random mean \\|Δ\\| | random top-1 agreement | "
        "verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *[_table_row(r) for r in report.results if r.test is not None and r.random is not None],
    ]
    not_run = [f"- `{r.backend}`: " + (f"skipped — {r.reason}" if r.status == "skipped"
                                       else f"FAIL — {'; '.join(r.failures)}")
               for r in report.results if r.batch_size is None]
    lines += ["", *not_run] if not_run else []
    failures = [f"- `{r.backend}`" + (f" batch {r.batch_size}" if r.batch_size else "") + f": {'; '.join(r.failures)}"
                for r in report.results if r.status == "fail"]
    lines += ["", "**Result: every backend is within tolerance.**"] if report.passed else \
        ["", "**Result: FAILED** — out of tolerance:", *failures]
    return "\n".join(lines) + "\n"


def write_report(report: ParityReport, exports: str | Path) -> tuple[Path, Path]:
    json_path, md_path = Path(exports) / "parity.json", Path(exports) / "PARITY.md"
    write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    write_text_atomic(md_path, format_markdown(report))
    return json_path, md_path


def _summary(r: ParityRow) -> str:
    """One line of the console summary."""
    if r.batch_size is None:
        return f"{r.backend}: {r.status} ({r.reason or '; '.join(r.failures)})"
    return (f"{r.backend} batch {r.batch_size}: {r.status} (test max |Δ| {r.test.max_abs_diff:.2e}, top-1 agreement "
            f"{_pct(r.test.top1_agreement)}, accuracy {_pct(r.test.accuracy)})")


def run_and_report(cfg: ParityConfig, command: str) -> int:
    """Run parity, write PARITY.md and parity.json, print the verdict; 0 when every backend is within tolerance.
    Holds the claim on the exports folder meanwhile, so that no export replaces the set it is checking."""
    check_artifact_set(cfg.exports)
    with claim_output(cfg.exports, "--exports"):
        report = run_parity(cfg, command)
        for r in report.results:
            print(_summary(r))
        for path in write_report(report, cfg.exports):
            print(f"wrote {path}")
    if report.passed:
        return 0
    failed = sorted({r.backend + (f" (batch {r.batch_size})" if r.batch_size else "")
                     for r in report.results if r.status == "fail"})
    print(f"parity failed for {', '.join(failed)}; see {Path(cfg.exports) / 'PARITY.md'}", file=sys.stderr)
    return 1


def main(cfg: ParityConfig) -> int:
    return run_and_report(cfg, flags.command_line(PROG, cfg))


if __name__ == "__main__":
    flags.exit_with(flags.run(ParityConfig, main, PROG, DESCRIPTION))
