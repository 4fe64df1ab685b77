"""What produced a result: the code's commit and the versions of the packages that ran it.

Every report records these next to its config and seed (the ablation report's `meta.json`, the
sweep's `summary.json`, a training run's `provenance.json`), so a number can be traced to the
exact code and library versions, and a re-run that differs can be told apart from a change in
the environment. Versions are read from the installed distributions' metadata (no heavy import).
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

# the packages whose versions change results (numerics, search, scheduling, data handling)
PACKAGES = ("torch", "ray", "optuna", "numpy", "pandas", "pyarrow")


def package_versions() -> dict[str, str]:
    """{"python": "3.11.7", "torch": "2.13.0+cpu", ...}; "not installed" for a missing one."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(cwd: str | Path | None = None) -> str:
    """`git rev-parse HEAD` (+ " (uncommitted changes)" when the tree is dirty), else "unknown"."""
    cwd = cwd if cwd is not None else Path(__file__).resolve().parent  # the code that runs
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (uncommitted changes)" if dirty else head or "unknown"
