"""Evaluation: metrics as pure functions (`metrics`), full-ranking evaluation (`evaluate`) and the
synthetic generator's oracle under the same protocol (`oracle`, the Bayes ceiling)."""

from unigrf.evaluation.evaluate import (
    cascade_ranks,
    evaluate,
    format_metrics_table,
    popularity_baseline,
    retrieval_metrics,
)
from unigrf.evaluation.metrics import (
    auc,
    gauc,
    history_mask,
    hit_rate,
    logloss,
    mrr,
    ndcg,
    target_ranks,
)

__all__ = [
    "auc",
    "cascade_ranks",
    "evaluate",
    "format_metrics_table",
    "gauc",
    "history_mask",
    "hit_rate",
    "logloss",
    "mrr",
    "ndcg",
    "popularity_baseline",
    "retrieval_metrics",
    "target_ranks",
]
