"""`python -m alexnet_perf.report`: turn a benchmark JSON into tables, a plot and a section of a RESULTS.md file.

Reads what `pytest benchmarks/ --benchmark-only --benchmark-json=PATH` wrote (each case's extra_info is a
records.CaseInfo: backend, device, precision, threads, batch size and ms per sample), and exports/parity.json (a
records.ParityReport) when it describes the artifacts that were timed, so that accuracy stands next to latency.
Writes a PNG of ms/sample against batch size (one line per backend, log scales) and replaces its own marked section
of RESULTS.md, leaving the others alone. Output paths are checked before anything is read or drawn.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import flags
from .atomic import check_writable
from .errors import UserError
from .figures import save_figure
from .records import LOCAL_RESULTS, CaseInfo, ParityReport, TimedArtifacts, from_dict, read_json, update_section

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PROG = "python -m alexnet_perf.report"
DESCRIPTION = ("Turn a pytest-benchmark JSON of benchmarks/ into a markdown table (ms/sample, "
               "samples/s, speed-up vs PyTorch eager fp32, parity's test accuracy) and a latency plot, "
               "in a marked section of a RESULTS file (.cache/results/RESULTS.md unless --results "
               "says otherwise).")
_TEST_ID = re.compile(r"^(?P<test>[^\[]+)(?:\[(?P<case>.+?)(?:-(?P<batch>\d+))?\])?$")  # test[case-batch]


@dataclass
class ReportConfig:
    benchmark_json: str = flags.option(".cache/bench/cpu.json", "the JSON written by `pytest benchmarks/ "
                                                             "--benchmark-only --benchmark-json=PATH`")
    label: str = flags.option("cpu", "name of the run (e.g. cpu, h200): titles its RESULTS.md section, which a "
                                   "later report with the same label replaces")
    results: str = flags.option(LOCAL_RESULTS, "markdown file whose section for --label is written or replaced "
                                             "(benchmarks/RESULTS.md updates the project's committed figures)")
    plot: str | None = flags.option(None, "PNG of ms/sample against batch size (default: latency-LABEL.png beside "
                                        "--results)")
    parity: str = flags.option("exports/parity.json", "parity report whose test accuracies are shown when it was made "
                                                    "for the artifacts that were benchmarked")


def _case(bench: Any, path: Path) -> CaseInfo | None:
    """The timed case a benchmark entry describes (None: untimed, or not a case of this suite)."""
    info = bench.get("extra_info") if isinstance(bench, dict) else None
    if not isinstance(info, dict) or info.get("ms_per_sample") is None:
        return None
    try:
        case = from_dict(CaseInfo, info, "extra_info")
    except ValueError as e:
        raise UserError(f"{path}: benchmark {bench.get('name', '?')!r} has a malformed {e}") from None
    impossible = [(name, value) for name, value in (
        ("ms_per_sample", case.ms_per_sample), ("samples_per_s", case.samples_per_s),
        ("batch_size", case.batch_size), ("threads", case.threads), ("images_per_epoch", case.images_per_epoch))
        if value is not None and not (math.isfinite(value) and value > 0)]
    if impossible:
        name, value = impossible[0]
        raise UserError(f"{path}: benchmark {bench.get('name', '?')!r} has extra_info.{name} = {value!r}; timings "
                        f"and counts must be positive finite numbers")
    return case


def load_benchmarks(path: str | Path) -> tuple[dict[str, Any], list[CaseInfo]]:
    """The JSON document and its timed cases; a missing, foreign or malformed file is a UserError."""
    path = Path(path)
    data = read_json(path, f"benchmark JSON not found: {path} (write it with `pytest benchmarks/ --benchmark-only "
                           f"--benchmark-json={path}`)", kind="benchmark JSON", flag="--benchmark-json")
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    cases = [c for c in (_case(b, path) for b in benchmarks or []) if c is not None]
    if not cases:
        raise UserError(f"{path}: no benchmark in it carries ms_per_sample (is it the JSON of `pytest benchmarks/ "
                        f"--benchmark-only --benchmark-json=...`?)")
    return data, cases


def timed_artifacts(data: dict[str, Any], path: str | Path) -> TimedArtifacts | None:
    """The artifact set the benchmarks loaded (None: no case loaded one); a malformed entry is a UserError."""
    if data.get("artifacts") is None:
        return None
    try:
        return from_dict(TimedArtifacts, data["artifacts"], "artifacts")
    except ValueError as e:
        raise UserError(f"{path}: malformed {e}") from None


def speedups(entries: list[CaseInfo]) -> dict[CaseInfo, float]:
    """Reference ms/sample ÷ the entry's, where the reference (PyTorch eager fp32) ran the same kind, device and
    batch size."""
    reference = {(e.kind, e.device, e.batch_size): e.ms_per_sample for e in entries if e.reference}
    return {e: reference[(e.kind, e.device, e.batch_size)] / e.ms_per_sample
            for e in entries if (e.kind, e.device, e.batch_size) in reference}


def parity_accuracies(parity_path: str | Path, artifacts: TimedArtifacts | None) -> tuple[dict[tuple, float], str]:
    """{(backend, device type): test accuracy} from parity.json, and a note saying where they come from or why
    there are none: they are shown only when the benchmarks timed the artifacts parity checked. A damaged
    parity.json is a UserError."""
    path = Path(parity_path)
    if not path.is_file():
        return {}, f"no test accuracy: {path} not found (run `python -m alexnet_perf.export`)"
    if artifacts is None or artifacts.source != "exports" or not artifacts.checkpoint_sha256:
        return {}, ("no test accuracy: the benchmarks did not time one set of artifacts exported from a checkpoint "
                    "(a randomly initialised stand-in, a mixed set, or no artifact at all), so parity's figures do "
                    "not apply")
    parity = ParityReport.read(path)
    if parity.checkpoint_sha256 != artifacts.checkpoint_sha256:
        return {}, f"no test accuracy: {path} was made for another checkpoint than the benchmarked exports"
    batch = parity.reference.batch_size
    accuracies = {(r.backend, r.device.split(":")[0]): r.test.accuracy
                  for r in parity.results if r.test is not None and r.batch_size == batch}
    return accuracies, (f"test accuracy: {path} ({parity.inputs.test_images} test images at batch size {batch}; "
                        f"checkpoint sha256 {parity.checkpoint_sha256[:12]}…); — where parity did not run that "
                        f"backend")


def _ms(v: float) -> str:
    return f"{v:.4f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _table(entries: list[CaseInfo], ups: dict[CaseInfo, float], accuracies: dict[tuple, float] | None,
           unit: str, flops: float | None) -> list[str]:
    head = f"| batch | backend | device | precision | threads | ms/{unit} | {unit}s/s | speed-up vs eager fp32 |"
    rule = "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"
    if flops:
        head, rule = head + " GFLOP/s |", rule + " ---: |"
    if accuracies is not None:
        head, rule = head + " test accuracy |", rule + " ---: |"
    per_epoch = any(e.images_per_epoch for e in entries)
    if per_epoch:
        head, rule = head + " recipe | s/epoch | projected run |", rule + " --- | ---: | ---: |"
    lines = [head, rule]
    for e in sorted(entries, key=lambda e: (e.batch_size, e.device, e.ms_per_sample)):
        up = f"{ups[e]:.2f}×" if e in ups else "—"
        precision = f"{e.precision} (TF32)" if e.tf32 else e.precision
        row = (f"| {e.batch_size} | {e.backend} | {e.device} | {precision} | {e.threads if e.threads else '—'} | "
               f"{_ms(e.ms_per_sample)} | {e.samples_per_s:,.0f} | {up} |")
        if flops:
            row += f" {flops * e.samples_per_s / 1e9:,.0f} |"
        if accuracies is not None:
            acc = accuracies.get((e.backend, e.device.split(":")[0]))
            row += f" {100 * acc:.2f}% |" if acc is not None else " — |"
        if per_epoch:
            seconds = e.images_per_epoch * e.ms_per_sample / 1000 if e.images_per_epoch else None
            run = f"{e.epochs * seconds / 60:.1f} min" if seconds is not None and e.epochs else "—"
            row += f" {e.recipe or '—'} | {f'{seconds:.1f}' if seconds is not None else '—'} | {run} |"
        lines.append(row)
    return lines


def _fastest(entries: list[CaseInfo]) -> str:
    best: dict[tuple[str, int], CaseInfo] = {}
    for e in entries:
        key = (e.device, e.batch_size)
        if key not in best or e.ms_per_sample < best[key].ms_per_sample:
            best[key] = e
    return "; ".join(f"{device} batch {bs}: **{e.backend}** {_ms(e.ms_per_sample)} ms/sample"
                     for (device, bs), e in sorted(best.items()))


def _skipped(skipped: list[dict[str, str]]) -> list[str]:
    """One line per test, reason and set of batch sizes, naming every case skipped so."""
    batches: dict[tuple[str, str, str], list[str]] = defaultdict(list)  # (test, reason, case) -> batch sizes
    for s in skipped:
        m = _TEST_ID.match(s["test"])
        test, case, batch = (m["test"], m["case"] or "", m["batch"] or "") if m else (s["test"], "", "")
        batches[(test, s["reason"], case)].append(batch)
    cases: dict[tuple[str, str, tuple[str, ...]], list[str]] = defaultdict(list)
    for (test, reason, case), found in batches.items():
        cases[(test, reason, tuple(b for b in found if b))].append(case)
    lines = []
    for (test, reason, sizes), names in cases.items():
        named = f"{test}[{', '.join(names)}]" if any(names) else test
        lines.append(f"- `{named}`" + (f" at batch {', '.join(sizes)}" if sizes else "") + f": {reason}")
    return lines


def _when(data: dict[str, Any]) -> str:
    try:
        return datetime.fromisoformat(data["datetime"]).strftime("%Y-%m-%d %H:%M UTC")
    except (KeyError, TypeError, ValueError):
        return "unknown date"


def save_plot(entries: list[CaseInfo], path: str | Path, title: str) -> None:
    """ms/sample against batch size, one line per (backend, device), both axes logarithmic."""
    from matplotlib.ticker import NullLocator

    lines: dict[str, list[CaseInfo]] = defaultdict(list)
    for e in entries:
        lines[f"{e.backend} ({e.device})"].append(e)
    batches = sorted({e.batch_size for e in entries})

    def draw(ax: Axes) -> None:
        for name, points in sorted(lines.items(), key=lambda kv: -max(p.ms_per_sample for p in kv[1])):
            points.sort(key=lambda p: p.batch_size)
            ax.plot([p.batch_size for p in points], [p.ms_per_sample for p in points], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per sample (median)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    save_figure(path, (8, 5.5), draw)


def _shown_folder(folder: str) -> str:
    """A folder as a report may show it: relative to the working directory when inside it, else by its name alone,
    so that no absolute path of the measuring machine reaches a committed file."""
    path = Path(folder).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def _artifacts_line(artifacts: TimedArtifacts | None) -> str:
    if artifacts is None:
        return "none loaded (only backends that need no exported file ran)"
    if artifacts.source != "exports":
        return "a temporary export of a randomly initialised network (exports/ was incomplete; same cost)"
    if not artifacts.checkpoint_sha256:
        return f"`{_shown_folder(artifacts.folder)}` (a mixed set: its files record different source checkpoints)"
    return (f"`{_shown_folder(artifacts.folder)}` (exported from checkpoint sha256 "
            f"{artifacts.checkpoint_sha256[:12]}…)")


def render(cfg: ReportConfig, data: dict[str, Any], entries: list[CaseInfo], artifacts: TimedArtifacts | None,
           accuracies: tuple[dict[tuple, float], str], plot: Path | None) -> str:
    """The RESULTS.md section (without its markers)."""
    info = data.get("machine_info", {})
    machine = info.get("description") or info.get("cpu", {}).get("brand_raw", "unknown machine")
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    source = _artifacts_line(artifacts)
    ups = speedups(entries)
    load = data.get("load_average")
    flops = data.get("flops_per_sample") or {}
    lines = [f"## Benchmarks: {cfg.label}", "",
             f"Measured {_when(data)} on {machine}" + (f"; {versions}" if versions else "") + ".", "",
             f"- **Benchmarks:** `{data.get('command', 'pytest benchmarks/ --benchmark-only')}`",
             f"- **Report:** `{flags.command_line(PROG, cfg)}`",
             f"- **Artifacts timed:** {source}",
             *([f"- **System load** (1-minute average, {load['cores']} cores): {load['start']:.2f} at the start, "
                f"{load['end']:.2f} at the end"] if load else []),
             "- **Method:** each case is warmed up first (compilation, autotuning and ONNX Runtime's first run are "
             "not timed), then timed over pedantic rounds; figures come from the median round. ms/sample = median "
             "call time ÷ batch size; speed-up = PyTorch eager fp32's ms/sample ÷ the backend's, on the same device "
             "at the same batch size." + (
                 f" GFLOP/s = convolution and matmul FLOPs done per second ({flops['inference'] / 1e6:.1f} MFLOP per "
                 f"sample for inference, {flops['training'] / 1e6:.1f} for a training step's forward and backward)."
                 if flops else "")]
    if data.get("gpu_stand_in"):
        lines.append("- **Rehearsal:** the GPU cases ran on the CPU in place of a GPU (`--gpu-stand-in`), each CUDA "
                     "backend by its CPU counterpart under the CUDA backend's name: these figures test the run, not "
                     "a GPU.")
    inference = [e for e in entries if e.kind == "inference"]
    if inference:
        accuracy, note = accuracies
        lines += ["", "### Inference latency", ""]
        if plot is not None:
            rel = os.path.relpath(plot, Path(cfg.results).parent)
            lines += [f"![ms per sample against batch size]({Path(rel).as_posix()})", ""]
        lines += _table(inference, ups, accuracy or None, "sample", flops.get("inference"))
        lines += ["", f"Fastest: {_fastest(inference)}.", "", f"_{note}._"]
    training = [e for e in entries if e.kind == "training"]
    if training:
        lines += ["", "### Training throughput", "",
                  "One training step per timed call, built by train.py's build_training and run by Training.step: "
                  "the next batch from the device-resident loader (with its crop and flip), forward, loss, "
                  "backward and SGD update: the `fast` recipe at batch 128, 256 and 512, and each recipe at its "
                  "own batch size (eager, compiled, CUDA graphs; GPU cases), with its time per epoch and the "
                  "projected training time of its whole run (epochs × s/epoch: every epoch timed at full size, so "
                  "an upper bound for recipes with low-resolution epochs; evaluation and compilation not "
                  "included). fp32 on a GPU is marked (TF32) where TF32 was on.",
                  ""]

        lines += _table(training, ups, None, "image", flops.get("training"))
    if data.get("skipped"):
        lines += ["", "Skipped cases, with the reason the suite gave:", "", *_skipped(data["skipped"])]
    return "\n".join(lines) + "\n"


def run_report(cfg: ReportConfig) -> tuple[Path, Path | None, str]:
    """Write the plot and the RESULTS.md section; returns their paths and the section's text. Everything is read
    and checked before anything is written."""
    if not re.fullmatch(r"[\w.-]+", cfg.label):
        raise UserError(f"--label must be letters, digits, '.', '_' or '-', got {cfg.label!r}")
    plot = Path(cfg.plot) if cfg.plot else Path(cfg.results).parent / f"latency-{cfg.label}.png"
    check_writable(cfg.results, "--results")
    check_writable(plot, "--plot")
    data, entries = load_benchmarks(cfg.benchmark_json)
    artifacts = timed_artifacts(data, cfg.benchmark_json)
    inference = [e for e in entries if e.kind == "inference"]
    accuracies = parity_accuracies(cfg.parity, artifacts) if inference else ({}, "")
    section = render(cfg, data, entries, artifacts, accuracies, plot if inference else None)
    if inference:
        info = data.get("machine_info", {})
        save_plot(inference, plot, f"AlexNetCifar inference, {cfg.label}: {info.get('description', '')}")
    update_section(cfg.results, f"benchmarks-{cfg.label}", section)
    return Path(cfg.results), plot if inference else None, section


def main(cfg: ReportConfig) -> int:
    results, plot, section = run_report(cfg)
    print(section)
    print(f"wrote {results} (section benchmarks-{cfg.label})" + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    flags.exit_with(flags.run(ReportConfig, main, PROG, DESCRIPTION))
