"""Checkpoints inside an epoch (`train.checkpoint_every_steps`, `unigrf.training.in_epoch`): a
run stopped in the middle of an epoch resumes at the step it saved and repeats the
uninterrupted run exactly."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import torch
from test_loop import TINY, local, tiny_config, tiny_data, without_times

from unigrf.config import load_config
from unigrf.training import in_epoch
from unigrf.training.checkpoint_io import CheckpointError
from unigrf.training.context import TrainContext
from unigrf.training.in_epoch import EpochProgress, progress_file
from unigrf.training.loop import fit

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)  # bit-identical reruns
    return tiny_data()


class Stop(RuntimeError):
    pass


class StopsInEpoch(TrainContext):
    """Saves every in-epoch checkpoint, then dies right after the one of (`epoch`, `step`)."""

    stop_at = (1, 2)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved: list[tuple[int, int]] = []
        self.train_s: dict[tuple[int, int], float] = {}

    def save_progress(self, state: dict[str, Any], progress: EpochProgress) -> None:
        super().save_progress(state, progress)
        self.saved.append((progress.epoch, progress.steps_done))
        self.train_s[self.saved[-1]] = progress.train_s
        if (progress.epoch, progress.steps_done) == self.stop_at:
            raise Stop(f"killed in epoch {progress.epoch} after step {progress.steps_done}")


class Reports(TrainContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reported: list[int] = []
        self.resumed_at: list[str] = []

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        self.reported.append(int(metrics["epoch"]))
        super().report(metrics, state)

    def log(self, message: str) -> None:
        self.resumed_at.append(message)


EVERY = "train.checkpoint_every_steps=2"


def test_a_run_stopped_inside_an_epoch_resumes_at_its_step_and_repeats_the_uninterrupted_run(data, tmp_path):
    cfg = tiny_config("train.epochs=3", EVERY)
    reference = fit(tiny_config("train.epochs=3"), data, local(tmp_path / "ref"))  # no in-epoch saves

    run = tmp_path / "run"
    stopping = local(run, StopsInEpoch)
    with pytest.raises(Stop):
        fit(cfg, data, stopping)
    assert stopping.saved[-1] == (1, 2) and (0, 2) in stopping.saved  # epoch 0's too, before it ended
    assert progress_file(run).exists()
    assert TrainContext(run).load_checkpoint()["epoch"] == 0  # epoch 1 never finished

    resumed_ctx = local(run, Reports)
    resumed = fit(cfg, data, resumed_ctx)
    assert "resuming epoch 1 after its step 2" in resumed_ctx.resumed_at
    assert resumed_ctx.reported == [1, 2]
    # the training losses of the resumed epoch (their sums span both attempts), every metric,
    # the selection and the test metrics are the uninterrupted run's
    assert without_times(resumed["history"]) == without_times(reference["history"])
    assert resumed["test"] == reference["test"] and resumed["best_epoch"] == reference["best_epoch"]
    assert not progress_file(run).exists()  # removed once its epoch had its checkpoint
    # the epoch's training time counts the steps of the stopped attempt too
    assert resumed["history"][1]["time/train_s"] > stopping.train_s[(1, 2)] > 0


def test_in_epoch_checkpoints_come_every_k_steps_and_after_the_last(data, tmp_path):
    """Every k steps inside the epoch and after its last step (its validation may take long
    too); each is removed once the epoch's own checkpoint is written."""
    ctx = local(tmp_path, StopsInEpoch)
    ctx.stop_at = (-1, -1)
    fit(tiny_config("train.epochs=2", "train.checkpoint_every_steps=1"), data, ctx)
    per_epoch = max(s for e, s in ctx.saved if e == 0)
    assert per_epoch > 2
    assert ctx.saved == [(e, s) for e in (0, 1) for s in range(1, per_epoch + 1)]
    assert not progress_file(tmp_path).exists()


class StopsInEvaluation(TrainContext):
    """Its evaluation `tag` dies after storing its first batch."""

    tag = "final-test"

    def eval_store(self, tag, every):
        store = super().eval_store(tag, every)
        if store is None or tag != self.tag:
            return store
        outer = self

        class Dies(type(store)):
            def save(self, key, new):
                super().save(key, new)
                raise Stop(f"killed in {outer.tag}")

        return Dies(store.directory, store.every, store.root)


@pytest.mark.parametrize("tag", ["epoch_0000-val", "final-val", "final-test"])
def test_a_run_stopped_inside_an_evaluation_resumes_it_to_the_uninterrupted_numbers(
    data, tmp_path, tag, monkeypatch
):
    keys = ("train.epochs=2", "train.checkpoint_every_steps=2", "eval.checkpoint_every_batches=1")
    reference = fit(tiny_config("train.epochs=2"), data, local(tmp_path / "ref"))
    run = tmp_path / "run"
    stopping = local(run, StopsInEvaluation)
    stopping.tag = tag
    with pytest.raises(Stop, match=tag):
        fit(tiny_config(*keys), data, stopping)
    assert list((run / "checkpoints" / "eval" / tag).glob("part_*.pt"))

    evaluate_module = importlib.import_module("unigrf.evaluation.evaluate")
    computed, original = [], evaluate_module._BatchScorer.__call__
    monkeypatch.setattr(
        evaluate_module._BatchScorer, "__call__", lambda self, chunk: computed.append(1) or original(self, chunk)
    )
    ctx = local(run, Reports)
    resumed = fit(tiny_config(*keys), data, ctx)
    if tag == "final-val":  # the last epoch's pass (stored as final-val): its steps were all saved
        assert any(m.startswith("resuming epoch 1 after its step") for m in ctx.resumed_at)
    assert without_times(resumed["history"]) == without_times(reference["history"])
    assert resumed["test"] == reference["test"] and resumed["val"] == reference["val"]
    assert resumed["cascade_lambda"] == reference["cascade_lambda"]
    assert not (run / "checkpoints" / "eval").exists()  # finished evaluations leave nothing
    # the stored batch was read, not computed again (nor the evaluations finished before it)
    cfg = tiny_config(*keys)
    users = evaluate_module._check_users(data, "val", None)
    n = len(list(evaluate_module._batches(data, users, cfg.eval.batch_size)))
    assert n >= 2
    # the last epoch's validation is the final one when its weights are selected (kept on disk
    # as final-val, so a run stopped in its test pass does not evaluate validation again)
    final_val = 0 if reference["best_epoch"] == 1 else n
    expected = {"epoch_0000-val": (n - 1) + n + final_val + n, "final-val": (n - 1) + final_val + n}
    assert len(computed) == expected.get(tag, final_val + n - 1)


