"""`unigrf train [CONFIG] [KEY=VALUE ...]`: train one configuration.

Examples:
    unigrf train configs/ml-100k.yaml data.data_dir=../shared/data/ml-100k
    unigrf train train.epochs=2                      # built-in defaults (synthetic data)
    unigrf train configs/ml-100k.yaml --workers 2    # Ray Train, 2 DDP workers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unigrf.cli import add_cluster_arguments, add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="a YAML config (e.g. configs/ml-100k.yaml); default: the built-in defaults (synthetic "
        "data). An argument containing '=' is an override, not a config.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray Train workers (DDP); 1 without --address/--gpu runs the plain loop in-process",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="Ray Train: worker-group failures to recover from (from the latest checkpoint); -1: no limit",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="delete the run's directories first instead of resuming from its last checkpoint",
    )
    add_cluster_arguments(parser)


def split_config_argument(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse hands the first positional to CONFIG even when it is `KEY=VALUE`; such an
    argument (not an existing file) is an override, and the defaults are the config."""
    if config is not None and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, list(overrides)


def run(args: argparse.Namespace) -> int:
    from unigrf.training.run import run_training

    config, overrides = split_config_argument(args.config, args.overrides or [])
    if args.workers is not None:
        overrides.append(f"train.num_workers={args.workers}")
    if args.gpu:
        overrides.append("train.use_gpu=true")
    args.overrides = overrides
    cfg = config_from_args(args, config)
    run_training(
        cfg,
        restart=args.restart,
        address=args.address,
        storage_path=args.storage_path,
        max_failures=args.max_failures,
    )
    return 0
