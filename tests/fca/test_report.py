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


def test_the_verdict_is_one_line_that_counts_passes_misses_and_inconclusive_checks():
    from fca.report import verdict_line

    assert verdict_line(["pass"] * 5) == "**5 of 5 checks pass.**"
    assert verdict_line(["pass", "**miss**", "inconclusive (the interval straddles the target)"]) == \
        "**1 of 3 checks pass, 1 miss, 1 inconclusive.**"
    page = readme_markdown({"fdc": {"acc_s1.2": 0.95, "acc_s1.2_lo": 0.85, "acc_s1.2_hi": 0.99}}, FIGURES, {})
    # On an otherwise empty metrics file every other check misses; the FDC's interval straddles its target.
    assert "| FDC ordering accuracy on held-out patches at scale 1.2 (`fdc.acc_s1.2`) | 0.950 [0.850, 0.990] | > 0.9 | inconclusive" in page
    assert "**0 of" in page and ", 1 inconclusive.**" in page


def test_verdict_reads_the_fdc_target_from_the_same_keys():
    page = readme_markdown({"fdc": FDC}, FIGURES, {})
    assert "| FDC ordering accuracy on held-out patches at scale 1.2 (`fdc.acc_s1.2`) | 0.982 | > 0.9 | pass |" in page
    missing = readme_markdown({}, FIGURES, {})
    assert "(`fdc.acc_s1.2`) | n/a | > 0.9 | **miss** |" in missing


# reports/metrics.json of a domain without a known kernel (evaluate's `noref` section, intervals beside).
NOREF = {
    "images": 95, "gap_bicubic": 2.1, "gap_ours": 0.7, "skl_bicubic": 0.41, "skl_ours": 0.08, "gap_reduction": 0.667,
    "image_gap_bicubic_median": 2.3, "image_gap_bicubic_median_lo": 2.2, "image_gap_bicubic_median_hi": 2.4,
    "image_gap_ours_median": 0.9, "image_gap_ours_median_lo": 0.8, "image_gap_ours_median_hi": 1.0,
    "image_skl_bicubic_median": 0.45, "image_skl_ours_median": 0.1,
    "image_gap_change_median": -1.4, "image_gap_change_median_lo": -1.5, "image_gap_change_median_hi": -1.3,
    "image_closer_share": 0.97, "kernel_sigma_median": 1.81, "kernel_sigma_p05": 1.2, "kernel_sigma_p95": 2.4,
    "kernel_axis_ratio_median": 1.3, "kernel_oriented_share": 0.2, "kernels_differ": 1.0,
}  # fmt: skip
NOREF_FIGURES = {k: f"figures/{k}.png" for k in ("density", "noref_distances", "kernel_histograms", "kernels", "crops", "training", "degraded")}


def test_no_reference_page_says_there_is_no_verdict_and_judges_nothing():
    page = readme_markdown({"noref": NOREF, "fdc": FDC}, NOREF_FIGURES, {"commit": "abc"})
    head = "\n".join(page.splitlines()[:4])
    assert "no known kernel, so there is no verdict" in head
    for judged in ("## Verdict", "| pass |", "**miss**", "inconclusive", "target", "k_or", "L_true", "oracle pairs"):
        assert judged not in page, judged
    for key in ("kernel.", "adapt.", "sr.", "density.gap", "gain_fraction"):
        assert f"`{key}" not in page, key
    assert "(> 0.9)" not in page and "| > 0.9 |" not in page  # the FDC accuracies are shown, not judged
    assert "| 1.2 | 0.976 | 0.988 | 0.982 | 0.762 |" in page


def test_no_reference_page_shows_the_density_match_the_kernels_and_the_crops():
    page = readme_markdown({"noref": NOREF}, NOREF_FIGURES, {})
    assert "| down(x), bicubic | 2.300 [2.200, 2.400] | 0.4500 | 2.100 | 0.4100 |" in page
    assert "| G(x), ours | 0.900 [0.800, 1.000] | 0.1000 | 0.700 | 0.0800 |" in page
    assert "-1.400 [-1.500, -1.300]" in page and "97% of the photos" in page
    assert "| effective sigma, median (LR px) | 1.810 |" in page and "1.200 .. 2.400" in page
    assert "G gives each photo its own kernel." in page
    for role, path in NOREF_FIGURES.items():
        assert f"]({path})" in page, role
    single = readme_markdown({"noref": NOREF | {"kernels_differ": 0.0}}, NOREF_FIGURES, {})
    assert "G gives every photo the same kernel" in single


def test_known_kernel_page_is_unchanged_by_the_no_reference_mode():
    page = readme_markdown({"fdc": FDC, "kernel": {"cov_rel_error": 0.05}}, FIGURES, {})
    assert page.startswith("# FCA run report\n\nSynthetic real domain with a known answer")
    assert "## Verdict" in page and "(`kernel.cov_rel_error`) | 0.050 | <= 0.1 | pass |" in page
    assert "no verdict" not in page


