"""Stage `report`: a page a person reads in a minute (reports/README.md) and its figures."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fca.config import param


@dataclass(frozen=True)
class ReportConfig:
    gallery_size: int = param(6, ge=1, le=1000, help="predicted kernels shown in the gallery, and degraded images shown")


# (metric key, what it is, target as (comparison, value)). The demo-scale targets of the referee.
TARGETS: list[tuple[str, str, tuple[str, float]]] = [
    ("density.gap_reduction_true", "share of the bicubic density gap to L_true's density that G closes", (">=", 0.9)),
    ("kernel.cov_rel_error", "kernel second-moment error against the oracle kernel", ("<=", 0.10)),
    ("sr.gain_fraction", "share of the oracle's SR gain over bicubic pairs that our pairs recover", (">=", 0.9)),
    ("fdc.acc_s1.2", "FDC ordering accuracy on held-out patches at scale 1.2", (">", 0.9)),
    ("kernel.lr_psnr_gain_db", "LR PSNR against L_true, ours over bicubic down(x) (dB)", (">", 0.0)),
    ("sr.gain_db_over_blind", "SR PSNR, our pairs over the blind recipe's (Real-ESRGAN first order; dB)", (">", 0.0)),
]
# On a mixed-kernel domain (a kernel per image): is the estimator reading each image's blur?
ADAPT_TARGETS: list[tuple[str, str, tuple[str, float]]] = [
    ("adapt.sigma_pearson", "correlation of our kernel width with each image's oracle width", (">=", 0.8)),
    ("adapt.cov_rel_error_median", "median kernel second-moment error against each image's oracle", ("<=", 0.25)),
    ("adapt.angle_error_median", "median error of the kernel's direction (degrees; oracle axis ratio >= 1.5)", ("<=", 20.0)),
    ("adapt.gain_db", "LR PSNR of ours over the best single kernel (dB)", (">=", 3.0)),
    ("sr.gain_db_over_global", "SR PSNR, our pairs over pairs from the best single kernel (dB)", (">", 0.0)),
    ("sr.gain_fraction", "share of the oracle's SR gain over bicubic pairs that our pairs recover", (">=", 0.9)),
]


# Our method's metric keys said `fca` until they said `ours` (CHANGELOG.md): a `fca` between a
# key's separators and its end or next separator, as in sr.psnr_fca_lo or sr_train.fca.loss.
_BEFORE_OURS = re.compile(r"(?<=[._])fca(?=[._]|$)")


def renamed_key(key: str) -> str:
    """A metric key as it is named now: an older record's sr.psnr_fca -> sr.psnr_ours,
    noref.image_gap_fca_median -> noref.image_gap_ours_median; every other key unchanged."""
    return _BEFORE_OURS.sub("ours", key)


def lookup(metrics: dict, dotted: str) -> float:
    """metrics["a"]["b.c"] for 'a.b.c' (the second level keys may contain dots, e.g. acc_s1.2)."""
    head, _, rest = dotted.partition(".")
    value = metrics.get(head, {}).get(rest)
    return float("nan") if value is None else float(value)


def passes(value: float, target: tuple[str, float]) -> bool:
    op, bound = target
    if math.isnan(value):
        return False
    return {">=": value >= bound, "<=": value <= bound, ">": value > bound, "<": value < bound}[op]


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def plural(n: float, noun: str) -> str:
    """'1 seed', '2 seeds', 'n/a seeds' (a count the metrics lack)."""
    return f"{_fmt(n, 0)} {noun}" + ("" if n == 1 else "s")


def _signed(v: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.{digits}f}"


def verdict(value: float, target: tuple[str, float], lo: float = math.nan, hi: float = math.nan) -> str:
    """pass / **miss** for a number; with a 95 % interval [lo, hi]: pass only when the whole interval
    clears the target, **miss** when none of it does, inconclusive otherwise."""
    if math.isnan(lo) or math.isnan(hi):
        return "pass" if passes(value, target) else "**miss**"
    if passes(lo, target) and passes(hi, target):
        return "pass"
    if not passes(lo, target) and not passes(hi, target):
        return "**miss**"
    return "inconclusive (the interval straddles the target)"


def verdict_line(verdicts: list[str]) -> str:
    """The verdict in one line: '**5 of 5 checks pass.**', with the misses and inconclusive ones counted."""
    passed = sum(v == "pass" for v in verdicts)
    missed = sum(v == "**miss**" for v in verdicts)
    rest = len(verdicts) - passed - missed
    tail = "".join([f", {missed} miss" if missed else "", f", {rest} inconclusive" if rest else ""])
    return f"**{passed} of {len(verdicts)} checks pass{tail}.**"


def with_interval(metrics: dict, key: str, digits: int = 3) -> str:
    """'0.912 [0.85, 0.97]' when the metrics hold key_lo / key_hi, else the value alone."""
    lo, hi = lookup(metrics, key + "_lo"), lookup(metrics, key + "_hi")
    v = _fmt(lookup(metrics, key), digits)
    return v if math.isnan(lo) else f"{v} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


# The FDC's held-out accuracies (fca/train/fdc.py, `evaluate_fdc`): key prefix -> column heading.
FDC_COLUMNS: list[tuple[str, str]] = [
    ("acc_down", "(x_D, x): x_D judged denser"),
    ("acc_up", "(x_U, x): x_U judged sparser"),
    ("acc", "both kinds"),
    ("acc_rand", "both kinds, crops at independent places"),
]
_FDC_KEY = re.compile(r"^(acc(?:_down|_up|_rand)?)_s(\d+(?:\.\d+)?)$")


def fdc_table(fdc: dict) -> list[str]:
    """Markdown lines: the FDC's ordering accuracies, one row per scale s (largest first), one column per pair kind.

    `fdc` holds evaluate_fdc's keys acc_s{s}, acc_down_s{s}, acc_up_s{s}, acc_rand_s{s};
    other keys are left out, a missing value reads n/a.
    """
    values: dict[float, dict[str, float]] = {}
    for key, value in fdc.items():
        match = _FDC_KEY.match(key)
        if match:
            values.setdefault(float(match.group(2)), {})[match.group(1)] = float(value)
    if not values:
        return ["FDC ordering accuracy on held-out patches: none recorded."]
    lines = [
        "FDC ordering accuracy on held-out patches (share of pairs judged right; x_D / x_U are the anchor x",
        "shrunk / enlarged by s, crops centred on the same scene point unless noted):",
        "",
        "| s | " + " | ".join(title for _, title in FDC_COLUMNS) + " |",
        "|---" * (len(FDC_COLUMNS) + 1) + "|",
    ]
    for s in sorted(values, reverse=True):
        row = values[s]
        lines.append(f"| {s} | " + " | ".join(_fmt(row.get(prefix, math.nan)) for prefix, _ in FDC_COLUMNS) + " |")
    return lines


def adapt_section(metrics: dict, figures: dict[str, str]) -> list[str]:
    """Markdown lines: how well each image's kernel is read (mixed-kernel domains)."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    has_base = not math.isnan(m("adapt.baseline_sigma_pearson"))
    lines = [
        "## Adaptation: each image's kernel",
        "",
        f"![each image's kernel width]({figures['adapt_scatter']})",
        "",
        f"![kernels per image]({figures['adapt_gallery']})",
        "",
        "| estimator | sigma Pearson | cov. error (median) | angle error (median, deg) | LR PSNR vs L_true (dB) | time per image (s) |",
        "|---|---|---|---|---|---|",
        f"| ours: one forward pass of G's estimator | {_fmt(m('adapt.sigma_pearson'))} | {_fmt(m('adapt.cov_rel_error_median'))} | "
        f"{_fmt(m('adapt.angle_error_median'), 1)} | {_fmt(m('adapt.lr_psnr_ours'), 2)} | {_fmt(m('adapt.seconds_per_image_ours'), 4)} |",
    ]
    if has_base:
        lines.append(f"| per-image density fit, no network (`fca.baseline`) | {_fmt(m('adapt.baseline_sigma_pearson'))} | "
                     f"{_fmt(m('adapt.baseline_cov_rel_error_median'))} | {_fmt(m('adapt.baseline_angle_error_median'), 1)} | "
                     f"{_fmt(m('adapt.baseline_lr_psnr'), 2)} | {_fmt(m('adapt.seconds_per_image_baseline'), 3)} |")
    lines += [
        f"| the best single kernel for all images (fitted on the validation set) | - | - | - | {_fmt(m('adapt.lr_psnr_global'), 2)} | - |",
        f"| per-image oracle | 1 | 0 | 0 | {_fmt(m('adapt.lr_psnr_oracle'), 2)} | - |",
        "",
        f"Angles are judged on the {_fmt(m('adapt.angle_images'), 0)} images whose oracle kernel has an axis ratio of at least 1.5."
        + (f" Ours is {_fmt(m('adapt.speedup_over_baseline'), 0)}x faster per image than the baseline." if has_base else ""),
        "",
    ]
    return lines


