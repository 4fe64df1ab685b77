"""Full-ranking evaluation of a model on a leave-one-out split [SPEC §2.1–2.3].

`evaluate` scores every user's held-out target against the whole item catalogue (padding item 0
and the user's history excluded, the target itself never), measures the ranking branch on the
target's like label, and runs the cascade a serving system would: retrieval's top-C, re-ranked
by the combined score log P(next) + λ·log P(like) (`unigrf.evaluation.cascade_score`), final
top-k. Every λ of `EvalConfig.cascade_lambdas` is ranked in the same pass (the candidates and
their like logits are computed once; only the sort differs); λ is chosen on validation and
applied unchanged to test. `popularity_baseline` gives the retrieval metrics of ranking by item
count. Both loop over batches of users only; everything per user is vectorised. Pure
torch/numpy (no Ray).

Every metric is computed from the per-user outcomes (`unigrf.evaluation.outcomes`: the target's
rank, like label and logit, and its cascade rank at the chosen λ), so the frame
`evaluate(..., outcomes=True)` returns recomputes the reported numbers exactly
(`metrics_from_outcomes`).

Model API used (docs/ARCHITECTURE.md):
- `score_eval(batch) -> (scores [B, num_items + 1], rank_logit [B])` on an `eval_batch`:
  raw retrieval scores of all items at the last history position, and the ranking logit of
  the appended target item;
- `score_candidates(items, feedback, timestamps, lengths, candidates [B, C]) -> [B, C]`: the
  ranking logit of each candidate as the next item after the prefix (positions < lengths);
- `retrieval_temperature` (float): the retrieval loss's temperature, so that
  softmax(scores / temperature) is the model's P(next) (needed for 0 < λ < inf only);
- optionally `eval_prefix(batch) -> (scores, prefix)` plus `score_candidates(..., prefix=)`:
  the history encoded once, then the target and the cascade's candidates scored as
  continuations of it (`PrefixEvalModel`; UniGRF and TwoStage have it) — half the model work;
  `prefix.select(rows)` gives the prefix of some rows alone.

The cascade's candidates are scored only for the users whose cascade rank they decide
(`cascade_rows`: target liked and retrieved in the top C): the same metrics, for a fraction of
the continuation work; every λ's rank is decided by the same rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, overload

import numpy as np
import pandas as pd
import torch
from torch import nn

from unigrf.config import EvalConfig
from unigrf.data.sequences import SPLITS, SequenceData
from unigrf.evaluation.batch_store import BatchRecord, BatchStore, fingerprint
from unigrf.evaluation.cascade_score import choose_lambda, combined_scores, format_lambda, retrieval_log_probs
from unigrf.evaluation.metrics import (
    Ties,
    contains_nan,
    count_true,
    history_mask,
    hit_rate,
    mrr,
    ndcg,
    target_ranks,
)
from unigrf.evaluation.outcomes import NOT_COUNTED, metrics_from_outcomes, outcomes_frame, per_user


class EvalModel(Protocol):
    """What `evaluate` needs from a model (the UniGRF contract, or any fake implementing it)."""

    def score_eval(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def score_candidates(
        self,
        items: torch.Tensor,
        feedback: torch.Tensor,
        timestamps: torch.Tensor,
        lengths: torch.Tensor,
        candidates: torch.Tensor,
    ) -> torch.Tensor: ...


class PrefixEvalModel(EvalModel, Protocol):
    """The faster contract (UniGRF, TwoStage): the history is encoded once and reused.

    `eval_prefix(batch) -> (scores [B, num_items + 1], prefix)`: the retrieval scores of
    `score_eval` and an encoded prefix that `score_candidates(..., prefix=prefix)` continues;
    `prefix.select(rows [R])` is the prefix of those rows alone (`unigrf.model.unified.Prefix`).
    """

    def eval_prefix(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, object]: ...

    def score_candidates(
        self,
        items: torch.Tensor | None,
        feedback: torch.Tensor | None,
        timestamps: torch.Tensor | None,
        lengths: torch.Tensor,
        candidates: torch.Tensor,
        prefix: object | None = None,
    ) -> torch.Tensor: ...


@contextlib.contextmanager
def _inference(*models: object) -> Iterator[None]:
    """no_grad + eval mode for every distinct nn.Module given; each submodule's own training
    flag is restored afterwards (a submodule deliberately kept in eval mode stays so)."""
    modules = {id(m): m for m in models if isinstance(m, nn.Module)}.values()
    saved = [(sub, sub.training) for m in modules for sub in m.modules()]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for sub, flag in saved:
            sub.training = flag


def _check_users(data: SequenceData, split: str, users: np.ndarray | None) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    users = np.arange(data.num_users, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    if users.ndim != 1 or len(users) == 0:
        raise ValueError("users must be a non-empty 1-d array of user indices")
    if users.min() < 0 or users.max() >= data.num_users:
        raise ValueError(f"users must lie in 0..{data.num_users - 1}")
    short = users[data.lengths[users] < 3]
    if len(short):
        raise ValueError(
            f"{data.name}: {len(short)} user(s) have fewer than 3 interactions (e.g. user {short[0]}); "
            "leave-one-out needs a train, a validation and a test item"
        )
    return users


def _batches(data: SequenceData, users: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Users in chunks of `batch_size`, ordered by history length so each padded batch is
    about as wide as its longest member (attention cost is quadratic in the padded width).
    Metrics are means over users, so the order changes nothing but speed."""
    if batch_size < 1:
        raise ValueError(f"eval.batch_size must be >= 1, got {batch_size}")
    lengths = data.lengths[users]
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(users), batch_size):
        yield users[order[start : start + batch_size]]


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def retrieval_metrics(ranks: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """hr@k and ndcg@k for each k, then mrr, from 0-based target ranks [U]."""
    out = {f"hr@{k}": hit_rate(ranks, k) for k in ks}
    out.update({f"ndcg@{k}": ndcg(ranks, k) for k in ks})
    out["mrr"] = mrr(ranks)
    return out


def _score_eval(
    model: EvalModel, batch: Mapping[str, torch.Tensor], num_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`model.score_eval(batch)` with its shapes checked: scores [B, num_items + 1], logit [B]."""
    scores, rank_logit = model.score_eval(batch)
    size = batch["targets"].shape[0]
    expected = (size, num_items + 1)
    if tuple(scores.shape) != expected or tuple(rank_logit.shape) != (size,):
        raise ValueError(
            f"{type(model).__name__}.score_eval returned scores {tuple(scores.shape)} and rank_logit "
            f"{tuple(rank_logit.shape)}; expected {expected} and ({size},)"
        )
    return scores, rank_logit


def cascade_candidates(scores: torch.Tensor, mask: torch.Tensor, top_c: int) -> torch.Tensor:
    """Retrieval's top-C item ids [B, C] from scores [B, I] with excluded items (mask [B, I],
    True = excluded) never chosen ahead of an eligible one."""
    top_c = min(top_c, scores.shape[1])
    return scores.masked_fill(mask, -math.inf).topk(top_c, dim=1).indices


def cascade_rows(retrieval_ranks: torch.Tensor, target_likes: torch.Tensor, top_c: int) -> torch.Tensor:
    """The batch rows [R] whose cascade rank the ranking logits decide: the target is liked (the
    cascade metrics count liked targets only) and retrieval ranked it within the top C (else its
    cascade rank is C whatever the ranking says). retrieval_ranks [B]: 0-based, under the
    evaluation's tie rule; target_likes [B]: 0/1. Scoring the candidates of these rows alone
    gives every cascade metric unchanged (tests/test_evaluate.py checks it against all rows)."""
    return ((retrieval_ranks < top_c) & (target_likes > 0.5)).nonzero(as_tuple=True)[0]


def _lexicographic_ranks(
    keys: Sequence[torch.Tensor], position: torch.Tensor, eligible: torch.Tensor, ties: Ties
) -> torch.Tensor:
    """0-based rank [R] of column `position` [R] among the `eligible` columns ([R, C] bool) when
    the columns are ordered by keys[0] (each key [R, C], higher first), then keys[1], ...: a
    column equal to the target on every key counts above it under pessimistic ties, below it
    under optimistic ones (as `target_ranks` does with one key)."""
    pos = position.view(-1, 1)
    above = torch.zeros_like(eligible)
    equal = torch.ones_like(eligible)
    for key in keys:
        if contains_nan(key):
            # NaN compares False with everything, which would silently rank a NaN target first
            raise ValueError("cascade scores contain NaN")
        target = key.gather(1, pos)
        above |= equal & (key > target)
        equal &= key == target
    if ties == "pessimistic":
        above |= equal
    above &= eligible
    above.scatter_(1, pos, False)  # the target does not compete with itself
    return count_true(above)


def _target_columns(
    candidates: torch.Tensor, targets: torch.Tensor, retrieval_ranks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(retrieved [R] bool, the target's column [R] where retrieved) in candidates [R, C]."""
    is_target = candidates == targets.view(-1, 1)  # [R, C]
    # `retrieval_ranks < C` keeps the cascade consistent with hr@C under the tie rule, whatever
    # order topk gives tied scores (optimistic ties can rank more than C items "in" the top C).
    retrieved = is_target.any(dim=1) & (retrieval_ranks < candidates.shape[1])
    return retrieved, is_target.int().argmax(dim=1)


def cascade_ranks_from_logits(
    logits: torch.Tensor,
    candidates: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    retrieval_ranks: torch.Tensor,
    ties: Ties = "pessimistic",
) -> torch.Tensor:
    """The target's rank [B] after re-scoring retrieval's top-C `candidates` [B, C] by `logits`
    [B, C] alone, ties under the rule `ties`: its 0-based rank among the C candidates, or C when
    retrieval did not put it in its top C (a miss at every cut-off k <= C). The cascade's rule
    before the combined score; `cascade_ranks_by_lambda` at λ = inf equals it wherever the
    logits have no exact ties (it breaks those by retrieval's order).

    mask: [B, I] bool (True = excluded); retrieval_ranks: [B] under the same tie rule `ties`.
    """
    if tuple(logits.shape) != tuple(candidates.shape):
        raise ValueError(
            f"ranking logits {tuple(logits.shape)} do not match candidates {tuple(candidates.shape)}"
        )
    # With fewer eligible items than C, topk pads the candidates with excluded ones: never rank them.
    eligible = ~mask.gather(1, candidates)
    retrieved, position = _target_columns(candidates, targets, retrieval_ranks)
    ranks = _lexicographic_ranks([logits.double()], position, eligible, ties)
    return torch.where(retrieved, ranks, torch.full_like(ranks, candidates.shape[1]))


def cascade_ranks_by_lambda(
    like_logits: torch.Tensor,
    retrieval_scores: torch.Tensor,
    retrieval_logprobs: torch.Tensor | None,
    candidates: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    retrieval_ranks: torch.Tensor,
    lambdas: Sequence[float],
    ties: Ties = "pessimistic",
) -> torch.Tensor:
    """The target's cascade rank [L, B] under each λ of `lambdas` [SPEC §2.3]: retrieval's top-C
    `candidates` [B, C] re-ranked by combined_scores(log P(next), like logit, λ), the target's
    0-based rank among them under the tie rule `ties`, or C when retrieval missed it.

    like_logits [B, C]: the ranking head's logit of each candidate (or any monotone transform of
    P(like), e.g. the oracle's logit of the true probability); retrieval_scores [B, C]: the
    candidates' retrieval scores; retrieval_logprobs [B, C]: their log P(next)
    (`retrieval_log_probs`), needed only for 0 < λ < inf; mask: [B, I] bool (True = excluded);
    retrieval_ranks: [B] under `ties`.

    λ = 0 ranks by the retrieval scores (the order of log P(next), without the float rounding
    of the softmax's shift); λ = inf by the like logit, retrieval breaking its exact ties (the
    order `combined_scores(.., inf)` approximates with its 1e-6 tie-breaker, here exact, so that
    it equals `cascade_ranks_from_logits` wherever the logits have no exact ties). Computed in
    float64.
    """
    if tuple(like_logits.shape) != tuple(candidates.shape):
        raise ValueError(
            f"ranking logits {tuple(like_logits.shape)} do not match candidates {tuple(candidates.shape)}"
        )
    eligible = ~mask.gather(1, candidates)
    retrieved, position = _target_columns(candidates, targets, retrieval_ranks)
    miss = torch.full_like(retrieval_ranks, candidates.shape[1])
    retrieval = retrieval_scores.double()
    like = like_logits.double()
    out = []
    for lam in lambdas:
        if lam == 0:
            keys = [retrieval]
        elif math.isinf(lam):
            keys = [like, retrieval]
        else:
            if retrieval_logprobs is None:
                raise ValueError(f"λ = {lam:g} needs the candidates' retrieval log-probabilities")
            keys = [combined_scores(retrieval_logprobs.double(), like, lam)]
        ranks = _lexicographic_ranks(keys, position, eligible, ties)
        out.append(torch.where(retrieved, ranks, miss))
    return torch.stack(out) if out else miss.new_empty((0, len(miss)))


def cascade_ranks(
    ranking_model: EvalModel,
    batch: Mapping[str, torch.Tensor],
    scores: torch.Tensor,
    mask: torch.Tensor,
    retrieval_ranks: torch.Tensor,
    top_c: int,
    ties: Ties = "pessimistic",
    lambdas: Sequence[float] = (math.inf,),
    temperature: float | None = None,
) -> torch.Tensor:
    """Rank of the target after retrieval top-C -> re-ranking by the combined score, for each λ
    of `lambdas` [SPEC §2.3] (the two-pass path: `ranking_model.score_candidates` encodes the
    prefix again).

    scores: [B, I] retrieval scores; mask: [B, I] bool (True = excluded);
    retrieval_ranks: [B] the targets' retrieval ranks under the same tie rule `ties`;
    temperature: the retriever's (`retrieval_temperature`), needed for 0 < λ < inf.
    Returns [L, B] long: the target's 0-based rank among the C candidates, or C when retrieval
    did not put it in its top C (a miss at every cut-off k <= C) or the target is not liked (no
    cascade metric counts those users: their candidates are not scored).
    """
    timestamps = batch.get("timestamps")

    def score(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        logits = ranking_model.score_candidates(
            batch["items"][rows],
            batch["feedback"][rows],
            timestamps[rows] if timestamps is not None else None,
            batch["lengths"][rows],
            candidates,
        )
        if tuple(logits.shape) != tuple(candidates.shape):
            raise ValueError(
                f"{type(ranking_model).__name__}.score_candidates returned {tuple(logits.shape)}, "
                f"expected {tuple(candidates.shape)}"
            )
        return logits

    return _cascade_where_it_counts(
        scores, mask, batch, retrieval_ranks, top_c, ties, score, lambdas, temperature
    )


def _cascade_where_it_counts(
    scores: torch.Tensor,
    mask: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    retrieval_ranks: torch.Tensor,
    top_c: int,
    ties: Ties,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lambdas: Sequence[float],
    temperature: float | None,
) -> torch.Tensor:
    """Cascade ranks [L, B] (see `cascade_ranks`) with the ranking run once, on the
    `cascade_rows` only: `score(rows [R], candidates [R, C]) -> logits [R, C]`; every other row
    gets C. The λs share the candidates and their logits; only the sort differs."""
    candidates = cascade_candidates(scores, mask, top_c)
    top = candidates.shape[1]
    out = torch.full(
        (len(lambdas), len(retrieval_ranks)), top, dtype=retrieval_ranks.dtype, device=scores.device
    )
    rows = cascade_rows(retrieval_ranks, batch["target_likes"], top)
    if len(rows):
        chosen, row_mask, row_scores = candidates[rows], mask[rows], scores[rows]
        logits = score(rows, chosen)
        logprobs = None
        if any(0 < lam < math.inf for lam in lambdas):
            if temperature is None:
                raise ValueError(
                    "the cascade's combined score at 0 < λ < inf needs P(next): the retrieval model "
                    "has no `retrieval_temperature` (evaluate only λ in {0, inf} with it: "
                    "eval.cascade_lambdas=[0, .inf])"
                )
            # float64: distinct float32 scores stay distinct after the softmax's shift
            logprobs = retrieval_log_probs(row_scores.double(), row_mask, temperature).gather(1, chosen)
        out[:, rows] = cascade_ranks_by_lambda(
            logits,
            row_scores.gather(1, chosen),
            logprobs,
            chosen,
            row_mask,
            batch["targets"][rows],
            retrieval_ranks[rows],
            lambdas,
            ties,
        )
    return out


def _score_with_prefix(
    model: PrefixEvalModel,
    batch: Mapping[str, torch.Tensor],
    num_items: int,
    top_c: int,
    ties: Ties,
    lambdas: Sequence[float],
    cascade: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One prefix pass + continuations: -> (retrieval ranks [B], cascade ranks [L, B] as
    `cascade_ranks` gives them (None without the cascade), target like logits [B]).

    The history is encoded once (`eval_prefix`); the target, then retrieval's top-C candidates
    of the `cascade_rows`, are scored as tokens placed right after it, each seeing the prefix
    and itself only — what `score_eval`'s appended target token sees, so the numbers equal the
    two-pass path's (tests/test_evaluate.py checks it) at about half the cost.
    """
    scores, prefix = model.eval_prefix(batch)
    scores = scores.float()
    targets = batch["targets"]
    if tuple(scores.shape) != (targets.shape[0], num_items + 1):
        raise ValueError(
            f"{type(model).__name__}.eval_prefix returned scores {tuple(scores.shape)}; "
            f"expected {(targets.shape[0], num_items + 1)}"
        )
    mask = history_mask(batch["history"], num_items, targets)
    ranks = target_ranks(scores, targets, mask, ties=ties)
    if not getattr(model, "has_ranking", True):  # a retriever alone: nothing to re-rank
        return ranks, None, torch.zeros_like(scores[:, 0])
    lengths = batch["lengths"]
    target_logits = model.score_candidates(None, None, None, lengths, targets[:, None], prefix=prefix)
    if not cascade:
        return ranks, None, target_logits[:, 0].float()

    def score(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return model.score_candidates(None, None, None, lengths[rows], candidates, prefix=prefix.select(rows))

    temperature = getattr(model, "retrieval_temperature", None)
    cascade_rank = _cascade_where_it_counts(
        scores, mask, batch, ranks, top_c, ties, score, lambdas, temperature
    )
    return ranks, cascade_rank, target_logits[:, 0].float()


def evaluated_lambdas(cfg: EvalConfig, cascade_lambda: float | None = None) -> tuple[float, ...]:
    """The λs one evaluation ranks by, ascending: `cfg.cascade_lambdas`, 0 (retrieval alone,
    always reported) and `cascade_lambda` when given."""
    extra = {0.0} | (
        {cascade_lambda} if cascade_lambda is not None and not math.isnan(cascade_lambda) else set()
    )
    return tuple(sorted(set(cfg.cascade_lambdas) | extra))


def check_cascade_lambda(split: str, cascade_lambda: float | None, needed: bool) -> None:
    """The test split is never used to choose λ: it must come from validation."""
    if cascade_lambda is not None and cascade_lambda < 0:  # NaN passes: no λ was chosen
        raise ValueError(f"cascade_lambda must be >= 0, got {cascade_lambda}")
    if needed and cascade_lambda is None and split != "val":
        raise ValueError(
            f"evaluate(split={split!r}): the cascade's λ is chosen on validation, never on {split}; "
            "pass cascade_lambda (a run's result['cascade_lambda'], or evaluate 'val' first), "
            "or cascade=False"
        )


def cascade_lambda_metrics(
    by_lambda: torch.Tensor | None,
    liked: np.ndarray,
    lambdas: Sequence[float],
    cfg: EvalConfig,
    cascade_lambda: float | None,
) -> tuple[dict[str, float], np.ndarray]:
    """The λ part of the cascade, and the cascade ranks at the chosen λ.

    by_lambda: [L, U] cascade ranks under each λ of `lambdas` (None: no cascade computed);
    liked: [U] bool, the users the cascade counts; cascade_lambda: the λ to report (None:
    chosen here, `choose_lambda` on cascade NDCG@K over `cfg.cascade_lambdas` — validation
    only, see `check_cascade_lambda`; NaN when no λ has a finite value, i.e. no liked target).
    Returns ({cascade_hr@K, cascade_ndcg@K at the chosen λ, cascade_lambda, cascade0_hr@K,
    cascade0_ndcg@K (λ = 0: retrieval alone, over the same liked users, ranks capped at C),
    cascade_ndcg@K/lambda_<λ> for each λ of cfg.cascade_lambdas}, cascade_rank [U] at the
    chosen λ, NOT_COUNTED where not liked). Per-user means as `outcomes.per_user` computes
    them, so they equal `metrics_from_outcomes` of a frame with that cascade_rank column.
    """
    k = cfg.cascade_k
    liked = np.asarray(liked, dtype=bool)
    not_counted = np.full(len(liked), NOT_COUNTED, dtype=np.int64)
    if by_lambda is None:
        names = [
            f"cascade_hr@{k}",
            f"cascade_ndcg@{k}",
            "cascade_lambda",
            f"cascade0_hr@{k}",
            f"cascade0_ndcg@{k}",
        ]
        names += [f"cascade_ndcg@{k}/lambda_{format_lambda(lam)}" for lam in cfg.cascade_lambdas]
        return dict.fromkeys(names, math.nan), not_counted
    columns = {lam: np.where(liked, by_lambda[i].cpu().numpy(), NOT_COUNTED) for i, lam in enumerate(lambdas)}

    def mean(column: np.ndarray, metric: str) -> float:
        values = per_user(pd.DataFrame({"cascade_rank": column}), metric)
        return float(values.mean()) if len(values) else math.nan

    curve = {lam: mean(columns[lam], f"cascade_ndcg@{k}") for lam in cfg.cascade_lambdas}
    if cascade_lambda is None:
        try:
            cascade_lambda = choose_lambda(curve, cfg.cascade_lambdas)
        except ValueError:  # no liked target: nothing to choose on
            cascade_lambda = math.nan
    chosen = not_counted if math.isnan(cascade_lambda) else columns[cascade_lambda]
    out = {
        f"cascade_hr@{k}": mean(chosen, f"cascade_hr@{k}"),
        f"cascade_ndcg@{k}": mean(chosen, f"cascade_ndcg@{k}"),
        "cascade_lambda": float(cascade_lambda),
        f"cascade0_hr@{k}": mean(columns[0.0], f"cascade_hr@{k}"),
        f"cascade0_ndcg@{k}": mean(columns[0.0], f"cascade_ndcg@{k}"),
    }
    out.update({f"cascade_ndcg@{k}/lambda_{format_lambda(lam)}": v for lam, v in curve.items()})
    return out, chosen


@overload
def evaluate(
    model: EvalModel,
    data: SequenceData,
    split: str,
    cfg: EvalConfig,
    device: torch.device | str = ...,
    ranking_model: EvalModel | None = ...,
    users: np.ndarray | None = ...,
    cascade: bool = ...,
    cascade_lambda: float | None = ...,
    outcomes: Literal[False] = ...,
    store: BatchStore | None = ...,
) -> dict[str, float]: ...


@overload
def evaluate(
    model: EvalModel,
    data: SequenceData,
    split: str,
    cfg: EvalConfig,
    device: torch.device | str = ...,
    ranking_model: EvalModel | None = ...,
    users: np.ndarray | None = ...,
    cascade: bool = ...,
    cascade_lambda: float | None = ...,
    *,
    outcomes: Literal[True],
    store: BatchStore | None = ...,
) -> tuple[dict[str, float], pd.DataFrame]: ...


def evaluate(
    model: EvalModel,
    data: SequenceData,
    split: str,
    cfg: EvalConfig,
    device: torch.device | str = "cpu",
    ranking_model: EvalModel | None = None,
    users: np.ndarray | None = None,
    cascade: bool = True,
    cascade_lambda: float | None = None,
    outcomes: bool = False,
    store: BatchStore | None = None,
) -> dict[str, float] | tuple[dict[str, float], pd.DataFrame]:
    """Retrieval, ranking and cascade metrics of `model` on `split` ("val" or "test"); with
    `outcomes=True`, (metrics, the per-user outcomes frame they are computed from:
    `unigrf.evaluation.outcomes`, one row per user, cascade_rank at the reported λ).

    `cascade=False` skips the cascade (its metrics are NaN): the model then scores only the
    target as the next item instead of the target and retrieval's top-C — on short histories
    (Amazon: ~7 items) the top-C continuation is most of an evaluation's cost, and the training
    loop's per-epoch validation needs it only when the objective has a cascade term.

    The cascade re-ranks retrieval's top C by log P(next) + λ·log σ(like logit) for every λ of
    `cfg.cascade_lambdas` (P(next): softmax of the retrieval scores over the eligible items at
    the model's `retrieval_temperature`). `cascade_lambda` is the λ whose cascade is reported
    (cascade_hr@K / cascade_ndcg@K); None chooses it here, on this split, which only
    validation may do: on test pass validation's (a test evaluation without it is refused).

    Retrieval scores (and P(next)) come from `model`; ranking (AUC/LogLoss of the target's like
    label, and the like logits of the cascade) from `ranking_model` when given (the two-stage
    pipeline), else from `model`. `users`: a subset of user indices (default: all).
    `store` (`unigrf.evaluation.batch_store`): batches it holds for this very evaluation are
    not computed again, and every `store.every` new ones are handed to it — an interrupted
    evaluation resumes, to the same numbers.
    Keys: hr@k, ndcg@k (k in cfg.ks), mrr, auc, logloss, cascade_hr@K, cascade_ndcg@K
    (K = cfg.cascade_k; at the chosen λ, over the users whose target is liked, their number in
    cascade_num_users — 0 when no cascade was computed), cascade_lambda (the λ reported),
    cascade0_hr@K, cascade0_ndcg@K (λ = 0: retrieval alone over the same users, ranks capped
    at C), cascade_ndcg@K/lambda_<λ> (each λ of cfg.cascade_lambdas: the curve λ is chosen
    on), num_users. Undefined values (e.g. AUC with one class) are NaN, and so are the ranking
    and cascade metrics of a model without a ranking head (`has_ranking`).
    """
    users = _check_users(data, split, users)
    ranker = ranking_model if ranking_model is not None else model
    ranks_feedback = getattr(ranker, "has_ranking", True)
    with_cascade = ranks_feedback and cascade
    check_cascade_lambda(split, cascade_lambda, with_cascade)
    lambdas = evaluated_lambdas(cfg, cascade_lambda)
    temperature = getattr(model, "retrieval_temperature", None)
    all_users, all_ranks, all_cascade, all_logits, all_likes = [], [], [], [], []
    # One prefix pass when the model offers it (and serves both stages); else score_eval's
    # pass over history + target, then score_candidates over the prefix again.
    reuse_prefix = ranking_model is None and hasattr(model, "eval_prefix")
    # a catalogue beyond one item chunk is scored chunk by chunk (memory: users x chunk); imported
    # here because topk builds on this module's cascade functions
    from unigrf.evaluation.topk import score_with_prefix_chunked, use_chunks

    score_prefix = score_with_prefix_chunked if use_chunks(model, data.num_items) else _score_with_prefix
    key = stored = None
    if store is not None:
        models = [model] if ranking_model is None else [model, ranking_model]
        # how often the batches are stored is not what they hold
        what = dataclasses.replace(cfg, checkpoint_every_batches=0)
        key = fingerprint(models, split, users, what, with_cascade, lambdas, cascade_lambda, str(device))
        stored = store.load(key)
    scorer = _BatchScorer(
        model, ranking_model, ranker, data, split, cfg, device, score_prefix if reuse_prefix else None,
        lambdas, with_cascade, temperature,
    )  # fmt: skip
    pending: dict[int, BatchRecord] = {}
    with _inference(model, ranker):
        for i, chunk in enumerate(_batches(data, users, cfg.batch_size)):
            record = stored.get(i) if stored else None
            if record is None:
                record = scorer(chunk)
                if store is not None:
                    pending[i] = record
                    if len(pending) >= store.every:
                        store.save(key, pending)
                        pending = {}
            all_users.append(record.users)
            all_ranks.append(record.ranks)
            if record.cascade is not None:
                all_cascade.append(record.cascade)
            all_logits.append(record.logits)
            all_likes.append(record.likes)

    # every per-user array in user order: the outcomes frame's order, so that a metric computed
    # here and one recomputed from the frame sum the same numbers in the same order
    order = np.argsort(np.concatenate(all_users), kind="stable")
    liked = torch.cat(all_likes).numpy()[order] > 0.5
    by_lambda = torch.cat(all_cascade, dim=1)[:, order] if with_cascade else None
    extras, cascade_column = cascade_lambda_metrics(by_lambda, liked, lambdas, cfg, cascade_lambda)
    logits = torch.cat(all_logits).numpy()[order]
    frame = outcomes_frame(
        np.concatenate(all_users)[order],
        torch.cat(all_ranks).numpy()[order],
        liked.astype(np.int8),
        logits if ranks_feedback else np.full(len(logits), math.nan),
        cascade_column,
    )
    out = metrics_from_outcomes(frame, cfg.ks, cfg.cascade_k)  # the cascade's two equal `extras`'
    num_users = out.pop("num_users")
    out.update(extras)
    out["num_users"] = num_users
    return (out, frame) if outcomes else out


@dataclasses.dataclass(frozen=True)
class _BatchScorer:
    """What `evaluate` computes for one user batch, with the evaluation's fixed inputs bound:
    its target ranks, cascade ranks per λ, like logits and labels (on the CPU)."""

    model: EvalModel
    ranking_model: EvalModel | None
    ranker: EvalModel  # ranking_model, else model
    data: SequenceData
    split: str
    cfg: EvalConfig
    device: torch.device | str
    # one prefix pass (`_score_with_prefix` or its chunked form); None: score_eval, then candidates
    score_prefix: Callable[..., Any] | None
    lambdas: Sequence[float]
    with_cascade: bool
    temperature: float | None

    def __call__(self, chunk: np.ndarray) -> BatchRecord:
        cfg, num_items = self.cfg, self.data.num_items
        batch = _to_device(self.data.eval_batch(chunk, self.split), self.device)
        if self.score_prefix is not None:
            ranks, cascade_rank, rank_logit = self.score_prefix(
                self.model, batch, num_items, cfg.cascade_top_c, cfg.ties, self.lambdas, self.with_cascade
            )
        else:
            scores, rank_logit = _score_eval(self.model, batch, num_items)
            if self.ranking_model is not None:
                _, rank_logit = _score_eval(self.ranking_model, batch, num_items)
            scores = scores.float()
            mask = history_mask(batch["history"], num_items, batch["targets"])
            ranks = target_ranks(scores, batch["targets"], mask, ties=cfg.ties)
            cascade_rank = None
            if self.with_cascade:
                top_c, ties = cfg.cascade_top_c, cfg.ties
                cascade_rank = cascade_ranks(
                    self.ranker, batch, scores, mask, ranks, top_c, ties, self.lambdas, self.temperature
                )
        return BatchRecord(
            users=chunk,
            ranks=ranks.cpu(),
            cascade=cascade_rank.cpu() if cascade_rank is not None else None,
            logits=rank_logit.double().cpu(),
            likes=batch["target_likes"].cpu(),
        )


def popularity_baseline(
    data: SequenceData, split: str, cfg: EvalConfig, users: np.ndarray | None = None
) -> dict[str, float]:
    """Retrieval metrics of scoring every item by its interaction count over the data visible
    before `split`'s targets (`data.item_counts(split)`), history masked as in `evaluate`.
    Keys: hr@k, ndcg@k (k in cfg.ks), mrr, num_users."""
    users = _check_users(data, split, users)
    counts = torch.as_tensor(data.item_counts(split), dtype=torch.float64)  # [I]
    all_ranks = []
    for chunk in _batches(data, users, cfg.batch_size):
        batch = data.eval_batch(chunk, split)
        scores = counts.expand(len(chunk), -1)  # [B, I], a view
        mask = history_mask(batch["history"], data.num_items, batch["targets"])
        all_ranks.append(target_ranks(scores, batch["targets"], mask, ties=cfg.ties))
    out = retrieval_metrics(torch.cat(all_ranks), cfg.ks)
    out["num_users"] = len(users)
    return out


def format_metrics_table(
    rows: Mapping[str, Mapping[str, float]], digits: int = 4, index_name: str = "system"
) -> str:
    """A Markdown table, one row per system, one column per metric (first-seen order).

    Integers print as integers, floats with `digits` decimals, a metric a row lacks as "—".
    """

    def cell(value: float | int | None) -> str:
        if value is None:
            return "—"
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return str(int(value))
        return f"{float(value):.{digits}f}"

    columns = list(dict.fromkeys(key for metrics in rows.values() for key in metrics))
    header = [index_name, *columns]
    body = [[str(name), *(cell(metrics.get(c)) for c in columns)] for name, metrics in rows.items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:])]) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in body)])
