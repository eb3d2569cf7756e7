"""Profile one training step of the `fast` recipe and set it against this machine's matrix-multiply rate.

    python benchmarks/profile_step.py                          # batch 256: eager fp32, eager bf16, compiled bf16
    python benchmarks/profile_step.py --no-compiled --json .cache/bench/profile.json --no-results

The step is train.py's own (build_training, Training.step) on one fixed batch of random images. For each variant the
command prints images/s, achieved GFLOP/s (convolution and matmul FLOPs of a training step, counted with
torch.utils.flop_counter), that rate's share of the measured matrix rate of the variant's precision (a large matmul
in each precision the variants run in, timed in the same run with the same threads, before and after the steps: the
better of the two counts; fp32 only on a CPU without native bf16, where `--amp` trains in fp32), and where the
step's time goes: torch.profiler's self CPU time per operator, grouped into convolution forward and backward, batch
norm, max-pool, ReLU, optimizer, copies and fills, compiled kernels (inductor graphs) and other; and the system
(kernel) CPU time per step, which page faults on freshly mapped memory inflate (--no-reuse-freed-memory shows
glibc's default). Warm-up (compilation included) is never timed or profiled, and the variants' timed steps and
profiled windows alternate, so that other work on the machine slows all of them alike.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch.autograd.profiler_util import FunctionEvent

from alexnet_perf import flags
from alexnet_perf.atomic import check_writable, write_text_atomic
from alexnet_perf.data import random_images
from alexnet_perf.device import TORCH_VARIANTS, TorchVariant
from alexnet_perf.matrix_rate import fastest, matrix_rates
from alexnet_perf.model import flops_per_sample
from alexnet_perf.records import LOCAL_RESULTS, machine_description, update_section
from alexnet_perf.train_config import TrainConfig
from alexnet_perf.training import Training, build_training

PROG = "python benchmarks/profile_step.py"
SECTION = "training-step-profile"
RECIPE = "fast"
STEP_EVENT = "training step"  # record_function around each profiled step: its self time is Python between operators
BuiltStep = tuple[Training, torch.Tensor, torch.Tensor]  # a variant's training state and its one batch
CATEGORIES = ("convolution forward", "convolution backward", "batch norm", "max-pool", "relu", "optimizer",
              "copies/fills", "compiled kernels (inductor graphs)", "other")


@dataclass
class ProfileConfig:
    batch_size: int = flags.option(256, "training batch size", at_least=1)
    steps: int = flags.option(10, "timed steps per variant (alternating between variants); the median is reported",
                            at_least=1)
    profiled_steps: int = flags.option(2, "steps per profiled window", at_least=1)
    profile_rounds: int = flags.option(3, "profiled windows per variant (alternating between variants); the one with "
                                        "the least total time is kept, as other work on the machine inflates the "
                                        "rest", at_least=1)
    warmup: int = flags.option(3, "untimed steps per variant first (compilation happens here)", at_least=1)
    compiled: bool = flags.option(True, "include the torch.compile variant (compilation takes a minute or more)")
    reuse_freed_memory: bool = flags.option(True, "keep freed memory for the next step, as training does "
                                                "(--no-reuse-freed-memory: glibc's default, where large tensors "
                                                "fault in fresh pages every step)")
    matrix_size: int = flags.option(2048, "N of the N×N×N matmuls that measure the matrix rate", at_least=16)
    matrix_reps: int = flags.option(10, "timed matmuls per precision; the fastest gives the rate", at_least=1)
    threads: int = flags.option(0, "torch threads (0: torch's default)", at_least=0)
    top: int = flags.option(12, "operators listed per variant, by self CPU time", at_least=1)
    json: str = flags.option("", "also write every figure as JSON here (empty string: don't)")
    results: bool = flags.option(True, f"rewrite the {SECTION} section of --results-file")
    results_file: str = flags.option(LOCAL_RESULTS, "markdown file holding the section (benchmarks/RESULTS.md updates "
                                                  "the project's committed figures)")


@dataclass
class OpRow:
    name: str
    category: str
    calls_per_step: float
    self_ms_per_step: float


@dataclass
class StepProfile:
    """torch.profiler's view of the profiled steps, per step: the categories sum to total_ms (all self CPU time)."""

    total_ms: float
    wall_ms: float  # wall time of the profiled steps (profiler overhead included)
    categories: dict[str, float]
    top_ops: list[OpRow]


@dataclass
class VariantResult:
    name: str
    precision: str
    ms_per_step: float
    images_per_s: float
    gflops: float
    step_times_ms: list[float] = field(default_factory=list)
    kernel_ms_per_step: float = 0.0  # system CPU time per step, all threads (page faults, mostly)
    profile: StepProfile | None = None
    matrix_share: float = 0.0  # achieved GFLOP/s ÷ the matrix rate of the variant's precision


