"""`python -m alexnet_perf.report`: tables, ratios, accuracy, plot and RESULTS.md from small benchmark JSONs made
with the suite's own CaseInfo and parity's own ParityReport, and from a real benchmark run and a real parity run;
damaged inputs and unusable outputs are one-line errors."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_perf import flags, parity
from alexnet_perf.backends import backend_specs
from alexnet_perf.parity import ParityConfig
from alexnet_perf.records import (CaseInfo, Inputs, OnRandomImages, OnTestImages, ParityReport, ParityRow, Reference,
                                  Tolerances)
from alexnet_perf.report import PROG, ReportConfig, main

SHA = "ab" * 32
REPO = Path(__file__).resolve().parent.parent


def case(kind, backend, batch, ms_per_sample, device="cpu", precision="fp32"):
    seconds = ms_per_sample * batch / 1000
    info = CaseInfo(kind=kind, backend=backend, device=device, precision=precision, threads=2, batch_size=batch,
                    reference=backend == "eager-fp32", ms_per_sample=ms_per_sample, samples_per_s=batch / seconds)
    return {"group": f"{kind} batch {batch}", "name": f"test_{kind}[{backend}-{batch}]",
            "extra_info": dataclasses.asdict(info), "stats": {"median": seconds, "rounds": 5, "iterations": 1}}


def bench_json(tmp_path, source="exports", sha=SHA, benchmarks=None):
    data = {"machine_info": {"description": "2 cores, Test CPU", "versions": {"torch": "9.9"}},
            "datetime": "2026-11-29T04:25:46.713606+00:00", "command": "pytest benchmarks/ --benchmark-only",
            "artifacts": {"folder": "exports", "source": source, "checkpoint_sha256": sha},
            "load_average": {"start": 0.25, "end": 1.5, "cores": 2},
            "flops_per_sample": {"inference": 73.6e6, "training": 216e6},
            "skipped": [{"test": f"test_inference[onnxruntime-cuda-{b}]", "reason": "no GPU here"} for b in (1, 128)],
            "benchmarks": benchmarks if benchmarks is not None else [
                case("inference", "eager-fp32", 1, 2.0), case("inference", "onnxruntime-cpu", 1, 0.5),
                case("inference", "eager-fp32", 128, 1.0), case("inference", "onnxruntime-cpu", 128, 0.25),
                case("inference", "compiled-bf16-channels-last", 128, 0.2, precision="bf16"),
                case("training", "eager-fp32", 128, 4.0), case("training", "eager-bf16-channels-last", 128, 2.0)]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def parity_row(name, batch, accuracy):
    return ParityRow(name, "fp32", "cpu", "pass", batch, test=OnTestImages(0, 0, 1, 64, accuracy, 0.9123, 0),
                     random=OnRandomImages(0, 0, 1, 6))


def parity_json(tmp_path, sha=SHA):
    rows = [parity_row(name, bs, acc) for name, acc in (("eager-fp32", 0.9123), ("onnxruntime-cpu", 0.9122))
            for bs in (1, 256)]
    rows.append(ParityRow("onnxruntime-cuda", "fp32", "cuda", "skipped", reason="no GPU"))
    report = ParityReport("today", "2 cores", "parity", {}, "model.pth", sha, "exports",
                          Reference("eager-fp32", "cpu", 256, 0.9123), Inputs(64, 10, 6, 0, [1, 256]),
                          Tolerances(1e-4, 1.0, 0.5, 0.97), rows, True)
    path = tmp_path / "parity.json"
    path.write_text(json.dumps(report.to_dict()))
    return path


def report(tmp_path, bench, parity=None, **overrides):
    cfg = ReportConfig(benchmark_json=str(bench), results=str(tmp_path / "RESULTS.md"),
                       parity=str(parity or tmp_path / "absent.json"), **overrides)
    assert main(cfg) == 0
    return (tmp_path / "RESULTS.md").read_text()


def pixels(path: Path) -> np.ndarray:
    """The PNG at path as an RGB array (height, width, 3)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


LINE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]  # matplotlib's first four, in order


def lines_drawn(plot: np.ndarray) -> int:
    """How many of matplotlib's line colours the plot shows (each line's markers fill dozens of pixels)."""
    return sum(int((plot == colour).all(axis=2).sum()) >= 20 for colour in LINE_COLOURS)


