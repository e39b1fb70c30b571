"""A training stage killed with SIGKILL under `dvc repro` resumes from its checkpoint when run again."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from fca.train.checkpoint import latest_pair
from tests.test_engines_e2e import BIN, _env, checkout, run


def _checkpoint_step(repo: Path) -> int:
    """The step of the newest train_fdc checkpoint on disk (0 if none can be read yet)."""
    for folder in (repo / "checkpoints" / "train_fdc").glob("*"):
        try:
            found = latest_pair(folder)
            return int(torch.load(found[1], map_location="cpu", weights_only=True)["step"]) if found else 0
        except Exception:  # being replaced right now (atomic rename, older pair removed): look again
            return 0
    return 0


@pytest.mark.slow
def test_dvc_repro_after_kill_9_resumes_train_fdc(tmp_path):
    repo = checkout(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["fdc"].update(steps=120, checkpoint_every=20, eval_every=120)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "patches"], repo, tmp_path)

    proc = subprocess.Popen([dvc, "repro", "train_fdc"], cwd=repo, env=_env(tmp_path), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while _checkpoint_step(repo) < 20:
        assert proc.poll() is None, "train_fdc ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc, fca and all: a power cut, not a polite stop
    proc.wait()
    killed_at = _checkpoint_step(repo)
    assert 20 <= killed_at < 120
    assert not (repo / "models" / "fdc.pt").exists()

    out = run([dvc, "repro", "train_fdc"], repo, tmp_path)
    resumed = re.search(r"train_fdc: resuming from \S+ at step (\d+) of 120", out)
    assert resumed, out[-3000:]
    assert int(resumed.group(1)) == killed_at
    assert (repo / "models" / "fdc.pt").is_file()
    assert torch.load(repo / "models" / "fdc.pt", weights_only=True)["step"] == 120
    assert not list((repo / "checkpoints" / "train_fdc").glob("*/*.pt"))  # finished: cleaned up
    assert "Data and pipelines are up to date" in run([dvc, "status", "train_fdc"], repo, tmp_path)
