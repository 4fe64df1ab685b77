"""benchmarks/ranking_headroom.py: features come from the history before each target only, and
where the next like follows the last one (which the count model cannot see) the feature model,
fitted on validation, beats the count model on test."""

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


@pytest.mark.timeout(120)
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


@pytest.mark.timeout(300)
def test_the_feature_model_finds_what_the_counts_miss(benchmark_module):
    bench = benchmark_module("ranking_headroom")
    result = bench.headroom(streaky_data())
    assert result["feature_auc"] > result["count_auc"] + 0.1
    assert result["p"] < 0.001 and result["detectable"] == pytest.approx(1.96 * result["se"])
    table = bench.table({"streaky": result}, "cmd")
    assert table.name == "ranking_headroom" and table.rows[0][0] == "streaky"
