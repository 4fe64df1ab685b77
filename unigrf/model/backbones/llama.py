"""A Llama-style decoder: pre-RMSNorm blocks, softmax attention with rotary position
embeddings (RoPE) applied at the given positions, and a SwiGLU MLP.

    Y = X + Dropout(W_o · Attn(RoPE(W_q N(X)), RoPE(W_k N(X)), W_v N(X)))
    Z = Y + Dropout(W_2 · (SiLU(W_1 N(Y)) ⊙ W_3 N(Y)))              N = RMSNorm

followed by a final RMSNorm. RoPE is evaluated at each token's `positions` entry (not its
index), so packed candidates that share a position get the same rotation; cached keys are
stored already rotated.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unigrf.config import ModelConfig
from unigrf.kernels import Dropout, silu_fresh
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

ROPE_BASE = 10000.0
MLP_MULTIPLE = 16  # SwiGLU width = 8/3 · D rounded up to this multiple (the Llama recipe)


def rope_tables(positions: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """positions [B, T] -> (cos, sin) [B, 1, T, head_dim / 2] in float32."""
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[:, None, :, None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[..., i], x[..., i + d/2]) of x [B, H, T, d] by the position angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class LlamaBlock(Block):
    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        if (dim // heads) % 2:
            raise ValueError(f"llama backbone: head dim {dim // heads} must be even for RoPE")
        self.heads, self.attn_dropout = heads, attention_dropout
        self.attn_norm = nn.RMSNorm(dim)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        hidden = MLP_MULTIPLE * -(-(8 * dim // 3) // MLP_MULTIPLE)
        self.mlp_norm = nn.RMSNorm(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.dropout = Dropout(dropout)

    def attn_input(self, x: Tensor) -> Tensor:
        return self.attn_norm(x)

    def keys_values(self, h: Tensor, key_aux: object) -> tuple[Tensor, Tensor]:
        cos, sin = key_aux  # type: ignore[misc]
        k = apply_rope(split_heads(self.wk(h), self.heads), cos, sin)
        return k, split_heads(self.wv(h), self.heads)

    def attend(self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, query_aux: object) -> Tensor:
        cos, sin, mask = query_aux  # type: ignore[misc]
        q = apply_rope(split_heads(self.wq(h), self.heads), cos, sin)
        p = self.attn_dropout if self.training else 0.0
        return self._rest(x, masked_sdpa(q, k, v, mask, dropout_p=p))

    def attend_packed(
        self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, packed_aux: object
    ) -> Tensor:
        cos, sin, mask = packed_aux  # type: ignore[misc]
        q = apply_rope(split_heads(self.wq(h), self.heads), cos, sin)
        return self._rest(x, masked_sdpa(q, torch.cat([past_k, k], 2), torch.cat([past_v, v], 2), mask))

    def _rest(self, x: Tensor, o: Tensor) -> Tensor:
        """The block after attention: output projection, residual, SwiGLU MLP (o [B, H, T, d])."""
        y = x + self.dropout(self.wo(merge_heads(o)))
        g = self.mlp_norm(y)
        return y + self.dropout(self.w2(silu_fresh(self.w1(g)) * self.w3(g)))


class Llama(Backbone):
    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        layers, heads, dim = cfg.resolved_shape()
        self.head_dim = dim // heads
        self.max_positions = max_positions  # RoPE needs no table; kept for a uniform interface
        self.blocks = nn.ModuleList(
            LlamaBlock(dim, heads, cfg.dropout, cfg.attention_dropout) for _ in range(layers)
        )
        self.final_norm = nn.RMSNorm(dim)

    def key_aux(self, positions: Tensor, timestamps: Tensor | None) -> tuple[Tensor, Tensor]:
        return rope_tables(positions, self.head_dim)

    def query_aux(
        self,
        attn_mask: Tensor | None,
        positions: Tensor,
        timestamps: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor, SoftmaxMask]:
        return (*rope_tables(positions, self.head_dim), softmax_mask(attn_mask, dtype))

    def packed_aux(
        self,
        key_valid: Tensor,
        position: Tensor,
        time: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        num_tokens: int,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor, Tensor]:
        return (
            *rope_tables(position[:, None], self.head_dim),
            packed_softmax_mask(key_valid, num_tokens, dtype),
        )

    def finish(self, x: Tensor) -> Tensor:
        return self.final_norm(x)
