"""The headline's two rules: the choice reads validation only, and the chosen pair's test
comparison is Bonferroni-corrected over the candidate pairs (checked against the Comparator
called directly at the corrected level)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from unigrf.ablation.aggregate import Comparator
from unigrf.ablation.headline import (
    BETTER,
    INCONCLUSIVE,
    WORSE,
    Choice,
    ChosenTest,
    bonferroni,
    choose_on_validation,
    compare_chosen,
    corrected_confidence,
    validation_means,
)


def outcomes(rng, shift: float, n_users: int = 60):
    from unigrf.evaluation.outcomes import outcomes_frame

    labels = (np.arange(n_users) % 3 != 0).astype(int)
    logits = rng.normal(size=n_users) + labels * (1.0 + shift)
    ranks = np.maximum(rng.integers(0, 40, n_users) - int(20 * shift), 0)
    return outcomes_frame(np.arange(n_users), ranks, labels, logits)


def runs(val: dict[str, float], test_shift: dict[str, float], seeds=(0, 1, 2)):
    """Rows whose val NDCG@10 is `val[row]` (+ a small per-seed wiggle) and whose test outcomes
    get better with `test_shift[row]`; results' test metrics are their outcomes' metrics."""
    from unigrf.evaluation.outcomes import metrics_from_outcomes

    rng = np.random.default_rng(3)
    rows, stored = [], {}
    for row in val:
        for seed in seeds:
            cell = f"{row}/toy/seed{seed}"
            test = outcomes(rng, test_shift[row])
            m = metrics_from_outcomes(test, (10,), 10)
            rows.append(
                {
                    "cell": cell,
                    "row": row,
                    "dataset": "toy",
                    "seed": seed,
                    "status": "ok",
                    "val/ndcg@10": val[row] + 0.001 * seed,
                    "val/logloss": 1.0 - val[row],
                    "test/ndcg@10": m["ndcg@10"],
                    "test/auc": m["auc"],
                }
            )
            stored[cell] = {"test": test}
    return pd.DataFrame(rows), stored


def test_the_choice_reads_validation_and_only_validation():
    c = choose_on_validation({"a": 0.10, "b": 0.12, "c": math.nan, "d": 0.12}, "val/ndcg@10")
    assert c.chosen == "b"  # the tie with d goes to the first
    assert c.n_candidates == 3  # c has no value: not a candidate
    assert choose_on_validation({"a": 0.5, "b": 0.4}, "val/logloss").chosen == "b"  # lower is better
    with pytest.raises(ValueError, match="validation only"):
        choose_on_validation({"a": 0.1}, "test/ndcg@10")
    with pytest.raises(ValueError, match="no candidate"):
        choose_on_validation({"a": math.nan}, "val/ndcg@10")


def test_the_chosen_row_is_the_validation_best_even_when_test_prefers_another():
    # u2 is best on validation; u1's test outcomes are far better
    results, stored = runs(
        {"u1": 0.10, "u2": 0.12, "b1": 0.11, "b2": 0.09},
        {"u1": 1.0, "u2": 0.0, "b1": 0.0, "b2": 0.5},
    )
    comp = Comparator(results, stored, n_replicates=300)
    assert (
        comp.per_seed("toy", "u1", "test/ndcg@10").mean() > comp.per_seed("toy", "u2", "test/ndcg@10").mean()
    )
    rows = choose_on_validation(validation_means(comp, "toy", ["u1", "u2"], "val/ndcg@10"), "val/ndcg@10")
    base = choose_on_validation(validation_means(comp, "toy", ["b1", "b2"], "val/ndcg@10"), "val/ndcg@10")
    assert (rows.chosen, base.chosen) == ("u2", "b1")
    with pytest.raises(ValueError, match="validation only"):
        validation_means(comp, "toy", ["u1"], "test/ndcg@10")


def test_the_test_comparison_is_corrected_for_the_candidate_pairs():
    results, stored = runs(
        {"u1": 0.10, "u2": 0.12, "b1": 0.11, "b2": 0.09, "b3": 0.08},
        {"u1": 0.0, "u2": 0.6, "b1": 0.0, "b2": 0.0, "b3": 0.0},
    )
    comp = Comparator(results, stored, n_replicates=2000)
    rows = choose_on_validation(validation_means(comp, "toy", ["u1", "u2"], "val/ndcg@10"), "val/ndcg@10")
    base = choose_on_validation(
        validation_means(comp, "toy", ["b1", "b2", "b3"], "val/ndcg@10"), "val/ndcg@10"
    )
    got = compare_chosen(comp, "toy", rows, base, "test/ndcg@10")
    assert got.k == 6 and got.level == pytest.approx(1 - 0.05 / 6)
    direct = comp.test("toy", "u2", "b1", "test/ndcg@10", 1 - 0.05 / 6)
    plain = comp.test("toy", "u2", "b1", "test/ndcg@10", 0.95)
    assert got.test == "bootstrap" and got.n == 3 and got.n_users == 60
    assert (got.low, got.high) == (direct.low, direct.high)
    assert got.low < plain.low and got.high > plain.high  # wider than the uncorrected interval
    assert got.p_raw == direct.p_value and got.p_value == pytest.approx(min(1.0, 6 * direct.p_value))
    a = results[results["row"] == "u2"]["test/ndcg@10"].mean()
    b = results[results["row"] == "b1"]["test/ndcg@10"].mean()
    assert got.rel_change == pytest.approx(100 * (a - b) / b)
    assert got.rel_low == pytest.approx(100 * got.low / b)
    assert got.result == BETTER  # a large effect survives the correction
    with pytest.raises(ValueError, match="test metric"):
        compare_chosen(comp, "toy", rows, base, "val/ndcg@10")


def test_a_missing_row_gives_no_test():
    results, stored = runs({"u1": 0.1, "b1": 0.1}, {"u1": 0.0, "b1": 0.0})
    comp = Comparator(results, stored, n_replicates=200)
    rows = Choice("u9", "val/ndcg@10", {"u9": 0.2})
    got = compare_chosen(comp, "toy", rows, Choice("b1", "val/ndcg@10", {"b1": 0.1}), "test/ndcg@10")
    assert got.test == "" and math.isnan(got.p_value) and got.result == INCONCLUSIVE


def test_bonferroni_and_the_corrected_confidence():
    assert bonferroni(0.01, 4) == pytest.approx(0.04)
    assert bonferroni(0.4, 4) == 1.0
    assert math.isnan(bonferroni(math.nan, 3))
    assert corrected_confidence(0.95, 10) == pytest.approx(0.995)
    for bad in (lambda: bonferroni(0.1, 0), lambda: corrected_confidence(1.0, 2)):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize(
    ("metric", "low", "high", "expected"),
    [
        ("test/ndcg@10", 0.01, 0.02, BETTER),
        ("test/ndcg@10", -0.02, -0.01, WORSE),
        ("test/ndcg@10", -0.01, 0.02, INCONCLUSIVE),
        ("test/logloss", -0.02, -0.01, BETTER),  # lower is better
        ("test/ndcg@10", math.nan, math.nan, INCONCLUSIVE),
    ],
)
def test_the_result_reads_the_corrected_interval(metric, low, high, expected):
    c = Choice("a", "val/ndcg@10", {"a": 1.0})
    t = ChosenTest(c, c, metric, 1, 0.95, 0.95, 0.2, 0.1, low, high, 0.01, 0.01, "paired", 3, 0)
    assert t.result == expected
