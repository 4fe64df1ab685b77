"""The paper's six claims [SPEC §3], answered from the claim grids' report directories.

`answer(root)` reads `<root>/{paper,m_sweep,sync,scaling}/` — each a directory `unigrf ablate`
wrote (results.csv, histories.csv, grid.yaml, ...) for `ablations/<grid>.yaml` — and tests every
claim on every dataset found there. A claim is a list of comparisons, each "row A beats row B on
metric M" (or "A is below B" where the claim says so):

    effect  = mean(A) − mean(B), in % of |mean(B)| (in epochs for the peak-epoch gap),
    95 % CI = the t-interval of the difference (paired over the seeds both rows finished, else
              Welch's: `aggregate.compare`), on the same scale,
    p       = two-sided, Holm-corrected over the claim's comparisons on that dataset.

A comparison is *significant* when its corrected p < alpha. A claim's verdict:
- "holds": every comparison goes the claimed way and is significant (for a claim that says
  "can be", one such comparison is enough);
- "contradicted": some comparison goes significantly against the claim (for "can be": every
  one does);
- "direction only": every comparison goes the claimed way, not every one significantly;
- "not shown": otherwise — the data do not show the claim, nor its opposite.
The m claim adds a condition: the m that validates best (mean val/ndcg@10; picked on validation,
never on test) must lie strictly inside the swept range, else "not shown".

Pure pandas/SciPy: no Ray, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from unigrf.ablation.aggregate import OK_STATUS, compare, holm, lower_is_better, peak_epochs
from unigrf.ablation.report import ReportError, ReportInputs, load_inputs, md_table

GRIDS = ("paper", "m_sweep", "sync", "scaling")
PEAK_GAP = "peak_gap"  # |retrieval peak − ranking peak| in epochs, from the histories


@dataclass(frozen=True)
class Comparison:
    grid: str
    a: str  # row names as in the grid's report
    b: str
    metric: str  # a results column, or PEAK_GAP
    sign: int  # +1: the claim says a > b (better, by the metric's direction); -1: a worse than b


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    comparisons: tuple[Comparison, ...]
    needs: str = "all"  # "all" comparisons, or "any" one (a claim that something "can" happen)


def _cmp(grid: str, a: str, b: str, metric: str, sign: int = 1) -> Comparison:
    return Comparison(grid, a, b, metric, sign)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        1,
        "The unified model beats the separately trained stages, on retrieval and on ranking",
        (
            _cmp("paper", "hstu/unigrf", "hstu/two_stage", "test/ndcg@10"),
            _cmp("paper", "hstu/unigrf", "hstu/two_stage", "test/auc"),
            _cmp("paper", "hstu/unigrf", "hstu/retrieval_only", "test/ndcg@10"),
            _cmp("paper", "hstu/unigrf", "hstu/ranking_only", "test/auc"),
        ),
    ),
    Claim(
        2,
        "Removing the enhancer or the weighter hurts",
        (
            _cmp("paper", "hstu/unigrf", "hstu/wo_enhancer", "test/ndcg@10"),
            _cmp("paper", "hstu/unigrf", "hstu/wo_enhancer", "test/auc"),
            _cmp("paper", "hstu/unigrf", "hstu/wo_weighter", "test/ndcg@10"),
            _cmp("paper", "hstu/unigrf", "hstu/wo_weighter", "test/auc"),
        ),
    ),
    Claim(
        3,
        "Naive unification (w/o both) can be worse than a stand-alone model",
        (
            _cmp("paper", "hstu/wo_both", "hstu/retrieval_only", "test/ndcg@10", -1),
            _cmp("paper", "hstu/wo_both", "hstu/ranking_only", "test/auc", -1),
        ),
        needs="any",
    ),
    Claim(4, "An intermediate m is best", ()),  # comparisons depend on the best m: `_m_claim`
    Claim(
        5,
        "With the weighter both stages peak at about the same epoch",
        (_cmp("sync", "hstu/unigrf", "hstu/wo_weighter", PEAK_GAP),),
    ),
    Claim(
        6,
        "Larger models do better",
        (
            _cmp("scaling", "hstu/unigrf/size=base", "hstu/unigrf/size=tiny", "test/ndcg@10"),
            _cmp("scaling", "hstu/unigrf/size=base", "hstu/unigrf/size=tiny", "test/auc"),
            _cmp("scaling", "hstu/unigrf/size=small", "hstu/unigrf/size=tiny", "test/ndcg@10"),
            _cmp("scaling", "hstu/unigrf/size=small", "hstu/unigrf/size=tiny", "test/auc"),
        ),
    ),
)


@dataclass(frozen=True)
class Outcome:
    """One comparison on one dataset."""

    comparison: Comparison
    mean_a: float
    std_a: float
    mean_b: float
    std_b: float
    effect: float  # % of |mean_b|, or epochs for PEAK_GAP
    low: float
    high: float
    p_value: float
    p_adjusted: float
    n: int
    agrees: bool | None  # the effect goes the claimed way (None: no effect measurable)
    significant: bool


def per_seed(inputs: ReportInputs, dataset: str, row: str, metric: str) -> pd.Series:
    """`metric` of `row`'s finished runs on `dataset`, indexed by seed (NaNs dropped)."""
    res = inputs.results
    runs = res[(res["dataset"] == dataset) & (res["row"] == row) & (res["status"] == OK_STATUS)]
    if metric == PEAK_GAP:
        if inputs.spec.peaks is None or inputs.histories.empty:
            return pd.Series(dtype=float)
        peaks = peak_epochs(inputs.histories, inputs.spec.peaks.retrieval, inputs.spec.peaks.ranking)
        runs = runs.merge(peaks[["cell", "gap"]].rename(columns={"gap": PEAK_GAP}), on="cell")
    if metric not in runs:
        return pd.Series(dtype=float)
    return runs.set_index("seed")[metric].astype(float).dropna()


