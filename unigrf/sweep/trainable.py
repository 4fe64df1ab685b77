"""The function trainable of every Tune trial: build the trial's config and train it.

A trial trains in one of two ways (`trains_in_process`):
- **in the trial's own process** (one worker on CPU, the usual case on a laptop or a CPU
  node): the trial calls `unigrf.training.loop.fit` with a `TuneContext`, which reports every
  epoch's metrics and checkpoint through `ray.tune.report` and resumes from
  `ray.tune.get_checkpoint()`. No Train controller or worker group is started, the prepared
  sequences come from Ray's object store (loaded once by the driver, `TrialData`), and with
  actor reuse (`reuse_actors=True` in the Tuner) torch is imported once per trial process,
  not per trial: a trial costs its epochs and little else (benchmarks/RESULTS.md);
- **as a Ray Train run** (several workers, or GPUs): the trial builds a `TorchTrainer` and
  calls `fit()` (the Ray >= 2.43 "Train inside Tune" pattern; `Tuner(trainer)` is
  deprecated). Train workers report every epoch and once more at the end
  (`unigrf.training.distributed`), and Tune's `TuneReportCallback` forwards each report to
  this trial.
Either way ASHA and Optuna see the same per-epoch `objective`, and the last report is
`final_metrics` (the best epoch's validation metrics and the test metrics, how the weights were
selected, the cascade's λ and the paths of the per-user outcome files `fit` wrote in the trial's
run directory: `{"outcomes": {"val": path, "test": path}}`).

A trial is either a *sampled* point (Tune's `config` holds the sampled dotted keys, applied to
`TrialSetup.base`) or a *named cell* (`config = {"cell": name}`, the config taken from
`TrialSetup.cells`; used by `run_fixed_configs` for ablation grids).

Resumability, at two levels:
- in-process, a restarted trial's `ray.tune.get_checkpoint()` is its latest epoch checkpoint
  (Tune keeps it in the experiment's storage); a Train run is named
  `<experiment>-<run name>` (trial id or cell name, both stable across a driver restart) under
  `<storage>/tune-train/`, so a restarted trial resumes its training from the latest epoch
  checkpoint (Train V2 reloads the run's snapshot from storage);
- a finished trial leaves `trial_result.json` in its run directory (the final report — metrics,
  selection, cascade λ, outcome paths — and the history file's name, keyed by the config's hash). A trial run again after a driver crash (Tune's last experiment
  snapshot predating its end) re-reports that result at once instead of training again.

Resources (`trial_resources`): an in-process trial reserves its worker's resources itself (1
CPU, `unigrf.ray_utils.worker_resources`) and uses that many torch threads; a Train trial
reserves no CPU — it only drives the Train workers, which reserve their own — so a 2-CPU node
runs two trials either way. (Tune refuses an all-zero request: the driver reserves memory.)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unigrf.atomic import write_text_atomic
from unigrf.config import ConfigError, ExperimentConfig, config_from_dict, config_hash, config_to_yaml
from unigrf.data.prepare import data_fingerprint
from unigrf.data.readers import DataError
from unigrf.data.sequences import SequenceData
from unigrf.names import check_name
from unigrf.run_identity import computation_hash, portable_hash, record, stored_config
from unigrf.sweep.space import trial_config
from unigrf.training.checkpoint_io import load_reported_checkpoint, write_reported_checkpoint
from unigrf.training.context import TrainContext
from unigrf.training.logs import progress_line
from unigrf.training.loop import fit

TRIAL_RESULT = "trial_result.json"
PLACEMENT_GROUP_FILE = ".placement_group.json"  # the Train workers' placement group (see sweep_worker)
HISTORY_FILE = "history.json"
CELL_KEY = "cell"
TRAIN_STORAGE_SUBDIR = "tune-train"
# What one trial function reserves (see the module docstring): no CPU, a little memory.
TRIAL_DRIVER_RESOURCES = {"CPU": 0.0, "memory": 256 * 1024**2}


def data_key(cfg: ExperimentConfig) -> str:
    """What identifies a trial's prepared sequences: the data config (max_len included)."""
    return config_hash(cfg.data)


