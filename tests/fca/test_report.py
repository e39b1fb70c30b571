"""The report page (reports/README.md) as markdown."""

from fca.report import fdc_table, readme_markdown

FIGURES = {k: f"figures/{k}.png" for k in ("density", "kernels", "crops", "training", "degraded")}

# reports/fdc.json as train_fdc writes it (evaluate_fdc's keys), as evaluate copies its acc* keys.
FDC = {
    "acc_s3.5": 0.992, "acc_down_s3.5": 0.984, "acc_up_s3.5": 1.000, "acc_rand_s3.5": 0.951,
    "acc_s2.0": 0.993, "acc_down_s2.0": 0.990, "acc_up_s2.0": 0.996, "acc_rand_s2.0": 0.902,
    "acc_s1.2": 0.982, "acc_down_s1.2": 0.976, "acc_up_s1.2": 0.988, "acc_rand_s1.2": 0.762,
}  # fmt: skip


def test_fdc_accuracies_are_a_table_with_one_row_per_scale_and_a_column_per_pair_kind():
    page = readme_markdown({"fdc": FDC}, FIGURES, {"commit": "abc"})
    lines = page.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| s | ")), None)
    assert header is not None, "no FDC table (a header row '| s | ...') in the page"
    assert lines[header] == (
        "| s | (x_D, x): x_D judged denser | (x_U, x): x_U judged sparser | both kinds | both kinds, crops at independent places |"
    )
    assert lines[header + 1] == "|---|---|---|---|---|"
    # Largest scale first (the curriculum's order); each value under its own pair kind.
    assert lines[header + 2 : header + 5] == [
        "| 3.5 | 0.984 | 1.000 | 0.992 | 0.951 |",
        "| 2.0 | 0.990 | 0.996 | 0.993 | 0.902 |",
        "| 1.2 | 0.976 | 0.988 | 0.982 | 0.762 |",
    ]
    assert "s = 1.2:" not in page  # not the old unlabelled list of 12 numbers


def test_fdc_table_ignores_other_keys_and_marks_missing_values():
    lines = fdc_table({"acc_s1.2": 0.9, "same_abs": 0.1, "mean_down_s1.2": 0.3, "acc_up_s2.0": 0.8})
    assert lines[-2:] == ["| 2.0 | n/a | 0.800 | n/a | n/a |", "| 1.2 | n/a | n/a | 0.900 | n/a |"]
    assert fdc_table({}) == ["FDC ordering accuracy on held-out patches: none recorded."]


def test_verdict_reads_the_fdc_target_from_the_same_keys():
    page = readme_markdown({"fdc": FDC}, FIGURES, {})
    assert "| FDC ordering accuracy on held-out patches at scale 1.2 (`fdc.acc_s1.2`) | 0.982 | > 0.9 | pass |" in page
    missing = readme_markdown({}, FIGURES, {})
    assert "(`fdc.acc_s1.2`) | n/a | > 0.9 | **miss** |" in missing
