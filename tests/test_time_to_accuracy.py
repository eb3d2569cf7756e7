"""benchmarks/time_to_accuracy.py on synthetic data: runs end to end, their report and picture, and every mistake
refused in one line before training."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_perf import flags
from alexnet_perf.checkpoint import load_model
from alexnet_perf.data import load_cifar10
from alexnet_perf.loader import normalize

from conftest import benchmark_script, full_disk



@pytest.fixture(scope="module")
def tta_module():
    yield from benchmark_script("time_to_accuracy")


def _runs(accuracies=(0.83, 0.84, 0.85), epochs=10) -> list[dict]:
    return [{"seed": s, "test_accuracy": a, "test_accuracy_tta": a + 0.01, "wall_seconds": 300.0 + s,
             "data_seconds": 0.1, "train_seconds": 290.0, "val_seconds": 0.0, "test_eval_seconds": 8.0,
             "epochs": epochs, "images_per_second": 1500.0} for s, a in enumerate(accuracies)]


def _record(recipe="fast", runs=None) -> dict:
    return {"recipe": recipe, "command": "python benchmarks/time_to_accuracy.py", "date": "2026-11-29 05:18 UTC",
            "machine": "2 cores, test", "runs": _runs() if runs is None else runs}


def _cli(module, capsys, *args: str) -> tuple[int, str, str]:
    code = flags.run(module.TimeToAccuracyConfig, module.main, module.PROG, "", list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _plot_labels(path: Path) -> str:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.text["Description"]


def _hand_counted_recall(checkpoint: Path, data_dir: Path) -> list[float]:
    model, _ = load_model(checkpoint)
    data = load_cifar10(str(data_dir))
    with torch.no_grad():
        predicted = model(normalize(torch.as_tensor(data.test_images))).argmax(1).numpy()
    labels = data.test_labels
    return [float(np.sum((labels == c) & (predicted == c)) / max(np.sum(labels == c), 1)) for c in range(10)]


def test_one_run_learns_the_synthetic_classes_and_counts_recall_right(tta_module, synthetic_cifar, tmp_path):
    run = tta_module.run_once("fast", 0, str(synthetic_cifar), tmp_path, epochs=3, batch_size=16, device="cpu",
                              amp=False)
    assert run["epochs"] == 3 and run["config"]["recipe"] == "fast" and run["config"]["whiten_init"]
    assert run["test_accuracy"] > 0.6 and run["test_accuracy_tta"] > 0.6  # one colour per class; chance is 0.1
    assert run["wall_seconds"] >= run["train_seconds"] > 0 and run["test_eval_seconds"] > 0
    assert run["per_class_recall"] == pytest.approx(_hand_counted_recall(tmp_path / "fast-0.pth", synthetic_cifar))


@pytest.mark.parametrize("recipe, timed_tta", [("fast", False), ("best", True)])
def test_the_timed_scoring_is_the_users_and_a_tta_figure_for_a_plain_recipe_is_scored_after_the_clock(
        tta_module, synthetic_cifar, tmp_path, monkeypatch, recipe, timed_tta):
    """The wall stops after the scoring `train` prints (TTA only where the recipe is scored with it), so a recipe
    scored without TTA is not charged for the TTA figure reported beside it."""
    clock, scorings = [0.0], []
    real_score = tta_module.score_checkpoint

    def score(*args, **options):
        snap = real_score(*args, **options)
        scorings.append(snap["tta"] is not None)
        clock[0] += 100.0  # each scoring "takes" 100 s on the patched clock
        return snap

    monkeypatch.setattr(tta_module, "score_checkpoint", score)
    monkeypatch.setattr(tta_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    run = tta_module.run_once(recipe, 0, str(synthetic_cifar), tmp_path, epochs=1, batch_size=16, device="cpu",
                              amp=False)
    assert scorings == ([True] if timed_tta else [False, True])  # the timed scoring first, then the untimed one
    assert run["wall_seconds"] == 100.0 and 0 < run["test_accuracy_tta"] <= 1


def test_each_seed_compiles_its_graphs_again_as_a_new_process_would(tta_module, synthetic_cifar, tmp_path,
                                                                     monkeypatch):
    """Seeds trained one after another in one process: each is timed with the tracing a user's process pays, not
    with the graphs an earlier seed left in memory."""
    compiles = []
    step = torch.compile(lambda x: x + 1, backend=lambda gm, inputs: compiles.append(1) or gm, dynamic=False)
    real_train_seed = tta_module.train_seed

    def train_seed(cfg):
        step(torch.zeros(2))  # the same graph each seed: compiled again only where the seed starts afresh
        return real_train_seed(cfg)

    monkeypatch.setattr(tta_module, "train_seed", train_seed)
    tta_module.run_all("fast", [0, 1], str(synthetic_cifar), tmp_path, 1, epochs=1, batch_size=16, device="cpu",
                       amp=False)
    assert len(compiles) == 2


def test_summary_and_table_report_mean_and_sd(tta_module):
    runs = _runs()
    summary = tta_module.summarize(runs)
    assert summary["test_accuracy"]["mean"] == pytest.approx(0.84)
    assert summary["test_accuracy"]["sd"] == pytest.approx(0.01)
    table = tta_module.markdown("fast", runs, summary, "python benchmarks/time_to_accuracy.py", "2026-11-29",
                                "2 cores, test")
    assert "**84.00 ± 1.00 %**" in table and "| 2 | 85.00 % | 86.00 % |" in table
    assert "xtrapolated" not in table


def test_the_original_recipes_time_is_extrapolated_from_its_measured_epoch_time(tta_module):
    run = {"wall_seconds": 100.0, "train_seconds": 60.0, "val_seconds": 6.0, "epochs": 1}
    assert tta_module.extrapolated_seconds(run) == pytest.approx(100.0 + 66.0 * 495)
    runs = [{**_runs(epochs=1)[0], **run}]
    table = tta_module.markdown("original", runs, tta_module.summarize(runs), "cmd", "date", "m")
    assert "Extrapolated to the seed's 496 epochs" in table and "≈ 9.1 h" in table


def test_a_run_records_json_section_and_a_picture_of_every_recipe_recorded(tta_module, synthetic_cifar, tmp_path,
                                                                          capsys):
    results = tmp_path / "bench" / "RESULTS.md"
    seed_run = tta_module.run_once("original", 0, str(synthetic_cifar), tmp_path, epochs=1, batch_size=16, val_size=64,
                                   device="cpu")
    tta_module.publish(results, _record("original", [seed_run]))
    code, out, err = _cli(tta_module, capsys, "--recipe", "fast", "--runs", "1", "--epochs", "1", "--data-dir",
                          str(synthetic_cifar), "--results", str(results), "--json", str(tmp_path / "fast.json"))
    assert code == 0, err
    plot = results.parent / "time-to-accuracy.png"
    assert f"wrote {plot}" in out and f"wrote {tmp_path / 'fast.json'}" in out
    labels = _plot_labels(plot)
    assert "fast: 1 epochs, mean of 1 run" in labels and "original: 1 epochs" in labels
    assert "original (extrapolated)" in labels and "best" not in labels
    saved = json.loads((results.parent / "time_to_accuracy-fast.json").read_text())
    assert saved == json.loads((tmp_path / "fast.json").read_text()) and len(saved["runs"]) == 1
    assert saved["command"].startswith("python benchmarks/time_to_accuracy.py --runs 1 --epochs 1")
    text = results.read_text()
    assert "<!-- begin time-to-accuracy-fast -->" in text and "<!-- begin time-to-accuracy-original -->" in text


def test_report_only_records_a_saved_json_and_redraws_the_picture(tta_module, tmp_path, capsys):
    saved = tmp_path / "best.json"
    saved.write_text(json.dumps(_record("best")))
    results = tmp_path / "RESULTS.md"
    code, out, err = _cli(tta_module, capsys, "--report-only", str(saved), "--results", str(results))
    assert code == 0, err
    assert "best: 10 epochs, mean of 3 runs" in _plot_labels(tmp_path / "time-to-accuracy.png")
    assert json.loads((tmp_path / "time_to_accuracy-best.json").read_text())["runs"] == _runs()
    assert "**84.00 ± 1.00 %**" in results.read_text()
    assert "Date: 2026-11-29 05:18 UTC; machine: 2 cores, test" in results.read_text()  # the runs' machine, not this


def test_the_picture_names_each_recipes_machine_only_when_the_machines_differ(tta_module, tmp_path):
    fast, best = _record("fast"), _record("best")
    tta_module.save_plot({"fast": fast, "best": best}, tmp_path / "same.png")
    assert "(2 cores, test)" not in _plot_labels(tmp_path / "same.png")
    best["machine"] = "2 cores, other"
    tta_module.save_plot({"fast": fast, "best": best}, tmp_path / "mixed.png")
    labels = _plot_labels(tmp_path / "mixed.png")
    assert "fast: 10 epochs, mean of 3 runs (2 cores, test)" in labels
    assert "best: 10 epochs, mean of 3 runs (2 cores, other)" in labels


@pytest.mark.parametrize("content, problem", [
    (None, "not found"),
    ("{not json", "not a time-to-accuracy JSON"),
    (json.dumps({"recipe": "fast", "runs": []}), "command is missing"),
    (json.dumps({**_record(), "runs": [{**_runs()[0], "epochs": "ten"}]}), "runs[0].epochs is str"),
    (json.dumps(_record("quick")), "unknown recipe 'quick'"),
    (json.dumps(_record(runs=_runs(accuracies=(83.5,)))), "test accuracies must lie in 0..1"),
    (json.dumps({**_record(), "machine": ["2 cores"]}), "machine is list"),
])
def test_bad_report_only_file_is_one_line_and_writes_nothing(tta_module, tmp_path, capsys, content, problem):
    saved = tmp_path / "saved.json"
    if content is not None:
        saved.write_text(content)
    results = tmp_path / "RESULTS.md"
    code, out, err = _cli(tta_module, capsys, "--report-only", str(saved), "--results", str(results))
    assert code == 2 and err.count("\n") == 1 and str(saved) in err and problem in err, err
    assert not results.exists() and not (tmp_path / "time-to-accuracy.png").exists()


def _assert_refused_before_training(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2 and err.startswith("python benchmarks/time_to_accuracy.py: error: ") and err.count("\n") == 1
    assert all(w in err for w in words), err
    assert "seed 0:" not in out and "wrote" not in out


@pytest.mark.parametrize("flag, value", [("--runs", "0"), ("--parallel", "0"), ("--epochs", "-1")])
def test_counts_out_of_range_are_refused_before_training(tta_module, tmp_path, capsys, flag, value):
    code, out, err = _cli(tta_module, capsys, flag, value, "--data-dir", str(tmp_path / "void"), "--results", "")
    _assert_refused_before_training(code, out, err, f"{flag} must be >=")


def test_a_damaged_record_of_another_recipe_is_refused_before_training(tta_module, tmp_path, capsys):
    (tmp_path / "time_to_accuracy-best.json").write_bytes(b"\x00garbage")
    code, out, err = _cli(tta_module, capsys, "--recipe", "fast", "--data-dir", str(tmp_path / "void"), "--results",
                          str(tmp_path / "RESULTS.md"))
    _assert_refused_before_training(code, out, err, "time_to_accuracy-best.json", "--recipe best")


def test_keep_folder_holding_this_runs_checkpoints_is_refused_before_training(tta_module, tmp_path, capsys):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "fast-1.pth").write_bytes(b"an earlier run")
    code, out, err = _cli(tta_module, capsys, "--runs", "2", "--keep", str(tmp_path / "kept"), "--data-dir",
                          str(tmp_path / "void"), "--results", "")
    _assert_refused_before_training(code, out, err, "fast-1.pth", "--resume")
    assert (tmp_path / "kept" / "fast-1.pth").read_bytes() == b"an earlier run"


def test_resume_without_a_keep_folder_is_refused_before_training(tta_module, tmp_path, capsys):
    code, out, err = _cli(tta_module, capsys, "--resume", "--data-dir", str(tmp_path / "void"), "--results", "")
    _assert_refused_before_training(code, out, err, "--resume", "--keep")


def test_resume_takes_the_finished_seeds_as_recorded_and_trains_the_rest(tta_module, synthetic_cifar, tmp_path,
                                                                         capsys):
    kept, saved = tmp_path / "kept", tmp_path / "runs.json"
    assert _cli(tta_module, capsys, "--runs", "1", "--epochs", "1", "--keep", str(kept), "--data-dir",
                str(synthetic_cifar), "--results", "")[0] == 0
    finished = json.loads((kept / "fast-0.json").read_text())
    code, out, err = _cli(tta_module, capsys, "--runs", "2", "--epochs", "1", "--keep", str(kept), "--resume",
                          "--data-dir", str(synthetic_cifar), "--results", "", "--json", str(saved))
    assert code == 0, err
    assert "seed 0: finished by the stopped measurement" in out
    runs = json.loads(saved.read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and runs[0] == finished and not runs[1]["resumed"]
    assert runs[1] == json.loads((kept / "fast-1.json").read_text())


def test_resume_continues_a_seed_stopped_mid_run_and_sums_its_parts(tta_module, synthetic_cifar, tmp_path, capsys):
    kept, saved = tmp_path / "kept", tmp_path / "runs.json"
    stopped = tta_module.train(tta_module.seed_config("fast", 0, str(synthetic_cifar), kept, epochs=2),
                               stop=SimpleNamespace(is_set=lambda: True))
    assert stopped.interrupted and stopped.epochs_done == 0
    code, out, err = _cli(tta_module, capsys, "--runs", "1", "--epochs", "2", "--keep", str(kept), "--resume",
                          "--data-dir", str(synthetic_cifar), "--results", "", "--json", str(saved))
    assert code == 0, err
    assert "resuming" in out
    (run,) = json.loads(saved.read_text())["runs"]
    assert run["resumed"] and run["epochs"] == 2
    parts = run["data_seconds"] + run["train_seconds"] + run["val_seconds"] + run["test_eval_seconds"]
    assert run["wall_seconds"] == pytest.approx(parts)
    table = tta_module.markdown("fast", [run], tta_module.summarize([run]), "cmd", "date", "m")
    assert "| 0 (resumed) |" in table and "sum of its parts" in table


def test_resume_scores_a_seed_stopped_after_its_last_epoch_without_training_it_again(tta_module, synthetic_cifar,
                                                                                      tmp_path, capsys, monkeypatch):
    kept, saved = tmp_path / "kept", tmp_path / "runs.json"
    trained = tta_module.train(tta_module.seed_config("fast", 0, str(synthetic_cifar), kept, epochs=1))
    assert trained.epochs_done == 1 and not (kept / "fast-0.json").exists()  # stopped before its scoring
    monkeypatch.setattr(tta_module, "train", lambda *args, **kwargs: pytest.fail("the finished seed trained again"))
    code, out, err = _cli(tta_module, capsys, "--runs", "1", "--epochs", "1", "--keep", str(kept), "--resume",
                          "--data-dir", str(synthetic_cifar), "--results", "", "--json", str(saved))
    assert code == 0, err
    (run,) = json.loads(saved.read_text())["runs"]
    assert run["resumed"] and run["epochs"] == 1 and run["data_seconds"] == 0.0
    assert run["train_seconds"] == pytest.approx(trained.train_seconds)
    assert run["wall_seconds"] == pytest.approx(run["train_seconds"] + run["val_seconds"] + run["test_eval_seconds"])
    assert run["per_class_recall"] == pytest.approx(_hand_counted_recall(kept / "fast-0.pth", synthetic_cifar))


def test_resume_refuses_a_seed_stopped_with_other_settings_before_training(tta_module, synthetic_cifar, tmp_path,
                                                                            capsys):
    kept = tmp_path / "kept"
    tta_module.train(tta_module.seed_config("fast", 1, str(synthetic_cifar), kept, epochs=2),
                     stop=SimpleNamespace(is_set=lambda: True))
    code, out, err = _cli(tta_module, capsys, "--runs", "2", "--epochs", "3", "--keep", str(kept), "--resume",
                          "--data-dir", str(synthetic_cifar), "--results", "")
    _assert_refused_before_training(code, out, err, "fast-1.last.pth", "trained with epochs 2", "3", "delete it")
    assert not (kept / "fast-0.pth").exists()


def test_resume_refuses_a_damaged_seed_record_before_training(tta_module, tmp_path, capsys):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "fast-0.json").write_text("{not json")
    code, out, err = _cli(tta_module, capsys, "--runs", "1", "--keep", str(tmp_path / "kept"), "--resume",
                          "--data-dir", str(tmp_path / "void"), "--results", "")
    _assert_refused_before_training(code, out, err, "fast-0.json", "not a finished seed's figures", "delete it")


def test_resume_refuses_a_seed_recorded_with_other_settings(tta_module, synthetic_cifar, tmp_path, capsys):
    kept = tmp_path / "kept"
    assert _cli(tta_module, capsys, "--runs", "1", "--epochs", "1", "--keep", str(kept), "--data-dir",
                str(synthetic_cifar), "--results", "")[0] == 0
    code, out, err = _cli(tta_module, capsys, "--runs", "1", "--epochs", "2", "--keep", str(kept), "--resume",
                          "--data-dir", str(synthetic_cifar), "--results", "")
    _assert_refused_before_training(code, out, err, "fast-0.json", "epochs 1", "2")


def test_json_output_under_a_regular_file_is_refused_before_training(tta_module, tmp_path, capsys):
    (tmp_path / "plain").write_text("a file")
    code, out, err = _cli(tta_module, capsys, "--json", str(tmp_path / "plain" / "out.json"), "--data-dir",
                          str(tmp_path / "void"), "--results", "")
    _assert_refused_before_training(code, out, err, "--json", str(tmp_path / "plain"))


def test_a_full_disk_at_the_picture_is_one_line_and_keeps_the_previous_picture(tta_module, tmp_path, capsys,
                                                                               monkeypatch):
    saved = tmp_path / "best.json"
    saved.write_text(json.dumps(_record("best")))
    picture = tmp_path / "time-to-accuracy.png"
    picture.write_bytes(b"the previous picture")
    full_disk(monkeypatch, room=8000)  # each file may take 8000 bytes: the records and the section fit, the PNG not
    code, out, err = _cli(tta_module, capsys, "--report-only", str(saved), "--results", str(tmp_path / "RESULTS.md"))
    assert code == 2 and err.count("\n") == 1 and "the previous file, if any, is unchanged" in err
    assert err.startswith(f"{tta_module.PROG}: error: cannot write {picture}: No space left")
    assert picture.read_bytes() == b"the previous picture" and "wrote" not in out
    assert json.loads((tmp_path / "time_to_accuracy-best.json").read_text())["runs"] == _runs()


@pytest.mark.parametrize("args, compiled", [((), False), (("--compile",), True)])
def test_compile_flag_trains_every_seed_compiled(tta_module, synthetic_cifar, capsys, monkeypatch, args, compiled):
    asked = []

    def run_all(recipe, seeds, data_dir, workdir, parallel, **overrides):
        asked.append(tta_module.seed_config(recipe, 0, data_dir, workdir, **overrides).compile)
        return _runs()

    monkeypatch.setattr(tta_module, "run_all", run_all)
    assert _cli(tta_module, capsys, "--runs", "3", "--data-dir", str(synthetic_cifar), "--results", "", *args)[0] == 0
    assert asked == [compiled]
