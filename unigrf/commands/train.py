"""`unigrf train CONFIG [KEY=VALUE ...]`: train one configuration."""

from __future__ import annotations

import argparse

from unigrf.cli import add_cluster_arguments, add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="a YAML config (e.g. configs/ml-100k.yaml); default: the built-in defaults (synthetic data)",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray Train workers (DDP); 1 without --address runs the plain loop in-process",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="delete the run directory first instead of resuming from its last checkpoint",
    )
    add_cluster_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unigrf.training.run import run_training

    if args.workers is not None:
        args.overrides = [*args.overrides, f"train.num_workers={args.workers}"]
    if args.gpu:
        args.overrides = [*args.overrides, "train.use_gpu=true"]
    cfg = config_from_args(args, args.config)
    run_training(cfg, restart=args.restart, address=args.address, storage_path=args.storage_path)
    return 0
