import random

import numpy as np
import pytest
import torch

from fca.train.checkpoint import latest_pair, load_checkpoint, net_path, save_checkpoint, save_pair, seed_everything, seeded, state_path


def _global_draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def _caller_state() -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state


def test_seeded_builds_the_same_weights_and_gives_the_caller_its_rngs_back():
    _caller_state()
    untouched = _global_draws()
    _caller_state()
    built = []
    for _ in range(2):
        with seeded(5):
            built.append(torch.nn.Linear(3, 2).weight.detach().clone())
            inside = _global_draws()
    assert torch.equal(*built)
    assert _global_draws() == untouched
    seed_everything(5)
    torch.nn.Linear(3, 2)
    assert _global_draws() == inside  # inside: every global RNG seeded, as seed_everything does


def test_a_checkpoint_is_a_weights_file_and_a_state_file_and_only_the_newest_pair_stays(tmp_path):
    save_pair(tmp_path, 2, {"step": 2}, {"step": 2})
    save_pair(tmp_path, 4, {"step": 4, "model": {}}, {"step": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_00000004.pt", "state_00000004.pt"]
    assert load_checkpoint(net_path(tmp_path, 4)) == {"step": 4, "model": {}}
    save_checkpoint(net_path(tmp_path, 6), {"step": 6})  # killed between the two writes of step 6
    assert latest_pair(tmp_path) == (net_path(tmp_path, 4), state_path(tmp_path, 4))
    assert latest_pair(tmp_path / "missing") is None


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
