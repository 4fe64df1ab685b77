"""Nothing lost, nothing executed (issue 37; docs/reliability.md): run/sweep/grid names are names,
deletes stay inside the results directory, nothing read back from it runs code, a run is tied to
its config, one writer per run, failed writes end in one line with nothing partial, Ctrl-C
exits 130, corrupt auxiliary files are named and skipped or refused.

CLI tests drive `unigrf.cli.main` in-process on the tiny synthetic data of `test_loop` (the data
preparation, which starts Ray Data, is replaced by `load_data`); the few that need a real
process (SIGINT, a file-size limit) run `unigrf` in a subprocess; the Ray ones are marked `ray`.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ablation_e2e import TINY_GRID
from test_loop import TINY, tiny_data

from unigrf.cli import build_parser, main
from unigrf.config import ConfigError, apply_overrides, load_config
from unigrf.names import (
    MAX_NAME_LENGTH,
    RESERVED_RUN_NAMES,
    UnsafePathError,
    inside,
    name_problem,
    remove_file,
    remove_tree,
    run_name_problem,
)
from unigrf.run_identity import IDENTITY_FILE, SAFE_TO_CHANGE, RunConfigChanged
from unigrf.run_lock import RunInUseError, hold
from unigrf.training import run as run_module
from unigrf.training.loop import CHECKPOINT_FILE, TrainContext

REPO = Path(__file__).resolve().parents[1]
TRAIN = [*TINY, "train.epochs=2"]


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return tiny_data()


@pytest.fixture
def fast_data(data, monkeypatch):
    """`unigrf train` on the tiny synthetic sequences, without preparing data through Ray."""
    monkeypatch.setattr(run_module, "load_data", lambda cfg: data)
    return data


def train(results: Path, *args: str) -> int:
    return main(["train", *TRAIN, *args, "--results-dir", str(results)])


def one_line(capsys) -> str:
    """The command's stderr, asserted to be one line without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content); symlinks as their target text."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"-> {os.readlink(path)}".encode()
            elif path.is_file():
                out[rel] = path.read_bytes()
    return out


class SandboxEscape(AssertionError):
    """A test's code wrote or deleted outside its sandbox (raised before it did)."""


@contextmanager
def sandbox(root: Path):
    """Within the block, every delete, rename, directory creation and file opened for writing
    must lie inside `root`, or `SandboxEscape` is raised *before* it happens.

    The tests below feed hostile names (`..`, `/`, absolute paths) to code that deletes
    directories: were its guards ever broken, the test must fail, not delete what the names
    point at (as root, `/`). So the primitives themselves are checked here, independently of
    the code under test. Modules are imported before entering (no .pyc writes inside)."""
    root = Path(os.path.realpath(root))

    def check(path, op: str, follow: bool) -> None:
        if isinstance(path, int):  # a file descriptor: opened (and checked) before
            return
        p = Path(os.path.abspath(os.fsdecode(path)))
        places = [Path(os.path.realpath(p.parent)) / p.name]  # the entry itself
        if follow:  # and what it points at, for operations that follow links
            places.append(Path(os.path.realpath(p)))
        for place in places:
            if place != root and root not in place.parents:
                raise SandboxEscape(f"{op} {p} (outside {root})")

    def wrap(module, name, paths=(0,), when=None, follow=False):
        real = getattr(module, name)

        def guarded(*args, **kwargs):
            if when is None or when(*args, **kwargs):
                for i in paths:
                    if i < len(args) and kwargs.get("dir_fd") is None:
                        check(args[i], name, follow)
            return real(*args, **kwargs)

        return module, name, real, guarded

    def writes(file, mode="r", *args, **kwargs):
        return any(c in str(mode) for c in "wax+")

    def creates(path, flags, *args, **kwargs):
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))

    patches = [
        wrap(shutil, "rmtree", follow=True),
        wrap(os, "unlink"),
        wrap(os, "remove"),
        wrap(os, "rmdir"),
        wrap(os, "mkdir"),
        wrap(os, "replace", (0, 1)),
        wrap(os, "rename", (0, 1)),
        wrap(os, "symlink", (1,)),
        wrap(os, "open", when=creates, follow=True),
        wrap(builtins, "open", when=writes, follow=True),
        wrap(io, "open", when=writes, follow=True),
    ]
    try:
        for module, name, _, guarded in patches:
            setattr(module, name, guarded)
        yield root
    finally:
        for module, name, real, _ in patches:
            setattr(module, name, real)


def test_the_sandbox_stops_a_delete_outside_before_it_happens(tmp_path):
    inner, outer = tmp_path / "inner", tmp_path / "outer"
    (inner / "d").mkdir(parents=True)
    outer.mkdir()
    (outer / "f").write_text("precious")
    (inner / "link").symlink_to(outer)
    with sandbox(inner):
        for attempt in (
            lambda: shutil.rmtree(outer),
            lambda: os.unlink(outer / "f"),
            lambda: (outer / "f").unlink(),
            lambda: (outer / "g").write_text("x"),
            lambda: open(outer / "g", "w"),
            lambda: (outer / "new").mkdir(),
            lambda: os.replace(inner / "d", outer / "d"),
            lambda: shutil.rmtree(inner / "link" / "."),
            lambda: remove_tree(outer, tmp_path),  # the code's own guard allows it: the sandbox not
        ):
            with pytest.raises(SandboxEscape):
                attempt()
        shutil.rmtree(inner / "d")  # inside: allowed
        (inner / "ok").write_text("x")
    assert (outer / "f").read_text() == "precious" and not (outer / "g").exists()


