"""--threads: applied by every stage, recorded with its MLflow params and its outputs."""

import argparse

import pytest
import torch

from fca.train.hardware import cpu_description

from fca.distributed import Dist
from fca.train.checkpoint import load_checkpoint, save_checkpoint
from fca.train.fdc import FDCConfig
from pipeline import stage


def test_setup_torch_sets_the_named_count_or_the_default(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert stage.setup_torch(argparse.Namespace(threads=2, device="cpu")) == torch.device("cpu")
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Snakemake sets for a rule's `threads: 1`
        stage.setup_torch(argparse.Namespace(threads=0, device="cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_threads_env_and_option_reach_the_parser(monkeypatch):
    p = stage.parser("x", "")
    stage.add_device(p)
    assert p.parse_args(["--threads", "3"]).threads == 3
    monkeypatch.setenv("FCA_THREADS", "2")
    p = stage.parser("x", "")
    stage.add_device(p)
    assert p.parse_args([]).threads == 2
    assert p.parse_args(["--threads", "1"]).threads == 1  # the command (dvc.yaml) wins over the environment


def test_run_params_and_checkpoints_record_the_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        params = stage.run_params(FDCConfig(), torch.device("cpu"), Dist())
        assert params["threads"] == 1 and params["device"] == "cpu" and params["processes"] == 1
        assert params["torch"] == torch.__version__
        save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}, "config": {"channels": 8}})
        stage.publish_checkpoint(tmp_path / "last.pt", tmp_path / "model.pt", stage.runtime("cpu", Dist()))
        state = load_checkpoint(tmp_path / "model.pt")
        assert state["runtime"] == {"device": "cpu", "processes": 1, "threads": 1, "torch": torch.__version__,
                                    **cpu_description()}  # the CPU model and the flags that shape its numbers
        assert torch.equal(state["model"]["w"], torch.ones(2)) and state["config"] == {"channels": 8}
    finally:
        torch.set_num_threads(before)


def test_a_command_run_in_process_gives_the_caller_back_its_thread_count(monkeypatch):
    """The body runs with the command's count (--threads, or the CPUs), and the caller, a test or
    a notebook, finds its own count again afterwards: on success, on a user error and on a crash."""
    seen = []

    def build():
        p = stage.parser("x", "")
        stage.add_device(p)
        p.add_argument("--outcome", default="ok")
        return p

    def body(args, params):
        seen.append(torch.get_num_threads())
        if args.outcome == "crash":
            raise KeyError("a bug")
        if args.outcome == "user error":
            raise ValueError("a user error")

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.delenv("FCA_THREADS", raising=False)
        assert stage.run("x", ["--threads", "3"], build, body, load=lambda a: None) == 0
        assert seen == [3] and torch.get_num_threads() == 1
        assert stage.run("x", ["--threads", "2", "--outcome", "user error"], build, body, load=lambda a: None) == 2
        assert seen[-1] == 2 and torch.get_num_threads() == 1
        with pytest.raises(KeyError):
            stage.run("x", ["--threads", "2", "--outcome", "crash"], build, body, load=lambda a: None)
        assert seen[-1] == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_published_checkpoint_has_the_same_bytes_whatever_its_temporary_name(tmp_path):
    """dvc.lock hashes models/*.pt: the same weights must give the same file."""
    save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}})
    for name in (".a.tmp", ".a-much-longer-temporary-name.tmp"):
        stage.publish_checkpoint(tmp_path / "last.pt", tmp_path / name, {"threads": 1})
    assert (tmp_path / ".a.tmp").read_bytes() == (tmp_path / ".a-much-longer-temporary-name.tmp").read_bytes()
