"""The model layer (pure PyTorch): backbones, the unified model, the two-stage pipeline, the
ranking-driven enhancer and the loss weighters."""

from __future__ import annotations

from torch import Tensor

from unigrf.config import ExperimentConfig, variant_spec
from unigrf.model.enhancer import RankingDrivenEnhancer
from unigrf.model.ranking_prior import PriorStats
from unigrf.model.two_stage import TwoStage
from unigrf.model.unified import UniGRF
from unigrf.model.weighter import build_weighter


def build_model(
    cfg: ExperimentConfig,
    num_items: int,
    num_levels: int,
    max_len: int,
    item_counts: Tensor | None = None,
    prior_stats: PriorStats | None = None,
) -> UniGRF | TwoStage:
    """UniGRF (items only for the `item_only` variant), or TwoStage for `two_stage`; the
    retrieval loss is `cfg.loss` (item_counts [num_items + 1]: training counts, for popularity
    negatives and log-Q); hard negatives use `enhancer.scope`; `prior_stats` feed the ranking
    prior (`model.ranking_prior`; `PriorStats.of(SequenceData.like_statistics())`)."""
    prior = {"prior_stats": prior_stats}
    if cfg.train.variant == "two_stage":
        model: UniGRF | TwoStage = TwoStage(
            cfg.model, num_items, num_levels, max_len, cfg.loss, item_counts, **prior
        )
    else:
        feedback = variant_spec(cfg).feedback_tokens
        model = UniGRF(cfg.model, num_items, num_levels, max_len, cfg.loss, item_counts, feedback, **prior)
    for m in [model] if isinstance(model, UniGRF) else [model.retriever, model.ranker]:
        m.hard_negative_scope = cfg.enhancer.scope
    return model


__all__ = ["RankingDrivenEnhancer", "TwoStage", "UniGRF", "build_model", "build_weighter"]
