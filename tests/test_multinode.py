"""A real 2-node Ray cluster on this machine runs `unigrf tune` through the unchanged CLI.

The scenario runs in a subprocess of its own (this file run as a script), with its own timeout,
so it never meets the session `ray_cluster` of the pytest process: `ray.cluster_utils.Cluster`
starts a head node and a worker node (1 CPU each, told apart by a custom resource), then

    unigrf tune <tiny space> --address <head GCS> --storage-path <tmp>/shared/ray --results-dir ...

searches 2 trials of 1 epoch on tiny synthetic data. Each trial trains in its own 1-CPU Tune
trial actor (one worker on CPU: no Ray Train run), so the 2 trials that run at once must use
both nodes. The scenario asks Ray's state API on which node every trial actor ran, shuts the
cluster down, and writes what it saw to a JSON report. The test then collects every trial's
results from the shared storage path alone (Tune's experiment state and the trials' epoch
checkpoints) and from the sweep's tables.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

SWEEP = "two-nodes"
NUM_TRIALS = 2
CLI_TIMEOUT_S = 420  # the sweep itself (about a minute when the 2 cores are free)
SCENARIO_TIMEOUT_S = 540  # + starting and stopping the cluster

TINY_SPACE = f"""
name: {SWEEP}
fixed:
  data.dataset: synthetic
  data.synthetic.num_users: 60
  data.synthetic.num_items: 40
  data.synthetic.mean_seq_len: 10
  data.synthetic.min_seq_len: 5
  model.size: tiny
  loss.num_negatives: 8
  enhancer.m: 2
  enhancer.top_k: 8
  eval.ks: [10]
  eval.cascade_top_c: 20
  eval.batch_size: 64
  train.epochs: 1
  train.batch_size: 32
objective: val/ndcg@10
num_samples: {NUM_TRIALS}
sampler: {{kind: random, seed: 0}}
scheduler: {{kind: fifo}}
space:
  train.lr: {{loguniform: [1.0e-3, 1.0e-2]}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("unigrf")
    return [str(script)] if script.exists() else [sys.executable, "-m", "unigrf.cli"]


def hermetic_env() -> dict[str, str]:
    """This machine's environment minus anything that would point the CLI elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "UNIGRF_STORAGE", "UNIGRF_RESULTS_DIR")
    }
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def scenario(work: Path) -> dict:
    """Start the 2-node cluster, run the sweep through the CLI, record where its workers ran."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    dashboard_port = free_port()
    report: dict = {}
    t0 = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"unigrf_head": 1},
            "include_dashboard": True,  # the state API below is served by the dashboard
            "dashboard_port": dashboard_port,
        },
    )
    try:
        cluster.add_node(num_cpus=1, resources={"unigrf_worker": 1})
        cluster.wait_for_nodes()
        report["cluster_start_s"] = time.monotonic() - t0
        report["address"] = cluster.address

        space = work / "space.yaml"
        space.write_text(TINY_SPACE)
        command = [
            *cli_command(),
            "tune",
            str(space),
            "--address",
            cluster.address,
            "--storage-path",
            str(work / "shared" / "ray"),
            "--results-dir",
            str(work / "results"),
            "--verbose",
            "0",
        ]
        t1 = time.monotonic()
        try:
            done = subprocess.run(
                command, cwd=work, env=hermetic_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
            )
            report["cli_returncode"] = done.returncode
            report["cli_output_tail"] = (done.stdout + done.stderr)[-6000:]
        except subprocess.TimeoutExpired as err:
            report["cli_returncode"] = "timeout"
            report["cli_output_tail"] = str(err.stdout or "")[-3000:] + str(err.stderr or "")[-3000:]
        report["sweep_s"] = time.monotonic() - t1

        ray.init(address=cluster.address, log_to_driver=False)
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        report["head_node"] = next(i for i, r in nodes.items() if "unigrf_head" in r)
        report["worker_node"] = next(i for i, r in nodes.items() if "unigrf_worker" in r)
        # one-worker CPU trials train in their Tune trial actor (ImplicitFunc), not a Train worker.
        # The state API can answer before the GCS has every (now dead) trial actor on record, or
        # with a partial list on a loaded machine: ask again for a while before counting.
        deadline = time.monotonic() + 30
        while True:
            actors = list_actors(
                address=f"http://127.0.0.1:{dashboard_port}",
                detail=True,
                limit=1000,
                raise_on_missing_output=False,
            )
            # the class is named `ImplicitFunc` or by its qualified name
            # (`wrap_function.<locals>.ImplicitFunc`), depending on which record the GCS answers from
            trial_actors = [a.node_id for a in actors if a.class_name.rsplit(".", 1)[-1] == "ImplicitFunc"]
            if len(trial_actors) >= NUM_TRIALS or time.monotonic() > deadline:
                break
            time.sleep(1)
        report["actor_classes"] = sorted({a.class_name for a in actors})
        report["trial_actor_nodes"] = trial_actors
        ray.shutdown()
    finally:
        cluster.shutdown()
    report["total_s"] = time.monotonic() - t0
    return report


