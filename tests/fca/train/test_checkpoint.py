import random

import numpy as np
import pytest
import torch

from fca.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint


def _draws(gen: torch.Generator) -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)], torch.rand(3, generator=gen).tolist())


def test_rng_round_trip_through_a_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng(gen)})
    first = _draws(gen)
    other = torch.Generator().manual_seed(99)
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"], other)
    assert _draws(other) == first


def test_model_and_optimiser_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.rand(4, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "opt": opt.state_dict(), "step": 7, "hist": [{"a": 1.0}]})
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["step"] == 7 and state["hist"] == [{"a": 1.0}]
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    torch.testing.assert_close(state["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"step": 2, "bad": Unsaveable()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_truncated_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="last.pt"):
        load_checkpoint(path)


def test_checkpoints_get_the_umask_permissions_not_0600(tmp_path):
    import os
    import stat

    from fca.train.checkpoint import save_checkpoint

    saved = os.umask(0o002)
    try:
        save_checkpoint(tmp_path / "last.pt", {"a": torch.ones(1)})
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == 0o664
