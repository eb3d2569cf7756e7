"""`python -m alexnet_perf.report`: turn a benchmark JSON into tables, a plot and a section of benchmarks/RESULTS.md.

Reads what `pytest benchmarks/ --benchmark-only --benchmark-json=PATH` wrote (each case's extra_info carries its
backend, device, precision, threads, batch size and ms per sample), and exports/parity.json when it describes the
artifacts that were timed, so that accuracy stands next to latency. Writes a PNG of ms/sample against batch size
(one line per backend, log scales) and replaces its own marked section of RESULTS.md, leaving the others alone.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import cli
from .atomic import write_atomic
from .errors import UserError
from .results import update_section

PROG = "python -m alexnet_perf.report"
REFERENCE_BACKEND = "eager-fp32"  # speed-ups are against PyTorch eager fp32 on the same device and batch size
_TEST_ID = re.compile(r"^(?P<test>[^\[]+)\[(?P<case>.+)-(?P<batch>\d+)\]$")


@dataclass
class ReportConfig:
    benchmark_json: str = cli.option(".cache/bench/cpu.json", "the JSON written by `pytest benchmarks/ "
                                                             "--benchmark-only --benchmark-json=PATH`")
    label: str = cli.option("cpu", "name of the run (e.g. cpu, h200): titles its RESULTS.md section, which a "
                                   "later report with the same label replaces")
    results: str = cli.option("benchmarks/RESULTS.md", "markdown file whose section for --label is written or "
                                                       "replaced")
    plot: str | None = cli.option(None, "PNG of ms/sample against batch size (default: latency-LABEL.png beside "
                                        "--results)")
    parity: str = cli.option("exports/parity.json", "parity report whose test accuracies are shown when it was made "
                                                    "for the artifacts that were benchmarked")


@dataclass(frozen=True)
class Entry:
    """One benchmarked case."""

    kind: str  # inference or training
    backend: str
    device: str
    dtype: str
    threads: int | None
    batch_size: int
    ms_per_sample: float
    samples_per_s: float
    rounds: int
    iterations: int


def load_benchmarks(path: str | Path) -> tuple[dict[str, Any], list[Entry]]:
    """The JSON document and its cases that carry ms_per_sample; a missing or foreign file is a UserError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"benchmark JSON not found: {path} (write it with `pytest benchmarks/ --benchmark-only "
                        f"--benchmark-json={path}`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from None
    entries = []
    for bench in data.get("benchmarks", []) if isinstance(data, dict) else []:
        info, stats = bench.get("extra_info", {}), bench.get("stats", {})
        if "ms_per_sample" not in info:
            continue
        entries.append(Entry(kind=info["kind"], backend=info["backend"], device=info["device"], dtype=info["dtype"],
                             threads=info.get("threads"), batch_size=int(info["batch_size"]),
                             ms_per_sample=float(info["ms_per_sample"]), samples_per_s=float(info["samples_per_s"]),
                             rounds=int(stats.get("rounds", 0)), iterations=int(stats.get("iterations", 1))))
    if not entries:
        raise UserError(f"{path}: no benchmark in it carries ms_per_sample (is it the JSON of `pytest benchmarks/ "
                        f"--benchmark-only --benchmark-json=...`?)")
    return data, entries


def speedups(entries: list[Entry]) -> dict[Entry, float]:
    """Reference ms/sample ÷ the entry's, where the reference ran the same kind, device and batch size."""
    reference = {(e.kind, e.device, e.batch_size): e.ms_per_sample for e in entries if e.backend == REFERENCE_BACKEND}
    return {e: reference[(e.kind, e.device, e.batch_size)] / e.ms_per_sample
            for e in entries if (e.kind, e.device, e.batch_size) in reference}


