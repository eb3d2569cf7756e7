"""`--compile` against eager for the whole run a user types: `python -m alexnet_perf.train --recipe RECIPE
[--compile]` timed as whole processes, from start to exit (the test report is the last thing a run prints).

    python benchmarks/whole_run.py --pairs 2 --data-dir ../shared/cifar10

First one compiled run with empty compile caches (TORCHINDUCTOR_CACHE_DIR in a new temporary folder): what the
first `--compile` costs. Then --pairs pairs of one eager and one compiled run, their order alternating from pair to
pair, the compiled runs loading what the first one cached: the ratio of the medians is what a user sees from the
second run on. Every run trains seed 0 into a checkpoint and TensorBoard folder of its own in a temporary folder.
Run nothing else meanwhile: the runs share the cores with whatever else runs (the 1-minute load average at the
start and the end is recorded). The runs are recorded in --json (with each run's epoch lines, where its images/s
show which epochs differ) and the whole-run-compile section of --results.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from alexnet_perf import flags
from alexnet_perf.atomic import check_writable, write_text_atomic
from alexnet_perf.data import DATA_DIR_HELP, load_cifar10
from alexnet_perf.errors import UserError
from alexnet_perf.recipes import DEFAULT_RECIPE, RECIPES
from alexnet_perf.records import LOCAL_RESULTS, machine_description, update_section

PROG = "python benchmarks/whole_run.py"
SECTION = "whole-run-compile"
COLD, EAGER, COMPILED = "compiled, empty caches", "eager", "compiled"
TEST_ACCURACY = re.compile(r"^Test accuracy:\s+([0-9.]+)%", re.M)  # evaluate.format_snapshot's first line


@dataclass
class WholeRunConfig:
    recipe: str = flags.option(DEFAULT_RECIPE, "recipe every run trains", choices=sorted(RECIPES))
    pairs: int = flags.option(2, "pairs of an eager and a compiled run after the first compiled one", at_least=1)
    data_dir: str | None = flags.option(None, DATA_DIR_HELP)
    train_args: str = flags.option("", "further flags for every run's train command, e.g. \"--epochs 1 "
                                     "--limit-train 2048\" for a quick look")
    json: str = flags.option("", "also write the runs and their summary as JSON here (empty string: don't)")
    results: str = flags.option(LOCAL_RESULTS, f"markdown file whose {SECTION} section is rewritten "
                                             "(benchmarks/RESULTS.md updates the project's committed figures; empty "
                                             "string: none)")


Runner = Callable[[list[str], dict[str, str]], tuple[float, str]]


def train_flags(cfg: WholeRunConfig) -> list[str]:
    """--train-args split as a shell would split them; a UserError for unbalanced quotes."""
    try:
        return shlex.split(cfg.train_args)
    except ValueError as e:
        raise UserError(f"--train-args {cfg.train_args!r}: {e}") from None


def train_command(cfg: WholeRunConfig, compiled: bool, folder: Path) -> list[str]:
    """The user's command for one run, writing into folder."""
    command = [sys.executable, "-m", "alexnet_perf.train", "--recipe", cfg.recipe, *train_flags(cfg)]
    if cfg.data_dir:
        command += ["--data-dir", cfg.data_dir]
    command += ["--checkpoint", str(folder / "model.pth"), "--log-dir", str(folder / "tensorboard")]
    return command + (["--compile"] if compiled else [])


def run_process(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of one whole process and what it printed; a UserError with its last line if it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1]
        raise UserError(f"{shlex.join(command[1:])} exited with status {done.returncode}: {last}")
    return seconds, done.stdout


def printed_accuracy(output: str) -> float:
    """The plain test accuracy (0..1) a train run printed last."""
    found = TEST_ACCURACY.findall(output)
    if not found:
        raise UserError("a train run printed no test accuracy")
    return float(found[-1]) / 100


def order(pairs: int) -> list[str]:
    """The cold compiled run, then the pairs, eager first in even pairs and compiled first in odd ones."""
    runs = [COLD]
    for i in range(pairs):
        runs += [EAGER, COMPILED] if i % 2 == 0 else [COMPILED, EAGER]
    return runs


