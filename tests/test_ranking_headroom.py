"""benchmarks/ranking_headroom.py: features come from the history before each target only, and
where the next like follows the last one (which the count model cannot see) the feature model,
fitted on validation, beats the count model on test; where likes hang on a user–item affinity
the logistic MF does, and where they do not it does not; no choice reads a test label."""

from __future__ import annotations

import numpy as np
import pytest

from unigrf.data.sequences import SequenceData
from unigrf.evaluation.count_model import fit_count_model


def streaky_data(users=600, length=12, seed=0):
    """Each user's ratings come in streaks: the next rating repeats the last like/dislike with
    probability 0.85, so recent feedback predicts the target and the user's rate much less."""
    rng = np.random.default_rng(seed)
    items, ratings = [], []
    for _ in range(users):
        liked = [bool(rng.random() < 0.5)]
        for _ in range(length - 1):
            liked.append(liked[-1] if rng.random() < 0.85 else not liked[-1])
        items.append(rng.choice(np.arange(1, 41), size=length, replace=False))
        ratings.append(np.where(liked, 5.0, 2.0))
    return SequenceData.from_arrays(items, ratings, num_items=40, like_threshold=4.0)


@pytest.fixture
def headroom_bench(benchmark_module, monkeypatch):
    """The benchmark with a two-point MF grid (the full one is for the real data; these tests
    time headroom's whole path)."""
    bench = benchmark_module("ranking_headroom")
    monkeypatch.setattr(bench, "MF_DIMS", (8,))
    monkeypatch.setattr(bench, "MF_L2", (3.0, 30.0))
    return bench


@pytest.mark.timeout(240)
def test_features_read_only_the_history_before_the_target(benchmark_module):
    bench = benchmark_module("ranking_headroom")
    data = streaky_data(users=50)
    model = fit_count_model(data)
    x_val, y_val, _ = bench.features(data, model, "val")
    x_test, y_test, _ = bench.features(data, model, "test")
    assert x_val.shape == (50, len(bench.FEATURES))
    last, overall = (
        bench.FEATURES.index("user like rate, last 1"),
        bench.FEATURES.index("user like rate, all"),
    )
    users = np.arange(50)
    end = data.offsets[users] + data.lengths[users]
    liked = data.ratings >= 4.0
    # the last-event rate leans (from the user's rate) towards the event just before the target
    assert np.array_equal(x_val[:, last] > x_val[:, overall], liked[end - 3])
    assert np.array_equal(y_val, liked[end - 2]) and np.array_equal(y_test, liked[end - 1])
    # for test, the validation event is that last event of the history
    assert np.array_equal(x_test[:, last] > x_test[:, overall], liked[end - 2])


@pytest.mark.timeout(240)
def test_the_feature_model_finds_what_the_counts_miss(headroom_bench):
    bench = headroom_bench
    result = bench.headroom(streaky_data())
    feature = result["yardsticks"]["feature model"]
    assert feature["auc"] > result["count_auc"] + 0.1
    assert feature["p"] < 0.001 and feature["detectable"] == pytest.approx(1.96 * feature["se"])
    # stacking the MF on top keeps what the features found
    assert result["yardsticks"]["stacked"]["auc"] > result["count_auc"] + 0.1
    table = bench.table({"streaky": result}, "cmd")
    assert table.name == "ranking_headroom" and [r[0] for r in table.rows] == ["streaky"] * 3
    assert len(table.rows[0]) == len(table.columns) == len(table.align)