# --- work -----------------------------------------------------------------------------------------------------

def build_variant(v: TorchVariant, batch_size: int, reuse_freed_memory: bool = True) -> BuiltStep:
    """train.py's training state for v on random images, and one batch from its loader."""
    cfg = TrainConfig(RECIPE, batch_size=batch_size, compile=v.compiled, amp=v.amp, channels_last=v.channels_last,
                      device="cpu", val_size=0, tensorboard=False, low_res_epochs=0,  # full-size images
                      reuse_freed_memory=reuse_freed_memory)
    t = build_training(cfg, (random_images(batch_size), np.arange(batch_size) % 10))
    x, y = next(iter(t.train_loader.epoch(0)))
    return t, x, y


def step_fn(t: Training, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        t.step(x, y)
    return step


def time_alternating(steps: dict[str, Callable[[], None]], count: int
                     ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """count timed calls of every step, interleaved (A B C, then C B A, ...): ms per call, per name, and the mean
    system (kernel) CPU ms per call, per name."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    kernel = dict.fromkeys(steps, 0.0)
    order = list(steps)
    for i in range(count):
        for name in (order if i % 2 == 0 else reversed(order)):
            start, system = time.perf_counter(), os.times().system
            steps[name]()
            times[name].append(1000 * (time.perf_counter() - start))
            kernel[name] += 1000 * (os.times().system - system) / count
    return times, kernel


# --- profile --------------------------------------------------------------------------------------------------

def _own_category(name: str) -> str | None:
    """The category an operator's own name decides, or None."""
    n = name.lower()
    if "convolution" in n or "conv2d" in n:
        return "convolution backward" if "backward" in n else "convolution forward"
    if "batch_norm" in n or "batchnorm" in n:
        return "batch norm"
    if "max_pool" in n or "maxpool" in n:
        return "max-pool"
    if "relu" in n or "threshold_backward" in n:
        return "relu"
    return None


def _is_compiled_region(name: str) -> bool:
    return "compiledfxgraph" in name.lower().replace(" ", "") or name.startswith(("CompiledFunction",
                                                                                    "Torch-Compiled Region"))


def _is_copy_or_fill(name: str) -> bool:
    return any(k in name for k in ("copy", "fill_", "zero_", "aten::to", "clone", "contiguous", "_to_copy"))


def _enclosing_category(node: FunctionEvent | None) -> str | None:
    """The category of the innermost enclosing event that decides one: a layer's operator, an optimizer call or a
    compiled graph (e.g. the clamp_min_ under relu_, or the kernels a compiled graph runs itself)."""
    while node is not None:
        own = _own_category(node.name)
        if own:
            return own
        if node.name.startswith("Optimizer."):
            return "optimizer"
        if _is_compiled_region(node.name):
            return "compiled kernels (inductor graphs)"
        node = node.cpu_parent
    return None


def categorize(event: FunctionEvent) -> str:
    """An event's category: by its own name (a layer's operator, then copies and fills: autocast's casts count as
    copies wherever they run), else by the innermost enclosing event that decides one, else other."""
    own = _own_category(event.name)
    if own:
        return own
    if _is_copy_or_fill(event.name):
        return "copies/fills"
    return _enclosing_category(event.cpu_parent) or "other"


def summarize_events(events: Iterable[FunctionEvent], steps: int, top: int) -> tuple[dict[str, float], list[OpRow]]:
    """Self CPU ms per step by category (every category present, 0 when empty) and the top operators."""
    categories = dict.fromkeys(CATEGORIES, 0.0)
    ops: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for e in events:
        category, ms = categorize(e), e.self_cpu_time_total / 1000 / steps
        categories[category] += ms
        ops[(e.name, category)][0] += 1
        ops[(e.name, category)][1] += ms
    rows = [OpRow(name, category, calls / steps, ms) for (name, category), (calls, ms) in ops.items()]
    rows.sort(key=lambda r: r.self_ms_per_step, reverse=True)
    return categories, rows[:top]


def profile_alternating(steps: dict[str, Callable[[], None]], cfg: ProfileConfig) -> dict[str, StepProfile]:
    """cfg.profile_rounds profiled windows of every step, interleaved: the quietest (least total) per name."""
    best: dict[str, StepProfile] = {}
    for _ in range(cfg.profile_rounds):
        for name, step in steps.items():
            p = profile_steps(step, cfg.profiled_steps, cfg.top)
            if name not in best or p.total_ms < best[name].total_ms:
                best[name] = p
    return best


def profile_steps(step: Callable[[], None], steps: int, top: int) -> StepProfile:
    """Run steps under torch.profiler (CPU activities), each inside a STEP_EVENT record_function."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            with record_function(STEP_EVENT):
                step()
        wall = time.perf_counter() - start
    categories, rows = summarize_events(prof.events(), steps, top)
    return StepProfile(total_ms=sum(categories.values()), wall_ms=1000 * wall / steps, categories=categories,
                       top_ops=rows)


# --- command --------------------------------------------------------------------------------------------------

def chosen_variants(cfg: ProfileConfig) -> list[TorchVariant]:
    return [v for v in TORCH_VARIANTS if cfg.compiled or not v.compiled]


def build_variants(cfg: ProfileConfig) -> dict[str, BuiltStep]:
    """Every chosen variant's training state and batch, named by the precision its step really runs in."""
    variants = [(v, build_variant(v, cfg.batch_size, cfg.reuse_freed_memory)) for v in chosen_variants(cfg)]
    return {v.name(t.precision): (t, x, y) for v, (t, x, y) in variants}


def measure_variants(cfg: ProfileConfig, built: dict[str, BuiltStep], flops: float) -> list[VariantResult]:
    """Warm every built variant, time them alternating, then profile each."""
    steps = {name: step_fn(*parts) for name, parts in built.items()}
    for name, step in steps.items():
        print(f"warming up {name} ({cfg.warmup} steps)", flush=True)
        for _ in range(cfg.warmup):
            step()
    times, kernel = time_alternating(steps, cfg.steps)
    profiles = profile_alternating(steps, cfg)
    results = []
    for name, (t, _, _) in built.items():
        ms = statistics.median(times[name])
        gflops = flops * cfg.batch_size / ms / 1e6
        results.append(VariantResult(name=name, precision=t.precision, ms_per_step=ms,
                                     images_per_s=1000 * cfg.batch_size / ms, gflops=gflops,
                                     step_times_ms=times[name], kernel_ms_per_step=kernel[name],
                                     profile=profiles[name]))
    return results


def check_outputs(cfg: ProfileConfig) -> None:
    """Every file the command will write can be written (checked before any work)."""
    if cfg.json:
        check_writable(cfg.json, "--json")
    if cfg.results:
        check_writable(cfg.results_file, "--results-file")


def run_profile(cfg: ProfileConfig) -> dict:
    """Every figure of one run, as the JSON holds them."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    load_start = os.getloadavg()[0]
    built = build_variants(cfg)
    # only the precisions the steps run in: a CPU without native bf16 takes many minutes over a bf16 product
    precisions = tuple(sorted({t.precision for t, _, _ in built.values()}))
    before = matrix_rates(precisions, cfg.matrix_size, cfg.matrix_reps)
    flops = flops_per_sample()["training"]
    variants = measure_variants(cfg, built, flops)
    rates = fastest(before, matrix_rates(precisions, cfg.matrix_size, cfg.matrix_reps))
    for v in variants:
        v.matrix_share = v.gflops / rates[v.precision]["best_gflops"]
    return {"command": flags.command_line(PROG, cfg), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine_description(), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "load_average": {"start": load_start, "end": os.getloadavg()[0], "cores": os.cpu_count()},
            "batch_size": cfg.batch_size, "training_flops_per_sample": flops, "matrix_size": cfg.matrix_size,
            "matrix_rates": rates, "variants": [asdict(v) for v in variants]}


# --- text -----------------------------------------------------------------------------------------------------

def summary_lines(record: dict) -> list[str]:
    """The per-variant table: throughput, achieved rate and its share of the matrix rate."""
    lines = ["| variant | precision | ms/step (median) | fastest step, ms | kernel CPU ms/step | images/s | GFLOP/s "
             "| share of matrix rate |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v in record["variants"]:
        lines.append(f"| {v['name']} | {v['precision']} | {v['ms_per_step']:.1f} | {min(v['step_times_ms']):.1f} | "
                     f"{v['kernel_ms_per_step']:.1f} | {v['images_per_s']:,.0f} | {v['gflops']:.0f} | "
                     f"{100 * v['matrix_share']:.0f} % |")
    return lines


def category_lines(record: dict) -> list[str]:
    """Self CPU ms per step of each category, one column per variant (share of the profiled total in brackets),
    from each variant's quietest profiled window."""
    variants = record["variants"]
    lines = ["| category | " + " | ".join(v["name"] for v in variants) + " |",
             "| --- |" + " ---: |" * len(variants)]
    for category in CATEGORIES:
        cells = [f"{v['profile']['categories'][category]:.1f} "
                 f"({100 * v['profile']['categories'][category] / v['profile']['total_ms']:.0f} %)" for v in variants]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append("| **profiled total** | " + " | ".join(f"**{v['profile']['total_ms']:.1f}**" for v in variants) + " |")
    lines.append("| wall time while profiled | " + " | ".join(f"{v['profile']['wall_ms']:.1f}" for v in variants)
                 + " |")
    return lines


def top_op_lines(variant: dict) -> list[str]:
    lines = [f"Top operators of {variant['name']} (self CPU ms per step):", "",
             "| operator | category | calls/step | ms/step |", "| --- | --- | ---: | ---: |"]
    for op in variant["profile"]["top_ops"]:
        name = op["name"].replace("|", "\\|")
        lines.append(f"| `{name[:70]}` | {op['category']} | {op['calls_per_step']:.0f} | "
                     f"{op['self_ms_per_step']:.1f} |")
    return lines


def where_the_rest_goes(record: dict, variant: dict) -> str:
    """One sentence: the time the step's FLOPs need at the matrix rate, the convolutions' time, and the rest of the
    step by category (all from the variant's quietest profiled window)."""
    rate = record["matrix_rates"][variant["precision"]]["best_gflops"]
    ideal = record["training_flops_per_sample"] * record["batch_size"] / rate / 1e6
    profile = variant["profile"]
    cats = profile["categories"]
    conv = cats["convolution forward"] + cats["convolution backward"]
    rest = sorted(((c, ms) for c, ms in cats.items() if not c.startswith("convolution")),
                  key=lambda item: item[1], reverse=True)
    parts = ", ".join(f"{c} {ms:.1f} ms" for c, ms in rest if ms >= 0.05)
    return (f"**{variant['name']}**: {variant['ms_per_step']:.1f} ms/step (median), "
            f"{100 * variant['matrix_share']:.0f} % of the {variant['precision']} matrix rate; at that rate its FLOPs "
            f"would take {ideal:.1f} ms. Profiled ({profile['total_ms']:.1f} ms/step): convolutions forward and "
            f"backward {conv:.1f} ms ({100 * conv / profile['total_ms']:.0f} % of the step, running at "
            f"≈ {100 * ideal / max(conv, 1e-9):.0f} % of the matrix rate); the rest: {parts}.")


def markdown(record: dict) -> str:
    """The RESULTS section of a run (the top-operator tables are printed and kept in --json, not repeated here)."""
    rates = record["matrix_rates"]
    load = record["load_average"]
    lines = ["## Training step against the matrix rate", "",
             f"Command: `{record['command']}`  ",
             f"Date: {record['date']}; machine: {record['machine']}; torch {record['torch']}, "
             f"{record['threads']} threads; 1-minute load {load['start']:.2f} at the start, {load['end']:.2f} at the "
             f"end",
             "",
             f"Matrix rate ({record['matrix_size']}³ product, the faster of torch.mm and a 1×1 convolution, best "
             f"of the timed calls, before and after the steps): "
             + ", ".join(f"{name} **{rate['best_gflops']:.0f} GFLOP/s**" for name, rate in rates.items())
             + f". A training step is {record['training_flops_per_sample'] / 1e6:.1f} MFLOP per image "
             f"(convolutions and the linear layer, forward and backward); batch {record['batch_size']}.", "",
             *summary_lines(record), "",
             "Where the step's time goes (torch.profiler, self CPU ms per step; other includes Python between "
             "operators):", "", *category_lines(record), ""]
    lines += [where_the_rest_goes(record, v) for v in record["variants"]]
    return "\n".join(lines) + "\n"


def print_record(record: dict) -> None:
    print("\n".join(summary_lines(record)))
    print()
    print("\n".join(category_lines(record)))
    for v in record["variants"]:
        print()
        print(where_the_rest_goes(record, v))
        print("\n".join(top_op_lines(v)))


def write_outputs(cfg: ProfileConfig, record: dict) -> None:
    """--json and the RESULTS.md section, each written atomically: a write the machine refuses is write_atomic's
    one-line error, and the file keeps its previous contents."""
    if cfg.json:
        write_text_atomic(cfg.json, json.dumps(record, indent=2))
        print(f"wrote {cfg.json}")
    if cfg.results:
        update_section(cfg.results_file, SECTION, markdown(record))
        print(f"wrote the {SECTION} section of {cfg.results_file}")


def main(cfg: ProfileConfig) -> int:
    check_outputs(cfg)
    record = run_profile(cfg)
    print_record(record)
    write_outputs(cfg, record)
    return 0


if __name__ == "__main__":
    flags.exit_with(flags.run(ProfileConfig, main, PROG, __doc__.split("\n\n")[0]))
