"""Chunked full ranking equals the unchunked functions, and `evaluate` gives the same metrics
through it (at reduced size: chunks of a few items stand in for 64k-item chunks)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from unigrf.config import EvalConfig, ModelConfig
from unigrf.data.sequences import SequenceData
from unigrf.evaluation import evaluate
from unigrf.evaluation import topk as topk_module
from unigrf.evaluation.cascade_score import retrieval_log_probs
from unigrf.evaluation.evaluate import cascade_candidates
from unigrf.evaluation.metrics import history_mask, target_ranks
from unigrf.evaluation.topk import (
    cascade_from_topk,
    chunked_retrieval,
    excluded_in_chunk,
    log_normaliser,
    unseen_topk,
    use_chunks,
)


def _case(seed: int, b: int = 9, n: int = 53, h: int = 12, d: int = 8):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, d, generator=gen)
    table = torch.randn(n + 1, d, generator=gen)
    history = torch.randint(0, n + 1, (b, h), generator=gen)
    history[:, -3:] = 0  # right padding
    targets = torch.randint(1, n + 1, (b,), generator=gen)
    history[0, 0] = targets[0]  # a re-consumed target stays rankable
    return query, table, history, targets


def _score_fn(query, table):
    def score(rows, start, stop):
        q = query if rows is None else query[rows]
        return q @ table[start:stop].T

    return score


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk", [1, 5, 16, 54, 1000])
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_chunked_ranks_topk_and_normaliser_equal_the_unchunked(chunk, ties):
    for seed in range(3):
        query, table, history, targets = _case(seed)
        n = table.shape[0] - 1
        scores = query @ table.T
        mask = history_mask(history, n, targets)
        got = chunked_retrieval(_score_fn(query, table), n, history, targets, 7, ties, 0.3, chunk)
        assert torch.equal(got.ranks, target_ranks(scores, targets, mask, ties=ties))
        assert torch.equal(got.candidates, cascade_candidates(scores, mask, 7))
        expected = retrieval_log_probs(scores.double(), mask, 0.3).gather(1, got.candidates)
        logp = got.candidate_scores.double() / 0.3 - got.log_normaliser[:, None]
        assert torch.allclose(logp, expected, atol=1e-9)


@pytest.mark.timeout(60)
def test_ties_count_as_the_rule_says_across_chunk_borders():
    # every item scores the same: pessimistic ranks the target behind every eligible item
    n, b = 20, 3
    history = torch.tensor([[1, 2, 0], [0, 0, 0], [5, 6, 7]])
    targets = torch.tensor([3, 20, 1])
    scores = torch.ones(b, n + 1)
    mask = history_mask(history, n, targets)

    def score(rows, start, stop):  # a fresh tensor, as the walk's contract says (it masks in place)
        return (scores[:, start:stop] if rows is None else scores[rows, start:stop]).clone()

    for ties in ("pessimistic", "optimistic"):
        got = chunked_retrieval(score, n, history, targets, 4, ties, None, chunk=6)
        assert torch.equal(got.ranks, target_ranks(scores, targets, mask, ties=ties))
        assert got.log_normaliser is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk", [1, 4, 7, 100])
def test_ranks_with_many_ties_and_a_target_scored_minus_inf_equal_the_unchunked(chunk):
    """Integer scores (ties everywhere), some -inf, and a target scored -inf — which ties with
    every excluded item the walk masks to -inf: each row's rank is the unchunked one."""
    gen = torch.Generator().manual_seed(5)
    _, _, history, targets = _case(2)
    b, n = history.shape[0], 53
    scores = torch.randint(-3, 4, (b, n + 1), generator=gen).float()
    scores[scores == -3] = -math.inf
    scores[1, targets[1]] = -math.inf
    scores[4, targets[4]] = -math.inf
    mask = history_mask(history, n, targets)

    def score(rows, start, stop):
        return (scores[:, start:stop] if rows is None else scores[rows, start:stop]).clone()

    for ties in ("pessimistic", "optimistic"):
        got = chunked_retrieval(score, n, history, targets, 6, ties, None, chunk)
        assert torch.equal(got.ranks, target_ranks(scores, targets, mask, ties=ties)), ties


@pytest.mark.timeout(60)
def test_fewer_eligible_items_than_c_pads_with_excluded_candidates_scored_minus_inf():
    n = 6
    history = torch.tensor([[1, 2, 3, 4, 0]])
    targets = torch.tensor([5])
    gen = torch.Generator().manual_seed(0)
    query, table = torch.randn(1, 4, generator=gen), torch.randn(n + 1, 4, generator=gen)
    got = chunked_retrieval(_score_fn(query, table), n, history, targets, 5, chunk=2)
    eligible = got.candidate_scores > -math.inf
    assert set(got.candidates[eligible].tolist()) == {5, 6}
    assert eligible.sum() == 2


