"""The dashboards shown working: TensorBoard, optuna-dashboard and the Ray dashboard are started
on real outputs of the project and asked, through their HTTP APIs, for what the run reported.

- TensorBoard runs the README's command (`tensorboard --logdir results/runs ...`, read from the
  README itself) on the results directory of a finished 2-epoch run of the plain loop; its
  scalars API must return, per epoch, the losses and validation metrics of the run's history,
  and the test metrics of `metrics.json` at the best epoch.
- optuna-dashboard runs the README's command on the SQLite study of a 2-trial sweep (the
  project's own `unigrf tune` on the session Ray cluster); its JSON API must list the study
  and every trial with the value, parameters and Tune trial id of the sweep's `trials.csv`.
- The Ray dashboard: the session cluster has none (it is started without one), so a small
  local Ray with its dashboard runs in a subprocess, as any local `unigrf` command starts it;
  the dashboard's REST API must show its node, a named actor and a finished task.

Every server runs in its own process group on a free port bound to 127.0.0.1 and is killed in
a `finally`; a test skips only when the dashboard's executable is missing from the environment.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from tiny_configs import TINY_SWEEP

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0  # a server must answer within this (imports on 2 busy cores)

TINY = TINY_SWEEP  # an epoch in about a second


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's pick; the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def executable(name: str) -> str:
    """The console script `name` of this environment (beside its Python), else skip."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this environment ({path} missing)")
    return str(path)


def readme_command(program: str) -> list[str]:
    """The one command line of README.md's bash blocks that runs `program`, as argv."""
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith(f"{program} ")]
    assert len(lines) == 1, f"README.md should show one `{program}` command, found {lines}"
    return shlex.split(lines[0], comments=True)


