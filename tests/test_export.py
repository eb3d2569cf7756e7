"""Export: every artifact loads with plain torch / onnxruntime / openvino in a process that never imports
alexnet_perf, computes what the checkpoint computes at any batch size, and carries its metadata; the set changes as a
whole or not at all, the CUDA AOTInductor package included only where a GPU is; bad checkpoints and unusable output
folders are refused in one line before any work."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from alexnet_perf import export, flags
from alexnet_perf.artifacts import AOTI_CPU, AOTI_CUDA, FILES, INT8, OPTIONAL, TORCHSCRIPT, read_source_sha256
from alexnet_perf.atomic import claim_output
from alexnet_perf.checkpoint import load_model, save_atomic, sha256_file
from alexnet_perf.data import CLASSES, MEAN, STD, load_cifar10
from alexnet_perf.errors import Terminated, UserError
from alexnet_perf.export import OPSET, ExportConfig, run_export
from alexnet_perf.loader import normalize

from conftest import full_disk

# Runs in a fresh interpreter: loads each artifact as exports/README.md shows, without alexnet_perf.
FRESH_PROCESS = r"""
import json, sys
import numpy as np, onnxruntime as ort, openvino as ov, torch
from torch._inductor import aoti_load_package

out, inputs, results = sys.argv[1:4]
x = np.load(inputs)
ts_extra, pt2_extra = {"metadata.json": ""}, {"metadata.json": ""}
torchscript = torch.jit.load(f"{out}/alexnet_cifar.ts.pt", _extra_files=ts_extra)
program = torch.export.load(f"{out}/alexnet_cifar.pt2", extra_files=pt2_extra).module()
aoti = aoti_load_package(f"{out}/alexnet_cifar.aoti-cpu.pt2")
sessions = {kind: ort.InferenceSession(f"{out}/{name}", providers=["CPUExecutionProvider"])
            for kind, name in (("onnx", "alexnet_cifar.onnx"), ("int8", "alexnet_cifar.int8.onnx"))}