def _noref_density_lines(metrics: dict, figures: dict[str, str]) -> list[str]:
    """Markdown lines: the density match of G(x) and of down(x) to the photos x (no-reference mode)."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    lines = [
        "## Frequency density: does G move the LR images towards the photos?",
        "",
        f"![frequency density]({figures['density']})",
        "",
        "Densities are per pixel (cycles / pixel), each image at its own pixel pitch: FCA's premise is that a",
        "camera's LR image looks, per pixel, like its HR photos, and a bicubic down(x) usually comes out too sharp. Per",
        f"image, each LR image is measured against its own photo x, so the scene's content cancels: median over the {_fmt(m('noref.images'), 0)}",
        "validation photos, with a 95 % interval from a paired bootstrap over the photos. Domain: the mean",
        "densities of the sets, as the known-kernel referee's `density.*`.",
        "",
        "| LR images | per image: log-density L1 (median) | per image: sym. KL (median) | domain: log-density L1 | domain: sym. KL |",
        "|---|---|---|---|---|",
    ]
    for kind, label in (("bicubic", "down(x), bicubic"), ("ours", "G(x), ours")):
        lines.append(f"| {label} | {with_interval(metrics, f'noref.image_gap_{kind}_median')} | {with_interval(metrics, f'noref.image_skl_{kind}_median', 4)} | "
                     f"{_fmt(m(f'noref.gap_{kind}'))} | {_fmt(m(f'noref.skl_{kind}'), 4)} |")
    closer = m("noref.image_closer_share")
    lines += [
        "",
        f"Per-image change, ours - bicubic (median; negative: G(x) is closer to its photo than down(x) is): "
        f"{with_interval(metrics, 'noref.image_gap_change_median')}; G(x) is the closer one for "
        f"{'n/a' if math.isnan(closer) else f'{closer:.0%}'} of the photos. Over the domain, the share of bicubic's density "
        f"gap that G closes is {_fmt(m('noref.gap_reduction'))} (`noref.gap_reduction`; negative: G widens it).",
        "",
        f"![per-image distances]({figures['noref_distances']})",
        "",
    ]
    return lines


def _noref_kernel_lines(metrics: dict, figures: dict[str, str]) -> list[str]:
    """Markdown lines: what kernels G estimates for the photos (no-reference mode)."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    differ = m("noref.kernels_differ") == 1
    oriented = m("noref.kernel_oriented_share")
    return [
        "## Estimated kernels",
        "",
        f"![kernel distribution]({figures['kernel_histograms']})",
        "",
        f"![kernels of sample photos]({figures['kernels']})",
        "",
        "| G's kernels over the validation photos | |",
        "|---|---|",
        f"| effective sigma, median (LR px) | {_fmt(m('noref.kernel_sigma_median'))} |",
        f"| effective sigma, 5th .. 95th percentile (LR px) | {_fmt(m('noref.kernel_sigma_p05'))} .. {_fmt(m('noref.kernel_sigma_p95'))} |",
        f"| axis ratio, median | {_fmt(m('noref.kernel_axis_ratio_median'), 2)} |",
        f"| share of kernels with an axis ratio >= 1.5 (a direction to speak of) | {'n/a' if math.isnan(oriented) else f'{oriented:.0%}'} |",
        "",
        "G gives each photo its own kernel." if differ else
        "G gives every photo the same kernel (a single-kernel estimator, or one that sees no difference between these photos).",
        "",
    ]


