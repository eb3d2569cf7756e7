"""Reading a checkpoint: a file that is not one is refused in one line before anything unpickles it, and one
architecture check for every command: a network for another number or order of classes is refused in one line by
evaluate, export, parity and predict, and nothing of the good set is touched."""

import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_perf import evaluate, export, flags, parity, predict
from alexnet_perf.checkpoint import load_checkpoint, save_atomic
from alexnet_perf.errors import UserError

COMMANDS = {
    "evaluate": (evaluate.EvalConfig, evaluate.main, ["--confusion-png", ""]),
    "export": (export.ExportConfig, export.main, ["--out", "{out}", "--no-parity"]),
    "parity": (parity.ParityConfig, parity.main, ["--exports", "{out}"]),
    "predict": (predict.PredictConfig, predict.main, ["{image}"]),
}


@pytest.mark.parametrize("content", [b"hi\n", b"", b"not a zip at all", bytes(range(256)) * 4],
                         ids=["text", "empty", "pickle-like", "binary"])
def test_a_file_that_is_not_a_checkpoint_is_refused_before_it_is_unpickled(content, tmp_path):
    """torch.load's pre-zip reader fails on arbitrary bytes with errors it never names (a text file: KeyError)."""
    (tmp_path / "file.pth").write_bytes(content)
    with pytest.raises(UserError, match=r"file\.pth: not a readable checkpoint \(not the zip archive"):
        load_checkpoint(tmp_path / "file.pth")


def test_a_zip_that_torch_did_not_write_is_refused_in_one_line(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.pth", "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    with pytest.raises(UserError, match=r"other\.pth: not a readable checkpoint \(") as refused:
        load_checkpoint(tmp_path / "other.pth")
    assert "\n" not in str(refused.value)


def test_a_torch_archive_whose_pickle_is_damaged_under_valid_crcs_is_refused_in_one_line(tmp_path):
    """The CRC check passes (the records were rewritten whole); torch's weights-only unpickler then meets a memo
    slot that was never set and raises KeyError."""
    torch.save({"format": "x"}, tmp_path / "good.pth")
    with zipfile.ZipFile(tmp_path / "good.pth") as good, zipfile.ZipFile(tmp_path / "bad.pth", "w") as bad:
        for name in good.namelist():
            bad.writestr(name, b"\x80\x02}h\x69." if name.endswith("data.pkl") else good.read(name))
    with pytest.raises(UserError, match=r"bad\.pth: not a readable checkpoint \(KeyError: 105\)"):
        load_checkpoint(tmp_path / "bad.pth")


@pytest.fixture
def hundred_classes(exported, tmp_path):
    """A checkpoint like the fixture's but with a 100-way classifier, saved the way train saves."""
    ckpt = torch.load(exported.checkpoint, weights_only=True)
    ckpt["num_classes"], ckpt["classes"] = 100, [f"class{i}" for i in range(100)]
    state = ckpt["model_state_dict"]
    state["classifier.2.weight"], state["classifier.2.bias"] = torch.zeros(100, 96), torch.zeros(100)
    save_atomic(ckpt, tmp_path / "c100.pth")
    return tmp_path / "c100.pth"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_checkpoint_for_another_class_count_is_refused_in_one_line_by_every_command(
        command, exported, hundred_classes, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(exported.data_dir))
    out = shutil.copytree(exported.out, tmp_path / "exports")
    (out / "PARITY.md").write_text("report on the good set\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "img.png")
    config_cls, main, extra = COMMANDS[command]
    argv = ["--checkpoint", str(hundred_classes)] + [a.format(out=out, image=tmp_path / "img.png") for a in extra]
    code = flags.run(config_cls, main, command, "", argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "c100.pth: the network predicts 100 classes, CIFAR-10 has 10" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the good set and its report untouched


def test_classes_in_another_order_are_refused(exported, tmp_path):
    from alexnet_perf.checkpoint import load_model

    ckpt = torch.load(exported.checkpoint, weights_only=True)
    ckpt["classes"] = ckpt["classes"][::-1]
    save_atomic(ckpt, tmp_path / "reversed.pth")
    with pytest.raises(UserError, match="are not CIFAR-10's"):
        load_model(tmp_path / "reversed.pth")
