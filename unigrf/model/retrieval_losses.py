"""The retrieval losses: how a query is trained to score its next item above the catalogue.

Every loss here reads the same inputs — P retrieval positions, each with a query
`q [P, D]`, a positive item id `positives [P]`, optionally per-position extra hard negatives
`hard [P, m]` (the ranking-driven enhancer's, 0 = none) — and the item table `table [I + 1, D]`
(row 0 is padding and never scored). A logit is `<q, table[i]> / temperature`; the model
decides what the vectors are (L2-normalised for cosine similarity, raw for dot product).

`loss.retrieval` (config.LossConfig) picks one:

- `full_softmax` — cross-entropy over all I items (what RecBole's SASRec and eSASRec-style
  recipes train with; cheap on catalogues of thousands of items). Exact. Up to
  `loss.chunk_logits` logits it is one log-sum-exp (on the CPU its element-wise steps run in
  place: `unigrf.kernels.logsumexp_over_logits`); past that it is computed over item
  chunks by `ChunkedLogSumExp`, whose backward recomputes each chunk's softmax instead of
  storing P x I activations, so memory stays O(P x chunk) on any catalogue.
- `sampled_softmax` — the positive against sampled negatives, by `loss.sampler`:
  `uniform` (`num_negatives` ids drawn once per batch and shared by every position: sampling
  does not depend on the row, so sharing is unbiased and one [P, M] matmul replaces a gather),
  `popularity` (drawn proportionally to training counts, shared likewise) and `in_batch` (each
  batch row's anchor target — the target of its last position — plus `num_negatives` uniform
  ids: the "mixed negative sampling" of Yi et al., RecSys 2019). With `logq_correction`,
  every logit, the positive's included, has log Q(i) subtracted, Q(i) the expected number of
  times item i is drawn (Jean et al. 2015; Yi et al. 2019), so the sampled softmax estimates
  the full one; for uniform negatives the correction is a constant and is skipped.
- `bce` — binary cross-entropy: each position's positive against `num_negatives` uniform
  negatives drawn for that position (SASRec.pytorch: one), averaged over positions.
- `gbce` — gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023): as `bce` but the
  positive's probability is raised to beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha =
  num_negatives / (I - 1) the negative sampling rate, t = `gbce_t`, which counters the
  over-confidence that negative sampling causes.

Negatives that equal the position's positive (a sampling collision, an in-batch duplicate, a
hard negative that is the target) and id 0 are masked out: a softmax gives them −inf, a BCE
drops their term. Hard negatives join every loss as extra negatives (in the full softmax the
item then counts twice in the denominator: the enhancer's emphasis on it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unigrf.config import LossConfig
from unigrf.kernels import InPlaceLogSumExp, logsumexp_over_logits  # noqa: F401 (InPlaceLogSumExp: its home's name)
from unigrf.kernels import wide as _wide


class ChunkedLogSumExp(torch.autograd.Function):
    """logsumexp over items of (q @ table.T) / tau, chunked: [P, D], [I, D] -> [P].

    Forward keeps a running log-sum-exp over item chunks of `chunk` rows; backward recomputes
    each chunk's logits and adds softmax-weighted gradients, so no [P, I] tensor is stored."""

    @staticmethod
    def forward(ctx, q: Tensor, table: Tensor, tau: float, chunk: int) -> Tensor:
        lse = torch.full((q.shape[0],), -math.inf, dtype=_wide(q).dtype, device=q.device)
        for start in range(0, table.shape[0], chunk):
            logits = _wide(q @ table[start : start + chunk].T).div_(
                tau
            )  # in place: a fresh [P, c] per step is what costs
            peak = logits.amax(dim=1, keepdim=True)
            chunk_lse = logits.sub_(peak).exp_().sum(dim=1).log_().add_(peak.squeeze(1))
            lse = torch.logaddexp(lse, chunk_lse)
        ctx.save_for_backward(q, table, lse)
        ctx.tau, ctx.chunk = tau, chunk
        return lse

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, table, lse = ctx.saved_tensors
        tau, chunk = ctx.tau, ctx.chunk
        wide = lse.dtype
        grad_q = torch.zeros(q.shape, dtype=wide, device=q.device)
        grad_table = torch.zeros(table.shape, dtype=wide, device=table.device)
        scale = (grad.to(wide) / tau)[:, None]
        for start in range(0, table.shape[0], chunk):
            block = table[start : start + chunk]
            weights = _wide(q @ block.T).div_(tau).sub_(lse[:, None]).exp_().mul_(scale)  # [P, c]
            grad_q += weights @ block.to(wide)
            grad_table[start : start + chunk] = weights.T @ q.to(wide)
        return grad_q.to(q.dtype), grad_table.to(table.dtype), None, None