def parity_accuracies(parity_path: str | Path, artifacts: dict[str, Any] | None) -> tuple[dict[tuple, float], str]:
    """{(backend, device type): test accuracy} from parity.json, and a note saying where they come from or why
    there are none: they are shown only when the benchmarks timed the artifacts parity checked."""
    path = Path(parity_path)
    if not path.is_file():
        return {}, f"no test accuracy: {path} not found (run `python -m alexnet_perf.export`)"
    if not artifacts or artifacts.get("source") != "exports":
        return {}, ("no test accuracy: the benchmarks timed a randomly initialised stand-in export (exports/ was "
                    "incomplete), so parity's figures do not apply")
    try:
        parity = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from None
    if parity.get("checkpoint_sha256") != artifacts.get("checkpoint_sha256"):
        return {}, f"no test accuracy: {path} was made for another checkpoint than the benchmarked exports"
    batch = parity.get("reference", {}).get("batch_size")
    accuracies = {(r["backend"], r["device"].split(":")[0]): r["test"]["accuracy"]
                  for r in parity.get("results", []) if r.get("status") != "skipped" and r.get("batch_size") == batch}
    images = parity.get("inputs", {}).get("test_images", "the")
    return accuracies, (f"test accuracy: {path} ({images} test images at batch size {batch}; checkpoint sha256 "
                        f"{str(parity['checkpoint_sha256'])[:12]}…); — where parity does not check that backend")


def _ms(v: float) -> str:
    return f"{v:.4f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _table(entries: list[Entry], ups: dict[Entry, float], accuracies: dict[tuple, float] | None,
           unit: str, flops: float | None) -> list[str]:
    head = f"| batch | backend | device | dtype | threads | ms/{unit} | {unit}s/s | speed-up vs eager fp32 |"
    rule = "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"
    if flops:
        head, rule = head + " GFLOP/s |", rule + " ---: |"
    if accuracies is not None:
        head, rule = head + " test accuracy |", rule + " ---: |"
    lines = [head, rule]
    for e in sorted(entries, key=lambda e: (e.batch_size, e.device, e.ms_per_sample)):
        up = f"{ups[e]:.2f}×" if e in ups else "—"
        row = (f"| {e.batch_size} | {e.backend} | {e.device} | {e.dtype} | {e.threads if e.threads else '—'} | "
               f"{_ms(e.ms_per_sample)} | {e.samples_per_s:,.0f} | {up} |")
        if flops:
            row += f" {flops * e.samples_per_s / 1e9:,.0f} |"
        if accuracies is not None:
            acc = accuracies.get((e.backend, e.device.split(":")[0]))
            row += f" {100 * acc:.2f}% |" if acc is not None else " — |"
        lines.append(row)
    return lines


def _fastest(entries: list[Entry]) -> str:
    best: dict[tuple[str, int], Entry] = {}
    for e in entries:
        key = (e.device, e.batch_size)
        if key not in best or e.ms_per_sample < best[key].ms_per_sample:
            best[key] = e
    return "; ".join(f"{device} batch {bs}: **{e.backend}** {_ms(e.ms_per_sample)} ms/sample"
                     for (device, bs), e in sorted(best.items()))


