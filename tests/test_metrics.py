"""Metric functions on hand-computed cases and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from unigrf.evaluation.metrics import auc, gauc, history_mask, hit_rate, logloss, mrr, ndcg, target_ranks

# item:             0(pad) 1    2    3    4
ROW = torch.tensor([[0.0, 0.9, 0.5, 0.7, 0.1]])


def test_target_rank_counts_higher_scored_items():
    assert target_ranks(ROW, torch.tensor([2])).tolist() == [2]  # items 1 and 3 score higher
    assert target_ranks(ROW, torch.tensor([1])).tolist() == [0]
    assert target_ranks(ROW, torch.tensor([0])).tolist() == [4]


def test_masking_changes_the_rank():
    mask = torch.tensor([[True, True, False, False, False]])  # padding and item 1 excluded
    assert target_ranks(ROW, torch.tensor([2]), mask).tolist() == [1]
    mask[0, 3] = True
    assert target_ranks(ROW, torch.tensor([2]), mask).tolist() == [0]


def test_target_is_ranked_even_when_its_mask_is_set():
    mask = torch.tensor([[True, False, True, False, False]])  # the target's own entry is True
    assert target_ranks(ROW, torch.tensor([2]), mask).tolist() == [2]


def test_history_mask_scatters_history_and_keeps_the_target():
    history = torch.tensor([[2, 3, 2, 0], [1, 0, 0, 0]])
    mask = history_mask(history, num_items=4, targets=torch.tensor([2, 4]))
    expected = torch.tensor(
        [
            [True, False, False, True, False],  # item 2 is in the history but is the target
            [True, True, False, False, False],
        ]
    )
    assert torch.equal(mask, expected)
    # without targets, a re-consumed item stays masked
    assert history_mask(history, num_items=4)[0, 2].item() is True
    with pytest.raises(ValueError, match="outside 0..4"):
        history_mask(torch.tensor([[5]]), num_items=4)


def test_tie_rule_is_pessimistic_by_default():
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.1]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([2]), ties="optimistic").tolist() == [0]
    # a constant scorer ranks every target last, so it never scores a hit
    flat = torch.zeros(3, 51)
    ranks = target_ranks(flat, torch.tensor([1, 7, 50]))
    assert ranks.tolist() == [50, 50, 50]
    assert hit_rate(ranks, 10) == 0.0


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[0.0, math.nan, 1.0]]), torch.tensor([1]))


def test_hit_rate_ndcg_mrr_hand_computed():
    ranks = torch.tensor([0, 1, 4, 20])
    assert hit_rate(ranks, 5) == pytest.approx(0.75)
    assert hit_rate(ranks, 1) == pytest.approx(0.25)
    # 1/log2(2) = 1, 1/log2(3) = 0.6309298, 1/log2(6) = 0.3868528; rank 20 is outside the top 5
    assert ndcg(ranks, 5) == pytest.approx((1.0 + 0.6309298 + 0.3868528) / 4, abs=1e-7)
    assert ndcg(ranks, 1) == pytest.approx(0.25)
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 21) / 4)
    assert math.isnan(hit_rate(torch.tensor([], dtype=torch.long), 10))


def test_auc_hand_computed_and_matches_sklearn():
    # positive/negative pairs: 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    assert auc(torch.tensor([0, 0, 1, 1]), torch.tensor([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # a tie counts 1/2: (0.5 vs 0.5) + 3 wins -> 3.5/4
    assert auc(np.array([0, 0, 1, 1]), np.array([0.5, 0.2, 0.5, 0.9])) == pytest.approx(0.875)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    probs = rng.random(500) * 0.5 + labels * 0.2
    assert auc(torch.from_numpy(labels), torch.from_numpy(probs)) == pytest.approx(
        roc_auc_score(labels, probs)
    )


def test_auc_with_one_class_is_nan_with_a_reason():
    with pytest.warns(RuntimeWarning, match="all 3 labels are 1"):
        assert math.isnan(auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_logloss_hand_computed_clipped_and_matches_sklearn():
    assert logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2
    )
    # a saturated wrong prediction is finite: -log(1e-7)
    assert logloss(np.array([0]), np.array([1.0])) == pytest.approx(-math.log(1e-7), rel=1e-6)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    probs = rng.random(300)
    assert logloss(labels, torch.from_numpy(probs)) == pytest.approx(log_loss(labels, probs))


def test_gauc_hand_computed():
    groups = np.array(["a", "a", "a", "b", "b", "b", "b", "c", "c"])
    labels = np.array([1, 0, 0, 1, 1, 0, 0, 1, 1])
    probs = np.array([0.9, 0.5, 0.95, 0.8, 0.3, 0.4, 0.1, 0.2, 0.7])
    # a: 0.9 beats 0.5 not 0.95 -> 1/2 (3 impressions); b: 3 of 4 pairs -> 3/4 (4 impressions);
    # c has one class only and is skipped.
    assert gauc(groups, labels, probs) == pytest.approx((3 * 0.5 + 4 * 0.75) / 7)


def test_gauc_matches_a_per_group_sklearn_loop_with_ties():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 30, 600)
    labels = rng.integers(0, 2, 600)
    probs = np.round(rng.random(600), 1)  # coarse values: many ties inside groups
    aucs, weights = [], []
    for g in np.unique(groups):
        sel = groups == g
        if len(np.unique(labels[sel])) == 2:
            aucs.append(roc_auc_score(labels[sel], probs[sel]))
            weights.append(sel.sum())
    assert gauc(torch.from_numpy(groups), labels, probs) == pytest.approx(np.average(aucs, weights=weights))


def test_gauc_without_any_two_class_group_is_nan():
    with pytest.warns(RuntimeWarning, match="no group has both classes"):
        assert math.isnan(gauc(np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3])))
