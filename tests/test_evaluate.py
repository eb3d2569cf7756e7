"""python -m alexnet_perf.evaluate: the scores it computes, and every mistake refused in one line before work."""

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_perf import evaluate, flags
from alexnet_perf.loader import DeviceLoader
from alexnet_perf.evaluate import EvalConfig, evaluate_model
from alexnet_perf.train import train
from alexnet_perf.train_config import TrainConfig

from conftest import full_disk, make_synthetic_cifar

PROG = "python -m alexnet_perf.evaluate"


class _FixedPredictions(nn.Module):
    """Predicts the given classes in loader order, whatever the images."""

    def __init__(self, predictions: list[int]) -> None:
        super().__init__()
        self.predictions, self.seen = torch.tensor(predictions), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chosen = self.predictions[self.seen:self.seen + len(x)]
        self.seen += len(x)
        return nn.functional.one_hot(chosen, 10).float()


def test_confusion_and_recall_equal_a_hand_count():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    predicted = [0, 1, 0, 1, 1, 2, 0, 2, 3, 9]
    loader = DeviceLoader(torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8), torch.tensor(labels), batch_size=3)
    metrics = evaluate_model(_FixedPredictions(predicted), loader)
    assert (metrics.correct, metrics.total) == (6, 10)
    assert metrics.confusion[0][:2] == [2, 1] and metrics.confusion[2][:4] == [1, 0, 2, 1]
    assert metrics.confusion[3][9] == 1 and sum(map(sum, metrics.confusion)) == 10
    assert metrics.per_class_recall()[:4] == pytest.approx([2 / 3, 1.0, 0.5, 0.0])
    assert metrics.per_class_recall()[4:] == [0.0] * 6  # classes without samples


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, checkpoint) of one short training run on learnable synthetic data."""
    root = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        data_dir = make_synthetic_cifar(root / "cifar")
        checkpoint = root / "model.pth"
        train(TrainConfig("original", epochs=1, batch_size=16, val_size=64, data_dir=str(data_dir),
                          checkpoint=str(checkpoint), tensorboard=False, device="cpu"))
    return data_dir, checkpoint


def _evaluate(trained, tmp_path, capsys, *args: str) -> tuple[int, str, str]:
    data_dir, checkpoint = trained
    code = flags.run(EvalConfig, evaluate.main, PROG, "",
                   ["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--device", "cpu",
                    "--confusion-png", str(tmp_path / "cm.png"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _assert_refused_up_front(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2 and err.startswith(f"{PROG}: error: ") and err.count("\n") == 1
    assert all(w in err for w in words), err
    assert "Test accuracy" not in out and "wrote" not in out  # nothing was evaluated or written


@pytest.mark.parametrize("flag", ["--json", "--confusion-png"])
def test_output_under_a_regular_file_is_refused_before_evaluating(trained, tmp_path, capsys, flag):
    (tmp_path / "plain").write_text("a file, not a folder")
    code, out, err = _evaluate(trained, tmp_path, capsys, flag, str(tmp_path / "plain" / "deeper" / "out"))
    _assert_refused_up_front(code, out, err, flag, str(tmp_path / "plain"))


@pytest.mark.parametrize("flag", ["--json", "--confusion-png"])
def test_output_that_is_a_folder_is_refused_before_evaluating(trained, tmp_path, capsys, flag):
    (tmp_path / "folder").mkdir()
    code, out, err = _evaluate(trained, tmp_path, capsys, flag, str(tmp_path / "folder"))
    _assert_refused_up_front(code, out, err, flag, "is a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused_before_evaluating(trained, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, out, err = _evaluate(trained, tmp_path, capsys, "--json", str(locked / "eval.json"))
    finally:
        locked.chmod(0o700)
    _assert_refused_up_front(code, out, err, "--json", str(locked))


def test_batch_size_below_one_is_refused_before_anything_is_loaded(tmp_path, capsys):
    code = flags.run(EvalConfig, evaluate.main, PROG, "",
                   ["--checkpoint", str(tmp_path / "absent.pth"), "--batch-size", "0", "--confusion-png", ""])
    out = capsys.readouterr()
    _assert_refused_up_front(code, out.out, out.err, "--batch-size must be >= 1, got 0")


def test_a_write_that_fails_after_evaluating_is_one_line_and_keeps_the_old_file(trained, tmp_path, capsys,
                                                                               monkeypatch):
    previous = tmp_path / "eval.json"
    previous.write_text('{"accuracy": 0.5}')
    full_disk(monkeypatch, room=0)  # the atomic write's temporary file fills the disk, after the up-front checks
    code, out, err = _evaluate(trained, tmp_path, capsys, "--json", str(previous))
    assert code == 2 and err.count("\n") == 1 and "the previous file, if any, is unchanged" in err
    assert err.startswith(f"{PROG}: error: cannot write {previous}: No space left")
    assert "Test accuracy" in out and "wrote" not in out and previous.read_text() == '{"accuracy": 0.5}'
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temporary file left, no picture written


def test_checkpoint_with_a_malformed_label_smoothing_is_refused(trained, tmp_path, capsys):
    data_dir, checkpoint = trained
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["label_smoothing"] = "a lot"
    odd = tmp_path / "odd.pth"
    torch.save(ckpt, odd)
    code, out, err = _evaluate((data_dir, odd), tmp_path, capsys)
    _assert_refused_up_front(code, out, err, "label_smoothing must be a number")


def _with_recorded_tta(trained, tmp_path: Path, tta: bool) -> tuple[Path, Path]:
    """(data dir, a copy of the trained checkpoint whose recipe records tta as given)."""
    data_dir, checkpoint = trained
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["tta"] = tta
    path = tmp_path / f"tta-{tta}.pth"
    torch.save(ckpt, path)
    return data_dir, path


def test_by_default_the_flip_tta_figure_is_printed_only_for_a_recipe_scored_with_it(trained, tmp_path, capsys):
    code, out, _ = _evaluate(_with_recorded_tta(trained, tmp_path, True), tmp_path, capsys,
                             "--json", str(tmp_path / "s.json"))
    snap = json.loads((tmp_path / "s.json").read_text())
    assert code == 0 and snap["recipe_uses_tta"] and snap["tta"]["total"] == snap["total"]
    assert f"Test accuracy, flip TTA: {100 * snap['tta']['accuracy']:.2f}%" in out and "this recipe's measure" in out
    assert f"Test accuracy:           {100 * snap['accuracy']:.2f}%" in out
    code, out, _ = _evaluate(_with_recorded_tta(trained, tmp_path, False), tmp_path, capsys)
    assert code == 0 and "Test accuracy:" in out and "flip TTA" not in out


@pytest.mark.parametrize("recorded, flag, shown", [(False, "on", True), (True, "off", False)])
def test_tta_flag_overrides_what_the_checkpoint_records(trained, tmp_path, capsys, recorded, flag, shown):
    code, out, _ = _evaluate(_with_recorded_tta(trained, tmp_path, recorded), tmp_path, capsys, "--tta", flag)
    assert code == 0 and ("Test accuracy, flip TTA" in out) == shown and "this recipe's measure" not in out


def test_the_flip_tta_figure_scores_the_mean_logits_of_each_image_and_its_mirror(trained, tmp_path, capsys):
    data_dir, checkpoint = _with_recorded_tta(trained, tmp_path, True)
    _evaluate((data_dir, checkpoint), tmp_path, capsys, "--json", str(tmp_path / "s.json"))
    snap = json.loads((tmp_path / "s.json").read_text())
    from alexnet_perf.checkpoint import load_model
    from alexnet_perf.data import load_cifar10

    model, _ = load_model(checkpoint)
    data = load_cifar10(str(data_dir))
    x = next(iter(DeviceLoader(data.test_images, data.test_labels, len(data.test_labels), torch.device("cpu"))))[0]
    with torch.no_grad():
        model.eval()
        mean = (model(x) + model(x.flip(3))) / 2
    assert snap["tta"]["correct"] == int((mean.argmax(1) == torch.as_tensor(data.test_labels)).sum())


class _HostReads(TorchDispatchMode):
    """Counts the operators that read a tensor's values back to the host (on a GPU, each one waits for it)."""

    SYNCHRONISING = {"aten::bincount", "aten::_local_scalar_dense", "aten::nonzero", "aten::unique",
                     "aten::_unique2", "aten::masked_select"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func._schema.name in self.SYNCHRONISING
        return func(*args, **(kwargs or {}))


def test_evaluation_reads_nothing_back_to_the_host_per_batch():
    """The number of host read-backs does not grow with the number of batches (only the totals at the end)."""
    counts = []
    for batches in (2, 6):
        n = 4 * batches
        loader = DeviceLoader(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.arange(n) % 10, batch_size=4)
        with _HostReads() as reads:
            evaluate_model(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), loader)
        counts.append(reads.count)
    assert counts[0] == counts[1]