def refused(tmp_path, capsys, *argv: str) -> str:
    """Run the command with a RESULTS file already there; check that it exits 2, leaves that file as it was and
    writes no plot; the one line it printed on stderr."""
    results = tmp_path / "R.md"
    results.write_text("# Results\n\nkept as it is\n")
    code = flags.run(ReportConfig, main, PROG, "", [*argv, "--results", str(results)])
    out = capsys.readouterr()
    assert code == 2 and out.out == "" and out.err.count("\n") == 1 and out.err.endswith("\n"), out
    assert results.read_text() == "# Results\n\nkept as it is\n" and not (tmp_path / "latency-cpu.png").exists()
    assert out.err.startswith(f"{PROG}: error: ")
    return out.err


def row(text, *cells):
    """The table line starting with these cells."""
    prefix = "| " + " | ".join(map(str, cells)) + " |"
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return [c.strip() for c in line.strip("|").split("|")]


def test_skipped_cases_of_one_test_reason_and_batch_sizes_share_one_line(tmp_path):
    no_gpu, no_cuda = "device cuda asked for, but torch sees no CUDA GPU here", "torch sees no CUDA GPU here"
    skipped = ([{"test": f"test_inference[{c}-{b}]", "reason": no_gpu} for c in ("eager-fp32-cuda", "aoti-cuda")
                for b in (1, 128)]
               + [{"test": "test_inference[onnxruntime-cuda-1]", "reason": no_gpu}]
               + [{"test": f"test_recipe_step_cuda[{c}]", "reason": no_cuda} for c in ("fast-eager", "best-eager")]
               + [{"test": "test_gpu_only", "reason": no_cuda}])
    bench = bench_json(tmp_path)
    data = json.loads(bench.read_text())
    bench.write_text(json.dumps({**data, "skipped": skipped}))
    text = report(tmp_path, bench)
    listed = text.split("Skipped cases, with the reason the suite gave:\n\n")[1].split("\n<!--")[0].splitlines()
    assert listed == [f"- `test_inference[eager-fp32-cuda, aoti-cuda]` at batch 1, 128: {no_gpu}",
                      f"- `test_inference[onnxruntime-cuda]` at batch 1: {no_gpu}",
                      f"- `test_recipe_step_cuda[fast-eager, best-eager]`: {no_cuda}",
                      f"- `test_gpu_only`: {no_cuda}"]


def test_table_has_ms_per_sample_throughput_speedup_and_parity_accuracy(tmp_path):
    text = report(tmp_path, bench_json(tmp_path), parity_json(tmp_path))
    inference, training = text.split("### Training throughput")
    assert row(inference, 1, "onnxruntime-cpu", "cpu")[5:] == ["0.5000", "2,000", "4.00×", "147", "91.22%"]
    assert row(inference, 128, "eager-fp32", "cpu")[5:] == ["1.00", "1,000", "1.00×", "74", "91.23%"]
    assert row(inference, 128, "compiled-bf16-channels-last", "cpu")[5:] == ["0.2000", "5,000", "5.00×", "368", "—"]
    assert "Fastest: cpu batch 1: **onnxruntime-cpu** 0.5000 ms/sample; cpu batch 128: " \
           "**compiled-bf16-channels-last**" in text
    assert row(training, 128, "eager-bf16-channels-last", "cpu")[5:] == ["2.00", "500", "2.00×", "108"]
    assert "- `test_inference[onnxruntime-cuda]` at batch 1, 128: no GPU here" in text
    assert "pytest benchmarks/ --benchmark-only" in text and "2026-11-29 04:25 UTC" in text
    assert "2 cores, Test CPU" in text and "(1-minute average, 2 cores): 0.25 at the start, 1.50 at the end" in text
    assert "](latency-cpu.png)" in text
    plot = pixels(tmp_path / "latency-cpu.png")
    assert plot.shape == (550, 800, 3) and lines_drawn(plot) == 3  # one line per inference backend

    other = tmp_path / "other"
    other.mkdir()
    data = json.loads((tmp_path / "bench.json").read_text())
    data["benchmarks"][3] = case("inference", "onnxruntime-cpu", 128, 0.05)  # was 0.25
    (other / "bench.json").write_text(json.dumps(data))
    report(other, other / "bench.json")
    assert (pixels(other / "latency-cpu.png") != plot).any()  # the plot is of the timings, not a fixed picture


@pytest.mark.parametrize("source, sha, why", [("random-init", None, "randomly initialised stand-in"),
                                              ("exports", "cd" * 32, "another checkpoint")])
