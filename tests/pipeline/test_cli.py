"""The `fca` command as a user meets it: help, clear errors, no partial output."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_stage(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"fca {name}" in out and "--" in out


def test_the_installed_entry_point_answers_help():
    """The `python -m pipeline.cli` entry (what the console script runs) in a fresh process."""
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "train-fdc", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "fca train-fdc" in out.stdout and "--" in out.stdout


def _write_params(tmp_path, **patches_overrides):
    raw = yaml.safe_load((ROOT / "tests" / "params_tiny.yaml").read_text())
    raw["patches"].update(patches_overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _images(folder: Path, n: int, size: int = 160) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")


def test_bad_params_value_stops_before_work_naming_the_key(tmp_path, capsys):
    params = _write_params(tmp_path, size=-8)
    _images(tmp_path / "raw", 2)
    code = cli.main(["patches", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "patches.size = -8: must be >= 16" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreadable_image_error_names_it_and_leaves_no_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCA_TRACKING", "off")
    _images(tmp_path / "raw", 3)
    (tmp_path / "raw" / "broken.png").write_bytes(b"not a png")
    params = _write_params(tmp_path)
    code = cli.main(["patches", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp folder left


def test_skip_mode_reports_bad_and_small_images(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCA_TRACKING", "off")
    _images(tmp_path / "raw", 3)
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "raw" / "tiny.png")
    (tmp_path / "raw" / "broken.png").write_bytes(b"not a png")
    params = _write_params(tmp_path, on_bad_image="skip", val_fraction=0.3)
    code = cli.main(["patches", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "1 too small, 1 unreadable" in out and "broken.png" in out
    summary = yaml.safe_load((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped_small"] == ["tiny.png"]
    assert (tmp_path / "out" / "kernel.npy").is_file() and (tmp_path / "out" / "index.csv").is_file()


# ---------------------------------------------------------------- FCA_NPROC > 1: torchrun on the loopback only


def test_nproc_launches_torchrun_with_its_rendezvous_on_the_loopback(monkeypatch, capsys):
    seen = []
    monkeypatch.setenv("FCA_NPROC", "2")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(cli.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    assert cli.main(["train-fdc", "--patches", "p"]) == 0
    (cmd,) = seen
    assert cmd[:3] == [sys.executable, "-m", "pipeline.torchrun"]
    assert "--standalone" not in cmd  # its store would listen on every interface
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert flags["--nproc-per-node"] == "2" and flags["--nnodes"] == "1" and flags["--rdzv-backend"] == "c10d"
    assert flags["--rdzv-endpoint"] == "127.0.0.1:0" and flags["--local-addr"] == "127.0.0.1"
    assert cmd[-5:] == ["-m", "pipeline.cli", "train-fdc", "--patches", "p"]
    assert "train-fdc on 2 processes" in capsys.readouterr().err


_WORKER = """
import json, os, sys
import torch, torch.distributed as dist

def listening(pids):
    inodes = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[link[8:-1]] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # LISTEN, ours or the launcher's
                found.append(parts[1].rsplit(":", 1)[0])
    return found

dist.init_process_group("gloo")
t = torch.ones(1)
dist.all_reduce(t)
rank = dist.get_rank()
result = {"sum": float(t), "master": os.environ["MASTER_ADDR"], "listen": listening([os.getpid(), os.getppid()])}
dist.barrier()
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_every_socket_of_a_two_process_job_listens_on_the_loopback_only(tmp_path):
    import json

    from pipeline import torchrun

    (tmp_path / "worker.py").write_text(_WORKER)
    cmd = torchrun.command(2, [str(tmp_path / "worker.py"), str(tmp_path)])
    env = dict(torchrun.environment(), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::1, ::ffff:127.0.0.1
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["sum"] == 2.0 and result["master"] == "127.0.0.1"
        assert len(result["listen"]) >= 3  # the launcher's two stores and this rank's gloo socket
        assert set(result["listen"]) <= loopback, result["listen"]


def test_patches_lists_every_file_it_does_not_read(tmp_path, capsys, monkeypatch):
    import json

    from pipeline.params import with_defaults

    monkeypatch.setenv("FCA_TRACKING", "off")
    _images(tmp_path / "raw", 3)
    (tmp_path / "raw" / "notes.txt").write_text("x")
    (tmp_path / "raw" / "scan.eps").write_text("%!PS")
    (tmp_path / "raw" / ".DS_Store").write_bytes(b"\0")
    path = _write_params(tmp_path, val_fraction=0.3)
    path.write_text(yaml.safe_dump(with_defaults(yaml.safe_load(path.read_text()))))  # keys the tiny params may lack, at their defaults
    code = cli.main(["patches", "--params", str(path), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s.split(":")[0] for s in summary["ignored"]] == [".DS_Store", "notes.txt", "scan.eps"]
    assert "notes.txt: not an image file: suffix '.txt'" in summary["ignored"][1]
    assert "not an image, ignored" in out and "scan.eps" in out


@pytest.mark.parametrize("name", ["degrade", "upscale"])
def test_commands_that_train_nothing_do_not_say_train_in_their_device_help(name, capsys):
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "where to compute" in out and "where to train" not in out and "torchrun" not in out


def test_upscale_offers_no_params_file_and_its_size_limit_names_what_it_does(capsys):
    with pytest.raises(SystemExit):
        cli.main(["upscale", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--params" not in out and "on_bad_image" not in out
    assert "an error naming the file, and no output for it" in out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_of_every_command_says_what_it_is(name):
    import importlib

    parser = importlib.import_module(cli.COMMANDS[name][0]).build()
    assert [a.option_strings for a in parser._actions if not a.help] == []


@pytest.mark.parametrize(("name", "too_big"), [("download", "an error naming the file: the download stops"),
                                               ("patches", "an unreadable image (params: patches.on_bad_image)"),
                                               ("degrade", "an unreadable image (see --on-bad-image)")])
def test_the_size_limit_names_what_each_command_does_with_a_bigger_image(name, too_big, capsys):
    """download has no bad-image setting; patches has a param, degrade an option."""
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"A bigger image is {too_big}" in out
