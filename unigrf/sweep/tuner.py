"""Ray Tune sweeps: `Tuner` + `OptunaSearch` (+ ASHA), resume, multi-objective, outputs.

`run_sweep(spec, base, options)` searches `spec`'s space around `base`:
- every trial trains its config (`unigrf.sweep.trainable.run_trial`): in the trial's own
  process for one CPU worker, as a Ray Train run for several workers or GPUs;
- Optuna samples (seeded TPE, or `RandomSampler` with `--random`; NSGA-II or multi-objective
  TPE with `--multi-objective`), its study stored in a real database: SQLite at
  `<sweep_dir>/study.db` unless `--study-storage URL` (any SQLAlchemy URL);
- ASHA stops weak trials on the per-epoch validation `objective` (single objective only:
  ASHA needs one metric to rank trials; the multi-objective search runs every trial to its end);
- trials run as many at a time as the cluster's resources fit (`unigrf.ray_utils`).

The ablation layer runs its grids through the same pieces (`unigrf.ablation.cells`).

Outputs of a sweep, under `<results_dir>/tune/<name>/`: `trials.csv` / `trials.md` (every trial,
best first), `best_config.yaml` (a full config `unigrf train` re-runs unchanged), `pareto.csv` /
`pareto.md` and `pareto/<trial>.yaml` (multi-objective), `summary.json`, `study.db`,
`trials/<trial>/` (each training's run directory: TensorBoard curves, metrics, config) and
`hparams/` (TensorBoard HParams, one run per finished trial).

Resume after the driver died (even SIGKILL): `Tuner.restore` keeps finished trials, restarts
unfinished ones (their training resumes from its last epoch checkpoint) and restores the
searcher, whose Optuna study lives on in the database. Two gaps of Tune's periodic experiment
snapshot are closed here: a trial that finished after the last snapshot is re-run by Tune but
re-reports its stored result instead of training (see `trainable`), and an Optuna trial that
was asked for after the last snapshot (so no restored Tune trial owns it) is marked FAIL rather
than left RUNNING forever, and its parameters are enqueued so the resumed sweep runs them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from unigrf.config import (
    ConfigError,
    ExperimentConfig,
    config_hash,
    config_to_dict,
    config_to_yaml,
    resolved_objective,
)
from unigrf.interrupts import Interrupted, tune_interrupts
from unigrf.names import check_name, remove_tree
from unigrf.provenance import git_commit, package_versions
from unigrf.results_dir import check_writable
from unigrf.run_lock import hold
from unigrf.sweep.results import (
    COMPLETED,
    ERROR,
    markdown_table,
    pareto_mask,
    summary_columns,
    trial_row,
    trials_table,
    write_table,
    write_text_atomic,
)
from unigrf.sweep.space import SweepSpec, clean_value, dump_spec, trial_config
from unigrf.sweep.trainable import (
    TRAIN_STORAGE_SUBDIR,
    TrialData,
    TrialSetup,
    absolute_paths,
    data_key,
    run_trial,
    trial_resources,
)

TUNE_SUBDIR = "tune"  # Tune experiments: <storage>/tune/<sweep name>


class SweepError(ConfigError):
    """A sweep cannot start or resume as asked; the message says why and what to do."""


@dataclass(frozen=True)
class SweepOptions:
    """Command-line choices of one `unigrf tune` invocation (None: the spec's value)."""

    name: str | None = None
    num_samples: int | None = None
    resume: bool = False
    restart: bool = False
    random: bool = False
    multi_objective: bool = False
    address: str | None = None
    storage_path: str | None = None
    study_storage: str | None = None
    max_concurrent: int | None = None
    max_failures: int = 0  # Train worker-group restarts per trial
    verbose: int = 1  # Tune's console verbosity (0-3)


@dataclass
class SweepResult:
    name: str
    sweep_dir: Path
    table: pd.DataFrame
    study_url: str
    best: dict[str, Any] | None  # the best row (single objective)
    pareto: pd.DataFrame | None  # multi-objective only


def sweep_name(spec: SweepSpec, options: SweepOptions) -> str:
    """`--name`, else the spec's name with `-random` / `-mo` so the variants never collide;
    checked to be a name (it is a directory that `--restart` deletes)."""
    if options.name is not None:
        return check_name(options.name, "--name", SweepError)
    name = spec.name + ("-random" if options.random else "") + ("-mo" if options.multi_objective else "")
    return check_name(name, f"{spec.path}: name", SweepError)


def default_study_url(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir / 'study.db'}"


def trial_dirname(trial) -> str:
    return trial.trial_id  # short, stable, and the same name as the trial's run directory


# ---------------------------------------------------------------------------------------------
# Cluster sizing, data, storage
# ---------------------------------------------------------------------------------------------


def concurrency(cfgs: Sequence[ExperimentConfig], explicit: int | None) -> int:
    """`explicit`, else how many trials (each cfg.train.num_workers Train workers) the cluster
    can hold at once, counting nodes the autoscaler may still add. Fails early for --gpu on a
    cluster without GPUs."""
    from unigrf.ray_utils import (
        autoscaler_nodes,
        cluster_capacity,
        max_concurrent_trials,
        node_resources,
        require_gpus,
        require_workers_fit,
    )

    nodes = cluster_capacity(node_resources(), autoscaler_nodes())
    use_gpu = any(c.train.use_gpu for c in cfgs)
    require_gpus(use_gpu, nodes)
    for cfg in cfgs:  # a trial whose workers never fit would stay PENDING forever
        require_workers_fit(cfg, nodes)
    if explicit:
        return explicit
    workers = max(c.train.num_workers for c in cfgs)
    return max_concurrent_trials(nodes, workers, use_gpu)


def prepare_data(cfgs: Sequence[ExperimentConfig], verbose: bool = True) -> dict[str, str]:
    """Prepare each distinct dataset once, here in the driver (Ray Data, cached), instead of in
    every concurrent trial. Returns {data_key(cfg): prepared directory}."""
    from unigrf.training.prepared import load_data_dir

    dirs: dict[str, str] = {}
    for cfg in cfgs:
        key = data_key(cfg)
        if key not in dirs:
            dirs[key] = str(load_data_dir(cfg, verbose))
    return dirs


def make_trainable(setup: TrialSetup, cfgs: Sequence[ExperimentConfig]):
    """`run_trial` bound to `setup` and to the prepared sequences (put in Ray's object store
    once, shared by every trial), with each trial's resource request."""
    from ray import tune

    data = TrialData.load(setup.data_dirs, list(cfgs))
    return tune.with_resources(
        tune.with_parameters(run_trial, setup=setup, data=data), trial_resources(setup)
    )


def run_config_extras(cfgs: Sequence[ExperimentConfig], max_failures: int) -> dict[str, Any]:
    """`tune.RunConfig` keyword arguments shared by sweeps and fixed grids: which epoch
    checkpoints of an in-process trial Tune keeps (the best by objective; Tune always keeps the
    latest too, for resume) and how often a failed trial is retried (from its checkpoint)."""
    from ray import tune

    keep = max(c.train.keep_checkpoints for c in cfgs)
    return {
        "checkpoint_config": tune.CheckpointConfig(
            num_to_keep=keep, checkpoint_score_attribute="objective", checkpoint_score_order="max"
        ),
        "failure_config": tune.FailureConfig(max_failures=max_failures),
    }


def _train_runs_root(storage: str) -> str:
    return f"{storage.rstrip('/')}/{TRAIN_STORAGE_SUBDIR}"


def delete_train_runs(storage: str, experiment: str, names: Sequence[str] | None = None) -> None:
    """Delete the Ray Train runs `<experiment>-<name>` (all of the experiment's when `names` is
    None), so that a fresh start does not silently resume old checkpoints; only ever inside
    `<storage>/tune-train/`."""
    import pyarrow.fs

    root = _train_runs_root(storage)
    if names is not None:
        for name in names:
            remove_tree(f"{root}/{experiment}-{name}", root)
        return
    if "://" in root:
        fs, base = pyarrow.fs.FileSystem.from_uri(root)
    else:
        fs, base = pyarrow.fs.LocalFileSystem(), root
    if fs.get_file_info(base).type == pyarrow.fs.FileType.NotFound:
        return
    # `<experiment>-<trial id>` only: a sweep `a` must not take sweep `a-b`'s runs with it
    own = re.compile(rf"{re.escape(experiment)}-[0-9a-f]{{8}}(?:_\d+)?")
    for info in fs.get_file_info(pyarrow.fs.FileSelector(base)):
        if info.type == pyarrow.fs.FileType.Directory and own.fullmatch(info.base_name):
            remove_tree(f"{root}/{info.base_name}", root)


def require_private_state(experiment_path: str) -> None:
    """Refuse to restore a Tune experiment whose files another user could have written.

    `Tuner.restore` unpickles the experiment's state (`tuner.pkl`, the searcher's state, trial
    states embedded in `experiment_state-*.json`): a file planted or edited there runs code as
    whoever resumes. So every file of a local experiment must be owned by this user and not
    writable by group or others (a URI, e.g. s3://, is as trusted as write access to it)."""
    if "://" in experiment_path or not Path(experiment_path).is_dir():
        return
    me = os.geteuid()
    for folder, _, files in os.walk(experiment_path):
        for name in files:
            file = Path(folder) / name
            info = file.lstat()
            if (
                stat.S_ISLNK(info.st_mode)
                or info.st_uid != me
                or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            ):
                why = (
                    "is a symbolic link"
                    if stat.S_ISLNK(info.st_mode)
                    else f"is owned by uid {info.st_uid}, not you ({me})"
                    if info.st_uid != me
                    else f"is writable by other users (mode {stat.filemode(info.st_mode)})"
                )
                raise SweepError(
                    f"{file}: {why}; Tune's saved state is pickled and would run code as you on "
                    f"--resume: resume only state you wrote (chmod -R go-w {experiment_path} if you "
                    "trust it), or start over with --restart"
                )


# ---------------------------------------------------------------------------------------------
# run_sweep
# ---------------------------------------------------------------------------------------------


SNAPSHOT_ENV = "TUNE_GLOBAL_CHECKPOINT_S"


def snapshot_every_step() -> None:
    """Tune writes its experiment snapshot (which checkpoint each trial resumes from) after
    every controller step, not at most every 10 s (its `auto`), unless $TUNE_GLOBAL_CHECKPOINT_S
    says otherwise. Tune deletes a trial's checkpoints past the kept ones as new ones arrive; a
    driver killed with a snapshot seconds old left trials pointing at a deleted checkpoint, and
    `--resume` failed them ("does not exist on storage anymore") — with in-process trials an
    epoch takes well under 10 s. A snapshot is one small JSON write per step."""
    os.environ.setdefault(SNAPSHOT_ENV, "0")


def run_sweep(spec: SweepSpec, base: ExperimentConfig, options: SweepOptions) -> SweepResult:
    """Run (or resume) the sweep of `spec` around `base` (see the module docstring), holding
    the sweep's lock (`unigrf.run_lock`). Ctrl-C: Tune stops the trials, the outputs are
    written for those that finished, and `Interrupted` is raised."""
    name = sweep_name(spec, options)  # first: a bad name touches nothing
    results_dir = check_writable(base.results_dir)  # before Ray starts
    with hold(results_dir, "sweep", name, "sweep"):
        return _run_sweep(spec, base, options, name, results_dir)


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep's files live (all derived from a checked name)."""

    results_dir: Path
    sweep_dir: Path  # <results_dir>/tune/<name>: tables, summary, study.db, trials/
    storage: str  # Ray storage root (path or URI)
    tune_storage: str  # <storage>/tune
    experiment_path: str  # <storage>/tune/<name>: Tune's experiment state
    name: str


def sweep_paths(results_dir: Path, storage_path: str | None, name: str) -> SweepPaths:
    from unigrf.ray_utils import resolve_storage_path

    check_name(name, "--name", SweepError)
    storage = resolve_storage_path(storage_path, results_dir)
    tune_storage = f"{storage.rstrip('/')}/{TUNE_SUBDIR}"
    return SweepPaths(
        results_dir=results_dir,
        sweep_dir=(results_dir / "tune" / name).resolve(),
        storage=storage,
        tune_storage=tune_storage,
        experiment_path=f"{tune_storage}/{name}",
        name=name,
    )


def delete_sweep_files(paths: SweepPaths) -> None:
    """`--restart`: the sweep's directory, its Tune experiment and its Train runs, each only
    inside its own root (`unigrf.names.remove_tree`)."""
    remove_tree(paths.sweep_dir, paths.results_dir)
    remove_tree(paths.experiment_path, paths.tune_storage)
    delete_train_runs(paths.storage, paths.name)


def _run_sweep(
    spec: SweepSpec, base: ExperimentConfig, options: SweepOptions, name: str, results_dir: Path
) -> SweepResult:
    import ray
    from ray import tune

    from unigrf.ray_utils import init_ray, leave_no_train_cleaners
    from unigrf.sweep.search import (
        TUNE_METRIC,
        HParamsCallback,
        PlacementGroupCleanup,
        close_orphan_trials,
        make_scheduler,
        make_searcher,
        study_exists,
    )

    num_samples = options.num_samples or spec.num_samples
    paths = sweep_paths(results_dir, options.storage_path, name)
    sweep_dir, storage, experiment_path = paths.sweep_dir, paths.storage, paths.experiment_path
    summary_path = sweep_dir / "summary.json"
    if options.resume and summary_path.exists():  # the study URL chosen at the start
        study_url = str(read_summary(summary_path).get("study_storage") or default_study_url(sweep_dir))
    else:
        study_url = options.study_storage or default_study_url(sweep_dir)

    started = init_ray(options.address)
    try:
        if options.restart:
            delete_sweep_files(paths)
            if study_exists(study_url, name):
                import optuna

                optuna.delete_study(study_name=name, storage=study_url)
        exists = tune.Tuner.can_restore(experiment_path)
        if options.resume and not exists:
            raise SweepError(
                f"nothing to resume: no Tune experiment at {experiment_path} (run without --resume)"
            )
        if not options.resume and (exists or study_exists(study_url, name)):
            raise SweepError(
                f"sweep {name!r} already exists ({experiment_path}, study {name!r} in {study_url}): "
                "pass --resume to continue it, --restart to delete it and start over, or --name NEW"
            )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if options.resume:
            base = _original_base(sweep_dir, base)

        run_base = absolute_paths(base)
        max_concurrent = concurrency([run_base], options.max_concurrent or spec.max_concurrent)
        searches_data = any(k.startswith("data.") for k in spec.params)
        setup = TrialSetup(
            experiment=name,
            runs_dir=str(sweep_dir / "trials"),
            storage_path=storage,
            base=config_to_dict(run_base),
            data_dirs={} if searches_data else prepare_data([run_base]),
            max_failures=options.max_failures,
        )
        trainable = make_trainable(setup, [run_base])
        metrics = [TUNE_METRIC, *spec.multi_objective.metrics] if options.multi_objective else [TUNE_METRIC]
        snapshot_every_step()
        start = time.time()
        if options.resume:
            if options.num_samples:
                print("note: --num-samples is ignored on --resume (the sweep keeps its budget)", flush=True)
            require_private_state(experiment_path)  # Tune unpickles it
            tuner = tune.Tuner.restore(
                experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True
            )
            known = {t.trial_id for t in tune.ExperimentAnalysis(experiment_path).trials}
            requeued = close_orphan_trials(study_url, name, known, requeue=True)
            if requeued:
                print(
                    f"{requeued} Optuna trial(s) were drawn after Tune's last snapshot and never ran: "
                    "marked FAIL, their parameters queued to run now",
                    flush=True,
                )
        else:
            _write_start_files(sweep_dir, spec, base, name, study_url, options, num_samples, max_concurrent)
            tuner = tune.Tuner(
                trainable,
                param_space={},
                tune_config=tune.TuneConfig(
                    search_alg=make_searcher(
                        spec, name, study_url, options.random, options.multi_objective, num_samples
                    ),
                    scheduler=make_scheduler(spec, base.train.epochs, options.multi_objective),
                    num_samples=num_samples,
                    max_concurrent_trials=max_concurrent,
                    trial_dirname_creator=trial_dirname,
                    reuse_actors=True,  # a trial process (torch imported) serves many trials
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=paths.tune_storage,
                    **run_config_extras([run_base], options.max_failures),
                    callbacks=[
                        HParamsCallback(str(sweep_dir / "hparams"), [*metrics, "test/ndcg@10"]),
                        PlacementGroupCleanup(setup.runs_dir, use_cell_names=False),
                    ],
                    verbose=options.verbose,
                ),
            )
        print(
            f"sweep {name}: {num_samples} trials, {max_concurrent} at a time; Optuna study: "
            f"optuna-dashboard {study_url}",
            flush=True,
        )
        with tune_interrupts() as stop:
            grid = tuner.fit()
        if not stop.interrupted:  # an interrupted sweep's RUNNING trials resume with it
            orphans = close_orphan_trials(study_url, name)  # none expected: every Tune trial ended
            if orphans:
                print(f"marked {orphans} Optuna trial(s) without a finished Tune trial FAIL", flush=True)
        result = _write_outputs(spec, base, name, sweep_dir, study_url, options, grid, time.time() - start)
        if stop.interrupted:
            done = int((result.table["status"] == COMPLETED).sum()) if not result.table.empty else 0
            raise Interrupted(
                f"{done} trial(s) finished, their table written to {sweep_dir}; the same command "
                "with --resume continues the sweep"
            )
        return result
    finally:
        leave_no_train_cleaners()  # also those of a killed earlier driver of this sweep
        if started:
            ray.shutdown()


def read_summary(path: Path) -> dict[str, Any]:
    """A sweep's summary.json; unreadable, a SweepError naming it."""
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError(f"expected a JSON object, got {type(summary).__name__}")
        return summary
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise SweepError(
            f"{path}: cannot read the sweep's summary ({reason}); start the sweep over with --restart"
        ) from None


def _original_base(sweep_dir: Path, base: ExperimentConfig) -> ExperimentConfig:
    """On resume, the base config the sweep started with (its trials must stay comparable)."""
    from unigrf.config import load_config

    stored = sweep_dir / "base_config.yaml"
    if not stored.exists():
        return base
    original = load_config(stored)
    if config_hash(original) != config_hash(base):
        print(f"note: resuming with the sweep's original base config ({stored}), not today's", flush=True)
    return original


def _write_start_files(
    sweep_dir: Path,
    spec: SweepSpec,
    base: ExperimentConfig,
    name: str,
    study_url: str,
    options: SweepOptions,
    num_samples: int,
    max_concurrent: int,
) -> None:
    write_text_atomic(sweep_dir / "space.yaml", dump_spec(spec))
    write_text_atomic(sweep_dir / "base_config.yaml", config_to_yaml(base))
    summary = {
        "name": name,
        "space_file": str(spec.path),
        "study_storage": study_url,
        "sampler": "random"
        if options.random
        else (spec.multi_objective.sampler if options.multi_objective else spec.sampler.kind),
        "seed": spec.sampler.seed,
        "multi_objective": options.multi_objective,
        "num_samples": num_samples,
        "max_concurrent": max_concurrent,
        "epochs": base.train.epochs,
        "objective": resolved_objective(base),
        "base_config": str(sweep_dir / "base_config.yaml"),  # every trial's config = it + params
        "train_seed": base.train.seed,
        "git_commit": git_commit(),
        "versions": package_versions(),
    }
    write_text_atomic(sweep_dir / "summary.json", json.dumps(summary, indent=2))


def _results_table(grid, param_keys: Sequence[str]) -> pd.DataFrame:
    rows = []
    for result in grid:
        params = {k: clean_value(result.config.get(k)) for k in param_keys}
        rows.append(
            trial_row(
                Path(result.path).name,
                params,
                result.metrics or {},
                result.metrics_dataframe,
                result.error is not None,
            )
        )
    return trials_table(rows)


def _write_outputs(
    spec: SweepSpec,
    base: ExperimentConfig,
    name: str,
    sweep_dir: Path,
    study_url: str,
    options: SweepOptions,
    grid,
    elapsed_s: float,
) -> SweepResult:
    keys = list(spec.params)
    table = _results_table(grid, keys)
    extra = list(spec.multi_objective.metrics) if options.multi_objective else []
    columns = summary_columns(table, keys, extra)
    write_table(
        table, sweep_dir, "trials", columns, f"Sweep {name}: every trial, best validation objective first"
    )
    print(markdown_table(table, columns), flush=True)

    summary = read_summary(sweep_dir / "summary.json")
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    summary.update({"trials": len(table), "status_counts": counts, "last_run_s": round(elapsed_s, 1)})
    best_row = None
    ok = table[table["status"] != ERROR].dropna(subset=["objective"]) if not table.empty else table
    if not ok.empty:
        best_row = ok.iloc[0].to_dict()
        best_cfg = trial_config(base, {k: best_row[k] for k in keys}, f"{name}-best")
        header = (
            f"# Best trial {best_row['trial_id']} of sweep {name} (validation objective "
            f"{resolved_objective(base)} = {best_row['objective']:.4f}).\n"
            f"# Re-run: unigrf train {sweep_dir / 'best_config.yaml'}\n"
        )
        write_text_atomic(sweep_dir / "best_config.yaml", header + config_to_yaml(best_cfg))
        summary.update({"best_trial": best_row["trial_id"], "best_objective": best_row["objective"]})
        summary["best_params"] = {k: best_row[k] for k in keys}
        print(
            f"best trial {best_row['trial_id']}: objective {best_row['objective']:.4f} -> {sweep_dir / 'best_config.yaml'}"
        )

    pareto = None
    if options.multi_objective:
        pareto = pareto_front(table, spec.multi_objective.metrics, spec.multi_objective.modes)
        write_table(
            pareto, sweep_dir, "pareto", columns, f"Sweep {name}: Pareto front of {' vs '.join(extra)}"
        )
        for _, row in pareto.iterrows():
            cfg = trial_config(base, {k: row[k] for k in keys}, f"{name}-{row['trial_id']}")
            write_text_atomic(sweep_dir / "pareto" / f"{row['trial_id']}.yaml", config_to_yaml(cfg))
        summary["pareto_trials"] = list(pareto["trial_id"])
        print(
            f"Pareto front ({' vs '.join(extra)}): {len(pareto)} trial(s)\n" + markdown_table(pareto, columns)
        )
    write_text_atomic(sweep_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    print(
        f"results: {sweep_dir}\nOptuna dashboard: optuna-dashboard {study_url}\nTensorBoard: tensorboard --logdir {sweep_dir}"
    )
    return SweepResult(name, sweep_dir, table, study_url, best_row, pareto)


def pareto_front(table: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str]) -> pd.DataFrame:
    """The completed trials no other completed trial dominates on `metrics` (the best-epoch
    validation values), sorted by the first metric."""
    done = table[table["status"] == COMPLETED]
    if done.empty or any(m not in done for m in metrics):
        return done.iloc[0:0]
    mask = pareto_mask(done[list(metrics)].to_numpy(dtype=float), modes)
    front = done[mask]
    return front.sort_values(metrics[0], ascending=modes[0] == "min").reset_index(drop=True)
