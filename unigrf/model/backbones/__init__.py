"""Sequence backbones behind one interface [SPEC §1].

`build_backbone(cfg, max_positions)` returns an `nn.Module` with
`forward(x [B, T, D], attn_mask [B, T, S] bool (True = may attend), positions [B, T] long,
timestamps [B, T] long | None, context=None) -> [B, T, D]` and `build_context(...)` (see
`base.py`). The caller always builds the mask; nothing else in the model depends on which
backbone is used.
"""

from __future__ import annotations

from unigrf.config import ModelConfig
from unigrf.model.backbones.base import Backbone, BackboneContext
from unigrf.model.backbones.hstu import HSTU
from unigrf.model.backbones.llama import Llama
from unigrf.model.backbones.sasrec import SASRec

BACKBONES: dict[str, type[Backbone]] = {"hstu": HSTU, "llama": Llama, "sasrec": SASRec}


def build_backbone(cfg: ModelConfig, max_positions: int) -> Backbone:
    """The backbone named by `cfg.backbone`, sized by `cfg.resolved_shape()`; `max_positions`
    bounds the `positions` values it will see (SASRec's position table, HSTU's bucket range)."""
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"model.backbone: unknown {cfg.backbone!r} (choices: {', '.join(BACKBONES)})")
    _, heads, dim = cfg.resolved_shape()
    if dim % heads:
        raise ValueError(f"model.dim ({dim}) must be divisible by model.num_heads ({heads})")
    return BACKBONES[cfg.backbone](cfg, max_positions)


__all__ = ["BACKBONES", "Backbone", "BackboneContext", "build_backbone"]
