"""`python -m alexnet_perf.parity`: does every exported artifact compute what the checkpoint computes?

The same inputs (the CIFAR-10 test split, and 256 images of uniformly random pixels, both normalised once on the
CPU) go at batch sizes 1 and 256 through PyTorch eager fp32 (the reference, at batch size 256) and through every
backend of exports/: TorchScript, torch.export, ONNX Runtime CPU, ONNX Runtime CUDA (skipped with the reason
where it cannot run) and the INT8 ONNX model. fp32 backends must agree with the reference within an absolute
tolerance on every logit and on every top-1 class; the INT8 model must keep the test accuracy within a few tenths
of a percentage point. Anything out of tolerance makes the command exit with status 1.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import cli
from .atomic import write_text_atomic
from .backends import (EXPORTED_PROGRAM_FILE, INT8_ONNX_FILE, ONNX_FILE, TORCHSCRIPT_FILE, Backend,
                       BackendUnavailable, eager_backend, exported_program_backend, ort_backend,
                       torchscript_backend)
from .checkpoint import DEFAULT_CHECKPOINT, load_model, sha256_file
from .data import DATA_DIR_HELP, load_cifar10, normalize
from .errors import UserError
from .results import machine_description

PROG = "python -m alexnet_perf.parity"
BATCH_SIZES = (1, 256)
RANDOM_SEED = 0


@dataclass
class ParityConfig:
    checkpoint: str = cli.option(DEFAULT_CHECKPOINT, "the checkpoint the artifacts were exported "
                                                                     "from (the reference, loaded weights-only)")
    exports: str = cli.option("exports", "folder holding the artifacts; PARITY.md and parity.json go there too")
    data_dir: str | None = cli.option(None, DATA_DIR_HELP)
    download: bool = cli.option(False, "download CIFAR-10 if it is missing")
    batch1_images: int = cli.option(10_000, "test images also fed one at a time (the first N; the default is the "
                                            "whole split)")
    random_inputs: int = cli.option(256, "images of uniformly random pixels fed at every batch size")
    atol: float = cli.option(1e-4, "largest absolute logit difference allowed for fp32 backends")
    int8_tolerance_pp: float = cli.option(0.5, "largest test-accuracy difference allowed for the INT8 model, in "
                                               "percentage points")


@dataclass
class Candidate:
    """A backend to check: its name, precision class (fp32 or int8) and how to build it."""

    name: str
    precision: str
    build: Callable[[], Backend]


def candidates(model: torch.nn.Module, exports: Path) -> list[Candidate]:
    return [
        Candidate("eager-fp32", "fp32", lambda: eager_backend(model)),
        Candidate("torchscript", "fp32", lambda: torchscript_backend(exports / TORCHSCRIPT_FILE)),
        Candidate("torch.export", "fp32", lambda: exported_program_backend(exports / EXPORTED_PROGRAM_FILE)),
        Candidate("onnxruntime-cpu", "fp32", lambda: ort_backend(exports / ONNX_FILE, "cpu")),
        Candidate("onnxruntime-cuda", "fp32", lambda: ort_backend(exports / ONNX_FILE, "cuda")),
        Candidate("onnxruntime-int8", "int8", lambda: ort_backend(exports / INT8_ONNX_FILE, "cpu",
                                                                  name="onnxruntime-int8")),
    ]


def run_logits(backend: Backend, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of backend on every row of inputs (CPU float32), fed batch_size at a time; logits on the CPU.

    Slices of one pre-normalised tensor rather than a DeviceLoader: every backend sees bit-identical inputs,
    whichever device it runs on.
    """
    return torch.cat([backend(inputs[i:i + batch_size].to(backend.device)).cpu()
                      for i in range(0, len(inputs), batch_size)])


