"""The ranking prior: its user term is the count model's smoothed rate, computed causally; the
model's evaluation paths agree with it on; off, the ranking logits are the head's alone."""

import math

import numpy as np
import pytest
import torch
from test_loop import tiny_config, tiny_data

from unigrf.evaluation.evaluate import evaluate
from unigrf.model import build_model
from unigrf.model.ranking_prior import PSEUDO_COUNTS, PriorStats, RankingPrior


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_user_terms_count_the_likes_strictly_before_each_position():
    levels = torch.tensor([False, False, False, False, True, True])  # levels 4, 5 are likes
    stats = PriorStats(levels, 0.6, torch.zeros(6), torch.zeros(6))
    prior = RankingPrior(num_items=5, num_levels=5, stats=stats)
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


def test_item_terms_leave_a_training_label_out():
    stats = PriorStats(
        torch.tensor([False, True]), 0.5, torch.tensor([0.0, 3.0, 0.0]), torch.tensor([0.0, 4.0, 0.0])
    )
    prior = RankingPrior(num_items=2, num_levels=1, stats=stats)
    a = PSEUDO_COUNTS
    items = torch.tensor([1, 1, 2])
    full = prior.item_terms(items)
    assert full[0].item() == pytest.approx(_logit((3 + a / 2) / (4 + a)), abs=1e-6)
    assert full[2].item() == pytest.approx(0.0, abs=1e-6)  # never rated: the global rate
    loo = prior.item_terms(items, labels=torch.tensor([1.0, 0.0, 0.0]))
    assert loo[0].item() == pytest.approx(_logit((2 + a / 2) / (3 + a)), abs=1e-6)
    assert loo[1].item() == pytest.approx(_logit((3 + a / 2) / (3 + a)), abs=1e-6)


def test_bad_arguments_are_refused():
    zeros = torch.zeros(6)
    with pytest.raises(ValueError, match="like_levels"):
        RankingPrior(5, 5, PriorStats(torch.zeros(3, dtype=torch.bool), 0.5, zeros, zeros))
    with pytest.raises(ValueError, match="like_rate"):
        RankingPrior(5, 5, PriorStats(torch.zeros(6, dtype=torch.bool), 1.0, zeros, zeros))


def _model(*overrides, data=None):
    data = data or tiny_data()
    cfg = tiny_config("model.ranking_prior=true", *overrides)
    torch.manual_seed(0)
    stats = PriorStats.of(data.like_statistics())
    model = build_model(cfg, data.num_items, data.num_levels, data.max_len, None, stats)
    return model.eval(), data, cfg


def test_a_new_model_is_the_count_model():
    """At initialisation (the head's last layer at zero) the target's logit is the count model's
    sum of logits: logit p_u + logit p_i − logit g."""
    model, data, _ = _model()
    stats = data.like_statistics()
    users = np.arange(8)
    batch = data.eval_batch(users, "val")
    with torch.no_grad():
        _, logits = model.score_eval(batch)
    g, a = stats["like_rate"], PSEUDO_COUNTS
    for row, u in enumerate(users):
        n = int(batch["lengths"][row])
        start = data.offsets[u] + data.lengths[u] - 2 - n
        likes = int((data.ratings[start : start + n] >= data.like_threshold).sum())
        item = int(batch["targets"][row])
        p_u = (likes + a * g) / (n + a)
        p_i = (stats["item_likes"][item] + a * g) / (stats["item_ratings"][item] + a)
        assert logits[row].item() == pytest.approx(_logit(p_u) + _logit(p_i) - _logit(g), abs=1e-5)


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
    assert model.ranking_prior.item_shift.grad is not None
    assert model.ranking_prior.user_shift.grad is not None
    assert model.rank_head[-1].weight.grad.abs().sum() > 0  # the head learns from zero
    # a model built without data takes the buffers from the checkpoint
    bare = build_model(cfg, data.num_items, data.num_levels, data.max_len)
    bare.load_state_dict(model.state_dict())
    stats = data.like_statistics()
    assert bare.ranking_prior.like_levels.tolist() == stats["like_levels"].tolist()
    assert bare.ranking_prior.global_rate.item() == pytest.approx(stats["like_rate"])
    assert bare.ranking_prior.item_ratings.tolist() == stats["item_ratings"].tolist()


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


def test_weight_decay_pulls_towards_the_count_model_not_away_from_it():
    """The recipe decays every parameter: decayed with no gradient, the prior's logits stay the
    count model's (its weights are 1 + a shift that decays to 0), where decaying the weights
    themselves would fade the counts out."""
    stats = PriorStats(torch.tensor([False, True]), 0.3, torch.tensor([0.0, 3.0, 1.0]), torch.tensor([0.0, 4.0, 5.0]))
    prior = RankingPrior(num_items=2, num_levels=1, stats=stats)
    items, user_term = torch.tensor([1, 2]), torch.tensor([0.7, -0.4])
    before = prior(items, user_term).detach().clone()
    optimizer = torch.optim.AdamW(prior.parameters(), lr=0.1, weight_decay=1.0)
    for _ in range(50):
        optimizer.zero_grad()
        (0.0 * prior(items, user_term).sum()).backward()  # zero gradients: decay alone
        optimizer.step()
    assert torch.allclose(prior(items, user_term), before)
    # a learned shift decays back towards the count model
    with torch.no_grad():
        prior.item_shift.fill_(0.5)
    for _ in range(50):
        optimizer.zero_grad()
        (0.0 * prior(items, user_term).sum()).backward()
        optimizer.step()
    assert 0.0 < prior.item_shift.item() < 0.5


def test_a_checkpoint_with_the_weights_themselves_loads_as_shifts():
    prior = RankingPrior(num_items=2, num_levels=1)
    state = {k: v for k, v in prior.state_dict().items() if not k.endswith("_shift")}
    state.update(user_weight=torch.tensor(1.25), item_weight=torch.tensor(0.5))
    prior.load_state_dict(state)
    assert prior.user_shift.item() == pytest.approx(0.25) and prior.item_shift.item() == pytest.approx(-0.5)
