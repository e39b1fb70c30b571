"""The trainers' one loop (`fca.train.loop`) on a toy regression: resume, callbacks, NaN, the checkpoint layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fca.distributed import Dist
from fca.train.checkpoint import (
    LEGACY_NAME,
    TrainingDivergedError,
    load_checkpoint,
    net_path,
    plain_config,
    save_checkpoint,
    seeded,
    state_path,
)
from fca.train.hardware import Precision
from fca.train.loop import Checkpoints, Periodic, Progress, Training, run_loop

CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    steps: int = 6
    checkpoint_every: int = 2
    lr: float = 0.1


def _training(config: ToyConfig) -> Training:
    with seeded(0):
        net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr)
    return Training(net, {"net": opt}, {"net": torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)}, Precision(CPU),
                    torch.Generator().manual_seed(0), aux={"twin": torch.nn.Linear(1, 1)})


def _run(config: ToyConfig, folder=None, *, on_step=None, periodic=()) -> Training:
    """Regress a random batch (drawn from the run's rng) to 1."""
    training = _training(config)
    checkpoints = Checkpoints(folder, config.checkpoint_every, plain_config(config), "toy", "toy net", resumable=("checkpoint_every",))

    def step_fn(step: int) -> dict[str, float]:
        x = torch.rand(4, 3, generator=training.rng)
        loss = (training.model(x) - 1).pow(2).mean()
        training.precision.step(loss, training.optimizers["net"])
        training.schedulers["net"].step()
        return {"loss": loss.item()}

    run_loop(training, step_fn, steps=config.steps, checkpoints=checkpoints, dist=Dist(), resume=checkpoints.find(CPU),
             on_step=on_step, periodic=periodic, progress=Progress("toy", False))
    return training


def _kill_at(step: int):
    def on_step(at: int, metrics: dict) -> None:
        if at == step:
            raise KeyboardInterrupt

    return on_step


def test_a_killed_run_resumes_to_the_bits_of_an_uninterrupted_one(tmp_path):
    whole = _run(ToyConfig())
    with pytest.raises(KeyboardInterrupt):
        _run(ToyConfig(), tmp_path, on_step=_kill_at(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_00000004.pt", "state_00000004.pt"]
    seen = []
    resumed = _run(ToyConfig(checkpoint_every=3), tmp_path, on_step=lambda s, m: seen.append(s))  # checkpoint_every may change
    assert seen == [5, 6] and resumed.history == whole.history
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()))
    weights, state = load_checkpoint(net_path(tmp_path, 6)), load_checkpoint(state_path(tmp_path, 6))
    assert set(weights) == {"config", "step", "model"}  # the product alone
    assert set(state["nets"]) == {"twin"} and set(state["optimizers"]) == set(state["schedulers"]) == {"net"}


def test_periodic_actions_run_on_their_steps_and_after_the_last():
    evaluated = []
    _run(ToyConfig(steps=7), periodic=[Periodic(3, evaluated.append)])
    assert evaluated == [3, 6, 7]


def test_a_nan_loss_names_the_step_and_leaves_the_last_checkpoint(tmp_path):
    with pytest.raises(TrainingDivergedError, match="at step 3: loss = nan"):
        _nan_from_step_3(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_00000002.pt", "state_00000002.pt"]


def _nan_from_step_3(folder) -> None:
    config = ToyConfig()
    training = _training(config)
    checkpoints = Checkpoints(folder, config.checkpoint_every, plain_config(config), "toy", "toy net")
    run_loop(training, lambda step: {"loss": float("nan") if step >= 3 else 1.0}, steps=config.steps, checkpoints=checkpoints,
             dist=Dist(), progress=Progress("toy", False))


def test_a_checkpoint_of_other_params_or_an_earlier_layout_is_one_line_naming_the_file(tmp_path):
    _run(ToyConfig(steps=2), tmp_path)
    with pytest.raises(ValueError, match=r"state_00000002\.pt: written with different toy params \(lr\); delete the checkpoint folder"):
        _run(ToyConfig(steps=2, lr=0.2), tmp_path)
    state = load_checkpoint(state_path(tmp_path, 2))
    del state["layout"]
    save_checkpoint(state_path(tmp_path, 2), state)
    with pytest.raises(ValueError, match=r"state_00000002\.pt: a checkpoint of an earlier version of toy training"):
        _run(ToyConfig(steps=2), tmp_path)
    old = tmp_path / "old"
    save_checkpoint(old / LEGACY_NAME, {"step": 1})  # the one-file layout
    with pytest.raises(ValueError, match=rf"{LEGACY_NAME}: a checkpoint of an earlier version of toy training"):
        _run(ToyConfig(steps=2), old)