def logsumexp_over_items(q: Tensor, items: Tensor, tau: float, max_elements: int) -> Tensor:
    """log Σ_i exp(<q, items[i]> / tau) for q [P, D], items [I, D] -> [P]: up to `max_elements`
    logits at once (`unigrf.kernels.logsumexp_over_logits`), past that in item chunks of about
    max_elements / P (`ChunkedLogSumExp`)."""
    if q.shape[0] * items.shape[0] <= max_elements:
        return logsumexp_over_logits(q, items, tau)
    chunk = max(1, max_elements // max(q.shape[0], 1))
    return ChunkedLogSumExp.apply(q, items, tau, chunk)


def _masked(neg_ids: Tensor, positives: Tensor) -> Tensor:
    """[P, M] (or [1, M]) negative ids -> bool [P, M]: not a negative (0 or the positive)."""
    return (neg_ids == positives[:, None]) | (neg_ids == 0)


def softmax_with_negatives(
    pos_logits: Tensor, neg_logits: Tensor, neg_ids: Tensor, positives: Tensor
) -> Tensor:
    """Mean over P positions of −log softmax([positive, negatives])[positive].

    pos_logits [P]; neg_logits [P, M]; neg_ids [P, M] or [1, M] (the item behind each negative
    logit; 0 = no negative); positives [P]. Negatives equal to the positive or 0 get −inf."""
    pos_logits = _wide(pos_logits)
    masked = _wide(neg_logits).to(pos_logits.dtype).masked_fill(_masked(neg_ids, positives), -math.inf)
    logits = torch.cat([pos_logits[:, None], masked], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos_logits).mean()


def bce_with_negatives(
    pos_logits: Tensor, neg_logits: Tensor, neg_ids: Tensor, positives: Tensor, beta: float = 1.0
) -> Tensor:
    """Mean over P positions of −beta·log σ(s+) − Σ_j log(1 − σ(s_j)) over the position's valid
    negatives (ids as in `softmax_with_negatives`); beta = 1 is plain BCE, < 1 gSASRec's gBCE."""
    valid = ~_masked(neg_ids, positives).expand_as(neg_logits)
    negative_terms = (F.softplus(_wide(neg_logits)) * valid).sum(dim=1)  # −log(1 − σ(s))
    return (beta * F.softplus(-_wide(pos_logits)) + negative_terms).mean()


def rows_of(table: Tensor, ids: Tensor) -> Tensor:
    """table [I + 1, D] rows at ids [...] -> [..., D], as `table[ids]` but through `F.embedding`,
    whose backward sums the gradients of repeated ids in a fixed order. Advanced indexing's
    backward (`index_put_(accumulate=True)`) sums them in an order that depends on thread timing
    on a multi-threaded CPU, so two runs of one seed drifted apart in the last bits
    (tests/test_retrieval_losses.py checks the gradients repeat exactly)."""
    return F.embedding(ids, table)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 − 1/alpha) + 1/alpha), alpha = k / (I − 1)."""
    alpha = min(1.0, num_negatives / max(num_items - 1, 1))
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


class RetrievalLoss(nn.Module):
    """The configured retrieval loss as a module (see the module docstring).

    `item_counts` [I + 1] (training interactions per item; index 0 unused) drive the
    popularity sampler and the log-Q correction; without them frequencies are uniform. Held as
    a non-persistent buffer: it moves with the model and stays out of checkpoints.
    """

    def __init__(self, cfg: LossConfig, num_items: int, item_counts: Tensor | None = None) -> None:
        super().__init__()
        self.cfg, self.num_items = cfg, num_items
        counts = torch.ones(num_items + 1) if item_counts is None else torch.as_tensor(item_counts)
        counts = counts.double().clone()
        counts[0] = 0.0
        counts[1:] = counts[1:].clamp(min=0.0) + 1e-6  # every item stays drawable
        self.register_buffer("item_probs", (counts / counts.sum()).float(), persistent=False)

    def forward(
        self,
        q: Tensor,
        positives: Tensor,
        table: Tensor,
        rows: Tensor | None = None,
        anchor_positives: Tensor | None = None,
        hard: Tensor | None = None,
        hard_scores: Tensor | None = None,
    ) -> Tensor:
        """The mean loss (scalar) over P retrieval positions.

        q [P, D] queries; positives [P] item ids 1..I; table [I + 1, D] item vectors;
        rows [P] and anchor_positives [B]: each position's batch row and each row's anchor
        target (0 = none), for in-batch negatives (a row's own target is never its negative);
        hard [P, m] extra negatives per position (0 = none); hard_scores [P, m] their
        similarities <q, table[hard]> when the caller has them (the model computes them per
        batch row, where a row's positions share their m negatives, without a [P, m, D] gather).
        """
        cfg, tau = self.cfg, self.cfg.temperature
        if q.shape[0] == 0:
            return q.sum() * 0.0
        pos_logits = (q * rows_of(table, positives)).sum(-1) / tau  # [P]
        negatives: list[tuple[Tensor, Tensor]] = []  # (logits [P, M], ids [P or 1, M])
        if hard is not None and hard.shape[1] > 0:
            if hard_scores is None:
                hard_scores = torch.einsum("pd,pmd->pm", q, rows_of(table, hard))
            negatives.append((hard_scores / tau, hard))

        if cfg.retrieval == "full_softmax":
            lse = logsumexp_over_items(q, table[1:], tau, cfg.chunk_logits)
            if negatives:
                logits, ids = negatives[0]
                extra = torch.logsumexp(_wide(logits).masked_fill(_masked(ids, positives), -math.inf), dim=1)
                lse = torch.logaddexp(lse, extra.to(lse.dtype))
            return (lse - _wide(pos_logits)).mean()

        if cfg.retrieval in ("bce", "gbce"):
            # a fresh set of uniform negatives per position (SASRec.pytorch, gSASRec)
            ids = torch.randint(1, self.num_items + 1, (q.shape[0], cfg.num_negatives), device=q.device)
            negatives.insert(0, (torch.einsum("pd,pmd->pm", q, rows_of(table, ids)) / tau, ids))
            logits, ids = _stack(negatives, q.shape[0])
            beta = (
                gbce_beta(cfg.num_negatives, self.num_items, cfg.gbce_t) if cfg.retrieval == "gbce" else 1.0
            )
            return bce_with_negatives(pos_logits, logits, ids, positives, beta)

        # sampled softmax: `num_negatives` draws shared by every position of the batch
        popularity = cfg.sampler == "popularity"
        if popularity:
            shared = torch.multinomial(self.item_probs, cfg.num_negatives, replacement=True)
        else:
            shared = torch.randint(1, self.num_items + 1, (cfg.num_negatives,), device=q.device)
        sampled = [(q @ rows_of(table, shared).T / tau, shared[None, :])]
        in_batch = 0
        if cfg.sampler == "in_batch":
            if rows is None or anchor_positives is None:
                raise ValueError(
                    "loss.sampler=in_batch needs each position's row and the rows' anchor targets"
                )
            in_batch = len(anchor_positives)
            own_row = rows[:, None] == torch.arange(in_batch, device=q.device)[None, :]  # [P, B]
            ids = torch.where(own_row, 0, anchor_positives[None, :])
            sampled.append((q @ rows_of(table, anchor_positives).T / tau, ids))
        if cfg.logq_correction and cfg.sampler != "uniform":
            # Q(i): expected draws of item i among the sampled candidates (uniform, popularity
            # and in-batch draws together); every sampled logit and the positive are corrected.
            uniform_draws = 0 if popularity else cfg.num_negatives
            popular_draws = (cfg.num_negatives if popularity else 0) + in_batch

            def log_q(ids: Tensor) -> Tensor:
                return torch.log(uniform_draws / self.num_items + popular_draws * self.item_probs[ids])

            sampled = [(logits - log_q(ids.clamp(min=0)), ids) for logits, ids in sampled]
            pos_logits = pos_logits - log_q(positives)
        logits, ids = _stack(sampled + negatives, q.shape[0])
        return softmax_with_negatives(pos_logits, logits, ids, positives)


def _stack(blocks: list[tuple[Tensor, Tensor]], p: int) -> tuple[Tensor, Tensor]:
    """Concatenate (logits [P, M_k], ids [P or 1, M_k]) blocks -> ([P, ΣM], [P, ΣM])."""
    return torch.cat([b[0] for b in blocks], dim=1), torch.cat([b[1].expand(p, -1) for b in blocks], dim=1)
