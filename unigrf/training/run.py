"""`unigrf train`: prepare the data, then run the training loop locally or on Ray Train."""

from __future__ import annotations

import json
import shutil
from typing import Any

from unigrf.config import ExperimentConfig, config_to_yaml
from unigrf.provenance import git_commit, package_versions
from unigrf.results_dir import check_writable
from unigrf.training.prepared import load_data, load_data_dir, run_dir_for


def uses_ray(cfg: ExperimentConfig, address: str | None) -> bool:
    """Ray Train for several workers, GPUs or an explicit cluster; else the plain loop."""
    return cfg.train.num_workers > 1 or cfg.train.use_gpu or address is not None


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
    the run's Ray storage).
    """
    check_writable(cfg.results_dir)  # before Ray starts or the data is prepared
    run_dir = run_dir_for(cfg)
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    provenance = {"seed": cfg.train.seed, "git_commit": git_commit(), "versions": package_versions()}
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")

    if uses_ray(cfg, address):
        from unigrf.training.distributed import train_distributed

        result = train_distributed(
            cfg,
            address=address,
            storage_path=storage_path,
            verbose=verbose,
            restart=restart,
            max_failures=max_failures,
        )
    else:
        from unigrf.training.loop import TrainContext, fit, resolve_device

        data = load_data(cfg)
        _record_data(run_dir, cfg, provenance)
        ctx = TrainContext(
            run_dir=run_dir,
            device=resolve_device(cfg.train.device),
            keep_checkpoints=cfg.train.keep_checkpoints,
            verbose=verbose,
        )
        result = fit(cfg, data, ctx)
    if "data" not in provenance:  # Ray Train prepared it in the driver: the cache is known now
        _record_data(run_dir, cfg, provenance)
    if verbose:
        summary = {"best_epoch": result["best_epoch"], **result["val"], **result["test"]}
        print(json.dumps(summary, indent=2))
        print(f"run directory: {run_dir}")
    return result


def _record_data(run_dir, cfg: ExperimentConfig, provenance: dict[str, Any]) -> None:
    """Add to the run's provenance.json the prepared dataset it trained on and the values of
    its data-derived defaults (`like_threshold`, `max_len`: config.yaml may hold null for them)."""
    from unigrf.data.prepare import load_meta

    prepared = load_data_dir(cfg, verbose=False)  # the cache entry, prepared by now
    meta = load_meta(prepared)
    provenance["data"] = {
        "prepared_dir": str(prepared),
        "like_threshold": meta["like_threshold"],
        "max_len": meta["max_len"],
        "defaults": meta.get("defaults", {}),
        "train_windows": cfg.data.train_windows,
    }
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
