"""predict: the user's own pictures (any size, grayscale, transparent, 16-bit) become the network's input as
documented, every CPU backend classifies them like the checkpoint does, and a file that is not an image is one line
naming it, before any model is loaded."""

import json
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_perf import flags, predict
from alexnet_perf.backend_base import Backend, BackendUnavailable
from alexnet_perf.backends import backend_spec, backend_specs
from alexnet_perf.checkpoint import load_model
from alexnet_perf.data import CLASSES, read_batch
from alexnet_perf.errors import UserError
from alexnet_perf.loader import normalize
from alexnet_perf.predict import PredictConfig, read_image, read_images, resize_to_input, run_predict, timed_logits

CPU_BACKENDS = [spec.name for spec in backend_specs("cpu")]


def _save(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path)
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    """An RGB PNG of another size (50×40), a JPEG, a grayscale PNG and a text file named like a PNG."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(1)
    (root / "notes.png").write_text("this is not a picture\n")
    return {"rgb": _save(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), root / "wide.png"),
            "jpeg": _save(rng.integers(0, 256, (90, 60, 3), dtype=np.uint8), root / "tall.jpg"),
            "gray": _save(np.tile(np.linspace(0, 255, 48).astype(np.uint8), (48, 1)), root / "gray.png"),
            "not an image": root / "notes.png"}


@pytest.fixture(scope="module")
def cifar_pictures(exported, tmp_path_factory) -> list[Path]:
    """Eight test-split images of the data the checkpoint was trained on, as 32×32 PNG files."""
    root = tmp_path_factory.mktemp("cifar_pictures")
    images, _ = read_batch(exported.data_dir / "cifar-10-batches-py" / "test_batch")
    return [_save(image.transpose(1, 2, 0), root / f"test{i}.png") for i, image in enumerate(images[:8])]


def _predict(exported, files, backend: str = "eager-fp32"):
    return run_predict(PredictConfig(images=tuple(map(str, files)), backend=backend,
                                     checkpoint=str(exported.checkpoint), exports=str(exported.out)))


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alexnet_perf.predict", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


# --- pictures → input ---------------------------------------------------------------------------------------

def test_shrinking_averages_each_block_into_one_pixel():
    colours = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    picture = Image.fromarray(colours.repeat(2, axis=0).repeat(2, axis=1))  # 64×64 of 2×2 blocks
    assert np.array_equal(np.asarray(resize_to_input(picture)), colours)


def test_a_wide_picture_is_cropped_to_its_centre_square_not_stretched():
    picture = np.zeros((40, 50, 3), dtype=np.uint8)
    picture[:, :5], picture[:, 5:45], picture[:, 45:] = (255, 0, 0), (0, 200, 0), (0, 0, 255)
    out = np.asarray(resize_to_input(Image.fromarray(picture)))
    assert out.shape == (32, 32, 3) and (out == (0, 200, 0)).all()


def test_a_small_picture_is_enlarged_to_32_pixels():
    out = np.asarray(resize_to_input(Image.new("RGB", (8, 12), (10, 120, 240))))
    assert out.shape == (32, 32, 3) and (out == (10, 120, 240)).all()


def test_grayscale_becomes_three_equal_channels(pictures):
    image = read_image(pictures["gray"])
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8
    assert (image[0] == image[1]).all() and (image[1] == image[2]).all() and image.max() > image.min()


def test_transparent_pixels_become_white(tmp_path):
    picture = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    picture.paste((0, 0, 255, 255), (0, 0, 40, 20))
    image = read_image(_save(np.asarray(picture), tmp_path / "half.png"))
    assert (image[:, :16] == np.array([0, 0, 255])[:, None, None]).all()
    assert (image[:, 16:] == 255).all()


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.repeat(np.array([[40000], [65535]], dtype=np.uint16), 20, axis=0).repeat(40, axis=1)).save(path)
    image = read_image(path)
    assert (image[:, :16] == round(40000 / 257)).all() and (image[:, 16:] == 255).all()


def test_channels_come_first_in_rgb_order(tmp_path):
    image = read_image(_save(np.full((32, 32, 3), (1, 2, 3), dtype=np.uint8), tmp_path / "rgb.png"))
    assert image[:, 7, 9].tolist() == [1, 2, 3]


def test_every_bad_file_is_named_in_one_error(pictures, tmp_path):
    with pytest.raises(UserError) as e:
        read_images([pictures["rgb"], pictures["not an image"], tmp_path / "missing.jpg"])
    message = str(e.value)
    assert "notes.png: not an image" in message and "missing.jpg: no such file" in message
    assert "\n" not in message and "wide.png" not in message


def test_a_truncated_jpeg_is_reported_as_damaged(pictures, tmp_path):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(pictures["jpeg"].read_bytes()[:300])
    with pytest.raises(UserError, match=r"cut\.jpg: damaged or unreadable image"):
        read_image(cut)


def test_pillows_warnings_on_a_damaged_file_do_not_reach_the_user(tmp_path, recwarn):
    """A TIFF cut inside its tag table: Pillow warns (corrupt EXIF data, truncated read) before it gives up; the
    user sees the one line, not Pillow's warnings with its source lines."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "full.tiff")
    for size in (30, 60):
        cut = tmp_path / f"cut{size}.tiff"
        cut.write_bytes((tmp_path / "full.tiff").read_bytes()[:size])
        with pytest.raises(UserError, match=rf"cut{size}\.tiff: not an image"):
            read_image(cut)
    assert [str(w.message) for w in recwarn] == []


