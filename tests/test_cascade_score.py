"""The cascade's combined score: its two ends, the joint-probability middle, λ selection."""

import math

import pytest
import torch

from unigrf.evaluation.cascade_score import (
    DEFAULT_LAMBDAS,
    choose_lambda,
    combined_scores,
    format_lambda,
    retrieval_log_probs,
)


def test_retrieval_log_probs_normalise_over_eligible_items():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, False, False, True]])
    logp = retrieval_log_probs(scores, mask, temperature=0.5)
    assert torch.isinf(logp[0, 0]) and torch.isinf(logp[0, 3])
    assert logp[0, 1:3].exp().sum().item() == pytest.approx(1.0)
    expected = torch.log_softmax(torch.tensor([2.0, 3.0]) / 0.5, dim=0)
    torch.testing.assert_close(logp[0, 1:3], expected)


def test_lambda_zero_is_retrieval_and_inf_is_the_ranking_head():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    like = torch.tensor([[-3.0, 0.0, 3.0]])
    assert torch.equal(combined_scores(logp, like, 0.0), logp)
    assert combined_scores(logp, like, math.inf).argsort(descending=True).tolist() == [[2, 1, 0]]
    # equal like logits: retrieval breaks the tie
    tied = combined_scores(logp, torch.zeros(1, 3), math.inf)
    assert tied.argsort(descending=True).tolist() == [[0, 1, 2]]


def test_lambda_one_is_the_joint_probability():
    p_next = torch.tensor([0.5, 0.3, 0.2])
    p_like = torch.tensor([0.2, 0.9, 0.6])
    score = combined_scores(p_next.log(), torch.logit(p_like), 1.0)
    torch.testing.assert_close(score.exp(), p_next * p_like)


def test_negative_lambda_refused():
    with pytest.raises(ValueError, match=">= 0"):
        combined_scores(torch.zeros(1), torch.zeros(1), -1.0)


def test_choose_lambda_prefers_the_smaller_on_ties_and_skips_nan():
    assert choose_lambda({0.0: 0.1, 1.0: 0.3, 2.0: 0.3, math.inf: math.nan}) == 1.0
    with pytest.raises(ValueError, match="finite"):
        choose_lambda({0.0: math.nan})


def test_defaults_span_both_ends():
    assert DEFAULT_LAMBDAS[0] == 0.0 and math.isinf(DEFAULT_LAMBDAS[-1])
    assert format_lambda(math.inf) == "inf" and format_lambda(0.25) == "0.25"
