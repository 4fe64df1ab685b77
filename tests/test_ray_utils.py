"""unigrf.ray_utils: addresses, storage defaults, and sizing trials to a cluster (GPU path included).

No GPU machine is needed: the clusters here are resource dicts shaped like `ray.nodes()` /
`ray.cluster_resources()`, and the Ray Train trainer is built (never run) to read its request.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import yaml

from unigrf import ray_utils as ru
from unigrf.config import load_config

HEAD_NO_CPU = {"CPU": 0.0, "memory": 3e10, "node:__internal_head__": 1.0}
GPU_NODE = {"CPU": 4.0, "GPU": 1.0, "memory": 1.6e10}


# --------------------------------------------------------------------------------------------
# Addresses and storage
# --------------------------------------------------------------------------------------------


def test_resolve_address_prefers_argument_then_env(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ru.resolve_address(None) is None
    assert ru.resolve_address("  ") is None
    assert ru.resolve_address("local") is None
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert ru.resolve_address(None) == "ray://head:10001"
    assert ru.resolve_address("10.0.0.1:6379") == "10.0.0.1:6379"
    assert ru.resolve_address("auto") == "auto"


def test_storage_path_flag_then_env_then_results_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ru.STORAGE_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert ru.resolve_storage_path(None, "results") == str(tmp_path / "results" / "ray")
    monkeypatch.setenv(ru.STORAGE_ENV_VAR, "/mnt/shared/unigrf/ray")
    assert ru.resolve_storage_path(None, "results") == "/mnt/shared/unigrf/ray"
    assert ru.resolve_storage_path("s3://bucket/x", "results") == "s3://bucket/x"  # flag wins
    assert ru.resolve_storage_path("rel/dir", "results") == str(tmp_path / "rel" / "dir")
    monkeypatch.setenv(ru.STORAGE_ENV_VAR, "gs://bucket/unigrf")
    assert ru.resolve_storage_path("", "results") == "gs://bucket/unigrf"  # URIs kept as given


def test_init_ray_fails_fast_and_names_the_address() -> None:
    # In a subprocess: this pytest process may already hold the session Ray.
    code = textwrap.dedent(
        """
        import os, socket
        from unigrf.ray_utils import RayConnectionError, init_ray
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        for address, env in ((f"127.0.0.1:{port}", None), (None, f"ray://127.0.0.1:{port}")):
            if env:
                os.environ["RAY_ADDRESS"] = env
            try:
                init_ray(address)
            except RayConnectionError as err:
                print(err)
            else:
                print("connected?!")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    assert "127.0.0.1:" in lines[0] and "from --address" in lines[0]
    assert "ray://127.0.0.1:" in lines[1] and "from $RAY_ADDRESS" in lines[1]


# --------------------------------------------------------------------------------------------
# A local Ray that misses its start-up window (a busy machine)
# --------------------------------------------------------------------------------------------


class FlakyInit:
    """Stands in for `ray.init`: each of the first `fails` calls starts a child process (as a
    real start leaves its GCS and raylet) and raises Ray's start-up timeout; then succeeds."""

    def __init__(self, fails: int, error: Exception | None = None) -> None:
        self.fails, self.calls, self.children = fails, 0, []
        self.error = error or Exception(
            "The current node timed out during startup. This could happen because some of the "
            "raylet failed to startup or the GCS has become overloaded."
        )

    def __call__(self, **kwargs):
        self.calls += 1
        assert kwargs["address"] == "local"
        if self.calls <= self.fails:
            self.children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
            raise self.error
        return "context"


