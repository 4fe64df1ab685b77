"""The claims answerer on hand-made report directories: effects, Bonferroni-corrected intervals
and p-values against SciPy (over seeds) and the bootstrap (over users and seeds), each verdict
rule, the m claim's validation pick, the peak-epoch equivalence test (TOST), and the command's
files and errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from unigrf.ablation import claims
from unigrf.ablation.grid import parse_grid
from unigrf.ablation.report import ReportError, store_inputs
from unigrf.cli import main

SEEDS = (0, 1, 2)
NOISE = (0.0, 0.004, -0.003)  # per seed, shared by every row (what pairing cancels)
DATASET = {"name": "toy", "overrides": {"data.dataset": "synthetic"}}


def write_grid(root, name, grid, value, epochs=None):
    """Store a report directory for `grid` whose cell values come from value(row, seed, metric)."""
    spec = parse_grid({"name": name, "datasets": [DATASET], "seeds": len(SEEDS), **grid})
    results, hist = [], []
    for cell in spec.expand():
        line = {**cell.identity(), "status": "ok"}
        for metric in ("test/ndcg@10", "test/auc", "val/ndcg@10"):
            line[metric] = value(cell.row, cell.seed, metric)
        results.append(line)
        for epoch, (ndcg, auc) in enumerate(
            (epochs or (lambda row, seed: [(0.1, 0.6)]))(cell.row, cell.seed)
        ):
            hist.append({"cell": cell.name, "epoch": epoch, "val/ndcg@10": ndcg, "val/auc": auc})
    store_inputs(root / name, spec, pd.DataFrame(results), pd.DataFrame(hist), {"command": "x"}, {})
    return spec


PAPER = {
    "rows": [
        {"backbone": "hstu", "variant": v}
        for v in (
            "unigrf",
            "two_stage",
            "retrieval_only",
            "ranking_only",
            "wo_enhancer",
            "wo_weighter",
            "wo_both",
        )
    ],
    "reference": "hstu/unigrf",
    "metrics": ["test/ndcg@10", "test/auc"],
}
# paper rows: (ndcg, auc) means; unigrf beats everything, wo_both below retrieval-only
PAPER_MEANS = {
    "hstu/unigrf": (0.060, 0.62),
    "hstu/two_stage": (0.050, 0.58),
    "hstu/retrieval_only": (0.052, 0.50),
    "hstu/ranking_only": (0.010, 0.57),
    "hstu/wo_enhancer": (0.0598, 0.6195),  # within noise of unigrf: not resolved
    "hstu/wo_weighter": (0.0601, 0.6202),
    "hstu/wo_both": (0.045, 0.60),
}
JITTER = {0: 0.0, 1: 0.0005, 2: -0.0003}  # per seed, differing between rows: the tests are not exact


def paper_value(row, seed, metric):
    ndcg, auc = PAPER_MEANS[row]
    base = ndcg if "ndcg" in metric else auc
    return base + NOISE[seed] + JITTER[seed] * (1 + list(PAPER_MEANS).index(row))


@pytest.fixture
def root(tmp_path):
    write_grid(tmp_path, "paper", PAPER, paper_value)
    # m sweep: validation peaks at m = 8 (inside 0..32); test NDCG@10 best there too
    m_val = {0: 0.060, 2: 0.063, 8: 0.068, 32: 0.061}
    write_grid(
        tmp_path,
        "m_sweep",
        {
            "rows": [{"backbone": "hstu", "variant": "unigrf"}],
            "axis": {"key": "enhancer.m", "values": [0, 2, 8, 32], "label": "m"},
            "reference": "hstu/unigrf/m=0",
            "metrics": ["test/ndcg@10"],
        },
        lambda row, seed, metric: (
            m_val[int(row.split("=")[1])] + NOISE[seed] + JITTER[seed] * int(row.split("=")[1]) / 8
        ),
    )
    # sync: with the weighter retrieval and ranking peak 0-1 epochs apart, without it 4-6
    gaps = {"hstu/unigrf": (0, 1, 0), "hstu/wo_weighter": (4, 6, 5)}

    def curves(row, seed):
        ndcg_peak, auc_peak = 7, 7 - gaps[row][seed]
        return [(0.1 - 0.001 * abs(e - ndcg_peak), 0.6 - 0.001 * abs(e - auc_peak)) for e in range(10)]

    write_grid(
        tmp_path,
        "sync",
        {
            "rows": [
                {"backbone": "hstu", "variant": "unigrf"},
                {"backbone": "hstu", "variant": "wo_weighter"},
            ],
            "reference": "hstu/unigrf",
            "metrics": ["test/ndcg@10"],
            "peaks": {"retrieval": "val/ndcg@10", "ranking": "val/auc"},
            "equivalence_margin_epochs": 3,
        },
        lambda row, seed, metric: 0.06,
        epochs=curves,
    )
    # scaling: the larger models are significantly worse (the claim is contradicted)
    size_means = {"tiny": 0.070, "small": 0.060, "base": 0.050}
    write_grid(
        tmp_path,
        "scaling",
        {
            "rows": [{"backbone": "hstu", "variant": "unigrf"}],
            "axis": {"key": "model.size", "values": ["tiny", "small", "base"], "label": "size"},
            "reference": "hstu/unigrf/size=tiny",
            "metrics": ["test/ndcg@10"],
        },
        lambda row, seed, metric: (
            size_means[row.split("=")[1]] * (10 if "auc" in metric else 1)
            + NOISE[seed]
            + JITTER[seed] * ("base" in row)
        ),
    )
    return tmp_path


def by_claim(answers):
    return {a.claim.number: a for a in answers}


def test_comparison_results_and_verdict_rules():
    better, worse = 1, -1
    assert claims.comparison_result(2.0, 0.5, 3.5, sign=1, better=better) == "holds"
    assert claims.comparison_result(-2.0, -3.5, -0.5, sign=1, better=better) == "contradicted"
    assert claims.comparison_result(-2.0, -3.5, -0.5, sign=-1, better=better) == "holds"  # "below"
    assert claims.comparison_result(-2.0, -3.5, -0.5, sign=1, better=worse) == "holds"  # a loss fell
    assert claims.comparison_result(1.0, -0.5, 2.5, sign=1, better=better) == "inconclusive"
    assert claims.comparison_result(1.0, math.nan, math.nan, sign=1, better=better) == "inconclusive"
    # an effect of exactly 0 is inconclusive, not "no data"
    assert claims.comparison_result(0.0, 0.0, 0.0, sign=1, better=better) == "inconclusive"
    assert claims.comparison_result(math.nan, math.nan, math.nan, sign=1, better=better) == "no data"

    def o(result):
        return claims.Outcome(None, 0, 0, 0, 0, 1.0, 0, 0, 0.01, 0.01, 3, "paired", result)

    h, c, i, n = (o(r) for r in ("holds", "contradicted", "inconclusive", "no data"))
    assert claims.verdict([h, h]) == "holds"
    assert claims.verdict([h, i]) == "inconclusive"
    assert claims.verdict([h, c]) == "contradicted"
    assert claims.verdict([i, i]) == "inconclusive"
    assert claims.verdict([h, i], needs="any") == "holds"
    assert claims.verdict([h, c], needs="any") == "holds"
    assert claims.verdict([c, c], needs="any") == "contradicted"
    assert claims.verdict([c, i], needs="any") == "inconclusive"
    assert claims.verdict([h, n]) == "no data" and claims.verdict([]) == "no data"


def test_effects_and_bonferroni_intervals_match_scipy(root):
    answers = by_claim(claims.answer(root))
    first = answers[1]
    assert first.verdict == "holds" and first.dataset == "toy"
    out = first.outcomes[0]  # unigrf > two_stage on NDCG@10, one of the claim's 4 comparisons
    a = np.array([paper_value("hstu/unigrf", s, "test/ndcg@10") for s in SEEDS])
    b = np.array([paper_value("hstu/two_stage", s, "test/ndcg@10") for s in SEEDS])
    test = stats.ttest_rel(a, b)
    scale = 100 / b.mean()
    assert out.effect == pytest.approx((a.mean() - b.mean()) * scale)
    # no per-user outcomes here: the t-interval over seeds at 1 − 0.05/4
    low, high = test.confidence_interval(1 - 0.05 / 4)
    assert (out.low, out.high) == pytest.approx((low * scale, high * scale))
    assert out.p_value == pytest.approx(test.pvalue) and out.test == "paired"
    assert out.p_adjusted == pytest.approx(min(1.0, 4 * test.pvalue))
    assert out.result == "holds" and out.n == 3
    for o in first.outcomes:  # the interval excludes 0 exactly when the adjusted p is below alpha
        assert (o.low > 0 or o.high < 0) == (o.p_adjusted < 0.05)


def test_each_claim_gets_the_verdict_its_data_supports(root):
    answers = by_claim(claims.answer(root))
    assert answers[2].verdict == "inconclusive"  # ablations within noise
    assert all(o.result == "inconclusive" for o in answers[2].outcomes)
    assert answers[3].verdict == "holds"  # w/o both below retrieval-only (one comparison suffices)
    assert answers[3].outcomes[0].result == "holds" and answers[3].outcomes[0].effect < 0
    assert answers[4].verdict == "holds" and "m=8" in answers[4].note
    # the best m is compared with both ends of the range, on test NDCG@10 and AUC
    assert {(o.comparison.a, o.comparison.b) for o in answers[4].outcomes} == {
        ("hstu/unigrf/m=8", "hstu/unigrf/m=0"),
        ("hstu/unigrf/m=8", "hstu/unigrf/m=32"),
    }
    # claim 5: retrieval − ranking peak per run 0, 1, 0 epochs, inside the grid's ±3
    (peak,) = answers[5].outcomes
    diff = np.array([0.0, 1.0, 0.0])
    ci = stats.ttest_1samp(diff, 0).confidence_interval(0.90)
    assert peak.effect == pytest.approx(diff.mean()) and (peak.low, peak.high) == pytest.approx(tuple(ci))
    assert peak.test == "tost" and peak.p_value < 0.05 and answers[5].verdict == "holds"
    assert answers[6].verdict == "contradicted"


def tost_grid(tmp_path, diffs, margin=3):
    """A sync grid whose weighter row's runs peak `diffs[seed]` epochs apart (retrieval later)."""

    def curves(row, seed):
        ndcg_peak, auc_peak = 12, 12 - diffs[seed]
        return [(0.1 - 0.001 * abs(e - ndcg_peak), 0.6 - 0.001 * abs(e - auc_peak)) for e in range(25)]

    grid = {
        "rows": [{"backbone": "hstu", "variant": "unigrf"}],
        "metrics": ["test/ndcg@10"],
        "peaks": {"retrieval": "val/ndcg@10", "ranking": "val/auc"},
    }
    if margin is not None:
        grid["equivalence_margin_epochs"] = margin
    write_grid(tmp_path, "sync", grid, lambda row, seed, metric: 0.06, epochs=curves)
    (answer,) = [a for a in claims.answer(tmp_path) if a.claim.number == 5]
    return answer


