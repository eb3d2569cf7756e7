"""Time to accuracy: train a named recipe end to end for N seeds and report test accuracy and wall time.

    python benchmarks/time_to_accuracy.py --recipe fast --runs 3 [--data-dir D]
    python benchmarks/time_to_accuracy.py --recipe original --runs 1 --epochs 2   # its epoch time, extrapolated

Wall time counts everything a user of `python -m alexnet_perf.train` waits for once the process has started: data
loading, compilation, training and the final test evaluation (with flip TTA only for a recipe scored with it); each
part is also reported on its own. Test accuracy is reported with and without flip TTA.
Each run is recorded beside --results: time_to_accuracy-RECIPE.json, the time-to-accuracy-RECIPE section of
RESULTS.md, and time-to-accuracy.png, test accuracy against wall time for every recipe recorded there. --results
defaults to .cache/results/RESULTS.md, so measuring never edits the checkout; --results benchmarks/RESULTS.md
updates the project's figures. The original recipe is drawn up to the seed's reported 83.18 % at 496 epochs,
extrapolated from its measured epoch time. A measurement whose checkpoints are kept (--keep DIR) and that was stopped
part-way continues with the same command plus --resume: finished seeds are not trained again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from alexnet_perf import flags
from alexnet_perf.atomic import check_writable, write_text_atomic
from alexnet_perf.checkpoint import last_path, load_checkpoint
from alexnet_perf.data import DATA_DIR_HELP, load_cifar10
from alexnet_perf.device import resolve_device
from alexnet_perf.errors import UserError
from alexnet_perf.evaluate import score_checkpoint
from alexnet_perf.figures import save_figure
from alexnet_perf.recipes import RECIPES
from alexnet_perf.records import LOCAL_RESULTS, from_dict, machine_description, update_section
from alexnet_perf.train import TrainResult, run_result, train
from alexnet_perf.train_config import RUNTIME_FIELDS, TrainConfig

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PROG = "python benchmarks/time_to_accuracy.py"
PLOT_NAME = "time-to-accuracy.png"
SEED_EPOCHS, SEED_ACCURACY = 496, 0.8318  # the seed's reported run: 83.18 % test accuracy after 496 epochs


@dataclass
class TimeToAccuracyConfig:
    recipe: str = flags.option("fast", f"recipe to train: {', '.join(RECIPES)}", choices=sorted(RECIPES))
    runs: int = flags.option(3, "number of seeds (0..runs-1)", at_least=1)
    epochs: int = flags.option(0, "train this many epochs instead of the recipe's (0: the recipe's); a few epochs of "
                                "the original recipe measure its epoch time, from which its 496 epochs are "
                                "extrapolated",
                             at_least=0)
    data_dir: str | None = flags.option(None, DATA_DIR_HELP)
    compile: bool = flags.option(False, "train with --compile, as README's first command does (torch's compile caches "
                                        "as they are: with empty ones the first seed also compiles)")
    parallel: int = flags.option(1, "train this many seeds at once, splitting the cores (accuracy runs; wall times "
                                  "are then not single-run figures)", at_least=1)
    keep: str = flags.option("", "keep the trained checkpoints, and each finished seed's figures (RECIPE-SEED.json), "
                                 "in this folder (empty string: a temporary folder)")
    resume: bool = flags.option(False, "continue a measurement stopped part-way in --keep: seeds recorded there are "
                                       "taken as they are, a seed stopped mid-run continues from its last checkpoint "
                                       "(its wall time is then the sum of its parts: data, training, validation and "
                                       "test scoring), the rest train from the start")
    json: str = flags.option("", "also write the runs and their summary as JSON here (empty string: don't)")
    results: str = flags.option(LOCAL_RESULTS, "markdown file whose time-to-accuracy-RECIPE section is rewritten "
                                             "(benchmarks/RESULTS.md updates the project's committed figures); the "
                                            "runs are recorded beside it as time_to_accuracy-RECIPE.json and drawn, "
                                            f"with every other recipe recorded there, in {PLOT_NAME} (empty "
                                            "string: none of these)")
    report_only: str = flags.option("", "train nothing: record a JSON this script wrote (--json) beside --results and "
                                      "redraw the section and the picture from it")


@dataclass(frozen=True)
class RunRecord:
    """The fields of one run that the report and the picture read: what a saved JSON must hold."""

    seed: int
    test_accuracy: float
    test_accuracy_tta: float
    wall_seconds: float
    data_seconds: float
    train_seconds: float
    val_seconds: float
    test_eval_seconds: float
    epochs: int
    images_per_second: float
    resumed: bool = False  # stopped and continued with --resume: the wall time is the sum of the parts


@dataclass(frozen=True)
class Record:
    """A saved JSON of this script: the recipe, how, when and on what machine it ran, and its runs."""

    recipe: str
    command: str
    date: str
    runs: list[RunRecord]
    machine: str = "unknown machine"  # records saved before it was kept name none


# --- training -------------------------------------------------------------------------------------------------

def seed_config(recipe: str, seed: int, data_dir: str | None, workdir: Path, **overrides) -> TrainConfig:
    """The training configuration of one seed of the measurement."""
    return TrainConfig(recipe, seed=seed, data_dir=data_dir, checkpoint=str(workdir / f"{recipe}-{seed}.pth"),
                       tensorboard=False, **overrides)


def seed_record_path(cfg: TrainConfig) -> Path:
    """Where a finished seed's figures are written, beside its checkpoint: what --resume takes as they are."""
    return Path(cfg.checkpoint).with_suffix(".json")


