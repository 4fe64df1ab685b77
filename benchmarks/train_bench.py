"""Training benchmarks behind benchmarks/RESULTS.md "Training on ML-100K" and "Ray Train".

Sub-commands (run from the repository root; each prints Markdown and writes JSON to --out):

  table     the results table of finished runs (their metrics.json) beside the popularity
            baseline on the same data:
              python benchmarks/train_bench.py table --config configs/ml-100k.yaml \
                  --runs results/runs/ml-100k-hstu results/runs/ml-100k-llama ...
  overhead  Ray Train overhead: the same config trained by the plain loop in this process (one
            run per --seeds: the noise level) and by Ray Train with 1 and 2 workers (same global
            batch); wall time including start-up, s/epoch, test metrics:
              python benchmarks/train_bench.py overhead --config configs/ml-100k.yaml \
                  --seeds 0 1 2 --workers 1 2 train.epochs=10 train.patience=100
  sharding  the per-worker data path: each of 2 Ray Train workers builds all its training
            batches of an epoch from (a) the prepared Parquet loaded once + `epoch_users`
            (a seeded permutation, sharded by rank), cut by `epoch_batches` as `fit` does, or
            (b) a Ray Data dataset passed to the trainer and read with
            `ray.train.get_dataset_shard` (`iter_batches` with a local shuffle), then
            `SequenceData.train_batch` (no model: the data path only):
              python benchmarks/train_bench.py sharding --config configs/ml-100k.yaml --epochs 5

The plain loop runs with one torch thread, as each 1-CPU Ray Train worker does, so the
comparison isolates Ray Train's own cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from unigrf.ablation.aggregate import applicable
from unigrf.config import ExperimentConfig, apply_overrides, load_config
from unigrf.data.sequences import SequenceData
from unigrf.evaluation import popularity_baseline
from unigrf.training.distributed import train_distributed
from unigrf.training.prepared import load_data, load_data_dir
from unigrf.training.run import run_training

TABLE_METRICS = ("hr@10", "ndcg@10", "hr@50", "auc", "cascade_ndcg@10")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------


def results_table(cfg: ExperimentConfig, run_dirs: list[Path]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table (val / test for each metric) of finished runs + the popularity baseline."""
    data = load_data(cfg)
    rows: list[dict[str, Any]] = []
    pop = {s: popularity_baseline(data, s, cfg.eval) for s in ("val", "test")}
    rows.append(
        {"system": "popularity (train counts, history masked)", "cascade": "—", "epochs": "—"}
        | {f"{s}/{m}": pop[s].get(m) for s in ("val", "test") for m in TABLE_METRICS}
    )
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        run_cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        row = {
            "system": f"{run_cfg['model']['backbone']} {run_cfg['train']['variant']} ({run_dir.name})",
            "epochs": f"{metrics['epochs_run']} (best {metrics['best_epoch']})",
            "s/epoch": metrics["time"]["epoch_s"],
            "total s": metrics["time"]["total_s"],
        }
        # an untrained head's numbers (a retrieval-only model's AUC, ...) are not results: "—"
        variant = run_cfg["train"]["variant"]
        measured = {**metrics["val"], **metrics["test"]}
        row |= {k: v for k, v in measured.items() if applicable(variant, k)}
        rows.append(row)
    header = [
        "system",
        *(f"{s}/{m}" for m in TABLE_METRICS for s in ("val", "test")),
        "epochs",
        "s/epoch",
        "total s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = []
        for h in header:
            v = row.get(h)
            cells.append(_fmt(v, 1) if h in ("s/epoch", "total s") else _fmt(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), rows


# ---------------------------------------------------------------------------------------------
# overhead
# ---------------------------------------------------------------------------------------------


def overhead(cfg: ExperimentConfig, workers: list[int], seeds: list[int]) -> list[dict[str, Any]]:
    """Plain loop (one run per seed: the seed-to-seed spread is the noise level) vs Ray Train
    with each worker count (seed `cfg.train.seed`); returns one row per run.

    With N workers each takes `train.batch_size / N` users per step, so every run makes the same
    optimizer steps on the same global batch size and the test metrics are comparable.
    """
    torch.set_num_threads(1)
    load_data_dir(cfg)  # prepare (cached) outside the timings
    runs: list[tuple[str, int, dict[str, Any]]] = [
        (f"plain loop, seed {s}", 0, {"train.seed": s}) for s in seeds
    ]
    for n in workers:
        if cfg.train.batch_size % n:
            raise ValueError(f"train.batch_size {cfg.train.batch_size} is not divisible by {n} workers")
        batch = {"train.batch_size": cfg.train.batch_size // n, "train.num_workers": n}
        runs.append((f"Ray Train, {n} worker(s) x batch {cfg.train.batch_size // n}", n, batch))
    out = []
    for label, n, changes in runs:
        run_cfg = apply_overrides(cfg, {**changes, "name": f"{cfg.name}-overhead-{len(out)}"})
        start = time.perf_counter()
        if n == 0:
            result = run_training(run_cfg, restart=True, verbose=False)
        else:  # directly: run_training would pick the plain loop for 1 worker without --address
            result = train_distributed(run_cfg, verbose=False, restart=True)
        wall = time.perf_counter() - start
        epochs = [h["time/epoch_s"] for h in result["history"]]
        train_s = [h["time/train_s"] for h in result["history"]]
        out.append(
            {
                "run": label,
                "seed": run_cfg.train.seed,
                "wall_s": wall,
                "epochs": len(epochs),
                "epoch_s_median": statistics.median(epochs),
                "train_s_median": statistics.median(train_s),
                "outside_epochs_s": wall - sum(epochs),
                **{k: result["test"][k] for k in ("test/hr@10", "test/ndcg@10", "test/hr@50", "test/auc")},
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# sharding
# ---------------------------------------------------------------------------------------------


def _sharding_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker: time `epochs` epochs of batch building with both data paths."""
    import ray.train

    from unigrf.training.loop import epoch_batches, epoch_users

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    t0 = time.perf_counter()
    data = SequenceData.load(config["data_dir"], max_len=config["max_len"])
    load_s = time.perf_counter() - t0
    bs, seed = config["batch_size"], config["seed"]
    numpy_s, raydata_s, n_users = [], [], [0, 0]
    for epoch in range(config["epochs"]):
        t = time.perf_counter()
        users = epoch_users(data.num_users, seed, epoch, rank, world)
        for batch_users in epoch_batches(users, data.train_lengths, bs, seed, epoch, rank):
            batch = data.train_batch(batch_users)
            n_users[0] += len(batch["users"])
        numpy_s.append(time.perf_counter() - t)

        t = time.perf_counter()
        shard = ray.train.get_dataset_shard("train")
        for rows in shard.iter_batches(
            batch_size=bs,
            batch_format="numpy",
            local_shuffle_buffer_size=4 * bs,
            local_shuffle_seed=seed + epoch,
        ):
            batch = data.train_batch(rows["user"])
            n_users[1] += len(batch["users"])
        raydata_s.append(time.perf_counter() - t)
    timings = {
        "rank": rank,
        "load_s": load_s,
        "numpy_epoch_s": statistics.median(numpy_s),
        "raydata_epoch_s": statistics.median(raydata_s),
        "raydata_first_epoch_s": raydata_s[0],
        "users_numpy": n_users[0],
        "users_raydata": n_users[1],
    }
    ray.train.report(timings)  # logged by every rank
    return timings  # rank 0's becomes Result.return_value


def sharding(cfg: ExperimentConfig, epochs: int) -> dict[str, Any]:
    import ray
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from unigrf.ray_utils import init_ray

    data_dir = load_data_dir(cfg)
    # Ray Data's read tasks need CPUs beside the 2 workers' (a 2-CPU node would deadlock)
    started = init_ray(num_cpus=4)
    try:
        ds = ray.data.read_parquet(str(data_dir / "sequences.parquet")).select_columns(["user"])
        trainer = TorchTrainer(
            _sharding_worker,
            train_loop_config={
                "data_dir": str(data_dir),
                "max_len": cfg.data.max_len,  # None: the value prepare derived (meta.json)
                "batch_size": cfg.train.batch_size,
                "seed": cfg.train.seed,
                "epochs": epochs,
            },
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(
                name="sharding-bench", storage_path=str(Path(cfg.results_dir, "ray").resolve())
            ),
            datasets={"train": ds},
        )
        result = trainer.fit()
    finally:
        if started:
            ray.shutdown()
    return {"epochs": epochs, "batch_size": cfg.train.batch_size, **result.return_value}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["table", "overhead", "sharding"])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--config", default="configs/ml-100k.yaml")
    parser.add_argument("--runs", nargs="*", default=[], help="run directories (table)")
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[1, 2], help="Ray Train worker counts (overhead)"
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="plain-loop seeds (overhead)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of batch building (sharding)")
    parser.add_argument("--out", default=None, help="JSON output file")
    args = parser.parse_intermixed_args()
    cfg = load_config(args.config, args.overrides)

    if args.command == "table":
        table, rows = results_table(cfg, [Path(r) for r in args.runs])
        print(table)
        payload: Any = rows
    elif args.command == "overhead":
        payload = overhead(cfg, args.workers, args.seeds)
    else:
        payload = sharding(cfg, args.epochs)
        print(json.dumps(payload, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
