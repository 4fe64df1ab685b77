"""Where `fit` runs: its rank and device, where its checkpoints go, what it prints.

`TrainContext` is the local single-process runner (checkpoints under
`run_dir/checkpoints/epoch_XXXX/`, `unigrf.training.checkpoint_io`). Ray Train's workers use
`unigrf.training.distributed.RayTrainContext` and a Tune trial's own process
`unigrf.sweep.trainable.TuneContext`: both subclass it and send `report`'s checkpoints through
Ray's session instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unigrf.training.checkpoint_io import latest_checkpoint, prune_checkpoints, save_checkpoint
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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint's state, or None for a fresh run."""
        return latest_checkpoint(self.run_dir)

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        """Called once per epoch on every rank; `state` is the checkpoint (rank 0 only)."""
        if state is not None and self.is_main:
            save_checkpoint(self.run_dir, metrics, state, self.keep_checkpoints, self._warned)
        self.log(progress_line(metrics))

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
