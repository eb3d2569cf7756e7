"""Time to accuracy: train a named recipe end to end for N seeds and report test accuracy and wall time.

    python benchmarks/time_to_accuracy.py --recipe fast --runs 3 [--data-dir D] [--json PATH]

Wall time counts everything a user waits for: data loading, compilation, training and the final test
evaluation; each part is also reported on its own. Test accuracy is reported with and without flip TTA.
Results go to JSON and to a marked section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

from alexnet_perf.checkpoint import load_model
from alexnet_perf.data import DeviceLoader, load_cifar10
from alexnet_perf.evaluate import EVAL_BATCH_SIZE, evaluate_model
from alexnet_perf.runtime import amp_dtype, resolve_device
from alexnet_perf.train import recipe_config, train
from alexnet_perf.results import machine_description, update_section

RESULTS = Path(__file__).with_name("RESULTS.md")


def run_once(recipe: str, seed: int, data_dir: str | None, workdir: Path, **overrides) -> dict:
    """Train one seed and score the kept weights on the test set, timing every phase."""
    start = time.perf_counter()
    cfg = recipe_config(recipe, seed=seed, data_dir=data_dir, checkpoint=str(workdir / f"{recipe}-{seed}.pth"),
                        tensorboard=False, **overrides)
    result = train(cfg)
    device = resolve_device(cfg.device)
    model, _ = load_model(cfg.checkpoint, map_location=device)
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    data = load_cifar10(data_dir)
    test = DeviceLoader(data.test_images, data.test_labels, EVAL_BATCH_SIZE, device, channels_last=cfg.channels_last)
    precision = amp_dtype(device, cfg.amp)
    plain = evaluate_model(model, test, precision, cfg.label_smoothing, tta=False)
    tta = evaluate_model(model, test, precision, cfg.label_smoothing, tta=True)
    wall = time.perf_counter() - start
    return {"seed": seed, "test_accuracy": plain.accuracy, "per_class_recall": plain.per_class_recall(),
            "per_class_recall_tta": tta.per_class_recall(), "test_accuracy_tta": tta.accuracy,
            "wall_seconds": wall, "data_seconds": result.data_seconds, "train_seconds": result.train_seconds,
            "val_seconds": result.eval_seconds, "test_eval_seconds": plain.seconds + tta.seconds,
            "epochs": result.epochs_done, "images_per_second": result.images_per_second,
            "threads": torch.get_num_threads(), "config": asdict(cfg)}


def _run_in_worker(args: tuple) -> dict:
    recipe, seed, data_dir, workdir, threads = args
    torch.set_num_threads(threads)
    return run_once(recipe, seed, data_dir, Path(workdir))


def run_all(recipe: str, seeds: list[int], data_dir: str | None, workdir: Path, parallel: int) -> list[dict]:
    """Train the seeds one after another, or `parallel` at a time in worker processes sharing the cores."""
    if parallel <= 1:
        return [run_once(recipe, seed, data_dir, workdir) for seed in seeds]
    threads = max(1, (os.cpu_count() or 1) // parallel)
    jobs = [(recipe, seed, data_dir, str(workdir), threads) for seed in seeds]
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_run_in_worker, jobs))


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in ("test_accuracy", "test_accuracy_tta", "wall_seconds", "train_seconds", "images_per_second"):
        values = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def markdown(recipe: str, runs: list[dict], summary: dict, command: str, date: str) -> str:
    lines = [f"### Time to accuracy: recipe `{recipe}`", "",
             f"Command: `{command}`  ", f"Date: {date}; machine: {machine_description()}", "",
             "| seed | test acc | test acc (flip TTA) | wall s | data s | train s | val s | test eval s | epochs | img/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        lines.append(f"| {r['seed']} | {100 * r['test_accuracy']:.2f} % | {100 * r['test_accuracy_tta']:.2f} % | "
                     f"{r['wall_seconds']:.1f} | {r['data_seconds']:.1f} | {r['train_seconds']:.1f} | "
                     f"{r['val_seconds']:.1f} | {r['test_eval_seconds']:.1f} | {r['epochs']} | "
                     f"{r['images_per_second']:.0f} |")
    s = summary
    lines.append(f"| **mean ± sd** | **{100 * s['test_accuracy']['mean']:.2f} ± {100 * s['test_accuracy']['sd']:.2f} %** "
                 f"| **{100 * s['test_accuracy_tta']['mean']:.2f} ± {100 * s['test_accuracy_tta']['sd']:.2f} %** | "
                 f"**{s['wall_seconds']['mean']:.1f} ± {s['wall_seconds']['sd']:.1f}** | | "
                 f"{s['train_seconds']['mean']:.1f} | | | | {s['images_per_second']['mean']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="fast", help="recipe to train (seed, fast, best)")
    parser.add_argument("--runs", type=int, default=3, help="number of seeds (0..runs-1)")
    parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--parallel", type=int, default=1,
                        help="train this many seeds at once, splitting the cores (accuracy runs; wall times are then "
                             "not single-run figures)")
    parser.add_argument("--keep", default=None, help="keep the trained checkpoints in this folder")
    parser.add_argument("--json", default=None, help="write per-run results and the summary here")
    parser.add_argument("--no-results", action="store_true", help="do not update benchmarks/RESULTS.md")
    parser.add_argument("--report-only", metavar="JSON", default=None,
                        help="train nothing: rewrite the RESULTS.md section from a JSON this script wrote")
    args = parser.parse_args(argv)
    if args.report_only:
        saved = json.loads(Path(args.report_only).read_text())
        update_section(RESULTS, f"time-to-accuracy-{saved['recipe']}",
                       markdown(saved["recipe"], saved["runs"], saved["summary"], saved["command"], saved["date"]))
        return 0
    command = "python benchmarks/time_to_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runs = run_all(args.recipe, list(range(args.runs)), args.data_dir, workdir, args.parallel)
    for r in runs:
        print(f"seed {r['seed']}: test {100 * r['test_accuracy']:.2f}% (TTA {100 * r['test_accuracy_tta']:.2f}%) "
              f"in {r['wall_seconds']:.1f} s", flush=True)
    summary = summarize(runs)
    print(f"mean test accuracy {100 * summary['test_accuracy']['mean']:.2f}% "
          f"(TTA {100 * summary['test_accuracy_tta']['mean']:.2f}%), mean wall {summary['wall_seconds']['mean']:.1f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"recipe": args.recipe, "command": command, "date": date,
                                               "machine": machine_description(), "runs": runs, "summary": summary},
                                              indent=2))
    if not args.no_results:
        update_section(RESULTS, f"time-to-accuracy-{args.recipe}", markdown(args.recipe, runs, summary, command, date))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
