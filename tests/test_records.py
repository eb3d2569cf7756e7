"""alexnet_perf.records: each producer's marked section of a RESULTS file."""

from alexnet_perf.records import update_section


def test_results_sections_are_replaced_in_place_and_others_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    update_section(path, "a", "first A")
    update_section(path, "b", "only B")
    update_section(path, "a", "second A")
    text = path.read_text()
    assert "second A" in text and "first A" not in text and "only B" in text
    assert text.index("second A") < text.index("only B")
