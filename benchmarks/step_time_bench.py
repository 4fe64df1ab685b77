"""Training step time of the UniGRF model: enhancer off/on, weighter fixed/loss_ratio, per backbone.

One step = (enhancer mining, when on) + forward + losses + weighter + backward + clip + Adam,
on a batch shaped like ML-100K: 128 users drawn from u.data (stable time sort, ties in file
order, items remapped to 1..N), training windows of at most max_len = 200 items (400 tokens).
Prints a Markdown table: median ms/step over `--steps` timed steps after `--warmup`, as
process CPU time (robust to other processes on a shared machine; with --threads 1 it is the
step's compute time) and as wall clock; the enhancer-off and -on models step alternately.

    nice -n 10 .venv/bin/python benchmarks/step_time_bench.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unigrf.config import EnhancerConfig, ModelConfig, WeighterConfig
from unigrf.data.sequences import SequenceData
from unigrf.model import RankingDrivenEnhancer, UniGRF, build_weighter

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"


def load_ml100k(path: Path, max_len: int) -> SequenceData:
    df = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "timestamp"])
    df = df.sort_values(["user", "timestamp"], kind="stable")  # ties keep file order
    df["item"] = pd.factorize(df["item"], sort=True)[0] + 1
    groups = df.groupby("user", sort=True)
    return SequenceData.from_arrays(
        [g["item"].to_numpy() for _, g in groups],
        [g["rating"].to_numpy(dtype=float) for _, g in groups],
        [g["timestamp"].to_numpy() for _, g in groups],
        num_items=int(df["item"].max()),
        max_len=max_len,
        name="ml-100k",
    )


class Trainer:
    """One model + optimizer + weighter; `step()` runs one full training step."""

    def __init__(self, model: UniGRF, enhancer: RankingDrivenEnhancer | None, weighter_kind: str) -> None:
        self.model, self.enhancer = model.train(), enhancer
        self.weighter = build_weighter(weighter_kind, WeighterConfig(interval=2), ["retrieval", "ranking"])
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """-> ms of the step and of its mining part, wall clock and process CPU time."""
        w0, c0 = time.perf_counter(), time.process_time()
        hard = self.enhancer.mine(self.model, batch) if self.enhancer is not None else None
        w1, c1 = time.perf_counter(), time.process_time()
        losses = self.model.losses(batch, hard)
        total = self.weighter.combine(losses, self.model.shared_parameters())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        w2, c2 = time.perf_counter(), time.process_time()
        return {
            "wall": 1000 * (w2 - w0),
            "cpu": 1000 * (c2 - c0),
            "mine_wall": 1000 * (w1 - w0),
            "mine_cpu": 1000 * (c1 - c0),
        }


def compare(trainers: list[Trainer], batch: dict[str, torch.Tensor], warmup: int, steps: int) -> list[dict]:
    """Median timings per trainer. Steps alternate between the trainers so that load from
    other processes on a shared machine hits every configuration alike."""
    logs: list[list[dict[str, float]]] = [[] for _ in trainers]
    for i in range(warmup + steps):
        for trainer, log in zip(trainers, logs):
            result = trainer.step(batch)
            if i >= warmup:
                log.append(result)
    return [{key: statistics.median(r[key] for r in log) for key in log[0]} for log in logs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backbones", nargs="+", default=["hstu", "llama", "sasrec"])
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--m", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--users",
        choices=["random", "longest"],
        default="random",
        help="random: a random batch (ML-100K's skewed lengths); longest: the users with the most "
        "interactions (every window near max_len: no padding to save)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = load_ml100k(args.data, args.max_len)
    if args.users == "random":
        users = np.random.default_rng(args.seed).choice(data.num_users, args.batch_size, replace=False)
    else:
        users = np.argsort(-data.lengths, kind="stable")[: args.batch_size]
    batch = data.train_batch(users)
    tokens = 2 * batch["items"].shape[1]
    print(
        f"ml-100k batch ({args.users} users): {args.batch_size} users, {tokens} tokens/row, "
        f"{int(batch['lengths'].sum())} interactions; size={args.size}; threads={args.threads}; "
        f"torch {torch.__version__}"
    )
    print(
        "| backbone | weighter | off: CPU ms/step | on: CPU ms/step | mining CPU ms | extra (CPU) "
        "| mining / off step | off: wall ms | on: wall ms | extra (wall) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    enh_cfg = EnhancerConfig(m=args.m, top_k=args.top_k)
    for backbone in args.backbones:
        cfg = ModelConfig(backbone=backbone, size=args.size)
        for weighter_kind in ("fixed", "loss_ratio"):
            trainers = []
            for enhancer in (None, RankingDrivenEnhancer(enh_cfg, args.m)):
                torch.manual_seed(args.seed)
                model = UniGRF(cfg, data.num_items, data.num_levels, args.max_len)
                trainers.append(Trainer(model, enhancer, weighter_kind))
            off, on = compare(trainers, batch, args.warmup, args.steps)
            print(
                f"| {backbone} | {weighter_kind} | {off['cpu']:.0f} | {on['cpu']:.0f} | {on['mine_cpu']:.0f} | "
                f"{100 * (on['cpu'] - off['cpu']) / off['cpu']:+.1f}% | {100 * on['mine_cpu'] / off['cpu']:.1f}% | "
                f"{off['wall']:.0f} | {on['wall']:.0f} | "
                f"{100 * (on['wall'] - off['wall']) / off['wall']:+.1f}% |",
                flush=True,
            )


if __name__ == "__main__":
    main()
