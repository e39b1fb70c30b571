"""Stage `report`: a page a person reads in a minute (reports/README.md) and its figures."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fca.config import param


@dataclass(frozen=True)
class ReportConfig:
    gallery_size: int = param(6, ge=1, help="predicted kernels shown in the gallery, and degraded images shown")


# (metric key, what it is, target as (comparison, value) or None). The demo-scale targets of the referee.
TARGETS: list[tuple[str, str, tuple[str, float] | None]] = [
    ("density.gap_reduction", "share of the bicubic density gap to R that G closes", (">=", 0.9)),
    ("kernel.cov_rel_error", "kernel second-moment error against the oracle kernel", ("<=", 0.10)),
    ("sr.gain_fraction", "share of the oracle's SR gain over bicubic pairs that our pairs recover", (">=", 0.9)),
    ("fdc.acc_s1.2", "FDC ordering accuracy on held-out patches at scale 1.2", (">", 0.9)),
]


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


def readme_markdown(metrics: dict, figures: dict[str, str], run_info: dict[str, str]) -> str:
    """The report page. `figures` maps a figure's role to its path relative to the page."""
    m = lambda k: lookup(metrics, k)  # noqa: E731
    lines = [
        "# FCA run report",
        "",
        "Synthetic real domain with a known answer: clean patches I blurred by a known kernel k_gt give",
        "the real domain R = I (*) k_gt; the true real-world LR is L_true = down(I) (*) k_gt. The generator",
        "G(R) = down(R) (*) k(R) must find the oracle kernel k_or (the best K x K kernel, by least squares).",
        "",
        " | ".join(f"{k}: {v}" for k, v in run_info.items()),
        "",
        "## Verdict",
        "",
        "| check | value | target | |",
        "|---|---|---|---|",
    ]
    for key, what, target in TARGETS:
        v = m(key)
        lines.append(f"| {what} (`{key}`) | {_fmt(v)} | {target[0]} {target[1]} | {'pass' if passes(v, target) else '**miss**'} |")
    lr_ok = m("kernel.lr_psnr_fca") > m("kernel.lr_psnr_bicubic")
    lines.append(f"| LR PSNR against L_true: ours above bicubic | {_fmt(m('kernel.lr_psnr_fca'), 2)} vs {_fmt(m('kernel.lr_psnr_bicubic'), 2)} dB | ours > bicubic | {'pass' if lr_ok else '**miss**'} |")
    lines += [
        "",
        f"The right answer itself, the oracle kernel, closes {_fmt(m('density.gap_reduction_oracle'))} of the density gap "
        "(`density.gap_reduction_oracle`): L_true differs from R in the top frequency bins, so a gap reduction near the "
        "oracle's is what a correct kernel achieves on this metric.",
        "",
        "## Frequency density",
        "",
        f"![frequency density]({figures['density']})",
        "",
        "Distance to the real domain R (L1 of log densities, and symmetric KL):",
        "",
        "| LR images | log-density L1 | sym. KL |",
        "|---|---|---|",
    ]
    for kind, label in (("bicubic", "down(R), bicubic"), ("fca", "G(R), ours"), ("oracle", "down(R) (*) k_or, oracle")):
        lines.append(f"| {label} | {_fmt(m(f'density.gap_{kind}'))} | {_fmt(m(f'density.skl_{kind}'), 4)} |")
    lines += [
        "",
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
        "| LR PSNR against L_true (dB) | |",
        "|---|---|",
        f"| down(R), bicubic | {_fmt(m('kernel.lr_psnr_bicubic'), 2)} |",
        f"| G(R), ours | {_fmt(m('kernel.lr_psnr_fca'), 2)} |",
        f"| down(R) (*) k_or, oracle | {_fmt(m('kernel.lr_psnr_oracle'), 2)} |",
        "",
        "## Downstream super-resolution",
        "",
        "One small SR network trained with the same budget and seed on three kinds of pairs, tested on",
        "held-out scenes (input L_true, target R). PSNR / SSIM on the Y channel, a border of s pixels cropped.",
        "",
        "| training pairs | PSNR (dB) | SSIM |",
        "|---|---|---|",
        f"| plain bicubic upsampling (no training) | {_fmt(m('sr.psnr_bicubic_upsampling'), 2)} | {_fmt(m('sr.ssim_bicubic_upsampling'), 4)} |",
        f"| bicubic pairs (down(X), X) | {_fmt(m('sr.psnr_bicubic'), 2)} | {_fmt(m('sr.ssim_bicubic'), 4)} |",
        f"| our pairs (G(X), X) | {_fmt(m('sr.psnr_fca'), 2)} | {_fmt(m('sr.ssim_fca'), 4)} |",
        f"| oracle pairs (down(X) (*) k_or, X) | {_fmt(m('sr.psnr_oracle'), 2)} | {_fmt(m('sr.ssim_oracle'), 4)} |",
        "",
        f"![SR crops]({figures['crops']})",
        "",
        "## Training",
        "",
        f"![training curves]({figures['training']})",
        "",
        "FDC ordering accuracy on held-out patches: " + ", ".join(
            f"s = {k.split('_s')[-1]}: {_fmt(v)}" for k, v in sorted(metrics.get("fdc", {}).items())),
        "",
        "## Degraded validation images",
        "",
        f"![degraded]({figures['degraded']})",
        "",
        "Numbers: `reports/metrics.json` (`dvc metrics show`); curves: `dvc plots show`; every run's",
        "params, metrics and figures: the MLflow UI (`make mlflow-ui`).",
        "",
    ]
    return "\n".join(lines)
