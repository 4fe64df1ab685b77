"""Per-user outcomes inside an ablation's report directory.

Every finished run's outcomes (`fit` writes `<run dir>/outcomes/{val,test}.parquet`,
`unigrf.evaluation.outcomes`) are copied into the report directory, so that the report and
`unigrf claims` can test over users without the run directories (which hold checkpoints and
are not committed); the files are a few kB each and are committed with the report:

    <report dir>/outcomes/<run name>/{val,test}.parquet        one per finished cell
    <report dir>/outcomes/count_model__<dataset>/{val,test}.parquet   the dataset's count model

A run name is the cell name with "/" → "__" (`run_name`); it starts with a backbone, so it
never collides with `count_model__`. A cell without outcomes (a report written before runs
kept them) simply has no directory here: its comparisons fall back to seeds only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

OUTCOMES_DIR = "outcomes"
SPLITS = ("val", "test")
COUNT_MODEL_PREFIX = "count_model__"


def run_name(cell_name: str) -> str:
    """A cell's run/trial name: its name with "/" → "__" (the sweep uses names as directories)."""
    return cell_name.replace("/", "__")


def count_model_name(dataset: str) -> str:
    return f"{COUNT_MODEL_PREFIX}{dataset}"


def outcome_paths(record: Mapping[str, Any]) -> dict[str, Path]:
    """Where a finished run's outcomes are, from its row of the sweep's result table: the
    trainable's `outcomes` ({split: path}) when it reports them, else the files `fit` writes
    in its run directory (`<run_dir>/outcomes/<split>.parquet`) where they exist."""
    reported = record.get("outcomes")
    out: dict[str, Path] = {}
    if isinstance(reported, Mapping):
        out = {s: Path(str(p)) for s, p in reported.items() if s in SPLITS and isinstance(p, (str, Path))}
    run_dir = record.get("run_dir")
    if isinstance(run_dir, str) and run_dir:
        for split in SPLITS:
            path = Path(run_dir) / OUTCOMES_DIR / f"{split}.parquet"
            if split not in out and path.is_file():
                out[split] = path
    return {s: p for s, p in out.items() if p.is_file()}


def copy_outcomes(report_dir: str | Path, sources: Mapping[str, Mapping[str, Path]]) -> list[str]:
    """Copy each run's outcome files (run name → split → path) into the report directory,
    checked against the schema on the way (`read_outcomes`). A file that fails the check is
    left out, named in the returned warnings (and on stderr): its cell falls back to
    seed-level statistics rather than the whole report failing after the runs."""
    from unigrf.evaluation.outcomes import OutcomesError, read_outcomes, write_outcomes

    warnings = []
    for name, paths in sources.items():
        for split, path in paths.items():
            try:
                frame = read_outcomes(path)
            except OutcomesError as err:
                warnings.append(f"{name}: {split} outcomes not copied ({err})")
                continue
            write_outcomes(frame, Path(report_dir) / OUTCOMES_DIR / name / f"{split}.parquet")
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return warnings


def write_count_model_outcomes(
    report_dir: str | Path, dataset: str, frames: Mapping[str, pd.DataFrame]
) -> None:
    from unigrf.evaluation.outcomes import write_outcomes

    for split, frame in frames.items():
        write_outcomes(
            frame, Path(report_dir) / OUTCOMES_DIR / count_model_name(dataset) / f"{split}.parquet"
        )


def _read_dir(directory: Path) -> dict[str, pd.DataFrame]:
    """The outcome files of one directory, by split; an unreadable file raises OutcomesError
    naming it (a committed report with a broken file must not silently lose its statistics)."""
    files = {s: directory / f"{s}.parquet" for s in SPLITS if (directory / f"{s}.parquet").is_file()}
    if not files:
        return {}
    # imported here: `unigrf.evaluation` loads torch, which a report without outcomes never needs
    from unigrf.evaluation.outcomes import read_outcomes

    return {s: read_outcomes(path) for s, path in files.items()}


def load_outcomes(report_dir: str | Path, cells: Iterable[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """cell name → split → outcomes, for the cells whose outcomes the report directory holds."""
    root = Path(report_dir) / OUTCOMES_DIR
    if not root.is_dir():
        return {}
    out = {}
    for cell in cells:
        frames = _read_dir(root / run_name(cell))
        if frames:
            out[cell] = frames
    return out


def load_count_model_outcomes(report_dir: str | Path, dataset: str) -> dict[str, pd.DataFrame]:
    return _read_dir(Path(report_dir) / OUTCOMES_DIR / count_model_name(dataset))
