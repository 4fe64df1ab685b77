"""Training step time of the UniGRF model: enhancer off/on, weighter fixed/loss_ratio, per backbone.

One step is the library's `train_step` (`benchmarks/common.py`: `build_trainer` + `train_step`,
the recipe's AdamW, weighter and clipping), with the enhancer's mining (on) or without (off),
on one batch of ML-100K as `unigrf train` prepares it (`load_dataset`): 128 users, training
windows of at most max_len = 200 items (400 tokens). The mining column times the enhancer's
`mine` alone on the same batch (what the on-step adds). Prints a Markdown table: median
ms/step over `--steps` timed steps after `--warmup`, as process CPU time (robust to other
processes on a shared machine; with --threads 1 it is the step's compute time) and as wall
clock; the enhancer-off and -on trainers step alternately.

    nice -n 10 .venv/bin/python benchmarks/step_time_bench.py --threads 1
    python -m benchmarks enhancer --threads 1 --out results/bench      # the same, JSON out
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stepper, Table, bench_config, load_dataset, machine, table_main  # noqa: E402

from unigrf.training.batches import to_device  # noqa: E402
from unigrf.training.precision import autocast  # noqa: E402

COLUMNS = ["backbone", "weighter", "off: CPU ms/step", "on: CPU ms/step", "mining CPU ms", "extra (CPU)",
           "mining / off step", "off: wall ms", "on: wall ms", "extra (wall)"]  # fmt: skip


def timed_step(step: Stepper, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One `train_step` (and, when it mines, the enhancer's mining timed alone first) -> ms,
    wall clock and process CPU time."""
    out = {}
    if step.mine:
        t = step.trainer
        on_device = to_device(batch, step.device)
        w0, c0 = time.perf_counter(), time.process_time()
        with autocast(t.device, t.amp):
            t.enhancer.mine(t.model, on_device)
        out = {"mine_wall": 1000 * (time.perf_counter() - w0), "mine_cpu": 1000 * (time.process_time() - c0)}
    w0, c0 = time.perf_counter(), time.process_time()
    step(batch)
    return {"wall": 1000 * (time.perf_counter() - w0), "cpu": 1000 * (time.process_time() - c0), **out}


def compare(steps_: list[Stepper], batch: dict[str, torch.Tensor], warmup: int, steps: int) -> list[dict]:
    """Median timings per trainer. Steps alternate between the trainers so that load from
    other processes on a shared machine hits every configuration alike."""
    logs: list[list[dict[str, float]]] = [[] for _ in steps_]
    for i in range(warmup + steps):
        for step, log in zip(steps_, logs):
            result = timed_step(step, batch)
            if i >= warmup:
                log.append(result)
    return [{key: statistics.median(r[key] for r in log) for key in log[0]} for log in logs]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
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
    parser.add_argument("--out", type=Path, default=None, help="write the table as DIR/<name>.json")


def run(args: argparse.Namespace) -> Table:
    torch.set_num_threads(args.threads)
    data = load_dataset("ml-100k", args.max_len, getattr(args, "data_root", None))
    if args.users == "random":
        users = np.random.default_rng(args.seed).choice(data.num_users, args.batch_size, replace=False)
    else:
        users = np.argsort(-data.lengths, kind="stable")[: args.batch_size]
    batch = data.train_batch(users)
    tokens = 2 * batch["items"].shape[1]
    title = (
        f"ml-100k batch ({args.users} users): {args.batch_size} users, {tokens} tokens/row, "
        f"{int(batch['lengths'].sum())} interactions; size={args.size}; threads={args.threads}"
    )
    rows = []
    for backbone in args.backbones:
        for weighter_kind in ("fixed", "loss_ratio"):
            cfg = bench_config(data, [
                f"model.backbone={backbone}", f"model.size={args.size}", f"train.seed={args.seed}",
                f"enhancer.m={args.m}", f"enhancer.top_k={args.top_k}", f"weighter.kind={weighter_kind}",
            ])  # fmt: skip
            steppers = [Stepper(cfg, data, mine=False), Stepper(cfg, data, mine=True)]
            off, on = compare(steppers, batch, args.warmup, args.steps)
            rows.append([
                backbone, weighter_kind, f"{off['cpu']:.0f}", f"{on['cpu']:.0f}", f"{on['mine_cpu']:.0f}",
                f"{100 * (on['cpu'] - off['cpu']) / off['cpu']:+.1f}%", f"{100 * on['mine_cpu'] / off['cpu']:.1f}%",
                f"{off['wall']:.0f}", f"{on['wall']:.0f}", f"{100 * (on['wall'] - off['wall']) / off['wall']:+.1f}%",
            ])  # fmt: skip
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return Table(
        f"throughput-enhancer-{args.users}", title, COLUMNS, rows, machine=machine("cpu", args.threads)
    )


def main(argv: list[str] | None = None) -> None:
    table_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
