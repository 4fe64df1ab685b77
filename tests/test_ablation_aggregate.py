"""Aggregation of hand-made result frames: means, stds, relative change, p-values (checked
against SciPy called directly), best marks, applicability, peak epochs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from unigrf.ablation.aggregate import aggregate, aggregate_peaks, applicable, compare, holm, peak_epochs

REF = [0.30, 0.32, 0.31]
ABL = [0.26, 0.29, 0.25]
REF_LL = [0.60, 0.58, 0.59]
ABL_LL = [0.64, 0.66, 0.61]


def frame(
    rows: dict[str, tuple[str, list[float], list[float]]], seeds=(0, 1, 2), dataset="ml-100k"
) -> pd.DataFrame:
    """rows: name -> (variant, ndcg per seed, logloss per seed)."""
    out = []
    for row, (variant, ndcg, ll) in rows.items():
        for seed, n, lo in zip(seeds, ndcg, ll):
            out.append(
                {
                    "cell": f"{row}/{dataset}/seed{seed}",
                    "row": row,
                    "dataset": dataset,
                    "variant": variant,
                    "seed": seed,
                    "status": "ok",
                    "test/ndcg@10": n,
                    "test/logloss": lo,
                }
            )
    return pd.DataFrame(out)


def line(table: pd.DataFrame, row: str, metric: str) -> pd.Series:
    sel = table[(table["row"] == row) & (table["metric"] == metric)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_mean_std_change_and_paired_pvalue_match_scipy():
    results = frame({"hstu/unigrf": ("unigrf", REF, REF_LL), "hstu/wo_both": ("wo_both", ABL, ABL_LL)})
    table = aggregate(results, ["test/ndcg@10", "test/logloss"], reference="hstu/unigrf")

    ref = line(table, "hstu/unigrf", "test/ndcg@10")
    assert ref["mean"] == pytest.approx(0.31)
    assert ref["std"] == pytest.approx(0.01)  # sample std of .30 .32 .31
    assert ref["is_reference"] and math.isnan(ref["p_value"]) and math.isnan(ref["rel_change"])

    abl = line(table, "hstu/wo_both", "test/ndcg@10")
    assert abl["mean"] == pytest.approx(np.mean(ABL))
    assert abl["std"] == pytest.approx(np.std(ABL, ddof=1))
    assert abl["rel_change"] == pytest.approx((np.mean(ABL) - 0.31) / 0.31 * 100)
    # same seeds on both sides -> paired test
    assert abl["test"] == "paired"
    assert abl["p_value"] == pytest.approx(stats.ttest_rel(ABL, REF).pvalue)
    assert abl["significant"] == (stats.ttest_rel(ABL, REF).pvalue < 0.05)

    # the interval is the paired test's, on the % of the reference scale; one comparison per
    # column, so Holm leaves the p-value as it is
    low, high = stats.ttest_rel(ABL, REF).confidence_interval(0.95)
    assert (abl["rel_low"], abl["rel_high"]) == pytest.approx((low / 0.31 * 100, high / 0.31 * 100))
    assert abl["rel_low"] < abl["rel_change"] < abl["rel_high"]
    assert abl["p_adjusted"] == pytest.approx(abl["p_value"])

    # best: max for NDCG, min for LogLoss
    assert bool(ref["best"]) and not bool(abl["best"])
    assert bool(line(table, "hstu/unigrf", "test/logloss")["best"])
    assert not bool(line(table, "hstu/wo_both", "test/logloss")["best"])


def test_welch_when_seed_sets_differ_or_requested():
    ref = frame({"hstu/unigrf": ("unigrf", REF, REF_LL)}, seeds=(0, 1, 2))
    abl = frame({"hstu/wo_both": ("wo_both", ABL, ABL_LL)}, seeds=(3, 4, 5))
    table = aggregate(pd.concat([ref, abl]), ["test/ndcg@10"], reference="hstu/unigrf")
    got = line(table, "hstu/wo_both", "test/ndcg@10")
    assert got["test"] == "welch"
    assert got["p_value"] == pytest.approx(stats.ttest_ind(ABL, REF, equal_var=False).pvalue)
    low, high = stats.ttest_ind(ABL, REF, equal_var=False).confidence_interval(0.95)
    assert (got["rel_low"], got["rel_high"]) == pytest.approx((low / 0.31 * 100, high / 0.31 * 100))

    matched = frame({"hstu/unigrf": ("unigrf", REF, REF_LL), "hstu/wo_both": ("wo_both", ABL, ABL_LL)})
    forced = aggregate(matched, ["test/ndcg@10"], reference="hstu/unigrf", method="welch")
    got = line(forced, "hstu/wo_both", "test/ndcg@10")
    assert got["test"] == "welch"
    assert got["p_value"] == pytest.approx(stats.ttest_ind(ABL, REF, equal_var=False).pvalue)
    # the paired and unpaired p-values really differ on this data (the choice matters)
    assert stats.ttest_rel(ABL, REF).pvalue != pytest.approx(got["p_value"])


def test_failed_runs_are_excluded_and_pairing_uses_common_seeds():
    results = frame({"hstu/unigrf": ("unigrf", REF, REF_LL), "hstu/wo_both": ("wo_both", ABL, ABL_LL)})
    results.loc[(results["row"] == "hstu/wo_both") & (results["seed"] == 2), "status"] = "error: boom"
    table = aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf", method="paired")
    got = line(table, "hstu/wo_both", "test/ndcg@10")
    assert got["n"] == 2
    assert got["mean"] == pytest.approx(np.mean(ABL[:2]))
    assert got["p_value"] == pytest.approx(stats.ttest_rel(ABL[:2], REF[:2]).pvalue)
    # auto: seed sets differ after the failure -> Welch on what finished
    auto = line(aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf"), "hstu/wo_both", "test/ndcg@10")
    assert auto["test"] == "welch"
    assert auto["p_value"] == pytest.approx(stats.ttest_ind(ABL[:2], REF, equal_var=False).pvalue)


def test_single_seed_has_no_std_and_no_test():
    results = frame(
        {"hstu/unigrf": ("unigrf", REF[:1], REF_LL[:1]), "hstu/wo_both": ("wo_both", ABL[:1], ABL_LL[:1])},
        seeds=(0,),
    )
    got = line(aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf"), "hstu/wo_both", "test/ndcg@10")
    assert got["mean"] == pytest.approx(ABL[0])
    assert math.isnan(got["std"]) and math.isnan(got["p_value"]) and got["test"] == ""
    assert got["rel_change"] == pytest.approx((ABL[0] - REF[0]) / REF[0] * 100)


def test_untrained_heads_are_not_reported_nor_best():
    results = frame(
        {
            "hstu/unigrf": ("unigrf", REF, REF_LL),
            # a retrieval-only model's untrained ranking head happens to have the lowest logloss
            "hstu/retrieval_only": ("retrieval_only", ABL, [0.1, 0.1, 0.1]),
        }
    )
    table = aggregate(results, ["test/ndcg@10", "test/logloss"], reference="hstu/unigrf")
    ll = line(table, "hstu/retrieval_only", "test/logloss")
    assert not ll["applicable"] and math.isnan(ll["mean"]) and not ll["best"]
    assert bool(line(table, "hstu/unigrf", "test/logloss")["best"])
    assert applicable("ranking_only", "test/auc") and not applicable("ranking_only", "test/hr@10")
    assert not applicable("retrieval_only", "test/gauc") and applicable("two_stage", "val/mrr")
    assert not applicable("retrieval_only", "test/cascade_hr@10") and applicable(
        "two_stage", "test/cascade_hr@10"
    )
    # the item-only retriever has no ranking head at all
    assert applicable("item_only", "test/ndcg@10") and not applicable("item_only", "test/auc")
    assert not applicable("item_only", "test/cascade_ndcg@10")


def test_compare_zero_variance_is_nan_not_an_error():
    same = pd.Series([0.5, 0.5, 0.5], index=[0, 1, 2])
    assert math.isnan(compare(same, same).p_value)


def test_peak_epochs_and_gap():
    hist = pd.DataFrame(
        {
            "cell": ["a"] * 4 + ["b"] * 4,
            "epoch": [0, 1, 2, 3] * 2,
            "val/ndcg@10": [0.1, 0.3, 0.2, 0.2, 0.1, 0.2, 0.3, 0.4],
            "val/logloss": [0.7, 0.6, 0.5, 0.6, 0.7, 0.6, 0.65, 0.66],
        }
    )
    peaks = peak_epochs(hist, "val/ndcg@10", "val/logloss").set_index("cell")
    assert peaks.loc["a", "retrieval_peak"] == 2 and peaks.loc["a", "ranking_peak"] == 3  # 1-based
    assert peaks.loc["a", "gap"] == 1
    assert peaks.loc["b", "retrieval_peak"] == 4 and peaks.loc["b", "ranking_peak"] == 2  # logloss: argmin
    results = pd.DataFrame(
        {"cell": ["a", "b"], "dataset": ["d", "d"], "row": ["r", "r"], "variant": ["unigrf", "unigrf"]}
    )
    agg = aggregate_peaks(results, hist, "val/ndcg@10", "val/logloss").iloc[0]
    assert agg["n"] == 2
    assert agg["gap_mean"] == pytest.approx(1.5) and agg["gap_std"] == pytest.approx(np.std([1, 2], ddof=1))
    # a retrieval-only run has no ranking peak, hence no gap
    results["variant"] = ["retrieval_only", "retrieval_only"]
    agg = aggregate_peaks(results, hist, "val/ndcg@10", "val/logloss").iloc[0]
    assert math.isnan(agg["ranking_peak_mean"]) and math.isnan(agg["gap_mean"])
    assert agg["retrieval_peak_mean"] == pytest.approx(3.0)


def test_holm_matches_the_step_down_definition_and_skips_missing_tests():
    # Holm: sort ascending, multiply the i-th smallest by (m - i), running maximum, cap at 1
    p = [0.01, 0.04, float("nan"), 0.03, 0.5]
    got = holm(p)
    assert math.isnan(got[2])
    assert got[0] == pytest.approx(4 * 0.01)
    assert got[3] == pytest.approx(3 * 0.03)
    assert got[1] == pytest.approx(max(3 * 0.03, 2 * 0.04))
    assert got[4] == pytest.approx(0.5)
    assert holm([]) == [] and all(math.isnan(v) for v in holm([float("nan")]))


def test_significance_is_read_on_the_corrected_p_values_of_each_column():
    """Each column (metric) is one family: its rows' p-values are Holm-adjusted together, never
    below the raw ones, and `significant` reads the adjusted value. In the LogLoss column the
    second row has no test (identical values), so the first is corrected as a family of one."""
    close = [0.295, 0.318, 0.305]
    rows = {
        "hstu/unigrf": ("unigrf", REF, REF_LL),
        "hstu/wo_both": ("wo_both", ABL, ABL_LL),
        "hstu/wo_enhancer": ("wo_enhancer", close, REF_LL),
    }
    table = aggregate(frame(rows), ["test/ndcg@10", "test/logloss"], reference="hstu/unigrf")
    ndcg = table[(table["metric"] == "test/ndcg@10") & ~table["is_reference"]]
    assert list(ndcg["p_adjusted"]) == pytest.approx(holm(list(ndcg["p_value"])))
    assert (ndcg["p_adjusted"] >= ndcg["p_value"]).all()
    assert list(ndcg["significant"]) == list(ndcg["p_adjusted"] < 0.05)
    ll = line(table, "hstu/wo_both", "test/logloss")
    assert ll["p_adjusted"] == pytest.approx(
        holm([ll["p_value"], line(table, "hstu/wo_enhancer", "test/logloss")["p_value"]])[0]
    )
