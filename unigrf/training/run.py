"""`unigrf train`: prepare the data, then run the training loop locally or on Ray Train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from unigrf.config import ExperimentConfig, config_to_yaml
from unigrf.data.sequences import SequenceData


def run_dir_for(cfg: ExperimentConfig) -> Path:
    return Path(cfg.results_dir) / "runs" / cfg.name


def load_data(cfg: ExperimentConfig) -> SequenceData:
    """Prepared (cached) sequences for `cfg.data`, with the configured max_len."""
    from unigrf.data.prepare import prepare_dataset  # Ray Data; cached after the first run

    prepared = prepare_dataset(cfg.data, cfg.results_dir)
    return SequenceData.load(prepared, max_len=cfg.data.resolved_max_len())


def run_training(
    cfg: ExperimentConfig,
    *,
    restart: bool = False,
    address: str | None = None,
    storage_path: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train `cfg` and return its result (best epoch, val and test metrics).

    One worker and no Ray address: the plain loop in this process. Otherwise Ray Train
    (`cfg.train.num_workers` workers, GPUs with `cfg.train.use_gpu`). A run directory that holds
    checkpoints is resumed unless `restart`.
    """
    run_dir = run_dir_for(cfg)
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))

    if cfg.train.num_workers > 1 or cfg.train.use_gpu or address is not None:
        from unigrf.training.distributed import train_distributed

        return train_distributed(cfg, address=address, storage_path=storage_path, verbose=verbose)

    from unigrf.training.loop import TrainContext, fit, resolve_device

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_data(cfg)
    ctx = TrainContext(
        run_dir=run_dir,
        device=resolve_device(cfg.train.device),
        keep_checkpoints=cfg.train.keep_checkpoints,
        verbose=verbose,
    )
    result = fit(cfg, data, ctx)
    if verbose:
        print(json.dumps({"best_epoch": result["best_epoch"], **result["val"], **result["test"]}, indent=2))
    return result
