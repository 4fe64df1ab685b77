"""Where `fit` runs: its rank and device, where its checkpoints go, what it prints.

`TrainContext` is the local single-process runner (checkpoints under
`run_dir/checkpoints/epoch_XXXX/`, `unigrf.training.checkpoint_io`, and with
`train.checkpoint_every_steps` one inside the epoch, `unigrf.training.in_epoch`). Ray Train's
workers use `unigrf.training.distributed.RayTrainContext` and a Tune trial's own process
`unigrf.sweep.trainable.TuneContext`: both subclass it and send `report`'s checkpoints through
Ray's session instead, and resume at epochs only (`in_epoch_checkpoints` False).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from unigrf.training import in_epoch
from unigrf.training.checkpoint_io import latest_checkpoint, prune_checkpoints, save_checkpoint
from unigrf.training.eval_progress import FINAL_VAL, DirectoryStore, drop_evaluations, eval_dir
from unigrf.training.logs import progress_line


@dataclass
class TrainContext:
    """Local single-process runner: checkpoints under `run_dir/checkpoints/epoch_XXXX/`."""

    run_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    keep_checkpoints: int = 2
    verbose: bool = True
    _warned: set[Path] = field(default_factory=set, repr=False, compare=False)
    # whether this runner can save and resume an epoch in progress (`unigrf.training.in_epoch`)
    in_epoch_checkpoints: ClassVar[bool] = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint's state, or None for a fresh run."""
        return latest_checkpoint(self.run_dir)

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        """Called once per epoch on every rank; `state` is the checkpoint (rank 0 only). Once
        the epoch's checkpoint is written its in-epoch checkpoint and evaluations are removed,
        but `final-val`: the budget's last epoch's validation, which the final one may reuse."""
        if state is not None and self.is_main:
            save_checkpoint(self.run_dir, metrics, state, self.keep_checkpoints, self._warned)
            in_epoch.drop_progress(self.run_dir)
            drop_evaluations(self.run_dir, keep=(FINAL_VAL,))
        self.log(progress_line(metrics))

    def save_progress(self, state: dict[str, Any], progress: in_epoch.EpochProgress) -> None:
        """An epoch in progress: `state` (the last finished epoch's checkpoint) and `progress`."""
        if self.is_main:
            in_epoch.save_progress(self.run_dir, state, progress)

    def eval_store(self, tag: str, every: int) -> DirectoryStore | None:
        """Where evaluation `tag` keeps its finished batches (every `every`; 0: nowhere), or
        None where this runner does not resume inside an epoch."""
        if not (every and self.in_epoch_checkpoints and self.is_main):
            return None
        return DirectoryStore(eval_dir(self.run_dir) / tag, every, self.run_dir)

    def drop_progress(self) -> None:
        """Remove the in-epoch checkpoint and the evaluations in progress (their epoch, or the
        run, has its own files now)."""
        if self.is_main:
            in_epoch.drop_progress(self.run_dir)
            drop_evaluations(self.run_dir)

    def load_progress(self, latest: dict[str, Any] | None) -> dict[str, Any] | None:
        """The in-epoch checkpoint that continues from `latest` (the latest epoch checkpoint's
        state, None for none), or None: none saved, or a stale one."""
        if not self.in_epoch_checkpoints:
            return None
        state = in_epoch.load_progress(self.run_dir)
        return state if in_epoch.usable(state, latest) else None

    def log(self, message: str) -> None:
        """A console line from rank 0 (when verbose)."""
        if self.verbose and self.is_main:
            print(message, flush=True)

    def _prune(self, root: Path) -> None:
        """Keep the best `keep_checkpoints` under `root` (the run's checkpoints directory)."""
        prune_checkpoints(root.parent, self.keep_checkpoints, self._warned)


def resolve_device(name: str) -> torch.device:
    """`train.device`: "auto" is CUDA where available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