def _probe_and_model_lines(metrics: dict, nets: dict[str, str] | None) -> list[str]:
    """Why train_sr's PSNR for our pairs is not the SR probe's: the same pairs and validation images,
    other networks and budgets. `nets`: each one's network and budget in words (keys probe, train_sr;
    None: not named). Each gain is over its own net trained on bicubic pairs, the comparison each
    was built for. Nothing without both scores."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    probe, model = m("sr.psnr_ours"), m("sr_model.psnr_y_ours")
    if math.isnan(probe) or math.isnan(model):
        return []
    nets = nets or {}
    probe_net, model_net = (f" ({nets[k]})" if k in nets else "" for k in ("probe", "train_sr"))
    seeds = m("sr.seeds")
    probe_nets = (f"trains a small net per kind of pairs{probe_net}" if seeds == 1 else
                  f"averages {plural(seeds, 'small net')} per kind of pairs{probe_net}, one per seed")
    return [
        f"Our pairs score {_fmt(model, 2)} dB here and {_fmt(probe, 2)} dB in the SR probe above: both train on the same pairs",
        f"(G(X), X) and score the same validation images, but the probe {probe_nets}, and train_sr trains one",
        f"EDSR-style net{model_net}, the model a user takes away. Over its own net trained on bicubic pairs, our pairs gain",
        f"{_signed(probe - m('sr.psnr_bicubic'))} dB in the probe and {_signed(model - m('sr_model.psnr_y_bicubic'))} dB here.",
        "",
    ]


# train_sr's validation rows (reports/sr.json's psnr_y_<kind>, ssim_y_<kind>), in the order of its figure's columns.
SR_MODEL_ROWS = (("upscaling", "bicubic upscaling"), ("bicubic", "SR trained on bicubic pairs"),
                 ("blind", "SR trained on the blind recipe's pairs"), ("ours", "SR trained on our pairs"))


def sr_model_section(metrics: dict, figures: dict[str, str], nets: dict[str, str] | None = None) -> list[str]:
    """The SR models that train_sr trained for the user (metrics["sr_model"]: reports/sr.json), with
    their figure; nothing when the run has none. Scores only where the kernel is known, with why they
    differ from the SR probe's (`nets`: see `_probe_and_model_lines`)."""
    if "sr_model" not in metrics:
        return []
    sr = metrics["sr_model"]
    lines = ["## An SR model trained on the pairs (`train_sr`)", "",
             "The same EDSR-style network trained three times with the same seed and budget, on bicubic pairs, on the",
             "blind recipe's pairs (Real-ESRGAN's first order, as in the SR probe) and on our pairs (G(X), X);",
             "`fca upscale --model models/sr_ours.pt` applies it to any folder of photos.", ""]
    if "psnr_y_ours" in sr:
        m = lambda k: lookup(metrics, f"sr_model.{k}")  # noqa: E731  (n/a where a reports/sr.json from before the blind net lacks it)
        lines += ["| validation images (input L_true, target R) | PSNR-Y (dB) | SSIM-Y |", "|---|---|---|"]
        for kind, label in SR_MODEL_ROWS:
            lines.append(f"| {label} | {_fmt(m(f'psnr_y_{kind}'), 2)} | {_fmt(m(f'ssim_y_{kind}'), 4)} |")
        lines += ["", *_probe_and_model_lines(metrics, nets)]
    else:
        lines += ["No known kernel, so no score: the validation photos themselves, upscaled by each.", ""]
    if "sr_model" in figures:
        lines += [f"![SR models]({figures['sr_model']})", ""]
    return lines


