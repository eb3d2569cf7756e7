"""benchmarks/RESULTS.md bookkeeping: each producer owns one marked section and rewrites only that."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from .atomic import write_text_atomic


def machine_description() -> str:
    """'N cores, CPU model' (plus the GPU when one is visible): the machine a figure was measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{os.cpu_count()} cores, {model}"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return text


def update_section(path: str | Path, key: str, body: str) -> None:
    """Replace the text between `<!-- begin KEY -->` and `<!-- end KEY -->` in path, or append the section."""
    path = Path(path)
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(path, text)
