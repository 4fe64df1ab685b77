"""Every retrieval loss against a direct reference computation on a small case
(unigrf/model/retrieval_losses.py)."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unigrf.config import LossConfig
from unigrf.model.retrieval_losses import (
    RetrievalLoss,
    bce_with_negatives,
    gbce_beta,
    logsumexp_over_items,
    softmax_with_negatives,
)

pytestmark = pytest.mark.timeout(120)

NUM_ITEMS, DIM, POSITIONS = 30, 8, 12


@pytest.fixture
def case() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(NUM_ITEMS + 1, DIM, generator=g, dtype=torch.float64)
    table[0] = 0.0
    return {
        "q": torch.randn(POSITIONS, DIM, generator=g, dtype=torch.float64, requires_grad=True),
        "table": table.requires_grad_(True),
        "positives": torch.randint(1, NUM_ITEMS + 1, (POSITIONS,), generator=g),
        "rows": torch.arange(POSITIONS) // 4,  # 3 batch rows of 4 positions
    }


def full_softmax_reference(q, table, positives, tau):
    """Cross-entropy over items 1..I, written the plain way."""
    logits = q @ table[1:].T / tau
    return F.cross_entropy(logits, positives - 1)


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


# ------------------------------------------------------------------------------------------
# the building blocks
# ------------------------------------------------------------------------------------------


def test_softmax_with_negatives_hand_computed_and_collisions_masked() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[1.0, 0.5], [0.0, -1.0]])
    ids = torch.tensor([[5, 6], [7, 8]])
    positives = torch.tensor([3, 4])
    row0 = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(1.0) + np.exp(0.5)))
    row1 = -np.log(1.0 / (1.0 + 1.0 + np.exp(-1.0)))
    expected = torch.tensor((row0 + row1) / 2, dtype=torch.float32)
    loss = softmax_with_negatives(pos, neg, ids, positives)
    torch.testing.assert_close(loss, expected)
    # a negative equal to the positive, and an empty slot (id 0), change nothing
    neg2 = torch.cat([neg, torch.tensor([[9.0, 1.0], [3.0, 5.0]])], dim=1)
    ids2 = torch.cat([ids, torch.tensor([[3, 0], [4, 0]])], dim=1)
    torch.testing.assert_close(softmax_with_negatives(pos, neg2, ids2, positives), loss)
    # while a real negative at that logit does
    ids3 = torch.cat([ids, torch.tensor([[9, 10], [11, 12]])], dim=1)
    assert softmax_with_negatives(pos, neg2, ids3, positives) > loss + 1.0


def test_bce_with_negatives_hand_computed() -> None:
    pos = torch.tensor([1.5, -0.5])
    neg = torch.tensor([[0.3, 2.0], [-1.0, 0.7]])
    ids = torch.tensor([[5, 3], [6, 0]])  # row 0's second negative is its positive; row 1's is empty
    positives = torch.tensor([3, 4])

    def sig(x):
        return 1.0 / (1.0 + math.exp(-x))

    row0 = -math.log(sig(1.5)) - math.log(1 - sig(0.3))
    row1 = -math.log(sig(-0.5)) - math.log(1 - sig(-1.0))
    torch.testing.assert_close(bce_with_negatives(pos, neg, ids, positives), torch.tensor((row0 + row1) / 2))
    beta = 0.25
    row0b = -beta * math.log(sig(1.5)) - math.log(1 - sig(0.3))
    row1b = -beta * math.log(sig(-0.5)) - math.log(1 - sig(-1.0))
    torch.testing.assert_close(
        bce_with_negatives(pos, neg, ids, positives, beta), torch.tensor((row0b + row1b) / 2)
    )


def test_gbce_beta_matches_gsasrec() -> None:
    # beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = k / (I - 1): t = 0 is plain BCE, t = 1 gives alpha
    assert gbce_beta(256, 1001, 0.0) == pytest.approx(1.0)
    assert gbce_beta(256, 1001, 1.0) == pytest.approx(256 / 1000)
    alpha = 256 / 1000
    assert gbce_beta(256, 1001, 0.75) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))


@pytest.mark.parametrize("max_elements", [10**9, 7, 1])
def test_chunked_logsumexp_equals_the_direct_one_with_gradients(case, max_elements) -> None:
    q, table = case["q"], case["table"]
    items = table[1:]
    direct = torch.logsumexp(q @ items.T / 0.3, dim=1)
    chunked = logsumexp_over_items(q, items, 0.3, max_elements=max_elements * POSITIONS)
    torch.testing.assert_close(chunked, direct)
    weights = torch.linspace(0.5, 2.0, POSITIONS, dtype=torch.float64)  # a non-uniform upstream gradient
    for got, want in zip(
        grads((chunked * weights).sum(), q, table), grads((direct * weights).sum(), q, table)
    ):
        torch.testing.assert_close(got, want)


def test_chunked_logsumexp_passes_gradcheck(case) -> None:
    from unigrf.model.retrieval_losses import ChunkedLogSumExp

    q = case["q"].detach()[:3].requires_grad_(True)
    items = case["table"].detach()[1:7].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ChunkedLogSumExp.apply(a, b, 0.5, 2), (q, items))


def test_in_place_logsumexp_is_autograds_in_fp32() -> None:
    """The full softmax's log-sum-exp done in place gives exactly the bits of autograd's
    `logsumexp((q @ items.T) / tau)` forward, and both gradients to fp32 rounding (its
    backward's softmax is e / s from the forward, autograd's exp(logit − lse))."""
    from unigrf.model.retrieval_losses import InPlaceLogSumExp

    g = torch.Generator().manual_seed(1)
    q0, items0 = torch.randn(300, 16, generator=g), torch.randn(97, 16, generator=g) * 0.5
    upstream = torch.rand(300, generator=g)
    results = []
    for fn in (
        lambda q, t: torch.logsumexp((q @ t.T) / 0.2, dim=1),
        lambda q, t: InPlaceLogSumExp.apply(q, t, 0.2),
    ):
        q, items = q0.clone().requires_grad_(True), items0.clone().requires_grad_(True)
        out = fn(q, items)
        results.append((out.detach(), *grads((out * upstream).sum(), q, items)))
    assert torch.equal(results[1][0], results[0][0])
    for got, want in zip(results[1][1:], results[0][1:], strict=True):
        # sums over 300 positions of fp32 products: a few ulps of the largest term apart
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)
        assert not torch.equal(got, torch.zeros_like(got))


def test_in_place_logsumexp_passes_gradcheck(case) -> None:
    from unigrf.model.retrieval_losses import InPlaceLogSumExp

    q = case["q"].detach()[:3].requires_grad_(True)
    items = case["table"].detach()[1:7].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: InPlaceLogSumExp.apply(a, b, 0.5), (q, items))


def test_in_place_logsumexp_under_bf16_autocast_follows_autograds_path() -> None:
    """Under autocast the matmuls run in bf16 (forward and backward, as autograd's would) and
    the log-sum-exp in fp32: results and gradients agree with autograd's path to bf16 rounding."""
    from unigrf.model.retrieval_losses import InPlaceLogSumExp, _wide

    g = torch.Generator().manual_seed(2)
    q0, items0 = torch.randn(64, 16, generator=g), torch.randn(40, 16, generator=g) * 0.5
    results = []
    for fn in (
        lambda q, t: torch.logsumexp(_wide(q @ t.T) / 0.5, dim=1),
        lambda q, t: InPlaceLogSumExp.apply(q, t, 0.5),
    ):
        q, items = q0.clone().requires_grad_(True), items0.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(q, items)
        assert out.dtype == torch.float32
        results.append((out.detach(), *grads(out.sum(), q, items)))
    for got, want in zip(results[1], results[0]):
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------------------------
# RetrievalLoss, by config
# ------------------------------------------------------------------------------------------


def test_full_softmax_equals_cross_entropy_over_the_catalogue(case) -> None:
    loss_fn = RetrievalLoss(LossConfig(retrieval="full_softmax", temperature=0.5), NUM_ITEMS)
    q, table, positives = case["q"], case["table"], case["positives"]
    want = full_softmax_reference(q, table, positives, 0.5)
    want_grads = grads(want, q, table)
    got = loss_fn(q, positives, table)
    torch.testing.assert_close(got, want)
    for a, b in zip(grads(got, q, table), want_grads):
        torch.testing.assert_close(a, b)
    # the chunked path gives the same loss and gradients
    chunked_cfg = LossConfig(retrieval="full_softmax", temperature=0.5, chunk_logits=5 * POSITIONS)
    chunked = RetrievalLoss(chunked_cfg, NUM_ITEMS)(q, positives, table)
    torch.testing.assert_close(chunked, want)
    for a, b in zip(grads(chunked, q, table), want_grads):
        torch.testing.assert_close(a, b)


def test_full_softmax_hard_negatives_count_twice(case) -> None:
    loss_fn = RetrievalLoss(LossConfig(retrieval="full_softmax", temperature=1.0), NUM_ITEMS)
    q, table, positives = case["q"], case["table"], case["positives"]
    base = loss_fn(q, positives, table)
    # a hard negative equal to the positive, or 0, changes nothing
    same = torch.stack([positives, torch.zeros_like(positives)], dim=1)
    torch.testing.assert_close(loss_fn(q, positives, table, hard=same), base)
    # a real hard negative is one more copy of its logit in every position's denominator
    hard = (positives % NUM_ITEMS + 1)[:, None]
    logits = q @ table.T
    lse = torch.logsumexp(torch.cat([logits[:, 1:], logits.gather(1, hard)], dim=1), dim=1)
    want = (lse - logits.gather(1, positives[:, None])[:, 0]).mean()
    torch.testing.assert_close(loss_fn(q, positives, table, hard=hard), want)


def test_sampled_softmax_with_every_item_as_negative_equals_the_full_softmax(case) -> None:
    cfg = LossConfig(retrieval="sampled_softmax", sampler="uniform", num_negatives=NUM_ITEMS, temperature=0.5)
    loss_fn = RetrievalLoss(cfg, NUM_ITEMS)
    every_item = torch.arange(1, NUM_ITEMS + 1)
    with mock.patch("torch.randint", return_value=every_item):
        got = loss_fn(case["q"], case["positives"], case["table"])
    torch.testing.assert_close(got, full_softmax_reference(case["q"], case["table"], case["positives"], 0.5))


def test_logq_correction_makes_popularity_sampling_estimate_the_catalogue_softmax(case) -> None:
    """With a skewed popularity proposal and many draws, the log-Q corrected sampled softmax's
    gradient approaches that of the softmax over the whole catalogue — minus the positive's own
    term in the denominator, since draws equal to the positive are masked (SPEC §1) and the
    positive's corrected logit weighs 1/(M·Q) of the sum; uncorrected it stays biased towards
    the popular items."""
    counts = torch.tensor([0.0] + [float(10 * (i % 5 == 0) + 1) for i in range(NUM_ITEMS)])
    q, table, positives = case["q"], case["table"], case["positives"]
    logits = q @ table[1:].T
    own = F.one_hot(positives - 1, NUM_ITEMS).bool()
    others = torch.logsumexp(logits.masked_fill(own, -math.inf), dim=1)
    reference = grads((others - logits[own]).mean(), q)[0]

    def sampled_grad(correct: bool) -> torch.Tensor:
        cfg = LossConfig(
            retrieval="sampled_softmax",
            sampler="popularity",
            num_negatives=100_000,
            logq_correction=correct,
            temperature=1.0,
        )
        torch.manual_seed(3)
        return grads(RetrievalLoss(cfg, NUM_ITEMS, counts)(q, positives, table), q)[0]

    def error(g):
        return float((g - reference).norm() / reference.norm())

    assert error(sampled_grad(True)) < 0.03
    assert error(sampled_grad(False)) > 5 * error(sampled_grad(True))


def test_popularity_sampler_draws_by_training_counts() -> None:
    counts = torch.tensor([0.0, 1.0, 0.0, 3.0])
    loss_fn = RetrievalLoss(LossConfig(retrieval="sampled_softmax", sampler="popularity"), 3, counts)
    torch.manual_seed(0)
    draws = torch.multinomial(loss_fn.item_probs, 40000, replacement=True)
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    assert freq[0] == 0.0 and freq[2] < 1e-3
    assert freq[3] / freq[1] == pytest.approx(3.0, rel=0.05)


def test_in_batch_negatives_are_other_rows_targets(case) -> None:
    q, table, positives, rows = case["q"], case["table"], case["positives"], case["rows"]
    anchors = torch.tensor([positives[3], positives[7], 0])  # row 2 has no anchor
    cfg = LossConfig(
        retrieval="sampled_softmax",
        sampler="in_batch",
        num_negatives=4,
        logq_correction=False,
        temperature=1.0,
    )
    uniform = torch.tensor([2, 9, 11, 20])
    with mock.patch("torch.randint", return_value=uniform):
        got = RetrievalLoss(cfg, NUM_ITEMS)(q, positives, table, rows=rows, anchor_positives=anchors)
    terms = []
    for p in range(POSITIONS):
        others = [int(anchors[r]) for r in range(3) if r != int(rows[p]) and int(anchors[r]) != 0]
        negatives = [i for i in [*uniform.tolist(), *others] if i != int(positives[p])]
        logits = q[p] @ table[[int(positives[p]), *negatives]].T
        terms.append(torch.logsumexp(logits, 0) - logits[0])
    torch.testing.assert_close(got, torch.stack(terms).mean())
    with pytest.raises(ValueError, match="in_batch"):
        RetrievalLoss(cfg, NUM_ITEMS)(q, positives, table)


def test_in_batch_logq_uses_the_mixed_proposal(case) -> None:
    q, table, positives, rows = case["q"], case["table"], case["positives"], case["rows"]
    counts = torch.arange(NUM_ITEMS + 1, dtype=torch.float64)
    anchors = positives[[0, 4, 8]]
    cfg = LossConfig(retrieval="sampled_softmax", sampler="in_batch", num_negatives=4, temperature=1.0)
    loss_fn = RetrievalLoss(cfg, NUM_ITEMS, counts)
    uniform = torch.tensor([2, 9, 11, 20])
    with mock.patch("torch.randint", return_value=uniform):
        got = loss_fn(q, positives, table, rows=rows, anchor_positives=anchors)
    probs = loss_fn.item_probs.double()

    def log_q(i: int) -> torch.Tensor:  # expected draws: 4 uniform + 3 in-batch (popularity)
        return torch.log(4 / NUM_ITEMS + 3 * probs[i])

    terms = []
    for p in range(POSITIONS):
        pos = int(positives[p])
        others = [int(anchors[r]) for r in range(3) if r != int(rows[p])]
        cands = [pos, *[i for i in [*uniform.tolist(), *others] if i != pos]]
        logits = torch.stack([q[p] @ table[i] - log_q(i) for i in cands])
        terms.append(torch.logsumexp(logits, 0) - logits[0])
    torch.testing.assert_close(got, torch.stack(terms).mean().to(got.dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["bce", "gbce"])
def test_bce_kinds_draw_fresh_negatives_per_position(case, kind) -> None:
    q, table, positives = case["q"], case["table"], case["positives"]
    cfg = LossConfig(retrieval=kind, num_negatives=2, temperature=1.0, gbce_t=0.5)
    ids = torch.randint(1, NUM_ITEMS + 1, (POSITIONS, 2), generator=torch.Generator().manual_seed(1))
    with mock.patch("torch.randint", return_value=ids):
        got = RetrievalLoss(cfg, NUM_ITEMS)(q, positives, table)
    beta = gbce_beta(2, NUM_ITEMS, 0.5) if kind == "gbce" else 1.0
    pos = (q * table[positives]).sum(-1)
    neg = torch.einsum("pd,pmd->pm", q, table[ids])
    valid = ids != positives[:, None]
    want = (beta * F.softplus(-pos) + (F.softplus(neg) * valid).sum(1)).mean()
    torch.testing.assert_close(got, want.to(got.dtype))


def test_empty_batch_is_a_zero_loss_with_a_graph(case) -> None:
    for kind in ("full_softmax", "sampled_softmax", "bce", "gbce"):
        loss = RetrievalLoss(LossConfig(retrieval=kind), NUM_ITEMS)(
            case["q"][:0], case["positives"][:0], case["table"]
        )
        assert float(loss.detach()) == 0.0 and loss.requires_grad


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(retrieval="full_softmax"),
        LossConfig(retrieval="sampled_softmax", sampler="in_batch", num_negatives=64),
        LossConfig(retrieval="gbce", num_negatives=16),
    ],
    ids=lambda c: c.retrieval,
)
def test_gradients_repeat_bit_for_bit_on_several_threads(cfg, two_threads):
    """Repeated item ids (every batch has them) must sum their gradients in a fixed order: with
    advanced indexing (`table[ids]`) the table's gradient differed in its last bits between two
    identical backward passes on a 2-thread CPU, so a seed's training did not repeat."""
    g = torch.Generator().manual_seed(0)
    items, positions = 400, 30_000
    positives = torch.randint(1, items + 1, (positions,), generator=g)
    hard = torch.randint(0, items + 1, (positions, 8), generator=g)
    q0 = torch.randn(positions, 64, generator=g)
    table0 = torch.randn(items + 1, 64, generator=g)
    loss_fn = RetrievalLoss(cfg, items)
    grads = []
    for _ in range(3):
        torch.manual_seed(1)  # the samplers draw the same negatives each time
        q, table = q0.clone().requires_grad_(), table0.clone().requires_grad_()
        rows = torch.arange(positions) // 100
        anchors = positives.view(-1, 100)[:, -1]
        loss_fn(q, positives, table, rows=rows, anchor_positives=anchors, hard=hard).backward()
        grads.append((q.grad, table.grad))
    for q_grad, table_grad in grads[1:]:
        assert torch.equal(q_grad, grads[0][0])
        assert torch.equal(table_grad, grads[0][1])