def trains_in_process(cfg: ExperimentConfig) -> bool:
    """One CPU worker trains in the trial's own process; several workers or a GPU, Ray Train."""
    return cfg.train.num_workers == 1 and not cfg.train.use_gpu


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
    data_dirs: dict[str, str] = field(default_factory=dict)  # data_key(cfg) -> prepared dir
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
    write_text_atomic(path, json.dumps(payload, indent=2, default=float))


def read_trial_result(run_dir: Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The stored result of a finished trial with this exact config, else None. A file that
    cannot be read (empty, truncated, not JSON, another shape) is named on stderr once and
    counts as no result: the trial runs again and rewrites it (never a crash on every resume)."""
    path = run_dir / TRIAL_RESULT
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict) or not isinstance(stored.get("final"), dict):
            raise ValueError("not a trial result (no 'final' mapping)")
    except (OSError, ValueError) as err:
        if path not in _WARNED:
            _WARNED.add(path)
            reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
            print(f"warning: {path}: unreadable ({reason}); the run counts as unfinished", file=sys.stderr)
        return None
    if stored.get("config_hash") == config_hash(cfg):
        return stored
    # the same cell elsewhere (another clone or results directory: an archive resumed)
    if stored.get("portable_hash") == portable_hash(cfg) and stored.get("data") == data_fingerprint_of(cfg):
        return stored
    # recorded under an earlier identity rule (the hashes above are the ones of its time): the
    # same computation when the config it stored hashes as this one does now
    try:
        recorded, _ = stored_config(run_dir)
    except ConfigError:  # unreadable: named by the resume that reads it, here no match
        recorded = None
    if recorded is not None and computation_hash(recorded) == computation_hash(cfg):
        if stored.get("data") == data_fingerprint_of(cfg):
            return stored
    return None


def data_fingerprint_of(cfg: ExperimentConfig) -> str | None:
    """The prepared data's fingerprint for `cfg` (its source files' md5), None when the data is
    not on this machine."""
    try:
        return data_fingerprint(cfg.data)
    except (DataError, OSError):  # the data is not here: nothing to compare, the cell reruns
        return None


_WARNED: set[Path] = set()  # files already named (the driver reads each several times)


def sweep_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The Train worker function of a sweep trial: `train_worker`, after rank 0 records its
    worker group's placement group in the run directory (`PLACEMENT_GROUP_FILE`).

    Why: Tune stops an ASHA-pruned trial by ending its actor, and the Train controller and
    workers die with it, but a placement group lives as long as the job that made it. Ray's
    own cleaner needs the State API (the dashboard), so the driver removes it from this record
    (`unigrf.sweep.search.PlacementGroupCleanup`). The record is plain JSON (the group's id
    and its job's), never a pickle: run directories live on shared storage, and whatever is
    read back from there must not be able to run code."""
    import ray
    import ray.train

    from unigrf.training.distributed import train_worker

    pg = ray.util.get_current_placement_group()
    if pg is not None and ray.train.get_context().get_world_rank() == 0:
        record = {"placement_group_id": pg.id.hex(), "job_id": ray.get_runtime_context().get_job_id()}
        path = Path(config["run_dir"]) / PLACEMENT_GROUP_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    return train_worker(config)


class TuneContext(TrainContext):
    """`fit`'s context inside a Tune trial that trains in its own process: every epoch's
    metrics and checkpoint go to `ray.tune.report` (ASHA reads the metrics, Tune keeps the
    checkpoints in the experiment's storage), and a restarted trial resumes from
    `ray.tune.get_checkpoint()`."""

    in_epoch_checkpoints = False  # a run resumes from the epochs it reported (unigrf.training.in_epoch)

    def load_checkpoint(self) -> dict[str, Any] | None:
        import ray.tune

        return load_reported_checkpoint(ray.tune.get_checkpoint())

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        import ray.tune

        with tempfile.TemporaryDirectory(prefix="unigrf-ckpt-") as tmp:
            write_reported_checkpoint(Path(tmp), state, metrics)  # a full disk: CheckpointError
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(tmp))
        self.log(progress_line(metrics))


@dataclass(frozen=True)
class TrialData:
    """The prepared sequences of a sweep's datasets, by `data_key`, loaded once by the driver
    and handed to every trial through Ray's object store (`tune.with_parameters`): trials
    neither re-read Parquet nor hold a copy each on the same node."""

    by_key: dict[str, SequenceData] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dirs: dict[str, str], cfgs: list[ExperimentConfig]) -> TrialData:
        by_key = {}
        for cfg in cfgs:
            key = data_key(cfg)
            if key in data_dirs and key not in by_key:
                by_key[key] = SequenceData.load(data_dirs[key], max_len=cfg.data.max_len)
        return cls(by_key)


