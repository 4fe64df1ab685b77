"""Full-ranking evaluation of a model on a leave-one-out split [SPEC §2.1–2.3].

`evaluate` scores every user's held-out target against the whole item catalogue (padding item 0
and the user's history excluded, the target itself never), measures the ranking branch on the
target's like label, and runs the cascade a serving system would: retrieval's top-C, re-scored
by the ranking branch, final top-k. `popularity_baseline` gives the retrieval metrics of
ranking by item count. Both loop over batches of users only; everything per user is
vectorised. Pure torch/numpy (no Ray).

Model API used (docs/ARCHITECTURE.md):
- `score_eval(batch) -> (scores [B, num_items + 1], rank_logit [B])` on an `eval_batch`:
  raw retrieval scores of all items at the last history position, and the ranking logit of
  the appended target item;
- `score_candidates(items, feedback, timestamps, lengths, candidates [B, C]) -> [B, C]`: the
  ranking logit of each candidate as the next item after the prefix (positions < lengths);
- optionally `eval_prefix(batch) -> (scores, prefix)` plus `score_candidates(..., prefix=)`:
  the history encoded once, then the target and the cascade's candidates scored as
  continuations of it (`PrefixEvalModel`; UniGRF and TwoStage have it) — half the model work;
  `prefix.select(rows)` gives the prefix of some rows alone.

The cascade's candidates are scored only for the users whose cascade rank they decide
(`cascade_rows`: target liked and retrieved in the top C): the same metrics, for a fraction of
the continuation work.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np
import torch
from torch import nn

from unigrf.config import EvalConfig
from unigrf.data.sequences import SPLITS, SequenceData
from unigrf.evaluation.metrics import (
    Ties,
    auc,
    history_mask,
    hit_rate,
    logloss,
    mrr,
    ndcg,
    target_ranks,
)


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


def cascade_ranks_from_logits(
    logits: torch.Tensor,
    candidates: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    retrieval_ranks: torch.Tensor,
    ties: Ties = "pessimistic",
) -> torch.Tensor:
    """The target's rank [B] after re-scoring retrieval's top-C `candidates` [B, C] by the
    ranking `logits` [B, C] [SPEC §2.3]: its 0-based rank among the C candidates, or C when
    retrieval did not put it in its top C (a miss at every cut-off k <= C).

    mask: [B, I] bool (True = excluded); retrieval_ranks: [B] under the same tie rule `ties`.
    """
    if tuple(logits.shape) != tuple(candidates.shape):
        raise ValueError(
            f"ranking logits {tuple(logits.shape)} do not match candidates {tuple(candidates.shape)}"
        )
    top_c = candidates.shape[1]
    # With fewer eligible items than C, topk pads the candidates with excluded ones: never rank them.
    logits = logits.float().masked_fill(mask.gather(1, candidates), -math.inf)
    is_target = candidates == targets.view(-1, 1)  # [B, C]
    # `retrieval_ranks < C` keeps the cascade consistent with hr@C under the tie rule, whatever
    # order topk gives tied scores (optimistic ties can rank more than C items "in" the top C).
    retrieved = is_target.any(dim=1) & (retrieval_ranks < top_c)
    position = is_target.int().argmax(dim=1)  # the target's column when retrieved
    ranks = target_ranks(logits, position, ties=ties)
    return torch.where(retrieved, ranks, torch.full_like(ranks, top_c))


def cascade_ranks(
    ranking_model: EvalModel,
    batch: Mapping[str, torch.Tensor],
    scores: torch.Tensor,
    mask: torch.Tensor,
    retrieval_ranks: torch.Tensor,
    top_c: int,
    ties: Ties = "pessimistic",
) -> torch.Tensor:
    """Rank of the target after retrieval top-C -> ranking re-score [SPEC §2.3].

    scores: [B, I] retrieval scores; mask: [B, I] bool (True = excluded);
    retrieval_ranks: [B] the targets' retrieval ranks under the same tie rule `ties`.
    Returns [B] long: the target's 0-based rank among the C candidates by ranking logit, or C
    when retrieval did not put it in its top C (a miss at every cut-off k <= C) or the target
    is not liked (no cascade metric counts those users: their candidates are not scored).
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

    return _cascade_where_it_counts(scores, mask, batch, retrieval_ranks, top_c, ties, score)


