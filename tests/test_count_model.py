"""The count model (the ranking floor): smoothed like rates from the training part only, their
naive-Bayes sum of logits, its outcomes frame and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.metrics import log_loss, roc_auc_score

from unigrf.data.sequences import SequenceData
from unigrf.evaluation.count_model import (
    PSEUDO_COUNTS,
    count_model_metrics,
    count_model_outcomes,
    fit_count_model,
)
from unigrf.evaluation.outcomes import NOT_COUNTED

# user 0: items 1 2 3 | val 4 | test 1 ; user 1: items 1 3 | val 2 | test 3 ; user 2: 2 | 1 | 4
ITEMS = [[1, 2, 3, 4, 1], [1, 3, 2, 3], [2, 1, 4]]
RATINGS = [[5, 4, 1, 5, 2], [2, 5, 5, 1], [4, 1, 5]]


def data() -> SequenceData:
    return SequenceData.from_arrays(
        [np.array(i) for i in ITEMS], [np.array(r, dtype=float) for r in RATINGS], num_items=5
    )


def test_rates_come_from_the_training_part_only_and_combine_as_logits():
    model = fit_count_model(data())
    # training parts: user0 (1:5, 2:4, 3:1), user1 (1:2, 3:5), user2 (2:4); likes = rating >= 4
    g = 4 / 6
    k = PSEUDO_COUNTS
    assert model.global_rate == pytest.approx(g)
    assert model.user == pytest.approx(
        logit(np.array([(2 + k * g) / (3 + k), (1 + k * g) / (2 + k), (1 + k * g) / (1 + k)]))
    )
    item_rate = {1: (1 + k * g) / (2 + k), 2: (2 + k * g) / (2 + k), 3: (1 + k * g) / (2 + k), 4: g, 5: g}
    for item, rate in item_rate.items():  # item 4 only appears in val/test targets: the prior
        assert model.item[item] == pytest.approx(logit(rate))
    # the naive-Bayes sum: user + item − prior log-odds
    got = model.like_logits(np.array([0, 2]), np.array([1, 4]))
    assert got == pytest.approx([model.user[0] + model.item[1] - logit(g), model.user[2]])


def test_outcomes_hold_the_targets_labels_and_logits_and_no_retrieval():
    d = data()
    model = fit_count_model(d)
    test = count_model_outcomes(d, "test", model)
    assert list(test["user"]) == [0, 1, 2]
    assert list(test["like_label"]) == [0, 0, 1]  # test ratings 2, 1, 5
    assert test["like_logit"].to_numpy() == pytest.approx(
        model.like_logits(np.arange(3), np.array([1, 3, 4]))
    )
    assert (test["rank"] == d.num_items).all() and (test["cascade_rank"] == NOT_COUNTED).all()
    val = count_model_outcomes(d, "val", model)
    assert list(val["like_label"]) == [1, 1, 0]  # val ratings 5, 5, 1
    metrics = count_model_metrics(test)
    probs = expit(test["like_logit"].to_numpy())
    assert metrics["auc"] == pytest.approx(roc_auc_score(test["like_label"], probs))
    assert metrics["logloss"] == pytest.approx(log_loss(test["like_label"], probs, labels=[0, 1]))
    assert metrics["num_users"] == 3


def test_a_user_with_fewer_than_three_interactions_is_not_scored_and_targets_never_leak():
    # user 0: training items 1 (liked), 2 (not) | val 3 (liked) | test 4 (not); user 1 has two
    # interactions: no training part, never scored
    d = SequenceData.from_arrays(
        [np.array([1, 2, 3, 4]), np.array([2, 3])],
        [np.array([5.0, 1.0, 5.0, 1.0]), np.array([5.0, 5.0])],
        num_items=4,
    )
    model = fit_count_model(d)
    assert model.global_rate == pytest.approx(0.5)
    # neither the validation nor the test target counts, nor user 1's interactions
    assert model.item[3] == pytest.approx(model.prior) and model.item[4] == pytest.approx(model.prior)
    assert model.item[2] < model.prior < model.item[1]
    assert model.user[1] == pytest.approx(model.prior)
    frame = count_model_outcomes(d, "test", model)
    assert list(frame["user"]) == [0]
    assert frame["like_logit"].iloc[0] == pytest.approx(model.user[0])  # item 4: no evidence


def test_degenerate_data_fails_with_a_clear_error():
    d = SequenceData.from_arrays([np.array([1, 2, 3])], [np.array([5.0, 5.0, 5.0])], num_items=3)
    with pytest.raises(ValueError, match="like rate is 1"):
        fit_count_model(d)
    with pytest.raises(ValueError, match="pseudo_counts"):
        fit_count_model(data(), 0)
    with pytest.raises(ValueError, match="split"):
        count_model_outcomes(data(), "train")
    assert math.isfinite(count_model_metrics(count_model_outcomes(data(), "val"))["logloss"])
