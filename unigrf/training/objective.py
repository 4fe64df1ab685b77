"""The validation objective: a metric name or a weighted sum of metric names, always maximised.

`train.objective` (or the variant's default, `config.resolved_objective`) is parsed once into
terms `[(weight, "val/<metric>"), ...]`; model selection (`unigrf.training.selection`) and the
sweep layer read it through `parse_objective`. Selection never reads test metrics.
"""

from __future__ import annotations

import re

_TERM = re.compile(r"\s*([+-])?\s*(?:(\d*\.?\d+(?:[eE][-+]?\d+)?)\s*\*\s*)?([A-Za-z_][\w/@.]*)\s*")

Terms = list[tuple[float, str]]


def parse_objective(expr: str) -> Terms:
    """`"0.5*val/ndcg@10 + 0.5*val/auc - 0.1*val/logloss"` -> [(0.5, "val/ndcg@10"), ...]."""
    terms, pos = [], 0
    while pos < len(expr):
        match = _TERM.match(expr, pos)
        if not match or match.end() == pos or (terms and not match.group(1)):
            raise ValueError(f"train.objective: cannot parse {expr!r} at character {pos}")
        sign = -1.0 if match.group(1) == "-" else 1.0
        weight = float(match.group(2)) if match.group(2) else 1.0
        terms.append((sign * weight, match.group(3)))
        pos = match.end()
    if not terms:
        raise ValueError("train.objective is empty")
    if any(not name.startswith("val/") for _, name in terms):
        raise ValueError(f"train.objective {expr!r}: model selection may only use val/ metrics")
    return terms


def objective_value(expr: str, metrics: dict[str, float]) -> float:
    return terms_value(parse_objective(expr), metrics)


def terms_value(terms: Terms, metrics: dict[str, float]) -> float:
    total = 0.0
    for weight, name in terms:
        if name not in metrics:
            raise KeyError(f"objective metric {name!r} not reported (have: {', '.join(sorted(metrics))})")
        total += weight * float(metrics[name])
    return total


def metric_stage(name: str) -> str | None:
    """The stage whose model alone decides metric `name`: "retrieval" (hr@k, ndcg@k, mrr),
    "ranking" (auc, logloss, gauc), or None (cascade metrics depend on both stages)."""
    metric = name.removeprefix("val/")
    if metric.startswith(("hr@", "ndcg@")) or metric == "mrr":
        return "retrieval"
    if metric in ("auc", "logloss", "gauc"):
        return "ranking"
    return None
