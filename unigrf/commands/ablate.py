"""`unigrf ablate GRID.yaml [--seeds N] [--resume] [KEY=VALUE ...]`: run an ablation grid.

Every cell (rows × axis values × datasets × seeds) is one Ray Tune trial of the Ray Train
training, as many at once as the cluster holds; the report (results.csv, report.md,
report.tex, figures/*.png) goes to `<results_dir>/ablations/<grid>/` and is printed.
"""

from __future__ import annotations

import argparse
import shlex

from unigrf.cli import add_cluster_arguments, add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "grid", help="an ablation grid YAML, e.g. ablations/quick.yaml (schema: ablations/paper.yaml)"
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--seeds", type=int, default=None, help="run seeds 0..N-1 instead of the grid's `seeds`"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these of the grid's datasets (its report is <grid>-<names>)",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        default=None,
        metavar="ROW",
        help="run only these of the grid's rows, e.g. hstu/unigrf sasrec/item_only",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the grid's earlier Tune experiment: finished cells are skipped, "
        "interrupted ones resume from their last checkpoint",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="cells trained at once (default: as many as the cluster's CPUs/GPUs hold)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's start-up output, Tune's trial tables and the workers' logs, and print the "
        "whole report (default: a progress bar, one line per run, the results table)",
    )
    parser.add_argument(
        "--reuse-from",
        nargs="+",
        default=[],
        metavar="REPORT_DIR",
        help="report directories of other grids (results or archives): a cell one of them finished "
        "under the same config and data is copied in, not trained again",
    )
    add_cluster_arguments(parser)


def command_line(args: argparse.Namespace) -> str:
    """The exact command, rebuilt from the parsed arguments (recorded in the report)."""
    parts = ["unigrf", "ablate", args.grid]
    if args.seeds is not None:
        parts += ["--seeds", str(args.seeds)]
    for flag in ("datasets", "rows"):
        if getattr(args, flag, None):
            parts += [f"--{flag}", *getattr(args, flag)]
    if args.resume:
        parts.append("--resume")
    if args.max_concurrent is not None:
        parts += ["--max-concurrent", str(args.max_concurrent)]
    for flag in ("address", "storage_path", "results_dir"):
        value = getattr(args, flag, None)
        if value:
            parts += [f"--{flag.replace('_', '-')}", value]
    if args.gpu:
        parts.append("--gpu")
    if args.reuse_from:
        parts += ["--reuse-from", *args.reuse_from]
    parts += list(args.overrides or [])
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from unigrf.ablation.grid import load_grid
    from unigrf.ablation.runner import run_ablation
    from unigrf.config import parse_override

    spec = load_grid(args.grid)
    if args.seeds is not None:
        spec = spec.with_seeds(args.seeds)
    spec = spec.subset(args.datasets, args.rows)
    overrides = dict(parse_override(o) for o in args.overrides or [])
    if args.results_dir:
        overrides["results_dir"] = args.results_dir
    run_ablation(
        spec,
        overrides,
        address=args.address,
        storage_path=args.storage_path,
        resume=args.resume,
        use_gpu=args.gpu,
        max_concurrent=args.max_concurrent,
        command=command_line(args),
        verbose=args.verbose,
        reuse_from=args.reuse_from,
    )
    return 0
