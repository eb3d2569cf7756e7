"""Every command: --help lists every option with its default, a bad or out-of-range argument is one line on stderr
with exit status 2 before any work, and user mistakes never end in a traceback."""

import dataclasses
import errno
import importlib
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet_perf import flags
from alexnet_perf.data import ARCHIVE_URL
from alexnet_perf.errors import UserError
from alexnet_perf.train_config import TrainConfig

from conftest import benchmark_script

# module: (configuration class, an option given a value outside its range)
COMMANDS = {
    "alexnet_perf.train": ("TrainConfig", ["--lr", "-1"]),
    "alexnet_perf.evaluate": ("EvalConfig", ["--batch-size", "0"]),
    "alexnet_perf.export": ("ExportConfig", ["--calibration-images", "0"]),
    "alexnet_perf.parity": ("ParityConfig", ["--atol", "-1"]),
    "alexnet_perf.report": ("ReportConfig", []),
    "alexnet_perf.predict": ("PredictConfig", []),
}


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def config_class(module: str) -> type:
    return getattr(importlib.import_module(module), COMMANDS[module][0])


@pytest.mark.parametrize("module", COMMANDS)
def test_help_lists_every_option_with_its_default(module):
    out = run(module, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: python -m {module}")
    help_text = " ".join(out.stdout.split())
    defaults = config_class(module)()
    for f in dataclasses.fields(defaults):
        if f.metadata.get("positional"):
            continue
        assert flags.flag(f.name) in help_text, f.name
        assert f"(default: {getattr(defaults, f.name)})" in help_text, f.name


@pytest.mark.parametrize("value, message", [
    ("inf", "--lr must be a finite number > 0, got inf"),
    ("nan", "--lr must be a finite number > 0, got nan"),
    ("-1", "--lr must be > 0, got -1.0"),
])
def test_an_infinite_or_nan_value_is_refused_as_not_finite_not_as_out_of_range(value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        TrainConfig(lr=float(value))  # validated as it is built, as the CLI builds it


@pytest.mark.parametrize("module", [m for m, (_, bad) in COMMANDS.items() if bad])
def test_an_out_of_range_option_is_refused_before_any_work(module, tmp_path):
    flag, value = COMMANDS[module][1]
    out = run(module, flag, value, "--data-dir", str(tmp_path / "no-data"), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith(f"python -m {module}: error: {flag} must be ")
    assert out.stderr.count("\n") == 1 and out.stdout == ""


@pytest.mark.parametrize("module", ["alexnet_perf.train", "alexnet_perf.evaluate", "alexnet_perf.parity"])
def test_a_malformed_number_is_a_usage_error(module):
    flag = {"alexnet_perf.train": "--batch-size", "alexnet_perf.evaluate": "--batch-size",
            "alexnet_perf.parity": "--batch1-images"}[module]
    out = run(module, flag, "many")
    assert out.returncode == 2 and "invalid int value: 'many'" in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "usage:" not in out.stderr


@pytest.mark.parametrize("module", COMMANDS)
def test_help_states_the_exit_statuses(module):
    out = run(module, "--help")
    text = " ".join(out.stdout.split())
    assert "exit status: 0 done" in text and "130 interrupted" in text and "143 terminated (SIGTERM)" in text


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


def test_an_unreachable_download_fails_in_one_line_naming_the_source(tmp_path):
    """Whether this machine is online or not: every HTTP(S) request of the command goes through a proxy on a local
    port that refuses connections (bound, never listening), so the download fails the same way everywhere."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        env = {**os.environ, **{name: proxy for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                                         "all_proxy", "ALL_PROXY")}, "no_proxy": "", "NO_PROXY": ""}
        out = subprocess.run([sys.executable, "-m", "alexnet_perf.train", "--data-dir", str(tmp_path / "void"),
                              "--download", "--epochs", "1"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env=env)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"python -m alexnet_perf.train: error: CIFAR-10 not found in {tmp_path / 'void'} "
                                 f"and downloading {ARCHIVE_URL} failed ("), out.stderr
    assert f"[Errno {errno.ECONNREFUSED}] Connection refused" in out.stderr  # the proxy's refusal, not the network's
    assert out.stderr.endswith("point --data-dir or CIFAR10_ROOT at a folder that holds them.\n")
    assert not [p for p in (tmp_path / "void").rglob("*") if p.is_file()]  # nothing downloaded or half-written


def test_commands_drop_only_torchs_no_cuda_runtime_notice():
    """torch logs "No CUDA runtime is found" when a CPU-only machine has a CUDA toolkit; commands drop that line
    and nothing else of torch's."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        assert flags.run(dataclasses.make_dataclass("Nothing", []), lambda cfg: 0, "prog", "", []) == 0
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert seen == ["something else"]


@pytest.mark.parametrize("script, config, field", [
    ("time_to_accuracy", "TimeToAccuracyConfig", "results"),
    ("profile_step", "ProfileConfig", "results_file"),
    ("profile_inference", "ProfileInferenceConfig", "results_file"),
])
def test_measuring_scripts_write_under_cache_by_default(script, config, field):
    for module in benchmark_script(script):
        assert Path(getattr(getattr(module, config)(), field)).parts[0] == ".cache"


def test_report_writes_under_cache_by_default():
    from alexnet_perf.report import ReportConfig

    assert Path(ReportConfig().results).parts[0] == ".cache"


def test_output_read_by_a_pipe_that_closes_early_ends_quietly():
    """`command | head`: the reader goes away while the command still prints; no traceback, status 141."""
    script = (f"{sys.executable} -c \"import sys, dataclasses; from alexnet_perf import flags; "
              f"sys.exit(flags.run(dataclasses.make_dataclass('N', []), "
              f"lambda cfg: [print('line', i) for i in range(100000)] and 0, 'p', '', []))\" | head -1")
    piped = subprocess.run(["bash", "-c", f"{script}; echo status ${{PIPESTATUS[0]}} >&2"],
                           capture_output=True, text=True, timeout=60)
    assert piped.stdout == "line 0\n" and "Traceback" not in piped.stderr and "status 141" in piped.stderr


def test_a_command_exits_with_its_status_and_the_live_objects_frozen():
    """flags.exit_with: the status reaches the shell, and the objects alive at the end are frozen out of the
    garbage collector (the interpreter's teardown then skips searching them for cycles)."""
    script = ("import atexit, gc, sys; from alexnet_perf import flags; "
              "atexit.register(lambda: print('frozen', gc.get_freeze_count(), file=sys.stderr)); flags.exit_with(3)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert int(done.stderr.split("frozen ")[1]) > 1000, done.stderr
