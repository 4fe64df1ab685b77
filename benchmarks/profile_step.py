"""Where a training step's time goes: torch.profiler over the library's `train_step` (mining,
losses, weighter, backward, clip, AdamW; `benchmarks/common.py`) on ML-100K batches as
`epoch_batches` cuts them (last 200 items), printed as the operator table and the largest
operators by input shape.

    python benchmarks/profile_step.py --backbone hstu --size small --variant unigrf --batch-size 128
    python benchmarks/profile_step.py --backbone sasrec --variant item_only --batch-size 32 --threads 2

One step warms up, `--steps` are profiled (the longest batches of the epoch: `--from-end`).
Profiles are shares of one run; the machine's drift (benchmarks/RESULTS.md) moves absolute times.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stepper, bench_config, first_epoch_batches, load_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="hstu", choices=["hstu", "llama", "sasrec"])
    parser.add_argument("--size", default="small")
    parser.add_argument("--variant", default="unigrf")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--from-end", action="store_true", help="profile the epoch's last (longest) batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("ml-100k", 200, args.data_root)
    batches = first_epoch_batches(data, args.batch_size)
    cfg = bench_config(
        data,
        [
            f"model.backbone={args.backbone}",
            f"model.size={args.size}",
            f"train.variant={args.variant}",
            "enhancer.warmup_epochs=0",
        ],
    )
    step = Stepper(cfg, data)
    chosen = batches[-(args.steps + 1) :] if args.from_end else batches[: args.steps + 1]
    step(data.train_batch(chosen[0]))  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for users_b in chosen[1:]:
            step(data.train_batch(users_b))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print("largest operators by input shape (self CPU ms, calls, shapes):")
    by_shape = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    for e in by_shape[: args.rows]:
        print(f"{e.key:32s} {e.self_cpu_time_total / 1000:9.1f} {e.count:5d}  {str(e.input_shapes)[:100]}")


if __name__ == "__main__":
    main()