def _page_tail(metrics: dict, figures: dict[str, str], keys: str = "", nets: dict[str, str] | None = None) -> list[str]:
    """What both pages end with: the SR models, the training curves, the FDC, the degraded images, where the numbers are."""
    return [
        *sr_model_section(metrics, figures, nets),
        "## Training",
        "",
        f"![training curves]({figures['training']})",
        "",
        *fdc_table(metrics.get("fdc", {})),
        "",
        "## Degraded validation images",
        "",
        f"![degraded]({figures['degraded']})",
        "",
        f"Numbers: `reports/metrics.json`{keys}, `reports/fdc.json` and `reports/sr.json` (`dvc metrics show`); curves: `make plots`",
        "(`dvc plots show`, drawn offline); every run's params, metrics and figures: the MLflow UI (`make mlflow-ui`).",
        "",
    ]


def _noref_noise_lines(metrics: dict, figures: dict[str, str]) -> list[str]:
    """Markdown lines: G's noise model (no-reference mode, `fca.evaluate.noise_model_section`)."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    if "noise_model" not in figures:
        return ["## Noise model", "", "G adds no noise: `generator.noise: none`, or the photos' noise is below one 8-bit level "
                "(their rounding), so G's bank holds none.", ""]
    by = "each pixel's luma (the photos' channels share their noise, as after demosaicing and 4:2:0 JPEG)" \
        if m("noref.noise_level_by_luma") == 1 else "each channel's own value (the photos' channels carry noise of their own)"
    return [
        "## Noise model",
        "",
        "No camera to compare with here, so this is G's noise as it stands: the patches of its noise bank (flat crops of",
        "the training photos) scaled to each pixel's brightness by the level measured on those crops, added after G's JPEG.",
        f"The level is read at {by}.",
        "",
        f"![noise model]({figures['noise_model']})",
        "",
        "| | value |",
        "|---|---|",
        f"| noise std at grey 0.2 / 0.5 / 0.8 (8-bit levels, mean over channels) | {255 * m('noref.noise_std_b20'):.1f} / "
        f"{255 * m('noref.noise_std_b50'):.1f} / {255 * m('noref.noise_std_b80'):.1f} |",
        f"| brightness range measured (beyond it: extrapolated) | {_fmt(m('noref.noise_measured_lo'), 2)} .. {_fmt(m('noref.noise_measured_hi'), 2)} |",
        f"| neighbouring pixels' correlation, horizontal / vertical (white noise: 0) | {_fmt(m('noref.noise_lag1_h'), 2)} / "
        f"{_fmt(m('noref.noise_lag1_v'), 2)} |",
        f"| correlation between channels R-G / R-B / G-B (noise drawn per channel: 0) | {_fmt(m('noref.noise_corr_rg'), 2)} / "
        f"{_fmt(m('noref.noise_corr_rb'), 2)} / {_fmt(m('noref.noise_corr_gb'), 2)} |",
        "",
    ]


def noref_markdown(metrics: dict, figures: dict[str, str], run_info: dict[str, str]) -> str:
    """The report page when the real domain's kernel is unknown (metrics hold `noref`): what G does
    to the photos, with no verdict. `figures` maps a figure's role to its path relative to the page."""
    lines = [
        "# FCA run report: real photos, no reference",
        "",
        "**This domain has no known kernel, so there is no verdict.** The real domain is a set of photos",
        "taken as they are (`patches.blur.type: none`): nobody knows the blur that made them, so there is no",
        "true LR image, no oracle kernel, no kernel error and no SR probe to judge G against. This page shows",
        "what G does to the photos: how close the frequency density of its LR images G(x) comes to that of",
        "the photos x (FCA's own criterion), next to plain bicubic down(x), which kernels it estimates and what noise it adds.",
        "A close density match is necessary for a right kernel, not proof of one.",
        "",
        " | ".join(f"{k}: {v}" for k, v in run_info.items()),
        "",
        *_noref_density_lines(metrics, figures),
        *_noref_kernel_lines(metrics, figures),
        *_noref_noise_lines(metrics, figures),
        "## Sample degradations",
        "",
        f"![sample crops]({figures['crops']})",
        "",
        *_page_tail(metrics, figures, " (`noref.*`)"),
    ]
    return "\n".join(lines)


