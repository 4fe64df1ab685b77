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
p-values are two-sided and uncorrected for multiple comparisons; with 3 seeds only large,
consistent effects reach p < 0.05.
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
            return TestResult(float(res.pvalue), "paired", len(common))
        if len(values) < 2 or len(reference) < 2:
            return TestResult(math.nan, "", min(len(values), len(reference)))
        res = stats.ttest_ind(values.to_numpy(), reference.to_numpy(), equal_var=False)
        return TestResult(float(res.pvalue), "welch", min(len(values), len(reference)))


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
    for one seed), rel_change (% of the reference mean), p_value, test, significant,
    is_reference, applicable, best (the best mean of the column among applicable rows of the
    dataset, by the metric's direction).
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
                rel = math.nan
                test = TestResult(math.nan, "", 0)
                if is_app and row != reference:
                    if ref_mean and math.isfinite(ref_mean):
                        rel = (mean - ref_mean) / abs(ref_mean) * 100.0
                    test = compare(vals, ref_vals, method)
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
                        "p_value": test.p_value,
                        "test": test.test,
                        "significant": bool(math.isfinite(test.p_value) and test.p_value < alpha),
                        "is_reference": row == reference,
                        "applicable": is_app,
                    }
                )
    table = pd.DataFrame(lines)
    if table.empty:
        return table.assign(best=pd.Series(dtype=bool))
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
