"""The paper's six claims [SPEC §3], answered from the claim grids' report directories.

`answer(root)` reads `<root>/{paper,m_sweep,sync,scaling}/` — each a directory `unigrf ablate`
wrote (results.csv, histories.csv, grid.yaml, outcomes/, ...) for `ablations/<grid>.yaml` — and
tests every claim on every dataset found there. A claim is a family of comparisons, each "row A
beats row B on metric M" (or "A is below B" where the claim says so):

    effect   = mean(A) − mean(B), in % of |mean(B)|;
    interval = the difference's interval, **Bonferroni-corrected** over the claim's m
               comparisons on that dataset (confidence 1 − alpha/m), on the same scale: from the
               paired two-level bootstrap over test users and seeds where both rows kept
               per-user outcomes, else the t-interval over seeds (only with >= 3 seeds and
               differences that vary; `unigrf.ablation.paired`);
    p        = two-sided, Bonferroni-adjusted: min(1, m · p).

Bonferroni rather than Holm because the verdict reads the interval: a Bonferroni interval
excludes 0 exactly when its adjusted p is below alpha (both come from the same bootstrap
replicates, or the same t distribution), and the m intervals hold together with probability
at least 1 − alpha; Holm's step-down p has no interval that agrees with it.

Each comparison is *holds* (the corrected interval excludes 0 in the claimed direction — better
by the metric's direction, or worse for "below"), *contradicted* (it excludes 0 the other way)
or *inconclusive* (it contains 0, there is no test, or the effect is exactly 0). A claim's
verdict, from its comparisons:
- holds: every comparison holds (a claim that something "can" happen: one is enough);
- contradicted: some comparison is contradicted (for "can": every one is);
- inconclusive: otherwise; "no data" only when a compared row or grid is missing (for claim 4:
  any m of the sweep, since the best m and the range's ends need the whole axis).

Claim 4 (an intermediate m is best) adds a condition: the m that validates best (mean
val/ndcg@10; picked on validation, never on test) must lie strictly inside the swept range, else
inconclusive; inside, it is compared with both ends on test NDCG@10 and AUC.

Claim 5 (with the weighter both stages peak at about the same epoch) is an **equivalence**
question, tested by TOST (two one-sided t-tests, `statsmodels` `ttost_paired`) on the per-run
difference retrieval peak − ranking peak (validation epochs, from the histories) of the sync
grid's weighter row, with the margin ±δ the grid declares (`equivalence_margin_epochs`):
holds when the (1 − 2·alpha) interval of the mean difference lies inside (−δ, δ) (TOST
p < alpha), contradicted when it lies entirely outside [−δ, δ], inconclusive otherwise (and
below 3 runs or without variance: a t-test needs both).

Pure pandas/SciPy/statsmodels: no Ray, no torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from unigrf.ablation.aggregate import OK_STATUS, Comparator, lower_is_better, peak_epochs
from unigrf.ablation.paired import MIN_SEEDS, TestResult
from unigrf.ablation.report import ReportError, ReportInputs, load_inputs, md_table

GRIDS = ("paper", "m_sweep", "sync", "scaling")
PEAK_DIFF = "peak_diff"  # retrieval peak − ranking peak in epochs, per run, from the histories
HOLDS, CONTRADICTED, INCONCLUSIVE, NO_DATA = "holds", "contradicted", "inconclusive", "no data"


@dataclass(frozen=True)
class Comparison:
    grid: str
    a: str  # row names as in the grid's report
    b: str  # for PEAK_DIFF: unused ("")
    metric: str  # a results column, or PEAK_DIFF (an equivalence test on row a)
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
        (_cmp("sync", "hstu/unigrf", "", PEAK_DIFF),),
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
    mean_b: float  # PEAK_DIFF: the margin δ
    std_b: float
    effect: float  # % of |mean_b|; PEAK_DIFF: the mean difference in epochs
    low: float  # the corrected interval, same scale (PEAK_DIFF: the 1 − 2·alpha interval)
    high: float
    p_value: float  # raw, two-sided (PEAK_DIFF: the TOST p)
    p_adjusted: float  # Bonferroni over the claim's family (PEAK_DIFF: the TOST p)
    n: int  # seeds compared (PEAK_DIFF: runs)
    test: str  # "bootstrap", "paired", "welch", "tost", or "" (no test)
    result: str  # holds / contradicted / inconclusive / no data


def comparison_result(effect: float, low: float, high: float, sign: int, better: int) -> str:
    """holds / contradicted / inconclusive of one comparison from its corrected interval:
    `better` is the metric's good direction (+1 higher, -1 lower), `sign` the claim's."""
    if not math.isfinite(effect):
        return NO_DATA
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0.0 <= high or effect == 0.0:
        return INCONCLUSIVE
    claimed_positive = sign * better > 0  # the claim predicts A − B > 0
    return HOLDS if (low > 0.0) == claimed_positive else CONTRADICTED


class _Grids:
    """The claim grids' inputs and one `Comparator` per grid (its bootstrap draws are shared by
    every comparison on a dataset)."""

    def __init__(self, grids: Mapping[str, ReportInputs]) -> None:
        self.inputs = dict(grids)
        self._comparators: dict[str, Comparator] = {}

    def comparator(self, grid: str) -> Comparator | None:
        inputs = self.inputs.get(grid)
        if inputs is None:
            return None
        if grid not in self._comparators:
            self._comparators[grid] = Comparator(
                inputs.results, inputs.outcomes, inputs.floors, inputs.spec.significance
            )
        return self._comparators[grid]


def _outcomes(grids: _Grids, dataset: str, comparisons: Sequence[Comparison], alpha: float) -> list[Outcome]:
    """Each comparison with its Bonferroni-corrected interval over the family (the docstring)."""
    m = max(len(comparisons), 1)
    confidence = 1.0 - alpha / m
    out = []
    for c in comparisons:
        comparator = grids.comparator(c.grid)
        if comparator is None:
            out.append(_missing(c))
            continue
        a = comparator.per_seed(dataset, c.a, c.metric)
        b = comparator.per_seed(dataset, c.b, c.metric)
        if a.empty or b.empty:
            out.append(_missing(c, a, b))
            continue
        test: TestResult = comparator.test(dataset, c.a, c.b, c.metric, confidence)
        mean_a, mean_b = float(a.mean()), float(b.mean())
        scale = 100.0 / abs(mean_b) if mean_b else math.nan
        effect = (mean_a - mean_b) * scale
        low, high = test.low * scale, test.high * scale
        better = -1 if lower_is_better(c.metric) else 1
        out.append(
            Outcome(
                c,
                mean_a,
                _std(a),
                mean_b,
                _std(b),
                effect,
                low,
                high,
                test.p_value,
                min(1.0, m * test.p_value) if math.isfinite(test.p_value) else math.nan,
                test.n,
                test.test,
                comparison_result(effect, low, high, c.sign, better),
            )
        )
    return out


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _missing(c: Comparison, a: pd.Series | None = None, b: pd.Series | None = None) -> Outcome:
    mean = [float(s.mean()) if s is not None and len(s) else math.nan for s in (a, b)]
    nan = math.nan
    return Outcome(c, mean[0], nan, mean[1], nan, nan, nan, nan, nan, nan, 0, "", NO_DATA)


def tost_peaks(inputs: ReportInputs | None, dataset: str, c: Comparison, alpha: float) -> Outcome:
    """Claim 5's equivalence test on row `c.a`: per finished run, retrieval peak − ranking peak
    (1-based validation epochs), TOST against the grid's ±equivalence_margin_epochs."""
    from statsmodels.stats.weightstats import ttost_paired

    spec = inputs.spec if inputs is not None else None
    if spec is None or spec.peaks is None or inputs.histories.empty:
        return _missing(c)
    res = inputs.results
    runs = res[(res["dataset"] == dataset) & (res["row"] == c.a) & (res["status"] == OK_STATUS)]
    peaks = peak_epochs(
        inputs.histories[inputs.histories["cell"].isin(runs["cell"])],
        spec.peaks.retrieval,
        spec.peaks.ranking,
    )
    peaks = peaks.dropna(subset=["retrieval_peak", "ranking_peak"])
    delta = spec.equivalence_margin_epochs
    if peaks.empty:
        return _missing(c)
    ret, rank = peaks["retrieval_peak"].to_numpy(float), peaks["ranking_peak"].to_numpy(float)
    diff = ret - rank
    effect, n, nan = float(diff.mean()), len(diff), math.nan
    margin = nan if delta is None else delta

    def outcome(low: float, high: float, p: float, test: str, result: str) -> Outcome:
        return Outcome(
            c, float(ret.mean()), _std(pd.Series(ret)), margin, nan, effect, low, high, p, p, n, test, result
        )

    if n < MIN_SEEDS or float(np.ptp(diff)) == 0.0:  # no t-test: too few runs or no variance
        return outcome(nan, nan, nan, "", NO_DATA if delta is None else INCONCLUSIVE)
    ci = stats.ttest_1samp(diff, 0.0).confidence_interval(confidence_level=1.0 - 2.0 * alpha)
    low, high = float(ci.low), float(ci.high)
    if delta is None:  # the interval is shown; without a declared margin there is no test
        return outcome(low, high, nan, "", NO_DATA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p_tost = float(ttost_paired(ret, rank, -delta, delta)[0])
    if -delta < low and high < delta:
        result = HOLDS
    elif low > delta or high < -delta:
        result = CONTRADICTED
    else:
        result = INCONCLUSIVE
    return outcome(low, high, p_tost, "tost", result)


def verdict(outcomes: Sequence[Outcome], needs: str = "all") -> str:
    """The claim's verdict from its comparisons' results (rules: the module docstring). With
    needs="any" (a claim that something *can* happen) one comparison that holds holds it, and
    only every comparison contradicted contradicts it."""
    results = [o.result for o in outcomes]
    if not results or NO_DATA in results:
        return NO_DATA
    if needs == "any":
        if HOLDS in results:
            return HOLDS
        return CONTRADICTED if all(r == CONTRADICTED for r in results) else INCONCLUSIVE
    if CONTRADICTED in results:
        return CONTRADICTED
    return HOLDS if all(r == HOLDS for r in results) else INCONCLUSIVE


@dataclass(frozen=True)
class ClaimAnswer:
    claim: Claim
    dataset: str
    verdict: str
    outcomes: tuple[Outcome, ...]
    note: str = ""


def _m_claim(claim: Claim, grids: _Grids, dataset: str, alpha: float) -> ClaimAnswer:
    """The m picked on validation (mean val/ndcg@10) against both ends of the swept range."""
    inputs = grids.inputs.get("m_sweep")
    if inputs is None or inputs.spec.axis is None:
        return ClaimAnswer(claim, dataset, NO_DATA, ())
    res = inputs.results
    ok = res[(res["dataset"] == dataset) & (res["status"] == OK_STATUS)]
    if ok.empty or "val/ndcg@10" not in ok:
        return ClaimAnswer(claim, dataset, NO_DATA, ())
    unfinished = [r for r in inputs.spec.row_names() if r not in set(ok["row"])]
    if unfinished:  # the best m and the range's ends are only known over the whole axis
        note = f"the m_sweep grid is incomplete: {', '.join(unfinished)} not finished"
        return ClaimAnswer(claim, dataset, NO_DATA, (), note)
    rows = inputs.spec.row_names()
    val = ok.groupby("row")["val/ndcg@10"].mean()
    best = max(rows, key=lambda r: val[r])
    ends = (rows[0], rows[-1])
    note = f"best on validation: {best}, val NDCG@10 {val[best]:.4f}"
    if best in ends:
        comparisons = [_cmp("m_sweep", best, e, "test/ndcg@10") for e in ends if e != best]
        outcomes = _outcomes(grids, dataset, comparisons, alpha)
        return ClaimAnswer(claim, dataset, INCONCLUSIVE, tuple(outcomes), note + ", an end of the range")
    comparisons = [_cmp("m_sweep", best, e, m) for e in ends for m in ("test/ndcg@10", "test/auc")]
    outcomes = _outcomes(grids, dataset, comparisons, alpha)
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
    loaded = load_grids(root)
    grids = _Grids(loaded)
    datasets = list(dict.fromkeys(d for g in loaded.values() for d in g.results["dataset"]))
    out = []
    for dataset in datasets:
        for claim in CLAIMS:
            if claim.number == 4:
                out.append(_m_claim(claim, grids, dataset, alpha))
                continue
            if claim.number == 5:
                (c,) = claim.comparisons
                inputs = loaded.get(c.grid)
                outcome = tost_peaks(inputs, dataset, c, alpha)
                note = ""
                if inputs is not None and inputs.spec.equivalence_margin_epochs is None:
                    note = "the sync grid declares no equivalence_margin_epochs"
                out.append(ClaimAnswer(claim, dataset, verdict([outcome]), (outcome,), note))
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
    unit = " ep" if o.comparison.metric == PEAK_DIFF else "%"
    ci = f" [{o.low:+.1f}, {o.high:+.1f}]" if math.isfinite(o.low) and math.isfinite(o.high) else ""
    seeds_only = "‡" if ci and o.test in ("paired", "welch") else ""
    return f"{o.effect:+.1f}{unit}{ci}{seeds_only}"


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def _describe(c: Comparison) -> tuple[str, str]:
    if c.metric == PEAK_DIFF:
        return f"`{c.a}`: retrieval and ranking peak together", "peak epochs (TOST)"
    return f"`{c.a}` {'beats' if c.sign > 0 else 'below'} `{c.b}`", c.metric


def outcome_rows(answers: Sequence[ClaimAnswer]) -> list[list[str]]:
    body = []
    for ans in answers:
        for o in ans.outcomes:
            c = o.comparison
            peak = c.metric == PEAK_DIFF
            what, metric = _describe(c)
            body.append(
                [
                    f"{ans.claim.number}",
                    ans.dataset,
                    what,
                    metric,
                    _fmt(o.mean_a, o.std_a, 1 if peak else 4),
                    (f"±{o.mean_b:g} ep" if math.isfinite(o.mean_b) else "—")
                    if peak
                    else _fmt(o.mean_b, o.std_b, 4),
                    _effect(o),
                    _p(o.p_value),
                    _p(o.p_adjusted),
                    str(o.n),
                    o.result,
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
                "effect [corrected interval]",
                "p",
                "p (Bonferroni)",
                "seeds",
                "result",
            ],
            outcome_rows(answers),
        ),
        "",
        "Comparison: what the claim says — A *beats* B, or A is *below* B — by the metric's "
        "direction (higher is better; lower for LogLoss). A, B: mean ± std over seeds. Effect: "
        "A − B in % of |B|, with its interval Bonferroni-corrected over the claim's comparisons "
        f"on that dataset (confidence 1 − {alpha:g}/m): from a paired two-level bootstrap over test "
        "users and seeds where the runs kept per-user outcomes; ‡ over seeds only (t-interval; "
        "runs without outcomes, and only with >= 3 seeds whose differences vary). p: two-sided; "
        "p (Bonferroni): min(1, m·p), below alpha exactly when the interval excludes 0. Result: "
        "holds (the interval excludes 0 the claimed way), contradicted (the other way), "
        "inconclusive (it contains 0, or no test). Peak epochs: per run retrieval peak − ranking "
        "peak (validation epochs); A: the retrieval peak, B: the equivalence margin the grid "
        f"declares; effect: the mean difference with its {1 - 2 * alpha:.0%} interval; p: TOST; "
        "holds when the interval lies inside the margin, contradicted when entirely outside it.",
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
                    "p_adjusted": o.p_adjusted,
                    "seeds": o.n,
                    "test": o.test,
                    "result": o.result,
                }
            )
    return pd.DataFrame(rows)


def per_seed(inputs: ReportInputs, dataset: str, row: str, metric: str) -> pd.Series:
    """`metric` of `row`'s finished runs on `dataset`, indexed by seed (NaNs dropped)."""
    return Comparator(inputs.results).per_seed(dataset, row, metric)
