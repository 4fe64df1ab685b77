"""cluster.yaml and cluster-onprem.yaml pass Ray's own `ray up` validation, offline.

`ray up` (ray.autoscaler._private.commands._bootstrap_config) first fills the provider's
defaults and merges the setup commands (`prepare_config`), then checks the JSON schema shipped
in the ray package and its cross-field rules (`validate_config`); only after that does it call
the cloud. The tests run those two steps, and check what the configs promise: spot GPU
workers that autoscale, torch pinned as in pyproject.toml and installed before the project,
the dashboard port, and one place that sets the code version and the shared storage.
"""

from __future__ import annotations

import copy
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from unigrf.ray_utils import STORAGE_ENV_VAR, resolve_storage_path

REPO = Path(__file__).resolve().parents[1]
AWS = REPO / "cluster.yaml"
ONPREM = REPO / "cluster-onprem.yaml"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def ray_validate(raw: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before it touches a cloud; returns the prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def torch_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("torch==")]
    return pin


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_config_passes_ray_validation(path: Path) -> None:
    config = ray_validate(load(path))
    assert config["head_node_type"] in config["available_node_types"]


def _set(config: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node = config
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return config


def _drop(config: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = config
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    del node[last]
    return config


BROKEN = [
    # (config, mutation, expected error, its message): each a mistake a person could make
    (
        AWS,
        lambda c: _set(c, "available_node_types.gpu_worker.resources", {"GPU": "one"}),
        jsonschema.ValidationError,
        "not of type 'integer'",
    ),
    (AWS, lambda c: _set(c, "max_worker", 4), jsonschema.ValidationError, "'max_worker' was unexpected"),
    (
        AWS,
        lambda c: _drop(c, "available_node_types.gpu_worker.node_config"),
        jsonschema.ValidationError,
        "'node_config' is a required property",
    ),
    (AWS, lambda c: _set(c, "head_node_type", "cpu_head"), ValueError, "must be one of"),
    (
        AWS,
        lambda c: _set(c, "available_node_types.gpu_worker.min_workers", 5),
        ValueError,
        "sum of `min_workers`",
    ),
    (ONPREM, lambda c: _drop(c, "provider.head_ip"), click.ClickException, "head_ip"),
    (
        ONPREM,
        lambda c: _set(c, "available_node_types", {"x": {"resources": {}, "node_config": {}}}),
        click.ClickException,
        "not supported for on-premise",
    ),
]


@pytest.mark.parametrize(
    "path,mutate,error,message", BROKEN, ids=[f"{b[0].stem}-{i}" for i, b in enumerate(BROKEN)]
)
def test_broken_copy_fails_validation(path: Path, mutate, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        ray_validate(mutate(load(path)))


def test_aws_has_cpu_head_and_autoscaling_spot_gpu_workers() -> None:
    config = ray_validate(load(AWS))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    (worker,) = [t for name, t in types.items() if name != config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert worker["resources"]["GPU"] >= 1 and worker["resources"]["CPU"] >= 1
    assert 0 <= worker["min_workers"] < worker["max_workers"] <= config["max_workers"]
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert config["provider"]["type"] == "aws"
    # every node, head and workers, mounts the shared file system before installing anything
    for role in ("head_setup_commands", "worker_setup_commands"):
        mounts = [c for c in config[role] if "mount -t nfs4" in c and '"$UNIGRF_NFS:/" /mnt/shared' in c]
        assert len(mounts) == 1, role


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_setup_installs_pinned_torch_then_the_project_at_one_ref(path: Path) -> None:
    config = ray_validate(load(path))
    pin = torch_pin()
    for role in ("head_setup_commands", "worker_setup_commands"):
        commands = config[role]  # setup_commands already merged in front by prepare_config
        torch_at = [i for i, c in enumerate(commands) if re.search(rf"pip install {re.escape(pin)}(\s|$)", c)]
        project_at = [i for i, c in enumerate(commands) if "pip install -e ~/unigrf" in c]
        checkout_at = [
            i for i, c in enumerate(commands) if 'git checkout --force --detach "$UNIGRF_REF"' in c
        ]
        assert torch_at and project_at and checkout_at, (role, commands)
        assert checkout_at[0] < torch_at[0] < project_at[0], role


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_head_starts_dashboard_and_autoscaler(path: Path) -> None:
    start = " ".join(ray_validate(load(path))["head_start_ray_commands"])
    assert "--dashboard-port=8265" in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_one_place_sets_version_and_shared_paths(path: Path, tmp_path: Path, monkeypatch) -> None:
    text = path.read_text()
    for var in ("UNIGRF_REPO", "UNIGRF_REF", "UNIGRF_RESULTS_DIR", STORAGE_ENV_VAR):
        assert len(re.findall(rf"\b{var}=", text)) == 1, f"{var} must be set in exactly one place"
    # Run the first setup command as Ray would, twice (ray up re-runs it), in a fake HOME.
    first = load(path)["setup_commands"][0]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        subprocess.run(["bash", "-c", first], env=env, check=True)
    assert (tmp_path / ".bashrc").read_text().count("source ~/.unigrf_env") == 1
    shown = subprocess.run(
        ["bash", "-c", "source ~/.bashrc; echo $UNIGRF_RESULTS_DIR; echo $UNIGRF_STORAGE; echo $PATH"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    results, storage, path_var = shown[0], shown[1], shown[2]
    # both on the mount every node shares (EFS on AWS, NFS on-prem)
    assert results.startswith("/mnt/shared/") and storage.startswith("/mnt/shared/")
    assert path_var.startswith(f"{tmp_path}/unigrf-venv/bin:")
    # ... and they are the --results-dir / --storage-path defaults of every command
    monkeypatch.setenv("UNIGRF_RESULTS_DIR", results)
    monkeypatch.setenv(STORAGE_ENV_VAR, storage)
    from unigrf.cli import build_parser

    for argv in (["tune", "tune/x.yaml"], ["train"], ["ablate", "ablations/x.yaml"]):
        assert build_parser().parse_args(argv).results_dir == results, argv
    assert resolve_storage_path(None, tmp_path / "elsewhere") == storage
