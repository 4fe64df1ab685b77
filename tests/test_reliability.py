"""Faults survived, bad inputs refused, nothing lost (docs/reliability.md lists each case).

- checkpoints hold tensors and plain types only and load with `weights_only=True`; a
  tampered checkpoint (a pickle whose `__reduce__` runs code) is refused, its code never runs;
- a full disk while checkpointing (torch.save raising ENOSPC) leaves the last good checkpoint
  loadable and the run resumable, to the same result as an uninterrupted run;
- an unwritable results directory fails at once (before Ray starts or data is read), exit 2;
- impossible configs are refused before any work, naming the key (and the numbers);
- two processes preparing the same dataset at once both succeed with one intact cache entry;
- same seed, same metrics: the plain loop vs a 1-worker sweep trial; every report records
  config, seed, commit and package versions.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_loop import local, tiny_config, tiny_data, without_times

from unigrf.cli import main
from unigrf.config import ConfigError, DataConfig, SyntheticConfig, load_config
from unigrf.ray_utils import require_workers_fit
from unigrf.results_dir import ResultsDirError, check_writable
from unigrf.training import loop
from unigrf.training.loop import CHECKPOINT_FILE, CheckpointError, TrainContext, fit, load_state_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return tiny_data()


# --------------------------------------------------------------------------------------------
# Safe checkpoints
# --------------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this calls `Path.touch(marker)`: code execution on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_hold_only_tensors_and_plain_types(data, tmp_path):
    fit(tiny_config("train.epochs=2"), data, local(tmp_path))
    for file in [*tmp_path.glob(f"checkpoints/epoch_*/{CHECKPOINT_FILE}"), tmp_path / "best_model.pt"]:
        torch.load(file, map_location="cpu", weights_only=True)  # raises on any other type
    state = load_state_file(tmp_path / "checkpoints/epoch_0001" / CHECKPOINT_FILE)
    assert state["epoch"] == 1 and isinstance(state["history"], list)


def test_a_tampered_checkpoint_cannot_run_code_on_resume(data, tmp_path):
    cfg = tiny_config("train.epochs=3")
    fit(tiny_config("train.epochs=2"), data, local(tmp_path))
    marker = tmp_path / "pwned"
    file = tmp_path / "checkpoints/epoch_0001" / CHECKPOINT_FILE
    state = torch.load(file, weights_only=True)
    state["history"].append(Exploit(marker))  # what an attacker with write access could plant
    with file.open("wb") as fh:
        pickle.dump(state, fh)  # a plain pickle: torch.load reads legacy pickles too
    with pytest.raises(CheckpointError, match=rf"^{file}: not a loadable checkpoint"):
        TrainContext(tmp_path).load_checkpoint()
    with pytest.raises(CheckpointError):
        fit(cfg, data, local(tmp_path))  # resuming refuses it, too
    assert not marker.exists()  # the payload never ran
    torch.save(state, file)  # the same through torch's zip format
    with pytest.raises(CheckpointError):
        TrainContext(tmp_path).load_checkpoint()
    assert not marker.exists()
    # the unsafe way would have run it: proves the test's payload is real
    torch.load(file, weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------------------------
# Disk
# --------------------------------------------------------------------------------------------


def test_full_disk_while_checkpointing_keeps_the_last_good_one(data, tmp_path, monkeypatch):
    cfg = tiny_config("train.epochs=3")
    reference = fit(cfg, data, local(tmp_path / "ref"))
    run = tmp_path / "run"
    real_save = torch.save
    calls = []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # epoch 1's checkpoint: a partial write, then ENOSPC
            f.write(b"partial")  # (a file object: the writer records the OSError's reason)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(loop.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device.*epoch_0000, is kept"):
        fit(cfg, data, local(run))
    monkeypatch.setattr(loop.torch, "save", real_save)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch_0000"]  # no partial epoch_0001, no temporary directory left
    assert TrainContext(run).load_checkpoint()["epoch"] == 0
    resumed = fit(cfg, data, local(run))  # the same command again, with space freed
    assert without_times(resumed["history"]) == without_times(reference["history"])
    assert resumed["test"] == reference["test"]


def unwritable(tmp_path: Path) -> Path:
    """A results directory that cannot be created: its parent is a file (works as root too)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return blocker / "results"


