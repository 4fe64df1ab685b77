"""Shared fixtures: paths to the real data in ../shared/data, the benchmark scripts as modules,
and one session-scoped Ray cluster."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ML100K_DIR = SHARED_DATA / "ml-100k"
AMAZON_MI_DIR = SHARED_DATA / "amazon_musical_instruments_5core"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    return require(ML100K_DIR)


@pytest.fixture(scope="session")
def amazon_mi_dir() -> Path:
    return require(AMAZON_MI_DIR)


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module: the benchmarks are scripts, not a package. Registered in
    `sys.modules` while it executes, as an import would, so its dataclasses can resolve their
    (postponed) annotations."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def benchmark_module():
    """`benchmark_module(name)` -> benchmarks/<name>.py loaded as a module."""
    return load_benchmark


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole test session (2 CPUs on the CI machine)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=max(2, os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
        )
    yield ray
    ray.shutdown()