# --------------------------------------------------------------------------------------------
# 1. Names are names; deletes stay inside the results directory
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["keep", "a.b", "hstu__unigrf__m=8__synthetic__seed0", "x+y", "_a", "ablate-q-1e-05", "A" * 200]
)
def test_names_are_accepted(name):
    assert name_problem(name) is None
    assert load_config(None, [f"name={name}"]).name == name


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "must not be empty"),
        (".", "is not a name"),
        ("..", "is not a name"),
        ("../../escape", "is not a name"),
        ("/abs/path", "is not a name"),
        ("a/b", "is not a name"),
        ("a\\b", "is not a name"),
        (".hidden", "is not a name"),
        ("-rf", "is not a name"),
        ("a b", "is not a name"),
        ("a\x00b", "is not a name"),
        ("~", "is not a name"),
        ("A" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH}"),
    ],
)
def test_names_that_are_paths_are_refused_naming_the_key(name, why):
    with pytest.raises(ConfigError, match=rf"^name: .*{why}"):
        apply_overrides(load_config(), {"name": name})


def test_run_names_that_ray_storage_uses_for_sweeps_are_reserved():
    from unigrf.ablation.cells import FIXED_SUBDIR
    from unigrf.sweep.trainable import TRAIN_STORAGE_SUBDIR
    from unigrf.sweep.tuner import TUNE_SUBDIR

    assert set(RESERVED_RUN_NAMES) == {TUNE_SUBDIR, FIXED_SUBDIR, TRAIN_STORAGE_SUBDIR}
    for name in RESERVED_RUN_NAMES:  # `<storage>/tune` holds every sweep: not a run's storage
        with pytest.raises(ConfigError, match=rf"^name: '{name}' is reserved"):
            load_config(None, [f"name={name}"])
        assert name_problem(name) is None  # a sweep or grid may be called so


def test_remove_tree_deletes_only_inside_its_root(tmp_path):
    root, outside = tmp_path / "R", tmp_path / "outside"
    (root / "runs" / "a").mkdir(parents=True)
    (root / "runs" / "a" / "f").write_text("x")
    outside.mkdir()
    (outside / "f").write_text("precious")
    (root / "runs" / "link").symlink_to(outside)  # a run directory that is a link to elsewhere
    with sandbox(tmp_path):
        check_remove_tree(root, outside, tmp_path)
    assert (outside / "f").read_text() == "precious" and not (root / "runs" / "link").exists()
    assert inside("s3://bucket/x/y", "s3://bucket/x") and not inside("s3://bucket/x/../z", "s3://bucket/x")
    assert not inside("s3://bucket/x", "s3://bucket/x") and not inside("gs://bucket/x/y", "s3://bucket/x")


def check_remove_tree(root: Path, outside: Path, tmp_path: Path) -> None:
    for target in (root, root / "runs" / "..", outside, tmp_path, root / "runs" / ".." / ".." / "outside"):
        with pytest.raises(UnsafePathError, match="refusing to delete"):
            remove_tree(target, root)
    with pytest.raises(UnsafePathError):
        remove_tree(root / "runs" / "link" / "f", root)  # through the link: outside
    with pytest.raises(UnsafePathError):
        remove_file(outside / "f", root)
    assert remove_tree(root / "runs" / "link", root)  # the link itself goes, not its target
    assert remove_tree(root / "runs" / "a", root) and not (root / "runs" / "a").exists()
    assert not remove_tree(root / "runs" / "a", root)  # already gone


def test_train_restart_with_a_path_as_name_deletes_nothing(tmp_path, capsys):
    """The issue's commands: `name= --restart` (all runs), an absolute path (a directory
    outside), `../../escape` (writes outside): refused before anything is touched."""
    results, outside = tmp_path / "R", tmp_path / "V"
    (results / "runs" / "keep").mkdir(parents=True)
    (results / "runs" / "keep" / "f").write_text("a run")
    outside.mkdir()
    (outside / "f").write_text("precious")
    before = files_under(tmp_path)
    build_parser()  # every command module imported before the sandbox
    with sandbox(tmp_path):
        for name in ("", str(outside), "../../escape", "..", "runs/../..", "/", "~"):
            assert train(results, f"name={name}", "--restart") == 2
            assert one_line(capsys).startswith("unigrf train: config error: name: ")
    assert files_under(tmp_path) == before  # nothing deleted, nothing written (not even a lock)


def test_tune_restart_with_dotdot_as_name_deletes_nothing(tmp_path, capsys):
    """`unigrf tune ... --name .. --restart` wiped the whole results directory."""
    results = tmp_path / "R"
    (results / "runs" / "keep").mkdir(parents=True)
    (results / "runs" / "keep" / "f").write_text("a run")
    before = files_under(tmp_path)
    space = REPO / "tune" / "synthetic.yaml"
    build_parser()
    import unigrf.sweep.tuner  # noqa: F401 - imported before the sandbox

    with sandbox(tmp_path):
        for name in ("..", "", str(tmp_path), "../R", ".", "/"):
            code = main(["tune", str(space), "--name", name, "--restart", "--results-dir", str(results)])
            assert code == 2
            assert one_line(capsys).startswith("unigrf tune: config error: --name: ")
    assert files_under(tmp_path) == before


def test_a_search_space_or_grid_named_like_a_path_is_refused(tmp_path, capsys):
    space = yaml.safe_load((REPO / "tune" / "synthetic.yaml").read_text())
    space["name"] = ".."
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
    assert main(["tune", str(tmp_path / "s.yaml"), "--restart", "--results-dir", str(tmp_path / "R")]) == 2
    assert f"{tmp_path / 's.yaml'}: name: '..' is not a name" in one_line(capsys)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"name": "..", "variants": ["unigrf"]}))
    assert main(["ablate", str(tmp_path / "g.yaml"), "--results-dir", str(tmp_path / "R")]) == 2
    assert f"{tmp_path / 'g.yaml'}: name: '..' is not a name" in one_line(capsys)
    assert not (tmp_path / "R").exists()


