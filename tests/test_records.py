"""alexnet_perf.records: each producer's marked section of a RESULTS file."""

import os

from alexnet_perf.records import update_section


def test_results_sections_are_replaced_in_place_and_others_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    update_section(path, "a", "first A")
    update_section(path, "b", "only B")
    update_section(path, "a", "second A")
    text = path.read_text()
    assert "second A" in text and "first A" not in text and "only B" in text
    assert text.index("second A") < text.index("only B")


def test_the_machine_description_names_the_instruction_set_and_whether_bf16_is_native(monkeypatch):
    import torch

    from alexnet_perf import device, records

    monkeypatch.setattr(device, "cpu_has_amx", lambda: False)
    for native, words in ((True, "with native bf16"), (False, "without native bf16")):
        monkeypatch.setattr(device, "cpu_has_bf16", lambda native=native: native)
        text = records.machine_description()
        assert text.startswith(f"{os.cpu_count()} cores, ")
        assert f", {torch.backends.cpu.get_cpu_capability()} {words}" in text and "AMX" not in text


def test_the_cpu_model_names_family_and_model_numbers_of_the_first_processor():
    from alexnet_perf import records

    block = "processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {m}\nmodel name\t: AMD EPYC\n"
    cpuinfo = block.format(n=0, m=17) + "\n" + block.format(n=1, m=1)
    assert records.cpu_model(cpuinfo) == "AMD EPYC (family 25 model 17)"
    assert records.cpu_model("processor\t: 0\nmodel name\t: ARMv8 Processor\n") == "ARMv8 Processor"
    assert records.cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n") is None


def test_the_machine_description_names_amx_where_the_cpu_has_it(monkeypatch):
    from alexnet_perf import device, records

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(device, "cpu_has_amx", lambda: True)
    assert "with native bf16 and AMX" in records.machine_description()