@pytest.mark.timeout(SCENARIO_TIMEOUT_S + 60)
def test_tune_cli_runs_trials_on_both_nodes_of_a_two_node_cluster(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    # A Ray temp dir of its own (short: Ray's socket paths live under it). ray.cluster_utils
    # writes its head's address to <temp dir>/ray/ray_current_cluster, which any `ray.init()`
    # on this machine would otherwise follow: to this cluster while it runs, or to a dead one
    # if the scenario were killed.
    ray_tmp = tempfile.mkdtemp(prefix="unigrf-mn-", dir="/tmp")
    env = {**hermetic_env(), "RAY_TMPDIR": ray_tmp}
    # Own session: on a timeout the whole group (Ray's node processes too) is killed.
    proc = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path), str(report_file)], env=env, start_new_session=True
    )
    try:
        proc.wait(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the 2-node scenario took more than {SCENARIO_TIMEOUT_S} s (Ray logs: {ray_tmp})")
    assert proc.returncode == 0 and report_file.exists(), (
        f"scenario failed (exit {proc.returncode}; {ray_tmp})"
    )
    shutil.rmtree(ray_tmp, ignore_errors=True)
    report = json.loads(report_file.read_text())
    assert report["cli_returncode"] == 0, report["cli_output_tail"]

    # Both nodes ran trials: one trial actor (training in its own process) per 1-CPU node.
    head, worker = report["head_node"], report["worker_node"]
    assert head != worker
    assert len(report["trial_actor_nodes"]) == NUM_TRIALS, (
        f"trial actors on record: {report['trial_actor_nodes']}; actor classes: {report['actor_classes']}"
    )
    assert set(report["trial_actor_nodes"]) == {head, worker}

    # Every trial's results come back from the shared storage path alone ...
    from ray.tune import ExperimentAnalysis

    storage = tmp_path / "shared" / "ray"
    analysis = ExperimentAnalysis(str(storage / "tune" / SWEEP))
    frame = analysis.dataframe()
    assert len(frame) == NUM_TRIALS
    assert frame["objective"].between(0.0, 1.0).all() and (frame["final"] == 1).all()
    for trial in analysis.trials:
        trial_dir = storage / "tune" / SWEEP / trial.trial_id
        assert any(trial_dir.glob("checkpoint_*/state.pt")), (
            f"no checkpoint of {trial.trial_id} in {trial_dir}"
        )
    # ... and the sweep's own table lists them all.
    table = (tmp_path / "results" / "tune" / SWEEP / "trials.csv").read_text().strip().splitlines()
    assert len(table) == 1 + NUM_TRIALS


def main(work: str, report_path: str) -> int:
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    report = scenario(work_dir)
    Path(report_path).write_text(json.dumps(report, indent=2))
    for key in ("cluster_start_s", "sweep_s", "total_s"):
        print(f"{key}: {report.get(key, float('nan')):.1f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} WORK_DIR REPORT_JSON (run by pytest: tests/test_multinode.py)")
    sys.exit(main(sys.argv[1], sys.argv[2]))