def test_accuracy_is_withheld_when_parity_did_not_check_the_timed_artifacts(tmp_path, source, sha, why):
    text = report(tmp_path, bench_json(tmp_path, source=source, sha=sha), parity_json(tmp_path))
    assert why in text and "test accuracy |" not in text and "91.2" not in text


def test_rerunning_replaces_only_its_own_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    other = "<!-- begin time-to-accuracy -->\nkept as it is\n<!-- end time-to-accuracy -->"
    results.write_text(f"# Results\n\nIntro.\n\n{other}\n")
    bench = bench_json(tmp_path)
    first = report(tmp_path, bench)
    assert report(tmp_path, bench) == first
    assert first.startswith("# Results\n\nIntro.\n\n" + other)
    assert first.count("<!-- begin benchmarks-cpu -->") == 1 and first.count("<!-- end benchmarks-cpu -->") == 1
    cpu_plot = (tmp_path / "latency-cpu.png").read_bytes()
    gpu = report(tmp_path, bench, label="h200")
    assert gpu.count("<!-- begin benchmarks-") == 2 and other in gpu and "](latency-h200.png)" in gpu
    assert (tmp_path / "latency-cpu.png").read_bytes() == cpu_plot
    # the same timings under another label: the same plot but for its title, which names the label
    old, new = pixels(tmp_path / "latency-cpu.png"), pixels(tmp_path / "latency-h200.png")
    assert new.shape == old.shape and lines_drawn(new) == 3
    differing_rows = np.nonzero((new != old).any(axis=(1, 2)))[0]
    assert differing_rows.size and differing_rows.max() < 40


def test_training_only_json_writes_no_plot(tmp_path):
    text = report(tmp_path, bench_json(tmp_path, benchmarks=[case("training", "eager-fp32", 512, 3.0)]))
    assert "### Training throughput" in text and "### Inference" not in text
    assert not (tmp_path / "latency-cpu.png").exists()


def test_json_without_benchmark_figures_is_one_line_saying_so_and_writes_nothing(tmp_path, capsys):
    bench = bench_json(tmp_path, benchmarks=[{"name": "test_other", "extra_info": {}, "stats": {}}])
    err = refused(tmp_path, capsys, "--benchmark-json", str(bench))
    assert err.startswith(f"{PROG}: error: {bench}: no benchmark in it carries ms_per_sample (is it the JSON of "
                          f"`pytest benchmarks/ --benchmark-only --benchmark-json=...`?)")


