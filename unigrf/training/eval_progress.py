"""An evaluation in progress, in the run directory: `evaluate`'s finished user batches
(`unigrf.evaluation.batch_store`) kept so that an interrupted validation or test pass resumes.

With `eval.checkpoint_every_batches` = k > 0 the plain loop gives each evaluation it runs a
`DirectoryStore` under `<run>/checkpoints/eval/<tag>/` (tag: `epoch_XXXX-val` for an epoch's
validation, `final-val` — also the budget's last epoch's, which the final validation reuses when
those weights are selected (`unigrf.training.validation`) — and `final-test`): every k batches one `part_XXXXX.pt` file, written whole
and read back with `weights_only=True` (tensors and plain types: a planted file cannot run
code), tagged with the evaluation's fingerprint (weights, split, users, config, λ), so parts of
another evaluation are removed, never reused. The directory goes once the epoch's checkpoint
or the run's results are written (`final-val` only with the run's). Ray contexts resume at epochs: `fit` refuses the option there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unigrf.atomic import make_dirs, write_atomic
from unigrf.evaluation.batch_store import BatchRecord
from unigrf.names import remove_tree
from unigrf.training.checkpoint_io import CheckpointError, load_state_file

EVAL_DIR = "eval"
FINAL_VAL = "final-val"  # the final validation's tag; the budget's last epoch stores its pass under it


def eval_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / EVAL_DIR


def drop_evaluations(run_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove every evaluation in progress of the run (their epoch, or the run, is finished)
    but those tagged in `keep`."""
    root = eval_dir(run_dir)
    if not keep:
        remove_tree(root, run_dir, ignore_errors=True)
    elif root.is_dir():
        for tag in sorted(p for p in root.iterdir() if p.name not in keep):
            remove_tree(tag, run_dir, ignore_errors=True)


class DirectoryStore:
    """Batches in `directory` as part files (see the module docstring); `every`: batches
    between writes (each write one new part holding the batches since the last)."""

    def __init__(self, directory: Path, every: int, root: Path) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.directory, self.every, self.root = Path(directory), every, Path(root)

    def _parts(self) -> list[Path]:
        return sorted(self.directory.glob("part_*.pt")) if self.directory.is_dir() else []

    def load(self, key: str) -> dict[int, BatchRecord]:
        """The batches stored under `key`; parts under another key are stale and removed."""
        out: dict[int, BatchRecord] = {}
        for path in self._parts():
            state = _load_part(path)
            if state.get("key") != key:
                self.clear()
                return {}
            out.update({int(i): BatchRecord.from_state(r) for i, r in state["batches"].items()})
        return out

    def save(self, key: str, new: Mapping[int, BatchRecord]) -> None:
        make_dirs(self.directory)
        path = self.directory / f"part_{len(self._parts()):05d}.pt"
        state = {"key": key, "batches": {int(i): r.to_state() for i, r in new.items()}}
        write_atomic(path, lambda fh: torch.save(state, fh))

    def clear(self) -> None:
        remove_tree(self.directory, self.root, ignore_errors=True)


def _load_part(path: Path) -> dict[str, Any]:
    remedy = "delete its directory to evaluate from the start"
    state = load_state_file(path, "evaluation part", remedy)
    if not (isinstance(state, dict) and isinstance(state.get("batches"), dict)):
        raise CheckpointError(f"{path}: not an evaluation part of a unigrf run; {remedy}")
    return state