@pytest.fixture
def no_ray_running(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return ray


def test_a_local_start_that_times_out_is_tried_again_and_its_leftovers_ended(
    no_ray_running, monkeypatch, capsys
) -> None:
    fake = FlakyInit(fails=2)
    monkeypatch.setattr(no_ray_running, "init", fake)
    assert ru.init_ray(quiet=False) is True
    assert fake.calls == 3
    assert not any(psutil.pid_exists(child.pid) for child in fake.children)  # ended and reaped
    out = capsys.readouterr().out
    assert "starting it again (2 of 3)" in out and "starting it again (3 of 3)" in out
    assert "load average" in out


def test_a_local_start_that_keeps_timing_out_is_one_clear_error(no_ray_running, monkeypatch) -> None:
    fake = FlakyInit(fails=ru.LOCAL_START_TRIES)
    monkeypatch.setattr(no_ray_running, "init", fake)
    with pytest.raises(
        ru.RayStartError, match=r"missed Ray's fixed 30 s start-up window 3 times \(load average"
    ):
        ru.init_ray(quiet=False)
    assert fake.calls == ru.LOCAL_START_TRIES
    assert len(fake.children) == ru.LOCAL_START_TRIES
    assert not any(psutil.pid_exists(child.pid) for child in fake.children)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_real_local_start_whose_node_never_registers_is_started_again_cleanly() -> None:
    """Real Ray: the first node's raylet is made never to register (Ray's own 30 s window runs
    out), the second start works, and the first start's GCS and raylet are ended and reaped."""
    code = textwrap.dedent(
        """
        import psutil, ray
        import ray._private.services as services
        from unigrf import ray_utils
        real, first = services.get_node, []
        def never_the_first(gcs_address, node_id):
            first[:] = first or [gcs_address]
            if gcs_address == first[0]:
                raise RuntimeError("not registered (test)")
            return real(gcs_address, node_id)
        services.get_node = never_the_first
        print(ray_utils.init_ray(quiet=True, announce=False))
        children = psutil.Process().children(recursive=True)
        names = [c.name() for c in children if c.status() != psutil.STATUS_ZOMBIE]
        print(names.count("gcs_server"), names.count("raylet"), sum(c.status() == psutil.STATUS_ZOMBIE for c in children))
        print(ray.get(ray.remote(lambda: 41 + 1).remote()))
        ray.shutdown()
        """
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=280, env=env)
    lines = out.stdout.strip().splitlines()
    assert lines[-3:] == ["True", "1 1 0", "42"], out.stdout + out.stderr
    assert "starting it again (2 of 3)" in out.stdout


def test_other_start_failures_are_not_retried(no_ray_running, monkeypatch) -> None:
    fake = FlakyInit(fails=1, error=ValueError("bad num_cpus"))
    monkeypatch.setattr(no_ray_running, "init", fake)
    with pytest.raises(ValueError, match="bad num_cpus"):
        ru.init_ray(quiet=False)
    assert fake.calls == 1
    fake.children[0].kill()


def test_the_cli_shows_ray_start_and_connection_errors_as_one_line() -> None:
    from unigrf.cli import user_error_types

    assert {ru.RayStartError, ru.RayConnectionError} <= set(user_error_types())


# --------------------------------------------------------------------------------------------
# Resources: what one worker asks, how many trials fit
# --------------------------------------------------------------------------------------------


def test_worker_resources() -> None:
    assert ru.worker_resources(False) == {"CPU": 1.0}
    assert ru.worker_resources(True, cpus_per_worker=3) == {"CPU": 3.0, "GPU": 1.0}


@pytest.mark.parametrize(
    "cluster,num_workers,use_gpu,cpus,expected",
    [
        # summed resources, the shape of ray.cluster_resources()
        ({"CPU": 16.0, "GPU": 4.0}, 2, True, 1, 2),  # GPUs bound: 4 workers / 2 per trial
        ({"CPU": 16.0, "GPU": 4.0}, 2, False, 1, 8),  # CPUs bound
        ({"CPU": 6.0, "GPU": 4.0}, 1, True, 4, 1),  # 4-CPU GPU workers: only one fits 6 CPUs
        ({"CPU": 8.0}, 1, True, 1, 1),  # no GPU at all: at least 1 (require_gpus fails first)
        # per node: a worker cannot span nodes
        ([{"CPU": 3.0}, {"CPU": 3.0}], 1, False, 2, 2),  # summed, 6 CPUs would say 3
        ([HEAD_NO_CPU, GPU_NODE, GPU_NODE], 1, True, 1, 2),
        ([HEAD_NO_CPU, GPU_NODE, GPU_NODE], 2, True, 1, 1),  # one 2-GPU-worker trial
        ([HEAD_NO_CPU, GPU_NODE, GPU_NODE], 2, False, 1, 4),  # CPU trials: 8 CPUs / 2
        ([HEAD_NO_CPU, {"CPU": 8.0, "GPU": 4.0}], 1, True, 2, 4),  # a 4-GPU node holds 4 trials
    ],
)
def test_max_concurrent_trials_on_fake_clusters(cluster, num_workers, use_gpu, cpus, expected) -> None:
    assert ru.max_concurrent_trials(cluster, num_workers, use_gpu, cpus) == expected


def _bootstrap_config(tmp_path: Path, max_workers: int = 4) -> Path:
    """A head's ~/ray_bootstrap_config.yaml, as `ray up cluster.yaml` writes it."""
    from ray.autoscaler._private.util import prepare_config

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())
    raw["max_workers"] = max_workers
    raw["available_node_types"]["gpu_worker"]["max_workers"] = 4
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(prepare_config(raw)))
    return path