def test_missing_json_is_one_line_on_stderr(tmp_path):
    out = subprocess.run([sys.executable, "-m", "alexnet_perf.report", "--benchmark-json", str(tmp_path / "no.json")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "benchmark JSON not found" in out.stderr and "Traceback" not in out.stderr


def test_damaged_parity_json_is_one_line_and_writes_nothing(tmp_path, capsys):
    damaged = tmp_path / "parity.json"
    damaged.write_text(json.dumps({"checkpoint_sha256": SHA, "reference": {"batch_size": 256}, "results": []}))
    err = refused(tmp_path, capsys, "--benchmark-json", str(bench_json(tmp_path)), "--parity", str(damaged))
    assert err.startswith(f"{PROG}: error: {damaged}: not a parity report of this version (date is missing; ")


@pytest.mark.parametrize("flag, message", [("--benchmark-json", "is a folder, not a benchmark JSON file"),
                                           ("--results", "is a folder, not a file"),
                                           ("--plot", "is a folder, not a file")])
def test_a_folder_where_a_file_belongs_is_one_line_on_stderr(tmp_path, flag, message):
    (tmp_path / "folder").mkdir()
    paths = {"--benchmark-json": str(bench_json(tmp_path)), "--results": str(tmp_path / "R.md"),
             "--plot": str(tmp_path / "p.png"), flag: str(tmp_path / "folder")}
    out = subprocess.run([sys.executable, "-m", "alexnet_perf.report", *(a for kv in paths.items() for a in kv)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert f"{flag} {tmp_path / 'folder'} {message}" in out.stderr
    assert not (tmp_path / "R.md").exists() and not (tmp_path / "p.png").exists()


def test_malformed_case_in_benchmark_json_is_one_line_naming_the_case_and_field(tmp_path, capsys):
    broken = case("inference", "eager-fp32", 1, 2.0)
    broken["extra_info"]["batch_size"] = "one"
    bench = bench_json(tmp_path, benchmarks=[broken])
    err = refused(tmp_path, capsys, "--benchmark-json", str(bench))
    assert err == (f"{PROG}: error: {bench}: benchmark 'test_inference[eager-fp32-1]' has a malformed "
                   f"extra_info.batch_size is str, expected int\n")


@pytest.mark.parametrize("field, value", [("ms_per_sample", -1.0), ("ms_per_sample", float("nan")),
                                          ("samples_per_s", float("inf")), ("ms_per_sample", 0.0),
                                          ("batch_size", 0)])
def test_impossible_timings_are_refused_in_one_line_and_write_nothing(tmp_path, capsys, field, value):
    broken = case("inference", "eager-fp32", 1, 2.0)
    broken["extra_info"][field] = value
    bench = bench_json(tmp_path, benchmarks=[broken])  # json writes NaN and Infinity as Python reads them back
    code = flags.run(ReportConfig, main, PROG, "", argv=["--benchmark-json", str(bench),
                                                      "--results", str(tmp_path / "R.md")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"extra_info.{field} = " in err
    assert not (tmp_path / "R.md").exists()


def test_report_of_a_real_benchmark_run_shows_a_real_parity_runs_accuracy(exported, tmp_path, monkeypatch, capsys):
    """The suite's JSON and parity's parity.json, as their producers write them, read by the report."""
    exports = shutil.copytree(exported.out, tmp_path / "exports")
    timed = ("onnxruntime-cpu", "aoti-cpu", "openvino-fp32", "openvino-int8")
    monkeypatch.setattr(parity, "backend_specs", lambda: [s for s in backend_specs()
                                                          if s.name in ("eager-fp32", *timed)])
    assert parity.main(ParityConfig(checkpoint=str(exported.checkpoint), exports=str(exports),
                                    data_dir=str(exported.data_dir), batch1_images=4, random_inputs=4)) == 0
    checked = ParityReport.read(exports / "parity.json")
    accuracies = {r.backend: r.test.accuracy for r in checked.results if r.batch_size == 256}

    bench = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_inference.py", "-k",
                          f"({' or '.join(('eager-fp32', *timed))}) and 1]", "--benchmark-only",
                          "--benchmark-max-time=0.01", "--benchmark-min-rounds=1", f"--benchmark-json={bench}",
                          f"--exports={exports}", "-p", "no:cacheprovider", "-q"], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    text = report(tmp_path, bench, exports / "parity.json")
    assert row(text, 1, "eager-fp32", "cpu")[7] == "1.00×"
    for name in timed:
        assert row(text, 1, name, "cpu")[-1] == f"{100 * accuracies[name]:.2f}%", name
    assert f"`{exports.name}` (exported from checkpoint sha256 {checked.checkpoint_sha256[:12]}…)" in text


def test_gpu_recipe_steps_show_each_recipes_time_per_epoch_and_projected_run(tmp_path):
    step = case("training", "best-compiled", 256, 0.004, device="cuda:0", precision="bf16")
    step["extra_info"].update(recipe="best", images_per_epoch=49_920, epochs=50, threads=None)
    fp32 = case("training", "original-eager", 128, 0.01, device="cuda:0")
    fp32["extra_info"].update(recipe="original", images_per_epoch=39_936, epochs=500, threads=None, tf32=True)
    text = report(tmp_path, bench_json(tmp_path, benchmarks=[case("training", "eager-fp32", 128, 4.0), step, fp32]))
    training = text.split("### Training throughput")[1]
    assert row(training, 256, "best-compiled", "cuda:0")[-3:] == ["best", "0.2", "0.2 min"]  # 49,920 × 4 µs × 50
    assert row(training, 128, "original-eager", "cuda:0")[3] == "fp32 (TF32)"
    assert row(training, 128, "original-eager", "cuda:0")[-3:] == ["original", "0.4", "3.3 min"]
    assert row(training, 128, "eager-fp32", "cpu")[-3:] == ["—", "—", "—"]
    assert "Rehearsal" not in text


def test_a_stand_in_run_says_it_is_a_rehearsal(tmp_path):
    bench = bench_json(tmp_path, benchmarks=[case("inference", "eager-fp32-cuda", 1, 0.5)])
    data = json.loads(bench.read_text())
    bench.write_text(json.dumps({**data, "gpu_stand_in": True}))
    assert "**Rehearsal:** the GPU cases ran on the CPU" in report(tmp_path, bench)
