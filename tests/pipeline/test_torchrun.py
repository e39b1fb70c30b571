"""The training stages under `torchrun --nproc-per-node 2` on the CPU (gloo), as a user launches them."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import cli
from tests.inprocess import fca_here

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Tiny params (short training) and patches of the built-in images."""
    tmp = tmp_path_factory.mktemp("torchrun")
    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())
    raw["fdc"].update(steps=12, eval_every=6, checkpoint_every=6, eval_repeats=1)
    raw["generator"].update(steps=8, checkpoint_every=4, image_every=4)
    raw["evaluate"]["blind"] = False  # one SR net fewer per run; the blind recipe's has its own tests
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {"FCA_TRACKING": "off", "FCA_PROGRESS": "off"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        p = str(tmp / "params.yaml")
        assert cli.main(["download", "--params", p, "--out", str(tmp / "raw"), "--cache", str(tmp / "cache")]) == 0
        assert cli.main(["patches", "--params", p, "--raw", str(tmp / "raw"), "--out", str(tmp / "patches")]) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return tmp


def _run(cmd: list[str], tmp: Path, **extra_env: str) -> str:
    env = dict(os.environ, FCA_PROGRESS="off", FCA_THREADS="1", MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
               FCA_PIPELINE_ID="torchrun-test", **extra_env)
    env.pop("FCA_TRACKING", None)
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


def _stage_cmd(stage: str, tmp: Path, tag: str) -> list[str]:
    if stage == "evaluate":  # judges the single-process generator: only the SR nets' training differs
        return [stage, "--params", "params.yaml", "--patches", "patches", "--generator", "single/generator.pt",
                "--out", f"{tag}/metrics.json", "--density", f"{tag}/density.csv",
                "--arrays", f"{tag}/evaluation", "--device", "cpu"]
    if stage == "train-sr":  # trains on the single-process generator's pairs
        return [stage, "--params", "params.yaml", "--patches", "patches", "--generator", "single/generator.pt",
                "--out-ours", f"{tag}/sr_ours.pt", "--out-bicubic", f"{tag}/sr_bicubic.pt", "--out-blind", f"{tag}/sr_blind.pt",
                "--curve", f"{tag}/sr.csv", "--metrics", f"{tag}/sr.json", "--figure", f"{tag}/sr.png",
                "--checkpoints", f"{tag}/ckpt_sr", "--device", "cpu"]
    if stage == "train-fdc":
        return [stage, "--params", "params.yaml", "--patches", "patches", "--out", f"{tag}/fdc.pt",
                "--metrics", f"{tag}/fdc.json", "--curve", f"{tag}/fdc.csv", "--checkpoints", f"{tag}/ckpt_fdc", "--device", "cpu"]
    return [stage, "--params", "params.yaml", "--patches", "patches", "--fdc", "single/fdc.pt", "--out", f"{tag}/generator.pt",
            "--curve", f"{tag}/generator.csv", "--checkpoints", f"{tag}/ckpt_gen", "--device", "cpu"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """A trained model's floating-point weights (the "model" entry of every stage's model file)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return {k: v for k, v in state.items() if v.is_floating_point()}


@pytest.mark.slow
def test_training_stages_under_torchrun_match_one_process_and_only_rank0_writes_and_logs(workdir):
    tmp = workdir
    for stage in ("train-fdc", "train-generator", "evaluate", "train-sr"):  # the references, in this process
        fca_here(tmp, _stage_cmd(stage, tmp, "single"), FCA_PROGRESS="off", FCA_THREADS="1", FCA_TRACKING=None,
                 MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", FCA_PIPELINE_ID="torchrun-test")
    # torchrun by hand, and through FCA_NPROC (what dvc repro, Snakemake or a Slurm job set).
    text = _run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "pipeline.cli",
                 *_stage_cmd("train-fdc", tmp, "ddp")], tmp)
    assert "rank 1 of 2 on cpu (backend gloo)" in text, text[-3000:]
    text = _run([str(BIN / "fca"), *_stage_cmd("train-generator", tmp, "ddp")], tmp, FCA_NPROC="2")
    assert "train-generator on 2 processes" in text and "rank 1 of 2 on cpu (backend gloo)" in text, text[-3000:]
    _run([str(BIN / "fca"), *_stage_cmd("evaluate", tmp, "ddp")], tmp, FCA_NPROC="2")
    text = _run([str(BIN / "fca"), *_stage_cmd("train-sr", tmp, "ddp")], tmp, FCA_NPROC="2")
    assert "train-sr on 2 processes" in text and "rank 1 of 2 on cpu (backend gloo)" in text, text[-3000:]

    # The referee: everything but the SR nets is computed alike on every rank; the SR nets
    # train over the two ranks and give the single-process PSNRs (weights agree to ~1e-5).
    m_one = json.loads((tmp / "single" / "metrics.json").read_text())
    m_two = json.loads((tmp / "ddp" / "metrics.json").read_text())
    assert m_two["density"] == m_one["density"] and m_two["kernel"] == m_one["kernel"]
    for k in ("psnr_bicubic", "psnr_ours", "psnr_oracle"):
        assert abs(m_two["sr"][k] - m_one["sr"][k]) < 0.01, (k, m_one["sr"][k], m_two["sr"][k])

    # The models: the same training, split over two processes. The generator agrees to float
    # rounding (measured 1e-6). The FDC agrees to 1e-7 on most configs (tests/fca/
    # test_distributed.py), but on this one three weights of the conv before the first
    # BatchNorm get a near-zero gradient at step 2, and Adam turns its round-off into full
    # lr-sized steps of either sign (measured: 1.9e-3 from step 3 on, everything else 1e-5).
    gen_one, gen_two = _weights(tmp / "single" / "generator.pt"), _weights(tmp / "ddp" / "generator.pt")
    assert gen_one.keys() == gen_two.keys()
    for k in gen_one:
        if k != "estimator.head.2.bias":  # the softmax ignores it (see tests/fca/test_distributed.py)
            torch.testing.assert_close(gen_two[k], gen_one[k], atol=1e-4, rtol=0, msg=f"generator: {k}")
    fdc_one, fdc_two = _weights(tmp / "single" / "fdc.pt"), _weights(tmp / "ddp" / "fdc.pt")
    for k in fdc_one:
        torch.testing.assert_close(fdc_two[k], fdc_one[k], atol=4e-3, rtol=0, msg=f"fdc: {k}")
    acc_one = json.loads((tmp / "single" / "fdc.json").read_text())
    acc_two = json.loads((tmp / "ddp" / "fdc.json").read_text())
    for k in ("acc_s3.5", "acc_s2.0", "acc_s1.2"):
        assert abs(acc_two[k] - acc_one[k]) <= 0.05, (k, acc_one[k], acc_two[k])
    # Rank 0 alone wrote: one curve row per evaluation / step, no stray temp files, checkpoints cleaned up.
    assert len((tmp / "ddp" / "fdc.csv").read_text().splitlines()) == 1 + 2  # header + evals at steps 6 and 12
    assert len((tmp / "ddp" / "generator.csv").read_text().splitlines()) == 1 + 8
    assert not [p.name for p in (tmp / "ddp").iterdir() if p.name.startswith(".")]
    # Rank 0 alone logged: one MLflow run per stage and launch, the torchrun one saying 2 processes.
    db = sqlite3.connect(tmp / "mlflow.db")
    rows = db.execute(
        "select t.value, p.value from tags t join params p on p.run_uuid = t.run_uuid "
        "where t.key = 'fca.stage' and p.key = 'processes'"
    ).fetchall()
    assert sorted(rows) == [("evaluate", "1"), ("evaluate", "2"), ("train_fdc", "1"), ("train_fdc", "2"),
                            ("train_generator", "1"), ("train_generator", "2"), ("train_sr", "1"), ("train_sr", "2")]
    # The SR models: the same training split over two processes (the nets agree to float rounding).
    for kind in ("ours", "bicubic", "blind"):
        one, two = _weights(tmp / "single" / f"sr_{kind}.pt"), _weights(tmp / "ddp" / f"sr_{kind}.pt")
        assert one.keys() == two.keys() and one
        for k in one:
            torch.testing.assert_close(two[k], one[k], atol=1e-4, rtol=0, msg=f"sr_{kind}: {k}")
    steps = db.execute(
        "select count(*) from metrics m join params p on p.run_uuid = m.run_uuid "
        "where m.key = 'loss_g' and p.key = 'processes' and p.value = '2'"
    ).fetchone()[0]
    assert steps == 8  # each step logged once, not once per rank


def test_a_bad_process_count_is_an_error_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("FCA_NPROC", "two")
    monkeypatch.delenv("RANK", raising=False)
    assert cli.main(["train-fdc", "--patches", "nowhere", "--out", "x", "--metrics", "m", "--curve", "c"]) == 2
    assert "FCA_NPROC = 'two'" in capsys.readouterr().err