def compare(logits: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    diff = (logits - reference).abs()
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).float().mean())}


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def verdict(row: dict[str, Any], cfg: ParityConfig) -> list[str]:
    """Why row is out of tolerance (empty: it is within). NaN compares false, so it always fails."""
    failures = []
    if row["precision"] == "int8":
        delta = row["test"]["accuracy_delta_pp"]
        if not abs(delta) <= cfg.int8_tolerance_pp:
            failures.append(f"test accuracy differs from the reference by {delta:+.2f} pp "
                            f"(tolerance ±{cfg.int8_tolerance_pp} pp)")
        return failures
    for inputs in ("test", "random"):
        figures = row[inputs]
        if not figures["max_abs_diff"] <= cfg.atol:
            failures.append(f"{inputs} inputs: max |Δlogit| {figures['max_abs_diff']:.3g} > atol {cfg.atol:g}")
        if not figures["top1_agreement"] == 1.0:
            failures.append(f"{inputs} inputs: top-1 agreement {100 * figures['top1_agreement']:.2f}% < 100%")
    return failures


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    return {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": np.__version__,
            "onnx": onnx.__version__, "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}


def run_parity(cfg: ParityConfig, command: str) -> dict[str, Any]:
    """Check every backend against the reference; the report as a plain dict (what parity.json holds)."""
    if cfg.batch1_images < 1 or cfg.random_inputs < 1:
        raise UserError(f"--batch1-images and --random-inputs must be at least 1, got {cfg.batch1_images} and "
                        f"{cfg.random_inputs}")
    model, _ = load_model(cfg.checkpoint)
    data = load_cifar10(cfg.data_dir, download=cfg.download)
    test = normalize(torch.from_numpy(data.test_images), channels_last=False)
    labels = torch.from_numpy(data.test_labels)
    noise = np.random.default_rng(RANDOM_SEED).integers(0, 256, (cfg.random_inputs, *test.shape[1:]), dtype=np.uint8)
    inputs = {"test": test, "random": normalize(torch.from_numpy(noise), channels_last=False)}
    counts = {1: min(cfg.batch1_images, len(test)), max(BATCH_SIZES): len(test)}

    reference = eager_backend(model)
    ref_logits = {kind: run_logits(reference, x, max(BATCH_SIZES)) for kind, x in inputs.items()}
    ref_accuracy = accuracy(ref_logits["test"], labels)
    rows: list[dict[str, Any]] = []
    for candidate in candidates(model, Path(cfg.exports)):
        try:
            backend = reference if candidate.name == reference.name else candidate.build()
        except BackendUnavailable as e:
            rows.append({"backend": candidate.name, "precision": candidate.precision, "batch_size": None,
                         "status": "skipped", "reason": str(e)})
            continue
        for batch_size in BATCH_SIZES:
            n = counts[batch_size]
            start = time.perf_counter()
            test_logits = run_logits(backend, inputs["test"][:n], batch_size)
            random_logits = run_logits(backend, inputs["random"], batch_size)
            row: dict[str, Any] = {
                "backend": candidate.name, "precision": candidate.precision, "batch_size": batch_size,
                "device": str(backend.device), "seconds": time.perf_counter() - start,
                "test": {"images": n, **compare(test_logits, ref_logits["test"][:n]),
                         "accuracy": accuracy(test_logits, labels[:n]),
                         "reference_accuracy": accuracy(ref_logits["test"][:n], labels[:n])},
                "random": {"inputs": cfg.random_inputs, **compare(random_logits, ref_logits["random"])}}
            row["test"]["accuracy_delta_pp"] = 100 * (row["test"]["accuracy"] - row["test"]["reference_accuracy"])
            row["reference"] = backend is reference and batch_size == max(BATCH_SIZES)
            row["failures"] = [] if row["reference"] else verdict(row, cfg)
            row["status"] = "reference" if row["reference"] else "fail" if row["failures"] else "pass"
            rows.append(row)
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_description(), "command": command,
            "versions": versions(), "checkpoint": str(cfg.checkpoint),
            "checkpoint_sha256": sha256_file(cfg.checkpoint), "exports": str(cfg.exports),
            "reference": {"backend": reference.name, "device": str(reference.device),
                          "batch_size": max(BATCH_SIZES), "test_accuracy": ref_accuracy},
            "inputs": {"test_images": len(test), "batch1_test_images": counts[1], "random_inputs": cfg.random_inputs,
                       "random_seed": RANDOM_SEED, "batch_sizes": list(BATCH_SIZES)},
            "tolerances": {"fp32_atol": cfg.atol, "fp32_top1_agreement": 1.0,
                           "int8_accuracy_delta_pp": cfg.int8_tolerance_pp},
            "results": rows, "passed": all(r["status"] != "fail" for r in rows)}


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def format_markdown(report: dict[str, Any]) -> str:
    """PARITY.md: the conditions, then one table row per backend and batch size."""
    tol, inputs, ref = report["tolerances"], report["inputs"], report["reference"]
    v = report["versions"]
    lines = [
        "# Export parity",
        "",
        f"Every artifact in `{report['exports']}/` against the checkpoint it was exported from, on the same inputs: "
        f"the {inputs['test_images']:,} CIFAR-10 test images and {inputs['random_inputs']} images of uniformly "
        f"random pixels (seed {inputs['random_seed']}), all normalised once as `alexnet_perf.data.normalize` does, "
        f"at batch sizes {' and '.join(map(str, inputs['batch_sizes']))} (batch size 1: the first "
        f"{inputs['batch1_test_images']:,} test images). Differences are taken against the reference's logits for "
        f"the same images.",
        "",
        f"- **Date:** {report['date']}",
        f"- **Machine:** {report['machine']}",
        f"- **Command:** `{report['command']}`",
        f"- **Checkpoint:** `{report['checkpoint']}` (sha256 `{report['checkpoint_sha256']}`)",
        "- **Versions:** " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- **Reference:** PyTorch {ref['backend']} on {ref['device']} at batch size {ref['batch_size']}; test "
        f"accuracy {_pct(ref['test_accuracy'])}",
        f"- **Tolerances:** fp32 backends: max |Δlogit| ≤ {tol['fp32_atol']:g} and "
        f"{100 * tol['fp32_top1_agreement']:.0f}% top-1 agreement, on test and random inputs. INT8: test accuracy "
        f"within ±{tol['int8_accuracy_delta_pp']:g} pp of the reference on the same images (its logit differences "
        f"are reported, not held to the fp32 tolerance).",
        "",
        "| backend | batch | test images | test max \\|Δ\\| | test mean \\|Δ\\| | test top-1 agreement | "
        "test accuracy | Δ accuracy (pp) | random max \\|Δ\\| | random mean \\|Δ\\| | random top-1 agreement | "
        "verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    skipped = []
    for r in report["results"]:
        if r["status"] == "skipped":
            skipped.append(f"- `{r['backend']}`: skipped — {r['reason']}")
            continue
        t, x = r["test"], r["random"]
        lines.append(
            f"| {r['backend']} ({r['precision']}) | {r['batch_size']} | {t['images']:,} | {t['max_abs_diff']:.2e} | "
            f"{t['mean_abs_diff']:.2e} | {_pct(t['top1_agreement'])} | {_pct(t['accuracy'])} | "
            f"{t['accuracy_delta_pp']:+.2f} | {x['max_abs_diff']:.2e} | {x['mean_abs_diff']:.2e} | "
            f"{_pct(x['top1_agreement'])} | {r['status'].upper() if r['status'] == 'fail' else r['status']} |")
    lines += ["", *skipped] if skipped else []
    failures = [f"- `{r['backend']}` batch {r['batch_size']}: {'; '.join(r['failures'])}"
                for r in report["results"] if r["status"] == "fail"]
    lines += ["", "**Result: every backend is within tolerance.**"] if report["passed"] else \
        ["", "**Result: FAILED** — out of tolerance:", *failures]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], exports: str | Path) -> tuple[Path, Path]:
    json_path, md_path = Path(exports) / "parity.json", Path(exports) / "PARITY.md"
    write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_text_atomic(md_path, format_markdown(report))
    return json_path, md_path


