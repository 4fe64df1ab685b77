"""The comparison machinery against direct computations: the weighted AUC against scikit-learn
on duplicated users, DeLong's components and variance against the O(n²) pairwise definition,
the vectorised two-level bootstrap against a brute-force loop over the same draws, the
bootstrap's p against its own interval, and the seed-level t-tests against SciPy with their
n/a rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import expit
from sklearn.metrics import log_loss, roc_auc_score

from unigrf.ablation.paired import (
    Bootstrapped,
    UserBootstrap,
    delong_components,
    delong_test,
    seed_draws,
    seed_test,
    user_draws,
    weighted_auc,
)
from unigrf.evaluation.metrics import LOGLOSS_EPS
from unigrf.evaluation.outcomes import NOT_COUNTED, metrics_from_outcomes, outcomes_frame


def outcomes(rng, n_users=15, shift=0.0, ties=False):
    labels = rng.integers(0, 2, n_users)
    labels[:2] = [0, 1]  # both classes
    logits = rng.normal(size=n_users) + labels + shift
    if ties:
        logits = np.round(logits)
    ranks = rng.integers(0, 12, n_users)
    cascade = np.where(labels == 1, rng.integers(0, 8, n_users), NOT_COUNTED)
    return outcomes_frame(np.arange(n_users), ranks, labels, logits, cascade)


# --------------------------------------------------------------------------------------------
# AUC and DeLong
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 1), st.integers(0, 3)), min_size=2, max_size=30),
)
def test_weighted_auc_equals_sklearn_on_the_duplicated_users(rows):
    scores = np.array([r[0] for r in rows], dtype=float)  # few distinct values: many ties
    labels = np.array([r[1] for r in rows])
    weights = np.array([[r[2] for r in rows], [1] * len(rows)])
    got = weighted_auc(scores, labels, weights)
    for row, w in enumerate(weights):
        y, s = np.repeat(labels, w), np.repeat(scores, w)
        if len(np.unique(y)) < 2:
            assert math.isnan(got[row])
        else:
            assert got[row] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def psi(scores, labels):
    """[m, n] the pairwise kernel: 1 if the positive scores above the negative, ½ if tied."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def test_delong_components_equal_the_pairwise_definition_and_auc_sklearns():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.normal(size=40) + labels, 1)  # ties included
    v10, v01 = delong_components(scores, labels)
    k = psi(scores, labels)
    assert v10 == pytest.approx(k.mean(axis=1), abs=1e-12)
    assert v01 == pytest.approx(k.mean(axis=0), abs=1e-12)
    assert v10.mean() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    with pytest.raises(ValueError, match="positives and negatives"):
        delong_components(scores, np.zeros(40))


