"""HSTU: Hierarchical Sequential Transduction Units ("Actions Speak Louder than Words",
Zhai et al., ICML 2024), dense-tensor form.

One block, for input X [B, T, D] (H heads, d = D / H):

    U, V, Q, K = split(SiLU(W1 · LayerNorm(X) + b1))                  (one linear, 4·D wide)
    A          = SiLU(Q Kᵀ + rab) ⊙ mask / T_norm                     (pointwise, no softmax)
    Y          = X + W2 · Dropout(LayerNorm(A V) ⊙ U) + b2

`rab` is a learned per-head bias over bucketed relative positions (exact up to 16, then
log-spaced up to `max_positions`; past and future distances get separate buckets) plus,
with `ModelConfig.time_bias`, a learned per-head bias over bucketed log time differences
(bucket = ⌊ln(max(|t_q − t_k|, 1)) / 0.301⌋, the reference implementation's bucketing, applied
to the tokens' own timestamps — the item and feedback tokens of an interaction share its time;
the reference shifts each query to the next interaction's time instead). Each block has its
own bias tables; the bucket indices are computed once per pass. Masked entries get a huge negative score, so SiLU is exactly 0 there.

Normalisation T_norm: the fixed `max_positions`, not the number of attended tokens. The
reference implementation divides by the padded sequence length, which is a constant there
because every batch is padded to the maximum length; a constant keeps the intensity signal of
pointwise attention (a user with many related actions produces a larger A V than one with
few, which a per-row count would average away) and makes outputs independent of how much
right padding or how many packed candidates a batch carries. Since LayerNorm(A V) follows, the
constant only sets the numeric range relative to LayerNorm's eps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigrf.config import ModelConfig
from unigrf.kernels import Dropout, silu_fresh
from unigrf.model.backbones.base import Backbone, Block, merge_heads, split_heads

POSITION_BUCKETS_PER_SIDE = 32  # buckets for distances >= 0 (past and self); as many for < 0
POSITION_EXACT = 16  # distances below this get their own bucket
TIME_BUCKETS = 128
TIME_BUCKET_DIVISOR = 0.301  # ln-seconds per time bucket (the reference implementation's)


def relative_position_buckets(delta: Tensor, max_distance: int) -> Tensor:
    """delta = query position − key position (any shape, long) -> bucket ids in
    [0, 2 · POSITION_BUCKETS_PER_SIDE)."""
    n = delta.abs()
    span = max(max_distance, 2 * POSITION_EXACT) / POSITION_EXACT
    log_part = torch.log(n.clamp(min=1).float() / POSITION_EXACT) / math.log(span)
    far = POSITION_EXACT + (log_part * (POSITION_BUCKETS_PER_SIDE - POSITION_EXACT)).long()
    far = far.clamp(max=POSITION_BUCKETS_PER_SIDE - 1)
    bucket = torch.where(n < POSITION_EXACT, n, far)
    return bucket + (delta < 0).long() * POSITION_BUCKETS_PER_SIDE


def time_buckets(delta: Tensor) -> Tensor:
    """delta = query time − key time (long, seconds or any unit) -> bucket ids in [0, TIME_BUCKETS)."""
    b = (torch.log(delta.abs().clamp(min=1).float()) / TIME_BUCKET_DIVISOR).long()
    return b.clamp(min=0, max=TIME_BUCKETS - 1)


def _rows_identical(t: Tensor) -> bool:
    return t.shape[0] == 1 or bool((t == t[:1]).all())


class HSTUAux(NamedTuple):
    """Per-pass tensors shared by all blocks (b = 1 when every row has the same positions, or
    one mask serves the whole batch, as the causal one does)."""

    position_bucket: Tensor  # [b, T, S] long
    time_bucket: Tensor | None  # [B, T, S] long
    mask_bias: Tensor  # [b, 1, T, S]: 0 where a query may attend a key, masked_value elsewhere


def masked_value(dtype: torch.dtype, device_type: str) -> float:
    """A score offset that makes SiLU exactly 0 (and its gradient exactly 0) at masked entries
    while staying finite in the dtype the scores are computed in (autocast's, if on):
    SiLU(v) = v·σ(v) with σ(v) = 0 in floating point."""
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    return torch.finfo(dtype).min / 4


class HSTUPackedAux(NamedTuple):
    """Per-pass tensors of packed tokens (see `Backbone.forward_packed`): every token of row b
    sits at one position, so its relative bias to the prefix keys is one row per batch row."""

    position_bucket: Tensor  # [B, 1, S] long: bucket(position[b] − key position)
    time_bucket: Tensor | None  # [B, 1, S] long
    mask_bias: Tensor  # [B, 1, 1, S]: 0 for a prefix key that may be attended, masked_value else


class PointwiseCausalAttention(torch.autograd.Function):
    """o = SiLU(Q Kᵀ + bias) V with queries in causal chunks: chunk [i0, i1) reads keys [0, i1).

    q, k, v [B, H, S, d]; bias [b, H, S, S] (b = 1: one bias for the batch; masked entries at
    `masked_value`, so SiLU and its gradient are exactly 0 there); bounds: the chunks. The
    backward writes each chunk's gradient into preallocated dq/dk/dv/dbias instead of letting
    autograd zero-fill and add a full-size tensor for every sliced key block, and it stores
    only the per-chunk scores. Equal to the plain autograd computation (tests/test_backbones.py).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, bounds: list[tuple[int, int]]) -> Tensor:
        out = torch.empty_like(q)
        scores = []
        keep = any(ctx.needs_input_grad[:4])  # else (evaluation, mining): SiLU in place, nothing kept
        for i0, i1 in bounds:
            s = torch.matmul(q[:, :, i0:i1], k[:, :, :i1].transpose(2, 3)).add_(bias[:, :, i0:i1, :i1])
            out[:, :, i0:i1] = torch.matmul(F.silu(s, inplace=not keep), v[:, :, :i1])
            if keep:
                scores.append(s)
        ctx.save_for_backward(q, k, v, *scores)
        ctx.bounds, ctx.bias_shape, ctx.bias_dtype = bounds, bias.shape, bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, *scores = ctx.saved_tensors
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dbias = torch.zeros(ctx.bias_shape, dtype=ctx.bias_dtype, device=q.device)
        # under autocast the forward computed in a lower precision: the backward's matmuls run in
        # that dtype too (the scores' dtype); gradients accumulate in the inputs' dtypes
        compute = scores[0].dtype
        q, k, v = q.to(compute), k.to(compute), v.to(compute)
        for (i0, i1), s in zip(ctx.bounds, scores):
            g = grad_out[:, :, i0:i1].to(compute)
            dv[:, :, :i1] += torch.matmul(F.silu(s).transpose(2, 3), g)
            ds = torch.ops.aten.silu_backward(torch.matmul(g, v[:, :, :i1].transpose(2, 3)), s)  # fused SiLU'
            dq[:, :, i0:i1] = torch.matmul(ds, k[:, :, :i1])
            dk[:, :, :i1] += torch.matmul(ds.transpose(2, 3), q[:, :, i0:i1])
            dbias[:, :, i0:i1, :i1] = ds.sum(dim=0, keepdim=True) if ctx.bias_shape[0] == 1 else ds
        return dq, dk, dv, dbias, None


