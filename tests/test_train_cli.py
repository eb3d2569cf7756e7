"""`python -m alexnet_perf.train` as users type it: recipes, range checks, output checks, Ctrl-C and --resume."""

import signal
import subprocess
import sys

import pytest

from alexnet_perf import cli
from alexnet_perf.checkpoint import last_path, load_checkpoint
from alexnet_perf.recipes import RECIPES
from alexnet_perf.train import PROG, CtrlC, TrainConfig, main


def train_cli(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "alexnet_perf.train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def never_called(cfg):
    raise AssertionError("the command ran although its configuration is invalid")


@pytest.mark.parametrize("flag, value", [
    ("--epochs", "0"), ("--epochs", "-3"), ("--batch-size", "0"), ("--lr", "-1"), ("--lr", "0"), ("--lr", "inf"),
    ("--lr", "nan"), ("--momentum", "-1"), ("--momentum", "1"), ("--ema", "1.5"), ("--ema", "-0.1"),
    ("--label-smoothing", "1.5"), ("--label-smoothing", "-0.5"), ("--crop-padding", "-1"),
    ("--weight-decay", "-1"), ("--limit-train", "-5"), ("--warmup-epochs", "-5"), ("--val-size", "-1"),
    ("--clip-grad-norm", "-1"), ("--bn-momentum", "0"), ("--log-every", "0"), ("--seed", "-1"),
])
def test_out_of_range_numbers_are_refused_in_one_line_before_any_work(flag, value, capsys):
    assert cli.run(TrainConfig, never_called, PROG, "", [flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: {flag} must be ") and err.count("\n") == 1


@pytest.mark.parametrize("checkpoint", ["", "{tmp}", "{tmp}/a_file/model.pth"])
def test_an_unusable_checkpoint_path_is_refused_before_data_is_loaded(checkpoint, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    code = cli.run(TrainConfig, main, PROG, "",
                   ["--checkpoint", checkpoint.format(tmp=tmp_path), "--data-dir", str(tmp_path / "no-data"),
                    "--no-tensorboard"])
    err = capsys.readouterr().err
    assert code == 2 and "--checkpoint" in err and "CIFAR-10" not in err and err.count("\n") == 1


def test_an_unusable_log_dir_is_refused_before_data_is_loaded(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code = cli.run(TrainConfig, main, PROG, "",
                   ["--checkpoint", str(tmp_path / "m.pth"), "--log-dir", str(tmp_path / "a_file"),
                    "--data-dir", str(tmp_path / "no-data")])
    err = capsys.readouterr().err
    assert code == 2 and "--log-dir" in err and "is a file" in err


def test_recipe_flag_trains_that_recipe_with_overrides(synthetic_cifar, tmp_path):
    out = train_cli("--recipe", "fast", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--data-dir",
                    str(synthetic_cifar), "--checkpoint", str(tmp_path / "m.pth"), "--no-tensorboard", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done: kept the last epoch (1; no validation split)" in out.stdout
    printed = out.stdout.split("done:", 1)[1].splitlines()[1:]  # the test report of the checkpoint it kept
    assert printed[0].startswith("Test accuracy:") and printed[1].startswith("Test accuracy, flip TTA:")
    assert "Per-class recall:  plain  flip TTA" in printed and len([p for p in printed if "%" in p]) == 2 + 10
    evaluated = subprocess.run([sys.executable, "-m", "alexnet_perf.evaluate", "--checkpoint", str(tmp_path / "m.pth"),
                                "--data-dir", str(synthetic_cifar), "--device", "cpu", "--confusion-png", ""],
                               capture_output=True, text=True, timeout=300, cwd=tmp_path)
    def scores(lines: list[str]) -> list[str]:
        return [line for line in lines if not line.startswith("Latency:")]

    assert evaluated.returncode == 0 and scores(evaluated.stdout.splitlines()) == scores(printed)
    saved = load_checkpoint(tmp_path / "m.pth")["config"]
    expected = TrainConfig("fast", epochs=1, batch_size=16)
    assert {k: saved[k] for k in RECIPES["fast"]} == {k: getattr(expected, k) for k in RECIPES["fast"]}
    assert saved["recipe"] == "fast" and saved["epochs"] == 1 and saved["whiten_init"]


def test_second_run_without_resume_exits_2_and_keeps_the_first(synthetic_cifar, tmp_path):
    args = ["--epochs", "1", "--batch-size", "16", "--val-size", "64", "--device", "cpu", "--data-dir",
            str(synthetic_cifar), "--checkpoint", str(tmp_path / "m.pth"), "--no-tensorboard"]
    assert train_cli(*args, cwd=tmp_path).returncode == 0
    before = (tmp_path / "m.pth").read_bytes()
    again = train_cli(*args, "--seed", "5", cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "m.pth").read_bytes() == before


def test_ctrl_c_saves_the_run_exits_130_and_resume_finishes_it(synthetic_cifar, tmp_path):
    ckpt = tmp_path / "m.pth"
    args = ["--epochs", "30", "--batch-size", "16", "--val-size", "64", "--device", "cpu", "--data-dir",
            str(synthetic_cifar), "--checkpoint", str(ckpt), "--no-tensorboard"]
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_perf.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first_line = proc.stdout.readline()  # the first epoch is done: the handler is installed
    assert first_line.startswith("epoch 1/30"), first_line
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted: state saved to" in stderr and "--resume" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(last_path(ckpt))
    assert 1 <= saved["epoch"] < 30 and saved["step_in_epoch"] > 0  # saved mid-epoch, right after a step
    resumed = train_cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0 and f"resuming {last_path(ckpt)}" in resumed.stdout
    assert "done:" in resumed.stdout and load_checkpoint(last_path(ckpt))["epoch"] == 30


def test_a_second_ctrl_c_aborts_at_once(capsys):
    handler = CtrlC()
    handler(signal.SIGINT, None)
    assert handler.is_set() and "saving the last checkpoint after this step" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGINT, None)


def test_an_abort_exits_130_in_one_line(capsys):
    def aborted(cfg):
        raise KeyboardInterrupt

    assert cli.run(TrainConfig, aborted, PROG, "", []) == 130
    assert capsys.readouterr().err == f"{PROG}: interrupted\n"
