"""The Tune pieces of a sweep: Optuna sampler and searcher, ASHA, the TensorBoard HParams callback.

Imports Ray and Optuna at module level; `unigrf.sweep.tuner` imports this module only when a
sweep actually runs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import ray
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from unigrf.compat import PicklableLocks, mark_completed, optuna_trial, optuna_trial_finished
from unigrf.sweep.space import SweepSpec
from unigrf.sweep.trainable import CELL_KEY, PLACEMENT_GROUP_FILE

logger = logging.getLogger(__name__)

TUNE_METRIC = "objective"  # reported every epoch (that epoch's value) and at the end (the best)


class TrackedOptunaSearch(OptunaSearch):
    """`OptunaSearch` that tags each Optuna trial with its Tune trial id (user attribute
    `tune_trial_id`), so the study and Tune's trials can be matched (dashboard, resume checks).
    Its trial table is OptunaSearch's private one (`unigrf.compat`)."""

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        optuna_trial(self, trial_id).set_user_attr("tune_trial_id", trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """As OptunaSearch's, except for a trial the study has already closed: after a driver
        was killed between a trial's end (told to the study) and Tune's next snapshot, the
        resumed trial re-reports its stored result, and Optuna refuses intermediate values for
        a finished trial."""
        if optuna_trial_finished(self, trial_id):
            mark_completed(self, trial_id)
            return
        super().on_trial_result(trial_id, result)


class NSGAIISampler(PicklableLocks, optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable: Tune pickles the searcher with its sampler, and the
    sampler holds a lock (`unigrf.compat.PicklableLocks` says why)."""


def make_sampler(
    spec: SweepSpec, random: bool, multi_objective: bool, num_samples: int
) -> optuna.samplers.BaseSampler:
    """Seeded TPE by default, `RandomSampler` with `random`; for `multi_objective` the file's
    `multi_objective.sampler` (NSGA-II, TPE, which handles several objectives, or random)."""
    seed = spec.sampler.seed
    kind = "random" if random else (spec.multi_objective.sampler if multi_objective else spec.sampler.kind)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        # Optuna's default population (50) would make every trial of a small sweep part of the
        # random first generation; half the budget gives at least one evolved generation.
        return NSGAIISampler(population_size=max(2, min(50, num_samples // 2)), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler.n_startup_trials)


def make_searcher(
    spec: SweepSpec, study_name: str, study_url: str, random: bool, multi_objective: bool, num_samples: int
) -> TrackedOptunaSearch:
    """The searcher over `spec`'s space; its study `study_name` lives at `study_url` (an
    SQLAlchemy URL, e.g. sqlite:///.../study.db), created or, on resume, continued."""
    if multi_objective:
        metric: str | list[str] = list(spec.multi_objective.metrics)
        mode: str | list[str] = list(spec.multi_objective.modes)
    else:
        metric, mode = TUNE_METRIC, "max"
    return TrackedOptunaSearch(
        space=spec.optuna_space(),
        metric=metric,
        mode=mode,
        sampler=make_sampler(spec, random, multi_objective, num_samples),
        study_name=study_name,
        storage=optuna.storages.RDBStorage(study_url),
    )


def make_scheduler(spec: SweepSpec, epochs: int, multi_objective: bool) -> TrialScheduler:
    """ASHA on the per-epoch validation `objective`, timed by the 0-based `epoch`; FIFO for a
    multi-objective search (ASHA ranks trials by one metric) or `scheduler.kind: fifo`.

    Rungs sit at epoch indices grace_period * reduction_factor**k up to `max_t = epochs - 2`,
    i.e. never at the last epoch, and `stop_last_trials=False`: a trial that survives the rungs
    always finishes, so its test metrics are measured (stopping it after its last epoch would
    only throw them away)."""
    if multi_objective or spec.scheduler.kind == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        metric=TUNE_METRIC,
        mode="max",
        max_t=epochs - 2,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        stop_last_trials=False,
    )


class HParamsCallback(Callback):
    """One TensorBoard HParams run per finished trial (its config against its metrics), under
    `log_dir/<trial_id>`; a trial already written is skipped, so a resumed sweep adds none twice."""

    def __init__(self, log_dir: str, metrics: Sequence[str]) -> None:
        self.log_dir = log_dir
        self.metrics = list(metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        write_hparams(
            Path(self.log_dir), trial.trial_id, dict(trial.config), trial.last_result or {}, self.metrics
        )


class PlacementGroupCleanup(Callback):
    """Removes the Train workers' placement group of every trial that ended (stopped by ASHA,
    errored or finished), from the record `sweep_worker` leaves in the trial's run directory.

    A finished Train run has removed its own; a trial that Tune stopped has not: its actor,
    Train controller and workers are gone, but a placement group lives as long as the job, so
    without this each pruned trial would keep its CPUs (or GPUs) reserved until the sweep ends.
    (Ray Train's own cleaner does this only where the State API, i.e. the dashboard, runs.)

    A cleanup that fails (an unreadable record, Ray refusing) is a warning, never an error:
    Tune would otherwise count a finished trial as failed while its result is stored."""

    def __init__(self, runs_dir: str, use_cell_names: bool) -> None:
        self.runs_dir = runs_dir
        self.use_cell_names = use_cell_names

    def _run_dir(self, trial: Any) -> Path:
        name = trial.config.get(CELL_KEY) if self.use_cell_names else trial.trial_id
        return Path(self.runs_dir) / str(name)

    def _cleanup(self, trial: Any) -> None:
        try:
            remove_recorded_placement_group(self._run_dir(trial))
        except Exception as err:  # noqa: BLE001 - see the class docstring
            logger.warning("placement group of trial %s not removed: %s", trial.trial_id, err)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._cleanup(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._cleanup(trial)


_PG_ID = re.compile(r"[0-9a-f]{36}")


def remove_recorded_placement_group(run_dir: Path) -> bool:
    """Remove the placement group recorded in `run_dir` if it still exists; True if removed.

    The record is JSON holding a placement group id (plain data: nothing read from the run
    directory can run code). Only a group of this driver's own job is removed (a Ray id ends
    with its job's id), so a record planted by someone else cannot remove another job's; any
    other record is refused with a ValueError naming the file. The record is deleted either way."""
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    path = run_dir / PLACEMENT_GROUP_FILE
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    pg_id = record.get("placement_group_id") if isinstance(record, dict) else None
    if not isinstance(pg_id, str) or not _PG_ID.fullmatch(pg_id):
        raise ValueError(f"{path}: not a placement group record ({str(record)[:80]!r})")
    job = ray.get_runtime_context().get_job_id()
    if not pg_id.endswith(job):
        raise ValueError(f"{path}: placement group {pg_id} belongs to another job than this one ({job})")
    pg = PlacementGroup(ray.PlacementGroupID.from_hex(pg_id))
    if placement_group_table(pg).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(pg)
    return True


def write_hparams(
    log_dir: Path, run_name: str, params: Mapping[str, Any], result: Mapping[str, Any], metrics: Sequence[str]
) -> bool:
    """Write one HParams run (`SummaryWriter.add_hparams`) at `log_dir/run_name`; False if it
    exists already."""
    from torch.utils.tensorboard import SummaryWriter

    if (log_dir / run_name).exists():
        return False
    hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
    values = {
        f"hparam/{m}": float(result[m])
        for m in metrics
        if isinstance(result.get(m), (int, float)) and math.isfinite(float(result[m]))
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        writer.add_hparams(hparams, values, run_name=run_name)
    finally:
        writer.close()
    return True


def close_orphan_trials(
    study_url: str, study_name: str, known_tune_ids: set[str] | None = None, requeue: bool = False
) -> int:
    """Mark FAIL the Optuna trials still RUNNING that no Tune trial will finish: those handed
    out after Tune's last experiment snapshot before the driver died (their Tune trial is not
    in `known_tune_ids`, the restored experiment's trials; None: every RUNNING trial, for use
    once Tune is done). With `requeue`, each one's parameters are enqueued, so the resumed
    sweep evaluates the points the dead driver had drawn; a trial killed between Optuna's
    `ask` and its first suggestion drew nothing and is not requeued (an empty enqueue would only
    be a fresh draw). Returns how many were closed."""
    study = optuna.load_study(study_name=study_name, storage=study_url)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    orphans = [
        t
        for t in running
        if known_tune_ids is None or t.user_attrs.get("tune_trial_id") not in known_tune_ids
    ]
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        if requeue and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"requeued_from_trial": trial.number})
    return len(orphans)


def study_exists(study_url: str, name: str) -> bool:
    """Whether `study_url` holds a study `name` (an SQLite file that does not exist holds none,
    and is not created by asking)."""
    if study_url.startswith("sqlite:///") and not Path(study_url.removeprefix("sqlite:///")).exists():
        return False
    try:
        return name in optuna.get_all_study_names(storage=study_url)
    except Exception:  # noqa: BLE001 - an absent SQLite file or an empty database: no study yet
        return False