def test_delong_variance_equals_the_covariance_formula():
    """One seed: DeLong's paired test of two correlated ROC curves, Var = L S10 Lᵀ/m + L S01 Lᵀ/n
    with L = (1, −1) and S10, S01 the components' covariance matrices; several seeds: the same
    on the components averaged over seeds."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 60)
    a = [rng.normal(size=60) + labels for _ in range(3)]
    b = [x + rng.normal(scale=0.8, size=60) for x in a]
    m, n = int(labels.sum()), int((1 - labels).sum())
    ell = np.array([1.0, -1.0])

    def direct(xa, xb):
        ka, kb = psi(xa, labels), psi(xb, labels)
        s10 = np.cov(np.stack([ka.mean(axis=1), kb.mean(axis=1)]))
        s01 = np.cov(np.stack([ka.mean(axis=0), kb.mean(axis=0)]))
        return ka.mean() - kb.mean(), ell @ s10 @ ell / m + ell @ s01 @ ell / n

    diff, var = direct(a[0], b[0])
    got = delong_test([a[0]], [b[0]], labels)
    assert got.difference == pytest.approx(diff, abs=1e-12)
    assert got.se == pytest.approx(math.sqrt(var), rel=1e-10)
    assert got.p_value == pytest.approx(2 * stats.norm.sf(abs(diff) / math.sqrt(var)), rel=1e-9)
    # three seeds: the components averaged over seeds (shared users stay correlated)
    ka = [psi(x, labels) for x in a]
    kb = [psi(x, labels) for x in b]
    v10 = np.mean([p.mean(axis=1) - q.mean(axis=1) for p, q in zip(ka, kb)], axis=0)
    v01 = np.mean([p.mean(axis=0) - q.mean(axis=0) for p, q in zip(ka, kb)], axis=0)
    got = delong_test(a, b, labels)
    assert got.difference == pytest.approx(v10.mean(), abs=1e-12)
    assert got.se == pytest.approx(math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n), rel=1e-10)
    # identical scores: no difference, p = 1
    assert delong_test([a[0]], [a[0]], labels).p_value == 1.0


# --------------------------------------------------------------------------------------------
# the two-level bootstrap
# --------------------------------------------------------------------------------------------


def brute_force(a_frames, b_frames, base, seed, n_replicates):
    """θ* replicate by replicate with plain indexing and scikit-learn, on the same draws."""
    users = len(a_frames[0])
    picks = seed_draws(seed, n_replicates, len(a_frames))
    index = np.concatenate(list(user_draws(seed, n_replicates, users)))
    out = []
    for r in range(n_replicates):
        diffs = []
        for s in picks[r]:
            values = []
            for frame in (a_frames[s], b_frames[s]):
                f = frame.iloc[index[r]]
                y, logit = f["like_label"].to_numpy(), f["like_logit"].to_numpy()
                if base == "auc":
                    values.append(roc_auc_score(y, logit) if len(np.unique(y)) == 2 else math.nan)
                elif base == "logloss":
                    p = np.clip(expit(logit), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
                    values.append(log_loss(y, p, labels=[0, 1]))
                elif base == "hr@3":
                    values.append(np.mean(f["rank"].to_numpy() < 3))
                elif base == "mrr":
                    values.append(np.mean(1.0 / (f["rank"].to_numpy() + 1)))
                elif base == "cascade_ndcg@3":
                    c = f["cascade_rank"].to_numpy()
                    c = c[c != NOT_COUNTED]
                    values.append(np.mean(np.where(c < 3, 1 / np.log2(c + 2), 0.0)) if len(c) else math.nan)
            diffs.append(values[0] - values[1])
        out.append(np.mean(diffs))
    out = np.array(out)
    return out[np.isfinite(out)]


@pytest.mark.parametrize("base", ["hr@3", "mrr", "logloss", "cascade_ndcg@3", "auc"])
def test_bootstrap_equals_a_brute_force_loop_on_the_same_draws(base):
    rng = np.random.default_rng(7)
    a = [outcomes(rng, ties=True) for _ in range(3)]
    b = [outcomes(rng, shift=0.3) for _ in range(3)]
    boot = UserBootstrap(np.arange(15), n_replicates=120, seed=11)
    got = boot.compare([(f"a{s}", f) for s, f in enumerate(a)], [(f"b{s}", f) for s, f in enumerate(b)], base)
    expected = brute_force(a, b, base, seed=11, n_replicates=120)
    assert got.replicates == pytest.approx(expected, abs=1e-12)

    # the estimate: the mean over seeds of the metrics on every user (metrics_from_outcomes)
    def full(frame):
        return metrics_from_outcomes(frame, (3,), cascade_k=3)[base]

    assert got.estimate == pytest.approx(np.mean([full(x) - full(y) for x, y in zip(a, b)]), abs=1e-12)
    assert got.n_seeds == 3 and got.n_users == 15
    # same seed, same numbers; another seed, other draws
    again = UserBootstrap(np.arange(15), n_replicates=120, seed=11).compare(
        [(f"a{s}", f) for s, f in enumerate(a)], [(f"b{s}", f) for s, f in enumerate(b)], base
    )
    assert np.array_equal(again.replicates, got.replicates)
    other = UserBootstrap(np.arange(15), n_replicates=120, seed=12).compare(
        [(f"a{s}", f) for s, f in enumerate(a)], [(f"b{s}", f) for s, f in enumerate(b)], base
    )
    assert not np.array_equal(other.replicates, got.replicates)


def test_users_are_drawn_once_per_replicate_for_every_seed_and_both_rows():
    """The crossed design: a user's outcome enters every drawn seed of a replicate as often as
    the user was drawn. With outcomes that differ on one user only, by the same amount in each
    seed, θ* is that amount × (the user's draw count / U) in every replicate, whatever seeds
    were drawn."""
    rng = np.random.default_rng(1)
    base = outcomes(rng)
    a = []
    for _ in range(3):
        f = base.copy()
        f.loc[0, "rank"] = 0  # user 0: a hit in A
        a.append(f)
    b = []
    for _ in range(3):
        f = base.copy()
        f.loc[0, "rank"] = 11  # ... a miss in B
        b.append(f)
    boot = UserBootstrap(np.arange(15), n_replicates=300, seed=2)
    got = boot.compare(
        [(f"a{s}", f) for s, f in enumerate(a)], [(f"b{s}", f) for s, f in enumerate(b)], "hr@3"
    )
    counts = np.concatenate([(idx == 0).sum(axis=1) for idx in user_draws(2, 300, 15)])
    assert got.replicates == pytest.approx(counts / 15.0, abs=1e-12)


def test_a_deterministic_row_enters_every_seed():
    rng = np.random.default_rng(5)
    a = [outcomes(rng) for _ in range(3)]
    floor = outcomes(rng)
    boot = UserBootstrap(np.arange(15), n_replicates=200, seed=0)
    once = boot.compare([(f"a{s}", f) for s, f in enumerate(a)], [("floor", floor)], "auc")
    repeated = boot.compare([(f"a{s}", f) for s, f in enumerate(a)], [("floor", floor)] * 3, "auc")
    assert np.array_equal(once.replicates, repeated.replicates) and once.n_seeds == 3


def test_identical_runs_give_no_difference_and_p_one():
    rng = np.random.default_rng(6)
    runs = [outcomes(rng) for _ in range(2)]
    boot = UserBootstrap(np.arange(15), n_replicates=500, seed=0)
    for base in ("hr@3", "auc", "logloss"):
        got = boot.compare([("a0", runs[0]), ("a1", runs[1])], [("b0", runs[0]), ("b1", runs[1])], base)
        assert got.estimate == 0.0 and (got.replicates == 0).all()
        assert got.p_value == 1.0 and got.interval() == (0.0, 0.0)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=10, max_size=400),
    st.sampled_from([0.9, 0.95, 0.975, 0.99, 0.9875, 0.995]),
)
@example([1] * 10, 0.9)  # all replicates one side, r · (1 − c) = 1: p cannot reach the level
def test_the_interval_excludes_zero_exactly_when_p_is_below_its_level(values, confidence):
    result = Bootstrapped(0.0, np.array(values, dtype=float), 2, 10)
    low, high = result.interval(confidence)
    excludes = low > 0 or high < 0
    assert excludes == (result.p_value < 1 - confidence)
    assert 0 < result.p_value <= 1
    if len(values) * (1 - confidence) <= 1:  # too few replicates for the level: no interval
        assert math.isnan(low) and math.isnan(high)
    else:
        assert low <= high


def test_outcomes_missing_a_compared_user_are_refused():
    rng = np.random.default_rng(0)
    frame = outcomes(rng)
    boot = UserBootstrap(np.arange(16), n_replicates=100)
    with pytest.raises(ValueError, match="lack 1 of the compared users"):
        boot.compare([("a", frame)], [("b", frame)], "mrr")


# --------------------------------------------------------------------------------------------
# seed-level t-tests
# --------------------------------------------------------------------------------------------


def test_seed_tests_match_scipy_and_refuse_what_they_cannot_test():
    a = pd.Series([0.30, 0.34, 0.31, 0.36])
    b = pd.Series([0.28, 0.30, 0.30, 0.31])
    got = seed_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert got.test == "paired" and got.p_value == pytest.approx(ref.pvalue)
    assert (got.low, got.high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    wide = seed_test(a, b, confidence=0.99)
    assert (wide.low, wide.high) == pytest.approx(tuple(ref.confidence_interval(0.99)))
    welch = seed_test(a, b.set_axis([4, 5, 6, 7]))
    assert welch.test == "welch"
    assert welch.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    # two seeds: one degree of freedom, no test
    assert math.isnan(seed_test(a[:2], b[:2]).p_value) and seed_test(a[:2], b[:2]).test == ""
    assert math.isnan(seed_test(a[:2], b.set_axis([4, 5, 6, 7])[:2], method="welch").p_value)


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_identical_per_seed_differences_never_print_a_significant_p(seeds):
    """The README's `+0.8% [+0.8, +0.8] (p < 0.001) *` at 2 seeds: equal differences give an
    infinite t statistic, not evidence — also when float rounding makes them differ in the
    17th digit (0.31 − 0.30 vs 0.32 − 0.31)."""
    ref = pd.Series([0.30 + 0.01 * s for s in range(seeds)])
    exact = ref + 0.008
    noisy = ref + 0.008 + np.arange(seeds) * 1e-16  # what float rounding leaves of equal changes
    assert float(np.ptp((noisy - ref).to_numpy())) > 0
    for row in (exact, noisy, ref.copy()):
        got = seed_test(row, ref)
        assert math.isnan(got.p_value) and got.test == "" and math.isnan(got.low)
