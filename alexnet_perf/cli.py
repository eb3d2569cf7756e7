"""Command lines built from configuration dataclasses: one flag per field, help from the field's metadata.

CLIs stay thin: parse into the dataclass, call the command's function, turn a UserError into one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from typing import Any, Callable, Sequence, TypeVar

from .errors import UserError

C = TypeVar("C")


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a command-line flag."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def build_parser(config_cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        meta = dict(f.metadata)
        kwargs: dict[str, Any] = {"default": f.default, "help": meta.pop("help", None), **meta}
        kind = _base_type(hints[f.name])
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.setdefault("type", kind)
            kwargs.setdefault("metavar", f.name.upper())
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
    return parser


def command_line(prog: str, config: Any) -> str:
    """The command that rebuilds config: prog plus one flag for each field that differs from its default.

    Reports record it so that a figure can be reproduced by pasting one line.
    """
    parts: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts += [flag, str(value)]
    return " ".join([prog, *map(shlex.quote, parts)])


def run(config_cls: type[C], command: Callable[[C], int | None], prog: str, description: str,
        argv: Sequence[str] | None = None, presets: tuple[str, dict[str, dict[str, Any]]] | None = None) -> int:
    """Parse argv into config_cls, run command; user mistakes end as `prog: error: ...` with exit status 2.

    presets = (field, {name: {field: value}}): the chosen preset's values become the defaults that the other
    flags override (e.g. --recipe fast --epochs 12).
    """
    parser = build_parser(config_cls, prog, description)
    if presets is not None:
        field_name, table = presets
        pre = argparse.ArgumentParser(add_help=False)  # reads only the preset, so --help shows its defaults
        pre.add_argument("--" + field_name.replace("_", "-"), dest=field_name, default=parser.get_default(field_name))
        chosen = getattr(pre.parse_known_args(argv)[0], field_name)
        parser.set_defaults(**table.get(chosen, {}))  # an unknown name is reported by the full parse below
    config = config_cls(**vars(parser.parse_args(argv)))
    try:
        return command(config) or 0
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
