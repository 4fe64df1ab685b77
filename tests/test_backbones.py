"""Backbones: shapes, causality, masks that really block, no NaN on empty rows, prefix cache
= one packed pass, and how each backbone uses positions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unigrf.config import ModelConfig
from unigrf.model.backbones import base, build_backbone
from unigrf.model.backbones.hstu import POSITION_BUCKETS_PER_SIDE, POSITION_EXACT, relative_position_buckets


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and kind to a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


pytestmark = pytest.mark.timeout(60)

D, MAX_POS = 16, 64
VARIANTS = {
    "hstu": dict(backbone="hstu"),
    "hstu_time": dict(backbone="hstu", time_bias=True),
    "llama": dict(backbone="llama"),
    "sasrec_pre": dict(backbone="sasrec", sasrec_norm="pre"),
    "sasrec_post": dict(backbone="sasrec", sasrec_norm="post"),
}


def make(name: str, layers: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(size="tiny", num_layers=layers, num_heads=2, dim=D, dropout=0.0, **VARIANTS[name])
    model = build_backbone(cfg, MAX_POS).eval()
    # HSTU's bias tables start at 0; give them values so tests see them act.
    for name_, p in model.named_parameters():
        if name_.endswith("_bias") and p.dim() == 2:
            torch.nn.init.normal_(p, std=0.5)
    return model


def inputs(b: int = 2, t: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, D, generator=g)
    positions = torch.arange(t).expand(b, t)
    times = torch.cumsum(torch.randint(0, 5000, (b, t), generator=g), dim=1)
    return x, positions, times


def causal(b: int, t: int) -> torch.Tensor:
    return torch.ones(t, t, dtype=torch.bool).tril().expand(b, t, t).clone()


@pytest.mark.parametrize("name", VARIANTS)
def test_shape_and_finite(name: str) -> None:
    model = make(name)
    x, pos, times = inputs(3, 7)
    out = model(x, causal(3, 7), pos, times)
    assert out.shape == (3, 7, D)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_causality(name: str) -> None:
    """Changing tokens (and timestamps) after t leaves every output <= t unchanged."""
    model = make(name)
    x, pos, times = inputs(2, 10)
    t = 4
    out = model(x, causal(2, 10), pos, times)
    x2, times2 = x.clone(), times.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    times2[:, t + 1 :] += 10**6
    out2 = model(x2, causal(2, 10), pos, times2)
    torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1], rtol=0, atol=1e-6)
    assert (out2[:, t + 1 :] - out[:, t + 1 :]).abs().max() > 1e-3  # the change did reach later tokens


def reachable(mask: torch.Tensor, layers: int) -> torch.Tensor:
    """[B, T, T]: query i can be influenced by token j through `layers` rounds of attention
    (plus the residual path i -> i)."""
    eye = torch.eye(mask.shape[1], dtype=torch.bool).expand_as(mask)
    step = mask | eye
    reach = eye.clone()
    for _ in range(layers):
        reach = (reach.float() @ step.float()) > 0
    return reach


@pytest.mark.parametrize("name", VARIANTS)
def test_mask_blocks(name: str) -> None:
    """A key masked out (directly and through every layer) cannot influence a query; a key that
    is allowed does."""
    model = make(name)
    b, t, j = 2, 9, 3
    x, pos, times = inputs(b, t)
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(b, t, t, generator=g) < 0.4
    mask |= torch.eye(t, dtype=torch.bool)
    out = model(x, mask, pos, times)
    x2 = x.clone()
    x2[:, j] = torch.randn(b, D, generator=g)  # not a constant shift: LayerNorm would remove that
    out2 = model(x2, mask, pos, times)
    diff = (out2 - out).abs().amax(dim=-1)  # [B, T]
    reach = reachable(mask, layers=2)[:, :, j]  # [B, T]
    assert (~reach).any() and reach.any()
    assert diff[~reach].max() < 1e-6
    assert diff[reach].min() > 1e-4


@pytest.mark.parametrize("name", VARIANTS)
def test_rows_that_attend_nothing_are_finite(name: str) -> None:
    model = make(name).train()  # dropout 0, but gradients on
    x, pos, times = inputs(2, 6)
    x.requires_grad_(True)
    mask = causal(2, 6)
    mask[1] = False  # a row of all padding: no query may attend anything
    mask[0, 2] = False
    out = model(x, mask, pos, times)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def packed_mask(key_valid: torch.Tensor, k: int) -> torch.Tensor:
    """Full [B, S+K, S+K] mask: prefix causal + key padding; each new token sees the valid
    prefix and itself."""
    b, s = key_valid.shape
    full = torch.zeros(b, s + k, s + k, dtype=torch.bool)
    full[:, :s, :s] = causal(b, s) & key_valid[:, None, :]
    full[:, s:, :s] = key_valid[:, None, :]
    full[:, s:, s:] = torch.eye(k, dtype=torch.bool)
    return full


@pytest.mark.parametrize("min_chunk", [32, 2])  # one prefill chunk; four chunks of 2 tokens
@pytest.mark.parametrize("name", VARIANTS)
def test_context_equals_one_packed_pass(name: str, min_chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """build_context + a K-token continuation == one pass over prefix + K packed tokens."""
    monkeypatch.setattr(base, "PREFILL_MIN_CHUNK", min_chunk)
    model = make(name)
    b, s, k = 3, 8, 4
    x, pos, times = inputs(b, s + k)
    times[:, s:] = times[:, s : s + 1]  # packed candidates share one time, as they share a position
    lengths = torch.tensor([8, 5, 2])
    key_valid = torch.arange(s)[None, :] < lengths[:, None]
    new_pos = lengths[:, None].expand(b, k).clone()  # all candidates at one position per row
    positions = torch.cat([pos[:, :s], new_pos], dim=1)
    full = model(x, packed_mask(key_valid, k), positions, times)
    prefix_mask = causal(b, s) & key_valid[:, None, :]
    last = lengths - 1
    ctx, h_last = model.build_context(x[:, :s], prefix_mask, pos[:, :s], times[:, :s], query_index=last)
    rows = torch.arange(b)
    torch.testing.assert_close(h_last, full[rows, last], rtol=1e-5, atol=1e-5)  # the prefix's own output
    cont_mask = torch.cat(
        [key_valid[:, None, :].expand(b, k, s), torch.eye(k, dtype=torch.bool).expand(b, k, k)], 2
    )
    cont = model(x[:, s:], cont_mask, new_pos, times[:, s:], context=ctx)
    torch.testing.assert_close(cont, full[:, s:], rtol=1e-5, atol=1e-5)
    assert ctx.keys[0].shape[2] == s and ctx.positions.shape == (b, s)
    # the packed fast path (one key mask and bias row per batch row, own key apart) agrees
    packed = model.forward_packed(x[:, s:], ctx, key_valid, lengths, times[:, s])
    torch.testing.assert_close(packed, full[:, s:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("min_chunk", [32, 2])  # one prefill chunk; HSTU's four chunks
@pytest.mark.parametrize("name", VARIANTS)
def test_causal_mode_equals_causal_and_padding_masks_at_real_tokens(
    name: str, min_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attn_mask=None (causal over right-padded rows) gives exactly what the explicit causal +
    key-padding mask gives at every real token, in a forward pass and in build_context."""
    monkeypatch.setattr(base, "PREFILL_MIN_CHUNK", min_chunk)
    model = make(name)
    b, t = 3, 9
    x, pos, times = inputs(b, t)
    lengths = torch.tensor([9, 6, 2])
    valid = torch.arange(t)[None, :] < lengths[:, None]
    explicit = model(x, causal(b, t) & valid[:, None, :], pos, times)
    fast = model(x, None, pos, times)
    torch.testing.assert_close(fast[valid], explicit[valid], rtol=1e-5, atol=1e-5)
    last = lengths - 1
    ctx_e, h_e = model.build_context(x, causal(b, t) & valid[:, None, :], pos, times, query_index=last)
    ctx_f, h_f = model.build_context(x, None, pos, times, query_index=last)
    torch.testing.assert_close(h_f, h_e, rtol=1e-5, atol=1e-5)
    for a, e in zip(ctx_f.keys + ctx_f.values, ctx_e.keys + ctx_e.values):
        torch.testing.assert_close(a.transpose(1, 2)[valid], e.transpose(1, 2)[valid], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot continue a context"):
        model(x[:, :2], None, pos[:, :2], times[:, :2], context=ctx_f)


@pytest.mark.parametrize("bias_batch", [1, 3])
def test_pointwise_causal_attention_gradients_equal_plain_autograd(bias_batch: int) -> None:
    """HSTU's fused chunked attention (its own backward) against the same math by autograd."""
    from unigrf.model.backbones.hstu import PointwiseCausalAttention

    g = torch.Generator().manual_seed(0)
    b, h, s, d = 3, 2, 9, 4
    q, k, v = (
        torch.randn(b, h, s, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)
    )
    causal_bias = torch.zeros(s, s, dtype=torch.float64).masked_fill(
        ~torch.ones(s, s, dtype=torch.bool).tril(), -1e30
    )
    bias = (torch.randn(bias_batch, h, s, s, generator=g, dtype=torch.float64) + causal_bias).requires_grad_(
        True
    )
    bounds = [(0, 2), (2, 5), (5, 9)]
    weights = torch.randn(b, h, s, d, generator=g, dtype=torch.float64)
    fused = (PointwiseCausalAttention.apply(q, k, v, bias, bounds) * weights).sum()
    plain = ((torch.nn.functional.silu(q @ k.transpose(2, 3) + bias) @ v) * weights).sum()
    torch.testing.assert_close(fused, plain)
    for a, e in zip(torch.autograd.grad(fused, (q, k, v, bias)), torch.autograd.grad(plain, (q, k, v, bias))):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("min_chunk", [32, 2])
@pytest.mark.parametrize("name", VARIANTS)
def test_inference_gives_what_a_training_forward_gives(
    name: str, min_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without autograd (evaluation, the enhancer's mining) the backbones may work in place (HSTU's
    SiLU on fresh scores and projections): outputs equal the grad-enabled forward's, in a full
    pass, a chunked prefill and a packed continuation; and that forward's gradients still flow."""
    monkeypatch.setattr(base, "PREFILL_MIN_CHUNK", min_chunk)
    model = make(name).eval()
    b, s, k = 3, 8, 4
    x, pos, times = inputs(b, s + k)
    lengths = torch.tensor([8, 5, 2])
    key_valid = torch.arange(s)[None, :] < lengths[:, None]
    x = x.requires_grad_(True)
    trained = model(x[:, :s], None, pos[:, :s], times[:, :s])
    ctx_t, h_t = model.build_context(x[:, :s], None, pos[:, :s], times[:, :s], query_index=lengths - 1)
    packed_t = model.forward_packed(x[:, s:], ctx_t, key_valid, lengths, times[:, s])
    (trained.sum() + packed_t.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.inference_mode():
        xi = x.detach()
        inferred = model(xi[:, :s], None, pos[:, :s], times[:, :s])
        ctx_i, h_i = model.build_context(xi[:, :s], None, pos[:, :s], times[:, :s], query_index=lengths - 1)
        packed_i = model.forward_packed(xi[:, s:], ctx_i, key_valid, lengths, times[:, s])
    valid = torch.arange(s)[None, :] < lengths[:, None]
    torch.testing.assert_close(inferred[valid], trained.detach()[valid])
    torch.testing.assert_close(h_i, h_t.detach())
    torch.testing.assert_close(packed_i, packed_t.detach())


def test_a_batch_wide_mask_broadcasts() -> None:
    """A [1, T, S] mask is the same mask for every row."""
    for name in ("hstu", "llama"):
        model = make(name)
        x, pos, times = inputs(3, 7)
        mask = causal(1, 7)
        torch.testing.assert_close(model(x, mask, pos, times), model(x, mask.expand(3, 7, 7), pos, times))


def test_context_needs_a_mask_without_lookahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "PREFILL_MIN_CHUNK", 2)  # 6 tokens -> chunks [0, 2) [2, 4) [4, 6)
    model = make("hstu")
    x, pos, times = inputs(2, 6)
    mask = causal(2, 6)
    mask[0, 1, 4] = True
    with pytest.raises(ValueError, match="later one"):
        model.build_context(x, mask, pos, times)
    mask[0, 1, 4] = False
    mask[0, 4, 5] = True  # lookahead inside a chunk is fine: that chunk's keys are all there
    ctx, none = model.build_context(x, mask, pos, times)
    assert none is None and len(ctx.keys) == 2


@pytest.mark.parametrize("name", ["hstu", "hstu_time", "llama"])
def test_relative_backbones_ignore_position_shift(name: str) -> None:
    """HSTU (relative bias) and Llama (RoPE) see only position/time differences."""
    model = make(name)
    x, pos, times = inputs(2, 8)
    out = model(x, causal(2, 8), pos, times)
    shifted = model(x, causal(2, 8), pos + 7, times + 12345)
    torch.testing.assert_close(shifted, out, rtol=1e-4, atol=1e-4)
    scrambled = model(x, causal(2, 8), pos.flip(1), times)  # distances change -> outputs change
    assert (scrambled - out).abs().max() > 1e-3


def test_sasrec_uses_absolute_positions() -> None:
    model = make("sasrec_pre")
    x, pos, times = inputs(2, 8)
    out = model(x, causal(2, 8), pos, times)
    assert (model(x, causal(2, 8), pos + 7, times) - out).abs().max() > 1e-3
    with pytest.raises(ValueError, match="max_positions"):
        model(x, causal(2, 8), pos + MAX_POS, times)


def test_hstu_time_bias_uses_timestamps() -> None:
    x, pos, times = inputs(2, 8)
    with_time, without = make("hstu_time"), make("hstu")
    spread = times * 1000
    assert (
        with_time(x, causal(2, 8), pos, spread) - with_time(x, causal(2, 8), pos, times)
    ).abs().max() > 1e-4
    torch.testing.assert_close(without(x, causal(2, 8), pos, spread), without(x, causal(2, 8), pos, times))
    with pytest.raises(ValueError, match="timestamps"):
        with_time(x, causal(2, 8), pos, None)


def test_relative_position_buckets() -> None:
    d = torch.arange(0, 400)
    b = relative_position_buckets(d, max_distance=402)
    assert torch.equal(b[:POSITION_EXACT], d[:POSITION_EXACT])  # exact for small distances
    assert (b.diff() >= 0).all() and int(b.max()) == POSITION_BUCKETS_PER_SIDE - 1
    neg = relative_position_buckets(-d[1:], max_distance=402)  # future keys: their own buckets
    assert int(neg.min()) >= POSITION_BUCKETS_PER_SIDE and int(neg.max()) < 2 * POSITION_BUCKETS_PER_SIDE


def test_mask_shape_checked_and_unknown_backbone() -> None:
    model = make("llama")
    x, pos, times = inputs(2, 5)
    with pytest.raises(ValueError, match="attn_mask"):
        model(x, causal(2, 4), pos, times)
    cfg = dataclasses.replace(ModelConfig(), backbone="gru")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        build_backbone(cfg, MAX_POS)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["hstu", "llama", "sasrec_pre"])
def test_autocast_stays_finite_and_masked(name: str, dtype: torch.dtype) -> None:
    """Under mixed precision the masked entries still contribute nothing (no -inf/NaN)."""
    model = make(name)
    x, pos, times = inputs(2, 8)
    mask = causal(2, 8)
    mask[1] = False  # a row of nothing
    with torch.autocast("cpu", dtype=dtype):
        out = model(x, mask, pos, times)
        x2 = x.clone()
        x2[:, 5:] = torch.randn(2, 3, D)
        out2 = model(x2, mask, pos, times)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out2[:, :5], out[:, :5], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["hstu", "hstu_time"])
def test_bias_gradients_repeat_bit_for_bit_on_several_threads(name: str) -> None:
    """Every (query, key) pair of a bucket adds to one bias entry: the sum must run in a fixed
    order (F.embedding's backward), or two identical backward passes on a 2-thread CPU differ in
    the last bits (advanced indexing's `index_put_(accumulate=True)` did) and training drifts."""
    torch.set_num_threads(2)  # the module's fixture restores 1 thread
    model = make(name).train()
    g = torch.Generator().manual_seed(3)
    b, t = 16, 256
    x = torch.randn(b, t, D, generator=g)
    positions = torch.arange(t).expand(b, t)
    times = torch.cumsum(torch.randint(0, 100_000, (b, t), generator=g), dim=1)
    grads = []
    for _ in range(3):
        model.zero_grad()
        model(x, None, positions, times).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if n.endswith("_bias")})
    torch.set_num_threads(1)
    assert grads[0]
    for other in grads[1:]:
        for key, grad in grads[0].items():
            assert torch.equal(other[key], grad), key
