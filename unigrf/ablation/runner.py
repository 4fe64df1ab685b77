"""Run an ablation grid through the sweep layer and write its report directory.

`run_ablation(spec, ...)`:
1. expands the grid into cells (`GridSpec.expand`), with paths made absolute (Tune trials do
   not run in the caller's working directory);
2. prepares every dataset once in the driver (Ray Data, cached), so concurrent trials never
   race on the same cache, and computes the dataset's size, the popularity baseline (test),
   the count model (the ranking floor, val and test, with its per-user outcomes) and on
   synthetic data the generator's oracle (the Bayes ceiling);
3. runs every cell as one Tune trial of the Ray Train training through
   `unigrf.ablation.cells.run_fixed_configs` (as many at once as the cluster holds; with `resume`, the
   grid's experiment is restored and finished cells are skipped);
4. stores results.csv / histories.csv / meta.json / … and every finished run's per-user
   outcomes (`outcomes/<run name>/`, `unigrf.ablation.outcome_store`) under
   `<results_dir>/ablations/<grid>/` and renders the report from those files
   (`unigrf.ablation.report`), exactly what `unigrf report DIR` does later.

meta.json's `declared` records the grid's seeds, rows and datasets at its first run and is
carried over by every later run of the same report directory, so the report can say what was
added after the first results were seen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from unigrf.ablation.grid import Cell, GridError, GridSpec
from unigrf.ablation.outcome_store import copy_outcomes, outcome_paths, run_name, write_count_model_outcomes
from unigrf.ablation.report import OK_STATUS, Rendered, console_summary, store_inputs, write_report
from unigrf.config import (
    ExperimentConfig,
    apply_overrides,
    config_to_dict,
    effective_weighter_kind,
    resolve_model_size,
    unread_reason,
)
from unigrf.interrupts import Interrupted
from unigrf.names import check_name
from unigrf.provenance import git_commit, package_versions
from unigrf.results_dir import check_writable
from unigrf.run_lock import hold
from unigrf.sweep.results import INTERRUPTED

# config keys whose distinct values over the cells make up the report's "budget per run"
BUDGET_KEYS = (
    "train.epochs",
    "train.patience",
    "train.objective",
    "train.batch_size",
    "train.lr",
    "model.size",
    "loss.num_negatives",
    "enhancer.m",
    "enhancer.warmup_epochs",
    "weighter.kind",
    "weighter.temperature",
    "weighter.share",
    "weighter.max_weight",
    "data.max_len",
    "train.num_workers",
    "train.use_gpu",
)
# per-epoch keys kept in histories.csv
HISTORY_PREFIXES = ("train/", "weights/", "val/", "objective", "time/epoch_s")


def _get(cfg: ExperimentConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def budget(cells: Sequence[Cell], datasets: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Distinct values of the budget keys over the cells (model shape resolved; max_len as
    each cell's prepared dataset in `datasets` (`dataset_info`) resolved it; the weighter each
    cell trains with — `fixed` for a variant without adaptive weights — and only the weighter
    keys that weighter reads: a key no cell reads is left out)."""
    out: dict[str, list[Any]] = {}
    for key in BUDGET_KEYS:
        values = []
        for c in cells:
            if unread_reason(c.config, key) is not None:
                continue
            v = _get(c.config, key)
            if key == "data.max_len":
                v = c.config.data.resolved_max_len(datasets[c.dataset]["max_len"])
            elif key == "weighter.kind":
                v = effective_weighter_kind(c.config)
            values.append(v)
        if values:
            out[key] = list(dict.fromkeys(values))
    out["model shape (layers×heads×dim)"] = list(dict.fromkeys(model_shape(c.config) for c in cells))
    return out


def model_shape(cfg: ExperimentConfig) -> str:
    if cfg.model.size == "auto":  # a cell not yet resolved against its data (run_ablation does)
        return "auto"
    layers, heads, dim = cfg.model.resolved_shape()
    return f"{layers}×{heads}×{dim}"


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """results_dir, data.data_dir and data.path relative to the cwd → absolute."""
    changes: dict[str, Any] = {"results_dir": str(Path(cfg.results_dir).expanduser().resolve())}
    for key in ("data.data_dir", "data.path"):
        value = _get(cfg, key)
        if value is not None and "://" not in value:
            changes[key] = str(Path(value).expanduser().resolve())
    return apply_overrides(cfg, changes)