# --- classification -----------------------------------------------------------------------------------------

def test_each_file_gets_probabilities_and_a_sorted_top3(exported, pictures):
    files = [pictures["rgb"], pictures["jpeg"], pictures["gray"]]
    result = _predict(exported, files)
    assert [p.file for p in result.predictions] == list(map(str, files))
    for prediction in result.predictions:
        assert sum(prediction.probabilities) == pytest.approx(1, abs=1e-5)
        top = prediction.top()
        assert len(top) == 3 and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
        assert top[0][1] == max(prediction.probabilities) and {c for c, _ in top} <= set(CLASSES)
    assert result.backend == "eager-fp32"


class _Slow(Backend):
    """A backend whose every call takes 100 ms or more, each call's duration measured from inside it."""

    name, device = "slow", torch.device("cpu")

    def __init__(self) -> None:
        self.durations: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        time.sleep(0.1)
        self.durations.append(time.perf_counter() - start)
        return torch.zeros(len(x), 10)


def test_the_latency_is_the_one_timed_call_after_the_warm_up(pictures):
    files = [pictures["rgb"], pictures["jpeg"], pictures["gray"]]
    backend = _Slow()
    result = predict.classify(backend, read_images(files), files)
    assert len(backend.durations) == predict.WARMUP_CALLS + 1
    assert backend.durations[-1] <= result.seconds < backend.durations[-1] + 0.1  # not the warm-up calls too
    assert result.ms_per_image == pytest.approx(1000 * result.seconds / 3)


def test_prediction_equals_the_model_on_the_same_input(exported, pictures):
    files = [pictures["rgb"], pictures["jpeg"], pictures["gray"]]
    model, _ = load_model(exported.checkpoint)
    with torch.no_grad():
        expected = torch.softmax(model(normalize(torch.from_numpy(read_images(files)), channels_last=False)), 1)
    got = torch.tensor([p.probabilities for p in _predict(exported, files).predictions])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_every_cpu_backend_agrees_with_eager_on_top1(exported, cifar_pictures, name):
    reference = _predict(exported, cifar_pictures).predictions
    try:
        result = _predict(exported, cifar_pictures, backend=name)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    assert result.backend == name
    assert [p.top(1)[0][0] for p in result.predictions] == [p.top(1)[0][0] for p in reference]
    tolerance = 1e-4 if backend_spec(name).precision == "fp32" else 0.05
    got, expected = ([p.probabilities for p in r] for r in (result.predictions, reference))
    assert np.allclose(got, expected, atol=tolerance, rtol=0)