def _known_kernel_intro(mixed: bool, run_info: dict[str, str]) -> list[str]:
    """Markdown lines: the page's title, what the synthetic domain is, and the run's line."""
    return [
        "# FCA run report",
        "",
        "Synthetic real domain with a known answer: each real-domain patch is a clean patch blurred by a known",
        "kernel, R = I (*) k_gt (I: the clean patch, k_gt: the kernel), and the true real-world LR is",
        "L_true = down(I) (*) k_gt. The generator G(R) = down(R) (*) k(R) must find the oracle kernel k_or",
        "(the best K x K kernel, by least squares).",
        *(["", "**Mixed-kernel domain:** every image has its own k_gt, so every image has its own oracle, and G",
           "must read each image's blur: it is judged against the per-image oracles and against the best",
           "*single* kernel (what an estimator that ignores its input could at best do)."] if mixed else []),
        "",
        " | ".join(f"{k}: {v}" for k, v in run_info.items()),
        "",
    ]


def _verdict_lines(metrics: dict, mixed: bool, blind: bool) -> list[str]:
    """Markdown lines: the verdict, the checks against their targets (the adapt targets on a mixed-kernel
    domain; no blind-recipe check without blind nets, evaluate.blind: false), and what the density check compares."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    targets = ADAPT_TARGETS + [t for t in TARGETS if t[0] not in ("kernel.cov_rel_error", "sr.gain_fraction")] if mixed else TARGETS
    targets = [t for t in targets if blind or t[0] != "sr.gain_db_over_blind"]
    verdicts = [verdict(m(key), target, m(key + '_lo'), m(key + '_hi')) for key, _, target in targets]
    return [
        "## Verdict",
        "",
        verdict_line(verdicts),
        "",
        "Numbers in brackets are 95 % intervals (paired bootstrap: over the SR seeds and the test crops for SR numbers,",
        "over the validation images for densities and kernels, over the held-out patches for the FDC); a check passes",
        "only when the whole interval clears the target. They are the spread of this run's validation images and seeds:",
        "on another CPU (AVX-512 rounds sums otherwise than AVX2) or precision the numbers move within them.",
        "",
        "| check | value | target | verdict |",
        "|---|---|---|---|",
        *(f"| {what} (`{key}`) | {with_interval(metrics, key)} | {target[0]} {target[1]} | {v} |" for (key, what, target), v in zip(targets, verdicts)),
        "",
        f"The density check compares G(x) with L_true, the true LR of the same images, so the scenes' content cancels: "
        f"the oracle closes {with_interval(metrics, 'density.gap_reduction_true_oracle')} of that gap "
        "(`density.gap_reduction_true_oracle`). The spectral loss itself compares G(x) with R, other images at their own "
        f"pixel pitch; of *that* gap G closes {_fmt(m('density.gap_reduction'))} (`density.gap_reduction`) and the oracle "
        f"{_fmt(m('density.gap_reduction_oracle'))} (`density.gap_reduction_oracle`): L_true's density is not R's (a scene "
        "shrunk by s is not the same scene, and noise is white at every pitch), so against R no kernel reaches 0.9.",
        "",
    ]


def _density_lines(metrics: dict, figures: dict[str, str]) -> list[str]:
    """Markdown lines: the LR images' frequency densities against the real domain R's."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    return [
        "## Frequency density",
        "",
        f"![frequency density]({figures['density']})",
        "",
        "L_true (the wide pale curve) is what the verdict's density check judges G(R) against: the true LR of the",
        "same images. R (real) is what the spectral loss compares G(R) with. Distance to the real domain R (L1 of",
        "log densities, and symmetric KL):",
        "",
        "| LR images | log-density L1 | sym. KL |",
        "|---|---|---|",
        *(f"| {label} | {_fmt(m(f'density.gap_{kind}'))} | {_fmt(m(f'density.skl_{kind}'), 4)} |"
          for kind, label in (("bicubic", "down(R), bicubic"), ("ours", "G(R), ours"), ("oracle", "down(R) (*) k_or, oracle"))),
        f"| L_true, the true LR | {_fmt(m('density.gap_true'))} | - |",
        "",
    ]


