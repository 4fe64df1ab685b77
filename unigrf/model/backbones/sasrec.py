"""The SASRec block (Kang & McAuley, ICDM 2018): softmax self-attention and a point-wise
feed-forward network, with learned absolute position embeddings added to the input at each
token's `positions` entry.

`ModelConfig.sasrec_norm`:
- "pre" (the public SASRec.pytorch layout, the default):
  Y = X + Dropout(Attn(LN(X))), Z = Y + Dropout(FFN(LN(Y))), then a final LayerNorm;
- "post" (the original transformer layout):
  Y = LN(X + Dropout(Attn(X))), Z = LN(Y + Dropout(FFN(Y))).
FFN = Linear(D, D) → ReLU → Dropout → Linear(D, D); attention weights use dropout too.
"""

from __future__ import annotations

from torch import Tensor, nn

from unigrf.config import ModelConfig
from unigrf.model.backbones.base import (
    Backbone,
    BackboneContext,
    Block,
    masked_sdpa,
    merge_heads,
    softmax_mask,
    split_heads,
    with_past,
)


class SASRecBlock(Block):
    def __init__(self, dim: int, heads: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.heads, self.pre_norm, self.attn_dropout = heads, pre_norm, dropout
        self.attn_norm = nn.LayerNorm(dim)
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.wo = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def _attn_input(self, x: Tensor) -> Tensor:
        return self.attn_norm(x) if self.pre_norm else x

    def _keys_values(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return split_heads(self.wk(h), self.heads), split_heads(self.wv(h), self.heads)

    def keys_values(self, x: Tensor, aux: object) -> tuple[Tensor, Tensor]:
        return self._keys_values(self._attn_input(x))

    def forward(
        self, x: Tensor, aux: object, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        h = self._attn_input(x)
        q = split_heads(self.wq(h), self.heads)
        k, v = self._keys_values(h)
        k_all, v_all = with_past(k, v, past)
        p = self.attn_dropout if self.training else 0.0
        a = self.dropout(self.wo(merge_heads(masked_sdpa(q, k_all, v_all, aux, dropout_p=p))))
        if self.pre_norm:
            y = x + a
            z = y + self.dropout(self.ffn(self.ffn_norm(y)))
        else:
            y = self.attn_norm(x + a)
            z = self.ffn_norm(y + self.dropout(self.ffn(y)))
        return z, k, v


class SASRec(Backbone):
    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        layers, heads, dim = cfg.resolved_shape()
        pre_norm = cfg.sasrec_norm == "pre"
        self.max_positions = max_positions
        self.position_embedding = nn.Embedding(max_positions, dim)
        self.blocks = nn.ModuleList(SASRecBlock(dim, heads, cfg.dropout, pre_norm) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()

    def prepare(
        self,
        x: Tensor,
        attn_mask: Tensor,
        positions: Tensor,
        timestamps: Tensor | None,
        context: BackboneContext | None,
    ) -> tuple[Tensor, object]:
        if positions.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"sasrec backbone: position {int(positions.max())} >= max_positions {self.max_positions}"
            )
        return x + self.position_embedding(positions), softmax_mask(attn_mask)

    def finish(self, x: Tensor) -> Tensor:
        return self.final_norm(x)
