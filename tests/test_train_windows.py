"""The training loop over windows (`data.train_windows`): epoch sizes, the learning-rate
schedule's steps, determinism and resume identity when an epoch is made of many windows per
user."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from test_loop import CrashingContext, Recorder, local, tiny_config, tiny_data, without_times

from unigrf.data.sequences import SequenceData
from unigrf.training.loop import TrainContext, fit


@pytest.fixture(scope="module")
def data() -> SequenceData:
    """Tiny synthetic histories (5-40 items) under windows of 6 items: most users have several."""
    torch.set_num_threads(1)
    return dataclasses.replace(tiny_data(), max_len=6)


@pytest.mark.parametrize("scheme", ["all", "last", "sample"])
def test_an_epoch_is_its_schemes_examples(data, tmp_path, scheme):
    """Steps per epoch follow the epoch's examples (all windows, or one per user), and the
    learning-rate schedule's last step is the last epoch's end."""
    ex = data.train_examples(scheme)
    cfg = tiny_config("train.epochs=2", f"data.train_windows={scheme}", "train.lr_schedule=linear")
    result = fit(cfg, data, local(tmp_path))
    per_epoch = math.ceil(ex.per_epoch / cfg.train.batch_size)
    assert [h["step"] for h in result["history"]] == [per_epoch, 2 * per_epoch]
    assert result["history"][-1]["lr"] == pytest.approx(cfg.train.lr / (2 * per_epoch))  # linear, last step
    if scheme == "all":
        assert ex.per_epoch > 2 * data.num_users  # the windows really are many per user


def test_window_runs_repeat_and_resume_exactly(data, tmp_path):
    """Same seed: the same run; a run killed in epoch 2 and resumed from its checkpoint repeats
    the uninterrupted one exactly (history, test metrics, best epoch)."""
    cfg = tiny_config("train.epochs=4", "data.train_windows=all")
    reference = fit(cfg, data, local(tmp_path / "ref"))
    again = fit(cfg, data, local(tmp_path / "again"))
    assert without_times(again["history"]) == without_times(reference["history"])

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed in epoch 2"):
        fit(cfg, data, local(run, CrashingContext))
    assert TrainContext(run).load_checkpoint()["epoch"] == 1
    resumed_ctx = local(run, Recorder)
    resumed = fit(cfg, data, resumed_ctx)
    assert resumed_ctx.reported == [2, 3]
    assert without_times(resumed["history"]) == without_times(reference["history"])
    assert resumed["test"] == reference["test"] and resumed["best_epoch"] == reference["best_epoch"]

    other = fit(tiny_config("train.epochs=4", "data.train_windows=last"), data, local(tmp_path / "last"))
    assert without_times(other["history"]) != without_times(reference["history"])