def _kernel_lines(metrics: dict, figures: dict[str, str]) -> list[str]:
    """Markdown lines: G's kernel against the true and the oracle kernel, and the LR images' PSNR against L_true."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    return [
        "## Kernels",
        "",
        f"![kernels]({figures['kernels']})",
        "",
        "| kernel | effective sigma (px) |",
        "|---|---|",
        f"| k_gt, the camera blur (applied at HR for R, at LR for L_true) | {_fmt(m('kernel.sigma_true'))} |",
        f"| k_or, oracle (what G should predict) | {_fmt(m('kernel.sigma_oracle'))} |",
        f"| k(R), ours (mean over validation patches) | {_fmt(m('kernel.sigma_pred'))} |",
        "",
        f"Shape against the oracle: ||k - k_or|| / ||k_or|| = {_fmt(m('kernel.shape_error'))} (`kernel.shape_error`, mean over"
        f" images), kernel PSNR {_fmt(m('kernel.psnr'), 1)} dB; second moments: `kernel.cov_rel_error` = {_fmt(m('kernel.cov_rel_error'))}."
        " Shapes are measured against the smooth oracle: the smoothest kernel that fits L_true almost as well as the exact"
        " least-squares oracle (`fca.evaluate.SMOOTH_ORACLE`, 0.2 dB of LR PSNR on the default domain), because the exact"
        " fit fills the frequencies down(R) barely holds with a checkerboard (gallery) that no camera blur has. Against the"
        f" exact fit: `kernel.shape_error_exact` = {_fmt(m('kernel.shape_error_exact'))}.",
        "",
        "| LR PSNR against L_true (dB) | |",
        "|---|---|",
        f"| down(R), bicubic | {_fmt(m('kernel.lr_psnr_bicubic'), 2)} |",
        f"| G(R), ours | {_fmt(m('kernel.lr_psnr_ours'), 2)} |",
        f"| down(R) (*) k_or, oracle | {_fmt(m('kernel.lr_psnr_oracle'), 2)} |",
        "",
    ]


def _sr_probe_lines(metrics: dict, figures: dict[str, str], mixed: bool, blind: bool) -> list[str]:
    """Markdown lines: the SR probe, one small net per kind of training pairs, tested on L_true -> R."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    return [
        "## Downstream super-resolution",
        "",
        f"One small SR network per kind of pairs and seed ({plural(m('sr.seeds'), 'seed')}), the same budget for all, tested on",
        "held-out scenes (input L_true, target R). PSNR (pooled over the crops, mean over the seeds, with its 95 %",
        "interval) and SSIM on the Y channel, a border of s pixels cropped.",
        "",
        "| training pairs | PSNR (dB) | SSIM |",
        "|---|---|---|",
        f"| plain bicubic upsampling (no training) | {_fmt(m('sr.psnr_bicubic_upsampling'), 2)} | {_fmt(m('sr.ssim_bicubic_upsampling'), 4)} |",
        f"| bicubic pairs (down(X), X) | {with_interval(metrics, 'sr.psnr_bicubic', 2)} | {_fmt(m('sr.ssim_bicubic'), 4)} |",
        *([f"| pairs from the best single kernel (down(X) (*) k_global, X) | {with_interval(metrics, 'sr.psnr_global', 2)} | {_fmt(m('sr.ssim_global'), 4)} |"] if mixed else []),
        *([f"| the blind recipe's pairs (Real-ESRGAN first order, X) | {with_interval(metrics, 'sr.psnr_blind', 2)} | "
           f"{_fmt(m('sr.ssim_blind'), 4)} |"] if blind else []),
        f"| our pairs (G(X), X) | {with_interval(metrics, 'sr.psnr_ours', 2)} | {_fmt(m('sr.ssim_ours'), 4)} |",
        f"| oracle pairs (down(X) (*) k_or, X) | {with_interval(metrics, 'sr.psnr_oracle', 2)} | {_fmt(m('sr.ssim_oracle'), 4)} |",
        "",
        f"Gain fraction (ours - bicubic) / (oracle - bicubic): {with_interval(metrics, 'sr.gain_fraction')}"
        + (f"; the blind recipe's: {with_interval(metrics, 'sr.gain_fraction_blind')}; ours over blind: "
           f"{with_interval(metrics, 'sr.gain_db_over_blind', 2)} dB" if blind else "") + ".",
        "A fraction can pass 1: our pairs' nets may beat the oracle's by their training noise (the interval says by how much).",
        "",
        f"![SR crops]({figures['crops']})",
        "",
    ]


