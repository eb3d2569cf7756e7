"""Every command: --help explains, a bad argument or a user mistake is one line on stderr, never a traceback."""

import subprocess
import sys

import pytest

COMMANDS = ["alexnet_perf.train", "alexnet_perf.evaluate", "alexnet_perf.export", "alexnet_perf.parity"]
INT_OPTION = {"alexnet_perf.train": "--batch-size", "alexnet_perf.evaluate": "--batch-size",
              "alexnet_perf.export": "--calibration-images", "alexnet_perf.parity": "--batch1-images"}


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_explains_the_command(module):
    out = run(module, "--help")
    assert out.returncode == 0 and "usage: python -m " + module in out.stdout and "--data-dir" in out.stdout


@pytest.mark.parametrize("module", COMMANDS)
def test_bad_argument_is_a_usage_error(module):
    out = run(module, INT_OPTION[module], "many")
    assert out.returncode == 2 and "invalid int value: 'many'" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_missing_checkpoint_is_one_line(tmp_path):
    out = run("alexnet_perf.evaluate", "--checkpoint", str(tmp_path / "none.pth"), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "error: checkpoint not found" in out.stderr


def test_evaluate_refuses_a_corrupt_checkpoint(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a zip at all")
    out = run("alexnet_perf.evaluate", "--checkpoint", str(tmp_path / "bad.pth"), cwd=tmp_path)
    assert out.returncode == 2 and "not a readable checkpoint" in out.stderr and "Traceback" not in out.stderr


def test_train_without_data_says_where_it_looked(tmp_path):
    out = run("alexnet_perf.train", "--data-dir", str(tmp_path / "void"), "--epochs", "1", cwd=tmp_path)
    assert out.returncode == 2 and "CIFAR-10 not found" in out.stderr and "Traceback" not in out.stderr
