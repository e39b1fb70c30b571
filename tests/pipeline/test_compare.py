"""`fca compare`'s table of the latest evaluate run per loss, read back from MLflow."""

import math

from pipeline.compare import COLUMNS, table


def _run(loss: str, run_id: str, metrics: dict[str, float]) -> dict:
    return {"params": {"generator.loss": loss}, "run_id": run_id, "metrics": metrics}


def test_a_run_logged_before_our_keys_said_ours_compares_under_the_new_names():
    new = _run("fdc", "b", {"sr.psnr_ours": 25.2, "kernel.lr_psnr_ours": 55.4, "sr.gain_fraction": 0.95})
    old = _run("spectral", "a", {"sr.psnr_fca": 24.9, "kernel.lr_psnr_fca": 50.1, "sr.gain_fraction": 0.9})
    df = table([new, old], ["fdc", "spectral"]).set_index("loss")
    assert df.loc["fdc", "sr.psnr_ours"] == 25.2 and df.loc["spectral", "sr.psnr_ours"] == 24.9
    assert df.loc["spectral", "kernel.lr_psnr_ours"] == 50.1 and df.loc["spectral", "sr.gain_fraction"] == 0.9
    assert not any("fca" in c for c in COLUMNS)
    assert math.isnan(df.loc["fdc", "sr.psnr_bicubic"])  # a number the run did not log stays empty