def _skipped(skipped: list[dict[str, str]]) -> list[str]:
    """One line per skipped case family and reason, its batch sizes gathered."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in skipped:
        m = _TEST_ID.match(s["test"])
        case, batch = (f"{m['test']}[{m['case']}]", m["batch"]) if m else (s["test"], "")
        grouped[(case, s["reason"])].append(batch)
    lines = []
    for (case, reason), batches in grouped.items():
        where = f" at batch {', '.join(b for b in batches if b)}" if any(batches) else ""
        lines.append(f"- `{case}`{where}: {reason}")
    return lines


def _when(data: dict[str, Any]) -> str:
    try:
        return datetime.fromisoformat(data["datetime"]).strftime("%Y-%m-%d %H:%M UTC")
    except (KeyError, TypeError, ValueError):
        return "unknown date"


def save_plot(entries: list[Entry], path: str | Path, title: str) -> None:
    """ms/sample against batch size, one line per (backend, device), both axes logarithmic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    lines: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        lines[f"{e.backend} ({e.device})"].append(e)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, points in sorted(lines.items(), key=lambda kv: -max(p.ms_per_sample for p in kv[1])):
        points.sort(key=lambda p: p.batch_size)
        ax.plot([p.batch_size for p in points], [p.ms_per_sample for p in points], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    batches = sorted({e.batch_size for e in entries})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per sample (median)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def render(cfg: ReportConfig, data: dict[str, Any], entries: list[Entry], plot: Path | None) -> str:
    """The RESULTS.md section (without its markers)."""
    info = data.get("machine_info", {})
    machine = info.get("description") or info.get("cpu", {}).get("brand_raw", "unknown machine")
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    artifacts = data.get("artifacts")
    if not artifacts:
        source = "none loaded (only backends that need no exported file ran)"
    elif artifacts["source"] == "exports":
        source = f"`exports/` (exported from checkpoint sha256 {str(artifacts['checkpoint_sha256'])[:12]}…)"
    else:
        source = "a temporary export of a randomly initialised network (exports/ was incomplete; same cost)"
    ups = speedups(entries)
    load = data.get("load_average")
    flops = data.get("flops_per_sample") or {}
    lines = [f"## Benchmarks: {cfg.label}", "",
             f"Measured {_when(data)} on {machine}" + (f"; {versions}" if versions else "") + ".", "",
             f"- **Benchmarks:** `{data.get('command', 'pytest benchmarks/ --benchmark-only')}`",
             f"- **Report:** `{cli.command_line(PROG, cfg)}`",
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
    inference = [e for e in entries if e.kind == "inference"]
    if inference:
        accuracies, note = parity_accuracies(cfg.parity, artifacts)
        lines += ["", "### Inference latency", ""]
        if plot is not None:
            rel = os.path.relpath(plot, Path(cfg.results).parent)
            lines += [f"![ms per sample against batch size]({Path(rel).as_posix()})", ""]
        lines += _table(inference, ups, accuracies if accuracies else None, "sample", flops.get("inference"))
        lines += ["", f"Fastest: {_fastest(inference)}.", "", f"_{note}._"]
    training = [e for e in entries if e.kind == "training"]
    if training:
        lines += ["", "### Training throughput", "",
                  "One training step of the `fast` recipe per timed call: the next batch from the device-resident "
                  "loader (with its crop and flip), forward, loss, backward and SGD update (train.py's train_step).",
                  ""]
        lines += _table(training, ups, None, "image", flops.get("training"))
    if data.get("skipped"):
        lines += ["", "Skipped cases, with the reason the suite gave:", "", *_skipped(data["skipped"])]
    return "\n".join(lines) + "\n"


def run_report(cfg: ReportConfig) -> tuple[Path, Path | None, str]:
    """Write the plot and the RESULTS.md section; returns their paths and the section's text."""
    if not re.fullmatch(r"[\w.-]+", cfg.label):
        raise UserError(f"--label must be letters, digits, '.', '_' or '-', got {cfg.label!r}")
    data, entries = load_benchmarks(cfg.benchmark_json)
    inference = [e for e in entries if e.kind == "inference"]
    plot = Path(cfg.plot) if cfg.plot else Path(cfg.results).parent / f"latency-{cfg.label}.png"
    if inference:
        info = data.get("machine_info", {})
        save_plot(inference, plot, f"AlexNetCifar inference, {cfg.label}: {info.get('description', '')}")
    section = render(cfg, data, entries, plot if inference else None)
    update_section(cfg.results, f"benchmarks-{cfg.label}", section)
    return Path(cfg.results), plot if inference else None, section


def main(cfg: ReportConfig) -> int:
    results, plot, section = run_report(cfg)
    print(section)
    print(f"wrote {results} (section benchmarks-{cfg.label})" + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(ReportConfig, main, PROG,
                             "Turn a pytest-benchmark JSON of benchmarks/ into a markdown table (ms/sample, "
                             "samples/s, speed-up vs PyTorch eager fp32, parity's test accuracy) and a latency plot, "
                             "in a marked section of benchmarks/RESULTS.md."))
