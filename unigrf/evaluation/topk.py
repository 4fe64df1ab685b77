"""Full-ranking retrieval over the catalogue in item chunks: memory bounded in users × chunk.

`evaluate`'s plain path holds a user batch's scores and history mask over the whole catalogue
([B, num_items + 1] several times over: the scores, the mask, the comparisons, the masked copy
top-C reads). At 700k items and 64 users that is about 1 GiB per batch, and it grows with the
catalogue. Here the catalogue is walked in chunks of `ITEM_CHUNK` items and everything a
user batch needs is reduced chunk by chunk:

- the target's 0-based rank among the eligible items (history and padding excluded, the target
  never), under either tie rule — a count, summed over chunks;
- retrieval's top-C candidates and their scores — the chunk's top C merged into the running top
  C (`torch.topk` of the concatenation);
- optionally, the log-normaliser of P(next) (logsumexp of scores / temperature over the
  eligible items, in float64) — `torch.logaddexp` over chunks. The cascade's ranks do not need
  it: it is one constant per user, so log P(next) + λ·log P(like) orders a user's candidates as
  scores / temperature + λ·log P(like) does, and the evaluation ranks by the latter
  (`cascade_from_topk`). It would cost one more walk over the catalogue for the cascade's rows —
  at Amazon-Books' size nearly half a validation pass on a CPU (benchmarks/RESULTS.md, "One
  whole epoch"); `log_normaliser` gives it where a probability itself is wanted.

The masks are built per chunk from the history ([B, H] ids), never over the catalogue. The
results equal the unchunked path's (`target_ranks`, `cascade_candidates`,
`retrieval_log_probs`): ranks and candidates exactly where no two eligible items tie at the
C-th place, the log-normaliser to float64 rounding (tests/test_topk.py checks each against the
unchunked functions). Peak memory: a few [B, ITEM_CHUNK] tensors, plus [B, C] — whatever the
catalogue.

`score_with_prefix_chunked` is `evaluate`'s prefix path (`eval_prefix` + continuations) on a model
that exposes `encode_prefix` and `item_table` (UniGRF): the query of each user is scored against
the item table one chunk at a time instead of as one [B, num_items + 1] product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from unigrf.evaluation.evaluate import cascade_ranks_by_lambda, cascade_rows
from unigrf.evaluation.metrics import Ties, contains_nan, count_true

ITEM_CHUNK = 65_536  # items scored at a time: [B, ITEM_CHUNK] float32 is 16 MiB at B = 64

# scores of batch rows `rows` [R] (None: every row) against items start..stop-1 -> [R, stop - start],
# a fresh tensor: the walk masks it in place
ScoreChunk = Callable[[torch.Tensor | None, int, int], torch.Tensor]


@dataclass(frozen=True)
class ChunkedRetrieval:
    """What one user batch needs from retrieval, reduced over the catalogue.

    ranks [B] long: the target's 0-based rank among the eligible items; candidates [B, C] long:
    retrieval's top-C item ids, best first (padded with excluded items, scored -inf, when fewer
    than C are eligible); candidate_scores [B, C] float32: their scores, -inf where excluded;
    log_normaliser [B] float64 or None: logsumexp of scores / temperature over the eligible items.
    """

    ranks: torch.Tensor
    candidates: torch.Tensor
    candidate_scores: torch.Tensor
    log_normaliser: torch.Tensor | None


def excluded_in_chunk(
    history: torch.Tensor, targets: torch.Tensor | None, start: int, stop: int
) -> torch.Tensor:
    """The history mask of items start..stop-1: [B, stop - start] bool, True = excluded (the
    user's history, and item 0 when the chunk holds it), the target never excluded.
    history: [B, H] item ids (0 = padding); targets: [B], or None where no item is exempt (the
    enhancer's mining, whose history holds the true next item on purpose)."""
    b = history.shape[0]
    mask = torch.zeros(b, stop - start, dtype=torch.bool, device=history.device)
    inside = (history >= start) & (history < stop)
    rows, cols = inside.nonzero(as_tuple=True)
    mask[rows, history[rows, cols] - start] = True
    if start == 0:
        mask[:, 0] = True  # padding is never a recommendation
    if targets is None:
        return mask
    here = ((targets >= start) & (targets < stop)).nonzero(as_tuple=True)[0]
    mask[here, targets[here] - start] = False
    return mask


def target_scores(score: ScoreChunk, targets: torch.Tensor, num_items: int, chunk: int) -> torch.Tensor:
    """[B] the score of each row's target, computed by the same chunk product that scores it in
    the walk (the rows whose target lies in a chunk, scored against that chunk)."""
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=targets.device)
    which = torch.div(targets, chunk, rounding_mode="floor")
    for k in torch.unique(which).tolist():
        rows = (which == k).nonzero(as_tuple=True)[0]
        start = k * chunk
        stop = min(start + chunk, num_items + 1)
        out[rows] = score(rows, start, stop).float().gather(1, (targets[rows] - start).view(-1, 1))[:, 0]
    return out


def chunked_retrieval(
    score: ScoreChunk,
    num_items: int,
    history: torch.Tensor,
    targets: torch.Tensor,
    top_c: int,
    ties: Ties = "pessimistic",
    temperature: float | None = None,
    chunk: int | None = None,
) -> ChunkedRetrieval:
    """Rank, top-C and P(next)'s log-normaliser of a user batch over items 0..num_items, walking
    the catalogue `chunk` items at a time (see the module docstring). `score(rows, start, stop)`
    gives the raw scores [R or B, stop - start]; history [B, H]; targets [B]; temperature: the
    retrieval loss's (None: no log-normaliser); chunk: default ITEM_CHUNK."""
    chunk = ITEM_CHUNK if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    targets = targets.long()
    history = history.long()
    b = targets.shape[0]
    total = num_items + 1
    top_c = min(top_c, total)
    target = target_scores(score, targets, num_items, chunk).view(-1, 1)  # [B, 1]
    if torch.isnan(target).any():
        raise ValueError("scores contain NaN")
    ranks = torch.zeros(b, dtype=torch.long, device=targets.device)
    best_scores: torch.Tensor | None = None
    best_items: torch.Tensor | None = None
    log_norm = (
        torch.full((b,), -math.inf, dtype=torch.float64, device=targets.device) if temperature else None
    )
    # A target scored -inf ties with every excluded item (masked to -inf below): those rows
    # count their competitors through the explicit mask instead.
    tied_with_excluded = torch.isneginf(target[:, 0]).nonzero(as_tuple=True)[0]
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        scores = score(None, start, stop).float()  # [B, W]
        if contains_nan(scores):
            raise ValueError("scores contain NaN")
        here = ((targets >= start) & (targets < stop)).nonzero(as_tuple=True)[0]
        if len(tied_with_excluded):
            ranks[tied_with_excluded] += _competitors_above(
                scores[tied_with_excluded], history[tied_with_excluded], targets[tied_with_excluded],
                target[tied_with_excluded], start, stop, ties,
            )  # fmt: skip
        # history and padding masked in place; the target is never excluded, and it does not
        # compete with itself: counted by `>=` at its own column, taken off again
        inside = (history >= start) & (history < stop)
        rows, cols = inside.nonzero(as_tuple=True)
        scores[rows, history[rows, cols] - start] = -math.inf
        if start == 0:
            scores[:, 0] = -math.inf
        scores[here, targets[here] - start] = target[here, 0]
        count = count_true(scores >= target if ties == "pessimistic" else scores > target)
        if ties == "pessimistic":
            count[here] -= 1
        count[tied_with_excluded] = 0  # counted above
        ranks += count
        if log_norm is not None:
            log_norm = torch.logaddexp(log_norm, torch.logsumexp(scores.double() / temperature, dim=1))
        best_scores, best_items = merge_top(best_scores, best_items, scores, start, top_c)
    assert best_scores is not None and best_items is not None  # total >= 1
    return ChunkedRetrieval(ranks, best_items, best_scores, log_norm)


def _competitors_above(
    scores: torch.Tensor,
    history: torch.Tensor,
    targets: torch.Tensor,
    target: torch.Tensor,
    start: int,
    stop: int,
    ties: Ties,
) -> torch.Tensor:
    """[R] eligible items of start..stop-1 scored above the target (or tied with it, under the
    pessimistic rule), through the explicit history mask: the exact count for any scores."""
    competitors = ~excluded_in_chunk(history, targets, start, stop)
    here = ((targets >= start) & (targets < stop)).nonzero(as_tuple=True)[0]
    competitors[here, targets[here] - start] = False  # the target does not compete with itself
    above = scores >= target if ties == "pessimistic" else scores > target
    return count_true(above & competitors)


def merge_top(
    best_scores: torch.Tensor | None,
    best_items: torch.Tensor | None,
    masked: torch.Tensor,
    start: int,
    top_c: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The running top C ([B, <= C] scores and item ids, best first; None before the first chunk)
    merged with a chunk's masked scores [B, W] of items start..start+W-1."""
    vals, idx = masked.topk(min(top_c, masked.shape[1]), dim=1)
    idx = idx + start
    if best_scores is None or best_items is None:
        return vals, idx
    merged = torch.cat([best_scores, vals], dim=1)
    keep = merged.topk(min(top_c, merged.shape[1]), dim=1).indices
    return merged.gather(1, keep), torch.cat([best_items, idx], dim=1).gather(1, keep)


def unseen_topk(
    query: torch.Tensor, table: torch.Tensor, history: torch.Tensor, k: int, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top k items by `query @ table.T` outside each row's history and the padding item,
    walking the catalogue `chunk` items at a time (default ITEM_CHUNK): -> (scores [B, k] float32,
    best first, -inf past the eligible items; item ids [B, k]). The ranking-driven enhancer's
    candidate pass past one chunk (`unigrf.model.enhancer`): memory [B, chunk] instead of
    [B, num_items + 1]. query [B, D]; table [num_items + 1, D]; history [B, H] (0 = padding).

    Each chunk's product goes into one reused buffer and is masked in place: fresh [B, chunk]
    tensors every chunk (the product, a masked copy) cost more than the walk's arithmetic."""
    chunk = ITEM_CHUNK if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    history = history.long()
    total = table.shape[0]
    k = min(k, total)
    buffer = torch.empty(query.shape[0], min(chunk, total), dtype=query.dtype, device=query.device)
    best_scores: torch.Tensor | None = None
    best_items: torch.Tensor | None = None
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        scores = buffer if stop - start == buffer.shape[1] else buffer.new_empty(query.shape[0], stop - start)
        torch.mm(query, table[start:stop].T, out=scores)
        inside = (history >= start) & (history < stop)
        rows, cols = inside.nonzero(as_tuple=True)
        scores[rows, history[rows, cols] - start] = -math.inf
        if start == 0:
            scores[:, 0] = -math.inf  # padding is never a candidate
        best_scores, best_items = merge_top(best_scores, best_items, scores.float(), start, k)
    assert best_scores is not None and best_items is not None  # the table has the padding row
    return best_scores, best_items


def log_normaliser(
    score: ScoreChunk,
    num_items: int,
    rows: torch.Tensor,
    history: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    chunk: int | None = None,
) -> torch.Tensor:
    """[R] float64 logsumexp of scores / temperature over the eligible items of batch rows `rows`
    [R] (history [B, H] and targets [B] of the whole batch): P(next)'s normaliser for those rows,
    one more walk over the catalogue for them alone — for a probability itself (the cascade's
    ranks do not need it: the module docstring)."""
    chunk = ITEM_CHUNK if chunk is None else chunk
    out = torch.full((len(rows),), -math.inf, dtype=torch.float64, device=rows.device)
    for start in range(0, num_items + 1, chunk):
        stop = min(start + chunk, num_items + 1)
        excluded = excluded_in_chunk(history[rows], targets[rows].long(), start, stop)
        logits = score(rows, start, stop).double().masked_fill(excluded, -math.inf) / temperature
        out = torch.logaddexp(out, torch.logsumexp(logits, dim=1))
    return out


def cascade_from_topk(
    result: ChunkedRetrieval,
    rows: torch.Tensor,
    like_logits: torch.Tensor,
    targets: torch.Tensor,
    lambdas: Sequence[float],
    ties: Ties,
    temperature: float | None,
) -> torch.Tensor:
    """Cascade ranks [L, R] of batch rows `rows` [R] from their candidates' like logits [R, C]
    (`cascade_ranks_by_lambda`'s rule, on the candidates alone: eligibility and P(next) come from
    the chunked walk instead of a [B, num_items + 1] mask and score matrix). At 0 < λ < inf the
    candidates' log P(next) is scores / temperature less `result`'s log_normaliser of `rows`
    ([R], `log_normaliser`) when it has one, else less nothing: the normaliser is one constant
    per row, so each row's order, and the ranks, are the same (see the module docstring)."""
    chosen = result.candidates[rows]
    chosen_scores = result.candidate_scores[rows]
    eligible = chosen_scores > -math.inf
    logprobs = None
    if any(0 < lam < math.inf for lam in lambdas):
        if temperature is None:
            raise ValueError(
                "the cascade's combined score at 0 < λ < inf needs P(next): the retrieval model "
                "has no `retrieval_temperature` (evaluate only λ in {0, inf} with it: "
                "eval.cascade_lambdas=[0, .inf])"
            )
        logprobs = chosen_scores.double() / temperature
        if result.log_normaliser is not None:
            logprobs = logprobs - result.log_normaliser.view(-1, 1)
    # the candidates' own coordinates: column j of row r is "item" j, excluded where not eligible
    local = torch.arange(chosen.shape[1], device=chosen.device).expand_as(chosen)
    is_target = chosen == targets[rows].view(-1, 1)
    target_column = torch.where(is_target.any(dim=1), is_target.int().argmax(dim=1), -1)
    return cascade_ranks_by_lambda(
        like_logits,
        chosen_scores,
        logprobs,
        local,
        ~eligible,
        target_column,
        result.ranks[rows],
        lambdas,
        ties,
    )


def score_with_prefix_chunked(
    model: object,
    batch: Mapping[str, torch.Tensor],
    num_items: int,
    top_c: int,
    ties: Ties,
    lambdas: Sequence[float],
    cascade: bool = True,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`evaluate`'s prefix path with the catalogue scored in chunks: -> (retrieval ranks [B],
    cascade ranks [L, B] or None, target like logits [B]), the numbers `_score_with_prefix`
    gives. `model` has `encode_prefix`, `item_table`, `score_candidates(..., prefix=)` (UniGRF)."""
    targets = batch["targets"]
    lengths = batch["lengths"]
    prefix = model.encode_prefix(batch["items"], batch["feedback"], batch.get("timestamps"), lengths)
    query = prefix.query  # [B, D]
    table = model.item_table()  # [num_items + 1, D]

    def score(rows: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
        q = query if rows is None else query[rows]
        return q @ table[start:stop].T

    temperature = getattr(model, "retrieval_temperature", None)
    # no P(next) normaliser: a constant per user, it changes no cascade rank (module docstring)
    result = chunked_retrieval(score, num_items, batch["history"], targets, top_c, ties, None, chunk)
    ranks = result.ranks
    if not getattr(model, "has_ranking", True):
        return ranks, None, torch.zeros(targets.shape[0], device=targets.device)
    target_logits = model.score_candidates(None, None, None, lengths, targets[:, None], prefix=prefix)
    if not cascade:
        return ranks, None, target_logits[:, 0].float()
    top = result.candidates.shape[1]
    out = torch.full((len(lambdas), len(ranks)), top, dtype=ranks.dtype, device=ranks.device)
    rows = cascade_rows(ranks, batch["target_likes"], top)
    if len(rows):
        chosen = result.candidates[rows]
        logits = model.score_candidates(None, None, None, lengths[rows], chosen, prefix=prefix.select(rows))
        out[:, rows] = cascade_from_topk(result, rows, logits, targets, lambdas, ties, temperature)
    return ranks, out, target_logits[:, 0].float()


def use_chunks(model: object, num_items: int, chunk: int | None = None) -> bool:
    """Whether `evaluate` walks the catalogue in chunks: a catalogue larger than one chunk
    (default ITEM_CHUNK), and a model that can score a chunk (`encode_prefix` and `item_table`:
    UniGRF)."""
    chunk = ITEM_CHUNK if chunk is None else chunk
    return num_items + 1 > chunk and hasattr(model, "encode_prefix") and hasattr(model, "item_table")