def run_and_report(cfg: ParityConfig, command: str) -> int:
    """Run parity, write PARITY.md and parity.json, print the verdict; 0 when every backend is within tolerance."""
    report = run_parity(cfg, command)
    for r in report["results"]:
        if r["status"] == "skipped":
            print(f"{r['backend']}: skipped ({r['reason']})")
        else:
            print(f"{r['backend']} batch {r['batch_size']}: {r['status']} (test max |Δ| "
                  f"{r['test']['max_abs_diff']:.2e}, top-1 agreement {_pct(r['test']['top1_agreement'])}, "
                  f"accuracy {_pct(r['test']['accuracy'])})")
    for path in write_report(report, cfg.exports):
        print(f"wrote {path}")
    if report["passed"]:
        return 0
    failed = sorted({f"{r['backend']} (batch {r['batch_size']})" for r in report["results"] if r["status"] == "fail"})
    print(f"parity failed for {', '.join(failed)}; see {Path(cfg.exports) / 'PARITY.md'}", file=sys.stderr)
    return 1


def main(cfg: ParityConfig) -> int:
    return run_and_report(cfg, cli.command_line(PROG, cfg))


if __name__ == "__main__":
    raise SystemExit(cli.run(ParityConfig, main, PROG,
                             "Check every exported artifact against the checkpoint (logit differences, top-1 "
                             "agreement, test accuracy) and write PARITY.md and parity.json."))