def with_port(argv: list[str], port: int) -> list[str]:
    """`argv` with its `--port` value replaced; its `--host` must be the loopback address."""
    assert argv[argv.index("--host") + 1] == HOST, argv
    i = argv.index("--port")
    return [*argv[: i + 1], str(port), *argv[i + 2 :]]


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(
    url: str,
    accept: Callable[[Any], bool],
    proc: subprocess.Popen,
    log: Path,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> Any:
    """Poll `url` until its JSON satisfies `accept`; fail with the server's log if the server
    dies or the time runs out."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"server exited with {proc.returncode} before answering {url}:\n{log.read_text()[-3000:]}"
            )
        try:
            last = get_json(url, headers)
            if accept(last):
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as err:
            last = err
        if time.monotonic() > deadline:
            pytest.fail(
                f"{url} did not answer as expected in {timeout_s:.0f} s (last: {last!r}):\n"
                f"{log.read_text()[-3000:]}"
            )
        time.sleep(0.5)


@contextmanager
def server(argv: list[str], cwd: Path, log: Path, **popen: Any) -> Iterator[subprocess.Popen]:
    """Run `argv` in its own process group, output to `log`; the group is killed on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of `proc`, SIGKILL it if it is still there after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------
# TensorBoard on a finished run
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def finished_run(tmp_path) -> tuple[Path, str, dict[str, Any]]:
    """(results' parent directory, run name, fit's result) of a 2-epoch run of the plain loop
    under `<dir>/results/runs/<name>/`, the layout `unigrf train` writes."""
    import torch

    from unigrf.config import derive_max_len, load_config
    from unigrf.data.sequences import SequenceData
    from unigrf.data.synthetic import generate_synthetic
    from unigrf.training.loop import TrainContext, fit
    from unigrf.training.run import run_dir_for

    root = tmp_path
    overrides = {
        **TINY,
        "enhancer.m": 4,
        "train.epochs": 2,
        "name": "tiny-run",
        "results_dir": str(root / "results"),
    }
    cfg = load_config(
        None, [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in overrides.items()]
    )
    log = generate_synthetic(cfg.data.synthetic)
    codes, _ = pd.factorize(log["item"])
    log = log.assign(item_id=codes + 1)
    users = [g for _, g in log.groupby("user", sort=False)]
    data = SequenceData.from_arrays(
        [g["item_id"].to_numpy() for g in users],
        [g["rating"].to_numpy() for g in users],
        [g["timestamp"].to_numpy() for g in users],
        num_items=int(codes.max()) + 1,
        # as prepare resolves it: the config's, or derived from the training lengths
        max_len=cfg.data.resolved_max_len(derive_max_len([len(g) - 2 for g in users])),
        name="tiny",
    )
    torch.set_num_threads(1)  # a fair share of the 2 CI cores (as in test_loop)
    result = fit(cfg, data, TrainContext(run_dir=run_dir_for(cfg), verbose=False))
    return root, cfg.name, result


@pytest.mark.timeout(120)
def test_tensorboard_serves_the_runs_scalars(finished_run):
    root, name, result = finished_run
    argv = with_port(readme_command("tensorboard"), port := free_port())
    assert argv[argv.index("--logdir") + 1] == "results/runs"  # the default results directory
    base = f"http://{HOST}:{port}"
    run = f"{name}/tensorboard"  # epoch scalars; per-step losses are in <name>/tensorboard/steps
    with server([executable("tensorboard"), *argv[1:]], cwd=root, log=root / "tensorboard.log") as proc:
        runs = wait_for(
            f"{base}/data/runs", lambda r: run in r, proc, root / "tensorboard.log", START_TIMEOUT_S
        )
        assert f"{run}/steps" in runs
        tags = get_json(f"{base}/data/plugin/scalars/tags")[run]
        history = result["history"]
        for tag in (
            "train/loss_retrieval",
            "train/loss_ranking",
            "weights/retrieval",
            "val/ndcg@10",
            "val/auc",
        ):
            assert tag in tags, sorted(tags)
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")  # [[wall time, step, value]]
            assert [p[1] for p in points] == [int(h["epoch"]) for h in history]
            assert [p[2] for p in points] == pytest.approx([h[tag] for h in history], rel=1e-6)
        metrics = json.loads((root / "results" / "runs" / name / "metrics.json").read_text())
        assert "test/ndcg@10" in metrics["test"] and "test/auc" in metrics["test"]
        for tag, value in metrics["test"].items():
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")
            assert [(p[1], p[2]) for p in points] == [(metrics["best_epoch"], pytest.approx(value, rel=1e-6))]


# ---------------------------------------------------------------------------------------------
# optuna-dashboard on a sweep's study
# ---------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_optuna_dashboard_lists_the_sweeps_trials(ray_cluster, tmp_path):
    from unigrf.cli import main

    space = {
        "name": "dash",
        "fixed": {**TINY, "train.patience": 5},
        "objective": "val/ndcg@10",
        "num_samples": 2,
        "max_concurrent": 2,
        "sampler": {"kind": "random", "seed": 0},
        "scheduler": {"kind": "fifo", "max_epochs": 1},
        "space": {"enhancer.m": {"int": [0, 8]}, "train.lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    }
    (tmp_path / "dash.yaml").write_text(yaml.safe_dump(space))
    assert (
        main(
            [
                "tune",
                str(tmp_path / "dash.yaml"),
                "--results-dir",
                str(tmp_path / "results"),
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "results" / "tune" / "dash" / "trials.csv")
    assert len(table) == 2 and (table["status"] == "completed").all(), table

    argv = readme_command("optuna-dashboard")
    storage = re.fullmatch(r"sqlite:///results/tune/[\w.-]+/study\.db", argv[1])
    assert storage, f"the README's optuna-dashboard should open results/tune/<sweep>/study.db: {argv}"
    argv = with_port([argv[0], "sqlite:///results/tune/dash/study.db", *argv[2:]], port := free_port())
    base = f"http://{HOST}:{port}"
    log = tmp_path / "optuna-dashboard.log"
    with server([executable("optuna-dashboard"), *argv[1:]], cwd=tmp_path, log=log) as proc:
        studies = wait_for(
            f"{base}/api/studies", lambda s: bool(s["study_summaries"]), proc, log, START_TIMEOUT_S
        )
        (study,) = [s for s in studies["study_summaries"] if s["study_name"] == "dash"]
        assert study["directions"] == ["maximize"]
        detail = get_json(f"{base}/api/studies/{study['study_id']}")
        trials = {attrs["tune_trial_id"]: t for t in detail["trials"] for attrs in [user_attrs(t)]}
        assert set(trials) == set(table["trial_id"])
        for _, row in table.iterrows():
            trial = trials[row["trial_id"]]
            assert trial["state"] == "Complete"
            assert trial["values"] == [pytest.approx(row["objective"], rel=1e-9)]
            params = {p["name"]: p["param_external_value"] for p in trial["params"]}
            assert int(params["enhancer.m"]) == row["enhancer.m"]
            assert float(params["train.lr"]) == pytest.approx(row["train.lr"], rel=1e-9)
        best = max(table["objective"])
        assert [t["values"] for t in detail["best_trials"]] == [[pytest.approx(best, rel=1e-9)]]


def user_attrs(trial: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


# ---------------------------------------------------------------------------------------------
# The Ray dashboard of a local Ray
# ---------------------------------------------------------------------------------------------

# A driver that starts a local Ray with its dashboard, leaves a named actor alive and a task
# finished, prints the dashboard's URL, and shuts Ray down when its stdin closes. Ray's own
# processes share its fate (Ray kills them when the driver dies), so killing it cleans up.
RAY_DRIVER = """
import json, sys, time
import ray

start = time.monotonic()
ctx = ray.init(address="local", num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1",
               dashboard_port=int(sys.argv[1]), log_to_driver=False, configure_logging=False)

@ray.remote(num_cpus=0)
class DashboardProbe:
    def ping(self):
        return "pong"

@ray.remote(num_cpus=0)
def square(x):
    return x * x

probe = DashboardProbe.options(name="dashboard-probe").remote()
assert ray.get(probe.ping.remote()) == "pong" and ray.get(square.remote(3)) == 9
print(json.dumps({"url": ctx.dashboard_url, "node_id": ray.get_runtime_context().get_node_id(),
                  "start_s": time.monotonic() - start}), flush=True)
sys.stdin.read()
ray.shutdown()
"""


def state_api(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a Ray state API reply (`/api/v0/<resource>`)."""
    assert reply["result"], reply
    return reply["data"]["result"]["result"]


@pytest.mark.timeout(120)
def test_ray_dashboard_shows_the_node_an_actor_and_a_task(tmp_path):
    pytest.importorskip("ray.dashboard", reason="Ray's dashboard is not installed (ray[default])")
    port = free_port()
    log = tmp_path / "ray-driver.log"
    # Ray 2.60 protects a local cluster's dashboard with a token (by default the one in
    # ~/.ray/auth_token, made on first use); the test brings its own instead of touching $HOME.
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    auth = {"Authorization": f"Bearer {token}"}
    with server(
        [sys.executable, "-c", RAY_DRIVER, str(port)], tmp_path, log, stdin=subprocess.PIPE, env=env
    ) as proc:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (lines := [x for x in log.read_text().splitlines() if x.startswith('{"url"')]):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"Ray did not start in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.5)
        started = json.loads(lines[0])
        assert started["url"] == f"{HOST}:{port}"
        base = f"http://{HOST}:{port}"

        nodes = state_api(wait_for(f"{base}/api/v0/nodes", lambda r: r["result"], proc, log, 30, auth))
        (node,) = nodes
        assert node["node_id"] == started["node_id"] and node["state"] == "ALIVE"
        assert node["resources_total"]["CPU"] == 1.0
        with pytest.raises(urllib.error.HTTPError, match="401"):  # no token, no dashboard
            get_json(f"{base}/api/v0/nodes")

        (probe,) = [
            a for a in state_api(get_json(f"{base}/api/v0/actors", auth)) if a["name"] == "dashboard-probe"
        ]
        assert probe["class_name"] == "DashboardProbe" and probe["state"] == "ALIVE"

        def square_finished(reply: Any) -> bool:
            return any(t["name"] == "square" and t["state"] == "FINISHED" for t in state_api(reply))

        wait_for(f"{base}/api/v0/tasks", square_finished, proc, log, 30, auth)
        proc.stdin.close()  # the driver shuts Ray down and exits
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
