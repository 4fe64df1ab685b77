"""Checkpoint and result files of a training run: what `fit` reads back is checked, what it
writes fails in one line.

- `write_checkpoint_dir` / `load_state_file`: a checkpoint directory (`state.pt`, its
  epoch's `metrics.json`), read back with `weights_only=True` (tensors and plain types only: a
  tampered file cannot run code);
- `save_checkpoint`: a local run's epoch checkpoint, renamed into place whole, then the
  rotation (`prune_checkpoints`: the best `keep` by objective and the latest);
- `write_reported_checkpoint` / `load_reported_checkpoint`: the same files through a Ray
  session's checkpoint (Ray Train, Tune);
- `check_checkpoint_state`: a checkpoint that loads but lacks what `fit` resumes from is a
  `CheckpointError` naming the file, not a `KeyError`;
- `restore_state`: weights of another shape (another model size, another catalogue) are a
  `CheckpointError`, not a `size mismatch` traceback;
- `write_results`: the per-user outcomes, `metrics.json` and `best_model.pt`, each written
  whole or not at all;
- `CheckedWriter`: a TensorBoard writer whose failed writes are a `WriteError` naming its
  directory.

No Ray here: the torch core imports this module.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from unigrf.atomic import (
    WriteError,
    failure_reason,
    is_write_failure,
    make_dirs,
    write_atomic,
    write_dir_atomic,
    write_text_atomic,
)
from unigrf.evaluation.outcomes import write_outcomes
from unigrf.names import remove_tree

CHECKPOINT_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and what to do."""


def write_checkpoint_dir(directory: Path, state: dict[str, Any], metrics: dict[str, float]) -> None:
    """`state` (tensors and plain Python types only: `load_state_file` refuses anything else)
    and the epoch's metrics into `directory`. A failed write is a `WriteError` naming the file
    and the real cause (torch's own error does not say it), the file not left behind."""
    write_atomic(directory / CHECKPOINT_FILE, lambda fh: torch.save(state, fh))
    write_text_atomic(directory / "metrics.json", json.dumps(metrics, indent=2))


def load_state_file(
    file: Path,
    what: str = "checkpoint",
    remedy: str = "delete it to resume from an earlier one, or start over with --restart",
) -> dict[str, Any]:
    """A checkpoint written by `write_checkpoint_dir` (or another of the run's torch files:
    `what` names it in the error, `remedy` says what to do), loaded with `weights_only=True`:
    only tensors and plain types are unpickled, so a tampered file cannot run code when a run
    resumes. Any failure (tampered, truncated, not a checkpoint) is a CheckpointError."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{file}: not a loadable {what} ({reason}); {remedy}") from None


def latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The state of the latest complete checkpoint under `run_dir/checkpoints/`, or None."""
    for path in reversed(sorted((run_dir / "checkpoints").glob("epoch_*"))):
        file = path / CHECKPOINT_FILE
        if file.exists():
            return check_checkpoint_state(load_state_file(file), file)
    return None


def save_checkpoint(
    run_dir: Path, metrics: dict[str, float], state: dict[str, Any], keep: int, warned: set[Path]
) -> None:
    """Write epoch `metrics["epoch"]`'s checkpoint to `run_dir/checkpoints/epoch_XXXX/` under a
    temporary name and rename it into place: a write that fails (a full disk, a read-only
    directory) or is interrupted leaves the previous checkpoints as they were, and no partial
    one. Then `prune_checkpoints(keep)`."""
    root = run_dir / "checkpoints"
    final = root / f"epoch_{int(metrics['epoch']):04d}"
    try:
        make_dirs(root)
        # the same epoch again (a crash after its rename) is replaced
        write_dir_atomic(final, lambda tmp: write_checkpoint_dir(tmp, state, metrics), inside=run_dir)
    except Exception as err:
        if not (isinstance(err, WriteError) or is_write_failure(err)):
            raise
        cause = err.cause if isinstance(err, WriteError) else failure_reason(err)
        kept = sorted(p.name for p in root.glob("epoch_*")) if root.is_dir() else []
        raise CheckpointError(
            f"{final}: cannot write the checkpoint ({cause}); "
            + (f"the last good one, {root / kept[-1]}, is kept: " if kept else "")
            + "free space and run the same command again to resume"
        ) from err
    prune_checkpoints(run_dir, keep, warned)


def prune_checkpoints(run_dir: Path, keep: int, warned: set[Path]) -> None:
    """Keep the best `keep` checkpoints by objective, and always the latest (for resume). Ties
    go to the earlier epoch, as model selection's strict improvement does. A checkpoint whose
    metrics.json cannot be read is never pruned (its rank is unknown) and named once on stderr
    (`warned`: the files named so far)."""
    root = run_dir / "checkpoints"
    scored = []
    for path in root.glob("epoch_*"):
        objective = _stored_objective(path / "metrics.json", warned)
        if objective is not None:
            scored.append((objective, path))
    if not scored:
        return
    latest = max(p for p in root.glob("epoch_*"))
    ranked = sorted(scored, key=lambda t: (-t[0], t[1].name))
    best = {p for _, p in ranked[:keep]}
    for _, path in scored:
        if path not in best and path != latest:
            remove_tree(path, run_dir, ignore_errors=True)


