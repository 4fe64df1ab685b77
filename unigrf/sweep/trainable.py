"""The function trainable of every Tune trial: build the trial's config, run its Ray Train training.

One Tune trial = one Ray Train run (the Ray >= 2.43 "Train inside Tune" pattern: the trial
function builds a `TorchTrainer` and calls `fit()`; `Tuner(trainer)` is deprecated). Ray Train
workers report every epoch and once more at the end (`unigrf.training.distributed`), and Tune's
`TuneReportCallback` forwards each report to this trial, so ASHA and Optuna see every epoch.

A trial is either a *sampled* point (Tune's `config` holds the sampled dotted keys, applied to
`TrialSetup.base`) or a *named cell* (`config = {"cell": name}`, the config taken from
`TrialSetup.cells`; used by `run_fixed_configs` for ablation grids).

Resumability, at two levels:
- the Train run is named `<experiment>-<run name>` (trial id or cell name, both stable across
  a driver restart) under `<storage>/tune-train/`, so a restarted trial resumes its training
  from the latest epoch checkpoint (Train V2 reloads the run's snapshot from storage);
- a finished trial leaves `trial_result.json` in its run directory (final metrics + history,
  keyed by the config's hash). A trial run again after a driver crash (Tune's last experiment
  snapshot predating its end) re-reports that result at once instead of training again.

The trial function reserves no CPU: it only drives the Train workers, which reserve their own
(1 CPU each, `unigrf.ray_utils.worker_resources`), so a 2-CPU node runs two 1-worker trials.
Tune refuses an all-zero resource request, so the driver's memory is what it reserves.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unigrf.config import ExperimentConfig, config_from_dict, config_hash, config_to_yaml
from unigrf.sweep.space import trial_config

TRIAL_RESULT = "trial_result.json"
PLACEMENT_GROUP_FILE = ".placement_group.pkl"  # the Train workers' placement group (see sweep_worker)
HISTORY_FILE = "history.json"
CELL_KEY = "cell"
TRAIN_STORAGE_SUBDIR = "tune-train"
# What one trial function reserves (see the module docstring): no CPU, a little memory.
TRIAL_DRIVER_RESOURCES = {"CPU": 0.0, "memory": 256 * 1024**2}


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one Tune experiment shares (passed with `tune.with_parameters`).

    Paths are absolute: trial processes do not run in the driver's working directory.
    """

    experiment: str  # prefixes the Train run names
    runs_dir: str  # a trial's run directory (TensorBoard, metrics.json, trial_result.json)
    storage_path: str  # Ray storage root; Train runs go under <storage_path>/tune-train/
    base: dict[str, Any] | None = None  # sampled trials: the base config (config_to_dict)
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # named cells: full configs
    data_dirs: dict[str, str] = field(default_factory=dict)  # config_hash(cfg.data) -> prepared dir
    max_failures: int = 0  # Train worker-group restarts per trial
    verbose: bool = False  # per-epoch progress lines from the Train workers


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with `results_dir`, `data.data_dir` and `data.path` made absolute (resolved in the
    driver's working directory), so a trial process running elsewhere finds the same files."""
    from unigrf.config import apply_overrides

    changes: dict[str, Any] = {"results_dir": str(Path(cfg.results_dir).resolve())}
    for key, value in (("data.data_dir", cfg.data.data_dir), ("data.path", cfg.data.path)):
        if value is not None and "://" not in value:
            changes[key] = str(Path(value).expanduser().resolve())
    return apply_overrides(cfg, changes)


def resolve_trial(setup: TrialSetup, config: dict[str, Any], trial_id: str) -> tuple[str, ExperimentConfig]:
    """(run name, full config) of the trial with Tune `config` and `trial_id`."""
    if CELL_KEY in config:
        name = str(config[CELL_KEY])
        return name, config_from_dict(setup.cells[name])
    if setup.base is None:
        raise ValueError("TrialSetup has neither a base config nor named cells")
    params = {k: v for k, v in config.items() if k != CELL_KEY}
    return trial_id, trial_config(config_from_dict(setup.base), params, f"{setup.experiment}-{trial_id}")


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)


def read_trial_result(run_dir: Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The stored result of a finished trial with this exact config, else None."""
    path = run_dir / TRIAL_RESULT
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.get("config_hash") == config_hash(cfg) else None


def sweep_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The Train worker function of a sweep trial: `train_worker`, after rank 0 records its
    worker group's placement group in the run directory (`PLACEMENT_GROUP_FILE`).

    Why: Tune stops an ASHA-pruned trial by ending its actor, and the Train controller and
    workers die with it, but a placement group lives as long as the job that made it. Ray's
    own cleaner needs the State API (the dashboard), so the driver removes it from this record
    (`unigrf.sweep.search.PlacementGroupCleanup`)."""
    import ray
    import ray.cloudpickle
    import ray.train

    from unigrf.training.distributed import train_worker

    pg = ray.util.get_current_placement_group()
    if pg is not None and ray.train.get_context().get_world_rank() == 0:
        path = Path(config["run_dir"]) / PLACEMENT_GROUP_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(ray.cloudpickle.dumps(pg))
        os.replace(tmp, path)
    return train_worker(config)


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune function trainable: one Ray Train run of the trial's config."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from unigrf.training.distributed import build_trainer, final_metrics

    trial_id = ray.tune.get_context().get_trial_id()
    name, cfg = resolve_trial(setup, config, trial_id)
    run_dir = Path(setup.runs_dir) / name
    done = read_trial_result(run_dir, cfg)
    if done is not None:  # finished before a driver crash: report it, do not train again
        ray.tune.report(done["final"])
        return

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    trainer = build_trainer(
        cfg,
        run_dir,
        f"{setup.storage_path.rstrip('/')}/{TRAIN_STORAGE_SUBDIR}",
        f"{setup.experiment}-{name}",
        max_failures=setup.max_failures,
        data_dir=setup.data_dirs.get(config_hash(cfg.data)),
        train_fn=sweep_worker,
        callbacks=[TuneReportCallback()],
        verbose=setup.verbose,
    )
    start = time.perf_counter()
    outcome = trainer.fit()  # raises on a failed run: the trial errors
    result = outcome.return_value  # rank 0's `fit` result (Result.metrics is the last checkpoint's)
    write_json_atomic(run_dir / HISTORY_FILE, result["history"])
    write_json_atomic(
        run_dir / TRIAL_RESULT,
        {
            "config_hash": config_hash(cfg),
            "final": final_metrics(result),  # exactly the training's last report
            "history_file": HISTORY_FILE,
            "time_s": time.perf_counter() - start,  # this session's Train run (startup included)
        },
    )
