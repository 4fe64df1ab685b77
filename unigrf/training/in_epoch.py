"""Checkpoints inside an epoch: a long epoch resumed where it stopped, not from its start.

At the paper's sizes one epoch on one CPU core is hours (benchmarks/RESULTS.md, "Scale":
ML-20M's about ten, Amazon-Books' about twenty); a run that can only resume at an epoch's end
loses all of it to a preempted node or an ended session. With `train.checkpoint_every_steps`
= k > 0 the plain loop also saves, every k optimizer steps and after the epoch's last (its
validation can take long too: `unigrf.training.eval_progress`), what an epoch checkpoint holds
(weights, optimizer, loss weighter, model selection, history up to the last finished epoch)
and where the epoch stands (`EpochProgress`: steps done, the epoch's running loss sums and
weight ranges, torch's random state).

Exactness: an epoch's batches depend on (seed, epoch, rank) only (`unigrf.training.batches`),
and restoring the random state gives the remaining steps the negatives and dropout masks they
would have had, so an epoch resumed from step s repeats the uninterrupted one (tested).

Where: one file, `run_dir/checkpoints/in_epoch/state.pt`, replaced whole each time (a crash
while writing keeps the previous one) and removed once the epoch's own checkpoint is written.
It belongs to the epoch after the latest epoch checkpoint: one left behind by a crash between
that checkpoint and the removal is stale and ignored (`usable`).

The plain loop only: under Ray (Train, Tune) the unit a run resumes from is the epoch a
worker reports, and a report inside the epoch would be an extra iteration to every Tune
scheduler; `fit` refuses the option there with a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unigrf.atomic import make_dirs, write_atomic
from unigrf.names import remove_tree
from unigrf.training.checkpoint_io import (
    CHECKPOINT_FILE,
    CheckpointError,
    check_checkpoint_state,
    load_state_file,
)

IN_EPOCH_DIR = "in_epoch"
PROGRESS_KEY = "in_epoch"


@dataclass(frozen=True)
class EpochProgress:
    """Where an unfinished epoch stands.

    epoch: the epoch in progress; steps_done: its batches trained so far;
    loss_sums {task: float}: the sum of each task's loss over those steps;
    weight_range {task: (low, high)}: the loss weights' range over them;
    rng_state: `torch.get_rng_state()` after the last of them (uint8 tensor);
    cuda_rng_state: the same for the CUDA device trained on, or None;
    train_s: the seconds those steps took, over every attempt (the epoch's `time/train_s`
    then counts them all).
    """

    epoch: int
    steps_done: int
    loss_sums: dict[str, float]
    weight_range: dict[str, tuple[float, float]]
    rng_state: torch.Tensor
    cuda_rng_state: torch.Tensor | None = None
    train_s: float = 0.0

    @classmethod
    def capture(
        cls,
        epoch: int,
        steps_done: int,
        sums: dict[str, torch.Tensor],
        weight_range: dict[str, tuple[float, float]],
        device: torch.device,
        train_s: float,
    ) -> EpochProgress:
        """The epoch's state now (one host sync for the loss sums)."""
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(
            epoch=epoch,
            steps_done=steps_done,
            loss_sums={t: float(v) for t, v in sums.items()},
            weight_range={t: (float(lo), float(hi)) for t, (lo, hi) in weight_range.items()},
            rng_state=torch.get_rng_state(),
            cuda_rng_state=cuda,
            train_s=train_s,
        )

    def restore_rng(self, device: torch.device) -> None:
        """Continue torch's random stream where the saved epoch left it."""
        torch.set_rng_state(self.rng_state)
        if self.cuda_rng_state is not None and device.type == "cuda":
            torch.cuda.set_rng_state(self.cuda_rng_state, device)

    def sums_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The loss sums as the loop keeps them (float32 on the device: the same values)."""
        return {t: torch.tensor(v, dtype=torch.float32, device=device) for t, v in self.loss_sums.items()}

    def to_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "loss_sums": dict(self.loss_sums),
            "weight_range": {t: list(r) for t, r in self.weight_range.items()},
            "rng_state": self.rng_state,
            "cuda_rng_state": self.cuda_rng_state,
            "train_s": self.train_s,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochProgress:
        return cls(
            epoch=int(state["epoch"]),
            steps_done=int(state["steps_done"]),
            loss_sums={str(t): float(v) for t, v in state["loss_sums"].items()},
            weight_range={str(t): (float(r[0]), float(r[1])) for t, r in state["weight_range"].items()},
            rng_state=state["rng_state"],
            cuda_rng_state=state.get("cuda_rng_state"),
            train_s=float(state.get("train_s", 0.0)),
        )


def progress_file(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / IN_EPOCH_DIR / CHECKPOINT_FILE


def save_progress(run_dir: Path, state: dict[str, Any], progress: EpochProgress) -> None:
    """`state` (an epoch checkpoint's: `loop.checkpoint_state` of the last finished epoch) and
    `progress`, written whole over the previous in-epoch file (a full disk: `WriteError` naming
    the file, the previous one kept)."""
    file = progress_file(run_dir)
    hint = "the previous checkpoints are kept: free space and run the same command again to resume"
    make_dirs(file.parent, hint)
    full = {**state, PROGRESS_KEY: progress.to_state()}
    write_atomic(file, lambda fh: torch.save(full, fh), hint=hint)


def load_progress(run_dir: Path) -> dict[str, Any] | None:
    """The in-epoch checkpoint's state (checked like an epoch checkpoint, loaded with
    `weights_only=True`), or None when there is none."""
    file = progress_file(run_dir)
    if not file.exists():
        return None
    state = check_checkpoint_state(load_state_file(file), file)
    if not isinstance(state.get(PROGRESS_KEY), dict):
        raise CheckpointError(
            f"{file}: not an in-epoch checkpoint (no {PROGRESS_KEY!r} entry); delete it to resume "
            "from the last epoch checkpoint"
        )
    return state


def usable(in_epoch: dict[str, Any] | None, latest: dict[str, Any] | None) -> bool:
    """Whether `in_epoch` continues the run from `latest` (the latest epoch checkpoint, None
    for none): its epoch is the one after it. Anything else is left over from before that
    checkpoint, and resuming from it would go back in time."""
    if in_epoch is None:
        return False
    after = latest["epoch"] if latest is not None else -1
    return int(in_epoch[PROGRESS_KEY]["epoch"]) == after + 1 and in_epoch["epoch"] == after


def drop_progress(run_dir: Path) -> None:
    """Remove the in-epoch checkpoint (its epoch has its own checkpoint now)."""
    directory = progress_file(run_dir).parent
    if directory.exists():
        remove_tree(directory, run_dir, ignore_errors=True)