def test_pruning_deletes_a_linked_checkpoint_link_not_its_target(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    root = run / "checkpoints"
    for epoch, objective in ((1, 0.5), (2, 0.2)):
        (root / f"epoch_000{epoch}").mkdir(parents=True)
        (root / f"epoch_000{epoch}" / "metrics.json").write_text(json.dumps({"objective": objective}))
    outside.mkdir()
    (outside / "metrics.json").write_text(json.dumps({"objective": 0.1}))
    (root / "epoch_0000").symlink_to(outside)  # worst of three: pruned
    with sandbox(run):
        TrainContext(run, keep_checkpoints=1, verbose=False)._prune(root)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0001", "epoch_0002"]  # best + latest
    assert (outside / "metrics.json").exists()


def test_ray_storage_deletes_stay_in_their_storage_root(tmp_path):
    from unigrf.sweep.tuner import delete_train_runs
    from unigrf.training.distributed import delete_storage

    storage, outside = tmp_path / "ray", tmp_path / "outside"
    (storage / "tune-train").mkdir(parents=True)
    (storage / "run").mkdir()
    outside.mkdir()
    (outside / "f").write_text("precious")
    with sandbox(storage):
        for name in ("..", "", "../outside", str(outside), "/", "tune"):
            with pytest.raises(ConfigError):
                delete_storage(str(storage), name)
        with pytest.raises(UnsafePathError):
            delete_train_runs(str(storage), "x", ["/../../../outside"])
        delete_storage(str(storage), "run")
    assert not (storage / "run").exists() and (outside / "f").exists()


# the fuzz test's names: any text, separator/dot soup, and paths to places that must survive
TRICKY = ["<OUT>", "<OUT>/f", "<R>", "<R>/runs", "<R>/..", "<R>/runs/keep", "keep", "tune", "ray", ".locks"]
NAMES = st.one_of(
    st.text(max_size=24),
    st.text(alphabet=st.sampled_from(list("./\\~ ab=+-_\x00\n")), max_size=12),
    st.lists(st.sampled_from(["..", ".", "", "x", "runs", "keep", "~", "tune"]), min_size=1, max_size=4).map(
        "/".join
    ),
    st.sampled_from(TRICKY),
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=NAMES, restart=st.booleans())
def test_fuzzed_run_and_sweep_names_never_touch_anything_outside(name, restart, monkeypatch):
    """For any name: `unigrf train` (with or without --restart; the training itself replaced by
    a write into its run directory) and a sweep's --restart deletes either refuse the name, or
    write and delete only the run's or the sweep's own paths inside the results directory."""
    import unigrf.ray_utils  # noqa: F401 - everything the code imports, imported before the sandbox
    import unigrf.sweep.tuner  # noqa: F401
    import unigrf.training.distributed  # noqa: F401

    def fake_train(cfg, run_dir, provenance, *args):
        (run_dir / "trained").write_text("x")
        provenance["data"] = {}  # as a real training records it: no dataset prepared here
        return {"best_epoch": 0, "val": {}, "test": {}}

    monkeypatch.setattr(run_module, "_train", fake_train)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results, outside = tmp / "R", tmp / "outside"
        for rel in ("runs/keep/f", "tune/keep/f", "ray/keep/f", "ray/tune/keep/f", "ray/tune-train/keep-1/f"):
            (results / rel).parent.mkdir(parents=True, exist_ok=True)
            (results / rel).write_text("kept")
        (outside / "sub").mkdir(parents=True)
        (outside / "f").write_text("precious")
        name = name.replace("<OUT>", str(outside)).replace("<R>", str(results))
        valid_sweep = name_problem(name) is None
        valid_run = run_name_problem(name) is None
        before = files_under(tmp)
        with sandbox(tmp):  # were the guards broken: a SandboxEscape, not a deleted `/`
            exercise_name(name, restart, results, valid_run, valid_sweep)
        after = files_under(tmp)
        own = ["R/.locks/"]
        if valid_run:
            own += [f"R/runs/{name}/", f"R/ray/{name}/"]
        if valid_sweep:
            own += [f"R/tune/{name}/", f"R/ray/tune/{name}/", f"R/ray/tune-train/{name}-"]
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        assert all(any(p.startswith(prefix) for prefix in own) for p in changed), (name, sorted(changed))
        assert after.get("outside/f") == b"precious"


def exercise_name(name: str, restart: bool, results: Path, valid_run: bool, valid_sweep: bool) -> None:
    """`unigrf train [--restart]` (its training faked), a run's Ray storage delete (`train
    --workers N --restart`) and a sweep's --restart deletes, on `name`: each refuses an invalid
    name with the error its command shows, and goes through with a valid one."""
    from unigrf.sweep.tuner import SweepError, delete_sweep_files, sweep_paths
    from unigrf.training.distributed import delete_storage

    try:
        cfg = apply_overrides(load_config(), {"name": name, "results_dir": str(results)})
        run_module.run_training(cfg, restart=restart, verbose=False)
        assert valid_run
    except ConfigError as err:
        assert not valid_run and str(err).startswith("name: "), err
    try:
        delete_storage(str(results / "ray"), name)
        assert valid_run
    except ConfigError:
        assert not valid_run
    try:
        paths = sweep_paths(results, None, name)
        if restart:
            delete_sweep_files(paths)
        assert valid_sweep
    except SweepError:
        assert not valid_sweep


# --------------------------------------------------------------------------------------------
# 3. A run is tied to its config
# --------------------------------------------------------------------------------------------


def test_a_resume_under_another_config_is_refused_listing_the_keys(tmp_path, fast_data, capsys):
    results = tmp_path / "R"
    assert train(results, "name=r", "train.epochs=1", "data.synthetic.num_users=200") == 0
    config = (results / "runs/r/config.yaml").read_text()
    stored = json.loads((results / "runs/r" / IDENTITY_FILE).read_text())
    assert stored["config"]["data"]["synthetic"]["num_users"] == 200 and len(stored["config_hash"]) == 16
    capsys.readouterr()

    assert train(results, "name=r", "train.epochs=1", "data.synthetic.num_users=250") == 2
    line = one_line(capsys)
    assert line.startswith("unigrf train: config error: run 'r' (")
    assert "data.synthetic.num_users 200 -> 250" in line and "--restart" in line and "new name=" in line
    assert (results / "runs/r/config.yaml").read_text() == config  # not rewritten to say 250

    assert train(results, "name=r", "train.epochs=1", "data.synthetic.num_users=200", "model.size=small") == 2
    assert "model.size 'tiny' -> 'small'" in one_line(capsys)  # refused, not a size-mismatch traceback

    # the keys documented as safe may change: a longer run resumes
    assert train(results, "name=r", "train.epochs=2", "train.patience=3", "data.synthetic.num_users=200") == 0
    assert "resuming after epoch 0" in capsys.readouterr().out
    # and the two ways on work
    assert train(results, "name=r", "data.synthetic.num_users=250", "--restart") == 0
    assert train(results, "name=r2", "data.synthetic.num_users=250") == 0


def test_the_safe_keys_are_the_documented_ones():
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert {"results_dir", "train.epochs", "train.patience", "train.log_every", "eval.batch_size"} <= set(
        SAFE_TO_CHANGE
    )
    for key in SAFE_TO_CHANGE:
        assert f"`{key}`" in doc


def test_the_ray_train_path_refuses_a_changed_config_before_training(tmp_path, monkeypatch):
    """`unigrf train --workers 2`: the run's checkpoints live in Ray storage, not in the run
    directory; the check happens in the driver, before Ray starts."""
    results = tmp_path / "R"
    cfg = load_config(None, [*TRAIN, "name=w", "train.num_workers=2", f"results_dir={results}"])
    (results / "runs/w").mkdir(parents=True)
    from unigrf.run_identity import record

    record(results / "runs/w", cfg)
    monkeypatch.setattr(run_module, "_train", lambda *a: pytest.fail("trained under a changed config"))
    changed = apply_overrides(cfg, {"train.lr": 0.5})
    (results / "ray" / "w").mkdir(parents=True)  # a Ray Train run to resume
    with pytest.raises(RunConfigChanged, match=r"train.lr 0.005 -> 0.5"):
        run_module.run_training(changed, verbose=False)
    (results / "ray" / "w").rmdir()  # nothing trained yet: any config may start it
    monkeypatch.setattr(run_module, "_train", lambda *a: {"best_epoch": 0, "val": {}, "test": {}})
    run_module.run_training(changed, verbose=False)


def test_an_ablation_cell_resumed_under_a_changed_override_is_refused(tmp_path):
    from unigrf.ablation.cells import run_fixed_configs
    from unigrf.run_identity import record
    from unigrf.sweep.tuner import SweepError

    cfg = load_config(None, [*TRAIN, "name=c"])
    experiment = tmp_path / "grid"
    (experiment / "runs" / "c").mkdir(parents=True)
    record(experiment / "runs" / "c", apply_overrides(cfg, {"results_dir": str(Path("results").resolve())}))
    changed = apply_overrides(cfg, {"loss.num_negatives": 99})
    with pytest.raises(
        SweepError, match=r"1 cell\(s\) ran under another config.*c: loss.num_negatives 16 -> 99"
    ):
        run_fixed_configs([("c", changed)], experiment, None, resume=True)  # before Ray starts


def test_an_unreadable_run_record_is_named(tmp_path, fast_data, capsys):
    results = tmp_path / "R"
    assert train(results, "name=r", "train.epochs=1") == 0
    (results / "runs/r" / IDENTITY_FILE).write_text("{not json")
    capsys.readouterr()
    assert train(results, "name=r", "train.epochs=1") == 2
    assert f"{results / 'runs/r' / IDENTITY_FILE}: cannot read the config" in one_line(capsys)


# --------------------------------------------------------------------------------------------
# 4. One writer per run
# --------------------------------------------------------------------------------------------


HOLDER = """
import sys, time
from unigrf.run_lock import hold
with hold(sys.argv[1], sys.argv[2], sys.argv[3], "x"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def lock_holder(tmp_path):
    """Another process holding a lock: `lock_holder(kind, name)` -> its pid."""
    procs = []

    def start(results: Path, kind: str, name: str) -> int:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(results), kind, name], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_train_of_the_same_run_exits_naming_the_holder(tmp_path, fast_data, lock_holder, capsys):
    results = tmp_path / "R"
    pid = lock_holder(results, "run", "r")
    assert train(results, "name=r") == 2
    line = one_line(capsys)
    assert line.startswith(f"unigrf train: error: run 'r' is in use by pid {pid} on host ")
    assert str(results / ".locks" / "run-r.lock") in line
    assert not (results / "runs" / "r").exists()  # it did not touch the run
    assert train(results, "name=other") == 0  # another run is free


def test_a_second_tune_or_ablate_of_the_same_sweep_exits_before_ray(
    tmp_path, lock_holder, capsys, monkeypatch
):
    import unigrf.ray_utils

    monkeypatch.setattr(unigrf.ray_utils, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
    results = tmp_path / "R"
    pid = lock_holder(results, "sweep", "s")
    assert (
        main(["tune", str(REPO / "tune" / "synthetic.yaml"), "--name", "s", "--results-dir", str(results)])
        == 2
    )
    assert f"sweep 's' is in use by pid {pid}" in one_line(capsys)
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "variants": ["unigrf"]}))
    pid = lock_holder(results, "grid", "g")
    assert main(["ablate", str(grid), "--results-dir", str(results)]) == 2
    assert f"grid 'g' is in use by pid {pid}" in one_line(capsys)


def test_the_lock_is_released_when_the_holder_ends(tmp_path):
    with hold(tmp_path, "run", "r", "run") as file:
        assert json.loads(file.with_name(file.name + ".json").read_text())["pid"] == os.getpid()
        with pytest.raises(RunInUseError, match=f"pid {os.getpid()}"):
            with hold(tmp_path, "run", "r", "run"):
                pass
    with hold(tmp_path, "run", "r", "run"):  # free again (also after an exception inside)
        pass
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "run", "k"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"held"
    proc.kill()  # SIGKILL: the operating system releases the lock
    proc.wait()
    with hold(tmp_path, "run", "k", "run"):
        pass


# --------------------------------------------------------------------------------------------
# 2. Nothing read back from a results directory runs code
# --------------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this creates `marker`: code execution on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(run_dir: Path, marker: Path) -> None:
    """What someone with write access to shared results storage could leave in a cell's run
    directory: a pickle under the old record's name and under the new one's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(Exploit(marker))
    (run_dir / ".placement_group.pkl").write_bytes(payload)
    (run_dir / ".placement_group.json").write_bytes(payload)


def test_a_planted_placement_group_pickle_is_never_unpickled(tmp_path, caplog):
    from types import SimpleNamespace

    from unigrf.sweep.search import PlacementGroupCleanup, remove_recorded_placement_group

    marker = tmp_path / "pwned"
    plant(tmp_path / "runs" / "cell", marker)
    trial = SimpleNamespace(config={"cell": "cell"}, trial_id="t1")
    PlacementGroupCleanup(str(tmp_path / "runs"), use_cell_names=True).on_trial_complete(0, [], trial)
    assert not marker.exists()  # the payload never ran, and the callback did not raise
    assert "placement group of trial t1 not removed" in caplog.text
    assert not (tmp_path / "runs/cell/.placement_group.json").exists()  # the bad record is gone
    for record in ("[1, 2]", '{"placement_group_id": "../../x"}', '{"placement_group_id": 5}'):
        (tmp_path / "r").mkdir(exist_ok=True)
        (tmp_path / "r/.placement_group.json").write_text(record)
        with pytest.raises(ValueError, match="not a placement group record"):
            remove_recorded_placement_group(tmp_path / "r")
    pickle.loads(pickle.dumps(Exploit(marker)))  # the unsafe way would have run it
    assert marker.exists()


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_placement_group_record_of_another_job_is_refused(ray_cluster, tmp_path):
    from unigrf.sweep.search import remove_recorded_placement_group

    job = ray_cluster.get_runtime_context().get_job_id()
    other = "ab" * 14 + ("ffffffff" if job != "ffffffff" else "fffffffe")
    (tmp_path / ".placement_group.json").write_text(json.dumps({"placement_group_id": other}))
    with pytest.raises(ValueError, match="belongs to another job"):
        remove_recorded_placement_group(tmp_path)
    (tmp_path / ".placement_group.json").write_text(json.dumps({"placement_group_id": "ab" * 14 + job}))
    assert remove_recorded_placement_group(tmp_path) is False  # this job's, but no such group


def test_tune_state_others_could_write_is_not_restored(tmp_path):
    from unigrf.sweep.tuner import SweepError, require_private_state

    experiment = tmp_path / "exp"
    (experiment / "trial").mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"x")
    (experiment / "trial" / "params.pkl").write_bytes(b"x")
    require_private_state(str(experiment))  # this user's, not group/world writable: restored
    (experiment / "trial" / "params.pkl").chmod(0o664)
    with pytest.raises(SweepError, match=r"params.pkl: is writable by other users \(mode -rw-rw-r--\)"):
        require_private_state(str(experiment))
    (experiment / "trial" / "params.pkl").chmod(0o644)
    (experiment / "searcher-state.pkl").symlink_to(tmp_path / "elsewhere.pkl")
    with pytest.raises(SweepError, match="searcher-state.pkl: is a symbolic link.*--restart"):
        require_private_state(str(experiment))


