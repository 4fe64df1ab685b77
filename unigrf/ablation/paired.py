"""Paired comparisons of two rows of an ablation: over test users and seeds when the runs kept
their per-user outcomes (`unigrf.evaluation.outcomes`), over seeds only when they did not.

A difference between two rows has two sources of noise: the training seed and the sample of
test users (HR@10's standard error at 943 users is about 0.013 — as large as the effects the
paper claims). A t-test over 2–5 seeds sees only the first.

**Two-level (crossed) paired bootstrap** — the reported interval and p. Row A and the
reference B share the seeds both finished (S common seeds) and their test users (every run on
a dataset scores the same U users). One replicate draws S seeds with replacement from the
common seeds and U users with replacement from the users, **one user draw per replicate**,
used for every drawn seed and for both rows, and computes

    θ* = mean over the drawn seeds of [ metric_A(seed; drawn users) − metric_B(seed; drawn users) ]

User-mean metrics (HR@k, NDCG@k, MRR, LogLoss) are the mean over the drawn users; cascade
metrics the mean over the drawn users the cascade counts (the liked ones); AUC is recomputed
on the drawn users, each weighted by how often it was drawn. *Why users once per replicate
(a crossed design) and not anew within each seed*: the test users are one sample, evaluated
by every seed, so their sampling error is shared by all seeds and does not average out over
them; drawing users independently per seed would shrink that error by 1/S and give too narrow
an interval. Resampling both factors of a crossed design counts the seed × user interaction
twice, so the interval errs on the wide side (Owen 2007, "The pigeonhole bootstrap"). A row
without seeds (the count model: deterministic) enters every drawn seed with its one outcome
set. θ̂ is the same difference on the observed seeds and users.

Interval and p are read off the same R replicates, so they agree exactly: with k₋ = #{θ* ≤ 0}
and k₊ = #{θ* ≥ 0}, the two-sided p = 2·min(k₋, k₊)/R (at least 1/R), and the interval at
confidence 1 − γ is [the ⌈Rγ/2⌉-th smallest θ*, the ⌈Rγ/2⌉-th largest θ*]; it excludes 0
exactly when p < γ. Replicates where a metric is undefined (an AUC drawn without a positive)
are dropped. The draws are seeded: the same inputs give the same numbers.

**DeLong's test** for AUC differences (DeLong, DeLong & Clarke-Pearson 1988; the fast
midrank form of Sun & Xu 2014), kept as a cross-check (`p_delong` in summary.csv), not as the
reported p: on the seed-averaged difference its structural components are the per-seed
components averaged over seeds (the users are shared, so their correlation across seeds is
kept), which accounts for the test users but treats the seeds as fixed.

**Seed-level t-tests** (`seed_test`) — where runs have no per-user outcomes: the paired t-test
on the per-seed differences when both rows finished the same seeds, Welch's otherwise; only
with at least 3 seeds (per side for Welch) and non-zero variance (of the differences; for
Welch, of the rows), else no test ("n/a"). Two seeds give one degree of freedom, and
identical per-seed differences an infinite t statistic — `p < 0.001` from two equal
differences is an artefact, not evidence.

Pure numpy/SciPy/pandas (the outcomes schema's helpers, imported where used, bring torch's
import with `unigrf.evaluation`); no Ray.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit

DEFAULT_REPLICATES = 10_000
BLOCK = 500  # replicates per vectorised block: bounds memory at BLOCK × users
MIN_SEEDS = 3  # a seed-level t-test needs at least this many seeds (per side for Welch)
# metric names (without split) that per-user outcomes recompute
_USER_MEAN = ("hr@", "ndcg@", "mrr", "logloss", "cascade_hr@", "cascade_ndcg@")


def outcome_metric(metric: str) -> tuple[str, str] | None:
    """`test/ndcg@10` → ("test", "ndcg@10") when per-user outcomes recompute it, else None
    (train/* losses, GAUC: one target per user has no per-user AUC)."""
    split, _, base = metric.partition("/")
    if split not in ("val", "test"):
        return None
    if base == "auc" or base.startswith(_USER_MEAN):
        return split, base
    return None


def per_user_values(frame: pd.DataFrame, base: str) -> tuple[np.ndarray, np.ndarray]:
    """(values [U], counted [U] bool) of a user-mean metric, aligned with `frame`'s rows: the
    metric is the mean of `values` over the counted users (all users, but for cascade metrics
    the ones the cascade counts, and for LogLoss the ones with a ranking logit)."""
    # imported here: `unigrf.evaluation` loads torch, which a report without outcomes never needs
    from unigrf.evaluation.metrics import LOGLOSS_EPS
    from unigrf.evaluation.outcomes import NOT_COUNTED, per_user

    if base == "logloss":
        logits = frame["like_logit"].to_numpy(dtype=np.float64)
        counted = np.isfinite(logits)
        p = np.clip(expit(np.where(counted, logits, 0.0)), LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
        y = frame["like_label"].to_numpy(dtype=np.float64)
        return -(y * np.log(p) + (1.0 - y) * np.log1p(-p)), counted
    counted = (
        frame["cascade_rank"].to_numpy() != NOT_COUNTED
        if base.startswith("cascade_")
        else np.ones(len(frame), dtype=bool)
    )
    values = np.zeros(len(frame))
    values[counted] = per_user(frame, base)  # cascade: per_user keeps the counted users, in order
    return values, counted


# --------------------------------------------------------------------------------------------
# AUC: weighted (bootstrap replicates) and DeLong's structural components
# --------------------------------------------------------------------------------------------


class _AucPlan:
    """What a weighted AUC of one score vector needs, whatever the weights: the positives' and
    negatives' columns, and per positive how many negatives score strictly below it (`lo`) and
    at most as high (`hi`) — the negatives sorted by score."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        positive = np.asarray(labels).astype(bool)
        self.pos = np.flatnonzero(positive)
        neg = np.flatnonzero(~positive)
        order = np.argsort(scores[neg], kind="stable")
        self.neg = neg[order]
        neg_sorted = scores[self.neg]
        self.lo = np.searchsorted(neg_sorted, scores[self.pos], side="left")
        self.hi = np.searchsorted(neg_sorted, scores[self.pos], side="right")

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """[B] AUC under per-user weights [B, U] (integer draw counts or any non-negative)."""
        weights = np.atleast_2d(weights)
        wp = weights[:, self.pos]  # [B, m]
        neg_cum = np.zeros((weights.shape[0], len(self.neg) + 1), dtype=weights.dtype)
        np.cumsum(weights[:, self.neg], axis=1, out=neg_cum[:, 1:])  # [B, n + 1]
        acc = np.float64 if weights.dtype.kind == "f" else np.int64  # exact integer sums
        twice = (wp * (neg_cum[:, self.lo] + neg_cum[:, self.hi])).sum(axis=1, dtype=acc)  # ties: ½
        den = wp.sum(axis=1, dtype=np.float64) * neg_cum[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 0.5 * twice / np.where(den > 0, den, 1), math.nan)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of `scores` [U] against `labels` [U] under per-user weights [B, U] (a bootstrap's
    draw counts: a user drawn twice counts as two users): [B]. Tied scores count one half, as
    in `roc_auc_score`. NaN where a row's weights leave one class only.

    Weighted Mann-Whitney: Σ_pos w_i (W⁻(< s_i) + ½ W⁻(= s_i)) / (W⁺ W⁻), one cumulative sum
    over the negatives sorted by score."""
    return _AucPlan(scores, labels)(np.asarray(weights))


def delong_components(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: V10 [m] (per positive: the share of negatives scored
    below it, ties ½) and V01 [n] (per negative: the share of positives scored above it);
    AUC = mean(V10) = mean(V01). Midrank form, O((m + n) log(m + n))."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    pos, neg = scores[positive], scores[~positive]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("DeLong needs positives and negatives")
    ranks = stats.rankdata(np.concatenate([pos, neg]))  # midranks: ties share
    v10 = (ranks[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (ranks[m:] - stats.rankdata(neg)) / m
    return v10, v01


@dataclass(frozen=True)
class DeLong:
    difference: float  # mean over seeds of AUC(A) − AUC(B)
    se: float
    p_value: float  # two-sided, normal reference


def delong_test(a_scores: Sequence[np.ndarray], b_scores: Sequence[np.ndarray], labels: np.ndarray) -> DeLong:
    """DeLong's paired test of the seed-averaged AUC difference: `a_scores[s]`, `b_scores[s]`
    the two rows' scores [U] of the same users (same order as `labels`) in common seed s; a
    side with a single entry uses it for every seed (a deterministic row). With one seed this is
    DeLong's test of two correlated ROC curves."""
    if len(b_scores) == 1 and len(a_scores) > 1:
        b_scores = list(b_scores) * len(a_scores)
    if len(a_scores) == 1 and len(b_scores) > 1:
        a_scores = list(a_scores) * len(b_scores)
    if len(a_scores) != len(b_scores) or not a_scores:
        raise ValueError("delong_test: one score array per common seed on each side")
    parts = [delong_components(x, labels) for x in a_scores]
    other = [delong_components(x, labels) for x in b_scores]
    v10 = np.mean([p[0] - o[0] for p, o in zip(parts, other)], axis=0)
    v01 = np.mean([p[1] - o[1] for p, o in zip(parts, other)], axis=0)
    diff = float(v10.mean())
    var = (v10.var(ddof=1) if len(v10) > 1 else 0.0) / len(v10) + (
        v01.var(ddof=1) if len(v01) > 1 else 0.0
    ) / len(v01)
    se = math.sqrt(var)
    if se == 0.0:
        return DeLong(diff, 0.0, 1.0 if diff == 0.0 else math.nan)
    return DeLong(diff, se, float(2.0 * stats.norm.sf(abs(diff) / se)))


# --------------------------------------------------------------------------------------------
# The two-level bootstrap
# --------------------------------------------------------------------------------------------


def user_draws(seed: int, n_replicates: int, n_users: int, block: int = BLOCK) -> Iterator[np.ndarray]:
    """The bootstrap's user draws, in blocks of [≤ block, n_users] indices into the users: the
    one random stream every replicate value is computed from (tests replay it)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_replicates, block):
        yield rng.integers(0, n_users, size=(min(block, n_replicates - start), n_users))


def seed_draws(seed: int, n_replicates: int, n_seeds: int) -> np.ndarray:
    """[R, n_seeds] indices into the common seeds: each replicate's drawn seeds (a stream of
    its own, so the same users are drawn whatever the number of seeds)."""
    return np.random.default_rng((seed, 1, n_seeds)).integers(0, n_seeds, size=(n_replicates, n_seeds))


def _counts(index: np.ndarray, n_users: int) -> np.ndarray:
    """[B, U] indices → [B, U] draw counts per user (int32: exact sums in the AUC's
    cumulative counts, half the memory traffic of float64)."""
    b = index.shape[0]
    flat = (index + (np.arange(b) * n_users)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_users).reshape(b, n_users).astype(np.int32)


@dataclass(frozen=True)
class Bootstrapped:
    """A difference θ = A − B with its bootstrap replicates (the module docstring)."""

    estimate: float
    replicates: np.ndarray  # [R'] finite replicate values θ*
    n_seeds: int
    n_users: int

    @property
    def p_value(self) -> float:
        r = len(self.replicates)
        if r == 0:
            return math.nan
        tail = min(int((self.replicates <= 0).sum()), int((self.replicates >= 0).sum()))
        return min(1.0, max(2.0 * tail, 1.0) / r)

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Percentile interval at `confidence`; excludes 0 exactly when p < 1 − confidence.
        NaN when the replicates cannot resolve that level (r · (1 − confidence) ≤ 1): the
        outermost replicates would then exclude 0 where the p-value, floored at 1/r, cannot go
        below 1 − confidence — the comparison is untestable at that level, not significant."""
        r = len(self.replicates)
        if r == 0 or r * (1.0 - confidence) <= 1.0:
            return math.nan, math.nan
        k = max(math.ceil(r * (1.0 - confidence) / 2.0), 1)
        ordered = np.sort(self.replicates)
        return float(ordered[k - 1]), float(ordered[r - k])


class UserBootstrap:
    """The two-level bootstrap of one dataset: the user draws (shared by every comparison and
    metric on the dataset, so a row's replicate values are computed once) and each run's
    replicate values of a metric, cached by a caller-given key."""

    def __init__(self, users: np.ndarray, n_replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> None:
        if n_replicates < 100:
            raise ValueError(f"n_replicates must be >= 100, got {n_replicates}")
        self.users = np.unique(np.asarray(users, dtype=np.int64))
        if len(self.users) < 2:
            raise ValueError("a bootstrap over users needs at least 2 users")
        self.n_replicates = n_replicates
        self.seed = seed
        self._cache: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
        self._pending: dict[tuple[str, str], pd.DataFrame] = {}

    def _aligned(self, frame: pd.DataFrame) -> pd.DataFrame:
        indexed = frame.set_index("user")
        missing = np.setdiff1d(self.users, indexed.index.to_numpy())
        if len(missing):
            raise ValueError(f"outcomes lack {len(missing)} of the compared users (e.g. user {missing[0]})")
        return indexed.loc[self.users].reset_index()

    def add(self, key: str, frame: pd.DataFrame, base: str) -> None:
        """Register run `key`'s outcomes for metric `base` (computed together by `values`)."""
        if (key, base) not in self._cache:
            self._pending[(key, base)] = frame

    def values(self, key: str, frame: pd.DataFrame, base: str) -> tuple[float, np.ndarray]:
        """(the metric on the observed users, its value on each replicate's users [R]) of run
        `key`; every pending registration is computed in the same pass over the draws."""
        self.add(key, frame, base)
        if self._pending:
            self._compute()
        return self._cache[(key, base)]

    def _compute(self) -> None:
        jobs = list(self._pending.items())
        self._pending.clear()
        means, aucs = [], []
        for (key, base), frame in jobs:
            f = self._aligned(frame)
            if base == "auc":
                logits = f["like_logit"].to_numpy(dtype=np.float64)
                labels = f["like_label"].to_numpy()
                plan = _AucPlan(logits, labels) if np.isfinite(logits).all() else None
                aucs.append(((key, base), plan, labels))
            else:
                values, counted = per_user_values(f, base)
                means.append(((key, base), values * counted, counted.astype(np.float64)))
        n = len(self.users)
        x = np.stack([m[1] for m in means], axis=1) if means else np.zeros((n, 0))  # [U, K]
        c = np.stack([m[2] for m in means], axis=1) if means else np.zeros((n, 0))
        rep_mean = np.empty((self.n_replicates, len(means)))
        rep_auc = np.empty((self.n_replicates, len(aucs)))
        start = 0
        for index in user_draws(self.seed, self.n_replicates, n):
            w = _counts(index, n)  # [B, U] int32
            stop = start + len(w)
            if means:
                wf = w.astype(np.float64)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rep_mean[start:stop] = (wf @ x) / (wf @ c)
            for j, (_, plan, _labels) in enumerate(aucs):
                rep_auc[start:stop, j] = plan(w) if plan is not None else math.nan
            start = stop
        for j, (job, values, counted) in enumerate(means):
            total = counted.sum()
            point = float(values.sum() / total) if total else math.nan
            self._cache[job] = (point, rep_mean[:, j])
        for j, (job, plan, _labels) in enumerate(aucs):
            point = float(plan(np.ones((1, n), dtype=np.int64))[0]) if plan is not None else math.nan
            self._cache[job] = (point, rep_auc[:, j])

    def compare(
        self,
        a: Sequence[tuple[str, pd.DataFrame]],
        b: Sequence[tuple[str, pd.DataFrame]],
        base: str,
    ) -> Bootstrapped:
        """θ = A − B on metric `base`: `a`, `b` the two rows' (key, outcomes) of each common
        seed, in the same seed order; `b` (or `a`) with a single entry is a deterministic row,
        used for every seed."""
        n_seeds = max(len(a), len(b))
        if not a or not b or (len(a) != len(b) and 1 not in (len(a), len(b))):
            raise ValueError("compare: one outcome set per common seed on each side")
        for key, frame in (*a, *b):
            self.add(key, frame, base)
        va = [self.values(k, f, base) for k, f in a]
        vb = [self.values(k, f, base) for k, f in b]
        va, vb = va * (n_seeds // len(va)), vb * (n_seeds // len(vb))
        diffs = np.stack([x[1] - y[1] for x, y in zip(va, vb)], axis=1)  # [R, S]
        estimate = float(np.mean([x[0] - y[0] for x, y in zip(va, vb)]))
        picks = seed_draws(self.seed, self.n_replicates, n_seeds)
        theta = np.take_along_axis(diffs, picks, axis=1).mean(axis=1)
        return Bootstrapped(estimate, theta[np.isfinite(theta)], n_seeds, len(self.users))

    def delong(self, a: Sequence[tuple[str, pd.DataFrame]], b: Sequence[tuple[str, pd.DataFrame]]) -> DeLong:
        """DeLong's test of the seed-averaged AUC difference on the bootstrap's users."""
        fa = [self._aligned(f) for _, f in a]
        fb = [self._aligned(f) for _, f in b]
        labels = fa[0]["like_label"].to_numpy()
        for f in (*fa, *fb):
            if not np.array_equal(f["like_label"].to_numpy(), labels):
                raise ValueError("the compared runs disagree on the users' like labels")
        return delong_test(
            [f["like_logit"].to_numpy(dtype=np.float64) for f in fa],
            [f["like_logit"].to_numpy(dtype=np.float64) for f in fb],
            labels,
        )


# --------------------------------------------------------------------------------------------
# Seed-level t-tests (runs without per-user outcomes)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    p_value: float  # NaN when no test is possible (the rules: the module docstring)
    test: str  # "bootstrap", "paired", "welch", or "" when not tested
    n: int  # seeds compared per side (paired/bootstrap: common seeds)
    low: float = math.nan  # interval of the difference values − reference, at `confidence`
    high: float = math.nan
    n_users: int = 0  # bootstrap: users resampled
    p_delong: float = math.nan  # AUC: DeLong's cross-check (users only)


def _zero_spread(values: np.ndarray, scale: float) -> bool:
    """No variance up to floating-point noise (0.31 − 0.30 and 0.32 − 0.31 differ in the 17th
    digit: a t statistic of 1e15, not evidence)."""
    return len(values) == 0 or float(np.ptp(values)) <= 1e-12 * max(scale, 1e-300)


def seed_test(
    values: pd.Series, reference: pd.Series, method: str = "auto", confidence: float = 0.95
) -> TestResult:
    """Two-sided t-test of `values` against `reference`, both indexed by seed (NaNs dropped):
    paired on the common seeds when the seed sets are equal (`auto`) or asked (`paired`),
    Welch's otherwise; no test (NaN) below 3 seeds or without variance. The interval is the
    test's, at `confidence`."""
    values, reference = values.dropna().astype(float), reference.dropna().astype(float)
    common = values.index.intersection(reference.index)
    same_seeds = set(values.index) == set(reference.index)
    use_paired = method == "paired" or (method == "auto" and same_seeds)
    scale = max(
        float(np.abs(values.to_numpy()).max(initial=0.0)),
        float(np.abs(reference.to_numpy()).max(initial=0.0)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if use_paired:
            a, b = values.loc[common].to_numpy(), reference.loc[common].to_numpy()
            if len(common) < MIN_SEEDS or _zero_spread(a - b, scale):
                return TestResult(math.nan, "", len(common))
            res = stats.ttest_rel(a, b)
            test, n = "paired", len(common)
        else:
            a, b = values.to_numpy(), reference.to_numpy()
            n = min(len(a), len(b))
            if n < MIN_SEEDS or (_zero_spread(a, scale) and _zero_spread(b, scale)):
                return TestResult(math.nan, "", n)
            res = stats.ttest_ind(a, b, equal_var=False)
            test = "welch"
    ci = res.confidence_interval(confidence_level=confidence)
    return TestResult(float(res.pvalue), test, n, float(ci.low), float(ci.high))


def bootstrap_test(result: Bootstrapped, confidence: float = 0.95, p_delong: float = math.nan) -> TestResult:
    low, high = result.interval(confidence)
    return TestResult(result.p_value, "bootstrap", result.n_seeds, low, high, result.n_users, p_delong)


def common_users(frames: Mapping[str, pd.DataFrame] | Sequence[pd.DataFrame]) -> np.ndarray:
    """Users present in every outcomes frame (every run on a dataset scores the same users)."""
    items = list(frames.values()) if isinstance(frames, Mapping) else list(frames)
    if not items:
        return np.zeros(0, dtype=np.int64)
    users = items[0]["user"].to_numpy()
    for f in items[1:]:
        users = np.intersect1d(users, f["user"].to_numpy())
    return np.unique(users).astype(np.int64)
