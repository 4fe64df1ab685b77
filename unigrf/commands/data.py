"""`unigrf data prepare|download|stats`: raw ratings -> cached per-user sequences (Ray Data).

Examples:
    unigrf data download ml-100k                       # -> results/raw/ml-100k/u.data
    unigrf data prepare --dataset ml-100k --data-dir ../shared/data/ml-100k
    unigrf data prepare --dataset amazon-reviews --data-dir ../shared/data/amazon_musical_instruments_5core
    unigrf data prepare data.synthetic.num_users=5000  # the built-in generator
    unigrf data prepare --dataset csv --path log.csv data.columns.user=uid --on-bad-rows skip
    unigrf data prepare --dataset csv --path ratings.dat data.columns.sep=:: data.columns.header=false
    unigrf data prepare --dataset movietweetings --data-dir ../shared/data/movietweetings-100k
    unigrf data stats results/data/ml-100k-<key>
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from unigrf.cli import add_config_arguments, config_from_args
from unigrf.config import DatasetName

DATASETS = typing.get_args(DatasetName)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    prep = sub.add_parser(
        "prepare",
        help="parse, validate, filter and sort a dataset into per-user sequences (cached)",
        description="Parse, validate, k-core filter and stable-sort a dataset into per-user "
        "chronological sequences (Ray Data), cached under <results-dir>/data/; prints the stats "
        "table (with the like threshold and max_len, derived from the data unless set) and the "
        "prepared directory.",
    )
    prep.add_argument("--config", default=None, help="a YAML config whose data section is used")
    prep.add_argument(
        "--dataset", choices=DATASETS, default=None, help="which dataset (data.dataset); default: synthetic"
    )
    prep.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the raw files (data.data_dir), e.g. ../shared/data/ml-100k; default: "
        "<results-dir>/raw/<dataset> when `unigrf data download` put it there",
    )
    prep.add_argument(
        "--path", default=None, help="an explicit raw file (data.path); required for csv/parquet"
    )
    prep.add_argument(
        "--on-bad-rows",
        choices=("error", "skip"),
        default=None,
        help="error (default): stop at the first bad row, naming file and line; skip: drop and count them",
    )
    prep.add_argument(
        "--num-blocks", type=int, default=None, help="Ray Data blocks (default: from rows and CPUs)"
    )
    prep.add_argument(
        "--address", default=None, help="Ray cluster address; default: $RAY_ADDRESS, else a local Ray"
    )
    add_config_arguments(prep)

    down = sub.add_parser(
        "download",
        help="download a dataset from its official URL (checksum-verified)",
        description="Download a dataset from its official URL into a temporary file, verify its "
        "checksum, extract it and move it into place atomically.",
    )
    down.add_argument("name", choices=("ml-100k", "ml-1m", "ml-20m", "amazon-books"), help="dataset to fetch")
    down.add_argument(
        "--data-dir", default=None, help="destination folder; default: <results-dir>/raw/<name>"
    )
    down.add_argument("--results-dir", default="results", help="root of the default destination (./results)")
    down.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds (default 10)")

    stats = sub.add_parser("stats", help="print the stats table of a prepared dataset directory")
    stats.add_argument("dir", help="a prepared directory (<results-dir>/data/<dataset>-<key>)")


def _error(message: str) -> int:
    print(f"unigrf data: error: {message}", file=sys.stderr)
    return 2


def _prepare(args: argparse.Namespace) -> int:
    from unigrf.data.download import REGISTRY, default_data_dir
    from unigrf.data.prepare import format_stats, load_meta, prepare_dataset

    overrides = list(args.overrides or [])
    for option, key in (
        ("dataset", "data.dataset"),
        ("data_dir", "data.data_dir"),
        ("path", "data.path"),
        ("on_bad_rows", "data.on_bad_rows"),
    ):
        value = getattr(args, option)
        if value is not None:
            overrides.append(f"{key}={value}")
    args.overrides = overrides
    cfg = config_from_args(args, args.config)
    data = cfg.data
    if data.data_dir is None and data.path is None and data.dataset in REGISTRY:
        downloaded = default_data_dir(cfg.results_dir, data.dataset)
        if downloaded.is_dir():
            print(f"data: using the downloaded files in {downloaded}")
            from dataclasses import replace

            data = replace(data, data_dir=str(downloaded))

    from unigrf.ray_utils import init_ray

    started = init_ray(args.address) if args.address else False
    try:
        prepared = prepare_dataset(data, cfg.results_dir, num_blocks=args.num_blocks)
    finally:
        if started:
            import ray

            ray.shutdown()
    print(format_stats(load_meta(prepared)))
    print(f"prepared: {prepared}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from unigrf.data.download import default_data_dir, download

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(args.results_dir, args.name)
    download(args.name, data_dir, timeout=args.timeout)
    print(f"next: unigrf data prepare --dataset {args.name} --data-dir {data_dir}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from unigrf.data.prepare import format_stats, load_meta

    meta_file = Path(args.dir) / "meta.json"
    if not meta_file.is_file():
        return _error(f"{meta_file}: not found (expected a directory written by `unigrf data prepare`)")
    print(format_stats(load_meta(args.dir)))
    return 0


def run(args: argparse.Namespace) -> int:
    from unigrf.data.readers import DataError

    actions = {"prepare": _prepare, "download": _download, "stats": _stats}
    try:
        return actions[args.action](args)
    except DataError as err:  # bad input is the user's to fix: a clear line, no traceback
        return _error(str(err))