# --------------------------------------------------------------------------------------------
# datasets: prepared once, sizes, the popularity baseline and the synthetic oracle
# --------------------------------------------------------------------------------------------


def dataset_info(
    cells: Sequence[Cell], verbose: bool = True, floors: dict[str, dict[str, pd.DataFrame]] | None = None
) -> tuple[dict[str, Any], dict[str, int]]:
    """Per dataset name: sizes, the test-split popularity baseline, the count model's AUC and
    LogLoss (val, test; `unigrf.evaluation.count_model`) and, for synthetic data, the
    generator's oracle (the Bayes ceiling, `unigrf.evaluation.oracle`); and per cell the number
    of model parameters (built on the prepared data's dimensions). `floors`, when given, receives
    the count model's per-user outcomes (dataset → split → frame)."""
    from unigrf.data.prepare import load_meta, prepare_dataset
    from unigrf.data.sequences import SequenceData
    from unigrf.evaluation.count_model import count_model_metrics, count_model_outcomes, fit_count_model
    from unigrf.evaluation.evaluate import popularity_baseline
    from unigrf.evaluation.oracle import synthetic_oracle_metrics
    from unigrf.model import build_model

    info: dict[str, Any] = {}
    params: dict[str, int] = {}
    loaded: dict[str, SequenceData] = {}
    for cell in cells:
        cfg = cell.config
        if cell.dataset not in loaded:
            prepared = prepare_dataset(cfg.data, cfg.results_dir, verbose=verbose)
            meta = load_meta(prepared)
            data = SequenceData.load(prepared, max_len=cfg.data.max_len)
            loaded[cell.dataset] = data
            pop = popularity_baseline(data, "test", cfg.eval)
            info[cell.dataset] = {
                "dataset": cfg.data.dataset,
                "prepared_dir": str(prepared),
                "num_users": int(meta["num_users"]),
                "num_items": int(meta["num_items"]),
                "num_interactions": int(meta["num_interactions"]),
                "max_len": int(meta["max_len"]),  # data.max_len, or derived from the data
                "like_threshold": float(meta["like_threshold"]),
                "popularity": {k: float(v) for k, v in pop.items() if k != "num_users"},
            }
            counts = fit_count_model(data)
            frames = {split: count_model_outcomes(data, split, counts) for split in ("val", "test")}
            info[cell.dataset]["count_model"] = {
                split: {k: float(v) for k, v in count_model_metrics(f).items() if k != "num_users"}
                for split, f in frames.items()
            }
            if floors is not None:
                floors[cell.dataset] = frames
            if cfg.data.dataset == "synthetic" and cfg.data.resolved_k_core() <= 1:
                oracle = synthetic_oracle_metrics(cfg.data, prepared, "test", cfg.eval)
                info[cell.dataset]["oracle"] = {
                    k: float(v) for k, v in oracle.items() if k not in ("num_users", "cascade_num_users")
                }
            info[cell.dataset]["num_train_interactions"] = data.num_train_interactions
        data = loaded[cell.dataset]
        cfg = resolve_model_size(cfg, data.num_train_interactions)
        model = build_model(cfg, data.num_items, data.num_levels, data.max_len)
        params[cell.name] = int(sum(p.numel() for p in model.parameters()))
    return info, params


# --------------------------------------------------------------------------------------------
# results of the sweep layer → results.csv / histories.csv frames
# --------------------------------------------------------------------------------------------