def run_once(recipe: str, seed: int, data_dir: str | None, workdir: Path, **overrides) -> dict:
    """Train one seed and score the kept weights on the test set as `python -m alexnet_perf.train` does (with flip
    TTA only where the recipe is scored so), timing every phase; a recipe scored without TTA gets its TTA figure
    from a second, untimed scoring. A seed whose last checkpoint is in workdir (a measurement stopped mid-run)
    continues from it, and its wall time is the sum of its parts. The figures are also written beside the
    checkpoint. Each seed starts as a new process would, with no compiled graph in memory: it pays the tracing a
    user's run pays, where a graph an earlier seed compiled would be reused."""
    torch.compiler.reset()
    start = time.perf_counter()
    cfg = seed_config(recipe, seed, data_dir, workdir, **overrides)
    result, resumed = train_seed(cfg)
    device = resolve_device(cfg.device)
    snap = score_checkpoint(cfg.checkpoint, data_dir, device, channels_last=cfg.channels_last)
    test_eval_seconds = snap["latency_s"] + (snap["tta"] or {}).get("latency_s", 0.0)
    wall = (result.data_seconds + result.train_seconds + result.eval_seconds + test_eval_seconds if resumed
            else time.perf_counter() - start)
    tta = snap["tta"] or score_checkpoint(cfg.checkpoint, data_dir, device, tta="on",
                                          channels_last=cfg.channels_last)["tta"]
    run = {"seed": seed, "test_accuracy": snap["accuracy"], "per_class_recall": list(snap["per_class_recall"].values()),
           "per_class_recall_tta": list(tta["per_class_recall"].values()), "test_accuracy_tta": tta["accuracy"],
           "wall_seconds": wall, "data_seconds": result.data_seconds, "train_seconds": result.train_seconds,
           "val_seconds": result.eval_seconds, "test_eval_seconds": test_eval_seconds, "epochs": result.epochs_done,
           "images_per_second": result.images_per_second, "resumed": resumed, "threads": torch.get_num_threads(),
           "config": _config_record(cfg)}
    write_text_atomic(seed_record_path(cfg), json.dumps(run, indent=2))
    return run


def train_seed(cfg: TrainConfig) -> tuple[TrainResult, bool]:
    """Train one seed, or continue it (True) from the last checkpoint a stopped measurement left. A seed stopped
    after its last epoch, while being scored, is not trained again: its result is read from that checkpoint, and no
    part's data loading is counted in its wall time."""
    ckpt = stopped_seed(cfg)
    if ckpt is None:
        return train(cfg), False
    if ckpt["epoch"] < ckpt["config"]["epochs"]:
        return train(replace(cfg, resume=True)), True
    return run_result(cfg.checkpoint, ckpt["history"], ckpt["best"]["val_accuracy"], ckpt["best"]["epoch"],
                      wall_seconds=0.0, data_seconds=0.0, interrupted=False), True