class HSTUBlock(Block):
    def __init__(self, dim: int, heads: int, dropout: float, norm_len: int, time_bias: bool) -> None:
        super().__init__()
        self.dim, self.heads, self.norm_len = dim, heads, float(norm_len)
        self.norm = nn.LayerNorm(dim)
        self.uvqk = nn.Linear(dim, 4 * dim)  # rows: U, Q (for a token's own output) | V, K (for others)
        self.attn_norm = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(dim, dim)
        self.position_bias = nn.Parameter(torch.zeros(heads, 2 * POSITION_BUCKETS_PER_SIDE))
        self.time_bias = nn.Parameter(torch.zeros(heads, TIME_BUCKETS)) if time_bias else None

    def _project(self, h: Tensor, half: int) -> tuple[Tensor, Tensor]:
        """SiLU of one half of the U, Q | V, K projection: half 0 -> (U, Q), 1 -> (V, K)."""
        rows = slice(half * 2 * self.dim, (half + 1) * 2 * self.dim)
        a, b = silu_fresh(F.linear(h, self.uvqk.weight[rows], self.uvqk.bias[rows])).split(self.dim, dim=-1)
        return a, b

    def _bias(self, aux: HSTUAux) -> Tensor:
        """[b, H, T, S]: relative attention bias + mask bias (b = 1 or B, see HSTUAux)."""

        def gather(table: Tensor, bucket: Tensor) -> Tensor:  # [H, n] x [b, T, S] -> [b, H, T, S]
            # index_select, not table[:, bucket]: its backward (index_add) sums a bucket's many
            # gradients in a fixed order; advanced indexing's does not on a multi-threaded CPU
            # (see retrieval_losses.rows_of). Same [H, b, T, S] layout as the indexing gave.
            return table.index_select(1, bucket.flatten()).view(table.shape[0], *bucket.shape).transpose(0, 1)

        bias = gather(self.position_bias, aux.position_bucket)
        if self.time_bias is not None and aux.time_bucket is not None:
            bias = bias + gather(self.time_bias, aux.time_bucket)
        return bias + aux.mask_bias

    def attn_input(self, x: Tensor) -> Tensor:
        return self.norm(x)

    def keys_values(self, h: Tensor, key_aux: object) -> tuple[Tensor, Tensor]:
        v, k = self._project(h, 1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def attend(self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, query_aux: object) -> Tensor:
        assert isinstance(query_aux, HSTUAux)
        u, q = self._project(h, 0)
        q = split_heads(q, self.heads)
        b, heads, t, d = q.shape
        s = k.shape[2]
        bias = self._bias(query_aux)  # [b, H, T, S], b = 1 for the causal and shared-mask cases
        # scores = Q Kᵀ + bias; masked entries sit at a huge negative value so SiLU gives
        # exactly 0 there: no separate masking pass. A batch-wide bias is added by broadcasting
        # (baddbmm would first copy it to [B, H, T, S]).
        if bias.shape[0] == b:
            scores = torch.baddbmm(
                bias.reshape(b * heads, t, s),
                q.reshape(b * heads, t, d),
                k.reshape(b * heads, s, d).transpose(1, 2),
            )
        else:
            scores = torch.matmul(q, k.transpose(2, 3)).add_(bias).view(b * heads, t, s)
        o = torch.bmm(silu_fresh(scores), v.reshape(b * heads, s, d)).view(b, heads, t, d)
        return self._rest(x, o, u)

    def attend_chunked(
        self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, bounds: list[tuple[int, int]], aux: object
    ) -> Tensor:
        assert isinstance(aux, HSTUAux)
        u, q = self._project(h, 0)
        q = split_heads(q, self.heads).contiguous()
        o = PointwiseCausalAttention.apply(q, k.contiguous(), v.contiguous(), self._bias(aux), bounds)
        return self._rest(x, o, u)

    def attend_packed(
        self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, packed_aux: object
    ) -> Tensor:
        assert isinstance(packed_aux, HSTUPackedAux)
        u, q = self._project(h, 0)
        q = split_heads(q, self.heads)  # [B, H, K, d]
        bias = self.position_bias[:, packed_aux.position_bucket].transpose(0, 1)  # [B, H, 1, S]
        own_bias = self.position_bias[:, 0]  # distance 0 (and time difference 0): bucket 0
        if self.time_bias is not None and packed_aux.time_bucket is not None:
            bias = bias + self.time_bias[:, packed_aux.time_bucket].transpose(0, 1)
            own_bias = own_bias + self.time_bias[:, 0]
        scores = torch.matmul(q, past_k.transpose(2, 3)).add_(bias + packed_aux.mask_bias)  # [B, H, K, S]
        own = F.silu((q * k).sum(-1, keepdim=True) + own_bias[None, :, None, None])  # [B, H, K, 1]
        return self._rest(x, torch.matmul(silu_fresh(scores), past_v) + own * v, u)

    def _rest(self, x: Tensor, o: Tensor, u: Tensor) -> Tensor:
        """The block after attention (o [B, H, T, d]): normalisation, U gate, projection, residual."""
        o = merge_heads(o) / self.norm_len
        return x + self.out(self.dropout(self.attn_norm(o) * u))


class HSTU(Backbone):
    prefill_chunks = (
        8  # pointwise attention computes every (query, key) pair: chunks skip most of the masked half
    )

    def __init__(self, cfg: ModelConfig, max_positions: int) -> None:
        super().__init__()
        layers, heads, dim = cfg.resolved_shape()
        self.max_positions = max_positions
        self.time_bias = cfg.time_bias
        self.blocks = nn.ModuleList(
            HSTUBlock(dim, heads, cfg.dropout, max_positions, cfg.time_bias) for _ in range(layers)
        )

    def query_aux(
        self,
        attn_mask: Tensor | None,
        positions: Tensor,
        timestamps: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        dtype: torch.dtype,
    ) -> HSTUAux:
        q_pos, key_pos = positions, key_positions
        if _rows_identical(q_pos) and _rows_identical(key_pos):  # the usual case: compute once
            q_pos, key_pos = q_pos[:1], key_pos[:1]
        pos_bucket = relative_position_buckets(q_pos[:, :, None] - key_pos[:, None, :], self.max_positions)
        time_bucket = None
        if self.time_bias:
            if timestamps is None or key_timestamps is None:
                raise ValueError("model.time_bias is on: the HSTU backbone needs timestamps")
            time_bucket = time_buckets(timestamps[:, :, None] - key_timestamps[:, None, :])
        if attn_mask is None:  # causal: one [T, T] mask for the whole batch
            t = positions.shape[1]
            attn_mask = torch.ones(1, t, t, dtype=torch.bool, device=positions.device).tril()
        mask_bias = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device)
        mask_bias.masked_fill_(~attn_mask, masked_value(dtype, attn_mask.device.type))
        return HSTUAux(pos_bucket, time_bucket, mask_bias.unsqueeze(1))

    def chunked_aux(
        self, attn_mask: Tensor, positions: Tensor, timestamps: Tensor | None, dtype: torch.dtype
    ) -> HSTUAux:
        return self.query_aux(attn_mask, positions, timestamps, positions, timestamps, dtype)

    def packed_aux(
        self,
        key_valid: Tensor,
        position: Tensor,
        time: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        num_tokens: int,
        dtype: torch.dtype,
    ) -> HSTUPackedAux:
        pos_bucket = relative_position_buckets(
            position[:, None, None] - key_positions[:, None, :], self.max_positions
        )
        time_bucket = None
        if self.time_bias:
            if time is None or key_timestamps is None:
                raise ValueError("model.time_bias is on: the HSTU backbone needs timestamps")
            time_bucket = time_buckets(time[:, None, None] - key_timestamps[:, None, :])
        mask_bias = torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device)
        mask_bias.masked_fill_(~key_valid, masked_value(dtype, key_valid.device.type))
        return HSTUPackedAux(pos_bucket, time_bucket, mask_bias[:, None, None, :])
