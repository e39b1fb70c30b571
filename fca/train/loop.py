"""The one training loop of the three trainers (FDC, generator, SR): resume, steps, callbacks, checkpoints.

Each trainer has the same shape. It validates its config against its data, builds its
networks, optimisers and data generator under `seeded(seed)` into a `Training`, finds where
to resume with `Checkpoints.find` (before the build is final: the precision a run computes
in is stored with its weights), and hands `run_loop` a step function: step (1-based) ->
that step's rank-averaged metrics. `run_loop` restores the checkpoint, runs the steps,
stops on a NaN or inf loss, calls the callbacks and writes the checkpoints
(`fca.train.checkpoint` describes the layout), the last one after the final step.

Resume rule: the newest complete pair in the run's folder, if its config equals the run's
(but for the keys that do not change the numbers) and its other ties (the SR net's scale and
pairs) hold; anything else is an error naming the file. Seeding: the build runs under
`seeded(seed)`; every training draw comes from `Training.rng`, a torch.Generator seeded with
the same seed and stored in the checkpoint, so a resumed run continues bit for bit on a CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fca.distributed import Dist
from fca.progress import progress_bar
from fca.train.checkpoint import (
    LAYOUT,
    LEGACY_NAME,
    CheckpointError,
    TrainingDivergedError,
    latest_pair,
    load_checkpoint,
    load_weights,
    save_pair,
)
from fca.train.hardware import Precision, PrecisionChoice, resolve_precision

log = logging.getLogger(__name__)

StepFn = Callable[[int], dict[str, float]]  # 1-based step -> its metrics, averaged over ranks
Callback = Callable[[int, dict[str, float]], None]


@dataclass
class Training:
    """What one run holds between steps, and what its checkpoints store."""

    model: nn.Module  # the product: its weights are the checkpoint's net file
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]  # torch.optim.lr_scheduler objects; {} when the step sets the LR itself
    precision: Precision
    rng: torch.Generator  # every draw of the training data
    aux: dict[str, nn.Module] = field(default_factory=dict)  # trained alongside, used by no one after (the discriminator)
    records: dict[str, Any] = field(default_factory=dict)  # stored with the weights (the precision choice)
    step: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Resume:
    """A checkpoint pair that `Checkpoints.find` accepted: both files' contents."""

    net_path: Path
    state_path: Path
    weights: dict[str, Any]
    state: dict[str, Any]

    @property
    def precision(self) -> dict[str, Any] | None:
        """The precision choice the run computed in (`resolve_precision`'s `stored`)."""
        return self.weights.get("precision")


@dataclass(frozen=True)
class Checkpoints:
    """Where a run checkpoints (no folder: nowhere), how often, and what ties a checkpoint to it.

    config: the run's config as plain values (`plain_config`); section: its params.yaml
    section, for messages; resumable: config keys that may change between a run and its
    resume (they do not change the numbers); ties: other values both files store that a
    resume must match (the SR net's scale and pairs); what: the product, for messages."""

    folder: Path | None
    every: int
    config: dict[str, Any]
    section: str
    what: str
    resumable: tuple[str, ...] = ()
    ties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.folder is not None:
            object.__setattr__(self, "folder", Path(self.folder))

    def find(self, device: torch.device) -> Resume | None:
        """The pair to resume from, None for a fresh start; ValueError naming the file when
        the folder holds a checkpoint of other params or of an earlier version's layout."""
        if self.folder is None:
            return None
        found = latest_pair(self.folder)
        earlier = f"a checkpoint of an earlier version of {self.section} training; delete the checkpoint folder to start over"
        if found is None:
            if (self.folder / LEGACY_NAME).is_file():
                raise ValueError(f"{self.folder / LEGACY_NAME}: {earlier}")
            return None
        weights, state = load_checkpoint(found[0], map_location="cpu"), load_checkpoint(found[1], map_location=device)
        if state.get("layout") != LAYOUT:
            raise ValueError(f"{found[1]}: {earlier}")
        stored = state.get("config", {})
        changed = [k for k in self.config if k not in self.resumable and stored.get(k) != self.config[k]]
        changed += [k for k, v in self.ties.items() if state.get(k) != v]
        if changed or weights.get("step") != state.get("step"):
            raise ValueError(f"{found[1]}: written with different {self.section} params ({', '.join(changed) or 'step'}); "
                             "delete the checkpoint folder to start over")
        return Resume(found[0], found[1], weights, state)

    def save(self, training: Training) -> None:
        """The pair at `training.step`: weights and records apart from the training state."""
        head = {"config": self.config, "step": training.step, **self.ties}
        weights = head | training.records | {"model": {k: v.cpu() for k, v in training.model.state_dict().items()}}
        state = head | {
            "layout": LAYOUT,
            "nets": {name: net.state_dict() for name, net in training.aux.items()},
            "optimizers": {name: opt.state_dict() for name, opt in training.optimizers.items()},
            "schedulers": {name: sched.state_dict() for name, sched in training.schedulers.items()},
            "scaler": training.precision.state_dict(),
            "rng": training.rng.get_state(),
            "history": training.history,
        }
        save_pair(self.folder, training.step, weights, state)

    def restore(self, training: Training, resume: Resume) -> None:
        """Load `resume` into `training`; weights of other code are one CheckpointError line."""
        try:
            load_weights(resume.net_path, training.model, resume.weights["model"], self.what)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; delete the checkpoint folder to start over") from None
        state = resume.state
        for name, net in training.aux.items():
            net.load_state_dict(state["nets"][name])
        for name, opt in training.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in training.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        training.precision.load_state_dict(state["scaler"])
        training.rng.set_state(state["rng"])
        training.step, training.history = int(state["step"]), list(state["history"])