def stopped_seed(cfg: TrainConfig) -> dict | None:
    """The last checkpoint of a seed a stopped measurement left unrecorded, if any; a UserError when it was trained
    with other settings than cfg's."""
    last = last_path(cfg.checkpoint)
    if not last.exists():
        return None
    ckpt = load_checkpoint(last)
    if problem := _settings_problem(ckpt["config"], cfg):
        raise UserError(f"{last} was trained with {problem}; delete it to train that seed again, or keep this "
                        f"measurement in another folder")
    return ckpt


def _settings_problem(recorded: dict, cfg: TrainConfig) -> str | None:
    """How a run's recorded settings differ from cfg's (runtime settings aside), or None when they agree."""
    recorded, wanted = json.loads(json.dumps(recorded)), _config_record(cfg)
    differing = [k for k in wanted if k not in RUNTIME_FIELDS and recorded.get(k) != wanted[k]]
    if not differing:
        return None
    name = differing[0]
    return f"{name} {recorded.get(name)!r}, this measurement uses {wanted[name]!r}"


def _config_record(cfg: TrainConfig) -> dict:
    """cfg as recorded with a run: its settings as JSON gives them back, the checkpoint by name only."""
    return json.loads(json.dumps({**asdict(cfg), "checkpoint": Path(cfg.checkpoint).name}))


def recorded_run(cfg: TrainConfig) -> dict | None:
    """The figures of a seed a stopped measurement finished, if it did; a UserError when they are unreadable or
    were measured with other settings than cfg's."""
    path = seed_record_path(cfg)
    if not path.exists():
        return None
    fix = "delete it to train that seed again"
    run, _ = _read_as(RunRecord, path, "a finished seed's figures", fix)
    if problem := _settings_problem(run.get("config", {}), cfg):
        raise UserError(f"{path} was measured with {problem}; {fix}, or keep this one in another folder")
    return run


def _run_in_worker(job: tuple[str, int, str | None, str, int, dict[str, Any]]) -> dict:
    recipe, seed, data_dir, workdir, threads, overrides = job
    torch.set_num_threads(threads)
    return run_once(recipe, seed, data_dir, Path(workdir), **overrides)