@pytest.mark.parametrize(
    ("diffs", "margin", "verdict"),
    [
        ((10, 12, 11), 3, "contradicted"),  # consistently far apart: outside the margin
        ((1, 9, -6), 3, "inconclusive"),  # too noisy to tell
        ((1, 1, 1), 3, "inconclusive"),  # no variance: no t-test
        ((0, 1, 0), None, "no data"),  # no margin declared: no test
    ],
)
def test_the_peak_claim_is_an_equivalence_test_with_the_declared_margin(tmp_path, diffs, margin, verdict):
    from statsmodels.stats.weightstats import ttost_paired

    answer = tost_grid(tmp_path, dict(enumerate(diffs)), margin)
    assert answer.verdict == verdict
    (o,) = answer.outcomes
    assert o.effect == pytest.approx(np.mean(diffs))
    if verdict in ("contradicted", "inconclusive") and len(set(diffs)) > 1:
        ret = np.full(3, 13.0)  # 1-based retrieval peak
        p = ttost_paired(ret, ret - np.array(diffs), -margin, margin)[0]
        assert o.p_value == pytest.approx(p) and o.p_value >= 0.05
    if margin is None:
        assert "declares no equivalence_margin_epochs" in answer.note


def test_claims_use_the_bootstrap_over_users_where_runs_kept_outcomes(root):
    """With per-user outcomes stored for the paper grid, claim 1's comparisons come from the
    two-level bootstrap, Bonferroni-corrected: interval at 1 − 0.05/4 from the replicates, p × 4."""
    from unigrf.ablation.outcome_store import OUTCOMES_DIR, run_name
    from unigrf.ablation.paired import UserBootstrap
    from unigrf.evaluation.outcomes import outcomes_frame, write_outcomes

    rng = np.random.default_rng(0)
    labels = (np.arange(60) % 2).astype(int)
    frames = {}
    results = pd.read_csv(root / "paper" / "results.csv")
    for cell in results["cell"]:
        frame = outcomes_frame(np.arange(60), rng.integers(0, 30, 60), labels, rng.normal(size=60) + labels)
        write_outcomes(frame, root / "paper" / OUTCOMES_DIR / run_name(cell) / "test.parquet")
        frames[cell] = frame
    first = by_claim(claims.answer(root))[1]
    out = first.outcomes[1]  # unigrf > two_stage on AUC
    assert out.test == "bootstrap"
    boot = UserBootstrap(np.arange(60), seed=0)
    direct = boot.compare(
        [(str(s), frames[f"hstu/unigrf/toy/seed{s}"]) for s in SEEDS],
        [(f"b{s}", frames[f"hstu/two_stage/toy/seed{s}"]) for s in SEEDS],
        "auc",
    )
    mean_b = np.mean([paper_value("hstu/two_stage", s, "test/auc") for s in SEEDS])
    low, high = direct.interval(1 - 0.05 / 4)
    assert (out.low, out.high) == pytest.approx((100 * low / mean_b, 100 * high / mean_b))
    assert out.p_adjusted == pytest.approx(min(1.0, 4 * direct.p_value))
    # these random outcomes carry no difference: the claim is no longer shown
    assert out.result == "inconclusive" and first.verdict == "inconclusive"


