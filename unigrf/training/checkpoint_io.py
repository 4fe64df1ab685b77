"""Checkpoint and result files of a training run: what `fit` reads back is checked, what it
writes fails in one line.

- `check_checkpoint_state`: a checkpoint that loads (tensors and plain types only, see
  `unigrf.training.loop.load_state_file`) but lacks what `fit` resumes from is a
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
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from unigrf.atomic import WriteError, failure_reason, make_dirs, write_atomic, write_text_atomic
from unigrf.evaluation.outcomes import write_outcomes


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file and what to do."""


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