core = ov.Core()
openvino = core.compile_model(core.read_model(f"{out}/alexnet_cifar.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
logits = {}
for n in (1, 7, 300):
    with torch.inference_mode():
        logits[f"torchscript-{n}"] = torchscript(torch.from_numpy(x[:n])).numpy()
        logits[f"torch.export-{n}"] = program(torch.from_numpy(x[:n])).numpy()
        logits[f"aoti-{n}"] = aoti(torch.from_numpy(x[:n])).numpy()
    for kind, session in sessions.items():
        logits[f"{kind}-{n}"] = session.run(["logits"], {"input": x[:n]})[0]
    logits[f"openvino-{n}"] = openvino({"input": x[:n]})["logits"]
np.savez(results, **logits)
metadata = {"torchscript": json.loads(ts_extra["metadata.json"]),
            "torch.export": json.loads(pt2_extra["metadata.json"]), "aoti": aoti.get_metadata()}
metadata.update({kind: s.get_modelmeta().custom_metadata_map for kind, s in sessions.items()})
print(json.dumps({"imported": sorted(m for m in sys.modules if m.split(".")[0] == "alexnet_perf"),
                  "metadata": metadata}))
"""


def test_artifacts_reload_without_the_package_and_match_the_checkpoint_at_batch_1_7_300(exported, tmp_path):
    test = load_cifar10(exported.data_dir, cache_dir=str(tmp_path / "cache")).test_images  # 64 images
    noise = torch.randint(0, 256, (300 - len(test), 3, 32, 32), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    x = normalize(torch.cat([torch.from_numpy(test), noise]), channels_last=False)
    np.save(tmp_path / "x.npy", x.numpy())
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(exported.out), str(tmp_path / "x.npy"),
                          str(tmp_path / "logits.npz")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["imported"] == []

    model, _ = load_model(exported.checkpoint)
    with torch.inference_mode():
        reference = model(x).numpy()
    logits = np.load(tmp_path / "logits.npz")
    for n in (1, 7, 300):
        for kind in ("torchscript", "torch.export", "aoti", "onnx", "openvino"):
            np.testing.assert_allclose(logits[f"{kind}-{n}"], reference[:n], rtol=0, atol=1e-4, err_msg=f"{kind}-{n}")
        assert logits[f"int8-{n}"].shape == (n, 10)
        np.testing.assert_array_equal(logits[f"int8-{n}"], logits["int8-300"][:n])
    int8_top1 = logits["int8-300"][:len(test)].argmax(1)
    assert (int8_top1 == reference[:len(test)].argmax(1)).mean() >= 0.9

    sha = sha256_file(exported.checkpoint)
    for kind, meta in info["metadata"].items():
        assert meta["source_checkpoint_sha256"] == sha, kind
        assert json.loads(meta["classes"]) == list(CLASSES)
        prep = json.loads(meta["preprocessing"])
        assert (prep["scale"], prep["mean"], prep["std"], prep["in_graph"]) == (1 / 255, list(MEAN), list(STD), False)
        assert {"torch", "onnx", "onnxscript"} <= set(json.loads(meta["exporter_versions"]))
    assert json.loads(info["metadata"]["int8"]["quantization"])["calibration_images"].endswith("training images")


def test_onnx_models_have_named_io_a_dynamic_batch_axis_and_pass_the_full_check(exported):
    for kind in ("onnx", "int8"):
        proto = onnx.load(str(exported.paths[kind]))
        onnx.checker.check_model(proto, full_check=True)
        assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value and [d.dim_value for d in dims[1:]] == [3, 32, 32]
        assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET


def test_int8_model_is_qdq_with_per_channel_seven_bit_conv_weights(exported):
    """7-bit weights: on CPUs without VNNI, pairs of u8 × s8 products are summed in saturating int16, which
    8-bit weights overflow (255 × 127 × 2 > 32,767; 255 × 64 × 2 fits)."""
    proto = onnx.load(str(exported.paths["int8"]))
    inits = {i.name: i for i in proto.graph.initializer}
    conv_weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                    and len(inits[n.input[0]].dims) == 4]
    assert len(conv_weights) == 5
    for node in conv_weights:
        assert inits[node.input[0]].data_type == onnx.TensorProto.INT8
        weights = numpy_helper.to_array(inits[node.input[0]])
        assert np.abs(weights).max() == 64  # the 7-bit range [-64, 64], used to its end
        scale = inits[node.input[1]]
        assert list(scale.dims) == [inits[node.input[0]].dims[0]]  # one scale per output channel
    activations = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert len(activations) >= 5  # activations are quantised too


def test_int8_model_quantises_activations_to_uint8(exported):
    """u8 activations: OpenVINO runs s8 ones through fp32 convolutions on an AMX CPU."""
    proto = onnx.load(str(exported.paths["int8"]))
    inits = {i.name: i for i in proto.graph.initializer}
    quantize = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in quantize)


def _other_architectures(ckpt: dict) -> dict[str, dict]:
    resized = dict(ckpt["model_state_dict"], **{"features.0.weight": torch.zeros(16, 3, 5, 5)})
    foreign = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 10)).state_dict()
    return {"resized layer": resized, "foreign network": foreign}


@pytest.mark.parametrize("variant", ["resized layer", "foreign network"])
def test_export_refuses_a_checkpoint_of_another_architecture(exported, tmp_path, variant):
    ckpt = torch.load(exported.checkpoint, weights_only=True)
    ckpt["model_state_dict"] = _other_architectures(ckpt)[variant]
    save_atomic(ckpt, tmp_path / "other.pth")
    cfg = ExportConfig(checkpoint=str(tmp_path / "other.pth"), out=str(tmp_path / "out"),
                       data_dir=str(exported.data_dir), parity=False)
    with pytest.raises(UserError, match="weights do not fit AlexNetCifar"):
        run_export(cfg)
    assert not (tmp_path / "out").exists()


def test_export_cli_refuses_a_tampered_checkpoint_in_one_line(exported, tmp_path):
    data = bytearray(exported.checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    (tmp_path / "tampered.pth").write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "alexnet_perf.export", "--checkpoint", "tampered.pth", "--out", "out",
                          "--data-dir", str(exported.data_dir)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0
    assert "tampered.pth: checkpoint is damaged or was modified after it was written" in out.stderr
    assert not (tmp_path / "out").exists()


def _expected_kinds() -> set[str]:
    """The artifact kinds an export on this machine writes: the CUDA AOTInductor package only where a GPU is."""
    return set(FILES) - (set() if torch.cuda.is_available() else OPTIONAL)


def test_every_artifact_records_its_source_checkpoint_readable_by_the_package(exported):
    sha = sha256_file(exported.checkpoint)
    assert set(exported.paths) == _expected_kinds()
    assert {kind: read_source_sha256(path) for kind, path in exported.paths.items()} == dict.fromkeys(
        exported.paths, sha)


def test_export_functions_depend_on_neither_parity_nor_the_runtime_backends():
    serving = ("('alexnet_perf.parity', 'alexnet_perf.backend', 'alexnet_perf.torch_backends', "
               "'alexnet_perf.onnx_backends')")
    out = subprocess.run([sys.executable, "-c", "import sys, alexnet_perf.export; print(sorted(m for m in "
                          f"sys.modules if m.startswith({serving})))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def _snapshot(folder):
    return {p.name: p.read_bytes() if p.is_file() else None for p in sorted(folder.iterdir())}


@pytest.fixture
def previous_set(exported, tmp_path):
    """A copy of the fixture's set with a parity report, as a good earlier export leaves it."""
    out = shutil.copytree(exported.out, tmp_path / "exports")
    (out / "PARITY.md").write_text("every backend passed\n")
    (out / "parity.json").write_text("{}\n")
    return out


def _export_cli(exported, out, capsys, *extra):
    code = flags.run(ExportConfig, export.main, "export", "", ["--checkpoint", str(exported.checkpoint), "--out",
                                                             str(out), "--data-dir", str(exported.data_dir),
                                                             "--calibration-images", "64", "--seed", "1",
                                                             "--no-parity", *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("stop, status", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_an_interrupted_or_terminated_export_leaves_the_previous_set_and_report_as_they_were(
        exported, previous_set, monkeypatch, capsys, stop, status):
    before = _snapshot(previous_set)

    def interrupted(*args):
        raise stop

    monkeypatch.setattr(export, "export_int8", interrupted)  # after TorchScript and ONNX are written
    code, err = _export_cli(exported, previous_set, capsys)
    assert code == status and err.count("\n") == 1
    assert _snapshot(previous_set) == before  # no staging folder left either


def test_a_failing_move_leaves_the_previous_set_and_report_byte_identical(exported, previous_set, monkeypatch):
    before = _snapshot(previous_set)
    monkeypatch.setattr(export, "export_aoti", lambda model, path, meta, device: shutil.copy(
        exported.out / path.name, path))  # the fixture's compilation, reused
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == previous_set / FILES[INT8] and ".staging-" in str(src):  # the third new file moved in
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src, dst)

    monkeypatch.setattr(export.os, "replace", replace)
    cfg = ExportConfig(checkpoint=str(exported.checkpoint), out=str(previous_set), data_dir=str(exported.data_dir),
                       calibration_images=64, seed=1, parity=False)
    with pytest.raises(UserError, match="cannot move the new set into .*the previous set and its report are back"):
        run_export(cfg)
    assert _snapshot(previous_set) == before


def test_an_artifact_path_taken_by_a_folder_is_refused_before_any_work(exported, previous_set, monkeypatch, capsys):
    (previous_set / FILES[AOTI_CPU]).unlink()
    (previous_set / FILES[AOTI_CPU]).mkdir()
    before = _snapshot(previous_set)
    monkeypatch.setattr(export, "load_model", lambda *a: pytest.fail("work started"))
    code, err = _export_cli(exported, previous_set, capsys)
    assert code == 2 and err.count("\n") == 1 and "alexnet_cifar.aoti-cpu.pt2 is not a regular file" in err
    assert _snapshot(previous_set) == before


def test_a_full_disk_ends_the_export_in_one_line_and_keeps_the_previous_set(exported, previous_set, monkeypatch,
                                                                            capsys):
    before = _snapshot(previous_set)
    full_disk(monkeypatch)
    code, err = _export_cli(exported, previous_set, capsys)
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    assert _snapshot(previous_set) == before


def test_an_out_held_by_another_export_is_refused_in_one_line(exported, previous_set, capsys):
    before = _snapshot(previous_set)
    with claim_output(previous_set, "--out"):
        code, err = _export_cli(exported, previous_set, capsys)
    assert code == 2 and err.count("\n") == 1 and "is in use by another run (pid" in err
    assert _snapshot(previous_set) == before


def test_completed_export_replaces_the_whole_set_and_drops_the_report_and_files_of_the_previous_one(
        exported, tmp_path, monkeypatch):
    out = shutil.copytree(exported.out, tmp_path / "exports")
    (out / "PARITY.md").write_text("every backend passed\n")
    (out / "parity.json").write_text("{}\n")
    if not torch.cuda.is_available():
        (out / FILES[AOTI_CUDA]).write_bytes(b"a CUDA package of a previous export")
    (out / ".staging-killed").mkdir()  # left by an export killed with SIGKILL
    (out / ".staging-killed" / FILES[TORCHSCRIPT]).write_bytes(b"half an export")
    before = _snapshot(out)
    # the AOTInductor compilation (tens of seconds) is the fixture's: one per session
    monkeypatch.setattr(export, "export_aoti", lambda model, path, meta, device: shutil.copy(
        exported.out / path.name, path))
    cfg = ExportConfig(checkpoint=str(exported.checkpoint), out=str(out), data_dir=str(exported.data_dir),
                       calibration_images=64, seed=1, parity=False)
    paths = run_export(cfg)
    expected = {FILES[kind] for kind in _expected_kinds()}
    assert {p.name for p in out.iterdir()} == expected and {p.name for p in paths.values()} == expected
    assert _snapshot(out)["alexnet_cifar.int8.onnx"] != before["alexnet_cifar.int8.onnx"]  # another calibration


@pytest.mark.parametrize("layout, message", [
    ("file", "--out {out} is a file, not a folder"),
    ("under a file", "--out {out} cannot be created: {parent} is a file"),
])
def test_export_cli_refuses_an_unusable_out_in_one_line_before_any_work(tmp_path, layout, message):
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" if layout == "file" else tmp_path / "taken" / "exports"
    result = subprocess.run([sys.executable, "-m", "alexnet_perf.export", "--checkpoint", str(tmp_path / "none.pth"),
                             "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert message.format(out=out, parent=tmp_path / "taken") in result.stderr  # not "checkpoint not found"
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_export_refuses_a_read_only_out_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "exports").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != str(tmp_path / "exports"))
    monkeypatch.setattr(export, "load_model", lambda *a: pytest.fail("work started"))
    with pytest.raises(UserError, match="--out .*exports: .*exports is not writable"):
        run_export(ExportConfig(out=str(tmp_path / "exports")))