def test_an_unfinished_m_sweep_answers_no_data(tmp_path):
    """A grid stopped part-way (some m not finished) knows neither the best m nor the range: the
    claim waits, naming what is missing."""
    grid = {
        "rows": [{"backbone": "hstu", "variant": "unigrf"}],
        "axis": {"key": "enhancer.m", "values": [0, 2, 8, 26], "label": "m"},
        "reference": "hstu/unigrf/m=0",
        "metrics": ["test/ndcg@10"],
    }
    write_grid(tmp_path, "m_sweep", grid, lambda row, seed, metric: 0.07 + NOISE[seed])
    results = pd.read_csv(tmp_path / "m_sweep" / "results.csv")
    late = results["row"].isin(["hstu/unigrf/m=8", "hstu/unigrf/m=26"])
    results.loc[late, "status"] = "interrupted"
    results.to_csv(tmp_path / "m_sweep" / "results.csv", index=False)
    (ans,) = [a for a in claims.answer(tmp_path) if a.claim.number == 4]
    assert ans.verdict == "no data" and not ans.outcomes
    assert ans.note == "the m_sweep grid is incomplete: hstu/unigrf/m=8, hstu/unigrf/m=26 not finished"


def test_identical_rows_are_inconclusive_not_no_data(tmp_path):
    write_grid(tmp_path, "paper", PAPER, lambda row, seed, metric: 0.05 + NOISE[seed])
    (first,) = [a for a in claims.answer(tmp_path) if a.claim.number == 1]
    assert all(o.effect == 0 and o.result == "inconclusive" for o in first.outcomes)
    assert first.verdict == "inconclusive"


