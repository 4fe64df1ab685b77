"""An evaluation that keeps its finished batches (`unigrf.evaluation.batch_store`,
`unigrf.training.eval_progress`): interrupted and run again with the same store, it computes
only the missing batches and reports the uninterrupted numbers; batches of another evaluation
(other weights, another λ) are never reused."""

from __future__ import annotations

import dataclasses
import importlib

import pandas as pd
import pytest
import torch
from test_evaluate import LAMBDA_CFG, perturbed_unigrf, random_data

from unigrf.evaluation import evaluate
from unigrf.evaluation.batch_store import fingerprint
from unigrf.training.checkpoint_io import CheckpointError
from unigrf.training.eval_progress import DirectoryStore

pytestmark = pytest.mark.timeout(120)
# the module, not the function `unigrf.evaluation` re-exports under the same name
evaluate_module = importlib.import_module("unigrf.evaluation.evaluate")


class Stop(RuntimeError):
    pass


class StopsAfter(DirectoryStore):
    """Dies right after its `saves`-th write, as a killed process would."""

    def __init__(self, *args, saves: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saves = saves

    def save(self, key, new) -> None:
        super().save(key, new)
        self.saves -= 1
        if self.saves == 0:
            raise Stop("killed")


@pytest.fixture
def counted(monkeypatch):
    """How many batches `evaluate` computes (not read from a store)."""
    calls = []
    original = evaluate_module._BatchScorer.__call__

    def count(self, chunk):
        calls.append(1)
        return original(self, chunk)

    monkeypatch.setattr(evaluate_module._BatchScorer, "__call__", count)
    return calls


def test_an_interrupted_evaluation_resumes_to_the_same_numbers_computing_only_the_rest(tmp_path, counted):
    data = random_data(70, 60, seed=3)
    model = perturbed_unigrf(data)
    cfg = LAMBDA_CFG  # 16 users a batch: 5 batches
    ref_val, ref_frame = evaluate(model, data, "val", cfg, outcomes=True)
    assert len(counted) == 5
    counted.clear()

    with pytest.raises(Stop):
        evaluate(
            model, data, "val", cfg, outcomes=True, store=StopsAfter(tmp_path / "e", 2, tmp_path, saves=1)
        )
    assert len(counted) == 2 and len(list((tmp_path / "e").glob("part_*.pt"))) == 1
    counted.clear()
    val, frame = evaluate(
        model, data, "val", cfg, outcomes=True, store=DirectoryStore(tmp_path / "e", 2, tmp_path)
    )
    assert len(counted) == 3  # the two stored batches were read, not computed
    assert val == ref_val
    pd.testing.assert_frame_equal(frame, ref_frame)

    # test at validation's λ, through the store too: the same as without
    lam = ref_val["cascade_lambda"]
    store = DirectoryStore(tmp_path / "t", 1, tmp_path)
    assert evaluate(model, data, "test", cfg, cascade_lambda=lam, store=store) == evaluate(
        model, data, "test", cfg, cascade_lambda=lam
    )


def test_batches_of_other_weights_or_another_lambda_are_not_reused(tmp_path, counted):
    data = random_data(40, 50, seed=4)
    model = perturbed_unigrf(data)
    store = DirectoryStore(tmp_path / "e", 1, tmp_path)
    evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=1.0, store=store)
    assert len(list((tmp_path / "e").glob("part_*.pt"))) == 3
    counted.clear()
    other_lambda = evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=0.0, store=store)
    assert len(counted) == 3 and other_lambda == evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=0.0)

    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # one more step of training, say
    counted.clear()
    moved = evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=0.0, store=store)
    assert len(counted) == 3 and moved == evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=0.0)


def test_the_fingerprint_reads_weights_users_config_but_not_the_save_interval():
    data = random_data(20, 30, seed=5)
    model = perturbed_unigrf(data)
    users = torch.arange(10).numpy()
    base = fingerprint([model], "val", users, LAMBDA_CFG)
    assert fingerprint([model], "val", users, LAMBDA_CFG) == base
    assert fingerprint([model], "test", users, LAMBDA_CFG) != base
    assert fingerprint([model], "val", users[:9], LAMBDA_CFG) != base
    assert fingerprint([model], "val", users, dataclasses.replace(LAMBDA_CFG, batch_size=8)) != base
    other = perturbed_unigrf(data, seed=3)
    assert fingerprint([other], "val", users, LAMBDA_CFG) != base


def test_a_planted_part_is_refused_without_running_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "e").mkdir()
    torch.save({"x": Payload()}, tmp_path / "e" / "part_00000.pt")
    with pytest.raises(CheckpointError, match="not a loadable evaluation part"):
        DirectoryStore(tmp_path / "e", 1, tmp_path).load("key")
    torch.save({"x": 1}, tmp_path / "e" / "part_00000.pt")
    with pytest.raises(CheckpointError, match="not an evaluation part"):
        DirectoryStore(tmp_path / "e", 1, tmp_path).load("key")
