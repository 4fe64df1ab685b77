"""A headline comparison: two rows chosen on validation, tested on test with the choice
corrected for.

A table's headline — "the best unified model against the strongest baseline" — picks two rows
out of several. Picked by their test means, the comparison is the largest of several noisy
differences and reads as an effect where there is none (and a row validation would not pick
can lead by the test set's noise alone). So:

1. **The choice reads validation only.** `choose_on_validation` takes each candidate's mean over
   its finished seeds of a `val/` metric and refuses any other split; ties go to the first
   candidate in the given order; a candidate without a finite value is not a candidate.
2. **The test comparison is corrected for the choice.** The chosen pair is one of
   k = (row candidates) × (baseline candidates) pairs that could have been chosen; validation
   and test are correlated (the same models), so the chosen pair's test difference is still a
   maximum over k, to a degree the data do not say. Bonferroni bounds the chance of a false
   claim whatever that correlation: the difference's interval at confidence 1 − (1 − c)/k and
   the p-value times k (capped at 1); the interval excludes 0 exactly when the corrected
   p < 1 − c (for the bootstrap's percentile intervals, `unigrf.ablation.paired`).
   Conservative when the candidates are strongly correlated; never anti-conservative.

The test itself is `Comparator.test` (a paired two-level bootstrap over test users and seeds
where both rows kept per-user outcomes, else a t-test over seeds, else none).

Pure pandas (through `unigrf.ablation.aggregate`); no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from unigrf.ablation.aggregate import Comparator, lower_is_better
from unigrf.ablation.paired import TestResult

BETTER = "better"  # the corrected interval lies on the row's good side of 0
WORSE = "worse"
INCONCLUSIVE = "inconclusive"


def _split(metric: str) -> str:
    return metric.partition("/")[0]


@dataclass(frozen=True)
class Choice:
    """The candidate with the best validation mean, and every candidate's mean (NaN: not
    measured, hence not a candidate)."""

    chosen: str
    metric: str  # the val/ metric the choice read
    scores: Mapping[str, float]

    @property
    def n_candidates(self) -> int:
        return sum(1 for v in self.scores.values() if math.isfinite(v))


def choose_on_validation(scores: Mapping[str, float], metric: str) -> Choice:
    """The candidate with the best `scores` value (higher, or lower for a loss-like `metric`);
    ties to the first in `scores`' order. ValueError when `metric` is not a validation metric
    or no candidate has a finite score."""
    if _split(metric) != "val":
        raise ValueError(f"a choice reads validation only: got {metric!r} (expected val/...)")
    sign = -1.0 if lower_is_better(metric) else 1.0
    best, best_value = None, -math.inf
    for name, value in scores.items():
        value = float(value)
        if math.isfinite(value) and sign * value > best_value:
            best, best_value = name, sign * value
    if best is None:
        raise ValueError(f"no candidate has a finite {metric} (candidates: {', '.join(scores) or 'none'})")
    return Choice(best, metric, {k: float(v) for k, v in scores.items()})


def validation_means(
    comparator: Comparator, dataset: str, rows: Sequence[str], metric: str
) -> dict[str, float]:
    """Each row's mean over its finished seeds of the validation `metric` (NaN without runs)."""
    if _split(metric) != "val":
        raise ValueError(f"validation_means reads validation only: got {metric!r}")
    out = {}
    for row in rows:
        values = comparator.per_seed(dataset, row, metric)
        out[row] = float(values.mean()) if len(values) else math.nan
    return out


def bonferroni(p_value: float, k: int) -> float:
    """min(1, k · p); NaN stays NaN."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(1.0, k * p_value) if math.isfinite(p_value) else math.nan


def corrected_confidence(confidence: float, k: int) -> float:
    """The per-comparison confidence of a Bonferroni family of k: 1 − (1 − confidence)/k."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return 1.0 - (1.0 - confidence) / k


@dataclass(frozen=True)
class ChosenTest:
    """The chosen row against the chosen baseline on a test metric, corrected for the choice."""

    row: Choice
    baseline: Choice
    metric: str
    k: int  # candidate pairs: row.n_candidates × baseline.n_candidates
    confidence: float  # the family's confidence (e.g. 0.95)
    level: float  # the interval's confidence: 1 − (1 − confidence)/k
    mean_row: float  # test means over each row's finished seeds
    mean_baseline: float
    low: float  # interval of row − baseline at `level` (NaN: no test)
    high: float
    p_raw: float  # the comparison's two-sided p, uncorrected
    p_value: float  # bonferroni(p_raw, k)
    test: str  # "bootstrap", "paired", "welch" or "" (none possible)
    n: int  # seeds compared
    n_users: int  # users the bootstrap resampled (0: over seeds only)

    @property
    def difference(self) -> float:
        return self.mean_row - self.mean_baseline

    def _pct(self, value: float) -> float:
        return 100.0 * value / abs(self.mean_baseline) if self.mean_baseline else math.nan

    @property
    def rel_change(self) -> float:
        """The change in % of the baseline's mean."""
        return self._pct(self.difference)

    @property
    def rel_low(self) -> float:
        return self._pct(self.low)

    @property
    def rel_high(self) -> float:
        return self._pct(self.high)

    @property
    def result(self) -> str:
        """better / worse (the corrected interval excludes 0 on that side, in the metric's good
        direction) or inconclusive (it spans 0, or no test)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low <= 0.0 <= self.high:
            return INCONCLUSIVE
        up = self.low > 0.0
        return BETTER if up != lower_is_better(self.metric) else WORSE


def compare_chosen(
    comparator: Comparator,
    dataset: str,
    row: Choice,
    baseline: Choice,
    metric: str,
    confidence: float = 0.95,
) -> ChosenTest:
    """`row.chosen` − `baseline.chosen` on the test `metric`, its interval and p corrected for
    the row.n_candidates × baseline.n_candidates pairs the choice ranged over (the module
    docstring)."""
    if _split(metric) != "test":
        raise ValueError(f"the chosen pair is compared on a test metric, got {metric!r}")
    k = max(row.n_candidates * baseline.n_candidates, 1)
    level = corrected_confidence(confidence, k)
    a = comparator.per_seed(dataset, row.chosen, metric)
    b = comparator.per_seed(dataset, baseline.chosen, metric)
    result = (
        comparator.test(dataset, row.chosen, baseline.chosen, metric, level)
        if len(a) and len(b)
        else TestResult(math.nan, "", 0)
    )
    return ChosenTest(
        row=row,
        baseline=baseline,
        metric=metric,
        k=k,
        confidence=confidence,
        level=level,
        mean_row=float(a.mean()) if len(a) else math.nan,
        mean_baseline=float(b.mean()) if len(b) else math.nan,
        low=result.low,
        high=result.high,
        p_raw=result.p_value,
        p_value=bonferroni(result.p_value, k),
        test=result.test,
        n=result.n,
        n_users=result.n_users,
    )
