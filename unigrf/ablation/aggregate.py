"""Aggregation of an ablation's runs: mean ± std over seeds, change against the reference row,
significance against it, the best value per column, and the per-stage peak epochs.

Input is the results frame (one row per run, written as `results.csv`): columns `dataset`,
`row`, `seed`, `variant`, `status` and one column per metric (`test/hr@10`, ...), plus the
histories frame (one row per run and epoch: `cell`, `epoch`, per-epoch metrics).

Significance [why this test]: each row has one value per seed, so the sample per row is tiny
(2–5). The comparison against the reference row uses
- a **paired t-test** (`scipy.stats.ttest_rel`) when both rows finished the same seeds (the
  `auto` default): every variant is trained with the same seeds, which fix the batch order, the
  sampled negatives' stream and the initialisation of the shared parts, so seed-to-seed
  variation common to both rows cancels in the per-seed differences;
- **Welch's t-test** (`scipy.stats.ttest_ind(equal_var=False)`) otherwise (seed sets differ, or
  `significance: welch`): it does not assume equal variances, which rows of different variants
  do not have.
p-values are two-sided. Each table column (one metric of one dataset) compares every row with
the reference, so its p-values are **Holm-corrected** over that column's comparisons
(`statsmodels.stats.multitest.multipletests(method="holm")`: it controls the chance of any false
"significant" in the column, without Bonferroni's loss of power); `significant` reads the
corrected value. The effect size is the change of the mean in % of the reference mean, with the
test's 95 % confidence interval of the difference (paired: over the per-seed differences; Welch:
of the difference of the means) on the same scale. With 3 seeds only large, consistent effects
reach a corrected p < 0.05: an interval that spans 0 says "not resolved at this many seeds",
not "no effect".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

OK_STATUS = "ok"
RETRIEVAL_METRICS = ("hr@", "ndcg@", "mrr", "loss_retrieval")
RANKING_METRICS = ("auc", "logloss", "loss_ranking")  # gauc contains "auc"
CASCADE_METRICS = ("cascade_",)


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


@dataclass(frozen=True)
class TestResult:
    p_value: float  # NaN when no test is possible (n < 2, zero variance)
    test: str  # "paired", "welch" or "" when not tested
    n: int  # values compared per side (paired: common seeds)
    low: float = math.nan  # 95 % confidence interval of the difference values − reference
    high: float = math.nan


def _with_interval(res, test: str, n: int) -> TestResult:
    ci = res.confidence_interval(confidence_level=0.95)
    return TestResult(float(res.pvalue), test, n, float(ci.low), float(ci.high))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of one family of tests; NaNs (no test) stay NaN and do not count."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return out.tolist()


def compare(values: pd.Series, reference: pd.Series, method: str = "auto") -> TestResult:
    """Two-sided test of `values` against `reference`, both indexed by seed (NaNs dropped)."""
    values, reference = values.dropna(), reference.dropna()
    common = values.index.intersection(reference.index)
    same_seeds = set(values.index) == set(reference.index)
    use_paired = method == "paired" or (method == "auto" and same_seeds)
    with warnings.catch_warnings():
        # scipy warns (and returns NaN) on zero variance: a NaN p-value is the honest answer
        warnings.simplefilter("ignore", RuntimeWarning)
        if use_paired:
            if len(common) < 2:
                return TestResult(math.nan, "", len(common))
            res = stats.ttest_rel(values.loc[common].to_numpy(), reference.loc[common].to_numpy())
            return _with_interval(res, "paired", len(common))
        if len(values) < 2 or len(reference) < 2:
            return TestResult(math.nan, "", min(len(values), len(reference)))
        res = stats.ttest_ind(values.to_numpy(), reference.to_numpy(), equal_var=False)
        return _with_interval(res, "welch", min(len(values), len(reference)))


def aggregate(
    results: pd.DataFrame,
    metrics: Sequence[str],
    reference: str,
    method: str = "auto",
    alpha: float = 0.05,
    row_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Long table, one line per (dataset, row, metric), in row order.

    Columns: dataset, row, variant, metric, n (finished seeds), mean, std (sample, ddof=1; NaN
    for one seed), rel_change (% of the reference mean), rel_low / rel_high (its 95 % interval,
    same scale), p_value (raw), p_adjusted (Holm over the column's rows), test, significant
    (p_adjusted < alpha), is_reference, applicable, best (the best mean of the column among
    applicable rows of the dataset, by the metric's direction).
    """
    ok = results[results["status"] == OK_STATUS] if "status" in results else results
    rows = list(row_order) if row_order is not None else list(dict.fromkeys(results["row"]))
    lines = []
    for dataset in dict.fromkeys(results["dataset"]):
        ds = ok[ok["dataset"] == dataset]
        ref = ds[ds["row"] == reference].set_index("seed")
        for row in rows:
            sub = ds[ds["row"] == row].set_index("seed")
            in_all = results[(results["dataset"] == dataset) & (results["row"] == row)]
            if in_all.empty:
                continue
            variant = str(in_all["variant"].iloc[0])
            for metric in metrics:
                vals = sub[metric].astype(float).dropna() if metric in sub else pd.Series(dtype=float)
                is_app = applicable(variant, metric)
                mean = float(vals.mean()) if is_app and len(vals) else math.nan
                std = float(vals.std(ddof=1)) if is_app and len(vals) > 1 else math.nan
                ref_vals = ref[metric].astype(float) if metric in ref else pd.Series(dtype=float)
                ref_mean = float(ref_vals.mean()) if len(ref_vals.dropna()) else math.nan
                rel = rel_low = rel_high = math.nan
                test = TestResult(math.nan, "", 0)
                if is_app and row != reference:
                    test = compare(vals, ref_vals, method)
                    if ref_mean and math.isfinite(ref_mean):
                        scale = 100.0 / abs(ref_mean)
                        rel = (mean - ref_mean) * scale
                        rel_low, rel_high = test.low * scale, test.high * scale
                lines.append(
                    {
                        "dataset": dataset,
                        "row": row,
                        "variant": variant,
                        "metric": metric,
                        "n": int(len(vals)) if is_app else 0,
                        "mean": mean,
                        "std": std,
                        "rel_change": rel,
                        "rel_low": rel_low,
                        "rel_high": rel_high,
                        "p_value": test.p_value,
                        "test": test.test,
                        "is_reference": row == reference,
                        "applicable": is_app,
                    }
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
    for (_, metric), group in table.groupby(["dataset", "metric"], sort=False):
        means = group["mean"].dropna()
        if means.empty:
            continue
        target = means.min() if lower_is_better(metric) else means.max()
        table.loc[means.index[np.isclose(means.to_numpy(), target, rtol=0, atol=1e-12)], "best"] = True
    return table


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
    range (older runs) fall back to the epoch-end weights. With two tasks the other task's
    weight is 2 − this one. Only rows whose runs weigh two tasks appear.

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
