"""Connecting to Ray and sizing work to the cluster: the one place the commands share.

Every Ray-using command (`data prepare`, `train --workers`, `tune`, `ablate`) goes through
`init_ray` so that `--address` / `$RAY_ADDRESS` select a running cluster and, without one, a
local Ray starts with usage stats off. Importing this module does not import Ray.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to `address` (or $RAY_ADDRESS), else start a local Ray. Returns True when this
    call started or connected Ray (so the caller may shut it down), False if already running."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, runtime_env=env, include_dashboard=None)
    return True


def resolve_storage_path(storage_path: str | None, results_dir: str | Path) -> str:
    """Ray Train/Tune storage: the given path or URI (s3://, gs://, NFS path), else
    `<results_dir>/ray` made absolute (Ray requires absolute local paths)."""
    if storage_path:
        return storage_path if "://" in storage_path else str(Path(storage_path).expanduser().resolve())
    return str((Path(results_dir) / "ray").resolve())


def worker_resources(use_gpu: bool, cpus_per_worker: int = 1) -> dict[str, float]:
    """Resources of one Ray Train worker."""
    res: dict[str, float] = {"CPU": float(cpus_per_worker)}
    if use_gpu:
        res["GPU"] = 1.0
    return res


def max_concurrent_trials(
    cluster: dict[str, Any], num_workers: int, use_gpu: bool, cpus_per_worker: int = 1
) -> int:
    """How many trials (each `num_workers` Ray Train workers) fit in `cluster`'s resources
    (`ray.cluster_resources()`), at least 1."""
    per = worker_resources(use_gpu, cpus_per_worker)
    fits = [math.floor(cluster.get(k, 0.0) / (v * num_workers)) for k, v in per.items() if v > 0]
    return max(1, min(fits) if fits else 1)
