"""The ranking prior: its user term is the count model's smoothed rate, computed causally; the
model's evaluation paths agree with it on; off, the ranking logits are the head's alone."""

import math

import numpy as np
import pytest
import torch
from test_loop import tiny_config, tiny_data

from unigrf.evaluation.evaluate import evaluate
from unigrf.model import build_model
from unigrf.model.ranking_prior import PSEUDO_COUNTS, RankingPrior


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_user_terms_count_the_likes_strictly_before_each_position():
    levels = torch.tensor([False, False, False, False, True, True])  # levels 4, 5 are likes
    prior = RankingPrior(num_items=5, num_levels=5, like_levels=levels, like_rate=0.6)
    feedback = torch.tensor([[5, 1, 4, 4, 0], [2, 0, 0, 0, 0]])
    got = prior.user_terms(feedback)
    a, g = PSEUDO_COUNTS, 0.6
    for row, fb in enumerate(feedback.tolist()):
        likes = count = 0
        for col, level in enumerate(fb):
            expected = _logit((likes + a * g) / (count + a)) - _logit(g)
            assert got[row, col].item() == pytest.approx(expected, abs=1e-6)
            if level > 0:
                likes += int(level >= 4)
                count += 1
    # the next item after the first `lengths` interactions
    nxt = prior.next_user_term(feedback, torch.tensor([3, 1]))
    assert nxt[0].item() == pytest.approx(_logit((2 + a * g) / (3 + a)) - _logit(g), abs=1e-6)
    assert nxt[1].item() == pytest.approx(_logit((0 + a * g) / (1 + a)) - _logit(g), abs=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="like_levels"):
        RankingPrior(5, 5, like_levels=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="like_rate"):
        RankingPrior(5, 5, like_rate=1.0)


def _model(*overrides, data=None):
    data = data or tiny_data()
    cfg = tiny_config("model.ranking_prior=true", *overrides)
    torch.manual_seed(0)
    model = build_model(
        cfg, data.num_items, data.num_levels, data.max_len, None, data.like_levels, data.train_like_rate
    )
    return model.eval(), data, cfg


def test_with_a_silent_head_the_logit_is_the_count_models_user_rate():
    model, data, _ = _model()
    with torch.no_grad():
        last = model.rank_head[-1]
        last.weight.zero_()
        last.bias.zero_()
    users = np.arange(8)
    batch = data.eval_batch(users, "val")
    _, logits = model.score_eval(batch)
    g = data.train_like_rate
    for row, u in enumerate(users):
        n = int(batch["lengths"][row])
        start = data.offsets[u] + data.lengths[u] - 2 - n
        likes = int((data.ratings[start : start + n] >= data.like_threshold).sum())
        expected = _logit((likes + PSEUDO_COUNTS * g) / (n + PSEUDO_COUNTS))
        assert logits[row].item() == pytest.approx(expected, abs=1e-5)


def test_the_one_pass_and_two_pass_paths_agree():
    model, data, _ = _model()
    batch = data.eval_batch(np.arange(16), "test")
    with torch.no_grad():
        _, two_pass = model.score_eval(batch)
        _, prefix = model.eval_prefix(batch)
        one_pass = model.score_candidates(
            None, None, None, batch["lengths"], batch["targets"][:, None], prefix=prefix
        )
        again = model.score_candidates(
            batch["items"],
            batch["feedback"],
            batch["timestamps"],
            batch["lengths"],
            batch["targets"][:, None],
        )
    torch.testing.assert_close(one_pass[:, 0], two_pass, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, one_pass, rtol=1e-5, atol=1e-5)


def test_the_prior_trains_and_its_buffers_travel_with_the_weights():
    model, data, cfg = _model()
    model.train()
    batch = data.train_batch(np.arange(16))
    loss = model.losses(batch)["ranking"]
    loss.backward()
    assert model.ranking_prior.item_bias.weight.grad.abs().sum() > 0
    assert model.ranking_prior.user_weight.grad is not None
    # a model built without data takes the buffers from the checkpoint
    bare = build_model(cfg, data.num_items, data.num_levels, data.max_len)
    bare.load_state_dict(model.state_dict())
    assert torch.equal(bare.ranking_prior.like_levels, data.like_levels)
    assert bare.ranking_prior.global_rate.item() == pytest.approx(data.train_like_rate)


def test_off_the_logits_are_the_heads_alone():
    data = tiny_data()
    cfg = tiny_config("model.ranking_prior=false")
    model = build_model(cfg, data.num_items, data.num_levels, data.max_len).eval()
    assert model.ranking_prior is None
    batch = data.eval_batch(np.arange(8), "val")
    with torch.no_grad():
        _, target = model.eval_states(batch)
        _, logits = model.score_eval(batch)
    torch.testing.assert_close(logits, model.rank_head(target).squeeze(-1))


@pytest.mark.parametrize("variant", ["unigrf", "two_stage", "ranking_only"])
def test_evaluation_runs_with_the_prior(variant):
    model, data, cfg = _model(f"train.variant={variant}")
    out = evaluate(model, data, "val", cfg.eval)
    assert 0.0 <= out["auc"] <= 1.0 and math.isfinite(out["logloss"])
