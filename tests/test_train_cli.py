"""`python -m alexnet_perf.train` as users type it: recipes, range checks, output checks, Ctrl-C, SIGTERM and
--resume, concurrent runs on one checkpoint, a full disk."""

import signal
import subprocess
import sys

import pytest

from alexnet_perf import flags
from alexnet_perf.atomic import claim_output
from alexnet_perf.checkpoint import last_path, load_checkpoint
from alexnet_perf.recipes import RECIPES
from alexnet_perf.train import PROG, CtrlC, main, train
from alexnet_perf.train_config import TrainConfig

from conftest import full_disk


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
    assert flags.run(TrainConfig, never_called, PROG, "", [flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: {flag} must be ") and err.count("\n") == 1


@pytest.mark.parametrize("checkpoint", ["", "{tmp}", "{tmp}/a_file/model.pth"])
def test_an_unusable_checkpoint_path_is_refused_before_data_is_loaded(checkpoint, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    code = flags.run(TrainConfig, main, PROG, "",
                   ["--checkpoint", checkpoint.format(tmp=tmp_path), "--data-dir", str(tmp_path / "no-data"),
                    "--no-tensorboard"])
    err = capsys.readouterr().err
    assert code == 2 and "--checkpoint" in err and "CIFAR-10" not in err and err.count("\n") == 1


def test_an_unusable_log_dir_is_refused_before_data_is_loaded(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code = flags.run(TrainConfig, main, PROG, "",
                   ["--checkpoint", str(tmp_path / "m.pth"), "--log-dir", str(tmp_path / "a_file"),
                    "--data-dir", str(tmp_path / "no-data")])
    err = capsys.readouterr().err
    assert code == 2 and "--log-dir" in err and "is a file" in err


def test_recipe_flag_trains_that_recipe_with_overrides(synthetic_cifar, tmp_path):
    out = train_cli("--recipe", "fast", "--epochs", "1", "--batch-size", "16", "--tta", "--device", "cpu", "--data-dir",
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


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_the_run_exits_128_plus_signal_and_resume_finishes_it(synthetic_cifar, tmp_path, sig,
                                                                                      status):
    ckpt = tmp_path / "m.pth"
    args = ["--epochs", "8", "--batch-size", "16", "--val-size", "64", "--device", "cpu", "--data-dir",
            str(synthetic_cifar), "--checkpoint", str(ckpt), "--no-tensorboard"]
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_perf.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first_line = proc.stdout.readline()  # the first epoch is done: the handler is installed
    if first_line.startswith("--amp:"):  # the note a CPU without native bf16 gets first
        first_line = proc.stdout.readline()
    assert first_line.startswith("epoch 1/8"), first_line
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr[-2000:]
    assert "interrupted: state saved to" in stderr and "--resume" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(last_path(ckpt))
    assert 1 <= saved["epoch"] < 8 and saved["step_in_epoch"] > 0  # saved mid-epoch, right after a step
    resumed = train_cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0 and f"resuming {last_path(ckpt)}" in resumed.stdout
    assert "done:" in resumed.stdout and load_checkpoint(last_path(ckpt))["epoch"] == 8


def test_a_second_ctrl_c_aborts_at_once(capsys):
    handler = CtrlC()
    handler(signal.SIGINT, None)
    assert handler.is_set() and "saving the last checkpoint after this step" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGINT, None)


SECOND_CTRL_C_RUN = """
import os, signal, sys, time
from alexnet_perf import flags
from alexnet_perf.train import PROG, main
from alexnet_perf.train_config import TrainConfig
from alexnet_perf.training import Training

step = Training.step

def step_then_ctrl_c_twice(t, x, y):
    out = step(t, x, y)
    handler = signal.getsignal(signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    while not handler.is_set():  # the first Ctrl-C has reached the run's handler
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # the second one's KeyboardInterrupt cuts this short
    return out

Training.step = step_then_ctrl_c_twice
before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
code = flags.run(TrainConfig, main, PROG, "", sys.argv[1:])
if (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before:
    print("handlers put back")
sys.exit(code)
"""


def test_a_second_ctrl_c_during_a_run_aborts_it_with_130_in_one_line_and_saves_nothing(synthetic_cifar, tmp_path):
    """Two real SIGINTs in the first step of a real run (in a child process, where the signals cannot reach
    pytest): the first asks for a save after the step, the second ends the run at once: status 130, one line after
    the first one's notice, no checkpoint, the handlers put back, the claim on the checkpoint released."""
    ckpt = tmp_path / "m.pth"
    run = subprocess.run([sys.executable, "-c", SECOND_CTRL_C_RUN, "--epochs", "2", "--batch-size", "16",
                          "--val-size", "64", "--device", "cpu", "--data-dir", str(synthetic_cifar), "--checkpoint",
                          str(ckpt), "--no-tensorboard"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 130 and "done:" not in run.stdout, run.stderr[-2000:]
    assert run.stderr == ("\nCtrl-C: saving the last checkpoint after this step (signal again to abort without "
                          f"saving)\n{PROG}: interrupted\n")
    assert "handlers put back" in run.stdout
    assert not ckpt.exists() and not last_path(ckpt).exists()
    with claim_output(ckpt, "--checkpoint"):  # no lock left behind
        pass


def test_a_second_sigterm_aborts_at_once_with_143(capsys):
    handler = CtrlC()
    handler(signal.SIGTERM, None)
    assert handler.is_set() and handler.exit_status == 143 and "SIGTERM: saving" in capsys.readouterr().err
    with pytest.raises(flags.Terminated):
        handler(signal.SIGTERM, None)


def test_a_checkpoint_held_by_another_run_is_refused_in_one_line(tmp_path, capsys):
    with claim_output(tmp_path / "m.pth", "--checkpoint"):
        code = flags.run(TrainConfig, main, PROG, "", ["--checkpoint", str(tmp_path / "m.pth"), "--no-tensorboard",
                                                     "--data-dir", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "m.pth is in use by another run (pid" in err


def test_of_two_runs_started_together_on_one_checkpoint_exactly_one_proceeds(synthetic_cifar, tmp_path):
    args = ["--epochs", "1", "--batch-size", "16", "--val-size", "64", "--device", "cpu", "--data-dir",
            str(synthetic_cifar), "--checkpoint", str(tmp_path / "conc.pth"), "--no-tensorboard"]
    runs = [subprocess.Popen([sys.executable, "-m", "alexnet_perf.train", *args, "--seed", str(seed)], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = [seed for seed, (code, _) in zip((1, 2), results) if code == 0][0]
    loser_err = [err for code, err in results if code == 2][0]
    assert loser_err.count("\n") == 1 and "Traceback" not in loser_err  # in use, or already written: one line
    assert load_checkpoint(tmp_path / "conc.pth")["config"]["seed"] == winner


def test_a_full_disk_ends_in_one_line_and_keeps_the_previous_run(synthetic_cifar, tmp_path, capsys, monkeypatch):
    args = ["--epochs", "1", "--batch-size", "16", "--val-size", "64", "--device", "cpu", "--data-dir",
            str(synthetic_cifar), "--checkpoint", str(tmp_path / "m.pth"), "--no-tensorboard"]
    assert flags.run(TrainConfig, main, PROG, "", args) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "m.pth", last_path(tmp_path / "m.pth"))}
    full_disk(monkeypatch)
    code = flags.run(TrainConfig, main, PROG, "", [*args, "--overwrite", "--seed", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    assert "m.last.pth (epoch 1); make room and continue it with --resume" in err
    assert {p: p.read_bytes() for p in before} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class _StopAtOnce:
    def is_set(self) -> bool:
        return True


@pytest.mark.parametrize("extra, named", [(["--batch-size", "8"], "--batch-size 8 differs from its 16"),
                                          (["--recipe", "best"], "--recipe best differs from its ")])
def test_resume_refuses_flags_that_would_be_ignored(synthetic_cifar, tmp_path, capsys, extra, named):
    args = ["--epochs", "3", "--batch-size", "16", "--val-size", "64", "--device", "cpu", "--data-dir",
            str(synthetic_cifar), "--checkpoint", str(tmp_path / "m.pth"), "--no-tensorboard"]
    assert train(flags.parse(TrainConfig, PROG, "", args), _StopAtOnce()).interrupted  # saved after one step
    saved = last_path(tmp_path / "m.pth").read_bytes()
    resume = ["--resume", "--checkpoint", str(tmp_path / "m.pth"), "--data-dir", str(synthetic_cifar)]
    code = flags.run(TrainConfig, main, PROG, "", [*resume, *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and named in err, err
    assert last_path(tmp_path / "m.pth").read_bytes() == saved
