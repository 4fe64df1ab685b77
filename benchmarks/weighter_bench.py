"""What each weighter costs per training step: `fixed`, `loss_ratio`, `grad_norm`, `grad_share`.

`grad_norm` and `grad_share` (the default) measure each loss's gradient on the shared block every
`weighter.interval` steps — a partial backward per task on those steps only — so their cost is
not in a step's median: this benchmark times whole intervals. Every weighter's trainer steps the
same ML-100K batch (`unigrf train`'s preparation, 128 random users, windows of max_len = 200) with
the library's `train_step`, the enhancer off (its cost is `python -m benchmarks enhancer`'s); the
trainers step in turn, so load from other processes hits each alike; after `--warmup` steps,
`--intervals` whole intervals are timed as process CPU time (with --threads 1 the step's
compute, robust to a shared machine). Columns: the mean over every timed step (what an epoch
pays), its ratio to `fixed`, and for the measuring weighters the mean of their measuring steps
and of the others.

    python benchmarks/weighter_bench.py --threads 1 --out results/bench
    python -m benchmarks weighter --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stepper, Table, bench_config, load_dataset, machine, table_main  # noqa: E402

KINDS = ("fixed", "loss_ratio", "grad_norm", "grad_share")
MEASURING = ("grad_norm", "grad_share")  # weighters that measure gradients every `interval` steps
COLUMNS = ["backbone", "weighter", "CPU ms/step (mean)", "vs fixed", "measuring steps CPU ms",
           "other steps CPU ms"]  # fmt: skip


def time_intervals(
    steppers: Sequence[Callable[[], None]], warmup: int, intervals: int, interval: int
) -> list[dict[str, float]]:
    """Step every stepper in turn, `warmup` untimed steps and then `intervals` × `interval` timed
    ones; per stepper the mean process-CPU ms over the timed steps (`mean`), and over the steps
    whose index since the first is a multiple of `interval` (`measuring`: where a measuring
    weighter measures) and the others (`other`)."""
    times: list[list[tuple[int, float]]] = [[] for _ in steppers]
    for i in range(warmup + intervals * interval):
        for step, log in zip(steppers, times):
            c0 = time.process_time()
            step()
            if i >= warmup:
                log.append((i, 1000 * (time.process_time() - c0)))
    out = []
    for log in times:
        measuring = [ms for i, ms in log if i % interval == 0]
        other = [ms for i, ms in log if i % interval != 0]
        out.append({
            "mean": statistics.fmean(ms for _, ms in log),
            "measuring": statistics.fmean(measuring) if measuring else float("nan"),
            "other": statistics.fmean(other) if other else float("nan"),
        })  # fmt: skip
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    parser.add_argument("--backbones", nargs="+", default=["hstu"])
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--intervals", type=int, default=2, help="whole weighter intervals timed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the table as DIR/<name>.json")


def run(args: argparse.Namespace) -> Table:
    torch.set_num_threads(args.threads)
    data = load_dataset("ml-100k", args.max_len, getattr(args, "data_root", None))
    users = np.random.default_rng(args.seed).choice(data.num_users, args.batch_size, replace=False)
    batch = data.train_batch(users)
    rows, interval = [], None
    for backbone in args.backbones:
        steppers = []
        for kind in KINDS:
            cfg = bench_config(data, [f"model.backbone={backbone}", f"model.size={args.size}",
                                      f"train.seed={args.seed}", f"weighter.kind={kind}"])  # fmt: skip
            interval = cfg.weighter.interval
            stepper = Stepper(cfg, data, mine=False)
            steppers.append(lambda s=stepper: s(batch))
        timed = time_intervals(steppers, args.warmup, args.intervals, interval)
        base = timed[0]["mean"]
        for kind, t in zip(KINDS, timed):
            split = [f"{t['measuring']:.0f}", f"{t['other']:.0f}"] if kind in MEASURING else ["—", "—"]
            rows.append([backbone, kind, f"{t['mean']:.0f}", f"{t['mean'] / base:.3f}×", *split])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    title = (
        f"ml-100k batch (random users): {args.batch_size} users, windows of {data.max_len} items; "
        f"size={args.size}; enhancer off; weighter.interval={interval}; {args.intervals} intervals "
        f"timed after {args.warmup} warm-up steps; threads={args.threads}"
    )
    return Table("throughput-weighter", title, COLUMNS, rows, machine=machine("cpu", args.threads))


def main(argv: list[str] | None = None) -> None:
    table_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
