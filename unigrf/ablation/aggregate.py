"""Aggregation of an ablation's runs: mean ± std over seeds, change against the reference row,
significance against it, the best value per column, and the per-stage peak epochs.

Input is the results frame (one row per run, written as `results.csv`): columns `dataset`,
`row`, `seed`, `variant`, `status` and one column per metric (`test/hr@10`, ...), plus the
histories frame (one row per run and epoch: `cell`, `epoch`, per-epoch metrics), the runs'
per-user outcomes where they kept them (cell → split → frame, `unigrf.evaluation.outcomes`)
and the datasets' ranking floors (`Floor`: the count model, `unigrf.evaluation.count_model`).

Significance [why these tests; `unigrf.ablation.paired` has the details]: a difference between
two rows carries the noise of the training seeds and of the sample of test users. Where both
rows kept per-user outcomes for every seed they share, the comparison is a **paired
two-level bootstrap** over those seeds and the test users (the same users for both rows,
drawn once per replicate across the seeds), which gives the change's 95 % percentile interval
and a two-sided p; AUC differences also get DeLong's test (`p_delong`, users only, a
cross-check). Runs without outcomes (reports written before runs kept them) fall back to a
**t-test over seeds** — paired on common seeds, else Welch's (`significance: welch` forces
it) — only with at least 3 seeds and non-zero variance, else no test ("n/a"); these intervals
cover the seeds only and the report labels them so.

Each table column (one metric of one dataset) compares every row — the count model's
included — with the reference, so its p-values are **Holm-corrected** over that column's
comparisons (`holm`, as `statsmodels.stats.multitest.multipletests(method="holm")`: it controls the chance
of any false "significant" in the column, without Bonferroni's loss of power); `significant`
reads the corrected value. The effect size is the change of the mean in % of the reference
mean, with its 95 % interval (of the difference, scaled by the same 100 / |reference mean|).
The interval is per comparison, the star family-wise: an interval that just excludes 0 can
go without a star. An interval that spans 0 says "not resolved by these seeds and users",
not "no effect".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from unigrf.ablation.paired import (
    DEFAULT_REPLICATES,
    TestResult,
    UserBootstrap,
    bootstrap_test,
    common_users,
    outcome_metric,
    seed_test,
)

OK_STATUS = "ok"
RETRIEVAL_METRICS = ("hr@", "ndcg@", "mrr", "loss_retrieval")
RANKING_METRICS = ("auc", "logloss", "loss_ranking")  # gauc contains "auc"
CASCADE_METRICS = ("cascade_",)
FLOOR_METRICS = ("auc", "logloss")  # what a ranking floor (the count model) measures


def metric_base(metric: str) -> str:
    """`test/ndcg@10` -> `ndcg@10`."""
    return metric.split("/", 1)[-1]


def lower_is_better(metric: str) -> bool:
    return "loss" in metric_base(metric)


def applicable(variant: str, metric: str) -> bool:
    """Whether `variant` trains what `metric` measures. A retrieval-only model's ranking head
    (and a ranking-only model's retrieval head) is untrained: its number is not a result."""
    from unigrf.config import VARIANTS

    spec = VARIANTS.get(variant)
    if spec is None:  # not a variant name (a label): assume it trains both stages
        return True
    base = metric_base(metric)
    if base.startswith(CASCADE_METRICS):
        return spec.retrieval and spec.ranking
    if not spec.retrieval and base.startswith(RETRIEVAL_METRICS):
        return False
    if not spec.ranking and any(base.startswith(p) or p in base for p in RANKING_METRICS):
        return False
    return True


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of one family of tests; NaNs (no test) stay NaN and do not count.

    The step-down adjustment — the i-th smallest of m p-values times (m − i + 1), running
    maximum, capped at 1 — in numpy: statsmodels' `multipletests(method="holm")` gives the same
    numbers (tests check it) but runs a full `gc.collect()` per call, which is slow once torch
    is loaded."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if len(finite):
        order = finite[np.argsort(p[finite], kind="stable")]
        m = len(order)
        out[order] = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    return out.tolist()


def compare(
    values: pd.Series, reference: pd.Series, method: str = "auto", confidence: float = 0.95
) -> TestResult:
    """The seed-level t-test of `values` against `reference`, both indexed by seed (NaNs
    dropped): `unigrf.ablation.paired.seed_test` (n/a below 3 seeds or without variance)."""
    return seed_test(values, reference, method, confidence)


# --------------------------------------------------------------------------------------------
# Comparing two rows: over users and seeds where outcomes exist, over seeds otherwise
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    """A dataset's ranking floor shown as a row (the count model): no training run, no seeds.
    `values`: metric (e.g. test/auc) → value; `outcomes`: split → per-user outcomes."""

    row: str
    values: Mapping[str, float]
    outcomes: Mapping[str, pd.DataFrame] = field(default_factory=dict)

    def measures(self, metric: str) -> bool:
        return metric_base(metric) in FLOOR_METRICS and math.isfinite(self.values.get(metric, math.nan))


class Comparator:
    """Tests "row A against row B on a metric" on the stored runs of a report (or of several
    datasets in it): the two-level bootstrap when both rows kept per-user outcomes for every
    seed they share, else the seed-level t-test. One `UserBootstrap` per dataset, so every
    comparison on a dataset shares the user draws and each run's replicate values are
    computed once."""

    def __init__(
        self,
        results: pd.DataFrame,
        outcomes: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
        floors: Mapping[str, Floor] | None = None,
        method: str = "auto",
        n_replicates: int = DEFAULT_REPLICATES,
        seed: int = 0,
    ) -> None:
        self.results = results
        self.ok = results[results["status"] == OK_STATUS] if "status" in results else results
        self.outcomes = outcomes or {}
        self.floors = floors or {}
        self.method = method
        self.n_replicates = n_replicates
        self.seed = seed
        self._boot: dict[str, UserBootstrap | None] = {}

    def per_seed(self, dataset: str, row: str, metric: str) -> pd.Series:
        """`metric` of `row`'s finished runs on `dataset`, indexed by seed (NaNs dropped)."""
        runs = self.ok[(self.ok["dataset"] == dataset) & (self.ok["row"] == row)]
        if metric not in runs:
            return pd.Series(dtype=float)
        return runs.set_index("seed")[metric].astype(float).dropna()

    def _cells(self, dataset: str, row: str) -> dict[int, str]:
        runs = self.ok[(self.ok["dataset"] == dataset) & (self.ok["row"] == row)]
        return dict(zip(runs["seed"].astype(int), runs["cell"].astype(str)))

    def bootstrap(self, dataset: str) -> UserBootstrap | None:
        """The dataset's bootstrap over the users every stored outcome set shares (None when
        no run on it kept outcomes)."""
        if dataset not in self._boot:
            cells = set(self.ok.loc[self.ok["dataset"] == dataset, "cell"].astype(str))
            frames = [f for c in cells for f in self.outcomes.get(c, {}).values()]
            floor = self.floors.get(dataset)
            frames += list(floor.outcomes.values()) if floor is not None else []
            users = common_users(frames)
            self._boot[dataset] = (
                UserBootstrap(users, self.n_replicates, self.seed) if len(users) >= 2 else None
            )
        return self._boot[dataset]

    def _side(self, dataset: str, row: str, split: str, seeds) -> list[tuple[str, pd.DataFrame]] | None:
        """(key, outcomes) per seed in `seeds` order, a floor's one set, or None if one lacks."""
        floor = self.floors.get(dataset)
        if floor is not None and row == floor.row:
            frame = floor.outcomes.get(split)
            return None if frame is None else [(f"{floor.row}/{dataset}/{split}", frame)]
        cells = self._cells(dataset, row)
        out = []
        for s in seeds:
            frame = self.outcomes.get(cells.get(s, ""), {}).get(split)
            if frame is None:
                return None
            out.append((f"{cells[s]}/{split}", frame))
        return out

    def _values(self, dataset: str, row: str, metric: str) -> pd.Series | float:
        floor = self.floors.get(dataset)
        if floor is not None and row == floor.row:
            return float(floor.values.get(metric, math.nan))
        return self.per_seed(dataset, row, metric)

    def register(self, dataset: str, rows: Sequence[str], metrics: Sequence[str]) -> None:
        """Announce the runs and metrics about to be compared, so that the bootstrap computes
        their replicate values in one pass over its draws."""
        boot = self.bootstrap(dataset)
        if boot is None:
            return
        for metric in metrics:
            which = outcome_metric(metric)
            if which is None:
                continue
            split, base = which
            for row in rows:
                values = self._values(dataset, row, metric)
                seeds = list(values.index) if isinstance(values, pd.Series) else []
                for key, frame in self._side(dataset, row, split, seeds) or []:
                    boot.add(key, frame, base)

    def test(
        self, dataset: str, row: str, reference: str, metric: str, confidence: float = 0.95
    ) -> TestResult:
        """`row` − `reference` on `metric`: the interval at `confidence`, the two-sided p."""
        a, b = self._values(dataset, row, metric), self._values(dataset, reference, metric)
        if isinstance(a, float) and isinstance(b, float):
            return TestResult(math.nan, "", 0)
        method = self.method
        if isinstance(a, float) or isinstance(b, float):
            # a deterministic row: its value at each of the other row's seeds, so the paired
            # test is the one-sample t-test of the other row's seeds against it
            method = "paired"
            if isinstance(a, float):
                a = pd.Series(a, index=b.index).dropna()
            else:
                b = pd.Series(b, index=a.index).dropna()
        common = [s for s in a.index if s in set(b.index)]
        which = outcome_metric(metric)
        boot = self.bootstrap(dataset) if which is not None and common else None
        if boot is not None:
            split, base = which
            side_a = self._side(dataset, row, split, common)
            side_b = self._side(dataset, reference, split, common)
            if side_a is not None and side_b is not None:
                result = boot.compare(side_a, side_b, base)
                p_delong = math.nan
                if base == "auc" and math.isfinite(result.estimate):
                    p_delong = boot.delong(side_a, side_b).p_value
                return bootstrap_test(result, confidence, p_delong)
        return seed_test(a, b, method, confidence)


def aggregate(
    results: pd.DataFrame,
    metrics: Sequence[str],
    reference: str,
    method: str = "auto",
    alpha: float = 0.05,
    row_order: Sequence[str] | None = None,
    *,
    outcomes: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
    floors: Mapping[str, Floor] | None = None,
    n_replicates: int = DEFAULT_REPLICATES,
    bootstrap_seed: int = 0,
) -> pd.DataFrame:
    """Long table, one line per (dataset, row, metric), in row order, then each dataset's
    floor row (`floors`, e.g. the count model) where it measures the metric.

    Columns: dataset, row, variant, metric, n (finished seeds; 0 for a floor), mean, std
    (sample, ddof=1; NaN for one seed), rel_change (% of the reference mean), rel_low /
    rel_high (its 95 % interval, same scale), p_value (raw), p_adjusted (Holm over the column's
    rows), test ("bootstrap": users and seeds; "paired" / "welch": seeds only; "": none),
    n_users (users the bootstrap resampled), p_delong (AUC, bootstrap rows), significant
    (p_adjusted < alpha), is_reference, is_floor, applicable, best (the best mean of the column
    among applicable model rows of the dataset, by the metric's direction).
    """
    comparator = Comparator(results, outcomes, floors, method, n_replicates, bootstrap_seed)
    rows = list(row_order) if row_order is not None else list(dict.fromkeys(results["row"]))
    lines = []
    for dataset in dict.fromkeys(results["dataset"]):
        floor = (floors or {}).get(dataset)
        compared = rows + ([floor.row] if floor is not None else [])
        comparator.register(dataset, compared, metrics)
        ref_vals = {m: comparator.per_seed(dataset, reference, m) for m in metrics}
        for row in rows:
            in_all = results[(results["dataset"] == dataset) & (results["row"] == row)]
            if in_all.empty:
                continue
            variant = str(in_all["variant"].iloc[0])
            for metric in metrics:
                vals = comparator.per_seed(dataset, row, metric)
                is_app = applicable(variant, metric)
                mean = float(vals.mean()) if is_app and len(vals) else math.nan
                std = float(vals.std(ddof=1)) if is_app and len(vals) > 1 else math.nan
                test = TestResult(math.nan, "", 0)
                if is_app and row != reference:
                    test = comparator.test(dataset, row, reference, metric)
                lines.append(
                    _line(dataset, row, variant, metric, int(len(vals)) if is_app else 0, mean, std)
                    | _change(mean if row != reference else math.nan, ref_vals[metric], test)
                    | {"is_reference": row == reference, "is_floor": False, "applicable": is_app}
                )
        if floor is None:
            continue
        for metric in metrics:
            if not floor.measures(metric):
                continue
            value = float(floor.values[metric])
            test = comparator.test(dataset, floor.row, reference, metric)
            lines.append(
                _line(dataset, floor.row, "", metric, 0, value, math.nan)
                | _change(value, ref_vals[metric], test)
                | {"is_reference": False, "is_floor": True, "applicable": True}
            )
    table = pd.DataFrame(lines)
    if table.empty:
        return table.assign(
            p_adjusted=pd.Series(dtype=float), significant=pd.Series(dtype=bool), best=pd.Series(dtype=bool)
        )
    table["p_adjusted"] = math.nan
    for _, group in table.groupby(["dataset", "metric"], sort=False):  # one family per column
        table.loc[group.index, "p_adjusted"] = holm(group["p_value"].tolist())
    table["significant"] = table["p_adjusted"].lt(alpha)  # NaN compares False
    table["best"] = False
    models = table[~table["is_floor"]]
    for (_, metric), group in models.groupby(["dataset", "metric"], sort=False):
        means = group["mean"].dropna()
        if means.empty:
            continue
        target = means.min() if lower_is_better(metric) else means.max()
        table.loc[means.index[np.isclose(means.to_numpy(), target, rtol=0, atol=1e-12)], "best"] = True
    return table


def _line(dataset: str, row: str, variant: str, metric: str, n: int, mean: float, std: float) -> dict:
    return {
        "dataset": dataset,
        "row": row,
        "variant": variant,
        "metric": metric,
        "n": n,
        "mean": mean,
        "std": std,
    }


def _change(mean: float, reference: pd.Series, test: TestResult) -> dict:
    """The change in % of the reference mean and the test's interval on that scale (NaN for
    the reference row itself: `mean` NaN)."""
    ref_mean = float(reference.mean()) if len(reference) else math.nan
    rel = rel_low = rel_high = math.nan
    if ref_mean and math.isfinite(ref_mean) and math.isfinite(mean):
        scale = 100.0 / abs(ref_mean)
        rel = (mean - ref_mean) * scale
        rel_low, rel_high = test.low * scale, test.high * scale
    return {
        "rel_change": rel,
        "rel_low": rel_low,
        "rel_high": rel_high,
        "p_value": test.p_value,
        "test": test.test,
        "n_users": test.n_users,
        "p_delong": test.p_delong,
    }


# --------------------------------------------------------------------------------------------
# Peak epochs (the sync figure's claim: with the weighter both stages peak together)
# --------------------------------------------------------------------------------------------


def peak_epochs(histories: pd.DataFrame, retrieval: str, ranking: str) -> pd.DataFrame:
    """Per run: the 1-based epoch where each stage's validation metric is best (first one on
    ties; argmin for loss-like metrics) and their gap |retrieval − ranking|.

    Columns: cell, retrieval_peak, ranking_peak, gap, epochs.
    """
    out = []
    for cell, h in histories.groupby("cell", sort=False):
        h = h.sort_values("epoch")
        peaks = {}
        for name, metric in (("retrieval_peak", retrieval), ("ranking_peak", ranking)):
            series = h[metric].astype(float) if metric in h else pd.Series(dtype=float)
            series = series.dropna()
            if series.empty:
                peaks[name] = math.nan
                continue
            idx = series.idxmin() if lower_is_better(metric) else series.idxmax()
            peaks[name] = float(h.loc[idx, "epoch"]) + 1.0
        out.append(
            {
                "cell": cell,
                **peaks,
                "gap": abs(peaks["retrieval_peak"] - peaks["ranking_peak"]),
                "epochs": int(len(h)),
            }
        )
    return pd.DataFrame(out, columns=["cell", "retrieval_peak", "ranking_peak", "gap", "epochs"])


def aggregate_peaks(
    results: pd.DataFrame,
    histories: pd.DataFrame,
    retrieval: str,
    ranking: str,
    row_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean ± std over seeds of each row's peak epochs and gap.

    Columns: dataset, row, n, {retrieval_peak, ranking_peak, gap, epochs}_{mean, std}.
    """
    peaks = peak_epochs(histories, retrieval, ranking)
    merged = results[["cell", "dataset", "row", "variant"]].merge(peaks, on="cell", how="inner")
    # a stage the variant does not train has no peak (its curve is an untrained head's)
    for col, metric in (("retrieval_peak", retrieval), ("ranking_peak", ranking)):
        keep = merged["variant"].map(lambda v, m=metric: applicable(str(v), m))
        merged[col] = merged[col].where(keep)
    merged["gap"] = (merged["retrieval_peak"] - merged["ranking_peak"]).abs()
    rows = list(row_order) if row_order is not None else list(dict.fromkeys(results["row"]))
    lines = []
    for dataset in dict.fromkeys(results["dataset"]):
        for row in rows:
            sub = merged[(merged["dataset"] == dataset) & (merged["row"] == row)]
            if sub.empty:
                continue
            line = {"dataset": dataset, "row": row, "n": len(sub)}
            for col in ("retrieval_peak", "ranking_peak", "gap", "epochs"):
                vals = sub[col].astype(float).dropna()
                line[f"{col}_mean"] = float(vals.mean()) if len(vals) else math.nan
                line[f"{col}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            lines.append(line)
    return pd.DataFrame(lines)


# --------------------------------------------------------------------------------------------
# Loss weights (the weighter comparison: which weights each kind actually produced)
# --------------------------------------------------------------------------------------------


def aggregate_weights(
    results: pd.DataFrame,
    histories: pd.DataFrame,
    task: str = "retrieval",
    row_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per row, the range of `task`'s loss weight over every training step of each run, mean
    over seeds: `low` (the run's smallest weight, from `weights/<task>_min`), `mean` (the mean
    of the epoch-end weights) and `high` (`weights/<task>_max`). Histories without the per-epoch
    range (older runs) fall back to the epoch-end weights. Only rows whose runs weigh two tasks
    appear (the loss-ratio and gradient-norm weighters keep two weights summing to 2; grad_share
    keeps one at 1 and raises the other, so each task has its own range).

    Columns: dataset, row, n, low, mean, high, spread (high − low, mean over seeds).
    """
    col = f"weights/{task}"
    others = [c for c in histories.columns if c.startswith("weights/") and not c.startswith(col)]
    if col not in histories or not others:
        return pd.DataFrame(columns=["dataset", "row", "n", "low", "mean", "high", "spread"])
    h = histories.dropna(subset=[col])
    h = h[h[others].notna().any(axis=1)]  # a single-task run's weight is a constant 1
    low = h[f"{col}_min"] if f"{col}_min" in h else h[col]
    high = h[f"{col}_max"] if f"{col}_max" in h else h[col]
    per_run = (
        pd.DataFrame(
            {"cell": h["cell"], "low": low.fillna(h[col]), "value": h[col], "high": high.fillna(h[col])}
        )
        .groupby("cell", sort=False)
        .agg(low=("low", "min"), mean=("value", "mean"), high=("high", "max"))
    )
    per_run["spread"] = per_run["high"] - per_run["low"]
    ok = results[results["status"] == OK_STATUS] if "status" in results else results
    merged = ok[["cell", "dataset", "row"]].merge(per_run, left_on="cell", right_index=True)
    rows = list(row_order) if row_order is not None else list(dict.fromkeys(results["row"]))
    lines = []
    for dataset in dict.fromkeys(results["dataset"]):
        for row in rows:
            sub = merged[(merged["dataset"] == dataset) & (merged["row"] == row)]
            if not sub.empty:
                means = sub[["low", "mean", "high", "spread"]].mean()
                lines.append({"dataset": dataset, "row": row, "n": len(sub), **means.to_dict()})
    return pd.DataFrame(lines, columns=["dataset", "row", "n", "low", "mean", "high", "spread"])


def seconds_per_epoch(results: pd.DataFrame) -> pd.Series:
    """Per run: wall seconds per epoch (training + validation), from `epoch_time_s` / `epochs_run`."""
    if "epoch_time_s" not in results or "epochs_run" not in results:
        return pd.Series(math.nan, index=results.index)
    return results["epoch_time_s"].astype(float) / results["epochs_run"].astype(float).where(
        results["epochs_run"].astype(float) > 0
    )