def _cascade_where_it_counts(
    scores: torch.Tensor,
    mask: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    retrieval_ranks: torch.Tensor,
    top_c: int,
    ties: Ties,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Cascade ranks [B] (see `cascade_ranks`) with the ranking run on the `cascade_rows` only:
    `score(rows [R], candidates [R, C]) -> logits [R, C]`; every other row gets C."""
    candidates = cascade_candidates(scores, mask, top_c)
    out = torch.full_like(retrieval_ranks, candidates.shape[1])
    rows = cascade_rows(retrieval_ranks, batch["target_likes"], candidates.shape[1])
    if len(rows):
        out[rows] = cascade_ranks_from_logits(
            score(rows, candidates[rows]).float(),
            candidates[rows],
            mask[rows],
            batch["targets"][rows],
            retrieval_ranks[rows],
            ties,
        )
    return out


def _score_with_prefix(
    model: PrefixEvalModel,
    batch: Mapping[str, torch.Tensor],
    num_items: int,
    top_c: int,
    ties: Ties,
    cascade: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One prefix pass + continuations: -> (retrieval ranks [B], cascade ranks [B] as
    `cascade_ranks` gives them, target like logits [B]).

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
        return ranks, torch.full_like(ranks, top_c), torch.zeros_like(scores[:, 0])
    lengths = batch["lengths"]
    target_logits = model.score_candidates(None, None, None, lengths, targets[:, None], prefix=prefix)
    if not cascade:
        return ranks, torch.full_like(ranks, top_c), target_logits[:, 0].float()

    def score(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return model.score_candidates(None, None, None, lengths[rows], candidates, prefix=prefix.select(rows))

    cascade_rank = _cascade_where_it_counts(scores, mask, batch, ranks, top_c, ties, score)
    return ranks, cascade_rank, target_logits[:, 0].float()


def evaluate(
    model: EvalModel,
    data: SequenceData,
    split: str,
    cfg: EvalConfig,
    device: torch.device | str = "cpu",
    ranking_model: EvalModel | None = None,
    users: np.ndarray | None = None,
    cascade: bool = True,
) -> dict[str, float]:
    """Retrieval, ranking and cascade metrics of `model` on `split` ("val" or "test").

    `cascade=False` skips the cascade (its metrics are NaN): the model then scores only the
    target as the next item instead of the target and retrieval's top-C — on short histories
    (Amazon: ~7 items) the top-C continuation is most of an evaluation's cost, and the training
    loop's per-epoch validation needs it only when the objective has a cascade term.

    Retrieval scores come from `model`; ranking (AUC/LogLoss of the target's like label, and the
    cascade re-scoring) from `ranking_model` when given (the two-stage pipeline), else from
    `model`. `users`: a subset of user indices (default: all).
    Keys: hr@k, ndcg@k (k in cfg.ks), mrr, auc, logloss, cascade_hr@K, cascade_ndcg@K
    (K = cfg.cascade_k; over the users whose target is liked, their number in
    cascade_num_users), num_users. Undefined values (e.g. AUC with one class) are NaN, and so
    are the ranking and cascade metrics of a model without a ranking head (`has_ranking`).
    """
    users = _check_users(data, split, users)
    ranker = ranking_model if ranking_model is not None else model
    ranks_feedback = getattr(ranker, "has_ranking", True)
    all_ranks, all_cascade, all_logits, all_likes = [], [], [], []
    # One prefix pass when the model offers it (and serves both stages); else score_eval's
    # pass over history + target, then score_candidates over the prefix again.
    reuse_prefix = ranking_model is None and hasattr(model, "eval_prefix")
    with _inference(model, ranker):
        for chunk in _batches(data, users, cfg.batch_size):
            batch = _to_device(data.eval_batch(chunk, split), device)
            if reuse_prefix:
                ranks, cascade_rank, rank_logit = _score_with_prefix(
                    model, batch, data.num_items, cfg.cascade_top_c, cfg.ties, cascade
                )
            else:
                scores, rank_logit = _score_eval(model, batch, data.num_items)
                if ranking_model is not None:
                    _, rank_logit = _score_eval(ranking_model, batch, data.num_items)
                scores = scores.float()
                mask = history_mask(batch["history"], data.num_items, batch["targets"])
                ranks = target_ranks(scores, batch["targets"], mask, ties=cfg.ties)
                cascade_rank = (
                    cascade_ranks(ranker, batch, scores, mask, ranks, cfg.cascade_top_c, cfg.ties)
                    if cascade
                    else torch.full_like(ranks, cfg.cascade_top_c)
                )
            all_ranks.append(ranks.cpu())
            all_cascade.append(cascade_rank.cpu())
            all_logits.append(rank_logit.double().cpu())
            all_likes.append(batch["target_likes"].cpu())

    ranks = torch.cat(all_ranks)
    likes = torch.cat(all_likes)
    probs = torch.sigmoid(torch.cat(all_logits))  # float64: saturates to 1 only past logit ~37
    liked = likes > 0.5
    cascade_ranked = torch.cat(all_cascade)[liked]
    out = retrieval_metrics(ranks, cfg.ks)
    out["auc"] = auc(likes, probs) if ranks_feedback else math.nan
    out["logloss"] = logloss(likes, probs) if ranks_feedback else math.nan
    with_cascade = ranks_feedback and cascade
    out[f"cascade_hr@{cfg.cascade_k}"] = hit_rate(cascade_ranked, cfg.cascade_k) if with_cascade else math.nan
    out[f"cascade_ndcg@{cfg.cascade_k}"] = ndcg(cascade_ranked, cfg.cascade_k) if with_cascade else math.nan
    out["cascade_num_users"] = int(liked.sum())
    out["num_users"] = len(users)
    return out


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
