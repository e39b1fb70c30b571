"""The mixed-kernel referee end to end at tiny scale: the stages' own commands (in this process) on a domain where
every patch has its own blur. A generator that reads each image's blur passes; the same generator
with its per-image signal switched off (a frozen, image-blind head) fails the same assertions."""

import json
from pathlib import Path

import pytest
import yaml

from tests.inprocess import fca_here

pytestmark = pytest.mark.slow  # the stages' own commands, twice: minutes
ROOT = Path(__file__).resolve().parents[1]


def _params(tmp: Path, consistency: float) -> Path:
    p = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())
    p["patches"]["blur"] = {"type": "random", "size": 13, "families": ["anisotropic"], "sigma_range": [1.0, 3.5],
                            "motion_length": [3.0, 9.0], "per": "patch"}
    p["patches"]["max_per_image"] = 16
    p["patches"]["stride"] = 64
    p["generator"] |= {"kernel_size": 13, "kernel_init_sigma": 1.2, "steps": 200, "consistency_batch": 16, "w_consistency": consistency}
    p["evaluate"] |= {"baseline_steps": 20, "bootstrap": 100, "blind": False}  # the blind recipe's SR net: tests/test_engines_e2e.py
    path = tmp / f"params_{consistency}.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def _fca(tmp: Path, *args: str) -> None:
    """`fca ARGS` in `tmp`, in this process: seven fresh processes would add only their imports."""
    argv = [*args, "--threads", "1"] if args[0] not in ("download", "patches") else list(args)
    fca_here(tmp, argv, FCA_TRACKING="off", FCA_PROGRESS="off")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("mixed")
    reading, blind = _params(tmp, 1.0), _params(tmp, 0.0)
    _fca(tmp, "download", "--params", str(reading), "--out", "raw", "--cache", "cache")
    _fca(tmp, "patches", "--params", str(reading), "--raw", "raw", "--out", "patches")
    _fca(tmp, "train-fdc", "--params", str(reading), "--patches", "patches", "--out", "fdc.pt", "--metrics", "fdc.json",
         "--curve", "fdc.csv", "--checkpoints", "ck_fdc")
    results = {}
    for name, params in (("reading", reading), ("blind", blind)):
        _fca(tmp, "train-generator", "--params", str(params), "--patches", "patches", "--fdc", "fdc.pt", "--out", f"{name}.pt",
             "--curve", f"{name}.csv", "--checkpoints", f"ck_{name}")
        _fca(tmp, "evaluate", "--params", str(params), "--patches", "patches", "--generator", f"{name}.pt",
             "--out", f"{name}.json", "--density", f"{name}_density.csv", "--arrays", f"{name}_arrays")
        results[name] = json.loads((tmp / f"{name}.json").read_text())
    return results


def test_the_patches_have_their_own_kernels_and_the_referee_judges_each(runs):
    adapt = runs["reading"]["adapt"]
    for key in ("sigma_pearson", "cov_rel_error_median", "angle_error_median", "lr_psnr_ours", "lr_psnr_global", "gain_db",
                "baseline_sigma_pearson", "seconds_per_image_ours", "seconds_per_image_baseline"):
        assert key in adapt
    assert "psnr_global" in runs["reading"]["sr"]


def test_a_generator_that_reads_each_image_beats_the_best_single_kernel(runs):
    adapt = runs["reading"]["adapt"]
    assert adapt["sigma_pearson"] > 0.4, adapt
    # Measured at this scale: +0.91 dB with the default 4 orientation sectors (cov median 0.143),
    # +3.12 dB with rings only (0.183); the image-blind generator -7.2 dB. At demo scale the two
    # losses agree (docs/results.md, "Orientation sectors in the spectral loss": +5.99 / +6.04 dB).
    assert adapt["gain_db"] > 0.5, adapt
    assert adapt["angle_error_median"] < 20, adapt  # measured 4.2 degrees (the blind one: 46)


def test_an_image_blind_generator_fails_the_same_assertions(runs):
    adapt, reading = runs["blind"]["adapt"], runs["reading"]["adapt"]
    assert not (adapt["sigma_pearson"] > 0.4 and adapt["gain_db"] > 0.5 and adapt["angle_error_median"] < 20), adapt
    assert adapt["gain_db"] < reading["gain_db"] - 1.0