def test_unwritable_results_dir_fails_at_once(tmp_path, capsys, monkeypatch):
    import unigrf.ray_utils

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the results directory was checked")

    monkeypatch.setattr(unigrf.ray_utils, "init_ray", no_ray)
    bad = unwritable(tmp_path)
    with pytest.raises(
        ResultsDirError, match=rf"^results_dir {bad}: not writable \(Not a directory\); pass --results-dir"
    ):
        check_writable(bad)
    if os.geteuid() != 0:  # a read-only directory stops everyone but root
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ResultsDirError, match="Permission denied"):
            check_writable(ro)
    assert check_writable(tmp_path / "new" / "dir") == (tmp_path / "new" / "dir").resolve()
    assert list((tmp_path / "new" / "dir").iterdir()) == []  # the probe file is removed

    from unigrf.data.prepare import prepare_dataset

    with pytest.raises(ResultsDirError):
        prepare_dataset(DataConfig(synthetic=SyntheticConfig(num_users=20, num_items=20)), bad)
    for argv in (
        ["train", "train.epochs=1"],
        ["data", "prepare", "data.synthetic.num_users=20"],
        ["tune", str(REPO / "tune" / "synthetic.yaml")],
        ["ablate", str(REPO / "ablations" / "quick.yaml")],
    ):
        assert main([*argv, "--results-dir", str(bad)]) == 2, argv
        err = capsys.readouterr().err
        assert f"results_dir {bad}: not writable" in err and "Traceback" not in err, err


# --------------------------------------------------------------------------------------------
# Bad configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["enhancer.m=60", "enhancer.top_k=50"], r"enhancer\.m \(60\) must be <= enhancer\.top_k \(50\)"),
        (["data.max_len=0"], r"data\.max_len must be >= 2 .* got 0"),
        (["data.max_len=-5"], r"data\.max_len must be >= 2 .* got -5"),
        (["train.patience=0"], r"train\.patience must be >= 1, got 0"),
        (["train.keep_checkpoints=0"], r"train\.keep_checkpoints must be >= 1"),
        (["train.log_every=0"], r"train\.log_every must be >= 1"),
        (["train.grad_clip=-1"], r"train\.grad_clip must be > 0"),
        (["data.like_threshold=6"], r"data\.like_threshold \(6\) must be in \(1, 5\]"),
        (
            ["data.like_threshold=0.5", "data.dataset=ml-20m"],
            r"data\.like_threshold \(0\.5\) must be in \(0\.5, 5\]",
        ),
        (["enhancer.alpha=1.5"], r"enhancer\.alpha must be a probability"),
        (["model.dim=0"], r"model\.dim must be >= 1"),
        (["eval.batch_size=0"], r"eval\.batch_size must be >= 1"),
        (["data.columns.sep="], r"data\.columns\.sep must not be empty"),
    ],
)
def test_impossible_configs_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_more_workers_than_the_cluster_holds_is_refused():
    cpus = [{"CPU": 2.0}, {"CPU": 3.0}]
    require_workers_fit(tiny_config("train.num_workers=5"), cpus)
    with pytest.raises(
        ConfigError, match=r"train\.num_workers=6 asks for 6 .*has 5 CPU\(s\) on 2 node\(s\), room for 5"
    ):
        require_workers_fit(tiny_config("train.num_workers=6"), cpus)
    gpus = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 2.0}]
    require_workers_fit(tiny_config("train.num_workers=3", "train.use_gpu=true"), gpus)
    with pytest.raises(ConfigError, match=r"num_workers=4 with train\.use_gpu=true .*has 3 GPU\(s\)"):
        require_workers_fit(tiny_config("train.num_workers=4", "train.use_gpu=true"), gpus)
    with pytest.raises(ConfigError, match=r"has 0 GPU"):
        require_workers_fit(tiny_config("train.use_gpu=true"), cpus)


@pytest.mark.ray
def test_train_refuses_more_workers_than_cpus_before_any_work(ray_cluster, tmp_path, monkeypatch):
    from unigrf.training import prepared, run

    def no_data(cfg, verbose=True):  # would be the first piece of work after the check
        raise AssertionError("data prepared before the worker check")

    monkeypatch.setattr(prepared, "load_data_dir", no_data)
    cpus = int(ray_cluster.cluster_resources()["CPU"])
    cfg = tiny_config(f"train.num_workers={cpus + 1}", f"results_dir={tmp_path}")
    with pytest.raises(ConfigError, match=rf"train\.num_workers={cpus + 1} .*has {cpus} CPU"):
        run.run_training(cfg, verbose=False)