def measure_runs(cfg: WholeRunConfig, run: Runner = run_process) -> list[dict]:
    """Every run of order(cfg.pairs), each in its own folder, the compiled ones sharing one new compile cache."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="whole_run-") as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "compile-cache")}
        for i, mode in enumerate(order(cfg.pairs)):
            print(f"run {i + 1}/{2 * cfg.pairs + 1}: {mode} ...", end=" ", flush=True)
            seconds, output = run(train_command(cfg, mode != EAGER, Path(tmp) / f"run{i}"), env)
            runs.append({"mode": mode, "seconds": seconds, "test_accuracy": printed_accuracy(output),
                         "epoch_lines": [line for line in output.splitlines() if line.startswith("epoch ")]})
            print(f"{seconds:.1f} s, test accuracy {100 * runs[-1]['test_accuracy']:.2f}%", flush=True)
    return runs


def summarize(runs: list[dict]) -> dict:
    """The cold run's time, each mode's median, and the ratio of the medians (compiled over eager: below 1,
    --compile wins), with each pair's own ratio."""
    seconds = {mode: [r["seconds"] for r in runs if r["mode"] == mode] for mode in (COLD, EAGER, COMPILED)}
    eager, compiled = statistics.median(seconds[EAGER]), statistics.median(seconds[COMPILED])
    return {"cold_seconds": seconds[COLD][0], "eager_median": eager, "compiled_median": compiled,
            "ratio": compiled / eager, "pair_ratios": [c / e for e, c in zip(seconds[EAGER], seconds[COMPILED])],
            "compile_cost": seconds[COLD][0] - compiled}


def markdown(record: dict) -> str:
    s = record["summary"]
    lines = ["### `--compile` against eager, whole runs", "", f"Command: `{record['command']}`  ",
             f"Date: {record['date']}; machine: {record['machine']}; 1-minute load {record['load'][0]:.2f} at the "
             f"start, {record['load'][1]:.2f} at the end", "",
             "| run | mode | wall s | test accuracy |", "| ---: | --- | ---: | ---: |"]
    lines += [f"| {i + 1} | {r['mode']} | {r['seconds']:.1f} | {100 * r['test_accuracy']:.2f} % |"
              for i, r in enumerate(record["runs"])]
    pairs = ", ".join(f"{p:.2f}×" for p in s["pair_ratios"])
    lines += ["", f"Compiled with warm caches **{s['compiled_median']:.1f} s**, eager **{s['eager_median']:.1f} s** "
                  f"(medians): compiled/eager **{s['ratio']:.2f}×** (pairs {pairs}). The first compiled run, caches "
                  f"empty, {s['cold_seconds']:.1f} s: compiling costs ≈ {s['compile_cost']:.0f} s once."]
    return "\n".join(lines) + "\n"


def check_config(cfg: WholeRunConfig) -> None:
    """Refuse, before any run, further train flags that cannot be split and outputs that cannot be written."""
    train_flags(cfg)
    for path, name in ((cfg.json, "--json"), (cfg.results, "--results")):
        if path:
            check_writable(path, name)


def main(cfg: WholeRunConfig, run: Runner = run_process) -> int:
    """Check the configuration and the data, time the runs, print and record the summary."""
    check_config(cfg)
    load_cifar10(cfg.data_dir)  # missing data fails here, and the runs read the decoded cache
    load = [os.getloadavg()[0]]
    runs = measure_runs(cfg, run)
    load.append(os.getloadavg()[0])
    record = {"command": flags.command_line(PROG, cfg), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine_description(), "load": load, "runs": runs, "summary": summarize(runs)}
    text = markdown(record)
    print(text.split("\n\n")[-1].strip())
    if cfg.json:
        write_text_atomic(cfg.json, json.dumps(record, indent=2))
    if cfg.results:
        update_section(cfg.results, SECTION, text)
    return 0


if __name__ == "__main__":
    flags.exit_with(flags.run(WholeRunConfig, main, PROG, __doc__.split("\n\n")[0]))