def test_a_stale_in_epoch_checkpoint_is_ignored(data, tmp_path):
    """One left behind by a crash between its epoch's checkpoint and its removal belongs to an
    epoch that has finished: resuming from it would go back in time."""
    cfg = tiny_config("train.epochs=2", EVERY)
    stopping = local(tmp_path, StopsInEpoch)
    stopping.stop_at = (0, 2)
    with pytest.raises(Stop):
        fit(cfg, data, stopping)
    stale = progress_file(tmp_path).read_bytes()
    fit(tiny_config("train.epochs=1", EVERY), data, local(tmp_path))  # finishes epoch 0
    progress_file(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    progress_file(tmp_path).write_bytes(stale)  # epoch 0's progress, epoch 0 checkpointed

    latest = TrainContext(tmp_path).load_checkpoint()
    assert in_epoch.load_progress(tmp_path) is not None
    assert TrainContext(tmp_path).load_progress(latest) is None
    ctx = local(tmp_path, Reports)
    resumed = fit(cfg, data, ctx)
    assert ctx.reported == [1]
    reference = fit(cfg, data, local(tmp_path / "ref"))
    assert without_times(resumed["history"]) == without_times(reference["history"])


def test_a_tampered_in_epoch_checkpoint_is_refused_without_running_code(data, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    file = progress_file(tmp_path)
    file.parent.mkdir(parents=True)
    torch.save({"payload": Payload()}, file)
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        TrainContext(tmp_path).load_progress(None)


def test_an_in_epoch_file_without_its_progress_is_refused(data, tmp_path):
    fit(tiny_config("train.epochs=1"), data, local(tmp_path / "src"))
    state = torch.load(tmp_path / "src/checkpoints/epoch_0000/state.pt", weights_only=True)
    file = progress_file(tmp_path)
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    with pytest.raises(CheckpointError, match=r"in_epoch.*not an in-epoch checkpoint"):
        TrainContext(tmp_path).load_progress(None)


def test_ray_contexts_refuse_the_option_with_a_message(data, tmp_path):
    class RayLike(TrainContext):
        in_epoch_checkpoints = False

    with pytest.raises(ValueError, match="train.checkpoint_every_steps .*plain loop only"):
        fit(tiny_config("train.epochs=1", EVERY), data, local(tmp_path, RayLike))
    with pytest.raises(ValueError, match="eval.checkpoint_every_batches .*plain loop only"):
        fit(tiny_config("train.epochs=1", "eval.checkpoint_every_batches=2"), data, local(tmp_path, RayLike))


def test_progress_round_trips_through_its_state():
    torch.manual_seed(3)
    sums = {"retrieval": torch.tensor(1.25), "ranking": torch.tensor(0.5)}
    p = EpochProgress.capture(4, 7, sums, {"ranking": (0.2, 0.9)}, torch.device("cpu"), 12.5)
    q = EpochProgress.from_state(p.to_state())
    assert q.train_s == 12.5
    assert (q.epoch, q.steps_done, q.loss_sums, q.weight_range) == (
        4,
        7,
        {"retrieval": 1.25, "ranking": 0.5},
        {"ranking": (0.2, 0.9)},
    )
    assert torch.equal(q.rng_state, p.rng_state)
    expected = torch.rand(5)
    q.restore_rng(torch.device("cpu"))
    torch.rand(0)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(5), expected)


def test_run_training_resumes_an_epoch_in_progress_and_the_interval_may_change(data, tmp_path, monkeypatch):
    """`unigrf train` treats an in-epoch checkpoint as progress (a changed config is refused),
    and `train.checkpoint_every_steps` is safe to change on a resume."""
    from unigrf.run_identity import RunConfigChanged
    from unigrf.training import run

    monkeypatch.setattr(run, "load_data", lambda cfg: data)
    keys = [*TINY, "train.epochs=2", f"results_dir={tmp_path}", "name=r"]
    run_dir = tmp_path / "runs" / "r"

    save = TrainContext.save_progress

    def stop(self, state, progress):
        save(self, state, progress)
        raise Stop("killed")

    monkeypatch.setattr(TrainContext, "save_progress", stop)
    with pytest.raises(Stop):
        run.run_training(load_config(None, [*keys, EVERY]), verbose=False)
    monkeypatch.undo()
    monkeypatch.setattr(run, "load_data", lambda cfg: data)
    assert progress_file(run_dir).exists() and not any((run_dir / "checkpoints").glob("epoch_*"))
    with pytest.raises(RunConfigChanged, match="train.lr"):
        run.run_training(load_config(None, [*keys, EVERY, "train.lr=0.01"]), verbose=False)
    resumed = run.run_training(load_config(None, [*keys, "train.checkpoint_every_steps=3"]), verbose=False)
    reference = fit(tiny_config("train.epochs=2"), data, local(Path(tmp_path) / "ref"))
    assert without_times(resumed["history"]) == without_times(reference["history"])