def test_autoscaler_nodes_from_the_cluster_yaml(tmp_path: Path) -> None:
    assert ru.autoscaler_nodes(tmp_path / "missing.yaml") is None
    nodes = ru.autoscaler_nodes(_bootstrap_config(tmp_path))
    assert nodes == [{"CPU": 4.0, "GPU": 1.0}] * 4  # 4 g5.xlarge, the head not counted
    # the global max_workers caps every node type together
    assert len(ru.autoscaler_nodes(_bootstrap_config(tmp_path, max_workers=2)) or []) == 2


def test_capacity_counts_nodes_the_autoscaler_may_still_add(tmp_path: Path) -> None:
    potential = ru.autoscaler_nodes(_bootstrap_config(tmp_path))
    # just after `ray up`: only the CPU-0 head; a --gpu sweep must still plan for 4 GPU trials
    assert ru.max_concurrent_trials([HEAD_NO_CPU], 1, True) == 1
    capacity = ru.cluster_capacity([HEAD_NO_CPU], potential)
    assert len(capacity) == 5 and ru.max_concurrent_trials(capacity, 1, True) == 4
    # two GPU nodes already up: they stand for two of the four, not two more
    up = [HEAD_NO_CPU, GPU_NODE, GPU_NODE]
    assert ru.total_resources(ru.cluster_capacity(up, potential))["GPU"] == 4.0
    # no autoscaler (a local Ray, `ray start` by hand): what is there is all there is
    assert ru.cluster_capacity(up, None) == up


def test_require_gpus_fails_early_without_gpus() -> None:
    ru.require_gpus(False, [{"CPU": 2.0}])
    ru.require_gpus(True, [HEAD_NO_CPU, {"CPU": 4.0, "GPU": 1.0}])
    with pytest.raises(ValueError, match="no GPU"):
        ru.require_gpus(True, [HEAD_NO_CPU, {"CPU": 8.0}])


# --------------------------------------------------------------------------------------------
# The GPU path of `unigrf train --gpu`: the Ray Train trainer asks one GPU per worker
# --------------------------------------------------------------------------------------------


def test_build_trainer_requests_gpus_with_use_gpu(tmp_path: Path) -> None:
    from unigrf.training.distributed import build_trainer

    cfg = load_config(None, ["train.use_gpu=true", "train.num_workers=2", f"results_dir={tmp_path}"])
    trainer = build_trainer(cfg, tmp_path / "run", str(tmp_path / "ray"), "gpu-run", data_dir=tmp_path)
    scaling = trainer.scaling_config
    assert scaling.use_gpu and scaling.num_workers == 2
    assert scaling.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}
    assert scaling.total_resources["GPU"] == 2.0
    assert trainer.backend_config.backend == "nccl"
    # ... and the CPU path asks none
    cpu_cfg = load_config(None, ["train.num_workers=2", f"results_dir={tmp_path}"])
    cpu = build_trainer(cpu_cfg, tmp_path / "run", str(tmp_path / "ray"), "cpu-run", data_dir=tmp_path)
    assert not cpu.scaling_config.use_gpu and "GPU" not in cpu.scaling_config.resources_per_worker
    assert cpu.backend_config.backend == "gloo"
