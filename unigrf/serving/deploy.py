"""Starting, replacing and stopping the served run (the driver side of `unigrf serve`).

`deploy(run_dir, settings, ...)` connects to Ray (`--address`: a `ray up` cluster, or a local
Ray), starts Ray Serve's HTTP proxy on `settings.host:port`, and runs the application
`settings.app_name`. Deploying again under the same name on a running cluster — a new run
directory, other batching settings, another replica count — updates the application in
place: a rolling update in which each new replica is ready before an old one stops
(app.py), so no request is dropped.

The run directory and its prepared dataset are read by every replica, so on a cluster they
must lie on storage every node sees (the results directory cluster.yaml mounts); the prepared
dataset is located once, here, and handed to the replicas.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from unigrf.serving.recommender import find_prepared_dir, load_run
from unigrf.serving.settings import ServeSettings


def resolve_num_gpus(settings: ServeSettings, cluster_gpus: float) -> float:
    """GPUs per replica: the setting when given; else 1 for `device: cuda`, and for `auto`
    1 where the cluster has a GPU — CPU by default, GPU when present."""
    if settings.num_gpus is not None:
        return float(settings.num_gpus)
    if settings.device == "cuda" or (settings.device == "auto" and cluster_gpus >= 1):
        return 1.0
    return 0.0


def wait_healthy(url: str, timeout_s: float = 120.0) -> dict:
    """GET `url`/health until it answers 200 (the proxy may come up after the replicas)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = err
            time.sleep(0.5)
    raise TimeoutError(f"{url}/health did not answer within {timeout_s:.0f} s ({last})")


def deploy(
    run_dir: str | Path,
    settings: ServeSettings,
    prepared_dir: str | Path | None = None,
    address: str | None = None,
    quiet: bool = True,
) -> str:
    """Deploy `run_dir` (Ray started or joined as `init_ray` does); returns the base URL.

    The run is loaded once here first (CPU), so a broken run directory fails in this process
    with its own message instead of as replicas that never become healthy."""
    import ray
    from ray import serve

    from unigrf.ray_utils import init_ray
    from unigrf.serving.app import build_app

    run_dir = Path(run_dir).resolve()
    prepared = Path(prepared_dir).resolve() if prepared_dir is not None else find_prepared_dir(run_dir)
    load_run(run_dir, prepared)  # fail early, here
    init_ray(address, quiet=quiet)
    num_gpus = resolve_num_gpus(settings, float(ray.cluster_resources().get("GPU", 0)))
    serve.start(http_options={"host": settings.host, "port": settings.port})
    app = build_app(settings, run_dir, prepared, num_gpus)
    serve.run(app, name=settings.app_name, route_prefix="/", blocking=False)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}"
    if address is None:  # a local proxy: wait until it answers (serve.run waited for the replicas)
        wait_healthy(url)
    return url


def undeploy(app_name: str) -> None:
    """Delete the application (its replicas finish their requests first)."""
    from ray import serve

    serve.delete(app_name)
