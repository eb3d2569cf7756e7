"""save_figure: the PNG it writes, and that a failed drawing or a refused write leaves no figure open."""

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
import pytest
from PIL import Image

from alexnet_perf.errors import UserError
from alexnet_perf.figures import save_figure

from conftest import full_disk


def _line(ax: Axes) -> None:
    ax.plot([1, 2, 3], [3, 1, 2])


def test_the_png_has_the_figures_size_and_the_text_draw_returns(tmp_path):
    def draw(ax: Axes) -> dict[str, str]:
        _line(ax)
        return {"Description": "one line"}

    save_figure(tmp_path / "f.png", (4, 3), draw)
    with Image.open(tmp_path / "f.png") as image:
        assert image.format == "PNG" and image.size == (400, 300) and image.text["Description"] == "one line"


def test_a_refused_write_is_one_line_keeps_the_previous_file_and_closes_the_figure(tmp_path, monkeypatch):
    previous = tmp_path / "f.png"
    previous.write_bytes(b"the previous picture")
    open_before = plt.get_fignums()
    full_disk(monkeypatch, room=0)
    with pytest.raises(UserError) as refused:
        save_figure(previous, (4, 3), _line)
    assert str(refused.value).startswith(f"cannot write {previous}: No space left") and "\n" not in str(refused.value)
    assert previous.read_bytes() == b"the previous picture" and plt.get_fignums() == open_before


def test_a_drawing_that_fails_closes_the_figure_and_writes_nothing(tmp_path: Path):
    open_before = plt.get_fignums()

    def draw(ax: Axes) -> None:
        raise ValueError("no data to draw")

    with pytest.raises(ValueError, match="no data to draw"):
        save_figure(tmp_path / "f.png", (4, 3), draw)
    assert plt.get_fignums() == open_before and not (tmp_path / "f.png").exists()