def readme_markdown(metrics: dict, figures: dict[str, str], run_info: dict[str, str], nets: dict[str, str] | None = None) -> str:
    """The report page. `figures` maps a figure's role to its path relative to the page; `nets` names
    the SR probe's and train_sr's networks and budgets (`_probe_and_model_lines`).
    Without a known kernel (metrics hold `noref`) it is `noref_markdown`'s page."""
    if "noref" in metrics:
        return noref_markdown(metrics, figures, run_info)
    mixed = "adapt" in metrics
    blind = not math.isnan(lookup(metrics, "sr.psnr_blind"))
    lines = [
        *_known_kernel_intro(mixed, run_info),
        *_verdict_lines(metrics, mixed, blind),
        *(adapt_section(metrics, figures) if mixed else []),
        *_density_lines(metrics, figures),
        *_kernel_lines(metrics, figures),
        *_sr_probe_lines(metrics, figures, mixed, blind),
        *(noise_section(metrics, figures) if "noise" in metrics else []),
        *_page_tail(metrics, figures, nets=nets),
    ]
    return "\n".join(lines)


def noise_section(metrics: dict, figures: dict[str, str]) -> list[str]:
    """A noisy domain: G's noise against the camera's, by brightness (`fca.evaluate.noise_section`)."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    return [
        "## Noise",
        "",
        "The camera's noise (two draws of its model on the validation images' true LR signal) against the noise G adds",
        "(two outputs of G for the same input differ by its noise alone), per pixel and channel, in brightness bins that",
        "each hold a sixth of the pixels.",
        "",
        f"![noise by brightness]({figures['noise']})",
        "",
        "| | camera | ours |",
        "|---|---|---|",
        f"| noise variance (mean over the bins) | {m('noise.variance_camera'):.3g} | {m('noise.variance_ours'):.3g} |",
        f"| neighbouring pixels' correlation (lag 1; white noise: 0) | {_fmt(m('noise.lag1_camera'))} | {_fmt(m('noise.lag1_ours'))} |",
        "",
        f"Ours / camera in the bins: {_fmt(m('noise.variance_ratio_min'), 2)} .. {_fmt(m('noise.variance_ratio_max'), 2)}"
        " (`noise.variance_ratio_min` / `_max`; 1 is the camera's level at every brightness).",
        "",
    ]