# --------------------------------------------------------------------------------------------
# Concurrency: two processes, one cache
# --------------------------------------------------------------------------------------------

PREPARE_SCRIPT = textwrap.dedent(
    """
    import sys
    from unigrf.config import DataConfig, SyntheticConfig
    from unigrf.data.prepare import prepare_dataset
    cfg = DataConfig(synthetic=SyntheticConfig(num_users=300, num_items=80, mean_seq_len=12))
    print("RESULT", prepare_dataset(cfg, sys.argv[1]), flush=True)
    """
)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_two_processes_preparing_one_dataset_share_one_cache(ray_cluster, tmp_path):
    from unigrf.data.sequences import SequenceData

    results = tmp_path / "results"
    address = ray_cluster.get_runtime_context().gcs_address  # joining is faster than starting
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": address}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE_SCRIPT, str(results)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    dirs = {line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("RESULT")}
    assert len(dirs) == 1
    entries = sorted(p.name for p in (results / "data").iterdir())
    assert entries == [Path(dirs.pop()).name]  # one entry, no temporary directory
    # one process prepared; the other waited for its lock ("prepared meanwhile") or, started late
    # on a loaded machine, found the finished entry ("reusing cached"): never two preparers
    assert sum(f"data: prepared {results}" in out for out in outputs) == 1, outputs
    other = [out for out in outputs if f"data: prepared {results}" not in out][0]
    assert "prepared meanwhile by another process" in other or "reusing cached" in other, outputs
    data = SequenceData.load(results / "data" / entries[0])
    assert data.num_users > 0 and json.loads((results / "data" / entries[0] / "meta.json").read_text())


# --------------------------------------------------------------------------------------------
# Reproducibility and provenance
# --------------------------------------------------------------------------------------------


def test_training_run_records_seed_commit_and_versions(data, tmp_path, monkeypatch):
    from unigrf.training import run

    monkeypatch.setattr(run, "load_data", lambda cfg: data)
    run.run_training(
        tiny_config("train.epochs=1", "train.seed=7", f"results_dir={tmp_path}", "name=p"), verbose=False
    )
    provenance = json.loads((tmp_path / "runs/p/provenance.json").read_text())
    assert provenance["seed"] == 7 and provenance["git_commit"]
    assert set(provenance["versions"]) >= {"python", "torch", "ray", "optuna", "numpy", "pandas"}
    assert load_config(tmp_path / "runs/p/config.yaml").train.seed == 7