@pytest.mark.timeout(60)
def test_the_chunk_mask_is_the_full_mask_cut_into_columns():
    _, _, history, targets = _case(1)
    n = 53
    full = history_mask(history, n, targets)
    for start in range(0, n + 1, 10):
        stop = min(start + 10, n + 1)
        assert torch.equal(excluded_in_chunk(history, targets, start, stop), full[:, start:stop])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk", [1, 5, 16, 54, 1000])
def test_unseen_topk_equals_the_masked_full_topk(chunk):
    """The enhancer's candidates: no item exempt from the history (its true next item is in it)."""
    for seed in range(3):
        query, table, history, _ = _case(seed)
        scores = query @ table.T
        scores.scatter_(1, history, -math.inf)
        scores[:, 0] = -math.inf
        expected_scores, expected_items = scores.topk(7, dim=1)
        got_scores, got_items = unseen_topk(query, table, history, 7, chunk)
        assert torch.equal(got_items, expected_items)
        # a chunk's product may sum in another order than the whole catalogue's: scores to rounding
        assert torch.allclose(got_scores, expected_scores, atol=1e-5)
        assert not (got_items[:, :, None] == history[:, None, :]).any()


@pytest.mark.timeout(60)
def test_unseen_topk_past_the_eligible_items_scores_minus_inf():
    history = torch.tensor([[1, 2, 3, 4, 0]])
    gen = torch.Generator().manual_seed(0)
    query, table = torch.randn(1, 4, generator=gen), torch.randn(7, 4, generator=gen)
    got_scores, got_items = unseen_topk(query, table, history, 5, chunk=2)
    eligible = got_scores > -math.inf
    assert set(got_items[eligible].tolist()) == {5, 6} and eligible.sum() == 2
    with pytest.raises(ValueError, match="chunk"):
        unseen_topk(query, table, history, 5, chunk=0)


def test_no_target_exempt_without_targets():
    history = torch.tensor([[3, 0], [0, 0]])
    mask = excluded_in_chunk(history, None, 0, 5)
    assert mask.tolist() == [[True, False, False, True, False], [True, False, False, False, False]]


def _data(num_users: int = 40, num_items: int = 300, seed: int = 0) -> SequenceData:
    rng = np.random.default_rng(seed)
    items, ratings, times = [], [], []
    for _ in range(num_users):
        n = int(rng.integers(4, 30))
        items.append(rng.choice(np.arange(1, num_items + 1), n, replace=False))
        ratings.append(rng.integers(1, 6, n).astype(float))
        times.append(np.sort(rng.integers(0, 10_000, n)))
    return SequenceData.from_arrays(items, ratings, times, num_items=num_items, max_len=20, name="t")


@pytest.mark.timeout(120)
def test_evaluate_through_chunks_gives_the_unchunked_metrics(monkeypatch):
    from unigrf.model.unified import UniGRF

    torch.manual_seed(0)
    data = _data()
    model = UniGRF(ModelConfig(backbone="hstu", size="tiny"), data.num_items, data.num_levels, data.max_len)
    cfg = EvalConfig(batch_size=16, cascade_top_c=20)
    plain = evaluate(model, data, "val", cfg)
    assert not use_chunks(model, data.num_items)
    monkeypatch.setattr(topk_module, "ITEM_CHUNK", 37)
    assert use_chunks(model, data.num_items)
    chunked = evaluate(model, data, "val", cfg)
    assert chunked.keys() == plain.keys()
    for key, value in plain.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(chunked[key]), key
        else:
            assert chunked[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.timeout(60)
def test_the_normaliser_of_some_rows_alone_equals_the_batch_walks():
    query, table, history, targets = _case(2)
    n = table.shape[0] - 1
    rows = torch.tensor([0, 3, 5])
    whole = chunked_retrieval(_score_fn(query, table), n, history, targets, 7, "pessimistic", 0.3, 11)
    some = log_normaliser(_score_fn(query, table), n, rows, history, targets, 0.3, chunk=11)
    assert torch.allclose(some, whole.log_normaliser[rows], atol=1e-12)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_the_cascades_ranks_need_no_normaliser(ties):
    """P(next)'s normaliser is one constant per user: the cascade ranks every λ gives with it
    equal those without it (the evaluation skips its walk), ties in the like logits included."""
    lambdas = (0.0, 0.25, 1.0, 4.0, math.inf)
    for seed in range(5):
        query, table, history, targets = _case(seed)
        n = table.shape[0] - 1
        result = chunked_retrieval(_score_fn(query, table), n, history, targets, 7, ties, 0.3, 11)
        assert result.log_normaliser is not None
        rows = torch.arange(len(targets))
        g = torch.Generator().manual_seed(seed)
        like = torch.randint(-3, 4, (len(rows), 7), generator=g).float() / 2  # many exact ties
        args = (rows, like, targets, lambdas, ties, 0.3)
        with_norm = cascade_from_topk(result, *args)
        without = cascade_from_topk(dataclasses.replace(result, log_normaliser=None), *args)
        assert torch.equal(with_norm, without)
        shifted = dataclasses.replace(result, log_normaliser=result.log_normaliser + 1e3)
        assert torch.equal(cascade_from_topk(shifted, *args), with_norm)