def run_precision(name: str, device: torch.device, cuda_amp: bool, cpu_bf16: str, resume: Resume | None, dist: Dist,
                  on_precision: Callable[[PrecisionChoice], None] | None) -> tuple[Precision, dict[str, Any]]:
    """The precision a run computes in (`resolve_precision`: a resumed run keeps the stored choice,
    every rank takes rank 0's), logged and handed to `on_precision` on rank 0; and the record
    of it the weights file keeps (`Training.records["precision"]`)."""
    stored = resume.precision if resume is not None else None
    choice = resolve_precision(device, cuda_amp, cpu_bf16, stored=stored, share=dist.from_main)
    log.info("%s: %s%s", name, choice.reason, " (stored in the checkpoint)" if resume is not None else "")
    if on_precision is not None and dist.is_main:
        on_precision(choice)
    return Precision(device, cuda_amp, choice.cpu_bf16), {"device": device.type, **choice.as_dict()}


@dataclass(frozen=True)
class Periodic:
    """An action on rank 0 every `every` steps and after the last one (evaluations, previews)."""

    every: int
    action: Callable[[int], None]


@dataclass(frozen=True)
class Progress:
    """The progress bar: the run's name (also in the log lines), whether it shows, and what it shows of a step's metrics."""

    name: str
    enabled: bool
    leave: bool = True
    postfix: Callable[[dict[str, float]], dict[str, str]] | None = None


def _due(step: int, every: int, steps: int) -> bool:
    return step % every == 0 or step == steps


def run_loop(
    training: Training,
    step_fn: StepFn,
    *,
    steps: int,
    checkpoints: Checkpoints | None,
    dist: Dist,
    progress: Progress,
    resume: Resume | None = None,
    watch: str = "loss",
    keep_steps: bool = True,
    on_step: Callback | None = None,
    periodic: Sequence[Periodic] = (),
) -> None:
    """Run `training` from its step (or from `resume`) to `steps`.

    Each step: `step_fn`; TrainingDivergedError when metrics[watch] is NaN or inf (the
    checkpoints on disk stay as they were); with `keep_steps` {"step", **metrics} joins
    training.history (else only what the callbacks put there); then on rank 0 on_step(step,
    metrics) and the `periodic` actions that are due; every `checkpoints.every` steps and
    after the last, rank 0 writes the checkpoint and every rank waits for it."""
    if resume is not None:
        checkpoints.restore(training, resume)
        log.info("%s: resuming from %s at step %d of %d", progress.name, resume.net_path, training.step, steps)
    show = progress.enabled and dist.is_main and training.step < steps
    bar = progress_bar(total=steps, initial=training.step, enabled=show, desc=progress.name, unit="step", leave=progress.leave)
    while training.step < steps:
        step = training.step + 1
        metrics = step_fn(step)
        if not math.isfinite(metrics[watch]):
            raise TrainingDivergedError(step, watch, metrics[watch])
        training.step = step
        if keep_steps:
            training.history.append({"step": step, **metrics})
        if dist.is_main:
            if on_step is not None:
                on_step(step, metrics)
            for p in periodic:
                if _due(step, p.every, steps):
                    p.action(step)
        if checkpoints is not None and checkpoints.folder is not None and _due(step, checkpoints.every, steps):
            if dist.is_main:
                checkpoints.save(training)
            dist.barrier()  # no rank runs ahead of the checkpoint on disk
        bar.update(1)
        if progress.postfix is not None:
            bar.set_postfix(progress.postfix(metrics), refresh=False)
    bar.close()
