"""A grid's results as they are committed: small, portable, and resumable from a fresh clone.

An ablation report directory (`<results_dir>/ablations/<grid>/`) holds, besides its report, each
cell's checkpoints, TensorBoard files and Ray's storage — hundreds of MB that a repository should
not hold. `archive` copies what the report and `unigrf ablate --resume` read and nothing else:

- the report's files (report.md/.tex, results.csv, histories.csv, summary.csv, configs.yaml,
  grid.yaml, meta.json, datasets.json, figures/) and the per-user outcomes (outcomes/), so that
  `unigrf report` and `unigrf claims` rebuild every table, interval and verdict from it;
- each finished cell's records (`runs/<cell>/{trial_result.json, history.json, config.yaml,
  run.json, metrics.json}`), so that a grid resumed from the archive skips those cells and
  trains only the missing ones. A finished cell is recognised on another machine or clone by
  its config without the locations (`unigrf.run_identity.portable_hash`) and the prepared data's
  fingerprint (the source files' md5): see `unigrf.sweep.trainable.read_trial_result`.

The same copy restores: `unigrf archive reports/ml-100k/paper results/ablations/paper-ml-100k`,
then `unigrf ablate ablations/paper.yaml --datasets ml-100k --resume`.

A destination is replaced whole (written beside it, then renamed) and only when it is absent,
empty, or itself a report directory (it has a grid.yaml): an archive never overwrites a folder
it did not make.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from unigrf.atomic import write_dir_atomic

REPORT_FILES = (
    "report.md",
    "report.tex",
    "results.csv",
    "histories.csv",
    "summary.csv",
    "configs.yaml",
    "grid.yaml",
    "meta.json",
    "datasets.json",
)
REPORT_DIRS = ("figures", "outcomes")
CELL_FILES = ("trial_result.json", "history.json", "config.yaml", "run.json", "metrics.json")


class ArchiveError(RuntimeError):
    """The source is no report directory, or the destination is not one to replace."""


def archive(source: str | Path, dest: str | Path) -> Path:
    """Copy `source`'s report and finished cells' records to `dest` (replaced whole); returns
    `dest`. Cells without a trial_result.json (unfinished or failed) are left out: a resume
    from the archive runs them again."""
    source, dest = Path(source), Path(dest)
    if not (source / "grid.yaml").is_file():
        raise ArchiveError(f"{source}: not an ablation report directory (no grid.yaml)")
    if dest.resolve() == source.resolve():
        raise ArchiveError(f"{dest}: the destination is the source")
    if dest.exists() and any(dest.iterdir()) and not (dest / "grid.yaml").is_file():
        raise ArchiveError(f"{dest}: exists and is not a report directory; choose another destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return write_dir_atomic(dest, lambda tmp: _fill(source, tmp), inside=dest.parent)


def finished_cells(report_dir: str | Path) -> list[str]:
    """The cells of `report_dir` with a stored result (sorted)."""
    runs = Path(report_dir) / "runs"
    return sorted(p.parent.name for p in runs.glob("*/trial_result.json")) if runs.is_dir() else []


def _fill(source: Path, tmp: Path) -> None:
    for name in REPORT_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, tmp / name)
    for name in REPORT_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, tmp / name)
    for cell in finished_cells(source):
        (tmp / "runs" / cell).mkdir(parents=True)
        for name in CELL_FILES:
            if (source / "runs" / cell / name).is_file():
                shutil.copy2(source / "runs" / cell / name, tmp / "runs" / cell / name)
