"""The quiet console (unigrf/console.py): third-party log lines off unless --verbose."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from unigrf import console
from unigrf.cli import build_parser, shows_logs


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["train"], False),
        (["--verbose", "train"], True),
        (["train", "--verbose"], True),
        (["data", "prepare", "--verbose"], True),
        (["ablate", "g.yaml"], False),
        (["ablate", "g.yaml", "--verbose"], True),
        (["tune", "s.yaml"], False),  # Tune's own console at its default verbosity 1
        (["tune", "s.yaml", "--verbose", "2"], True),
        (["--verbose", "tune", "s.yaml"], True),
    ],
)
def test_verbose_shows_the_libraries_log_lines(argv, shown):
    args, _ = build_parser().parse_known_args(argv)
    assert shows_logs(args) is shown


def test_quiet_sets_the_libraries_loggers_to_errors(monkeypatch):
    monkeypatch.setitem(console._state, "verbose", True)
    levels = {name: logging.getLogger(name).level for name in console.THIRD_PARTY_LOGGERS}
    try:
        console.set_verbose(False)
        assert not console.verbose()
        assert all(logging.getLogger(n).level == logging.ERROR for n in console.THIRD_PARTY_LOGGERS)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_a_quiet_local_ray_and_a_ray_data_pipeline_print_nothing(tmp_path):
    """What `unigrf train` does to prepare a large dataset, in a fresh process: not one line
    (Ray's token-auth warning, its start-up banner, Ray Data's progress notices and INFO)."""
    code = (
        "from unigrf import console, ray_utils\n"
        "console.set_verbose(False)\n"
        "ray_utils.init_ray(num_cpus=1, announce=False)\n"
        "import ray, ray.data\n"
        "assert ray.data.range(100).map_batches(lambda b: b).count() == 100\n"
        "ray.shutdown()\n"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == "", (out.stdout, out.stderr)
