"""What every benchmark shares: the data as the library prepares it, the library's own training
step, a clock that waits for the device, and one JSON format for results.

- `load_dataset("ml-100k", max_len)`: `unigrf.training.prepared.load_data` on
  ../shared/data/<name> (prepared once into `BENCH_CACHE`, then read from the cache): the same
  sequences, item ids and sort as `unigrf train` sees, not a loader of the benchmark's own.
- `Stepper(cfg, data, device)`: `unigrf.training.step.build_trainer` and, per call,
  `unigrf.training.step.train_step` — the model, AdamW (the recipe's weight decay and betas),
  weighter, enhancer and clipping `fit` uses; `mine` as `fit` decides it after the enhancer's
  warm-up. A benchmark that times a step times this one; none has a copy.
- `sync(device)`: wait for queued device work before reading a clock.
- `Table` / `write_json`: a result table as {"name", "title", "command", "machine", "columns",
  "rows"} — what `python -m benchmarks` writes under `--out` and what `benchmarks/tables.py`
  renders into benchmarks/RESULTS.md between `<!-- table: NAME -->` markers.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import render  # noqa: E402

from unigrf.config import ExperimentConfig, load_config, resolve_model_size
from unigrf.data.sequences import SequenceData
from unigrf.kernels import keep_freed_memory
from unigrf.training.batches import epoch_batches, epoch_users, to_device
from unigrf.training.prepared import load_data
from unigrf.training.step import Trainer, build_trainer, train_step

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BENCH_CACHE = Path(os.environ.get("UNIGRF_BENCH_CACHE", REPO / "results" / "bench"))
DATASETS = {"ml-100k": "ml-100k", "amazon-mi": "amazon-reviews"}  # name -> data.dataset
DATA_DIRS = {"ml-100k": "ml-100k", "amazon-mi": "amazon_musical_instruments_5core"}


def dataset_overrides(name: str, data_root: Path | None = None, max_len: int | None = None) -> list[str]:
    """The dotted overrides that point a config at ../shared/data's copy of dataset `name`."""
    if name not in DATASETS:
        raise ValueError(f"unknown benchmark dataset {name!r} (choices: {', '.join(DATASETS)})")
    root = Path(data_root) if data_root else SHARED_DATA
    out = [f"data.dataset={DATASETS[name]}", f"data.data_dir={(root / DATA_DIRS[name]).resolve()}"]
    return out + ([f"data.max_len={max_len}"] if max_len else [])


def load_dataset(
    name: str = "ml-100k", max_len: int | None = 200, data_root: Path | None = None
) -> SequenceData:
    """Dataset `name` as `unigrf train` prepares it (cached under BENCH_CACHE), `max_len` items
    per training window (None: the value the preparation derives)."""
    from unigrf.console import set_verbose

    set_verbose(False)  # a benchmark prints its tables, not Ray's start-up lines (as `unigrf` does)
    cfg = load_config(None, [*dataset_overrides(name, data_root, max_len), f"results_dir={BENCH_CACHE}"])
    return load_data(cfg)


def bench_config(data: SequenceData, overrides: list[str]) -> ExperimentConfig:
    """The config defaults (the recipe) with `overrides`, `data.max_len` as `data` has it and
    `model.size: auto` resolved for `data`, as `fit` resolves it."""
    cfg = load_config(None, [*overrides, f"data.max_len={data.max_len}"])
    return resolve_model_size(cfg, data.num_train_interactions) if cfg.model.size == "auto" else cfg


class Stepper:
    """`cfg`'s trainer on `device`, stepped by the library's `train_step`.

    `compile`: the loss module (`trainer.forward`) through `torch.compile(dynamic=True)`; the
    enhancer's mining stays eager. `mine`: None mines as `fit` does at epoch `epoch` (after
    `enhancer.warmup_epochs`), True / False forces it."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: SequenceData,
        device: torch.device | str = "cpu",
        compile: bool = False,
        epoch: int = 0,
        mine: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        keep_freed_memory(self.device)  # as `fit` does
        self.cfg, self.data = cfg, data
        self.trainer: Trainer = build_trainer(cfg, data, self.device)
        self.trainer.forward.train()
        if compile:
            self.trainer.forward = torch.compile(self.trainer.forward, dynamic=True)
        self.forced = mine
        self.mine = self.trainer.enhancer.active(epoch) if mine is None else mine

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One `train_step` on `batch` (a `SequenceData.train_batch`) at `train.lr`."""
        return train_step(self.trainer, to_device(batch, self.device), self.cfg.train.lr, self.mine)

    def epoch(self, epoch: int, seed: int = 0) -> None:
        """One epoch of steps over every user once, cut by `epoch_batches` as `fit` cuts them."""
        if self.forced is None:
            self.mine = self.trainer.enhancer.active(epoch)
        users = epoch_users(self.data.num_users, seed, epoch, 0, 1)
        for batch_users in epoch_batches(
            users, self.data.train_lengths, self.cfg.train.batch_size, seed, epoch, 0
        ):
            self(self.data.train_batch(batch_users))


def first_epoch_batches(data: SequenceData, batch_size: int) -> list[np.ndarray]:
    """Epoch 0's batches of users (seed 0, one rank), as the training loop cuts them."""
    return epoch_batches(epoch_users(data.num_users, 0, 0, 0, 1), data.train_lengths, batch_size, 0, 0, 0)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device | str = "cpu", threads: int | None = None) -> str:
    """One line on where a benchmark ran."""
    device = torch.device(device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}, "
        f"{torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}{gpu}, device {device}, "
        f"{threads or torch.get_num_threads()} thread(s)"
    )


@dataclass
class Table:
    """One result table: what RESULTS.md shows, as data."""

    name: str  # the file stem and the RESULTS.md marker
    title: str
    columns: list[str]
    rows: list[list[Any]]
    command: str = field(default_factory=lambda: "python " + " ".join(sys.argv))
    machine: str = ""
    notes: str = ""
    align: list[str] | None = None  # per column "", "l", "r" or "c" (Markdown alignment)

    def markdown(self) -> str:
        return render(asdict(self)).rstrip("\n")


def write_json(table: Table, out_dir: Path) -> Path:
    """`table` as `<out_dir>/<name>.json` (written to a temporary name, then renamed)."""
    from unigrf.atomic import write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{table.name}.json"
    write_text_atomic(path, json.dumps(asdict(table), indent=1, ensure_ascii=False) + "\n")
    return path


def read_json(path: Path) -> Table:
    return Table(**json.loads(Path(path).read_text()))


def table_main(description: str, add_arguments, run, argv: list[str] | None = None) -> None:
    """A one-table benchmark's command line: parse with `add_arguments`, `run(args) -> Table`,
    print it, and with `--out DIR` write DIR/<name>.json (`write_json`)."""
    import argparse

    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    table = run(args)
    print(f"{table.title}\n\n{table.markdown()}")
    if args.out is not None:
        print(f"(written: {write_json(table, args.out)})")
