"""A new best epoch overwrites the kept weights in place: one copy of the model, never two."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unigrf.training.selection import Selection, snapshot


@pytest.mark.timeout(30)
def test_a_new_best_is_written_into_the_same_buffers():
    model = nn.Linear(4, 3)
    sel = Selection("model", [(1.0, "val/ndcg@10")], model)
    assert sel.update(0, {"val/ndcg@10": 0.1})
    first = {k: v.data_ptr() for k, v in sel.best_state.items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    assert sel.update(1, {"val/ndcg@10": 0.2})
    assert {k: v.data_ptr() for k, v in sel.best_state.items()} == first
    assert torch.equal(sel.best_state["weight"], model.weight)
    with torch.no_grad():
        model.weight.add_(1.0)  # not a best: the kept copy stays the epoch-1 weights
    assert not sel.update(2, {"val/ndcg@10": 0.15})
    sel.restore_best()
    assert torch.equal(model.weight, sel.best_state["weight"])


@pytest.mark.timeout(30)
def test_a_state_of_another_shape_is_copied_afresh():
    kept = snapshot(nn.Linear(4, 3))
    fresh = snapshot(nn.Linear(5, 3), kept)
    assert fresh is not kept and fresh["weight"].shape == (3, 5)
    assert snapshot(nn.Linear(4, 3), kept) is kept
