"""Training checkpoints: the folder layout, atomic save/load, and the seeding of a run's build.

One layout for every trainer (`fca.train.loop`): each checkpoint is a pair of files in the
run's folder,

- `net_<step>.pt`: the product, what `load_fdc` / `load_generator` / `load_sr_model` read and
  the stage publishes under models/: {"config", "step", "model": the network's weights} and
  the trainer's records (the precision it computed in; the SR net's scale and pairs);
- `state_<step>.pt`: everything else a bit-exact resume needs: {"layout", "config", "step",
  "optimizers", "schedulers", "scaler", "rng" (the run's data generator), "history",
  "nets": the weights of networks trained alongside the product (the generator's
  discriminator)}.

The weights are written first, so a crash between the two leaves a net without its state,
which `latest_pair` passes over for the pair before; once both are on disk the older pair
is removed. Each file is written to a temporary file in the same folder, flushed to disk,
then renamed over with `os.replace`, so a crash at any moment leaves either the old or the
new file, never a partial one. Everything stored is tensors, numbers, strings, lists,
tuples and dicts, so it loads with `weights_only=True` (no pickled code runs on load).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fca.config import ConfigError, build_config
from fca.fsutil import file_mode

# Stored in every state file: a checkpoint without it is an earlier version's, as is the
# one-file LEGACY_NAME (weights and training state together) the FDC and generator wrote.
LAYOUT = 1
LEGACY_NAME = "last.pt"
_NET = re.compile(r"^net_(\d{8})\.pt$")


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside: every global RNG seeded with `seed` (`seed_everything`), for a run's build (the
    networks' initial weights). Afterwards the caller's python, numpy and torch CPU states are
    back: the trainers draw their data from their own torch.Generator, so a library call
    leaves its caller's random streams as it found them (CUDA's stays seeded, as
    `torch.manual_seed` leaves it: reading its state back would start CUDA on a CPU run)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def plain_config(config: Any) -> dict[str, Any]:
    """A config dataclass as checkpoint-safe plain values (tuples -> lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def net_path(folder: Path | str, step: int) -> Path:
    """The weights file of the checkpoint at `step`: the model a finished run leaves (see the module docstring)."""
    return Path(folder) / f"net_{step:08d}.pt"


def state_path(folder: Path | str, step: int) -> Path:
    """The training-state file of the checkpoint at `step`."""
    return Path(folder) / f"state_{step:08d}.pt"


def latest_pair(folder: Path | str) -> tuple[Path, Path] | None:
    """The newest (net_<step>.pt, state_<step>.pt) pair in `folder`, None when there is none: a
    crash between the two writes leaves a net without its state, which is passed over for the
    previous pair."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = sorted((int(m.group(1)) for p in folder.glob("net_*.pt") if (m := _NET.match(p.name))), reverse=True)
    for step in steps:
        if state_path(folder, step).is_file():
            return net_path(folder, step), state_path(folder, step)
    return None


def save_pair(folder: Path | str, step: int, weights: dict[str, Any], state: dict[str, Any]) -> None:
    """Write the checkpoint at `step` (weights first, then state), then remove every older pair."""
    keep = (net_path(folder, step), state_path(folder, step))
    save_checkpoint(keep[0], weights)
    save_checkpoint(keep[1], state)
    for old in [*Path(folder).glob("net_*.pt"), *Path(folder).glob("state_*.pt")]:
        if old not in keep:
            old.unlink(missing_ok=True)


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically (temp file in the same folder, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp's 0600 -> what the umask gives new files (shared caches)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; errors name the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated or foreign file: say which one
        raise RuntimeError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e


class CheckpointError(ValueError):
    """A checkpoint whose config or weights do not hold up; one line naming the file and the key."""


def checkpoint_config(path: Path | str, raw: Any, cls: type, required: Collection[str]) -> Any:
    """The config dataclass `cls` from the mapping a checkpoint stores, validated as params.yaml is.

    Keys this version does not know (older checkpoints) are ignored; the keys in
    `required` (those that define the architecture) must be present, the others
    default. A NaN, inf, out-of-range or mistyped value is a CheckpointError naming
    the file and the key, e.g. `models/generator.pt: config.scale = nan: must be finite`.
    """
    try:
        return build_config(cls, raw, "config", ignore_unknown=True, required=required)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def check_weights(path: Path | str, expected: Mapping[str, torch.Tensor], weights: Any, what: str) -> None:
    """Raise CheckpointError unless `weights` is a state dict that fits `expected` (the model's own
    state dict, e.g. built on the meta device) key for key and shape for shape, with finite values.

    The message names the first mismatch: `PATH: weights do not fit the WHAT its config describes
    (KEY: shape [1, 8, 1, 1] in the file, [1, 16, 1, 1] expected)`, or `PATH: weight KEY holds NaN or inf`.
    """
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{path}: the {what} weights are a {type(weights).__name__}, not a mapping of tensors")
    unfit = f"{path}: weights do not fit the {what} its config describes"
    for key, want in expected.items():
        if key not in weights:
            raise CheckpointError(f"{unfit} ({key}: missing from the file)")
        got = weights[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{path}: weight {key} is a {type(got).__name__}, not a tensor")
        if got.shape != want.shape:
            raise CheckpointError(f"{unfit} ({key}: shape {_shape(got)} in the file, {_shape(want)} expected)")
    extra = [k for k in weights if k not in expected]
    if extra:
        raise CheckpointError(f"{unfit} ({extra[0]}: in the file, not in the {what}" + (f"; {len(extra) - 1} more" if len(extra) > 1 else "") + ")")
    for key in expected:
        t = weights[key]
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: weight {key} holds NaN or inf")


def load_weights(path: Path | str, module: torch.nn.Module, weights: Any, what: str) -> None:
    """`module.load_state_dict(weights)` after `check_weights`; any error left is one CheckpointError line."""
    check_weights(path, module.state_dict(), weights, what)
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).strip())
        raise CheckpointError(f"{path}: weights do not fit the {what} its config describes ({first})") from None


class TrainingDivergedError(RuntimeError):
    """A loss went NaN or inf; the message names the step and the loss."""

    def __init__(self, step: int, loss_name: str, value: float):
        super().__init__(f"training diverged at step {step}: {loss_name} = {value}; the last good checkpoint is kept")
        self.step, self.loss_name, self.value = step, loss_name, value
