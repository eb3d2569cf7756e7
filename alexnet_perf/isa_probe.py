"""Inductor's check of the CPU's vector instruction sets, remembered between processes as newer torch does.

Before it builds CPU code, inductor checks that each vector instruction set the CPU reports (AVX-512, AVX2) builds
and loads: it compiles a test library once (kept in its cache), then loads it in a new Python process, which imports
torch. torch 2.11 runs that process in every process that compiles, even when every graph then comes from the
compile cache: ≈ 5 s an instruction set on a 2-core CPU, 10 s of a compiled `fast` run here, which made the run
slower than eager. Newer torch keeps a marker beside the test library once it has loaded, and asks no more;
remember_vec_isa_checks does the same where torch does not.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Any, Callable

MARKER_FOLDER = "alexnet_perf-vec-isa-ok"


def _marker(isa: Any, code: str, marker_dir: Path, fingerprint: Callable[[str], str]) -> Path | None:
    """The file that says isa's check of code passed, keyed on the compiler's version, the instruction set's flags,
    torch's version (the fingerprint torch keys the test library on) and the Python that loads it; None where the
    fingerprint cannot be had (the check then runs as torch runs it)."""
    try:
        key = "|".join((fingerprint(isa.build_arch_flags()), str(isa), code, sys.executable))
    except Exception:  # noqa: BLE001 - no compiler found, or torch internals that moved: torch's own check decides
        return None
    return marker_dir / hashlib.sha256(key.encode()).hexdigest()[:32]


def remember_vec_isa_checks(isa_class: type | None = None, marker_dir: Path | None = None,
                            fingerprint: Callable[[str], str] | None = None) -> bool:
    """Make isa_class's check_build (by default inductor's VecISA) answer from a marker file once the check has
    passed (a failed check is not remembered), unless torch already keeps one. Whether it was changed now."""
    from torch._inductor import cpu_vec_isa
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    isa_class = isa_class or cpu_vec_isa.VecISA
    check_build = isa_class.check_build
    if hasattr(isa_class, "_probe_load") or getattr(check_build, "remembered", False):
        return False
    folder = marker_dir or Path(cache_dir()) / MARKER_FOLDER
    fingerprint = fingerprint or cpu_vec_isa._get_isa_dry_compile_fingerprint

    @functools.wraps(check_build)
    def remembered_check_build(self: Any, code: str) -> bool:
        marker = _marker(self, code, folder, fingerprint)
        if marker is not None and marker.is_file():
            return True
        passed = check_build(self, code)
        if passed and marker is not None:
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:  # a read-only cache: the check runs again next time, as in torch
                pass
        return passed

    remembered_check_build.remembered = True  # type: ignore[attr-defined]
    isa_class.check_build = remembered_check_build
    return True