def test_an_artifact_backend_needs_no_checkpoint(exported, pictures, tmp_path):
    result = run_predict(PredictConfig(images=(str(pictures["rgb"]),), backend="onnxruntime-cpu",
                                       checkpoint=str(tmp_path / "none.pth"), exports=str(exported.out)))
    reference = _predict(exported, [pictures["rgb"]]).predictions[0]
    assert result.predictions[0].probabilities == pytest.approx(reference.probabilities, abs=1e-5)


def test_a_missing_artifact_is_the_registry_error_naming_it(exported, pictures, tmp_path):
    with pytest.raises(UserError, match="exported model not found"):
        run_predict(PredictConfig(images=(str(pictures["rgb"]),), backend="onnxruntime-int8",
                                  checkpoint=str(exported.checkpoint), exports=str(tmp_path)))


# --- the command --------------------------------------------------------------------------------------------

def test_command_prints_top3_per_file_and_the_latency(exported, pictures, tmp_path):
    out = _command(str(pictures["rgb"]), str(pictures["gray"]), "--checkpoint", str(exported.checkpoint),
                   "--exports", str(exported.out), "--json", str(tmp_path / "p.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    top3 = r": (\w+ \d+\.\d%, ){2}\w+ \d+\.\d%$"
    assert re.match(re.escape(str(pictures["rgb"])) + top3, lines[0])
    assert re.match(re.escape(str(pictures["gray"])) + top3, lines[1])
    assert re.match(r"eager-fp32 on cpu: 2 images in one batch, \d+\.\d\d ms \(\d+\.\d{3} ms/image\)$", lines[2])
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["backend"] == "eager-fp32" and [p["file"] for p in saved["predictions"]] == \
        [str(pictures["rgb"]), str(pictures["gray"])]


def test_a_non_image_file_is_one_line_naming_it_before_any_model_is_loaded(pictures, tmp_path):
    out = _command(str(pictures["rgb"]), str(pictures["not an image"]), "--checkpoint", str(tmp_path / "none.pth"),
                   cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("python -m alexnet_perf.predict: error: ") and "notes.png: not an image" in out.stderr


def test_an_unknown_backend_is_refused_in_one_line(pictures, tmp_path):
    out = _command(str(pictures["rgb"]), "--backend", "abacus", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "abacus" in out.stderr
    assert out.stderr.count("\n") == 1 and "invalid choice" in out.stderr and "usage:" not in out.stderr


def test_no_image_at_all_is_a_user_error():
    with pytest.raises(UserError, match="no image given"):
        read_images([])


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height pixels but holds almost no data: what a decoder sees first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_144_megapixel_picture_is_refused_before_decoding(tmp_path):
    huge = _png_header_only(tmp_path / "huge.png", 12_000, 12_000)
    with pytest.raises(UserError, match=r"huge.png: 12000x12000 pixels \(144 megapixels\) is more than the 50"):
        read_image(huge)


def test_a_truncated_torch_export_file_is_one_line_without_torchs_logged_traceback(exported, pictures, tmp_path,
                                                                                  capfd):
    exports = shutil.copytree(exported.out, tmp_path / "exports")
    program = exports / "alexnet_cifar.pt2"
    program.write_bytes(program.read_bytes()[:4096])
    code = flags.run(PredictConfig, predict.main, "predict", "", [str(pictures["rgb"]), "--backend", "torch.export",
                                                                "--exports", str(exports)])
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "alexnet_cifar.pt2: damaged or not loadable" in err


class _RecordsOnSecondCall(Backend):
    """Like torch.compile's CUDA graphs: the first call compiles, the second records, later calls replay."""

    name, device = "stand-in", torch.device("cpu")

    def __init__(self) -> None:
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.zeros(len(x), 10)


def test_the_timed_call_comes_after_compilation_and_cuda_graph_recording():
    backend = _RecordsOnSecondCall()
    timed_logits(backend, torch.zeros(2, 3, 32, 32))
    assert backend.calls == 3  # two untimed (compile, record), then the timed replay
