"""Training checkpoints: atomic save/load and the RNG states a bit-exact resume needs.

A checkpoint is one `torch.save`d dict (model / optimiser / scheduler state dicts,
the step, RNG states, anything else the trainer wants). It is written to a
temporary file in the same folder, flushed to disk, then renamed over the old one
with `os.replace`, so a crash at any moment leaves either the old or the new file,
never a partial one. Everything stored is tensors, numbers, strings, lists, tuples
and dicts, so it loads with `weights_only=True` (no pickled code runs on load).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fca.config import ConfigError, build_config
from fca.fsutil import file_mode


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    """The global RNG states (torch CPU, CUDA if present, numpy, python) and an optional data-sampling generator."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        state["data"] = data_generator.get_state()
    return state


def restore_rng(state: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_generator is not None:
        if "data" not in state:
            raise ValueError("checkpoint holds no data-sampling RNG state")
        data_generator.set_state(state["data"])


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