def test_fp32_evaluation_turns_tf32_off_and_records_it(trained, tmp_path, capsys):
    """cuDNN's default is TF32 on: the fp32 reference evaluation must turn it off, and its JSON says so."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        code, _, _ = _evaluate(trained, tmp_path, capsys, "--json", str(tmp_path / "eval.json"))
        assert code == 0 and not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    assert json.loads((tmp_path / "eval.json").read_text())["tf32"] is False


def test_tta_averages_the_logits_of_image_and_mirror_image():
    from alexnet_perf.model import AlexNetCifar

    model = AlexNetCifar().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = (model(x) + model(x.flip(3))) / 2
        torch.testing.assert_close(evaluate.predict(model, x, tta=True), expected)
        torch.testing.assert_close(evaluate.predict(model, x, tta=False), model(x))


def test_cpu_evaluation_keeps_freed_memory_for_the_next_batch(trained, tmp_path, capsys, monkeypatch):
    """On a CPU each evaluation batch reuses the last one's pages (device.keep_freed_memory) instead of faulting in
    fresh ones."""
    kept: list[bool] = []
    monkeypatch.setattr(evaluate, "keep_freed_memory", lambda: kept.append(True) or True)
    code, _, _ = _evaluate(trained, tmp_path, capsys, "--device", "cpu")
    assert code == 0 and kept == [True]