def test_a_best_m_at_the_end_of_the_range_does_not_show_the_claim(tmp_path):
    write_grid(
        tmp_path,
        "m_sweep",
        {
            "rows": [{"backbone": "hstu", "variant": "unigrf"}],
            "axis": {"key": "enhancer.m", "values": [0, 2, 8], "label": "m"},
            "reference": "hstu/unigrf/m=0",
            "metrics": ["test/ndcg@10"],
        },
        lambda row, seed, metric: 0.07 - 0.001 * int(row.split("=")[1]) + NOISE[seed],
    )
    (ans,) = [a for a in claims.answer(tmp_path) if a.claim.number == 4]
    assert ans.verdict == "inconclusive" and "m=0" in ans.note and "end of the range" in ans.note
    others = [a for a in claims.answer(tmp_path) if a.claim.number != 4]
    assert all(a.verdict == "no data" for a in others)  # their grids are missing


def test_the_command_writes_claims_md_and_csv(root, capsys):
    assert main(["claims", str(root)]) == 0
    md = (root / "claims.md").read_text()
    assert (
        "| 1. The unified model beats the separately trained stages, on retrieval and on ranking | holds |"
        in md
    )
    assert "`hstu/unigrf` beats `hstu/two_stage`" in md and "p (Bonferroni)" in md
    assert "| 5. With the weighter both stages peak at about the same epoch | holds |" in md
    table = pd.read_csv(root / "claims.csv")
    assert set(table["claim"]) == {1, 2, 3, 4, 5, 6}
    assert (table["p_adjusted"].dropna() >= table["p_value"].dropna() - 1e-12).all()
    assert set(table["verdict"]) <= {"holds", "contradicted", "inconclusive"}
    assert "## Verdicts" in capsys.readouterr().out