def grouped_data(users=400, items=40, length=20, affinity=True, seed=0):
    """Users and items in two groups each, every user rating items of both groups alike. With
    `affinity` a user likes an item of their own group with probability 0.85 and of the other
    with 0.15: every user's and item's like rate is 0.5, so the counts see nothing. Without it
    likes have user and item rates (additive log-odds) and no user–item interaction. Item
    `items + 1` is never rated (no training event)."""
    rng = np.random.default_rng(seed)
    user_group, item_group = rng.integers(0, 2, users), np.arange(items) % 2
    user_effect, item_effect = rng.normal(0, 1, users), rng.normal(0, 1, items)
    seqs, ratings = [], []
    for u in range(users):
        seq = rng.choice(items, size=length, replace=False)
        if affinity:
            p = np.where(item_group[seq] == user_group[u], 0.85, 0.15)
        else:
            p = 1 / (1 + np.exp(-(user_effect[u] + item_effect[seq])))
        seqs.append(seq + 1)
        ratings.append(np.where(rng.random(length) < p, 5.0, 2.0))
    return SequenceData.from_arrays(seqs, ratings, num_items=items + 1, like_threshold=4.0)


def mf_and_count_test_auc(bench, data):
    from unigrf.evaluation.metrics import auc

    mf, grid = bench.choose_mf(data)
    users, items, labels = bench.targets(data, "test")
    count = fit_count_model(data).like_logits(users, items)
    return mf, grid, auc(labels, mf.logits(users, items)), auc(labels, count)


@pytest.mark.timeout(240)
def test_the_mf_finds_the_affinity_the_counts_miss(benchmark_module):
    bench = benchmark_module("ranking_headroom")
    data = grouped_data()
    mf, grid, mf_auc, count_auc = mf_and_count_test_auc(bench, data)
    assert count_auc < 0.6 and mf_auc > count_auc + 0.2
    assert len(grid) == len(bench.MF_DIMS) * len(bench.MF_L2) and mf.val_auc == max(grid.values())
    # the never-rated item (and padding) fall back to the biases: zero factors, zero bias
    assert not mf.item_factors[[0, 41]].any() and not mf.item_bias[[0, 41]].any()
    assert mf.logits(np.array([3]), np.array([41]))[0] == pytest.approx(mf.bias + mf.user_bias[3])


@pytest.mark.timeout(240)
def test_without_affinity_the_mf_is_no_better_than_the_counts(headroom_bench):
    bench = headroom_bench
    _, _, mf_auc, count_auc = mf_and_count_test_auc(bench, grouped_data(users=1500, affinity=False))
    assert count_auc > 0.7 and mf_auc < count_auc + 0.01


def flip_test_labels(data):
    """`data` with every user's last (test) rating flipped between like and dislike."""
    ends = data.offsets[1:] - 1
    ratings = data.ratings.copy()
    ratings[ends] = np.where(ratings[ends] >= data.like_threshold, 2.0, 5.0)
    split = np.split(np.arange(len(data.items)), data.offsets[1:-1])
    return SequenceData.from_arrays(
        [data.items[s] for s in split],
        [ratings[s] for s in split],
        num_items=data.num_items,
        like_threshold=4.0,
    )


@pytest.mark.timeout(240)
def test_every_choice_reads_validation_only(headroom_bench):
    """Flipping every test label changes the test AUCs but no choice: the MF's grid and steps,
    the learners' CV scores."""
    bench = headroom_bench
    data = grouped_data(users=300)
    flipped = flip_test_labels(data)
    assert not np.array_equal(bench.targets(data, "test")[2], bench.targets(flipped, "test")[2])
    assert np.array_equal(bench.targets(data, "val")[2], bench.targets(flipped, "val")[2])
    a, b = bench.headroom(data), bench.headroom(flipped)
    for name in ("feature model", "logistic MF", "stacked"):
        x, y = a["yardsticks"][name], b["yardsticks"][name]
        assert x["choice"] == y["choice"] and x["validation"] == y["validation"]
        assert x["auc"] != y["auc"]
    # and the MF is deterministic: the same data give the same parameters
    one, two = bench.choose_mf(data)[0], bench.choose_mf(flipped)[0]
    assert np.array_equal(one.user_factors, two.user_factors) and one.steps == two.steps
