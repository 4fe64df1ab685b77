"""`unigrf train`: prepare the data, then run the training loop locally or on Ray Train.

Around the training itself (docs/reliability.md): the run's lock is held for the whole command
(`unigrf.run_lock`: a second command on the same run exits naming the holder); `--restart`
deletes only what lies inside the results directory (`unigrf.names.remove_tree`); a resume
under a changed config is refused (`unigrf.run_identity`); the run's files are written
atomically (`unigrf.atomic`: a full or read-only disk is one line naming the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unigrf.atomic import make_dirs, write_text_atomic
from unigrf.config import ExperimentConfig, config_to_yaml
from unigrf.names import confine, remove_tree
from unigrf.provenance import git_commit, package_versions
from unigrf.results_dir import check_writable
from unigrf.run_identity import check_resume, record
from unigrf.run_lock import hold
from unigrf.training.in_epoch import progress_file
from unigrf.training.prepared import load_data, load_data_dir, run_dir_for

PROVENANCE_HINT = "free space or fix the permissions, then run the same command again"


def uses_ray(cfg: ExperimentConfig, address: str | None) -> bool:
    """Ray Train for several workers, GPUs or an explicit cluster; else the plain loop."""
    return cfg.train.num_workers > 1 or cfg.train.use_gpu or address is not None


def has_progress(run_dir: Path, cfg: ExperimentConfig, storage_path: str | None) -> bool:
    """Whether the run has trained before: a local checkpoint (an epoch's, or one inside an
    epoch), a result, or (Ray Train) a run in its Ray storage. Only then does a config change
    matter (see `unigrf.run_identity`)."""
    if any((run_dir / "checkpoints").glob("epoch_*")) or progress_file(run_dir).exists():
        return True
    if (run_dir / "metrics.json").exists():
        return True
    from unigrf.ray_utils import resolve_storage_path
    from unigrf.training.distributed import storage_holds_run

    return storage_holds_run(resolve_storage_path(storage_path, cfg.results_dir), cfg.name)


def run_training(
    cfg: ExperimentConfig,
    *,
    restart: bool = False,
    address: str | None = None,
    storage_path: str | None = None,
    max_failures: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train `cfg` and return its result (best epoch, val and test metrics, history).

    One worker and no Ray address: the plain loop in this process. Otherwise Ray Train
    (`cfg.train.num_workers` workers, GPUs with `cfg.train.use_gpu`). A run that holds
    checkpoints is resumed unless `restart` (which deletes the run directory and, under Ray,
    the run's Ray storage); resuming under a config that differs from the run's
    (`unigrf.run_identity.SAFE_TO_CHANGE` aside) raises `RunConfigChanged`, and a run another
    process holds raises `RunInUseError`.
    """
    results_dir = check_writable(cfg.results_dir)  # before Ray starts or the data is prepared
    run_dir = run_dir_for(cfg)
    confine(run_dir, results_dir, "write to")  # the name is checked already: a second guard
    with hold(results_dir, "run", cfg.name, "run"):
        if restart:
            remove_tree(run_dir, results_dir)
            # Ray storage: removed by train_distributed (it needs Ray's storage path resolved)
        else:
            check_resume(run_dir, cfg, has_progress(run_dir, cfg, storage_path))
        hint = PROVENANCE_HINT
        make_dirs(run_dir, hint)
        record(run_dir, cfg)
        write_text_atomic(run_dir / "config.yaml", config_to_yaml(cfg), hint=hint)
        provenance = {"seed": cfg.train.seed, "git_commit": git_commit(), "versions": package_versions()}
        write_text_atomic(run_dir / "provenance.json", json.dumps(provenance, indent=2) + "\n", hint=hint)
        result = _train(cfg, run_dir, provenance, restart, address, storage_path, max_failures, verbose)
        if "data" not in provenance:  # Ray Train prepared it in the driver: the cache is known now
            _record_data(run_dir, cfg, provenance)
    if verbose:
        summary = {
            "best_epoch": result["best_epoch"],
            "selection": result["selection"],
            "cascade_lambda": result["cascade_lambda"],
            **result["val"],
            **result["test"],
        }
        print(json.dumps(summary, indent=2))
        print(f"run directory: {run_dir}")
    return result


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    provenance: dict[str, Any],
    restart: bool,
    address: str | None,
    storage_path: str | None,
    max_failures: int,
    verbose: bool,
) -> dict[str, Any]:
    if uses_ray(cfg, address):
        from unigrf.training.distributed import train_distributed

        return train_distributed(
            cfg,
            address=address,
            storage_path=storage_path,
            verbose=verbose,
            restart=restart,
            max_failures=max_failures,
        )
    from unigrf.training.context import TrainContext, resolve_device
    from unigrf.training.loop import fit

    data = load_data(cfg)
    _record_data(run_dir, cfg, provenance, data)
    ctx = TrainContext(
        run_dir=run_dir,
        device=resolve_device(cfg.train.device),
        keep_checkpoints=cfg.train.keep_checkpoints,
        verbose=verbose,
    )
    return fit(cfg, data, ctx)


def _record_data(run_dir: Path, cfg: ExperimentConfig, provenance: dict[str, Any], data: Any = None) -> None:
    """Add to the run's provenance.json the values of its data-derived defaults
    (`like_threshold`, `max_len`: config.yaml may hold null for them) and the windows it trained
    on: from the loaded sequences `data`, or (Ray Train, which loads them in its workers) from
    the prepared dataset's meta.json, with where they came from."""
    if data is not None:
        info = {"like_threshold": data.like_threshold, "max_len": data.max_len}
    else:
        from unigrf.data.prepare import load_meta

        prepared = load_data_dir(cfg, verbose=False)  # prepared by the Ray Train driver by now
        meta = load_meta(prepared)
        info = {
            "prepared_dir": str(prepared),
            "like_threshold": meta["like_threshold"],
            "max_len": meta["max_len"],
            "defaults": meta.get("defaults", {}),
        }
    provenance["data"] = {**info, "train_windows": cfg.data.train_windows}
    write_text_atomic(
        run_dir / "provenance.json", json.dumps(provenance, indent=2) + "\n", hint=PROVENANCE_HINT
    )