def test_bad_roots_are_named(tmp_path, capsys):
    assert main(["claims", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: not a directory" in capsys.readouterr().err
    assert main(["claims", str(tmp_path)]) == 2
    assert "none of paper, m_sweep, sync, scaling" in capsys.readouterr().err
    with pytest.raises(ReportError):
        claims.load_grids(tmp_path)
    paper = claims.load_grids(_one_grid(tmp_path))["paper"]
    assert claims.per_seed(paper, "toy", "hstu/nope", "test/auc").empty
    assert list(claims.per_seed(paper, "toy", "hstu/unigrf", "test/auc").index) == list(SEEDS)


def _one_grid(tmp_path):
    write_grid(tmp_path / "one", "paper", PAPER, paper_value)
    return tmp_path / "one"


def test_several_roots_make_one_claim_by_dataset_table(tmp_path, monkeypatch, capsys):
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write_grid(first, "paper", PAPER, paper_value)
    monkeypatch.setattr(
        sys.modules[__name__], "DATASET", {"name": "toy2", "overrides": {"data.dataset": "synthetic"}}
    )
    write_grid(second, "paper", PAPER, paper_value)
    assert main(["claims", str(first), str(second)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["claims", str(first), str(second), "--out", str(out)]) == 0
    md = (out / "claims.md").read_text()
    assert "| claim | toy | toy2 |" in md
    assert set(pd.read_csv(out / "claims.csv")["dataset"]) == {"toy", "toy2"}
    assert main(["claims", str(first), str(first), "--out", str(out)]) == 2
    assert "toy found under more than one ROOT" in capsys.readouterr().err