# The probe's and train_sr's scores of one run (reports/metrics.json's sr, reports/sr.json).
PROBE = {"psnr_bicubic": 23.59, "psnr_ours": 25.16, "seeds": 2}
MODEL = {"psnr_y_upscaling": 23.58, "psnr_y_bicubic": 23.59, "psnr_y_ours": 24.20,
         "ssim_y_upscaling": 0.78, "ssim_y_bicubic": 0.78, "ssim_y_ours": 0.79}  # fmt: skip


def test_the_page_says_why_train_sr_scores_our_pairs_otherwise_than_the_sr_probe():
    figures = FIGURES | {"sr_model": "figures/sr_model.png"}
    nets = {"probe": "3 blocks of 32 channels, 600 steps each", "train_sr": "4 blocks of 32 channels, 200 steps"}
    page = readme_markdown({"sr": PROBE, "sr_model": MODEL}, figures, {}, nets)
    text = " ".join(page.split())
    assert "Our pairs score 24.20 dB here and 25.16 dB in the SR probe above" in text
    assert "the probe averages 2 small nets per kind of pairs (3 blocks of 32 channels, 600 steps each), one per seed" in text
    assert "train_sr trains one EDSR-style net (4 blocks of 32 channels, 200 steps)" in text
    assert "our pairs gain +1.57 dB in the probe and +0.61 dB here." in text
    one = " ".join(readme_markdown({"sr": PROBE | {"seeds": 1}, "sr_model": MODEL}, figures, {}).split())
    assert "the probe trains a small net per kind of pairs, and train_sr trains one EDSR-style net, the model" in one
    assert "(1 seed)" in one and "(1 seeds)" not in one
    # Without the probe's score (no known kernel) or train_sr's there is nothing to explain.
    assert "in the SR probe above" not in readme_markdown({"sr_model": MODEL}, figures, {})
    assert "in the SR probe above" not in readme_markdown({"sr": PROBE}, figures, {})


def test_train_sr_s_table_shows_the_blind_recipe_s_net_beside_the_others():
    blind = {"psnr_y_blind": 23.97, "ssim_y_blind": 0.785}
    page = readme_markdown({"sr_model": MODEL | blind}, FIGURES | {"sr_model": "figures/sr_model.png"}, {})
    rows = [line for line in page.splitlines() if line.startswith("| SR trained on ")]
    assert rows == ["| SR trained on bicubic pairs | 23.59 | 0.7800 |", "| SR trained on the blind recipe's pairs | 23.97 | 0.7850 |",
                    "| SR trained on our pairs | 24.20 | 0.7900 |"]
    # A reports/sr.json from before the blind net: its row says n/a, the others are as they were.
    old = readme_markdown({"sr_model": MODEL}, FIGURES | {"sr_model": "figures/sr_model.png"}, {})
    assert "| SR trained on the blind recipe's pairs | n/a | n/a |" in old and "| SR trained on our pairs | 24.20 | 0.7900 |" in old


def test_the_clean_image_symbol_i_never_reads_as_a_first_person_pronoun():
    """Every I on the page stands in a formula: I (*) k_gt, down(I), or the 'I:' that defines it."""
    import re

    page = readme_markdown({"fdc": FDC, "sr": PROBE, "sr_model": MODEL, "adapt": {"sigma_pearson": 0.9}},
                           FIGURES | {"adapt_scatter": "a.png", "adapt_gallery": "b.png", "sr_model": "c.png"}, {})
    uses = [page[m.start() - 12 : m.end() + 12] for m in re.finditer(r"\bI\b", page)]
    assert uses and all(re.search(r"\bI(?: \(\*\)|\)|:)", u) for u in uses), uses


def test_the_density_section_names_l_true_the_curve_the_check_judges_against():
    page = readme_markdown({"density": {"gap_true": 1.99483, "gap_ours": 2.5}}, FIGURES, {})
    assert "L_true (the wide pale curve) is what the verdict's density check judges G(R) against" in " ".join(page.split())
    assert "| L_true, the true LR | 1.995 | - |" in page


def test_keys_from_before_the_rename_map_to_ours_and_no_other_key_changes():
    from fca.report import renamed_key

    assert renamed_key("sr.psnr_fca") == "sr.psnr_ours"
    assert renamed_key("sr.psnr_fca_lo") == "sr.psnr_ours_lo"
    assert renamed_key("noref.image_gap_fca_median") == "noref.image_gap_ours_median"
    assert renamed_key("adapt.seconds_per_image_fca") == "adapt.seconds_per_image_ours"
    assert renamed_key("sr_train.fca.loss") == "sr_train.ours.loss"
    for key in ("sr.psnr_ours", "fdc.acc_s1.2", "sr_model.psnr_y_ours", "density.gap_reduction_true", "kernel.lr_psnr_gain_db"):
        assert renamed_key(key) == key
