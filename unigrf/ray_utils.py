"""Connecting to Ray and sizing work to the cluster: the one place the commands share.

Every Ray-using command (`data prepare`, `train --workers`, `tune`, `ablate`) goes through
`init_ray` so that `--address` / `$RAY_ADDRESS` select a running cluster (`auto`, `host:port`
or a `ray://host:10001` client address) and, without one, a local Ray starts with usage stats
off. Results go to `resolve_storage_path`: `--storage-path`, else `$UNIGRF_STORAGE` (set once
per cluster by cluster.yaml), else `<results_dir>/ray`.

Resources are sized from what the cluster has (`node_resources`) plus what its autoscaler may
still add (`cluster_capacity`, `unigrf.compat.autoscaler_nodes`), so that a sweep on a cluster whose GPU nodes are not started
yet still asks for as many concurrent trials as the cluster can grow to.

Importing this module does not import Ray.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unigrf.compat import (  # noqa: F401 - autoscaler_nodes: part of this module's sizing API
    TRAIN_CLEANER_CLASS,
    alive_actors,
    autoscaler_nodes,
    ended_jobs,
)

# The environment variable that sets the default --storage-path (cluster.yaml exports it).
STORAGE_ENV_VAR = "UNIGRF_STORAGE"

Resources = dict[str, float]


class RayConnectionError(RuntimeError):
    """The requested Ray cluster could not be reached; the message says which and why."""


class RayStartError(RuntimeError):
    """A local Ray did not start on this machine; the message says why and what to do."""


# How many times a local Ray is started before its start-up timeout is the user's to see.
LOCAL_START_TRIES = 3


def resolve_address(address: str | None) -> str | None:
    """The cluster to connect to: `address`, else $RAY_ADDRESS, else None (start a local Ray).
    `local` also means a fresh local Ray; blanks count as unset."""
    chosen = (address or "").strip() or os.environ.get("RAY_ADDRESS", "").strip()
    return None if chosen in ("", "local") else chosen


def init_ray(
    address: str | None = None, num_cpus: int | None = None, quiet: bool | None = None, announce: bool = True
) -> bool:
    """Connect to `address` (or $RAY_ADDRESS), else start a local Ray. Returns True when this
    call started or connected Ray (so the caller may shut it down), False if already running.

    `address` may be `auto` (the cluster this machine is part of, e.g. on the head node or
    inside `ray job submit`), `host:6379` (the GCS) or `ray://host:10001` (Ray Client).
    `num_cpus` only sizes a local Ray: a running cluster's resources are its own. `quiet`
    (default: the console's, `unigrf.console`): Ray's start-up banners and its workers' console
    output are not shown (errors still are); a local Ray's dashboard URL is then printed as one
    line when `announce` (not for a Ray started only to prepare data).
    """
    import ray

    from unigrf import console

    if ray.is_initialized():
        return False
    if quiet is None:
        quiet = not console.verbose()
    # Inherited by the local raylet and every worker it starts.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    target = resolve_address(address)
    quiet_kwargs: dict[str, Any] = {}
    if quiet:
        console.quiet_third_party()
        quiet_kwargs = {"logging_level": logging.ERROR, "log_to_driver": False}
    if target is None:
        # address="local": always a fresh local Ray, never a cluster some other process left
        # running on this machine (plain ray.init() would join it via /tmp/ray).
        context = _start_local(num_cpus, quiet_kwargs)
        if quiet and announce and getattr(context, "dashboard_url", None):
            print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)
        return True
    # No runtime_env here: inside `ray job submit` the job's own runtime env (working_dir,
    # env_vars) applies, and a second one passed to ray.init could conflict with it.
    source = "--address" if (address or "").strip() else "$RAY_ADDRESS"
    try:
        # ray.init retries an unreachable GCS for many minutes without a word: probe first.
        _check_reachable(target)
        ray.init(address=target, **quiet_kwargs)
    except (ConnectionError, TimeoutError) as err:
        raise RayConnectionError(
            f"cannot connect to the Ray cluster at {target!r} (from {source}): {err}. "
            "Start one (`ray up cluster.yaml`, or `ray start --head` here) or leave out "
            "--address and $RAY_ADDRESS to run on a local Ray."
        ) from err
    return True


def _start_local(num_cpus: int | None, quiet_kwargs: dict[str, Any]) -> Any:
    """`ray.init(address="local")`, started again when its node misses Ray's fixed start-up
    window (compat.LOCAL_START_WINDOW_S), as it can on a machine busy with other work; after
    LOCAL_START_TRIES a RayStartError says so. What a failed try started is ended first."""
    import psutil
    import ray

    from unigrf.compat import LOCAL_START_WINDOW_S, local_start_timed_out

    for attempt in range(1, LOCAL_START_TRIES + 1):
        before = {child.pid for child in psutil.Process().children(recursive=True)}
        try:
            return ray.init(address="local", num_cpus=num_cpus, include_dashboard=None, **quiet_kwargs)
        except Exception as err:
            if not local_start_timed_out(err):
                raise
            _end_new_children(before)
            load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            if attempt == LOCAL_START_TRIES:
                raise RayStartError(
                    f"a local Ray did not start: its node missed Ray's fixed {LOCAL_START_WINDOW_S} s "
                    f"start-up window {attempt} times ({load}). The CPUs are busy with other work: "
                    "run the command again when they are less busy, or give this process a larger "
                    "share of them (on Linux, processes of another login session are not outranked "
                    "by `nice`: lower that session's /proc/<pid>/autogroup); a command that resumes "
                    "continues where it stopped."
                ) from err
            print(
                f"Ray: the local node missed its {LOCAL_START_WINDOW_S} s start-up window ({load}); "
                f"starting it again ({attempt + 1} of {LOCAL_START_TRIES})",
                flush=True,
            )


def _end_new_children(before: set[int]) -> None:
    """End the processes a failed `ray.init` left (the GCS, a raylet): those not in `before`."""
    import psutil

    new = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
    for child in new:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(new, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)  # reaped: a killed child is otherwise left a zombie


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise ConnectionError unless `host:port` (or `ray://host:port`) accepts a TCP
    connection. `auto` and addresses without a port are left to Ray to resolve."""
    hostport = address.removeprefix("ray://").rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise ConnectionError(f"nothing answers at {host}:{port} ({err.strerror or err})") from None


def is_uri(path: str) -> bool:
    """True for `s3://bucket/x`, `gs://...`, `file:///...`: a storage URI, not a local path."""
    return "://" in path


def resolve_storage_path(storage_path: str | None, results_dir: str | Path) -> str:
    """Ray Train/Tune storage: the given path or URI (s3://, gs://, NFS path), else
    $UNIGRF_STORAGE, else `<results_dir>/ray`; local paths made absolute (Ray requires it)."""
    chosen = (storage_path or "").strip() or os.environ.get(STORAGE_ENV_VAR, "").strip()
    if chosen:
        return chosen if is_uri(chosen) else str(Path(chosen).expanduser().resolve())
    return str((Path(results_dir) / "ray").resolve())


# --------------------------------------------------------------------------------------------
# Leftover processes
# --------------------------------------------------------------------------------------------


def remove_stale_train_cleaners(include_own_job: bool) -> int:
    """Kill the Ray Train `PlacementGroupCleaner` actors that have nothing left to guard: those
    of jobs that ended (a driver that exited or was killed; its controllers and placement groups
    died with it) and, with `include_own_job` (call it once this job's trainings are over), this
    job's. Other live jobs' cleaners are left alone. Returns how many were killed.

    The actors are anonymous, so `ray.kill` cannot reach them; their process is ended by a
    zero-CPU task pinned to their node (no State API, hence no dashboard, needed). Why they
    linger: `unigrf.compat`."""
    import signal

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    own_job = ray.get_runtime_context().get_job_id()
    ended = ended_jobs()
    stale = [
        info
        for info in alive_actors(TRAIN_CLEANER_CLASS)
        if info["JobID"] in ended or (include_own_job and info["JobID"] == own_job)
    ]

    @ray.remote(num_cpus=0)
    def end_process(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # ended meanwhile
            pass

    ray.get(
        [
            end_process.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(info["Address"]["NodeID"], soft=False)
            ).remote(int(info["Pid"]))
            for info in stale
            if info.get("Pid")
        ]
    )
    return len(stale)


def leave_no_train_cleaners() -> None:
    """`remove_stale_train_cleaners(include_own_job=True)` at the end of a command whose
    trainings are over; a failure here (e.g. Ray internals changed) is reported, never raised."""
    try:
        remove_stale_train_cleaners(include_own_job=True)
    except Exception as err:  # noqa: BLE001 - cleanup must not turn a finished run into a failure
        print(f"note: could not look for leftover Ray Train cleaner actors ({err})", flush=True)


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------


def worker_resources(use_gpu: bool, cpus_per_worker: int = 1) -> dict[str, float]:
    """Resources of one Ray Train worker (or of one single-process trial): its CPUs, plus one
    whole GPU with `use_gpu` (DDP runs one process per GPU)."""
    res: dict[str, float] = {"CPU": float(cpus_per_worker)}
    if use_gpu:
        res["GPU"] = 1.0
    return res


def node_resources() -> list[Resources]:
    """The total resources of each alive node of the connected cluster (`ray.nodes()`)."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> int:
    """How many copies of `bundle` fit in `node`."""
    counts = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else 0


def cluster_capacity(
    nodes: Sequence[Mapping[str, float]], potential: Sequence[Mapping[str, float]] | None
) -> list[Resources]:
    """The nodes the cluster can have: the alive `nodes` plus the `potential` autoscaler
    workers (`autoscaler_nodes()`) not yet running. A running node stands for one potential
    node of a type it covers, so a cluster at its maximum is counted once."""
    capacity = [dict(n) for n in nodes]
    # A node type with unknown resources (`resources: {}`, detected at start) adds nothing.
    pending = [dict(p) for p in potential or [] if p]
    for node in nodes:
        for i, candidate in enumerate(pending):
            if _fits(candidate, node) >= 1:
                del pending[i]
                break
    return capacity + pending


def total_resources(nodes: Sequence[Mapping[str, float]]) -> Resources:
    """Sum of per-node resources (the shape of `ray.cluster_resources()`)."""
    total: Resources = {}
    for node in nodes:
        for k, v in node.items():
            total[k] = total.get(k, 0.0) + float(v)
    return total


def require_gpus(use_gpu: bool, nodes: Sequence[Mapping[str, float]]) -> None:
    """With `use_gpu`, fail early (instead of trials pending forever) when no node the
    cluster has or can add has a GPU."""
    if use_gpu and total_resources(nodes).get("GPU", 0.0) < 1.0:
        raise ValueError(
            "--gpu (train.use_gpu=true) asks one GPU per training worker, but the Ray cluster "
            "has no GPU and cannot add one. Use a cluster with GPU workers (cluster.yaml) or "
            "leave out --gpu."
        )


def node_capacity() -> list[Resources]:
    """The nodes the connected cluster has or its autoscaler may still add (one dict each)."""
    return cluster_capacity(node_resources(), autoscaler_nodes())


def require_workers_fit(cfg: Any, nodes: Sequence[Mapping[str, float]]) -> None:
    """Fail before any work when `cfg.train.num_workers` Ray Train workers (each
    `worker_resources`) cannot all be placed at once on `nodes`: Train would wait forever.
    Raises ConfigError naming the key and the numbers."""
    from unigrf.config import ConfigError

    workers, use_gpu = cfg.train.num_workers, cfg.train.use_gpu
    per = worker_resources(use_gpu)
    fit = sum(_fits(per, node) for node in nodes)
    if workers <= fit:
        return
    total = total_resources(nodes)
    what = "GPU" if use_gpu and total.get("GPU", 0.0) < workers else "CPU"
    have = total.get(what, 0.0)
    raise ConfigError(
        f"train.num_workers={workers}"
        + (" with train.use_gpu=true" if use_gpu else "")
        + f" asks for {workers} Ray Train workers ({', '.join(f'{v:g} {k}' for k, v in per.items())} each), "
        f"but the Ray cluster has {have:g} {what}(s) on {len(nodes)} node(s), room for {fit} worker(s) "
        "(counting nodes the autoscaler may add): lower --workers / train.num_workers or use a bigger cluster"
    )


def max_concurrent_trials(
    cluster: Mapping[str, float] | Sequence[Mapping[str, float]],
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: int = 1,
) -> int:
    """How many trials (each `num_workers` Ray Train workers) fit in the cluster, at least 1.

    `cluster` is either the summed resources (`ray.cluster_resources()`), or, more exactly,
    one dict per node (`node_resources()` / `cluster_capacity(...)`): a worker cannot span
    nodes, so 3 free CPUs on each of two nodes hold two 2-CPU workers, not three.
    """
    per = worker_resources(use_gpu, cpus_per_worker)
    if isinstance(cluster, Mapping):
        slots = _fits(per, cluster)
    else:
        slots = sum(_fits(per, node) for node in cluster)
    return max(1, slots // num_workers)
