"""The model layer (pure PyTorch): backbones, the unified model, the two-stage pipeline, the
ranking-driven enhancer and the loss weighters."""

from __future__ import annotations

from unigrf.config import ExperimentConfig
from unigrf.model.enhancer import RankingDrivenEnhancer
from unigrf.model.two_stage import TwoStage
from unigrf.model.unified import UniGRF
from unigrf.model.weighter import build_weighter


def build_model(cfg: ExperimentConfig, num_items: int, num_levels: int, max_len: int) -> UniGRF | TwoStage:
    """UniGRF, or TwoStage for `train.variant == "two_stage"`; hard negatives use
    `enhancer.scope`."""
    cls = TwoStage if cfg.train.variant == "two_stage" else UniGRF
    model = cls(cfg.model, num_items, num_levels, max_len)
    for m in [model] if isinstance(model, UniGRF) else [model.retriever, model.ranker]:
        m.hard_negative_scope = cfg.enhancer.scope
    return model


__all__ = ["RankingDrivenEnhancer", "TwoStage", "UniGRF", "build_model", "build_weighter"]
