"""The SASRec block (Kang & McAuley, ICDM 2018): softmax self-attention and a point-wise
feed-forward network, with learned absolute position embeddings added to the input at each
token's `positions` entry (`recency_positions`: UniGRF counts them back from the row's last
item slot, as SASRec.pytorch's left padding does). The position table starts small (std 0.02,
as GPT-2's): the token embeddings reach the backbone at ~0.16 per coordinate (std 0.02 × √D,
see `UniGRF._tokens`), and torch's default N(0, 1) rows would drown them ~6 to 1.

`ModelConfig.sasrec_norm`:
- "pre" (the public SASRec.pytorch layout, the default):
  Y = X + Dropout(Attn(LN(X))), Z = Y + Dropout(FFN(LN(Y))), then a final LayerNorm;
- "post" (the original transformer layout):
  Y = LN(X + Dropout(Attn(X))), Z = LN(Y + Dropout(FFN(Y))).
FFN = Linear(D, D) → ReLU → Dropout → Linear(D, D); attention weights use
`ModelConfig.attention_dropout` (SASRec's paper: the same rate as `dropout`; off by default, see
the config).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unigrf.config import ModelConfig
from unigrf.kernels import Dropout
from unigrf.model.backbones.base import (
    Backbone,
    Block,
    SoftmaxMask,
    masked_sdpa,
    merge_heads,
    packed_softmax_mask,
    softmax_mask,
    split_heads,
)

POSITION_INIT_STD = 0.02


class SASRecBlock(Block):
    def __init__(
        self, dim: int, heads: int, dropout: float, pre_norm: bool, attention_dropout: float
    ) -> None:
        super().__init__()
        self.heads, self.pre_norm, self.attn_dropout = heads, pre_norm, attention_dropout
        self.attn_norm = nn.LayerNorm(dim)
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.wo = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), Dropout(dropout), nn.Linear(dim, dim))
        self.dropout = Dropout(dropout)

    def attn_input(self, x: Tensor) -> Tensor:
        return self.attn_norm(x) if self.pre_norm else x

    def keys_values(self, h: Tensor, key_aux: object) -> tuple[Tensor, Tensor]:
        return split_heads(self.wk(h), self.heads), split_heads(self.wv(h), self.heads)

    def attend(self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, query_aux: object) -> Tensor:
        assert isinstance(query_aux, SoftmaxMask)
        q = split_heads(self.wq(h), self.heads)
        p = self.attn_dropout if self.training else 0.0
        return self._rest(x, masked_sdpa(q, k, v, query_aux, dropout_p=p))

    def attend_packed(
        self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, packed_aux: object
    ) -> Tensor:
        q = split_heads(self.wq(h), self.heads)
        assert isinstance(packed_aux, SoftmaxMask)
        return self._rest(x, masked_sdpa(q, torch.cat([past_k, k], 2), torch.cat([past_v, v], 2), packed_aux))

    def _rest(self, x: Tensor, o: Tensor) -> Tensor:
        """The block after attention: output projection, residuals, norms, FFN (o [B, H, T, d])."""
        a = self.dropout(self.wo(merge_heads(o)))
        if self.pre_norm:
            y = x + a
            return y + self.dropout(self.ffn(self.ffn_norm(y)))
        y = self.attn_norm(x + a)
        return self.ffn_norm(y + self.dropout(self.ffn(y)))


class SASRec(Backbone):
    recency_positions = True

    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        layers, heads, dim = cfg.resolved_shape()
        pre_norm = cfg.sasrec_norm == "pre"
        self.max_positions = max_positions
        self.position_embedding = nn.Embedding(max_positions, dim)
        nn.init.normal_(self.position_embedding.weight, std=POSITION_INIT_STD)
        self.blocks = nn.ModuleList(
            SASRecBlock(dim, heads, cfg.dropout, pre_norm, cfg.attention_dropout) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        if positions.numel() and not 0 <= int(positions.min()) <= int(positions.max()) < self.max_positions:
            raise ValueError(
                f"sasrec backbone: positions {int(positions.min())}..{int(positions.max())} outside "
                f"0..max_positions - 1 = {self.max_positions - 1} (a sequence longer than the model's max_len?)"
            )
        return x + self.position_embedding(positions)

    def query_aux(
        self,
        attn_mask: Tensor | None,
        positions: Tensor,
        timestamps: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        dtype: torch.dtype,
    ) -> SoftmaxMask:
        return softmax_mask(attn_mask, dtype)

    def packed_aux(
        self,
        key_valid: Tensor,
        position: Tensor,
        time: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        num_tokens: int,
        dtype: torch.dtype,
    ) -> Tensor:
        return packed_softmax_mask(key_valid, num_tokens, dtype)

    def finish(self, x: Tensor) -> Tensor:
        return self.final_norm(x)
