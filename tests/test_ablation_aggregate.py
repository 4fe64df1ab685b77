"""Aggregation of hand-made result frames: means, stds, relative change, p-values (checked
against SciPy called directly), best marks, applicability, peak epochs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    ref4, abl4 = [*REF, 0.33], [*ABL, 0.30]
    results = frame(
        {"hstu/unigrf": ("unigrf", ref4, [*REF_LL, 0.6]), "hstu/wo_both": ("wo_both", abl4, [*ABL_LL, 0.6])},
        seeds=(0, 1, 2, 3),
    )
    results.loc[(results["row"] == "hstu/wo_both") & (results["seed"] == 2), "status"] = "error: boom"
    table = aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf", method="paired")
    got = line(table, "hstu/wo_both", "test/ndcg@10")
    kept = [0, 1, 3]
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(np.mean([abl4[i] for i in kept]))
    assert got["p_value"] == pytest.approx(
        stats.ttest_rel([abl4[i] for i in kept], [ref4[i] for i in kept]).pvalue
    )
    # auto: seed sets differ after the failure -> Welch on what finished
    auto = line(aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf"), "hstu/wo_both", "test/ndcg@10")
    assert auto["test"] == "welch"
    assert auto["p_value"] == pytest.approx(
        stats.ttest_ind([abl4[i] for i in kept], ref4, equal_var=False).pvalue
    )
    # one more failure: two common seeds are too few for a t-test over seeds
    results.loc[(results["row"] == "hstu/wo_both") & (results["seed"] == 3), "status"] = "error: boom"
    two = line(
        aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf", method="paired"),
        "hstu/wo_both",
        "test/ndcg@10",
    )
    assert two["n"] == 2 and math.isnan(two["p_value"]) and two["test"] == "" and not two["significant"]


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


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), max_size=12))
def test_holm_equals_statsmodels(p):
    from statsmodels.stats.multitest import multipletests

    got = np.array(holm(p))
    finite = np.isfinite(np.array(p, dtype=float))
    assert np.isnan(got[~finite]).all()
    if finite.any():
        expected = multipletests(np.array(p)[finite], method="holm")[1]
        assert got[finite] == pytest.approx(expected, abs=1e-12)


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


# --------------------------------------------------------------------------------------------
# with per-user outcomes: the bootstrap over users and seeds, the count model's row
# --------------------------------------------------------------------------------------------


def outcome_frames(rng, shift: float, n_users: int = 80):
    """One run's per-user outcomes: rank better and like logit higher with `shift`."""
    from unigrf.evaluation.outcomes import outcomes_frame

    labels = (np.arange(n_users) % 3 != 0).astype(int)
    logits = rng.normal(size=n_users) + labels * (1.0 + shift)
    ranks = np.maximum(rng.integers(0, 40, n_users) - int(20 * shift), 0)
    return outcomes_frame(np.arange(n_users), ranks, labels, logits)


def results_with_outcomes(seeds=(0, 1, 2), shifts=None):
    """Runs of two rows whose results.csv metrics are their outcomes' metrics."""
    from unigrf.evaluation.outcomes import metrics_from_outcomes

    rng = np.random.default_rng(0)
    shifts = shifts or {"hstu/unigrf": 0.5, "hstu/wo_both": 0.0}
    rows, outcomes = [], {}
    for row, shift in shifts.items():
        for seed in seeds:
            cell = f"{row}/toy/seed{seed}"
            test = outcome_frames(rng, shift)
            m = metrics_from_outcomes(test, (10,), cascade_k=10)
            rows.append(
                {
                    "cell": cell,
                    "row": row,
                    "dataset": "toy",
                    "variant": row.split("/")[1],
                    "seed": seed,
                    "status": "ok",
                    "test/ndcg@10": m["ndcg@10"],
                    "test/auc": m["auc"],
                    "test/logloss": m["logloss"],
                }
            )
            outcomes[cell] = {"test": test}
    return pd.DataFrame(rows), outcomes


def test_rows_with_outcomes_are_compared_by_the_bootstrap_over_users_and_seeds():
    from unigrf.ablation.paired import UserBootstrap

    results, outcomes = results_with_outcomes()
    metrics = ["test/ndcg@10", "test/auc", "test/logloss"]
    table = aggregate(results, metrics, reference="hstu/unigrf", outcomes=outcomes, n_replicates=500)
    boot = UserBootstrap(np.arange(80), n_replicates=500, seed=0)
    for metric in metrics:
        got = line(table, "hstu/wo_both", metric)
        base = metric.split("/")[1]
        direct = boot.compare(
            [(f"a{s}", outcomes[f"hstu/wo_both/toy/seed{s}"]["test"]) for s in range(3)],
            [(f"b{s}", outcomes[f"hstu/unigrf/toy/seed{s}"]["test"]) for s in range(3)],
            base,
        )
        ref_mean = line(table, "hstu/unigrf", metric)["mean"]
        low, high = direct.interval(0.95)
        assert got["test"] == "bootstrap" and got["n_users"] == 80 and got["n"] == 3
        assert got["p_value"] == pytest.approx(direct.p_value)
        assert (got["rel_low"], got["rel_high"]) == pytest.approx(
            (100 * low / ref_mean, 100 * high / ref_mean)
        )
        # the bootstrap's estimate is the change of the means (same seeds, same users)
        assert got["rel_change"] == pytest.approx(100 * direct.estimate / ref_mean)
        assert math.isfinite(got["p_delong"]) == (base == "auc")
    assert line(table, "hstu/wo_both", "test/ndcg@10")["significant"]  # a large, consistent effect


