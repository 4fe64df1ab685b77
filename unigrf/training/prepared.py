"""Where a run's inputs and outputs live: its prepared dataset and its run directory.

Shared by the local runner (`unigrf.training.run`), the Ray Train driver
(`unigrf.training.distributed`) and the sweep layer, so none of them imports another for it.
"""

from __future__ import annotations

from pathlib import Path

from unigrf.config import ExperimentConfig
from unigrf.data.sequences import SequenceData


def run_dir_for(cfg: ExperimentConfig) -> Path:
    """`<results_dir>/runs/<name>/`, absolute (Ray workers do not share the driver's cwd)."""
    return (Path(cfg.results_dir) / "runs" / cfg.name).resolve()


def load_data_dir(cfg: ExperimentConfig, verbose: bool = True) -> Path:
    """The prepared dataset directory of `cfg.data` (Ray Data; cached after the first call)."""
    from unigrf.data.prepare import prepare_dataset

    return Path(prepare_dataset(cfg.data, cfg.results_dir, verbose=verbose)).resolve()


def load_data(cfg: ExperimentConfig) -> SequenceData:
    """Prepared (cached) sequences for `cfg.data`, with `data.max_len` (null: the value the
    preparation derived from the data, meta.json)."""
    return SequenceData.load(load_data_dir(cfg), max_len=cfg.data.max_len)
