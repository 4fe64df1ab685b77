"""A grid's cells as one Ray Tune experiment: `run_fixed_configs`.

Each named config is one Tune trial of a grid search over the names, trained like a sweep's
trial (`unigrf.sweep.trainable`: in the trial's own process for one CPU worker, a Ray Train run
for several workers or GPUs), as many at a time as the cluster holds. Each cell's run directory
is `<experiment_dir>/runs/<name>/`; with `resume`, finished cells are skipped and interrupted
ones continue from their last epoch checkpoint; a cell whose run directory records another
config than the one it gets now is refused (`unigrf.run_identity`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from unigrf.config import ExperimentConfig, config_to_dict
from unigrf.interrupts import tune_interrupts
from unigrf.names import check_name
from unigrf.results_dir import check_writable
from unigrf.run_identity import differences, stored_config
from unigrf.sweep.results import ERROR, INTERRUPTED, trial_row
from unigrf.sweep.trainable import (
    CELL_KEY,
    HISTORY_FILE,
    TrialSetup,
    absolute_paths,
    read_trial_result,
)
from unigrf.sweep.tuner import (
    SweepError,
    concurrency,
    delete_train_runs,
    make_trainable,
    prepare_data,
    run_config_extras,
    trial_dirname,
)

FIXED_SUBDIR = "fixed"  # run_fixed_configs experiments: <storage>/fixed/<name>-<time>


def run_fixed_configs(
    configs: Sequence[tuple[str, ExperimentConfig]],
    experiment_dir: str | Path,
    storage_path: str | None,
    resume: bool,
    max_concurrent: int | None = None,
    *,
    address: str | None = None,
    max_failures: int = 0,
    verbose: int = 1,
    callbacks_for: Callable[[int, int], Sequence[Any]] | None = None,
) -> pd.DataFrame:
    """Run each named config as one Tune trial (a grid over the names); one row per config.

    `callbacks_for(to_run, already_finished)`, called once before Tune starts, returns extra
    Tune callbacks (the ablation layer's progress bar needs both counts).

    Rows (in `configs` order): `name`, `status` (completed / error / interrupted: Ctrl-C
    stopped the grid before the cell finished), `epochs_run`,
    `best_epoch`, `objective` (best validation objective), the best epoch's `val/*`, the
    `test/*` metrics, `time_s` (the training's wall time), `run_dir`, `history` (the list of
    per-epoch metric dicts) and `history_path` (the same as JSON; `load_history` reads it into
    a DataFrame), `error` (the message, for failed cells).

    Each cell's run directory is `<experiment_dir>/runs/<name>/`. With `resume`, cells that
    finished (same name, same config) are skipped and interrupted ones continue from their
    last epoch checkpoint, and a cell whose run directory records another config than the one
    given now (`unigrf.run_identity`; e.g. a grid override changed since) is refused, not
    resumed or silently re-run; without `resume`, a cell that already has a run directory is
    an error (nothing is overwritten). Ray is started (or joined, `address`) if it is not
    running.
    """
    import ray
    from ray import tune

    from unigrf.ray_utils import init_ray, leave_no_train_cleaners, resolve_storage_path
    from unigrf.sweep.search import PlacementGroupCleanup

    names = [n for n, _ in configs]
    if len(set(names)) != len(names):
        raise SweepError(
            f"run_fixed_configs: duplicate config names: {sorted({n for n in names if names.count(n) > 1})}"
        )
    for n in names:
        check_name(n, "run_fixed_configs: config name", SweepError)
    experiment_dir = check_writable(experiment_dir)
    runs_dir = experiment_dir / "runs"
    cfgs = {n: absolute_paths(c) for n, c in configs}
    experiment = check_name(experiment_dir.name, "run_fixed_configs: experiment directory name", SweepError)
    if resume:
        _refuse_changed_cells(runs_dir, cfgs)
    else:
        existing = [n for n in names if (runs_dir / n).exists()]
        if existing:
            raise SweepError(
                f"{runs_dir}: {len(existing)} cell(s) already have run directories ({', '.join(existing[:3])}"
                f"{', ...' if len(existing) > 3 else ''}); resume to skip the finished ones, or delete {experiment_dir}"
            )
    todo = [n for n in names if read_trial_result(runs_dir / n, cfgs[n]) is None]
    errors: dict[str, str] = {}
    interrupted = False
    extra_callbacks = list(callbacks_for(len(todo), len(names) - len(todo))) if callbacks_for else []
    if todo:
        started = init_ray(address)
        try:
            storage = resolve_storage_path(storage_path, experiment_dir)
            if not resume:  # a fresh start must not pick up stale Train checkpoints of the same names
                delete_train_runs(storage, experiment, todo)
            todo_cfgs = [cfgs[n] for n in todo]
            setup = TrialSetup(
                experiment=experiment,
                runs_dir=str(runs_dir),
                storage_path=storage,
                cells={n: config_to_dict(cfgs[n]) for n in todo},
                data_dirs=prepare_data(todo_cfgs, verbose=verbose > 0),
                max_failures=max_failures,
            )
            trainable = make_trainable(setup, todo_cfgs)
            tuner = tune.Tuner(
                trainable,
                param_space={CELL_KEY: tune.grid_search(todo)},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=concurrency(todo_cfgs, max_concurrent),
                    trial_dirname_creator=trial_dirname,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=f"{storage.rstrip('/')}/{FIXED_SUBDIR}",
                    **run_config_extras(todo_cfgs, max_failures),
                    callbacks=[PlacementGroupCleanup(setup.runs_dir, use_cell_names=True), *extra_callbacks],
                    verbose=verbose,
                ),
            )
            with tune_interrupts() as stop:
                grid = tuner.fit()
            interrupted = stop.interrupted
            for result in grid:
                if result.error is not None:
                    errors[str(result.config.get(CELL_KEY))] = str(result.error).strip().splitlines()[-1]
        finally:
            leave_no_train_cleaners()
            if started:
                ray.shutdown()
    return _fixed_table(names, cfgs, runs_dir, errors, interrupted)


def _refuse_changed_cells(runs_dir: Path, cfgs: Mapping[str, ExperimentConfig]) -> None:
    """On resume: a cell that ran under another config than it gets now (beyond the keys safe
    to change) would continue its old checkpoints under the new config, or be re-run into a
    directory holding the old one's curves: refused, naming the cells and keys."""
    changed = []
    for name, cfg in cfgs.items():
        if read_trial_result(runs_dir / name, cfg) is not None:
            continue  # finished under this config (perhaps in another clone): kept, not continued
        old, _ = stored_config(runs_dir / name)
        diff = differences(old, config_to_dict(cfg)) if old is not None else []
        if diff:
            changed.append(f"{name}: {'; '.join(diff[:3])}" + ("; ..." if len(diff) > 3 else ""))
    if changed:
        raise SweepError(
            f"{runs_dir}: {len(changed)} cell(s) ran under another config than the one they get now "
            f"({changed[0]}{'; and more' if len(changed) > 1 else ''}): --resume continues cells only "
            "under their own config; restore the grid and overrides, give the grid a new `name:`, or "
            "delete those cells' run directories to run them again"
        )


def _fixed_table(
    names: Sequence[str],
    cfgs: Mapping[str, ExperimentConfig],
    runs_dir: Path,
    errors: Mapping[str, str],
    interrupted: bool = False,
) -> pd.DataFrame:
    rows = []
    for name in names:
        run_dir = runs_dir / name
        stored = read_trial_result(run_dir, cfgs[name])
        if stored is None and interrupted and name not in errors:  # Ctrl-C came first
            row = {"name": name, "status": INTERRUPTED, "error": None}
        elif stored is None:
            row = {"name": name, "status": ERROR, "error": errors.get(name, "no result")}
        else:
            row = trial_row(name, {}, stored["final"], None, error=False)
            row["name"] = row.pop("trial_id")
            row["error"] = None
            row["time_s"] = stored.get("time_s", math.nan)
        history_path = run_dir / HISTORY_FILE
        history = _read_history(history_path) if stored is not None else None
        row["run_dir"] = str(run_dir)
        row["history_path"] = str(history_path) if history is not None else None
        row["history"] = history or []
        rows.append(row)
    table = pd.DataFrame(rows)
    front = ["name", "status", "epochs_run", "best_epoch", "objective"]
    rest = [c for c in table.columns if c not in front]
    return table[[c for c in front if c in table.columns] + rest]


def _read_history(path: Path) -> list[dict[str, Any]] | None:
    """A finished run's per-epoch metrics, None (named on stderr) when the file is unreadable:
    the run's result stands, only its curves are missing."""
    try:
        history = json.loads(path.read_text())
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise ValueError("not a list of per-epoch mappings")
        return history
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        print(f"warning: {path}: unreadable ({reason}); the run's curves are left out", file=sys.stderr)
        return None


def load_history(path: str | Path) -> pd.DataFrame:
    """A run's per-epoch metrics (`history_path` of `run_fixed_configs`) as a DataFrame."""
    return pd.DataFrame(json.loads(Path(path).read_text()))
