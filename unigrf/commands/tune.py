"""`unigrf tune SPACE.yaml [KEY=VALUE ...]`: hyper-parameter search with Ray Tune + Optuna.

Each trial is one Ray Train run of the base config (the file's `base_config` + `fixed` + the
command-line overrides) with the sampled values; see `unigrf.sweep.tuner` for what is written
under `<results_dir>/tune/<name>/`.
"""

from __future__ import annotations

import argparse

from unigrf.cli import add_cluster_arguments, add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", help="a search-space YAML (e.g. tune/ml-100k.yaml; schema at its top)")
    add_config_arguments(parser)
    parser.add_argument("--name", default=None, help="sweep name (default: the file's name, +-random / -mo)")
    parser.add_argument(
        "--num-samples", type=int, default=None, help="trials (default: the file's num_samples)"
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=None, help="trials at once (default: what the cluster fits)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue a sweep whose driver stopped or was killed"
    )
    parser.add_argument(
        "--restart", action="store_true", help="delete the sweep (results, Tune state, study) first"
    )
    parser.add_argument(
        "--random",
        action="store_true",
        help="random search (Optuna RandomSampler) instead of TPE, same budget",
    )
    parser.add_argument(
        "--multi-objective",
        action="store_true",
        help="optimise the file's multi_objective metrics together (Pareto front; no ASHA)",
    )
    parser.add_argument(
        "--study-storage",
        default=None,
        help="SQLAlchemy URL of the Optuna study database (default: sqlite:///<sweep dir>/study.db)",
    )
    parser.add_argument(
        "--max-failures", type=int, default=0, help="Ray Train worker-group restarts per trial (default 0)"
    )
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2, 3), help="Tune console verbosity")
    add_cluster_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from unigrf.sweep import SweepOptions, resolve, run_sweep

    if args.resume and args.restart:
        raise SystemExit("unigrf tune: --resume and --restart exclude each other")
    overrides = list(args.overrides or [])
    if args.results_dir:
        overrides.append(f"results_dir={args.results_dir}")
    if args.gpu:
        overrides.append("train.use_gpu=true")
    spec, base = resolve(args.space, overrides)
    options = SweepOptions(
        name=args.name,
        num_samples=args.num_samples,
        resume=args.resume,
        restart=args.restart,
        random=args.random,
        multi_objective=args.multi_objective,
        address=args.address,
        storage_path=args.storage_path,
        study_storage=args.study_storage,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        verbose=args.verbose,
    )
    run_sweep(spec, base, options)
    return 0
