"""Per-user outcomes: schema checks, round trip, and every metric recomputed from them equals
the metric functions applied directly."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unigrf.evaluation.metrics import auc, hit_rate, logloss, mrr, ndcg
from unigrf.evaluation.outcomes import (
    NOT_COUNTED,
    OutcomesError,
    metrics_from_outcomes,
    outcomes_frame,
    per_user,
    read_outcomes,
    write_outcomes,
)


def _frame(n=50, seed=0, cascade=True):
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, 300, n)
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=n)
    casc = np.where(labels == 1, np.minimum(rng.integers(0, 120, n), 100), NOT_COUNTED) if cascade else None
    users = rng.permutation(n)
    return outcomes_frame(users, ranks, labels, logits, casc), ranks, labels, logits, casc, users


def test_metrics_equal_the_metric_functions():
    frame, ranks, labels, logits, casc, users = _frame()
    out = metrics_from_outcomes(frame, (10, 50), cascade_k=10)
    # the frame is sorted by user: compare against arrays in that order
    order = np.argsort(users)
    r = torch.as_tensor(ranks[order])
    assert out["hr@10"] == pytest.approx(hit_rate(r, 10), abs=1e-15)
    assert out["ndcg@50"] == pytest.approx(ndcg(r, 50), abs=1e-15)
    assert out["mrr"] == pytest.approx(mrr(r), abs=1e-15)
    probs = torch.sigmoid(torch.as_tensor(logits, dtype=torch.float64)).numpy()
    assert out["auc"] == pytest.approx(auc(labels, probs), abs=1e-15)
    assert out["logloss"] == pytest.approx(logloss(labels, probs), abs=1e-12)
    liked = torch.as_tensor(casc[casc != NOT_COUNTED])
    assert out["cascade_ndcg@10"] == pytest.approx(ndcg(liked, 10), abs=1e-15)
    assert out["cascade_hr@10"] == pytest.approx(hit_rate(liked, 10), abs=1e-15)
    assert out["cascade_num_users"] == int((labels == 1).sum())
    assert out["num_users"] == 50


def test_no_cascade_and_no_ranking_head_give_nan():
    frame, *_ = _frame(cascade=False)
    frame["like_logit"] = math.nan
    out = metrics_from_outcomes(frame, (10,), cascade_k=10)
    assert math.isnan(out["auc"]) and math.isnan(out["logloss"])
    assert math.isnan(out["cascade_ndcg@10"]) and out["cascade_num_users"] == 0
    assert not math.isnan(out["ndcg@10"])


def test_round_trip_and_atomic_write(tmp_path):
    frame, *_ = _frame()
    path = write_outcomes(frame, tmp_path / "outcomes" / "test.parquet")
    back = read_outcomes(path)
    pd.testing.assert_frame_equal(back, frame)
    assert [p.name for p in path.parent.iterdir()] == ["test.parquet"]  # no temporary left


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns="rank"), "missing column"),
        (lambda f: f.assign(user=0), "repeats"),
        (lambda f: f.assign(rank=-1), "negative rank"),
        (lambda f: f.assign(like_label=2), "0 or 1"),
        (lambda f: f.assign(cascade_rank=-5), "cascade_rank"),
    ],
)
def test_bad_frames_are_refused(tmp_path, change, message):
    frame, *_ = _frame()
    with pytest.raises(OutcomesError, match=message):
        write_outcomes(change(frame), tmp_path / "bad.parquet")
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    bad = tmp_path / "val.parquet"
    bad.write_text("not parquet")
    with pytest.raises(OutcomesError, match="val.parquet: cannot read"):
        read_outcomes(bad)


def test_per_user_refuses_auc():
    frame, *_ = _frame()
    with pytest.raises(ValueError, match="not a mean over users"):
        per_user(frame, "auc")


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=40), st.integers(1, 200))
def test_per_user_means_equal_metrics(ranks, k):
    frame = outcomes_frame(np.arange(len(ranks)), np.array(ranks), np.zeros(len(ranks)), np.zeros(len(ranks)))
    r = torch.as_tensor(ranks)
    assert per_user(frame, f"ndcg@{k}").mean() == pytest.approx(ndcg(r, k), abs=1e-12)
    assert per_user(frame, f"hr@{k}").mean() == pytest.approx(hit_rate(r, k), abs=1e-12)