# --------------------------------------------------------------------------------------------
# 5. A failed write is one line, leaves nothing partial, frees what it wrote
# --------------------------------------------------------------------------------------------


def disk_full_for(monkeypatch, match, error=errno.ENOSPC, after=64):
    """Every atomic write whose target path satisfies `match` fails like a full disk: `after`
    bytes land in the temporary file, then the write raises OSError(`error`)."""
    import unigrf.atomic as atomic

    real_open = open

    class Filling:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            if self.written + len(data) > after:
                self.fh.write(bytes(data)[: max(after - self.written, 0)])
                raise OSError(error, os.strerror(error))
            self.written += len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def opener(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        target = str(Path(file).with_name(Path(file).name.split(".tmp-")[0].lstrip(".")))
        return Filling(fh) if "w" in mode and match(target) else fh

    monkeypatch.setattr(atomic, "open", opener, raising=False)


def leftovers(root: Path) -> list[str]:
    """Temporary files or directories a failed write left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name)


@pytest.mark.parametrize(
    "target, message",
    [
        (
            "state.pt",
            r"runs/r/checkpoints/epoch_0000: cannot write the checkpoint \(No space left on device\)",
        ),
        (
            "runs/r/metrics.json",
            r"runs/r/metrics.json: cannot write \(No space left on device\); the run's checkpoints",
        ),
        ("runs/r/best_model.pt", r"runs/r/best_model.pt: cannot write \(No space left on device\)"),
        ("runs/r/config.yaml", r"runs/r/config.yaml: cannot write \(No space left on device\)"),
    ],
)
def test_a_full_disk_is_one_line_and_nothing_partial(
    tmp_path, fast_data, monkeypatch, capsys, target, message
):
    results = tmp_path / "R"
    disk_full_for(monkeypatch, lambda path: path.endswith(f"/{target}"))
    assert train(results, "name=r") == 2
    line = one_line(capsys)
    assert line.startswith("unigrf train: error: ") and re.search(message, line), line
    assert leftovers(results) == []  # no temporary file or directory left behind
    assert not (results / target).exists() or target == "state.pt"
    monkeypatch.undo()
    monkeypatch.setattr(run_module, "load_data", lambda cfg: fast_data)
    assert train(results, "name=r") == 0  # space freed: the same command finishes the run
    assert json.loads((results / "runs/r/metrics.json").read_text())["epochs_run"] == 2


def test_torchs_own_full_disk_error_is_caught_too(tmp_path, fast_data, monkeypatch, capsys):
    """torch.save's zip writer raises RuntimeError('[enforce fail at inline_container.cc...]'),
    not OSError, when the disk fills (the issue's traceback)."""
    real_save = torch.save

    def enforce_fail(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:  # a checkpoint
            f.write(b"PK\x03\x04 partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 188480 vs 188372")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", enforce_fail)
    assert train(tmp_path / "R", "name=r") == 2
    line = one_line(capsys)
    assert "checkpoints/epoch_0000: cannot write the checkpoint (the write stopped short" in line
    assert "inline_container.cc" in line and leftovers(tmp_path / "R") == []


RLIMITED_TRAIN = """
import resource, sys
sys.path.insert(0, sys.argv[1])
from test_loop import tiny_data
from unigrf.training import run
import torch
torch.set_num_threads(1)
data = tiny_data()
run.load_data = lambda cfg: data
from unigrf.cli import main
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # a file may grow to `limit` bytes
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.timeout(120)
def test_a_real_file_size_limit_while_checkpointing(tmp_path):
    """The kernel refuses the write (EFBIG under RLIMIT_FSIZE, as ENOSPC on a full disk): torch
    raises its RuntimeError, the user sees one line with the real cause, no partial file."""
    results = tmp_path / "R"
    args = ["train", *TRAIN, "name=r", "--results-dir", str(results)]
    proc = subprocess.run(
        [sys.executable, "-c", RLIMITED_TRAIN, str(REPO / "tests"), str(100_000), *args],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0] == (
        f"unigrf train: error: {results}/runs/r/checkpoints/epoch_0000: cannot write the checkpoint "
        "(File too large); free space and run the same command again to resume"
    )
    assert leftovers(results) == [] and not (results / "runs/r/checkpoints/epoch_0000").exists()


def test_a_tensorboard_write_failure_is_one_line(tmp_path, fast_data, monkeypatch, capsys):
    from tensorboard.summary.writer import record_writer

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    assert train(tmp_path / "R", "name=r") == 2
    assert one_line(capsys) == (
        f"unigrf train: error: {tmp_path}/R/runs/r/tensorboard: cannot write TensorBoard events (No space "
        "left on device); the run's checkpoints are kept: free space and run the same command again to resume"
    )


def test_a_read_only_run_directory_is_one_line(tmp_path, fast_data, monkeypatch, capsys):
    import unigrf.atomic as atomic

    results = tmp_path / "R"
    (results / "runs/r").mkdir(parents=True)
    if os.geteuid() != 0:  # permissions stop everyone but root: then simulate them
        (results / "runs/r").chmod(0o500)
    else:
        real_open = open

        def read_only(file, mode="r", *args, **kwargs):
            if "w" in mode and Path(file).parent == results / "runs/r":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(atomic, "open", read_only, raising=False)
    assert train(results, "name=r") == 2
    assert one_line(capsys).startswith(
        f"unigrf train: error: {results}/runs/r/run.json: cannot write (Permission denied)"
    )
    (results / "runs/r").chmod(0o700)


def test_a_report_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    from test_ablation_report import make_report_dir

    out = make_report_dir(tmp_path)
    disk_full_for(monkeypatch, lambda path: path.endswith("/report.md"))
    assert main(["report", str(out), "--quiet"]) == 2
    assert (
        one_line(capsys) == f"unigrf report: error: {out}/report.md: cannot write (No space left on device)"
    )
    assert leftovers(out) == []


# --------------------------------------------------------------------------------------------
# 6. Ctrl-C: exit 130, one line, no traceback; an interrupted grid says so
# --------------------------------------------------------------------------------------------


def test_ctrl_c_in_train_exits_130_and_frees_the_run(tmp_path, fast_data, monkeypatch, capsys):
    from unigrf.training import loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "fit", interrupted)
    assert train(tmp_path / "R", "name=r") == 130
    assert (
        one_line(capsys)
        == "unigrf train: interrupted (the same command again resumes from the last checkpoint)"
    )
    with hold(tmp_path / "R", "run", "r", "run"):  # the lock went with the command
        pass


SIGINT_TRAIN = """
import sys
sys.path.insert(0, sys.argv[1])
from test_loop import tiny_data
from unigrf.training import run
import torch
torch.set_num_threads(1)
data = tiny_data()
run.load_data = lambda cfg: data
from unigrf.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.timeout(180)
def test_a_real_sigint_during_training_exits_130_and_the_run_resumes(tmp_path):
    results = tmp_path / "R"
    args = [
        "train",
        *TINY,
        "train.epochs=400",
        "train.patience=1000",
        "name=r",
        "--results-dir",
        str(results),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_TRAIN, str(REPO / "tests"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    for line in proc.stdout:  # after two epochs
        if line.startswith("epoch   1"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "unigrf train: interrupted (the same command again resumes from the last checkpoint)"
    ]
    done = sorted(p.name for p in (results / "runs/r/checkpoints").iterdir())
    assert done and all(name.startswith("epoch_") for name in done)  # no temporary left
    with hold(results, "run", "r", "run"):
        pass


def test_tune_interrupts_forward_the_first_sigint_and_raise_on_the_second():
    from unigrf.interrupts import tune_interrupts

    stopped = threading.Event()

    def tune_handler(signum, frame):  # what Tune installs for SIGUSR1 inside Tuner.fit()
        stopped.set()

    before = signal.getsignal(signal.SIGINT)
    with tune_interrupts() as state:
        with pytest.raises(KeyboardInterrupt):  # before Tune runs: a plain interrupt
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        signal.signal(signal.SIGUSR1, tune_handler)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert state.interrupted and stopped.is_set()  # Tune asked to stop, gracefully
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") is None


def test_call_interruptibly_turns_sigint_into_keyboard_interrupt():
    from unigrf.interrupts import call_interruptibly

    release = threading.Event()
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        call_interruptibly(lambda: release.wait(30))
    assert time.monotonic() - start < 5
    release.set()
    assert call_interruptibly(lambda: 7) == 7
    with pytest.raises(ZeroDivisionError):
        call_interruptibly(lambda: 1 / 0)


def test_an_interrupted_cell_is_reported_as_interrupted_not_failed(tmp_path):
    import pandas as pd
    from test_ablation_report import make_report_dir

    from unigrf.ablation.report import write_report
    from unigrf.ablation.runner import _status

    assert _status({"status": "interrupted", "error": None}) == "interrupted"
    assert _status({"status": "error", "error": "boom"}) == "error: boom"
    out = make_report_dir(tmp_path)
    results = pd.read_csv(out / "results.csv")
    results.loc[results.index[-2:], "status"] = "interrupted"
    results.to_csv(out / "results.csv", index=False)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "interrupted": True}))
    md = write_report(out).markdown
    assert f"| **Runs** | {len(results)} ({len(results) - 2} finished, 0 failed, 2 interrupted);" in md
    assert "## Interrupted runs" in md and "## Failed runs" not in md
    assert "Ctrl-C stopped the grid" in md


# --------------------------------------------------------------------------------------------
# 7. Corrupt auxiliary files: named, skipped or refused, never a crash loop
# --------------------------------------------------------------------------------------------


def test_an_empty_checkpoint_metrics_file_is_named_not_a_crash_loop(tmp_path, fast_data, capsys):
    results = tmp_path / "R"
    assert train(results, "name=r", "train.epochs=1") == 0
    bad = results / "runs/r/checkpoints/epoch_0000/metrics.json"
    bad.write_text("")
    for epochs in (2, 3):  # every re-run goes on; the unrankable checkpoint is kept
        capsys.readouterr()
        assert train(results, "name=r", f"train.epochs={epochs}") == 0
        err = capsys.readouterr().err
        assert f"warning: {bad}: unreadable (Expecting value" in err and "Traceback" not in err
    assert (results / "runs/r/checkpoints/epoch_0000").is_dir()


def test_a_corrupt_results_csv_is_named(tmp_path, capsys):
    from test_ablation_report import make_report_dir

    out = make_report_dir(tmp_path)
    for content in (b"", b"\xff\xfe\x00garbage", b"a,b\n1,2\n"):
        (out / "results.csv").write_bytes(content)
        assert main(["report", str(out), "--quiet"]) == 2
        line = one_line(capsys)
        assert line.startswith(f"unigrf report: {out}: cannot read the stored results (")


def test_corrupt_trial_and_sweep_files_are_named(tmp_path, capsys):
    from unigrf.ablation.cells import _read_history
    from unigrf.sweep.trainable import TRIAL_RESULT, read_trial_result
    from unigrf.sweep.tuner import SweepError, read_summary

    cfg = load_config()
    (tmp_path / TRIAL_RESULT).write_text('{"config_hash": ')
    assert read_trial_result(tmp_path, cfg) is None  # unfinished: the cell runs again
    assert f"warning: {tmp_path / TRIAL_RESULT}: unreadable" in capsys.readouterr().err
    (tmp_path / "history.json").write_text("[1, 2]")
    assert _read_history(tmp_path / "history.json") is None
    (tmp_path / "summary.json").write_text("")
    with pytest.raises(SweepError, match=r"summary.json: cannot read the sweep's summary"):
        read_summary(tmp_path / "summary.json")


# --------------------------------------------------------------------------------------------
# 8. The smaller cases
# --------------------------------------------------------------------------------------------


def test_a_one_user_dataset_is_one_line(tmp_path, monkeypatch, capsys):
    import numpy as np

    from unigrf.data.sequences import SequenceData

    one = SequenceData.from_arrays(
        [np.arange(1, 13)], [np.full(12, 4)], [np.arange(12)], num_items=13, max_len=20, name="one"
    )
    monkeypatch.setattr(run_module, "load_data", lambda cfg: one)
    assert train(tmp_path / "R", "name=r") == 2
    assert "was not finite at any of the 2 epochs run" in one_line(capsys)


def test_a_directory_as_data_path_is_named(tmp_path, capsys):
    assert train(tmp_path / "R", "data.dataset=csv", f"data.path={tmp_path}", "name=r") == 2
    assert one_line(capsys) == (
        f"unigrf train: error: {tmp_path}: is a directory, not a data file (data.path / --path names the file itself)"
    )


def test_duplicate_yaml_keys_are_refused_with_file_and_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 5\n  lr: 0.01\n  epochs: 50\n")
    with pytest.raises(
        ConfigError, match=rf"^{config}:4: invalid YAML: duplicate key 'epochs' \(first on line 2\)"
    ):
        load_config(config)
    space = yaml.safe_load((REPO / "tune" / "synthetic.yaml").read_text())
    text = yaml.safe_dump(space, sort_keys=False) + "num_samples: 3\n"
    (tmp_path / "s.yaml").write_text(text)
    line = len(text.splitlines())
    assert main(["tune", str(tmp_path / "s.yaml"), "--results-dir", str(tmp_path / "R")]) == 2
    assert f"{tmp_path / 's.yaml'}:{line}: invalid YAML: duplicate key 'num_samples'" in one_line(capsys)
    (tmp_path / "g.yaml").write_text("name: g\nvariants: [unigrf]\nseeds: 1\nseeds: 2\n")
    assert main(["ablate", str(tmp_path / "g.yaml"), "--results-dir", str(tmp_path / "R")]) == 2
    assert f"{tmp_path / 'g.yaml'}:4: invalid YAML: duplicate key 'seeds' (first on line 3)" in one_line(
        capsys
    )
    merged = tmp_path / "m.yaml"  # a merge may be overridden: that is what merging is for
    merged.write_text("base: &b {epochs: 5, lr: 0.01}\ntrain:\n  <<: *b\n  epochs: 7\n")
    from unigrf.yaml_input import load_yaml_mapping

    assert load_yaml_mapping(merged, "config", ConfigError)["train"] == {"epochs": 7, "lr": 0.01}


def test_a_loadable_but_wrong_checkpoint_is_one_line(tmp_path, fast_data, capsys):
    results = tmp_path / "R"
    assert train(results, "name=r", "train.epochs=1") == 0
    state = results / "runs/r/checkpoints/epoch_0000" / CHECKPOINT_FILE
    good = state.read_bytes()
    for payload, why in (
        ({"weights": torch.zeros(2)}, "no 'model' entry"),
        (torch.zeros(3), "holds a Tensor, not a mapping"),
        ({**torch.load(state, weights_only=True), "epoch": "zero"}, "'epoch' is a str, expected int"),
    ):
        torch.save(payload, state)
        capsys.readouterr()
        assert train(results, "name=r", "train.epochs=2") == 2
        assert one_line(capsys) == (
            f"unigrf train: error: {state}: not a checkpoint of a unigrf run ({why}); delete it to resume "
            "from an earlier one, or start over with --restart"
        )
    # another model's weights (a file swapped in from another run): not a size-mismatch traceback
    assert train(results, "name=s", "train.epochs=1", "model.size=small") == 0
    (state).write_bytes((results / "runs/s/checkpoints/epoch_0000" / CHECKPOINT_FILE).read_bytes())
    capsys.readouterr()
    assert train(results, "name=r", "train.epochs=2") == 2
    line = one_line(capsys)
    assert line.startswith(
        f"unigrf train: error: {results}/runs/r: the checkpoint's model does not fit this config"
    )
    state.write_bytes(good)
    assert train(results, "name=r", "train.epochs=2") == 0


# --------------------------------------------------------------------------------------------
# Ray: ablate --resume with a planted pickle; Ctrl-C during ablate
# --------------------------------------------------------------------------------------------


def tiny_grid(tmp_path: Path, **changes) -> Path:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({**TINY_GRID, "figures": [], **changes}))
    return grid


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_ablate_resume_never_runs_a_planted_pickle(ray_cluster, tmp_path, capsys):
    """The issue's attack: a pickle planted in a cell's run directory on shared storage ran when
    `unigrf ablate --resume` finished the cell, and the cell was then FAILED on the console but
    finished in the report. Now: nothing runs, and both say finished."""
    import pandas as pd

    results, marker = tmp_path / "R", tmp_path / "pwned"
    for cell in ("hstu__unigrf__m=0__synthetic__seed0", "hstu__unigrf__m=2__synthetic__seed0"):
        plant(results / "ablations" / "tiny" / "runs" / cell, marker)
    assert main(["ablate", str(tiny_grid(tmp_path)), "--results-dir", str(results), "--resume"]) == 0
    out = capsys.readouterr()
    assert not marker.exists()
    assert "FAILED" not in out.out + out.err and out.out.count("[") >= 2
    table = pd.read_csv(results / "ablations/tiny/results.csv")
    assert (table["status"] == "ok").all()
    assert "| **Runs** | 2 (2 finished, 0 failed);" in (results / "ablations/tiny/report.md").read_text()


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_ctrl_c_during_ablate_marks_unfinished_cells_interrupted_and_exits_130(tmp_path):
    import pandas as pd

    results = tmp_path / "R"
    grid = tiny_grid(
        tmp_path,
        axis={"key": "train.epochs", "values": [1, 400, 500], "label": "epochs"},
        reference="hstu/unigrf/epochs=1",
        overrides={
            **{k: v for k, v in TINY_GRID["overrides"].items() if k != "train.epochs"},
            "train.patience": 1000,
            "enhancer.m": 2,
        },
    )
    cmd = [sys.executable, "-m", "unigrf.cli", "ablate", str(grid), "--results-dir", str(results)]
    proc = subprocess.Popen(
        [*cmd, "--max-concurrent", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"},
    )
    progress = []
    for line in proc.stdout:
        if line.startswith("["):
            progress.append(line)
            time.sleep(3)  # the second cell is training
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=300)
    progress += [line for line in rest.splitlines() if line.startswith("[")]
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "FAILED" not in rest
    assert err.strip().splitlines()[-1] == (
        "unigrf ablate: interrupted: 1 of 3 runs done, 2 interrupted (so marked in "
        f"{results}/ablations/tiny/report.md); the same command with --resume runs them"
    )
    table = pd.read_csv(results / "ablations/tiny/results.csv")
    assert list(table["status"]) == ["ok", "interrupted", "interrupted"]
    assert len(progress) == 1  # the console counted what the report counts
    report = (results / "ablations/tiny/report.md").read_text()
    assert "| **Runs** | 3 (1 finished, 0 failed, 2 interrupted);" in report and "no result" not in report
