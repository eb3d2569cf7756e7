"""The records the measuring commands write and read back: benchmark cases (CaseInfo, TimedArtifacts, in a
pytest-benchmark JSON), parity's report (ParityReport, parity.json), their JSON conversion, the machine and package
versions they were measured with, and benchmarks/RESULTS.md bookkeeping (each producer owns one marked section)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .atomic import write_text_atomic
from .errors import UserError

T = TypeVar("T")
PARITY_PROG = "python -m alexnet_perf.parity"


@dataclass(frozen=True)
class CaseInfo:
    """One benchmark case's extra_info in a --benchmark-json: benchmarks/conftest.py's Measure writes it, report
    reads it."""

    kind: str  # inference or training
    backend: str
    device: str
    precision: str  # fp32, bf16, fp16 or int8
    threads: int | None  # host threads doing the work (None on a GPU)
    batch_size: int
    reference: bool  # the speed-up baseline of its kind on its device type (PyTorch eager fp32)
    ms_per_sample: float | None = None  # None: the case ran untimed (--benchmark-disable)
    samples_per_s: float | None = None
    statistic: str = "median"  # of the timed rounds, that ms_per_sample and samples_per_s come from
    recipe: str | None = None  # training cases: the recipe whose step was timed
    images_per_epoch: int | None = None  # training cases: images in one epoch of that recipe (gives s/epoch)
    epochs: int | None = None  # training cases of a recipe: its epoch count (gives the projected time of its run)
    tf32: bool | None = None  # GPU cases in fp32: whether convolutions and matmuls ran in TF32 (None: not applicable)


@dataclass(frozen=True)
class TimedArtifacts:
    """The artifact set a benchmark run loaded: its `artifacts` entry in the --benchmark-json."""

    folder: str
    source: str  # "exports", or "random-init" for a temporary export of a randomly initialised network
    checkpoint_sha256: str | None  # of the checkpoint every artifact was exported from (None: random or mixed)


@dataclass(frozen=True)
class Comparison:
    """A backend's logits against the reference's for the same inputs."""

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float  # share of inputs on which both predict the same class


@dataclass(frozen=True)
class OnTestImages(Comparison):
    """On the test images: the comparison, and both accuracies."""

    images: int
    accuracy: float
    reference_accuracy: float
    accuracy_delta_pp: float


@dataclass(frozen=True)
class OnRandomImages(Comparison):
    """On the random-pixel images."""

    inputs: int


@dataclass(frozen=True)
class ParityRow:
    """One backend at one batch size; batch_size None when it did not run (skipped, or failed before running)."""

    backend: str
    precision: str
    device: str
    status: str  # reference | pass | fail | skipped
    batch_size: int | None = None
    artifact: str | None = None  # the file it loads, None for the PyTorch backends running the checkpoint
    reason: str = ""  # why it was skipped
    failures: list[str] = field(default_factory=list)  # why it failed
    seconds: float | None = None
    test: OnTestImages | None = None
    random: OnRandomImages | None = None


@dataclass(frozen=True)
class Reference:
    backend: str
    device: str
    batch_size: int
    test_accuracy: float


@dataclass(frozen=True)
class Inputs:
    test_images: int
    batch1_test_images: int
    random_inputs: int
    random_seed: int
    batch_sizes: list[int]


@dataclass(frozen=True)
class Tolerances:
    fp32_atol: float
    fp32_top1_agreement: float
    accuracy_delta_pp: float  # reduced precision (bf16, int8)
    min_top1_agreement: float  # reduced precision, on the test images


@dataclass(frozen=True)
class ParityReport:
    """parity.json: written by parity, read back by report (ParityReport.read)."""

    date: str
    machine: str
    command: str
    versions: dict[str, str]
    checkpoint: str
    checkpoint_sha256: str
    exports: str
    reference: Reference
    inputs: Inputs
    tolerances: Tolerances
    results: list[ParityRow]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "parity.json") -> ParityReport:
        """The report from its JSON form; a UserError naming the first bad field."""
        try:
            return from_dict(cls, data)
        except ValueError as e:
            raise UserError(f"{source}: not a parity report of this version ({e}; rerun `{PARITY_PROG}`)") from None

    @classmethod
    def read(cls, path: str | Path) -> ParityReport:
        """parity.json at path; a missing, unreadable or malformed file is a UserError."""
        data = read_json(path, f"parity report not found: {path} (write it with `{PARITY_PROG}`)",
                         kind="parity report")
        return cls.from_dict(data, path)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """value checked against the type hint (dataclasses, lists, dicts, optionals, str/int/float/bool)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _convert(hint, value, where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list and isinstance(value, list):
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if (origin is dict or hint is dict) and isinstance(value, dict):
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (hint in (str, int, bool) and type(value) is hint):
        return value
    raise ValueError(f"{where} is {type(value).__name__}, expected {getattr(hint, '__name__', hint)}")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """An instance of the dataclass cls from what dataclasses.asdict made of one (keys it does not know are
    ignored); ValueError naming the first missing or mistyped field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__} is {type(data).__name__}, expected an object")
    hints = typing.get_type_hints(cls)
    values = {}
    for member in dataclasses.fields(cls):
        path = f"{where}.{member.name}" if where else member.name
        if member.name in data:
            values[member.name] = _convert(hints[member.name], data[member.name], path)
        elif member.default is dataclasses.MISSING and member.default_factory is dataclasses.MISSING:
            raise ValueError(f"{path} is missing")
    return cls(**values)


def read_json(path: str | Path, missing: str, kind: str = "JSON", flag: str = "") -> Any:
    """The JSON document at path; UserError(missing) when there is no such file, and a one-line UserError naming
    the flag and the kind of file expected for a folder, an unreadable file or one that is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(missing) from None
    except IsADirectoryError:
        raise UserError(f"{flag + ' ' if flag else ''}{path} is a folder, not a {kind} file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from None


def cpu_model(cpuinfo: str) -> str | None:
    """The first processor's model name in /proc/cpuinfo's text, with its family and model numbers where given: a
    virtual machine's name can be as bare as 'AMD EPYC', which names Zen 3, Zen 4 and Zen 5 alike (Zen 4, family 25
    model 17, multiplies bf16 at half Zen 5's rate). None when the text names no model."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block ends
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return None
    numbers = (f"family {fields['cpu family']} model {fields['model']}"
               if fields.get("cpu family", "").isdigit() and fields.get("model", "").isdigit() else "")
    return fields["model name"] + (f" ({numbers})" if numbers else "")


def machine_description() -> str:
    """'N cores, CPU model (family and model numbers), what torch's CPU kernels use' (plus the GPU when one is
    visible): the machine a figure was measured on. The instruction set says which figures compare: a CPU without
    AVX-512 or native bf16 trains at a fraction of the speed of one with them, and AMX's matrix tiles multiply several
    times faster again."""
    try:
        model = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = None
    text = f"{os.cpu_count()} cores, {model or platform.processor() or platform.machine()}"
    try:
        import torch

        from .device import cpu_has_amx, cpu_has_bf16

        text += f", {torch.backends.cpu.get_cpu_capability()} {'with' if cpu_has_bf16() else 'without'} native bf16"
        text += " and AMX" if cpu_has_amx() else ""
        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return text


def versions(modules: tuple[str, ...]) -> dict[str, str]:
    """Python's version and each module's (`not installed` for one that cannot be imported): what a record was
    made with."""
    found = {"python": platform.python_version()}
    for name in modules:
        try:
            found[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            found[name] = "not installed"
    return found


LOCAL_RESULTS = ".cache/results/RESULTS.md"
"""Where the measuring commands write their sections by default: measuring a machine never edits the checkout.
The project's committed figures (benchmarks/RESULTS.md and what lies beside it) change only when a command is
given that path explicitly."""


def update_section(path: str | Path, key: str, body: str) -> None:
    """Replace the text between `<!-- begin KEY -->` and `<!-- end KEY -->` in path, or append the section."""
    path = Path(path)
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    try:
        text = path.read_text() if path.exists() else "# Results\n"
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot be read as text ({e})") from None
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(path, text)
