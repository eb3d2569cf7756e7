"""The project's PNG figures (the confusion matrix, the latency plot, the time-to-accuracy picture) are made,
written and closed here, so that each command only draws."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .atomic import write_atomic

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DPI = 100


def save_figure(path: str | Path, size: tuple[float, float], draw: Callable[[Axes], dict[str, str] | None]) -> None:
    """Call draw(ax) on the one axes of a new figure of size inches and write the figure to path as a PNG, atomically:
    a refused write is write_atomic's one-line UserError and leaves the previous file. draw may return PNG text
    metadata (such as a Description of what it drew), known only once drawn. Matplotlib runs headless (Agg), and the
    figure is closed whatever fails, so a process that draws many figures does not keep them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        metadata = draw(ax)
        fig.tight_layout()
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=DPI, metadata=metadata))
    finally:
        plt.close(fig)