def _outcomes(
    grids: dict[str, ReportInputs], dataset: str, comparisons: Sequence[Comparison], alpha: float
) -> list[Outcome]:
    raw = []
    for c in comparisons:
        inputs = grids.get(c.grid)
        a = per_seed(inputs, dataset, c.a, c.metric) if inputs else pd.Series(dtype=float)
        b = per_seed(inputs, dataset, c.b, c.metric) if inputs else pd.Series(dtype=float)
        test = compare(a, b)
        mean_a, mean_b = (float(s.mean()) if len(s) else math.nan for s in (a, b))
        scale = 1.0 if c.metric == PEAK_GAP else (100.0 / abs(mean_b) if mean_b else math.nan)
        effect = (mean_a - mean_b) * scale
        # which way is "better": lower for losses and for the peak gap
        better = -1 if (c.metric == PEAK_GAP or lower_is_better(c.metric)) else 1
        agrees = None if not math.isfinite(effect) or effect == 0 else (effect * better * c.sign > 0)
        std = [float(s.std(ddof=1)) if len(s) > 1 else math.nan for s in (a, b)]
        raw.append((c, mean_a, std[0], mean_b, std[1], effect, test, scale, agrees))
    adjusted = holm([r[6].p_value for r in raw])
    out = []
    for (c, mean_a, std_a, mean_b, std_b, effect, test, scale, agrees), p_adj in zip(raw, adjusted):
        out.append(
            Outcome(
                c,
                mean_a,
                std_a,
                mean_b,
                std_b,
                effect,
                test.low * scale,
                test.high * scale,
                test.p_value,
                p_adj,
                test.n,
                agrees,
                bool(math.isfinite(p_adj) and p_adj < alpha),
            )
        )
    return out


def verdict(outcomes: Sequence[Outcome], needs: str = "all") -> str:
    """The claim's verdict from its comparisons (rules: the module docstring). With needs="any"
    (a claim that something *can* happen) one significant comparison the claimed way holds it,
    and only every comparison going significantly against it contradicts it."""
    if not outcomes or any(o.agrees is None for o in outcomes):
        return "no data"
    held = [bool(o.agrees and o.significant) for o in outcomes]
    against = [bool(not o.agrees and o.significant) for o in outcomes]
    agrees = [bool(o.agrees) for o in outcomes]
    if needs == "any":
        if any(held):
            return "holds"
        if all(against):
            return "contradicted"
        return "direction only" if any(agrees) else "not shown"
    if any(against):
        return "contradicted"
    if all(held):
        return "holds"
    return "direction only" if all(agrees) else "not shown"


@dataclass(frozen=True)
class ClaimAnswer:
    claim: Claim
    dataset: str
    verdict: str
    outcomes: tuple[Outcome, ...]
    note: str = ""


def _m_claim(claim: Claim, inputs: ReportInputs | None, dataset: str, alpha: float) -> ClaimAnswer:
    """The m picked on validation (mean val/ndcg@10) against both ends of the swept range."""
    if inputs is None or inputs.spec.axis is None:
        return ClaimAnswer(claim, dataset, "no data", ())
    res = inputs.results
    ok = res[(res["dataset"] == dataset) & (res["status"] == OK_STATUS)]
    if ok.empty or "val/ndcg@10" not in ok:
        return ClaimAnswer(claim, dataset, "no data", ())
    rows = [r for r in inputs.spec.row_names() if r in set(ok["row"])]
    val = ok.groupby("row")["val/ndcg@10"].mean()
    best = max(rows, key=lambda r: val[r])
    ends = (rows[0], rows[-1])
    note = f"best on validation: {best}, val NDCG@10 {val[best]:.4f}"
    if best in ends:
        comparisons = [_cmp("m_sweep", best, e, "test/ndcg@10") for e in ends if e != best]
        outcomes = _outcomes({"m_sweep": inputs}, dataset, comparisons, alpha)
        return ClaimAnswer(claim, dataset, "not shown", tuple(outcomes), note + ", an end of the range")
    comparisons = [_cmp("m_sweep", best, e, m) for e in ends for m in ("test/ndcg@10", "test/auc")]
    outcomes = _outcomes({"m_sweep": inputs}, dataset, comparisons, alpha)
    return ClaimAnswer(claim, dataset, verdict(outcomes), tuple(outcomes), note)