def read_histories(frame: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Per-epoch metrics of each finished run (the sweep's `history` lists), by run name."""
    out = {}
    for rec in frame.to_dict("records"):
        history = rec.get("history")
        if isinstance(history, list) and history:
            out[str(rec["name"])] = history
    return out


def read_outcome_paths(frame: pd.DataFrame) -> dict[str, dict[str, Path]]:
    """Per-user outcome files of each finished run (`outcome_store.outcome_paths`), by run name."""
    out = {}
    for rec in frame.to_dict("records"):
        paths = outcome_paths(rec)
        if paths:
            out[str(rec["name"])] = paths
    return out


def run_selection(rec: Mapping[str, Any]) -> str:
    """How a finished run chose its test checkpoint(s): `selection` of its result ("joint" or
    "per_stage"), from the sweep's row or the run directory's metrics.json; "" if unrecorded."""
    value = rec.get("selection")
    if isinstance(value, str) and value:
        return value
    run_dir = rec.get("run_dir")
    if isinstance(run_dir, str) and run_dir:
        try:
            value = json.loads((Path(run_dir) / "metrics.json").read_text()).get("selection")
        except (OSError, ValueError, AttributeError):
            return ""
    return value if isinstance(value, str) else ""


def declaration(spec: GridSpec, previous: Mapping[str, Any] | None, started_at: str) -> dict[str, Any] | None:
    """meta.json's `declared`: the previous run's record of this report directory when there
    is one (a resumed grid keeps its first declaration), else — at a grid's first run — its
    seeds, rows and datasets now. A directory whose earlier meta.json has no record stays
    without one: what was declared before it is unknown."""
    if previous is not None:
        kept = previous.get("declared")
        return dict(kept) if isinstance(kept, Mapping) else None
    return {"at": started_at, **spec.declaration()}


def _previous_meta(report_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((report_dir / "meta.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def normalise(
    frame: pd.DataFrame,
    cells: Sequence[Cell],
    params: Mapping[str, int] | None = None,
    histories_by_run: Mapping[str, list[dict[str, Any]]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sweep's result table (one row per named config, `name` = `run_name(cell)`) and the
    runs' per-epoch histories → (results, histories) frames as stored in the report dir.

    A cell missing from `frame` or without test metrics is kept with status "missing" /
    "error: ..." so the report names it instead of silently dropping it. `time_s` is the run's
    wall time (Ray Train startup and the test evaluation included), `epoch_time_s` the sum of
    its epochs' times (training + validation).
    """
    by_name = {str(r["name"]): r for r in frame.to_dict("records")} if len(frame) else {}
    histories_by_run = histories_by_run or {}
    results, histories = [], []
    for cell in cells:
        rec = by_name.get(run_name(cell.name))
        row: dict[str, Any] = {
            **cell.identity(),
            "model_shape": model_shape(cell.config),
            "num_params": (params or {}).get(cell.name, math.nan),
        }
        history = list(histories_by_run.get(run_name(cell.name), []))
        if rec is None:
            row["status"] = "missing"
        else:
            row["status"] = _status(rec)
            row["selection"] = run_selection(rec)
            row["best_epoch"] = rec.get("best_epoch", math.nan)
            row["epochs_run"] = rec.get("epochs_run", len(history))
            row["time_s"] = float(rec["time_s"]) if _is_number(rec.get("time_s")) else math.nan
            times = [float(h["time/epoch_s"]) for h in history if _is_number(h.get("time/epoch_s"))]
            row["epoch_time_s"] = sum(times) if times else math.nan
            for key, value in rec.items():
                if isinstance(key, str) and key.startswith(("val/", "test/")) and _is_number(value):
                    row[key] = float(value)
            if history:  # the last epoch's training losses (the scaling figure's "loss")
                for key, value in history[-1].items():
                    if key.startswith("train/") and _is_number(value):
                        row[key] = float(value)
        results.append(row)
        for epoch in history:
            histories.append(
                {
                    "cell": cell.name,
                    "epoch": int(epoch["epoch"]),
                    **{
                        k: float(v)
                        for k, v in epoch.items()
                        if k.startswith(HISTORY_PREFIXES) and _is_number(v)
                    },
                }
            )
    return pd.DataFrame(results), pd.DataFrame(histories, columns=None if histories else ["cell", "epoch"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _status(rec: Mapping[str, Any]) -> str:
    if rec.get("status") == INTERRUPTED:  # Ctrl-C stopped the grid first: not a failure
        return INTERRUPTED
    error = rec.get("error")
    if isinstance(error, str) and error:
        return f"error: {error.splitlines()[-1][:200]}"
    if not any(isinstance(k, str) and k.startswith("test/") and _is_number(v) for k, v in rec.items()):
        return "error: no test metrics reported"
    return OK_STATUS


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------


def report_dir_for(spec: GridSpec, cells: Sequence[Cell]) -> Path:
    roots = {c.config.results_dir for c in cells}
    if len(roots) != 1:
        raise ValueError(f"grid {spec.name}: every cell must share one results_dir, got {sorted(roots)}")
    return Path(roots.pop()) / "ablations" / spec.name


def run_ablation(
    spec: GridSpec,
    cli_overrides: Mapping[str, Any] | None = None,
    *,
    address: str | None = None,
    storage_path: str | None = None,
    resume: bool = False,
    use_gpu: bool = False,
    max_concurrent: int | None = None,
    command: str = "",
    verbose: bool = False,
    quiet: bool = False,
    reuse_from: Sequence[str | Path] = (),
) -> tuple[Path, Rendered]:
    """Run every cell of `spec` and write the report; returns (report dir, rendered report).

    The console: a progress bar with one line per finished run, then the results table and
    the report's paths (`unigrf.ablation.progress`); Ray's and Tune's own output are off unless
    `verbose`. `quiet`: nothing but errors (tests, scripts).

    The grid's lock (`unigrf.run_lock`) is held throughout: a second `unigrf ablate` of the same
    grid exits naming the first. Ctrl-C: Tune stops the runs, the report is written with the
    unfinished cells "interrupted", and `Interrupted` is raised (exit 130).

    `reuse_from`: report directories of other grids whose finished cells this grid shares
    (the same computation on the same data): they are copied in, not trained again
    (`unigrf.ablation.reuse`), and listed in meta.json's `reused`."""
    overrides = dict(cli_overrides or {})
    if use_gpu:
        overrides["train.use_gpu"] = True
    cells = spec.expand(overrides)
    results_dir = check_writable(cells[0].config.results_dir)  # before Ray starts or data is prepared
    if reuse_from:
        from unigrf.ablation.reuse import check_sources

        check_sources(reuse_from)
    with hold(results_dir, "grid", spec.name, "grid"):
        return _run_ablation(
            spec,
            overrides,
            address,
            storage_path,
            resume,
            max_concurrent,
            command,
            verbose,
            quiet,
            reuse_from,
        )


def _run_ablation(
    spec: GridSpec,
    overrides: dict[str, Any],
    address: str | None,
    storage_path: str | None,
    resume: bool,
    max_concurrent: int | None,
    command: str,
    verbose: bool,
    quiet: bool,
    reuse_from: Sequence[str | Path],
) -> tuple[Path, Rendered]:
    import ray

    from unigrf.ablation.cells import run_fixed_configs
    from unigrf.ablation.progress import GridProgress
    from unigrf.ray_utils import init_ray, node_capacity, require_workers_fit

    cells = [_with_config(c, absolute_paths(c.config)) for c in spec.expand(overrides)]
    names = [run_name(c.name) for c in cells]
    if len(set(names)) != len(names):
        raise GridError(f"{spec.path or spec.name}: two cells map to the same run name; rename a label")
    for name in names:
        check_name(name, f"{spec.path or spec.name}: cell run name", GridError)
    report_dir = report_dir_for(spec, cells)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    declared = declaration(spec, _previous_meta(report_dir) if resume else None, started_at)
    floors: dict[str, dict[str, pd.DataFrame]] = {}
    t0 = time.perf_counter()
    started_ray = init_ray(address, quiet=not verbose)
    progress: list[GridProgress] = []

    def progress_bar(todo: int, done: int) -> list[GridProgress]:
        if quiet:
            return []
        print(f"{spec.name}: {todo + done} runs ({done} already finished)", flush=True)
        progress.append(GridProgress(todo + done, done))
        return progress

    try:
        nodes = node_capacity()
        for cell in cells:  # a cell whose workers never fit: refused before any data is prepared
            require_workers_fit(cell.config, nodes)
        datasets, params = dataset_info(cells, verbose=not quiet, floors=floors)
        # `model.size: auto` becomes each dataset's preset here, so the trials, the budget and
        # the stored configs all name the size that ran
        cells = [
            _with_config(c, resolve_model_size(c.config, datasets[c.dataset]["num_train_interactions"]))
            for c in cells
        ]
        named = [(run_name(c.name), c.config) for c in cells]
        reused = _reuse(report_dir, named, reuse_from, resume, quiet)
        # the grid's directory is the Tune experiment: runs/<run name>/ per cell, ray/ storage
        frame = run_fixed_configs(
            named,
            experiment_dir=report_dir,
            storage_path=storage_path,
            resume=resume or bool(reused),
            max_concurrent=max_concurrent,
            address=address,
            verbose=1 if verbose else 0,
            callbacks_for=progress_bar,
        )
    finally:
        for bar in progress:
            bar.close()
        if started_ray:
            ray.shutdown()
    results, histories = normalise(frame, cells, params, read_histories(frame))
    meta = {
        "grid": spec.name,
        "grid_file": str(spec.path) if spec.path is not None else None,
        "command": command,
        "git_commit": git_commit(Path(__file__).resolve().parent),  # the code that ran
        "versions": package_versions(),
        "started_at": started_at,
        "wall_s": time.perf_counter() - t0,
        "resume": resume,
        "cli_overrides": {k: v for k, v in overrides.items()},
        "storage_path": storage_path or str(report_dir / "ray"),
        "budget": budget(cells, datasets),
    }
    if reused:
        meta["reused"] = reused
    if declared is not None:
        meta["declared"] = declared
    unfinished = int((results["status"] == INTERRUPTED).sum())
    if unfinished:
        meta["interrupted"] = True
    configs = {c.name: config_to_dict(c.config) for c in cells}
    finished = set(results.loc[results["status"] == OK_STATUS, "cell"].map(run_name))
    copy_outcomes(report_dir, {n: p for n, p in read_outcome_paths(frame).items() if n in finished})
    for dataset, frames in floors.items():
        write_count_model_outcomes(report_dir, dataset, frames)
    store_inputs(report_dir, spec, results, histories, meta, datasets, configs)
    rendered = write_report(report_dir)
    if verbose:
        print(rendered.markdown, flush=True)
    elif not quiet:
        print(console_summary(report_dir, rendered.summary), flush=True)
    if not quiet:
        print(f"report: {report_dir / 'report.md'} (+ report.tex, results.csv)", flush=True)
        for figure in rendered.figures:
            print(f"figure: {figure}", flush=True)
    if unfinished:
        raise Interrupted(
            f"{len(cells) - unfinished} of {len(cells)} runs done, {unfinished} interrupted (so marked "
            f"in {report_dir / 'report.md'}); the same command with --resume runs them"
        )
    return report_dir, rendered


def _reuse(
    report_dir: Path,
    named: Sequence[tuple[str, ExperimentConfig]],
    sources: Sequence[str | Path],
    resume: bool,
    quiet: bool,
) -> dict[str, dict[str, str]]:
    """Copy in the cells `sources` finished (`unigrf.ablation.reuse`); a fresh grid (no
    `--resume`) must not already have run directories, as without reuse."""
    from unigrf.ablation.reuse import reuse_cells

    if not sources:
        return {}
    runs = report_dir / "runs"
    if not resume and runs.is_dir() and any(runs.iterdir()):
        raise GridError(f"{runs}: the grid has run directories already; add --resume to continue it")
    reused = reuse_cells(report_dir, named, sources)
    if not quiet:
        print(f"reused {len(reused)} finished cell(s) from {', '.join(map(str, sources))}", flush=True)
    return reused


def _with_config(cell: Cell, cfg: ExperimentConfig) -> Cell:
    import dataclasses

    return dataclasses.replace(cell, config=cfg)
