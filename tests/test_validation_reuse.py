"""The budget's last epoch is validated as the final validation would be, and reused as it when
its weights are the ones selected (`unigrf.training.validation`): one full pass fewer, every
number the same."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch
from test_loop import local, tiny_config, tiny_data, without_times

from unigrf.training import validation
from unigrf.training.eval_progress import FINAL_VAL, drop_evaluations, eval_dir
from unigrf.training.loop import fit
from unigrf.training.step import build_trainer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)  # bit-identical reruns
    return tiny_data()


@pytest.fixture
def passes(monkeypatch):
    """Every evaluation pass `fit` runs, as (split, whether it ran the cascade)."""
    seen: list[tuple[str, bool]] = []
    original = validation.evaluate

    def spy(model, data, split, cfg, device, cascade=True, **kwargs):
        seen.append((split, cascade))
        return original(model, data, split, cfg, device, cascade=cascade, **kwargs)

    monkeypatch.setattr(validation, "evaluate", spy)
    return seen


def never_equal(monkeypatch):
    """Make every weights digest distinct: the final validation is then always recomputed."""
    counter = itertools.count()
    monkeypatch.setattr(validation, "weights_digest", lambda model: f"digest-{next(counter)}")


def outcome_frames(result):
    return {s: pd.read_parquet(path) for s, path in result["outcomes"].items()}


# the tiny run improves every epoch: maximising NDCG selects the last, minimising it the first
@pytest.mark.parametrize(
    "epochs, objective", [(1, "val/ndcg@10"), (2, "val/ndcg@10"), (2, "-val/ndcg@10")]
)
def test_the_last_epochs_pass_is_the_final_validation_with_the_same_numbers(
    data, tmp_path, passes, monkeypatch, epochs, objective
):
    cfg = tiny_config(f"train.epochs={epochs}", f"train.objective={objective}")
    reused = fit(cfg, data, local(tmp_path / "reused"))
    reused_passes = list(passes)
    passes.clear()
    never_equal(monkeypatch)
    recomputed = fit(cfg, data, local(tmp_path / "recomputed"))

    # without the reuse: each epoch's validation (the last with the cascade), then final val + test
    assert passes == [("val", False)] * (epochs - 1) + [("val", True), ("val", True), ("test", True)]
    last_selected = reused["best_epoch"] == epochs - 1
    assert last_selected == (epochs == 1 or not objective.startswith("-"))
    expected = passes[:-2] + ([] if last_selected else [("val", True)]) + [("test", True)]
    assert reused_passes == expected
    for key in ("val", "test", "cascade_lambda", "best_epoch", "selection"):
        assert reused[key] == recomputed[key], key
    assert without_times(reused["history"]) == without_times(recomputed["history"])
    for split, frame in outcome_frames(reused).items():
        pd.testing.assert_frame_equal(frame, outcome_frames(recomputed)[split])


def test_the_history_keeps_the_cascade_out_when_the_objective_does_not_read_it(data, tmp_path):
    """The last epoch runs the cascade for the final validation; its history row is as any other."""
    result = fit(tiny_config("train.epochs=1"), data, local(tmp_path))
    assert result["history"][0].keys() >= {"val/ndcg@10", "objective"}
    assert not any(k.startswith("val/cascade") for k in result["history"][0])
    assert any(k.startswith("val/cascade") for k in result["val"])  # the final validation has it


def test_final_evaluation_reuses_a_pass_of_the_same_weights_only(data, tmp_path):
    cfg = tiny_config("train.epochs=1")
    model = build_trainer(cfg, data, torch.device("cpu"), 1).model
    ctx = local(tmp_path / "ctx")
    fresh = validation.final_evaluation(model, data, cfg.eval, ctx, None)
    sentinel = {**{k: -1.0 for k in fresh[0]}, "cascade_lambda": 0.5}
    same = validation.FullValidation(validation.weights_digest(model), dict(sentinel), None)
    val, test, lam, _ = validation.final_evaluation(model, data, cfg.eval, ctx, None, same)
    assert lam == 0.5 and all(v == -1.0 for v in val.values())  # read, not evaluated
    other = validation.FullValidation("other weights", dict(sentinel), None)
    val, test, lam, _ = validation.final_evaluation(model, data, cfg.eval, ctx, None, other)
    assert (val, test, lam) == fresh[:3]  # another model's pass: evaluated again


def test_an_epochs_checkpoint_drops_its_evaluations_but_the_final_validation(tmp_path):
    for tag in ("epoch_0000-val", FINAL_VAL, "final-test"):
        (eval_dir(tmp_path) / tag).mkdir(parents=True)
        (eval_dir(tmp_path) / tag / "part_00000.pt").write_bytes(b"x")
    drop_evaluations(tmp_path, keep=(FINAL_VAL,))
    assert sorted(p.name for p in eval_dir(tmp_path).iterdir()) == [FINAL_VAL]
    drop_evaluations(tmp_path)
    assert not eval_dir(tmp_path).exists()
