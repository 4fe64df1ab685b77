"""What every backbone shares: the layer loop, the prefix context (a key/value cache) and a
masked softmax attention that never produces NaN.

A backbone maps token embeddings `x [B, T, D]` to hidden states `[B, T, D]` under a boolean
mask `attn_mask [B, T, S]` (True = may attend) that the caller builds: causal, key padding and
packed-candidate masks alike. Positions and timestamps come per token, so packed tokens can
share a position.

Optionally a forward pass continues an already encoded prefix: `build_context` runs the
prefix once and keeps every layer's keys/values (`BackboneContext`); `forward(..., context=ctx)`
then encodes new tokens whose mask columns are `[prefix keys (S_ctx), new keys (T)]`. The
result is exactly what one packed pass over `prefix + new tokens` gives at the new tokens (the
prefix never attends the new tokens under a causal/packed mask), at a fraction of the cost;
the ranking-driven enhancer uses it to score its candidates without re-encoding the prefix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


PREFILL_CHUNKS = 4  # causal chunks of `build_context`
PREFILL_MIN_CHUNK = 32  # tokens; shorter prefixes use fewer chunks


class BackboneContext(NamedTuple):
    """Per-layer keys/values of an encoded prefix of S tokens.

    keys[l], values[l]: [B, H, S, d_head] (keys already carry position information where the
    backbone rotates them, e.g. RoPE); positions [B, S]; timestamps [B, S] or None.
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    positions: Tensor
    timestamps: Tensor | None


class Block(nn.Module):
    """One backbone layer. `aux` carries what the backbone precomputes once per forward for
    all layers from the mask, positions and timestamps (mask tensors, RoPE tables,
    relative-bias buckets)."""

    def keys_values(self, x: Tensor, aux: object) -> tuple[Tensor, Tensor]:
        """Keys/values [B, H, T, d_head] this layer derives from its input x [B, T, D]."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, aux: object, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, D] (attending S_past + T keys) -> (output [B, T, D], keys, values of x)."""
        raise NotImplementedError


class Backbone(nn.Module):
    """The layer loop shared by all backbones; subclasses define `blocks`, `prepare` and
    `finish`."""

    blocks: nn.ModuleList

    def prepare(
        self,
        x: Tensor,
        attn_mask: Tensor,
        positions: Tensor,
        timestamps: Tensor | None,
        context: BackboneContext | None,
    ) -> tuple[Tensor, object]:
        """Per-forward work before the first block: returns (block input, aux)."""
        raise NotImplementedError

    def finish(self, x: Tensor) -> Tensor:
        """After the last block (e.g. a final norm)."""
        return x

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor,
        positions: Tensor,
        timestamps: Tensor | None = None,
        context: BackboneContext | None = None,
    ) -> Tensor:
        """x [B, T, D], attn_mask [B, T, S] bool (True = may attend; S = T, or S_ctx + T with a
        context), positions [B, T] long, timestamps [B, T] long | None -> [B, T, D]."""
        expected = x.shape[1] + (context.positions.shape[1] if context is not None else 0)
        if attn_mask.dtype != torch.bool or attn_mask.shape != (x.shape[0], x.shape[1], expected):
            raise ValueError(
                f"attn_mask must be bool [B, T, S] = {(x.shape[0], x.shape[1], expected)}, "
                f"got {attn_mask.dtype} {tuple(attn_mask.shape)}"
            )
        h, aux = self.prepare(x, attn_mask, positions, timestamps, context)
        for i, block in enumerate(self.blocks):
            past = (context.keys[i], context.values[i]) if context is not None else None
            h, _, _ = block(h, aux, past)
        return self.finish(h)

    def build_context(
        self, x: Tensor, attn_mask: Tensor, positions: Tensor, timestamps: Tensor | None = None
    ) -> BackboneContext:
        """Encode a prefix x [B, S, D] (mask [B, S, S], in which no token attends a later one)
        and keep every layer's keys/values.

        Exact, and cheaper than one forward: the prefix is encoded in `PREFILL_CHUNKS` causal
        chunks, each attending the keys/values cached so far plus itself, so key blocks that the
        mask hides from a whole chunk are never computed (about 5/8 of the attention work of a
        full pass for a causal mask); the last block's output is never needed by later tokens,
        only its keys/values, so its attention and output projection are skipped.
        """
        s = x.shape[1]
        if attn_mask.shape != (x.shape[0], s, s):
            raise ValueError(f"build_context: attn_mask must be [B, S, S], got {tuple(attn_mask.shape)}")
        if attn_mask.triu(1).any():
            raise ValueError("build_context: the prefix mask lets a token attend a later one")
        n_chunks = max(1, min(PREFILL_CHUNKS, s // PREFILL_MIN_CHUNK))
        context = None
        for chunk in torch.arange(s, device=x.device).tensor_split(n_chunks):
            i0, i1 = int(chunk[0]), int(chunk[-1]) + 1
            t = timestamps[:, i0:i1] if timestamps is not None else None
            context = self._extend_context(context, x[:, i0:i1], attn_mask[:, i0:i1, :i1], positions[:, i0:i1], t)
        assert context is not None
        return context

    def _extend_context(
        self,
        context: BackboneContext | None,
        x: Tensor,
        attn_mask: Tensor,
        positions: Tensor,
        timestamps: Tensor | None,
    ) -> BackboneContext:
        """Append the keys/values of x [B, T, D] (mask [B, T, S_ctx + T]) to `context`."""
        h, aux = self.prepare(x, attn_mask, positions, timestamps, context)
        keys, values = [], []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            past = (context.keys[i], context.values[i]) if context is not None else None
            if i < last:
                h, k, v = block(h, aux, past)
            else:
                k, v = block.keys_values(h, aux)
            k, v = with_past(k, v, past)
            keys.append(k)
            values.append(v)
        if context is not None:
            positions = torch.cat([context.positions, positions], dim=1)
            if timestamps is not None and context.timestamps is not None:
                timestamps = torch.cat([context.timestamps, timestamps], dim=1)
        return BackboneContext(tuple(keys), tuple(values), positions, timestamps)


def with_past(k: Tensor, v: Tensor, past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
    """Prepend cached prefix keys/values ([B, H, S_ctx, d]) to the new ones ([B, H, T, d])."""
    if past is None:
        return k, v
    return torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, T, H * d] -> [B, H, T, d]."""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, d] -> [B, T, H * d]."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class SoftmaxMask(NamedTuple):
    """A boolean mask made safe for softmax attention (see `softmax_mask`)."""

    safe: Tensor  # [B, 1, T, S] bool
    attends: Tensor  # [B, 1, T, 1] bool: the row may attend at least one key


def softmax_mask(attn_mask: Tensor) -> SoftmaxMask:
    """attn_mask [B, T, S] bool -> SoftmaxMask, computed once per forward for all layers.

    A query row that may attend nothing would softmax over all −inf (NaN); such rows get an
    all-True row for the kernel and `masked_sdpa` sets their output to 0.
    """
    attends = attn_mask.any(dim=-1, keepdim=True)
    return SoftmaxMask((attn_mask | ~attends).unsqueeze(1), attends.unsqueeze(1))


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: SoftmaxMask, dropout_p: float = 0.0) -> Tensor:
    """Softmax attention q [B, H, T, d], k/v [B, H, S, d] under `mask` -> [B, H, T, d]."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.safe, dropout_p=dropout_p)
    return out.masked_fill(~mask.attends, 0.0)
