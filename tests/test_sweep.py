"""Sweeps end to end on the session Ray cluster: real trainings of a tiny model on tiny
synthetic data, driven by Tune + Optuna (ASHA, multi-objective, kill and resume, fixed configs).

One-worker CPU trials train in the Tune trial's own process (reused between trials), so a
trial costs about its epochs; the budgets below are the smallest that still test the behaviour.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from tiny_configs import TINY_SWEEP

from unigrf.ablation.cells import load_history, run_fixed_configs
from unigrf.cli import main
from unigrf.config import apply_overrides, load_config
from unigrf.sweep import SweepError, SweepOptions, resolve, run_sweep
from unigrf.sweep.results import pareto_mask
from unigrf.sweep.trainable import TRIAL_RESULT

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]

TINY_FIXED = {**TINY_SWEEP, "train.patience": 10}


def write_space(tmp_path: Path, name: str, **settings) -> Path:
    data = {
        "name": name,
        "fixed": TINY_FIXED,
        "objective": "val/ndcg@10",
        "multi_objective": {
            "metrics": ["val/ndcg@10", "val/auc"],
            "modes": ["max", "max"],
            "sampler": "nsga2",
        },
        "sampler": {"kind": "tpe", "seed": 0, "n_startup_trials": 2},
        "space": {
            "enhancer.m": {"int": [0, 8]},
            "weighter.share": {"loguniform": [0.1, 1.0]},
            # from "barely moves" to "learns": trials must differ for ASHA to rank them
            "train.lr": {"loguniform": [1.0e-5, 3.0e-2]},
        },
        **settings,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def study_trials(summary_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    url = json.loads((summary_dir / "summary.json").read_text())["study_storage"]
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


@pytest.mark.timeout(900)
def test_asha_sweep_stops_weak_trials_and_writes_results(ray_cluster, tmp_path):
    space = write_space(
        tmp_path,
        "asha",
        num_samples=6,
        # one rung, at epoch index 1 of 4 epochs: with reduction factor 3 a trial must be in the
        # top third of those that reached it to go on
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 3, "max_epochs": 4},
    )
    spec, base = resolve(space, [f"results_dir={tmp_path / 'results'}"])
    result = run_sweep(spec, base, SweepOptions(max_concurrent=2, verbose=0))
    table = result.table

    assert len(table) == 6 and set(table["status"]) <= {"completed", "stopped"}
    stopped = table[table["status"] == "stopped"]
    completed = table[table["status"] == "completed"]
    assert len(stopped) >= 1, table  # ASHA stopped some trials early...
    assert (stopped["epochs_run"] < 4).all()
    assert len(completed) >= 1 and (completed["epochs_run"] == 4).all()  # ...and let others finish
    assert completed["test/ndcg@10"].notna().all() and stopped["test/ndcg@10"].isna().all()
    assert table["objective"].is_monotonic_decreasing  # best first

    # the best config is the best trial's full config, and `unigrf train` reads it unchanged
    best = load_config(result.sweep_dir / "best_config.yaml")
    top = table.iloc[0]
    assert best.enhancer.m == top["enhancer.m"] and best.train.lr == pytest.approx(top["train.lr"])
    assert best.train.epochs == 4 and best.data.synthetic.num_users == 120

    # the Optuna study in its SQLite database has every trial, told with the Tune objective
    trials = study_trials(result.sweep_dir, result.name)
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_tune_id = {t.user_attrs["tune_trial_id"]: t for t in trials}
    for _, row in table.iterrows():
        assert by_tune_id[row["trial_id"]].params["enhancer.m"] == row["enhancer.m"]
    for _, row in completed.iterrows():
        assert by_tune_id[row["trial_id"]].value == pytest.approx(row["objective"])

    # tables, TensorBoard: per-trial training curves and one HParams run per trial
    assert (result.sweep_dir / "trials.md").read_text().count("\n| ") == 6 + 1  # rows + separator
    assert len(pd.read_csv(result.sweep_dir / "trials.csv")) == 6
    for trial_id in table["trial_id"]:
        assert list((result.sweep_dir / "trials" / trial_id / "tensorboard").glob("events.out.tfevents.*"))
        assert list((result.sweep_dir / "hparams" / trial_id).glob("events.out.tfevents.*"))

    # the same sweep again without --resume is refused instead of mixing two studies
    with pytest.raises(SweepError, match="--resume"):
        run_sweep(spec, base, SweepOptions(max_concurrent=2, verbose=0))


@pytest.mark.timeout(600)
def test_multi_objective_sweep_reports_a_pareto_front(ray_cluster, tmp_path):
    space = write_space(tmp_path, "mo", num_samples=3, scheduler={"kind": "fifo", "max_epochs": 2})
    spec, base = resolve(space, [f"results_dir={tmp_path / 'results'}"])
    result = run_sweep(spec, base, SweepOptions(multi_objective=True, max_concurrent=2, verbose=0))

    assert result.name == "mo-mo" and len(result.table) == 3
    assert (result.table["status"] == "completed").all()  # no ASHA in multi-objective mode
    front = result.pareto
    assert front is not None and len(front) >= 1
    metrics = ["val/ndcg@10", "val/auc"]
    values = result.table[metrics].to_numpy()
    on_front = set(result.table.loc[pareto_mask(values, ["max", "max"]), "trial_id"])
    assert set(front["trial_id"]) == on_front
    for _, row in result.table.iterrows():  # no trial beats a front member on both metrics
        for _, member in front.iterrows():
            assert not (row[metrics] >= member[metrics]).all() or (row[metrics] == member[metrics]).all()
    for trial_id in front["trial_id"]:
        assert (result.sweep_dir / "pareto" / f"{trial_id}.yaml").exists()
    # both objectives were told to Optuna (NSGA-II study with two directions)
    trials = study_trials(result.sweep_dir, result.name)
    assert len(trials) == 3 and all(len(t.values) == 2 for t in trials)
    assert (result.sweep_dir / "pareto.md").exists()


@pytest.mark.timeout(1200)
def test_sweep_resumes_after_the_driver_is_killed(ray_cluster, tmp_path):
    # in-process trials take seconds: more data and epochs than the other tests, so that the
    # kill lands while two trials are still training
    fixed = {**TINY_FIXED, "data.synthetic.num_users": 600, "data.synthetic.mean_seq_len": 30}
    space = write_space(
        tmp_path, "resume", num_samples=4, fixed=fixed, scheduler={"kind": "fifo", "max_epochs": 8}
    )
    results = tmp_path / "results"
    sweep_dir = results / "tune" / "resume"
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "unigrf.cli", "tune", str(space), f"--results-dir={results}"]
    cmd += ["--address", address, "--max-concurrent", "2", "--verbose", "0"]
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 900
        while len(list(sweep_dir.glob(f"trials/*/{TRIAL_RESULT}"))) < 2:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.time() < deadline, "no two trials finished in time"
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob(f"trials/*/{TRIAL_RESULT}")}
    assert 2 <= len(finished) < 4

    assert main(["tune", str(space), f"--results-dir={results}", "--resume", "--verbose", "0"]) == 0

    table = pd.read_csv(sweep_dir / "trials.csv")
    assert len(table) == 4 and set(table["trial_id"]) >= set(finished)
    assert (table["status"] == "completed").all(), table
    # finished trials were kept, not trained again
    for trial_id, mtime in finished.items():
        assert (sweep_dir / "trials" / trial_id / TRIAL_RESULT).stat().st_mtime_ns == mtime
    # the study has exactly one COMPLETE trial per Tune trial, none RUNNING (none lost), and
    # only trials no Tune trial owns (asked just before the kill) may be FAIL
    trials = study_trials(sweep_dir, "resume")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    ids = [t.user_attrs["tune_trial_id"] for t in complete]
    assert sorted(ids) == sorted(table["trial_id"])
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs.get("tune_trial_id") not in ids for t in failed)
    # ...and their points were not lost: each was queued again and run by a resumed Tune trial
    # (one killed between Optuna's ask and its first suggestion drew no point: nothing to rerun;
    # one killed between two suggestions drew part of one: that part is kept)
    for t in failed:
        rerun = [c for c in complete if c.user_attrs.get("requeued_from_trial") == t.number]
        if t.params:  # killed mid-suggestion, the rest of the point is drawn on the rerun
            assert len(rerun) == 1
            assert {k: rerun[0].params[k] for k in t.params} == t.params
        else:
            assert not rerun
    for t in complete:
        row = table[table["trial_id"] == t.user_attrs["tune_trial_id"]].iloc[0]
        assert t.params["enhancer.m"] == row["enhancer.m"] and t.value == pytest.approx(row["objective"])
    # no process of either run is left: Ray Train's per-run PlacementGroupCleaner actors (which
    # never exit on a cluster without a dashboard) were removed by the resumed command
    from ray._private import state

    from unigrf.ray_utils import TRAIN_CLEANER_CLASS

    alive = state.actors(actor_state_name="ALIVE").values()
    assert [a for a in alive if a["ActorClassName"] == TRAIN_CLEANER_CLASS] == []


@pytest.mark.timeout(600)
def test_run_fixed_configs_runs_named_cells_and_skips_finished_ones(ray_cluster, tmp_path):
    spec, base = resolve(
        write_space(tmp_path, "cells", scheduler={"kind": "fifo", "max_epochs": 2}),
        [f"results_dir={tmp_path}"],
    )
    configs = [(f"m{m}", apply_overrides(base, {"enhancer.m": m, "name": f"m{m}"})) for m in (0, 4)]
    experiment = tmp_path / "ablations" / "grid" / "tune"
    frame = run_fixed_configs(configs, experiment, None, resume=False, max_concurrent=2)

    assert list(frame["name"]) == ["m0", "m4"]
    assert (frame["status"] == "completed").all() and frame["test/ndcg@10"].notna().all()
    history = load_history(frame.loc[0, "history_path"])
    assert list(history["epoch"]) == [0.0, 1.0] and "val/ndcg@10" in history
    assert frame.loc[0, "history"][1]["epoch"] == 1.0
    stored = {n: (experiment / "runs" / n / TRIAL_RESULT).stat().st_mtime_ns for n, _ in configs}
    # the final report (stored as the trial's result) carries how the weights were selected, the
    # cascade's λ and the per-user outcome files, written in the trial's run directory
    for name, _ in configs:
        final = json.loads((experiment / "runs" / name / TRIAL_RESULT).read_text())["final"]
        assert final["selection"] == "joint" and final["cascade_lambda"] >= 0
        assert set(final["outcomes"]) == {"val", "test"}
        for split, path in final["outcomes"].items():
            assert Path(path) == (experiment / "runs" / name / "outcomes" / f"{split}.parquet").resolve()
            assert Path(path).is_file()

    # resume: finished cells are skipped (no Tune run at all), the same rows come back
    again = run_fixed_configs(configs, experiment, None, resume=True)
    pd.testing.assert_frame_equal(again.drop(columns=["history"]), frame.drop(columns=["history"]))
    assert {n: (experiment / "runs" / n / TRIAL_RESULT).stat().st_mtime_ns for n, _ in configs} == stored
    # without resume, existing results are never overwritten
    with pytest.raises(SweepError, match="resume"):
        run_fixed_configs(configs, experiment, None, resume=False)


@pytest.mark.timeout(600)
def test_a_diverging_cell_fails_with_its_reason_and_the_grid_goes_on(ray_cluster, tmp_path):
    """A run whose loss becomes NaN (train.lr=1e3) is a failed trial whose error names the epoch
    and step; the other cells finish, and the sweep table and ablation report list it as failed."""
    import dataclasses

    from unigrf.ablation.grid import parse_grid
    from unigrf.ablation.runner import normalise

    spec, base = resolve(
        write_space(tmp_path, "nan", scheduler={"kind": "fifo", "max_epochs": 2}),
        [f"results_dir={tmp_path}"],
    )
    configs = [
        ("ok", apply_overrides(base, {"name": "ok"})),
        ("diverges", apply_overrides(base, {"name": "diverges", "train.lr": 1e3, "train.grad_clip": None})),
    ]
    frame = run_fixed_configs(configs, tmp_path / "grid", None, resume=False, max_concurrent=2)
    rows = frame.set_index("name")
    assert rows.loc["ok", "status"] == "completed" and pd.notna(rows.loc["ok", "test/ndcg@10"])
    assert rows.loc["diverges", "status"] == "error"
    assert "non-finite training loss at epoch 0, step" in rows.loc["diverges", "error"]

    # the ablation layer's results table (what its report renders) carries the failure and why
    grid = parse_grid({"name": "nan", "rows": [{"backbone": "hstu", "variant": "unigrf"}], "seeds": 1})
    cell = grid.expand({})[0]
    results, _ = normalise(frame, [dataclasses.replace(cell, name=n) for n in ("ok", "diverges")])
    status = dict(zip(results["cell"], results["status"]))
    assert (
        status["ok"] == "ok"
        and status["diverges"].startswith("error: ")
        and "non-finite" in status["diverges"]
    )


def test_orphan_trials_are_failed_and_only_drawn_points_requeued(tmp_path):
    """The trials a killed driver left RUNNING: each is marked FAIL; one that had drawn its
    parameters is queued again with them, one killed before its first suggestion is not (it drew
    nothing); a trial a restored Tune trial owns is left alone."""
    from unigrf.sweep.search import close_orphan_trials

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    drawn = study.ask()
    drawn.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    drawn.set_user_attr("tune_trial_id", "a")
    empty = study.ask()  # killed between ask and its first suggestion
    empty.set_user_attr("tune_trial_id", "b")
    owned = study.ask()
    owned.suggest_int("enhancer.m", 0, 8)
    owned.set_user_attr("tune_trial_id", "c")

    assert close_orphan_trials(url, "s", known_tune_ids={"c"}, requeue=True) == 2
    trials = {t.number: t for t in optuna.load_study(study_name="s", storage=url).get_trials()}
    assert trials[drawn.number].state == trials[empty.number].state == optuna.trial.TrialState.FAIL
    assert trials[owned.number].state == optuna.trial.TrialState.RUNNING
    waiting = [t for t in trials.values() if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["requeued_from_trial"] == drawn.number
    assert waiting[0].system_attrs["fixed_params"] == trials[drawn.number].params  # set when it runs


@pytest.mark.parametrize(("random", "multi_objective"), [(False, True), (False, False), (True, False)])
def test_every_sampler_survives_the_pickle_tune_saves_it_with(tmp_path, random, multi_objective):
    """Tune pickles the searcher, sampler included, when a Tuner starts and at every snapshot
    (Optuna 5.1's NSGA-II holds a thread lock): each kind round-trips through Ray's cloudpickle,
    and the copy goes on drawing the same points as the original."""
    import ray.cloudpickle as cloudpickle

    from unigrf.sweep.search import make_sampler

    spec, _ = resolve(write_space(tmp_path, "p", num_samples=4), [])  # NSGA-II, TPE or random
    sampler = make_sampler(spec, random=random, multi_objective=multi_objective, num_samples=4)
    copy = cloudpickle.loads(cloudpickle.dumps(sampler))
    assert type(copy) is type(sampler)

    def draws(s: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=s)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), -t.suggest_float("y", 0, 1)), n_trials=6)
        return [t.params["x"] for t in study.trials]

    assert draws(copy) == draws(sampler)