def test_sweep_summary_records_seed_commit_and_versions(tmp_path):
    from unigrf.sweep.space import resolve
    from unigrf.sweep.tuner import SweepOptions, _write_start_files

    spec, base = resolve(REPO / "tune" / "synthetic.yaml", [f"results_dir={tmp_path}"])
    _write_start_files(tmp_path, spec, base, "s", "sqlite:///x.db", SweepOptions(), 4, 1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_seed"] == base.train.seed and summary["seed"] == spec.sampler.seed
    assert summary["git_commit"] and summary["versions"]["torch"] == torch.__version__
    assert load_config(summary["base_config"]) == base


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_one_worker_sweep_trial_reproduces_the_plain_loop(ray_cluster, tmp_path):
    from unigrf.ablation.cells import run_fixed_configs
    from unigrf.data.prepare import prepare_dataset
    from unigrf.data.sequences import SequenceData

    cfg = tiny_config(
        "train.epochs=2",
        "data.synthetic.num_users=80",
        "data.synthetic.num_items=40",
        "data.synthetic.mean_seq_len=10",
        "data.synthetic.min_seq_len=5",
        f"results_dir={tmp_path / 'results'}",
        "name=repro",
    )
    prepared = prepare_dataset(cfg.data, cfg.results_dir, verbose=False)
    torch.set_num_threads(1)  # a trial's worker reserves one CPU, so it runs one thread
    plain = fit(cfg, SequenceData.load(prepared, max_len=cfg.data.max_len), local(tmp_path / "plain"))
    frame = run_fixed_configs(
        [("repro", cfg)], tmp_path / "fixed", None, resume=False, max_concurrent=1, verbose=0
    )
    row = frame.iloc[0]
    assert row["status"] == "completed", row.get("error")
    assert row["best_epoch"] == plain["best_epoch"]
    for key, value in {**plain["val"], **plain["test"]}.items():
        assert row[key] == value, key  # identical, not approximately equal
    assert without_times(row["history"]) == without_times(plain["history"])


# --------------------------------------------------------------------------------------------
# YAML inputs: one shape of error for configs, search spaces and grids (unigrf.yaml_input)
# --------------------------------------------------------------------------------------------


def test_yaml_inputs_name_file_line_and_key(tmp_path):
    from unigrf.ablation.grid import GridError, load_grid
    from unigrf.sweep.space import SpaceError, load_space

    cases = [
        (load_config, ConfigError, "train:\n  epochs: 2\n  epohcs: 3\n", 3, "train.epohcs", "under train"),
        (
            load_config,
            ConfigError,
            "data:\n  columns:\n    usr: u\n",
            3,
            "data.columns.usr",
            "under data.columns",
        ),
        (
            load_space,
            SpaceError,
            "space: {m: {int: [0, 2]}}\nsampler:\n  kind: tpe\n  sed: 1\n",
            4,
            "sampler.sed",
            "under sampler",
        ),
        (load_space, SpaceError, "name: x\nspaec: {}\n", 2, "spaec", "at the top level"),
        (
            load_grid,
            GridError,
            "variants: [unigrf]\naxis:\n  key: enhancer.m\n  valuse: [1]\n",
            4,
            "axis.valuse",
            "under axis",
        ),
        (
            load_grid,
            GridError,
            "variants: [unigrf]\nrows:\n  - variant: unigrf\n    lable: x\n",
            4,
            "rows[0].lable",
            "under rows[0]",
        ),
    ]
    for i, (load, error, text, line, key, scope) in enumerate(cases):
        path = tmp_path / f"f{i}.yaml"
        path.write_text(text)
        with pytest.raises(error) as err:
            load(path)
        assert str(err.value).startswith(f"{path}:{line}: unknown key {key} (valid keys {scope}: "), str(
            err.value
        )
    for load, error, what in (
        (load_config, ConfigError, "a config"),
        (load_space, SpaceError, "a search space"),
        (load_grid, GridError, "a grid"),
    ):
        path = tmp_path / "list.yaml"
        path.write_text("- 1\n- 2\n")
        with pytest.raises(error, match=rf"^{path}: {what} must be a YAML mapping, got list$"):
            load(path)
        path.write_text("a: [1\nb: 2\n")
        with pytest.raises(error, match=rf"^{path}:\d+: invalid YAML: "):
            load(path)
        with pytest.raises(
            error, match=rf"^{tmp_path / 'missing.yaml'}: cannot read .* \(No such file or directory\)$"
        ):
            load(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------------
# Cleanup: no Ray Train cleaner actor outlives the command (unigrf.ray_utils)
# --------------------------------------------------------------------------------------------

ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, ray
    ray.init(address=sys.argv[1])

    class PlacementGroupCleaner:  # what Ray Train leaves behind: detached, anonymous
        def pid(self):
            import os
            return os.getpid()

    actor = ray.remote(num_cpus=0)(PlacementGroupCleaner).options(lifetime="detached").remote()
    print("PID", ray.get(actor.pid.remote()), flush=True)
    """
)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_cleaner_actors_of_ended_jobs_are_removed(ray_cluster):
    from ray._private import state

    from unigrf.ray_utils import TRAIN_CLEANER_CLASS, remove_stale_train_cleaners

    def alive() -> set[int]:
        actors = state.actors(actor_state_name="ALIVE").values()
        return {int(a["Pid"]) for a in actors if a["ActorClassName"] == TRAIN_CLEANER_CLASS}

    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, address], env=env, capture_output=True, text=True, timeout=120
    )
    pid = int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("PID")))
    assert pid in alive()  # its job ended, the detached actor lives on: an orphan
    assert remove_stale_train_cleaners(include_own_job=False) >= 1
    deadline = time.time() + 30
    while pid in alive() and time.time() < deadline:
        time.sleep(0.5)
    assert pid not in alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_loaded_yaml_mappings_dump_back_as_plain_yaml(tmp_path):
    import yaml

    from unigrf.yaml_input import load_yaml_mapping

    path = tmp_path / "x.yaml"
    path.write_text("a: {b: 1, c: [1, {d: 2}]}\n")
    data = load_yaml_mapping(path, "config", ConfigError)
    assert data.lines == {"a": 1} and yaml.safe_load(yaml.safe_dump(data)) == {
        "a": {"b": 1, "c": [1, {"d": 2}]}
    }
    assert json.loads(json.dumps(data)) == data
