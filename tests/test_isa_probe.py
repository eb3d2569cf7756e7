"""alexnet_perf.isa_probe: inductor's vector instruction set check, remembered between processes."""

import torch
from torch._inductor import cpu_vec_isa

from alexnet_perf.isa_probe import remember_vec_isa_checks


def counting_isa_class(passes: bool, with_marker_of_its_own: bool = False) -> type:
    """A stand-in for inductor's VecISA whose check (a subprocess in torch) counts its runs."""

    class FakeISA:
        runs = 0

        def __str__(self) -> str:
            return "avx512"

        def build_arch_flags(self) -> str:
            return "-mavx512f"

        def check_build(self, code: str) -> bool:
            type(self).runs += 1
            return passes

    if with_marker_of_its_own:
        FakeISA._probe_load = lambda self, path: True
    return FakeISA


def fingerprint(flags: str) -> str:
    return f"g++ 13={flags}={torch.__version__}"


def test_a_passed_check_runs_once_and_later_processes_read_its_marker(tmp_path):
    first_process, later_process = counting_isa_class(True), counting_isa_class(True)
    assert remember_vec_isa_checks(first_process, tmp_path, fingerprint)
    assert first_process().check_build("code") and first_process.runs == 1
    assert remember_vec_isa_checks(later_process, tmp_path, fingerprint)
    assert later_process().check_build("code") and later_process.runs == 0
    assert later_process().check_build("other code") and later_process.runs == 1  # another check: its own marker


def test_a_failed_check_is_not_remembered(tmp_path):
    isa = counting_isa_class(False)
    remember_vec_isa_checks(isa, tmp_path, fingerprint)
    assert not isa().check_build("code") and not isa().check_build("code")
    assert isa.runs == 2 and not any(tmp_path.iterdir())


def test_a_new_compiler_or_torch_checks_again(tmp_path):
    isa = counting_isa_class(True)
    remember_vec_isa_checks(isa, tmp_path, fingerprint)
    isa().check_build("code")
    later = counting_isa_class(True)
    remember_vec_isa_checks(later, tmp_path, lambda flags: "g++ 14=" + flags)
    later().check_build("code")
    assert later.runs == 1


def test_torch_that_keeps_its_own_marker_and_a_class_already_changed_are_left_alone(tmp_path):
    own = counting_isa_class(True, with_marker_of_its_own=True)
    check = own.check_build
    assert not remember_vec_isa_checks(own, tmp_path, fingerprint) and own.check_build is check
    isa = counting_isa_class(True)
    assert remember_vec_isa_checks(isa, tmp_path, fingerprint)
    changed = isa.check_build
    assert not remember_vec_isa_checks(isa, tmp_path, fingerprint) and isa.check_build is changed


def test_the_installed_torch_checks_each_instruction_set_in_one_process_at_most_once_per_machine():
    """With this torch, after remember_vec_isa_checks, inductor's check either keeps torch's own marker (torch
    newer than 2.11) or is the remembering one: no version is left re-running it in every process."""
    remember_vec_isa_checks()
    assert hasattr(cpu_vec_isa.VecISA, "_probe_load") or getattr(cpu_vec_isa.VecISA.check_build, "remembered", False)
