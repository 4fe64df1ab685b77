"""One entry point for the benchmarks: `python -m benchmarks SECTION... [options] [--out DIR]`.

Sections (each prints its table as Markdown; with `--out DIR` each table is also written as
DIR/<name>.json, the input of `python benchmarks/tables.py`, which renders RESULTS.md's tables):

    peak      GEMM peaks (fp32, bf16) of this machine, before and after the other sections
    step      training step per backbone x size, UniGRF and item-only: ms, tokens/s, useful FLOP/s
    epoch     epoch time against SASRec.pytorch at its ML-100K settings
    trial     per-trial overhead of a sweep (a local Ray)
    eval      evaluation of all ML-100K users per backbone: seconds, FLOPs, share of the peak
    enhancer  step time with the enhancer's mining off / on, weighter fixed / loss_ratio
    weighter  each weighter's cost per step over whole weighter intervals (fixed, loss_ratio,
              grad_norm, grad_share: the last two measure gradients every `interval` steps)

Every section reads ML-100K as `unigrf train` prepares it and times the library's own
`train_step` (benchmarks/common.py). The peak is measured whenever step or eval runs (their
shares need it). Examples:

    python -m benchmarks step eval --threads 2 --sizes small --out results/bench
    python -m benchmarks enhancer --threads 1 --steps 4 --warmup 1
    python -m benchmarks step eval --device cuda --compile

The experiments built on top keep their own scripts: benchmarks/quality_bench.py (the quality
table), benchmarks/library_ab.py (old library against new, seed by seed), train_bench.py (Ray
Train overhead), prepare_bench.py, serve_bench.py, eval_bench.py (evaluation paths),
profile_step.py (torch.profiler over the same `train_step`), ranking_headroom.py (how far above
the count model a feature model fitted on validation gets), grid_cost.py (the claim grids' cells
done and the CPU hours they cost and still need).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_bench  # noqa: E402
import step_time_bench  # noqa: E402
import weighter_bench  # noqa: E402

SECTIONS = (*speed_bench.SECTIONS, "enhancer", "weighter")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sections", nargs="+", choices=SECTIONS, metavar="SECTION", help=", ".join(SECTIONS))
    speed_bench.add_arguments(parser)
    parser.add_argument("--warmup", type=int, default=2, help="enhancer: untimed steps first")
    parser.add_argument("--m", type=int, default=8, help="enhancer: the enhancer's m")
    parser.add_argument("--top-k", type=int, default=50, help="enhancer: the enhancer's K")
    parser.add_argument(
        "--users", choices=["random", "longest"], default="random", help="enhancer: the batch"
    )
    args = parser.parse_args(argv)
    chosen = set(args.sections)
    tables = []
    speed = chosen & set(speed_bench.SECTIONS)
    if speed:
        tables += speed_bench.run(args, speed)
    if "enhancer" in chosen:
        enhancer = argparse.Namespace(**vars(args))
        enhancer.size = args.sizes[0] if args.sizes != ["tiny", "small", "base"] else "small"
        enhancer.batch_size, enhancer.max_len, enhancer.seed = 128, 200, 0
        tables.append(step_time_bench.run(enhancer))
    if "weighter" in chosen:
        weighter = argparse.Namespace(**vars(args))
        weighter.size = args.sizes[0] if args.sizes != ["tiny", "small", "base"] else "small"
        weighter.batch_size, weighter.max_len, weighter.seed, weighter.intervals = 128, 200, 0, 2
        tables.append(weighter_bench.run(weighter))
    print(f"Machine: {tables[0].machine}; command: `python -m benchmarks {' '.join(argv or sys.argv[1:])}`\n")
    speed_bench.report(tables, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
