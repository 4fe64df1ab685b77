"""`unigrf serve RUN_DIR`: serve a trained run over HTTP on Ray Serve (docs/serving.md).

Examples:
    unigrf serve results/runs/ml-100k-hstu                      # http://127.0.0.1:8000
    curl -s localhost:8000/recommend -d '{"history": [{"item": "50", "rating": 5, "timestamp": 881250949}], "k": 5}'
    unigrf serve RUN --replicas 2 --max-batch-size 16           # more replicas, bigger batches
    unigrf serve RUN --config serve.yaml                         # settings (autoscaling) from a file
    unigrf serve RUN --address auto --host 0.0.0.0 --detach      # on a `ray up` cluster's head node
    unigrf serve NEW_RUN --address auto --detach                 # replace the served run in place
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from unigrf.serving.settings import DEVICES, MODES, AutoscalingSettings, ServeSettingsError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", help="a training run directory (<results>/runs/<name>: config.yaml, best_model.pt)"
    )
    parser.add_argument(
        "--config", default=None, help="serving settings YAML (docs/serving.md); options override it"
    )
    parser.add_argument(
        "--prepared",
        default=None,
        help="the run's prepared dataset directory; default: found in the run's results directory",
    )
    parser.add_argument("--host", default=None, help="HTTP host (default 127.0.0.1; 0.0.0.0 on a cluster)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    parser.add_argument(
        "--name", dest="app_name", default=None, help="Serve application name (default unigrf)"
    )
    parser.add_argument("--replicas", type=int, default=None, help="replicas (default 1)")
    parser.add_argument(
        "--autoscale",
        default=None,
        metavar="MIN:MAX",
        help="autoscale between MIN and MAX replicas instead of a fixed count",
    )
    parser.add_argument("--num-cpus", type=float, default=None, help="CPUs per replica (default 1)")
    parser.add_argument(
        "--num-gpus", type=float, default=None, help="GPUs per replica (default: 1 if the cluster has one)"
    )
    parser.add_argument(
        "--device", choices=DEVICES, default=None, help="auto (default): cuda where a GPU is held"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=None, help="requests per forward pass (default 8)"
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=None, help="how long a batch waits to fill (default 5 ms)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="cached (default) or no_cache (history recomputed per candidate)",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (auto on a `ray up` head node); default: $RAY_ADDRESS, else a local Ray",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="deploy and exit, leaving the application running on the cluster (needs --address)",
    )


def _autoscaling(spec: str | None) -> AutoscalingSettings | None:
    if spec is None:
        return None
    low, sep, high = spec.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ServeSettingsError(f"--autoscale must be MIN:MAX replicas, e.g. 1:4, got {spec!r}")
    return AutoscalingSettings(min_replicas=int(low), max_replicas=int(high))


def run(args: argparse.Namespace) -> int:
    from unigrf.ray_utils import resolve_address
    from unigrf.serving.recommender import ServingError

    try:
        settings = load_settings(args.config).with_overrides(
            host=args.host,
            port=args.port,
            app_name=args.app_name,
            replicas=args.replicas,
            autoscaling=_autoscaling(args.autoscale),
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            device=args.device,
            max_batch_size=args.max_batch_size,
            batch_wait_timeout_s=None if args.batch_wait_ms is None else args.batch_wait_ms / 1000,
            mode=args.mode,
        )
        if args.replicas is not None and args.autoscale is None:  # a fixed count asked for
            settings = dataclasses.replace(settings, autoscaling=None)
    except ServeSettingsError as err:
        print(f"unigrf serve: config error: {err}", file=sys.stderr)
        return 2
    if args.detach and resolve_address(args.address) is None:
        print("unigrf serve: --detach needs --address (a local Ray ends with this command)", file=sys.stderr)
        return 2

    try:
        import fastapi  # noqa: F401
        import ray.serve  # noqa: F401
    except ImportError as err:
        print(
            f"unigrf serve: error: Ray Serve is not installed ({err}); install the serve extra: "
            "pip install -e '.[serve]'",
            file=sys.stderr,
        )
        return 2
    from unigrf.serving.deploy import deploy, undeploy

    try:
        url = deploy(args.run_dir, settings, prepared_dir=args.prepared, address=args.address)
    except ServingError as err:
        print(f"unigrf serve: error: {err}", file=sys.stderr)
        return 2
    print(
        f"serving {args.run_dir} as '{settings.app_name}' at {url} (POST /recommend, GET /health, GET /info)"
    )
    if args.detach:
        return 0
    print("Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        undeploy(settings.app_name)
    return 0
