"""What a run logs: one console line per epoch, and TensorBoard scalars (rank 0).

`tensorboard/` holds the per-epoch scalars (train/*, weights/*, val/*, objective, time/*, then
test/* at the best epoch), `tensorboard/steps/` the per-step losses and loss weights every
`train.log_every` steps. Epoch scalars are indexed by epoch and step scalars by global step, so
they live in two directories: `purge_step` then drops, in each, what a crashed attempt logged
beyond the checkpoint a run resumes from, and a resumed run's curves have no duplicated points.
A writer that cannot write (a full or read-only disk) raises `WriteError` naming its directory
(`checkpoint_io.CheckedWriter`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from unigrf.training.checkpoint_io import CheckedWriter, tensorboard_error


def progress_line(m: dict[str, float]) -> str:
    """The console line of one epoch's metrics."""
    parts = [f"epoch {int(m['epoch']):3d}"]
    for key in ("train/loss_retrieval", "train/loss_ranking", "weights/retrieval", "weights/ranking"):
        if key in m:
            parts.append(f"{key.split('/')[1]} {m[key]:.4f}")
    for key in ("val/ndcg@10", "val/hr@10", "val/auc", "objective"):
        if key in m:
            parts.append(f"{key} {m[key]:.4f}")
    parts.append(f"{m.get('time/epoch_s', 0.0):.1f}s")
    return " | ".join(parts)


class RunLog:
    """A run's TensorBoard writers (`enabled`: rank 0; elsewhere every call does nothing)."""

    def __init__(self, run_dir: Path, enabled: bool, start_epoch: int, start_step: int) -> None:
        self.epochs: Any = None
        self.steps: Any = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        root = run_dir / "tensorboard"
        if start_epoch or start_step:
            _after_existing_event_files(root)
        writers = []
        for log_dir, purge in ((root, start_epoch), (root / "steps", start_step)):
            try:
                writers.append(
                    CheckedWriter(SummaryWriter(log_dir=str(log_dir), purge_step=purge or None), log_dir)
                )
            except OSError as err:
                raise tensorboard_error(log_dir, err) from err
        self.epochs, self.steps = writers

    def step(self, step: int, losses: dict[str, Tensor], weights: dict[str, float]) -> None:
        """The step's losses (a host sync) and loss weights."""
        if self.steps is None:
            return
        for t, loss in losses.items():
            self.steps.add_scalar(f"step/loss_{t}", float(loss), step)
        for t, w in weights.items():
            self.steps.add_scalar(f"step/weight_{t}", w, step)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Every finite metric of the epoch but its counters, then flushed."""
        if self.epochs is None:
            return
        for k, v in metrics.items():
            if k not in ("epoch", "step") and math.isfinite(v):
                self.epochs.add_scalar(k, v, epoch)
        self.epochs.flush()

    def close(self, test: dict[str, float], best_epoch: int) -> None:
        """The test metrics at the best epoch; the writers closed."""
        if self.epochs is None:
            return
        for k, v in test.items():
            if math.isfinite(v):
                self.epochs.add_scalar(k, v, max(best_epoch, 0))
        self.epochs.close()
        self.steps.close()


def _after_existing_event_files(root: Path) -> None:
    """Wait until the clock's second is past every event file's under `root`.

    TensorBoard reads a directory's event files in name order, and a name is
    `events.out.tfevents.<unix second>.<host>.<pid>.<per-process counter>`: a resumed writer
    opened within the second of the one it continues could sort before it (counter 10 < 9 as
    text), and its purge would then apply to nothing."""
    seconds = [int(p.name.split(".")[3]) for p in root.rglob("events.out.tfevents.*")]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)