def trial_resources(setup: TrialSetup):
    """Tune's per-trial resource request as a function of the trial's config (see the module
    docstring): an in-process trial reserves its worker's resources, a Train trial none."""
    from unigrf.ray_utils import worker_resources

    def resources(config: dict[str, Any]) -> dict[str, float]:
        _, cfg = resolve_trial(setup, config, "probe")
        if trains_in_process(cfg):
            return worker_resources(cfg.train.use_gpu)
        return dict(TRIAL_DRIVER_RESOURCES)

    return resources


def _train_in_process(
    cfg: ExperimentConfig, run_dir: Path, setup: TrialSetup, data: TrialData | None
) -> dict[str, Any]:
    """`fit` in this trial process with a `TuneContext`; returns `fit`'s result."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))  # trials sharing a node must not oversubscribe it
    sequences = data.by_key.get(data_key(cfg)) if data is not None else None
    if sequences is None:  # the driver did not prepare it (a sweep over data.* keys)
        from unigrf.training.prepared import load_data

        sequences = load_data(cfg)
    ctx = TuneContext(run_dir=run_dir, keep_checkpoints=cfg.train.keep_checkpoints, verbose=setup.verbose)
    return fit(cfg, sequences, ctx)


def _train_with_ray_train(
    cfg: ExperimentConfig, run_dir: Path, name: str, setup: TrialSetup
) -> dict[str, Any]:
    """One Ray Train run of `cfg` driven by this trial; returns rank 0's `fit` result."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from unigrf.training.distributed import build_trainer

    trainer = build_trainer(
        cfg,
        run_dir,
        f"{setup.storage_path.rstrip('/')}/{TRAIN_STORAGE_SUBDIR}",
        f"{setup.experiment}-{name}",
        max_failures=setup.max_failures,
        data_dir=setup.data_dirs.get(data_key(cfg)),
        train_fn=sweep_worker,
        callbacks=[TuneReportCallback()],
        verbose=setup.verbose,
    )
    outcome = trainer.fit()  # raises on a failed run: the trial errors
    return outcome.return_value  # rank 0's `fit` result (Result.metrics is the last checkpoint's)


def run_trial(config: dict[str, Any], setup: TrialSetup, data: TrialData | None = None) -> None:
    """The Tune function trainable: train the trial's config (in this process, or on Ray
    Train), then report its final metrics and store them in its run directory."""
    import ray.tune

    from unigrf.training.distributed import final_metrics

    trial_id = ray.tune.get_context().get_trial_id()
    name, cfg = resolve_trial(setup, config, trial_id)
    check_name(name, "trial name")
    run_dir = Path(setup.runs_dir) / name
    done = read_trial_result(run_dir, cfg)
    if done is not None:  # finished before a driver crash: report it, do not train again
        ray.tune.report(done["final"])
        return

    run_dir.mkdir(parents=True, exist_ok=True)
    record(run_dir, cfg)  # what `run_fixed_configs` compares a resumed grid's cell against
    write_text_atomic(run_dir / "config.yaml", config_to_yaml(cfg))
    start = time.perf_counter()
    if trains_in_process(cfg):
        result = _train_in_process(cfg, run_dir, setup, data)
        ray.tune.report(final_metrics(result))
    else:
        result = _train_with_ray_train(cfg, run_dir, name, setup)
    write_json_atomic(run_dir / HISTORY_FILE, result["history"])
    write_json_atomic(
        run_dir / TRIAL_RESULT,
        {
            "config_hash": config_hash(cfg),
            "portable_hash": portable_hash(cfg),  # what it computed, wherever the files lie
            # the prepared data's content (source md5s): its cache directory's name, read the
            # source files again only where the driver prepared none
            "data": Path(prepared).name
            if (prepared := setup.data_dirs.get(data_key(cfg)))
            else data_fingerprint_of(cfg),
            "final": final_metrics(result),  # exactly the training's last report
            "history_file": HISTORY_FILE,
            "time_s": time.perf_counter() - start,  # this session's training (Train startup included)
        },
    )
