"""The claims answerer on hand-made report directories: effects, intervals and Holm-corrected
p-values against SciPy, each verdict rule, the m claim's validation pick, the peak-gap claim,
and the command's files and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from unigrf.ablation import claims
from unigrf.ablation.aggregate import holm
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
JITTER = {0: 0.0, 1: 0.0011, 2: -0.0007}  # per seed, differing between rows: the tests are not exact


def paper_value(row, seed, metric):
    ndcg, auc = PAPER_MEANS[row]
    base = ndcg if "ndcg" in metric else auc
    return base + NOISE[seed] + JITTER[seed] * (1 + list(PAPER_MEANS).index(row) % 3)


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
            m_val[int(row.split("=")[1])] + NOISE[seed] + JITTER[seed] * (metric == "test/auc")
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


def test_verdict_rules():
    def o(agrees, significant):
        return claims.Outcome(None, 0, 0, 0, 0, 1.0, 0, 0, 0.01, 0.01, 3, agrees, significant)

    assert claims.verdict([o(True, True), o(True, True)]) == "holds"
    assert claims.verdict([o(True, True), o(True, False)]) == "direction only"
    assert claims.verdict([o(True, True), o(False, True)]) == "contradicted"
    assert claims.verdict([o(True, False), o(False, False)]) == "not shown"
    assert claims.verdict([o(True, True), o(False, False)], needs="any") == "holds"
    assert claims.verdict([o(False, False), o(True, False)], needs="any") == "direction only"
    assert claims.verdict([o(True, True), o(False, True)], needs="any") == "holds"
    assert claims.verdict([o(False, True), o(False, True)], needs="any") == "contradicted"
    assert claims.verdict([o(False, True), o(False, False)], needs="any") == "not shown"
    assert claims.verdict([o(None, False)]) == "no data" and claims.verdict([]) == "no data"


def test_effects_intervals_and_holm_match_scipy(root):
    answers = by_claim(claims.answer(root))
    first = answers[1]
    assert first.verdict == "holds" and first.dataset == "toy"
    out = first.outcomes[0]  # unigrf > two_stage on NDCG@10
    a = np.array([paper_value("hstu/unigrf", s, "test/ndcg@10") for s in SEEDS])
    b = np.array([paper_value("hstu/two_stage", s, "test/ndcg@10") for s in SEEDS])
    test = stats.ttest_rel(a, b)
    scale = 100 / b.mean()
    assert out.effect == pytest.approx((a.mean() - b.mean()) * scale)
    assert (out.low, out.high) == pytest.approx(tuple(v * scale for v in test.confidence_interval(0.95)))
    assert out.p_value == pytest.approx(test.pvalue)
    assert [o.p_adjusted for o in first.outcomes] == pytest.approx(holm([o.p_value for o in first.outcomes]))
    assert out.agrees and out.significant and out.n == 3


def test_each_claim_gets_the_verdict_its_data_supports(root):
    answers = by_claim(claims.answer(root))
    assert answers[2].verdict in ("not shown", "direction only")  # ablations within noise
    assert not any(o.significant for o in answers[2].outcomes)
    assert answers[3].verdict == "holds"  # w/o both below retrieval-only (one comparison suffices)
    assert answers[3].outcomes[0].agrees and answers[3].outcomes[0].effect < 0
    assert answers[4].verdict == "holds" and "m=8" in answers[4].note
    # the best m is compared with both ends of the range, on test NDCG@10 and AUC
    assert {(o.comparison.a, o.comparison.b) for o in answers[4].outcomes} == {
        ("hstu/unigrf/m=8", "hstu/unigrf/m=0"),
        ("hstu/unigrf/m=8", "hstu/unigrf/m=32"),
    }
    gap = answers[5].outcomes[0]  # the gap in epochs, smaller with the weighter: agrees
    assert gap.effect == pytest.approx(np.mean([0, 1, 0]) - np.mean([4, 6, 5]))
    assert gap.agrees and answers[5].verdict == "holds"
    assert answers[6].verdict == "contradicted"


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
    assert ans.verdict == "not shown" and "m=0" in ans.note and "end of the range" in ans.note
    others = [a for a in claims.answer(tmp_path) if a.claim.number != 4]
    assert all(a.verdict == "no data" for a in others)  # their grids are missing


def test_the_command_writes_claims_md_and_csv(root, capsys):
    assert main(["claims", str(root)]) == 0
    md = (root / "claims.md").read_text()
    assert (
        "| 1. The unified model beats the separately trained stages, on retrieval and on ranking | holds |"
        in md
    )
    assert "`hstu/unigrf` beats `hstu/two_stage`" in md and "p (Holm)" in md
    table = pd.read_csv(root / "claims.csv")
    assert set(table["claim"]) == {1, 2, 3, 4, 5, 6}
    assert (table["p_holm"].dropna() >= table["p_value"].dropna() - 1e-12).all()
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
