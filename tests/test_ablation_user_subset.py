"""Runs restricted to a subset of the users: every recomputed metric equals the metric computed
directly (numpy, scikit-learn) on those users' outcomes; runs without outcomes are not left on
the full user set."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from unigrf.ablation.aggregate import Comparator, Floor
from unigrf.ablation.user_subset import restrict_to_users


def outcomes(seed: int, n_users: int = 50):
    from unigrf.evaluation.outcomes import outcomes_frame

    rng = np.random.default_rng(seed)
    labels = (np.arange(n_users) % 3 != 0).astype(int)  # the data's labels: the same in every run
    return outcomes_frame(
        np.arange(n_users), rng.integers(0, 30, n_users), labels, rng.normal(size=n_users) + labels
    )


def test_metrics_on_the_subset_equal_a_direct_computation():
    frames = {f"r/toy/seed{s}": {"val": outcomes(10 + s), "test": outcomes(s)} for s in range(2)}
    results = pd.DataFrame(
        [
            {
                "cell": c,
                "row": "r",
                "dataset": "toy",
                "seed": s,
                "status": "ok",
                "val/ndcg@10": 9.0,
                "test/hr@10": 9.0,
                "test/ndcg@10": 9.0,
                "test/mrr": 9.0,
                "test/auc": 9.0,
                "test/loss_retrieval": 9.0,
            }
            for s, c in enumerate(frames)
        ]  # fmt: skip
    )
    users = np.arange(0, 50, 2)
    got, kept, _ = restrict_to_users(results, frames, users, (10,), 10)
    for s, cell in enumerate(frames):
        for split in ("val", "test"):
            sub = frames[cell][split].set_index("user").loc[users]
            assert list(kept[cell][split]["user"]) == list(users)
            rank = sub["rank"].to_numpy()
            direct = {
                "hr@10": np.mean(rank < 10),
                "ndcg@10": np.mean(np.where(rank < 10, 1 / np.log2(rank + 2), 0)),
                "mrr": np.mean(1 / (rank + 1)),
                "auc": roc_auc_score(sub["like_label"], expit(sub["like_logit"])),
            }
            for name, value in direct.items():
                if f"{split}/{name}" in got:
                    assert got.loc[s, f"{split}/{name}"] == pytest.approx(value)
        assert math.isnan(got.loc[s, "test/loss_retrieval"])  # not determined by the outcomes


def test_a_run_without_outcomes_is_not_left_on_the_full_user_set():
    frames = {"r/toy/seed0": {"test": outcomes(0)}}
    results = pd.DataFrame(
        [
            {"cell": "r/toy/seed0", "seed": 0, "test/ndcg@10": 0.5, "val/ndcg@10": 0.5},
            {"cell": "r/toy/seed1", "seed": 1, "test/ndcg@10": 0.5, "val/ndcg@10": 0.5},
        ]
    )
    got, kept, _ = restrict_to_users(results, frames, np.arange(10), (10,), 10)
    assert math.isfinite(got.loc[0, "test/ndcg@10"])
    assert math.isnan(got.loc[0, "val/ndcg@10"]) and got.loc[1, ["test/ndcg@10", "val/ndcg@10"]].isna().all()
    assert set(kept) == {"r/toy/seed0"} and set(kept["r/toy/seed0"]) == {"test"}


def test_the_comparator_on_the_subset_resamples_the_subset_users_and_the_floor_follows():
    frames = {
        f"{row}/toy/seed{s}": {"test": outcomes(7 * s + len(row))} for row in ("a", "b") for s in range(3)
    }
    results = pd.DataFrame(
        [
            {
                "cell": c,
                "row": c.split("/")[0],
                "dataset": "toy",
                "seed": int(c[-1]),
                "status": "ok",
                "test/ndcg@10": 0.0,
                "test/auc": 0.0,
            }
            for c in frames
        ]  # fmt: skip
    )
    floor_frame = outcomes(99)
    floor = Floor("count model", {"test/auc": 0.6}, {"test": floor_frame})
    users = np.arange(20)
    res, kept, floors = restrict_to_users(results, frames, users, (10,), 10, {"toy": floor})
    sub = floor_frame.set_index("user").loc[users]
    assert floors["toy"].values["test/auc"] == pytest.approx(
        roc_auc_score(sub["like_label"], expit(sub["like_logit"]))
    )
    assert len(floors["toy"].outcomes["test"]) == 20
    test = Comparator(res, kept, floors, n_replicates=200).test("toy", "a", "b", "test/ndcg@10")
    assert test.test == "bootstrap" and test.n_users == 20
    test = Comparator(res, kept, floors, n_replicates=200).test("toy", "a", "count model", "test/auc")
    assert test.test == "bootstrap" and test.n_users == 20
