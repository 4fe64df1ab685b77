"""What every backbone shares: the layer loop, the prefix context (a key/value cache) and a
masked softmax attention that never produces NaN.

A backbone maps token embeddings `x [B, T, D]` to hidden states `[B, T, D]` under a boolean
mask `attn_mask [B, T, S]` (True = may attend; a leading 1 broadcasts one mask over the batch)
that the caller builds: causal, key padding and packed-candidate masks alike — or
`attn_mask=None`, which means *causal over right-padded rows*: token t attends tokens 0..t.
For a right-padded row that is exactly the causal + key-padding mask at every real token
(padding only ever follows them), and it lets softmax backbones call SDPA's fused causal
kernel and HSTU share one [H, T, T] bias over the batch, instead of building [B, T, T] masks
(benchmarks/RESULTS.md "Throughput"). Outputs at padding tokens are then unspecified. Positions
and timestamps come per token, so packed tokens can share a position.

Optionally a forward pass continues an already encoded prefix: `build_context` runs the
prefix once and keeps every layer's keys/values (`BackboneContext`); `forward(..., context=ctx)`
then encodes new tokens whose mask columns are `[prefix keys (S_ctx), new keys (T)]`. The
result is exactly what one packed pass over `prefix + new tokens` gives at the new tokens (the
prefix never attends the new tokens under a causal/packed mask), at a fraction of the cost;
the ranking-driven enhancer uses it to score its candidates without re-encoding the prefix.

A block is split into `keys_values` (what later tokens need from a token) and `attend` (a
token's output given the keys/values it may see), so the prefix can be encoded layer by layer
with its queries in chunks that only read the keys their mask can reach.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PREFILL_MIN_CHUNK = 32  # tokens; shorter prefixes use fewer chunks in `build_context`


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
    """One backbone layer.

    `key_aux` / `query_aux` carry what the backbone precomputes once per pass for all layers
    (`Backbone.key_aux` / `Backbone.query_aux`: RoPE tables, mask tensors, relative-bias
    buckets).
    """

    def attn_input(self, x: Tensor) -> Tensor:
        """The (normalised) input [B, T, D] that queries, keys and values are projected from."""
        raise NotImplementedError

    def keys_values(self, h: Tensor, key_aux: object) -> tuple[Tensor, Tensor]:
        """h = attn_input(x) [B, T, D] -> keys, values [B, H, T, d_head]."""
        raise NotImplementedError

    def attend(self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, query_aux: object) -> Tensor:
        """The block's output [B, T, D] for tokens x (h = attn_input(x)) whose queries see the
        keys/values k, v [B, H, S, d_head] under `query_aux`."""
        raise NotImplementedError

    def attend_packed(
        self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, packed_aux: object
    ) -> Tensor:
        """The block's output [B, K, D] for K packed tokens x (h = attn_input(x)), each attending
        the cached prefix keys/values past_k, past_v [B, H, S, d] that `packed_aux` allows and
        itself (its own k, v [B, H, K, d]) — what `attend` gives under the packed-candidate mask,
        without building [B, K, S + K] masks or biases (see `Backbone.forward_packed`)."""
        raise NotImplementedError

    def attend_chunked(
        self, x: Tensor, h: Tensor, k: Tensor, v: Tensor, bounds: list[tuple[int, int]], aux: object
    ) -> Tensor:
        """`attend` over all S tokens with the queries of chunk [i0, i1) attending keys [0, i1)
        only (`Backbone._chunked_layers`), in one step; `aux` from `Backbone.chunked_aux`."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, key_aux: object, query_aux: object, past: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """x [B, T, D] attending `past` (cached [B, H, S_ctx, d]) then itself -> [B, T, D]."""
        h = self.attn_input(x)
        k, v = self.keys_values(h, key_aux)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        return self.attend(x, h, k, v, query_aux)

    def forward_packed(
        self, x: Tensor, key_aux: object, packed_aux: object, past: tuple[Tensor, Tensor]
    ) -> Tensor:
        h = self.attn_input(x)
        k, v = self.keys_values(h, key_aux)
        return self.attend_packed(x, h, k, v, past[0], past[1], packed_aux)


class Backbone(nn.Module):
    """The layer loop shared by all backbones; subclasses define `blocks` and may override
    `embed`, `key_aux`, `query_aux` and `finish`."""

    blocks: nn.ModuleList
    # True: learned absolute positions, which the model counts back from the row's last item
    # slot (UniGRF._positions); False: positions enter only through their differences.
    recency_positions: bool = False
    # Query chunks per layer in `build_context`: each chunk's attention reads only the keys up
    # to its end. It pays for attention that computes every (query, key) pair (HSTU); a fused
    # causal softmax kernel skips the masked blocks by itself, so softmax backbones use 1.
    prefill_chunks: int = 1

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        """Before the first block (e.g. add absolute position embeddings)."""
        return x

    def key_aux(self, positions: Tensor, timestamps: Tensor | None) -> object:
        """What `keys_values` needs for tokens at `positions` [B, T] (e.g. RoPE tables)."""
        return None

    def query_aux(
        self,
        attn_mask: Tensor | None,
        positions: Tensor,
        timestamps: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        dtype: torch.dtype,
    ) -> object:
        """What `attend` needs for queries at `positions` [B, T] over keys at `key_positions`
        [B, S] under attn_mask [B or 1, T, S] (None: causal, T = S)."""
        raise NotImplementedError

    def packed_aux(
        self,
        key_valid: Tensor,
        position: Tensor,
        time: Tensor | None,
        key_positions: Tensor,
        key_timestamps: Tensor | None,
        num_tokens: int,
        dtype: torch.dtype,
    ) -> object:
        """What `attend_packed` needs: `num_tokens` packed tokens of row b at `position[b]`
        (time `time[b]`) over prefix keys at key_positions [B, S] of which key_valid [B, S]
        may be attended."""
        raise NotImplementedError

    def finish(self, x: Tensor) -> Tensor:
        """After the last block (e.g. a final norm)."""
        return x

    def forward_packed(
        self,
        x: Tensor,
        context: BackboneContext,
        key_valid: Tensor,
        position: Tensor,
        time: Tensor | None = None,
    ) -> Tensor:
        """K packed tokens x [B, K, D] after an encoded prefix: every token of row b sits at
        position[b] (time time[b]) and attends the prefix keys where key_valid [B, S] and
        itself only -> [B, K, D].

        Equal to `forward(x, mask, ...)` with the packed-candidate mask
        `[key_valid | eye(K)]` and `context` (tests/test_backbones.py checks it). HSTU computes
        it without any [B, K, S + K] tensor: the prefix part of every token's attention shares
        one relative-bias row per batch row, and its own key is a separate [B, H, K] term
        (no [B, H, K, S + K] bias to build); softmax backbones build the mask once per
        pass for SDPA's fused kernel. The ranking-driven enhancer and the evaluation's cascade
        score their candidates this way."""
        b, k, _ = x.shape
        positions = position[:, None].expand(b, k)
        times = time[:, None].expand(b, k) if time is not None else None
        h = self.embed(x, positions)
        k_aux = self.key_aux(positions, times)
        p_aux = self.packed_aux(key_valid, position, time, context.positions, context.timestamps, k, x.dtype)
        for i, block in enumerate(self.blocks):
            h = block.forward_packed(h, k_aux, p_aux, (context.keys[i], context.values[i]))
        return self.finish(h)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        positions: Tensor,
        timestamps: Tensor | None = None,
        context: BackboneContext | None = None,
    ) -> Tensor:
        """x [B, T, D], attn_mask [B or 1, T, S] bool (True = may attend; S = T, or S_ctx + T
        with a context; None: causal over right-padded rows, no context), positions [B, T]
        long, timestamps [B, T] long | None -> [B, T, D]."""
        expected = x.shape[1] + (context.positions.shape[1] if context is not None else 0)
        if attn_mask is None:
            if context is not None:
                raise ValueError("attn_mask=None (causal) cannot continue a context: pass the mask")
        elif attn_mask.dtype != torch.bool or attn_mask.shape not in (
            (x.shape[0], x.shape[1], expected),
            (1, x.shape[1], expected),
        ):
            raise ValueError(
                f"attn_mask must be bool [B or 1, T, S] = {(x.shape[0], x.shape[1], expected)}, "
                f"got {attn_mask.dtype} {tuple(attn_mask.shape)}"
            )
        if attn_mask is None and self._chunks(x.shape[1]) > 1:
            h, _, _ = self._chunked_layers(x, None, positions, timestamps, keep_last=True)
            return self.finish(h)
        key_pos, key_t = positions, timestamps
        if context is not None:
            key_pos = torch.cat([context.positions, positions], dim=1)
            key_t = None
            if timestamps is not None and context.timestamps is not None:
                key_t = torch.cat([context.timestamps, timestamps], dim=1)
        h = self.embed(x, positions)
        k_aux = self.key_aux(positions, timestamps)
        q_aux = self.query_aux(attn_mask, positions, timestamps, key_pos, key_t, x.dtype)
        for i, block in enumerate(self.blocks):
            past = (context.keys[i], context.values[i]) if context is not None else None
            h = block(h, k_aux, q_aux, past)
        return self.finish(h)

    def _chunks(self, s: int) -> int:
        return max(1, min(self.prefill_chunks, s // PREFILL_MIN_CHUNK))

    def _chunked_layers(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        positions: Tensor,
        timestamps: Tensor | None,
        keep_last: bool,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The layer loop with queries in `_chunks(S)` causal chunks, each attending only the
        keys up to its own end (exact under a mask without lookahead; None = causal).

        -> (hidden [B, S, D] before `finish`, per-layer keys, values [B, H, S, d]). Without
        `keep_last` the last block's attention is skipped (its keys/values are all a cache
        needs) and the hidden state returned is the last block's input."""
        b, s, _ = x.shape
        n_chunks = self._chunks(s)
        bounds = [(int(c[0]), int(c[-1]) + 1) for c in torch.arange(s).tensor_split(n_chunks)]
        if attn_mask is None and n_chunks > 1:  # offset chunks need their slice of the causal mask
            attn_mask = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()[None]
        if attn_mask is not None and any(attn_mask[:, i0:i1, i1:].any() for i0, i1 in bounds[:-1]):
            raise ValueError("build_context: the prefix mask lets a token attend a later one")

        def part(t: Tensor | None, i0: int, i1: int) -> Tensor | None:
            return t[:, i0:i1] if t is not None else None

        chunk_aux = [
            self.query_aux(
                attn_mask[:, i0:i1, :i1] if attn_mask is not None else None,
                positions[:, i0:i1],
                part(timestamps, i0, i1),
                positions[:, :i1],
                part(timestamps, 0, i1),
                x.dtype,
            )
            for i0, i1 in bounds
        ]
        full_aux = self.chunked_aux(attn_mask, positions, timestamps, x.dtype) if n_chunks > 1 else None
        h = self.embed(x, positions)
        k_aux = self.key_aux(positions, timestamps)
        keys, values = [], []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            hn = block.attn_input(h)
            k, v = block.keys_values(hn, k_aux)
            keys.append(k)
            values.append(v)
            if i < last or keep_last:
                if full_aux is not None:  # the block runs all chunks in one fused function
                    h = block.attend_chunked(h, hn, k, v, bounds, full_aux)
                    continue
                outs = [
                    block.attend(h[:, i0:i1], hn[:, i0:i1], k[:, :, :i1], v[:, :, :i1], aux)
                    for (i0, i1), aux in zip(bounds, chunk_aux)
                ]
                h = torch.cat(outs, dim=1)
        return h, keys, values

    def chunked_aux(
        self, attn_mask: Tensor, positions: Tensor, timestamps: Tensor | None, dtype: torch.dtype
    ) -> object | None:
        """A backbone whose blocks implement `attend_chunked` returns the whole pass's query aux
        here (S queries over S keys under `attn_mask`); None: chunk by chunk with `attend`."""
        return None

    def build_context(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        positions: Tensor,
        timestamps: Tensor | None = None,
        query_index: Tensor | None = None,
    ) -> tuple[BackboneContext, Tensor | None]:
        """Encode a prefix x [B, S, D] under attn_mask [B or 1, S, S] (None: causal over
        right-padded rows) and keep every layer's keys/values; with query_index [B] also return
        the final output [B, D] at that token of each row (what `forward` would give there).

        Exact, and cheaper than a forward pass: layer by layer, all keys/values are projected
        at once and the queries are processed in `prefill_chunks` chunks, each reading only the
        keys up to its own end, so under a causal mask about 5/8 of the attention work is done
        (HSTU; softmax backbones take one chunk and SDPA's causal kernel); the last block's
        attention runs only for the `query_index` tokens, since later tokens need only its
        keys/values. The mask must not let a token attend a later chunk (a causal mask never
        does); this is checked.
        """
        b, s, _ = x.shape
        if attn_mask is not None and attn_mask.shape not in ((b, s, s), (1, s, s)):
            raise ValueError(f"build_context: attn_mask must be [B or 1, S, S], got {tuple(attn_mask.shape)}")
        h, keys, values = self._chunked_layers(x, attn_mask, positions, timestamps, keep_last=False)
        context = BackboneContext(tuple(keys), tuple(values), positions, timestamps)
        if query_index is None:
            return context, None
        rows = torch.arange(b, device=x.device)
        q_t = timestamps[rows, query_index][:, None] if timestamps is not None else None
        if attn_mask is None:  # the query token attends itself and every token before it
            query_mask = torch.arange(s, device=x.device)[None, :] <= query_index[:, None]
        else:
            query_mask = attn_mask.expand(b, s, s)[rows, query_index]
        aux = self.query_aux(
            query_mask[:, None], positions[rows, query_index][:, None], q_t, positions, timestamps, x.dtype
        )
        hq = h[rows, query_index][:, None]
        last = self.blocks[-1]
        out = last.attend(hq, last.attn_input(hq), keys[-1], values[-1], aux)
        return context, self.finish(out)[:, 0]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, T, H * d] -> [B, H, T, d]."""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, d] -> [B, T, H * d]."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class SoftmaxMask(NamedTuple):
    """A mask made safe for softmax attention (see `softmax_mask`); bias None: causal."""

    bias: Tensor | None  # [B or 1, 1, T, S] additive: 0 where a query may attend a key, −inf elsewhere
    empty_rows: Tensor | None  # [B, 1, T, 1] bool: rows that may attend nothing (None: no such row)


def softmax_mask(attn_mask: Tensor | None, dtype: torch.dtype) -> SoftmaxMask:
    """attn_mask [B or 1, T, S] bool (None: causal) -> SoftmaxMask, once per pass for all layers.

    An additive float mask: SDPA's CPU kernel takes it faster than a boolean one
    (benchmarks/RESULTS.md, "Throughput"). A query row that may attend nothing
    would softmax over all −inf (NaN); such rows attend every key instead and `masked_sdpa`
    sets their output to 0. Causal (None) needs no tensor: SDPA's fused causal kernel.
    """
    if attn_mask is None:
        return SoftmaxMask(None, None)
    empty = ~attn_mask.any(dim=-1, keepdim=True)
    empty_rows = empty.unsqueeze(1) if empty.any() else None
    allowed = attn_mask | empty if empty_rows is not None else attn_mask
    bias = torch.zeros(allowed.shape, dtype=dtype, device=attn_mask.device).masked_fill_(
        ~allowed, float("-inf")
    )
    return SoftmaxMask(bias.unsqueeze(1), empty_rows)


def packed_softmax_mask(key_valid: Tensor, k: int, dtype: torch.dtype) -> SoftmaxMask:
    """The packed-candidate mask of K tokens after a prefix with key_valid [B, S]: each token
    attends the valid prefix keys and itself -> SoftmaxMask over [B, K, S + K], so the
    continuation runs in SDPA's fused kernel rather than a hand-written two-part softmax."""
    b = key_valid.shape[0]
    own = torch.eye(k, dtype=torch.bool, device=key_valid.device).expand(b, k, k)
    return softmax_mask(torch.cat([key_valid[:, None, :].expand(b, k, -1), own], dim=2), dtype)


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: SoftmaxMask, dropout_p: float = 0.0) -> Tensor:
    """Softmax attention q [B, H, T, d], k/v [B, H, S, d] under `mask` -> [B, H, T, d]."""
    if mask.bias is None:  # causal over right-padded rows, T = S
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bias, dropout_p=dropout_p)
    return out if mask.empty_rows is None else out.masked_fill(mask.empty_rows, 0.0)