def run_all(recipe: str, seeds: list[int], data_dir: str | None, workdir: Path, parallel: int,
            **overrides) -> list[dict]:
    """Train the seeds one after another, or `parallel` at a time in worker processes sharing the cores; when the
    measurement stops (Ctrl-C, SIGTERM, a seed's error), leaving the pool's block ends the workers at once."""
    if parallel <= 1:
        return [run_once(recipe, seed, data_dir, workdir, **overrides) for seed in seeds]
    threads = max(1, (os.cpu_count() or 1) // parallel)
    jobs = [(recipe, seed, data_dir, str(workdir), threads, overrides) for seed in seeds]
    with multiprocessing.get_context("spawn").Pool(parallel) as pool:
        return pool.map(_run_in_worker, jobs, chunksize=1)


# --- figures --------------------------------------------------------------------------------------------------

def summarize(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over the runs of the headline figures."""
    out = {}
    for key in ("test_accuracy", "test_accuracy_tta", "wall_seconds", "train_seconds", "images_per_second"):
        values = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def extrapolated_seconds(run: dict, epochs: int = SEED_EPOCHS) -> float:
    """The run's wall time had it trained `epochs` epochs: the measured wall time plus the missing epochs at the
    run's measured time per epoch (training and validation)."""
    per_epoch = (run["train_seconds"] + run["val_seconds"]) / run["epochs"]
    return run["wall_seconds"] + per_epoch * (epochs - run["epochs"])


def _is_extrapolated(recipe: str, runs: list[dict]) -> bool:
    return recipe == "original" and statistics.fmean(r["epochs"] for r in runs) < SEED_EPOCHS


def _machine(record: dict) -> str:
    """The machine a record's runs were measured on (Record's default where the record names none)."""
    return record.get("machine", Record.machine)


def markdown(recipe: str, runs: list[dict], summary: dict, command: str, date: str, machine: str) -> str:
    """The recipe's RESULTS.md section: one row per seed, then mean ± sd, naming the machine the runs were on."""
    lines = [f"### Time to accuracy: recipe `{recipe}`", "",
             f"Command: `{command}`  ", f"Date: {date}; machine: {machine}", "",
             "| seed | test acc | test acc (flip TTA) | wall s | data s | train s | val s | test eval s | epochs "
             "| img/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        seed = f"{r['seed']} (resumed)" if r.get("resumed") else r["seed"]
        lines.append(f"| {seed} | {100 * r['test_accuracy']:.2f} % | {100 * r['test_accuracy_tta']:.2f} % | "
                     f"{r['wall_seconds']:.1f} | {r['data_seconds']:.1f} | {r['train_seconds']:.1f} | "
                     f"{r['val_seconds']:.1f} | {r['test_eval_seconds']:.1f} | {r['epochs']} | "
                     f"{r['images_per_second']:.0f} |")
    s = summary
    plain, tta = s["test_accuracy"], s["test_accuracy_tta"]
    lines.append(f"| **mean ± sd** | **{100 * plain['mean']:.2f} ± {100 * plain['sd']:.2f} "
                 f"%** | **{100 * tta['mean']:.2f} ± {100 * tta['sd']:.2f} %** | "
                 f"**{s['wall_seconds']['mean']:.1f} ± {s['wall_seconds']['sd']:.1f}** | | "
                 f"{s['train_seconds']['mean']:.1f} | | | | {s['images_per_second']['mean']:.0f} |")
    if any(r.get("resumed") for r in runs):
        lines += ["", "A resumed seed was stopped and continued with --resume: its wall time is the sum of its parts "
                      "(data, training, validation, test scoring)."]
    if _is_extrapolated(recipe, runs):
        hours = statistics.fmean(extrapolated_seconds(r) for r in runs) / 3600
        lines += ["", f"Extrapolated to the seed's {SEED_EPOCHS} epochs (its reported {100 * SEED_ACCURACY:.2f} % test "
                      f"accuracy) at the measured time per epoch: ≈ {hours:.1f} h."]
    return "\n".join(lines) + "\n"


def save_plot(records: dict[str, dict], path: str | Path) -> None:
    """Test accuracy against wall time (log scale): each run, each recipe's mean, and for the original recipe a dashed
    line from its measured epochs to the seed's 83.18 % at its extrapolated 496-epoch time. Recipes measured on
    different machines each name theirs in the legend (their times do not compare). The legend's labels are also
    stored in the PNG's Description, so that a reader (or a test) can tell which recipes it shows."""

    def draw(ax: Axes) -> dict[str, str]:
        ax.axhline(100 * SEED_ACCURACY, color="grey", linestyle=":", label=f"the seed's {100 * SEED_ACCURACY:.2f} %")
        machines = {recipe: _machine(record) for recipe, record in records.items()}
        mixed = len(set(machines.values())) > 1
        for recipe in sorted(records, key=list(RECIPES).index):
            _plot_recipe(ax, recipe, records[recipe]["runs"], machines[recipe] if mixed else "")
        ax.set_xscale("log")
        ax.set_xlabel("wall time per run (s, log scale)")
        ax.set_ylabel("test accuracy (%, no TTA)")
        subtitle = "each recipe on the machine its label names" if mixed else next(iter(machines.values()), "")
        ax.set_title(f"CIFAR-10 test accuracy against wall time\n{subtitle}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        return {"Description": "; ".join(ax.get_legend_handles_labels()[1])}

    save_figure(path, (8, 5), draw)


def _plot_recipe(ax, recipe: str, runs: list[dict], machine: str) -> None:
    """One recipe's runs and mean (its label naming machine, if given); the original recipe's extrapolation when it
    ran fewer than the seed's epochs."""
    walls, accs = [r["wall_seconds"] for r in runs], [100 * r["test_accuracy"] for r in runs]
    epochs = round(statistics.fmean(r["epochs"] for r in runs))
    points = ax.scatter(walls, accs, alpha=0.5, s=20)
    mean = (statistics.fmean(walls), statistics.fmean(accs))
    ax.plot(*mean, marker="o", markersize=9, color=points.get_facecolor()[0][:3], linestyle="none",
            label=f"{recipe}: {epochs} epochs, mean of {len(runs)} run{'s' if len(runs) > 1 else ''}"
                  + (f" ({machine})" if machine else ""))
    if _is_extrapolated(recipe, runs):
        target = (statistics.fmean(extrapolated_seconds(r) for r in runs), 100 * SEED_ACCURACY)
        ax.plot([mean[0], target[0]], [mean[1], target[1]], linestyle="--", marker="*", markevery=[1],
                markersize=12, color=points.get_facecolor()[0][:3],
                label=f"original (extrapolated): {SEED_EPOCHS} epochs at the measured epoch time")
        ax.annotate("extrapolated", target, textcoords="offset points", xytext=(-10, 8), ha="right", fontsize=8)


# --- records --------------------------------------------------------------------------------------------------

def record_path(results: str | Path, recipe: str) -> Path:
    return Path(results).parent / f"time_to_accuracy-{recipe}.json"


def load_record(path: str | Path, fix: str) -> dict:
    """A JSON this script wrote, checked to hold every field the report and the picture read; else a UserError
    saying what is wrong and, with `fix`, how to put it right."""
    data, record = _read_as(Record, path, "a time-to-accuracy JSON", fix)
    problem = _record_problem(record)
    if problem:
        raise UserError(f"{path}: {problem}; {fix}")
    return data


def _read_as(cls: type, path: str | Path, kind: str, fix: str) -> tuple[dict, Any]:
    """The JSON at path and the dataclass cls made of it; a UserError naming what is wrong (missing, not JSON, a
    field missing or mistyped) and, with `fix`, how to put it right."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return data, from_dict(cls, data)
    except FileNotFoundError:
        raise UserError(f"{path} not found; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{path}: not {kind} ({reason}); {fix}") from None


def _record_problem(record: Record) -> str | None:
    """What makes a well-typed record unusable, if anything."""
    if record.recipe not in RECIPES:
        return f"unknown recipe {record.recipe!r}"
    if not record.runs:
        return "no runs"
    for i, run in enumerate(record.runs):
        seconds = (run.wall_seconds, run.data_seconds, run.train_seconds, run.val_seconds, run.test_eval_seconds)
        if not (0 <= run.test_accuracy <= 1 and 0 <= run.test_accuracy_tta <= 1):
            return f"runs[{i}]: test accuracies must lie in 0..1"
        if run.epochs < 1 or min(seconds) < 0 or run.train_seconds > run.wall_seconds:
            return f"runs[{i}]: epochs must be >= 1 and times >= 0, training within the wall time"
    return None


def load_other_records(results: str | Path, recipe: str) -> dict[str, dict]:
    """Every recipe but `recipe` (whose record is being replaced) recorded beside results, each checked: a damaged
    one is named, not skipped."""
    paths = {other: record_path(results, other) for other in RECIPES if other != recipe}
    return {other: load_record(p, f"delete it, or rerun {PROG} --recipe {other} to replace it")
            for other, p in paths.items() if p.exists()}


def publish(results: str | Path, record: dict) -> list[Path]:
    """Record the runs beside results, rewrite the recipe's RESULTS.md section and redraw the picture from every
    recipe recorded there; returns the files written."""
    recipe, runs = record["recipe"], record["runs"]
    records = {**load_other_records(results, recipe), recipe: record}
    saved, plot = record_path(results, recipe), Path(results).parent / PLOT_NAME
    write_text_atomic(saved, json.dumps(record, indent=2))
    update_section(results, f"time-to-accuracy-{recipe}",
                   markdown(recipe, runs, summarize(runs), record["command"], record["date"], _machine(record)))
    save_plot(records, plot)
    return [saved, Path(results), plot]


# --- command --------------------------------------------------------------------------------------------------

def check_outputs(cfg: TimeToAccuracyConfig, recipe: str) -> None:
    """Every file the command will write can be written (checked before any training)."""
    if cfg.json:
        check_writable(cfg.json, "--json")
    if cfg.results:
        for path in (cfg.results, record_path(cfg.results, recipe), Path(cfg.results).parent / PLOT_NAME):
            check_writable(path, "--results")


def check_keep(cfg: TimeToAccuracyConfig, overrides: dict[str, Any]) -> dict[int, dict]:
    """--keep must be a folder that takes the checkpoints. Without --resume it must hold none of this measurement's
    files; with it, the figures of the seeds it finished are returned, and they and the seeds it stopped are checked
    against this measurement's settings."""
    if cfg.resume and not cfg.keep:
        raise UserError("--resume continues the measurement kept in a folder: give it with --keep DIR")
    if not cfg.keep:
        return {}
    configs = [seed_config(cfg.recipe, seed, cfg.data_dir, Path(cfg.keep), **overrides) for seed in range(cfg.runs)]
    existing = [p.name for c in configs for p in (Path(c.checkpoint), last_path(c.checkpoint), seed_record_path(c))
                if p.exists()]
    if existing and not cfg.resume:
        raise UserError(f"--keep {cfg.keep} already holds {', '.join(existing)} of an earlier measurement; continue "
                        f"it with --resume, choose another folder, or delete them")
    check_writable(configs[0].checkpoint, "--keep")
    if not cfg.resume:
        return {}
    recorded = {c.seed: run for c in configs if (run := recorded_run(c)) is not None}
    for c in configs:
        if c.seed not in recorded:
            stopped_seed(c)  # one stopped with other settings is refused here, before any seed trains
    return recorded


def write_outputs(cfg: TimeToAccuracyConfig, record: dict) -> None:
    """--json and the files beside --results, each written atomically: a write the machine refuses (disk full) is
    write_atomic's one-line error, and each file keeps either its previous or its new contents."""
    if cfg.json:
        write_text_atomic(cfg.json, json.dumps(record, indent=2))
    written = ([Path(cfg.json)] if cfg.json else []) + (publish(cfg.results, record) if cfg.results else [])
    for path in written:
        print(f"wrote {path}")


def report_only(cfg: TimeToAccuracyConfig) -> int:
    """Record a saved JSON and redraw its section and the picture, training nothing."""
    if not cfg.results:
        raise UserError("--report-only needs --results (where to record the JSON)")
    record = load_record(cfg.report_only, f"give a JSON that {PROG} --json wrote")
    check_outputs(cfg, record["recipe"])
    load_other_records(cfg.results, record["recipe"])
    write_outputs(cfg, record)
    return 0


def measure(cfg: TimeToAccuracyConfig) -> int:
    """Check everything that can be checked, train the seeds, print and record the results."""
    check_outputs(cfg, cfg.recipe)
    overrides: dict[str, Any] = {"epochs": cfg.epochs} if cfg.epochs else {}
    if cfg.compile:
        overrides["compile"] = True
    recorded = check_keep(cfg, overrides)
    if cfg.results:
        load_other_records(cfg.results, cfg.recipe)  # a damaged one would otherwise stop the picture after training
    load_cifar10(cfg.data_dir)  # missing or damaged data fails here; the workers then read the decoded cache
    for seed in recorded:
        print(f"seed {seed}: finished by the stopped measurement; its figures are taken as they are", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(cfg.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        trained = run_all(cfg.recipe, [s for s in range(cfg.runs) if s not in recorded], cfg.data_dir, workdir,
                          cfg.parallel, **overrides)
    runs = sorted([*recorded.values(), *trained], key=lambda r: r["seed"])
    for r in runs:
        print(f"seed {r['seed']}: test {100 * r['test_accuracy']:.2f}% (TTA {100 * r['test_accuracy_tta']:.2f}%) "
              f"in {r['wall_seconds']:.1f} s", flush=True)
    summary = summarize(runs)
    print(f"mean test accuracy {100 * summary['test_accuracy']['mean']:.2f}% "
          f"(TTA {100 * summary['test_accuracy_tta']['mean']:.2f}%), mean wall {summary['wall_seconds']['mean']:.1f} s")
    record = {"recipe": cfg.recipe, "command": flags.command_line(PROG, cfg),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_description(),
              "runs": runs, "summary": summary}
    write_outputs(cfg, record)
    return 0


def main(cfg: TimeToAccuracyConfig) -> int:
    return report_only(cfg) if cfg.report_only else measure(cfg)


if __name__ == "__main__":
    flags.exit_with(flags.run(TimeToAccuracyConfig, main, PROG, __doc__.split("\n\n")[0]))