def load_grids(root: str | Path) -> dict[str, ReportInputs]:
    """The claim grids' stored inputs under `root` (missing grids are skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (expected one holding paper/, m_sweep/, sync/, scaling/)")
    grids = {g: load_inputs(root / g) for g in GRIDS if (root / g / "results.csv").is_file()}
    if not grids:
        raise ReportError(f"{root}: none of {', '.join(GRIDS)} holds an ablation report (results.csv)")
    return grids


def answer(root: str | Path, alpha: float = 0.05) -> list[ClaimAnswer]:
    """Every claim on every dataset of the grids under `root`."""
    grids = load_grids(root)
    datasets = list(dict.fromkeys(d for g in grids.values() for d in g.results["dataset"]))
    out = []
    for dataset in datasets:
        for claim in CLAIMS:
            if claim.number == 4:
                out.append(_m_claim(claim, grids.get("m_sweep"), dataset, alpha))
                continue
            outcomes = _outcomes(grids, dataset, claim.comparisons, alpha)
            out.append(ClaimAnswer(claim, dataset, verdict(outcomes, claim.needs), tuple(outcomes)))
    return out


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _fmt(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def _effect(o: Outcome) -> str:
    if not math.isfinite(o.effect):
        return "—"
    unit = " ep" if o.comparison.metric == PEAK_GAP else "%"
    ci = f" [{o.low:+.1f}, {o.high:+.1f}]" if math.isfinite(o.low) and math.isfinite(o.high) else ""
    return f"{o.effect:+.1f}{unit}{ci}"


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def outcome_rows(answers: Sequence[ClaimAnswer]) -> list[list[str]]:
    body = []
    for ans in answers:
        for o in ans.outcomes:
            c = o.comparison
            digits = 1 if c.metric == PEAK_GAP else 4
            claimed = "beats" if c.sign > 0 else "below"
            mark = "—" if o.agrees is None else ("✓" if o.agrees else "✗") + (" *" if o.significant else "")
            body.append(
                [
                    f"{ans.claim.number}",
                    ans.dataset,
                    f"`{c.a}` {claimed} `{c.b}`",
                    "peak-epoch gap" if c.metric == PEAK_GAP else c.metric,
                    _fmt(o.mean_a, o.std_a, digits),
                    _fmt(o.mean_b, o.std_b, digits),
                    _effect(o),
                    _p(o.p_value),
                    _p(o.p_adjusted),
                    str(o.n),
                    mark,
                ]
            )
    return body


def markdown(answers: Sequence[ClaimAnswer], alpha: float = 0.05) -> str:
    datasets = list(dict.fromkeys(a.dataset for a in answers))
    by = {(a.claim.number, a.dataset): a for a in answers}
    summary = []
    for claim in CLAIMS:
        cells = []
        for d in datasets:
            a = by.get((claim.number, d))
            cells.append("—" if a is None else a.verdict + (f"; {a.note}" if a.note else ""))
        summary.append([f"{claim.number}. {claim.text}", *cells])
    out = ["## Verdicts", "", md_table(["claim", *datasets], summary), ""]
    out += [
        "## Comparisons",
        "",
        md_table(
            [
                "claim",
                "dataset",
                "comparison",
                "metric",
                "A",
                "B",
                "effect [95 % CI]",
                "p",
                "p (Holm)",
                "seeds",
                "",
            ],
            outcome_rows(answers),
        ),
        "",
        "Comparison: what the claim says — A *beats* B, or A is *below* B — by the metric's "
        "direction (higher is better; lower for LogLoss and for the peak-epoch gap, "
        "|retrieval peak − ranking peak|). A, B: mean ± std over seeds. Effect: A − B in % of |B| "
        "(the gap: in epochs), with the 95 % t-interval of the difference (paired over common "
        "seeds, else Welch's). p: two-sided; p (Holm): corrected over the claim's comparisons on "
        f"that dataset. ✓: the effect goes the claimed way; *: corrected p < {alpha:g}.",
    ]
    return "\n".join(out) + "\n"


def frame(answers: Sequence[ClaimAnswer]) -> pd.DataFrame:
    """One row per comparison (claims.csv)."""
    rows = []
    for ans in answers:
        for o in ans.outcomes:
            c = o.comparison
            rows.append(
                {
                    "claim": ans.claim.number,
                    "dataset": ans.dataset,
                    "verdict": ans.verdict,
                    "grid": c.grid,
                    "a": c.a,
                    "b": c.b,
                    "metric": c.metric,
                    "claimed_sign": c.sign,
                    "mean_a": o.mean_a,
                    "mean_b": o.mean_b,
                    "effect": o.effect,
                    "ci_low": o.low,
                    "ci_high": o.high,
                    "p_value": o.p_value,
                    "p_holm": o.p_adjusted,
                    "seeds": o.n,
                    "agrees": o.agrees,
                    "significant": o.significant,
                }
            )
    return pd.DataFrame(rows)