def test_a_seed_without_outcomes_falls_back_to_the_test_over_seeds():
    results, outcomes = results_with_outcomes()
    del outcomes["hstu/wo_both/toy/seed1"]
    table = aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf", outcomes=outcomes, n_replicates=200)
    got = line(table, "hstu/wo_both", "test/ndcg@10")
    per = results.pivot(index="seed", columns="row", values="test/ndcg@10")
    assert got["test"] == "paired" and got["n_users"] == 0
    assert got["p_value"] == pytest.approx(stats.ttest_rel(per["hstu/wo_both"], per["hstu/unigrf"]).pvalue)


def test_two_runs_with_identical_per_seed_differences_never_print_a_significant_p():
    """Acceptance: the README's quick grid printed `+0.8% [+0.8, +0.8] (p < 0.001) *` at 2
    seeds. Without outcomes, identical differences (2 or 3 seeds) get no test; with outcomes
    identical to the reference's, the bootstrap finds no difference at all."""
    from unigrf.ablation.report import fmt_change

    for seeds in ((0, 1), (0, 1, 2)):
        ref = [0.30 + 0.01 * s for s in seeds]
        row = [v + 0.0024 for v in ref]  # +0.8 % at every seed
        results = frame(
            {"hstu/unigrf": ("unigrf", ref, ref), "hstu/wo_both": ("wo_both", row, row)}, seeds=seeds
        )
        got = line(
            aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf"), "hstu/wo_both", "test/ndcg@10"
        )
        assert math.isnan(got["p_adjusted"]) and not got["significant"]
        text = fmt_change(
            got["rel_change"], got["rel_low"], got["rel_high"], got["p_adjusted"], got["significant"]
        )
        assert text.endswith("(p = n/a)") and "*" not in text
    results, outcomes = results_with_outcomes(shifts={"hstu/unigrf": 0.5, "hstu/wo_both": 0.5})
    twin = {c.replace("wo_both", "unigrf"): o for c, o in outcomes.items() if "wo_both" in c}
    same = {**twin, **{c: twin[c.replace("wo_both", "unigrf")] for c in outcomes if "wo_both" in c}}
    got = line(
        aggregate(results, ["test/ndcg@10"], reference="hstu/unigrf", outcomes=same, n_replicates=200),
        "hstu/wo_both",
        "test/ndcg@10",
    )
    assert got["test"] == "bootstrap" and got["p_value"] == 1.0 and not got["significant"]


def test_the_count_model_row_is_compared_and_corrected_with_the_column():
    from unigrf.ablation.aggregate import Floor
    from unigrf.evaluation.outcomes import metrics_from_outcomes

    results, outcomes = results_with_outcomes()
    rng = np.random.default_rng(9)
    floor_test = outcome_frames(rng, -0.5)
    floor = Floor(
        "count model",
        {"test/auc": metrics_from_outcomes(floor_test, (10,), 10)["auc"], "test/logloss": 0.6},
        {"test": floor_test},
    )
    metrics = ["test/ndcg@10", "test/auc"]
    table = aggregate(
        results, metrics, reference="hstu/unigrf", outcomes=outcomes, floors={"toy": floor}, n_replicates=300
    )
    rows = table[table["is_floor"]]
    assert list(rows["metric"]) == ["test/auc"]  # a ranking floor: AUC/LogLoss only, of those asked
    got = rows.iloc[0]
    assert got["mean"] == pytest.approx(floor.values["test/auc"]) and got["n"] == 0 and not got["best"]
    assert got["test"] == "bootstrap" and got["rel_change"] < 0 and got["significant"]
    auc = table[(table["metric"] == "test/auc") & ~table["is_reference"]]
    assert list(auc["p_adjusted"]) == pytest.approx(holm(list(auc["p_value"])))  # one family
    # without outcomes: the reference's seeds against the constant, a one-sample test over seeds
    plain = aggregate(
        results, metrics, reference="hstu/unigrf", floors={"toy": Floor("count model", floor.values)}
    )
    got = plain[plain["is_floor"]].iloc[0]
    ref = results[results["row"] == "hstu/unigrf"]["test/auc"]
    assert got["test"] == "paired"
    assert got["p_value"] == pytest.approx(stats.ttest_1samp(ref, floor.values["test/auc"]).pvalue)
    # whatever the grid's seed-level test: a constant has no variance to compare in Welch's test
    welch = aggregate(
        results,
        metrics,
        reference="hstu/unigrf",
        method="welch",
        floors={"toy": Floor("count model", floor.values)},
    )
    assert welch[welch["is_floor"]].iloc[0]["p_value"] == pytest.approx(got["p_value"])