def _stored_objective(file: Path, warned: set[Path]) -> float | None:
    """A checkpoint's objective from its metrics.json, None (and a warning) if unreadable."""
    try:
        value = json.loads(file.read_text()).get("objective", -math.inf)
        return float(value) if value is not None else -math.inf
    except (OSError, ValueError, AttributeError, TypeError) as err:
        if file not in warned:
            warned.add(file)
            reason = getattr(err, "strerror", None) or str(err).splitlines()[0] or type(err).__name__
            print(
                f"warning: {file}: unreadable ({reason}); this checkpoint is kept, not ranked",
                file=sys.stderr,
            )
        return None


def write_reported_checkpoint(directory: Path, state: dict[str, Any], metrics: dict[str, float]) -> None:
    """`write_checkpoint_dir` into the temporary directory a Ray session (Train or Tune) then
    copies into its storage; a failed write (a full disk) is a CheckpointError before Ray sees
    the checkpoint, so the storage keeps the last good one."""
    try:
        write_checkpoint_dir(directory, state, metrics)
    except (WriteError, OSError) as err:
        cause = err.cause if isinstance(err, WriteError) else failure_reason(err)
        raise CheckpointError(
            f"epoch {int(metrics['epoch'])}: cannot write the checkpoint to {directory} "
            f"({cause}); the run's storage keeps its last good checkpoint: "
            "free space and run the same command again to resume"
        ) from err


def load_reported_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The state in a Ray session's checkpoint (`ray.train.get_checkpoint()` or
    `ray.tune.get_checkpoint()`: anything with `as_directory`), None when there is none."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        file = Path(path) / CHECKPOINT_FILE
        return check_checkpoint_state(load_state_file(file), file)


# What `fit` reads from a checkpoint (`selections`, or the keys it replaced in older ones).
CHECKPOINT_KEYS = {
    "model": dict,
    "optimizer": dict,
    "weighter": dict,
    "epoch": int,
    "best_val": dict,
    "history": list,
}
LEGACY_SELECTION_KEYS = ("best_objective", "best_epoch", "stale", "best_model")


def check_checkpoint_state(state: Any, file: Path) -> dict[str, Any]:
    """`state` if it has the shape `fit` resumes from, else a CheckpointError naming `file`: a
    file that loads (tensors and plain types) but is not one of this program's checkpoints."""

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(
            f"{file}: not a checkpoint of a unigrf run ({what}); delete it to resume from an "
            "earlier one, or start over with --restart"
        )

    if not isinstance(state, dict):
        raise refuse(f"holds a {type(state).__name__}, not a mapping")
    for key, kind in CHECKPOINT_KEYS.items():
        if key not in state:
            raise refuse(f"no {key!r} entry")
        if not isinstance(state[key], kind) or (kind is int and isinstance(state[key], bool)):
            raise refuse(f"{key!r} is a {type(state[key]).__name__}, expected {kind.__name__}")
    selections = state.get("selections")
    if selections is None:
        missing = [k for k in LEGACY_SELECTION_KEYS if k not in state]
        if missing:
            raise refuse(f"no 'selections' entry (nor {', '.join(map(repr, missing))})")
    elif not (isinstance(selections, list) and all(isinstance(x, dict) for x in selections)):
        raise refuse("'selections' is not a list of mappings")
    return state


def restore_state(target: Any, state: Any, what: str, run_dir: Path) -> None:
    """`target.load_state_dict(state)`, a mismatch (another model's weights, another optimizer)
    a CheckpointError instead of a traceback."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
        text = str(err).strip().replace("\n", " ").replace("\t", "")
        raise CheckpointError(
            f"{run_dir}: the checkpoint's {what} does not fit this config ({text[:300]}); start the "
            "run over with --restart, or give this config a new name="
        ) from None


def write_results(
    run_dir: Path, result: dict[str, Any], final: nn.Module, outcomes: dict[str, pd.DataFrame] | None = None
) -> None:
    """The per-user outcomes (`outcomes`: split -> frame, written to `result["outcomes"][split]`),
    `metrics.json` (the result without its history) and `best_model.pt` (the selected weights;
    per stage retriever.*, ranker.*), each written whole or not at all: a full disk is a
    `WriteError` naming the file, and the checkpoints stay to finish the run from."""
    hint = "the run's checkpoints are kept: free space and run the same command again to finish"
    make_dirs(run_dir, hint)
    for split, frame in (outcomes or {}).items():
        write_outcomes(frame, result["outcomes"][split], hint=hint)
    summary = {k: v for k, v in result.items() if k != "history"}
    write_text_atomic(run_dir / "metrics.json", json.dumps(summary, indent=2), hint=hint)
    write_atomic(run_dir / "best_model.pt", lambda fh: torch.save(final.state_dict(), fh), hint=hint)


def tensorboard_error(log_dir: Path, err: BaseException) -> WriteError:
    cause = failure_reason(err)
    return WriteError(
        f"{log_dir}: cannot write TensorBoard events ({cause}); the run's checkpoints are kept: "
        "free space and run the same command again to resume",
        log_dir,
        cause,
    )


class CheckedWriter:
    """A SummaryWriter whose failed writes are a `WriteError` naming its directory. TensorBoard
    writes in a background thread and raises the thread's error at the next call."""

    def __init__(self, writer: Any, log_dir: Path) -> None:
        self._writer = writer
        self._log_dir = log_dir

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._writer, name)(*args, **kwargs)
        except OSError as err:
            raise tensorboard_error(self._log_dir, err) from err

    def add_scalar(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("add_scalar", *args, **kwargs)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)
