"""Cells two grids share are trained once: `unigrf ablate … --reuse-from REPORT_DIR`.

Grids overlap. The quality grid's 45 cells (every backbone's UniGRF and single-task rows at the
defaults) are 45 of the paper grid's 54; the scaling grid's cell at the size `model.size: auto`
picks is the paper grid's UniGRF cell. On a dataset where a cell costs ten minutes, training them
twice costs hours and gives the same numbers bit for bit (training is seeded and deterministic).

`reuse_cells` copies, into a grid's report directory, the records of every cell that a named
source report directory (a results directory's `ablations/<grid>/`, or an archive under
reports/) finished under the *same computation*: the same config in every key but where its
files are and what it is called (`unigrf.run_identity.computation_hash`), on data with the same
content (the prepared data's fingerprint; for a result written before results recorded it, the
fingerprint of the data its config names as that data is now). What is copied is what `unigrf archive` keeps of a
cell — its trial result, history, config and per-user outcomes, never checkpoints — so the cell
is then a finished cell of this grid: the run skips it, the report reads it. Its trial result
records where it came from (`reused_from`; `trained_in` when that was a copy too), and the grid's meta.json
lists every reused cell.

Only a cell this grid has not finished is filled; nothing of the grid's own is overwritten.
Reuse trusts that the source ran the same code: name sources made by the code you run now.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unigrf.ablation.archive import CELL_FILES, finished_cells
from unigrf.ablation.grid import GridError
from unigrf.ablation.outcome_store import OUTCOMES_DIR
from unigrf.atomic import write_text_atomic
from unigrf.config import ExperimentConfig, config_from_dict, config_hash
from unigrf.run_identity import computation_hash, portable_hash, stored_config
from unigrf.sweep.trainable import TRIAL_RESULT, data_fingerprint_of, read_trial_result


class ReuseError(GridError):
    """A source is not a report directory."""


def check_sources(sources: Sequence[str | Path]) -> None:
    """Refuse, before anything runs, a source that is neither a grid's report directory nor a
    grid's results directory still running or stopped before its report (`runs/` without
    `grid.yaml`: its finished cells are as final as a reported grid's)."""
    for source in map(Path, sources):
        if not (source / "grid.yaml").is_file() and not (source / "runs").is_dir():
            raise ReuseError(
                f"{source}: not an ablation report directory (no grid.yaml) nor a grid's results "
                "directory (no runs/) to reuse cells from"
            )


def source_index(sources: Sequence[str | Path]) -> dict[tuple[str, str], tuple[Path, str]]:
    """(computation hash, data fingerprint) → (source report dir, cell run name) over every
    finished cell of `sources` (the first source holding a computation wins)."""
    index: dict[tuple[str, str], tuple[Path, str]] = {}
    check_sources(sources)
    for source in map(Path, sources):
        for name in finished_cells(source):
            run_dir = source / "runs" / name
            try:
                stored = json.loads((run_dir / TRIAL_RESULT).read_text())
                config, _ = stored_config(run_dir)
            except (OSError, ValueError):  # unreadable: not offered for reuse
                continue
            if config is None or not isinstance(stored, dict):
                continue
            data = stored.get("data") or _legacy_fingerprint(config)
            if data:
                index.setdefault((computation_hash(config), str(data)), (source, name))
    return index


def _legacy_fingerprint(config: Mapping[str, Any]) -> str | None:
    """A trial result written before results recorded their data's fingerprint: the fingerprint
    of the data its config names, as that data is now — the trust a resume in the same results
    directory gives (`config_hash`); None when that data is not here."""
    try:
        return data_fingerprint_of(config_from_dict(dict(config), validate=False))
    except (ValueError, TypeError, OSError):
        return None


def reuse_cells(
    report_dir: str | Path,
    configs: Sequence[tuple[str, ExperimentConfig]],
    sources: Sequence[str | Path],
) -> dict[str, dict[str, str]]:
    """Fill `report_dir/runs/<name>/` for each (name, config) that the grid has not finished and
    a source finished under the same computation and data; returns name → {"report", "cell"}
    for the cells filled."""
    report_dir = Path(report_dir)
    index = source_index(sources)
    reused: dict[str, dict[str, str]] = {}
    for name, cfg in configs:
        target = report_dir / "runs" / name
        if read_trial_result(target, cfg) is not None:
            continue  # the grid's own result stays
        fingerprint = data_fingerprint_of(cfg)
        hit = index.get((computation_hash(cfg), fingerprint)) if fingerprint else None
        if hit is None:
            continue
        source, cell = hit
        _copy_cell(source, cell, report_dir, name, cfg)
        reused[name] = {"report": str(source), "cell": cell}
    return reused


def _provenance(source: Path, cell: str, earlier: Any) -> dict[str, Any]:
    """Where a copied cell came from and, when that cell was itself a copy, where it was trained
    (`trained_in`, kept through any number of copies: a report re-written from its own archive
    still names the grid that trained each cell)."""
    out: dict[str, Any] = {"report": str(source), "cell": cell}
    if isinstance(earlier, Mapping) and "report" in earlier:
        out["trained_in"] = earlier.get("trained_in") or {
            "report": earlier["report"],
            "cell": earlier["cell"],
        }
    return out


def _copy_cell(source: Path, cell: str, report_dir: Path, name: str, cfg: ExperimentConfig) -> None:
    """The source cell's records under this grid's name, its trial result re-keyed to this
    grid's config (which differs from the source's only in name and locations)."""
    src, target = source / "runs" / cell, report_dir / "runs" / name
    if target.exists():  # an unfinished attempt of this cell: its partial files would be resumed
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for file in CELL_FILES:
        if (src / file).is_file():
            shutil.copy2(src / file, target / file)
    outcomes = source / OUTCOMES_DIR / cell  # a reported grid's, or an archive's
    if not outcomes.is_dir():
        outcomes = src / OUTCOMES_DIR  # a grid not reported yet: the run directory's own
    if outcomes.is_dir():  # the run directory's copy: the report collects it like a trained cell's
        shutil.copytree(outcomes, target / OUTCOMES_DIR)
    stored: dict[str, Any] = json.loads((src / TRIAL_RESULT).read_text())
    stored.pop("outcomes", None)  # the source's paths; the copies are found in the run directory
    if isinstance(stored.get("final"), Mapping):
        stored["final"] = {k: v for k, v in stored["final"].items() if k != "outcomes"}
    stored.update(
        config_hash=config_hash(cfg),
        portable_hash=portable_hash(cfg),
        reused_from=_provenance(source, cell, stored.get("reused_from")),
    )
    write_text_atomic(target / TRIAL_RESULT, json.dumps(stored, indent=2, default=str))
