"""The count model: a ranking floor that learns nothing but like rates [SPEC §3].

AUC here is global over one held-out event per user, so a user's propensity to like (some
users like almost everything) and an item's (some items are liked by almost everyone) carry
much of it. The count model measures how much: with, on the **training part only** (each
user's interactions before the validation target, `SequenceData` leave-one-out; the same fit
serves validation and test, so neither target ever counts):

    g   = likes / interactions over every training part          (the global like rate)
    p_u = (likes_u + k·g) / (n_u + k)                             (user u's, smoothed to g)
    p_i = (likes_i + k·g) / (n_i + k)                             (item i's, smoothed to g)
    logit P(like | u, i) = logit(p_u) + logit(p_i) − logit(g)

with k = 5 pseudo-counts. The sum of logits is the naive-Bayes combination of two pieces of
evidence assumed independent given the like: each of user and item moves the prior odds
g/(1 − g) by its own likelihood ratio, p/(1 − p) ÷ g/(1 − g). An item never seen in training
has p_i = g and moves nothing; a user with no training interaction likewise.

It has no retrieval: its per-user outcomes carry `rank = num_items` (the target after every
item; a placeholder the ablation layer never reads, the count model being a ranking-only row)
and no cascade (`cascade_rank = -1`).

Pure numpy (no torch model, no Ray).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from unigrf.data.sequences import SPLITS, SequenceData
from unigrf.evaluation.metrics import auc, logloss
from unigrf.evaluation.outcomes import outcomes_frame

PSEUDO_COUNTS = 5.0


@dataclass(frozen=True)
class CountModel:
    """Fitted log-odds: `user` [U], `item` [num_items + 1] (index 0 = padding, unused), and
    the global rate's `prior` (a scalar); `like_logits` combines them."""

    user: np.ndarray  # [U] logit(p_u)
    item: np.ndarray  # [I + 1] logit(p_i)
    prior: float  # logit(g)
    global_rate: float  # g
    pseudo_counts: float

    def like_logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[B] logit P(like) of each (user, item) pair: user + item − prior log-odds."""
        return self.user[users] + self.item[items] - self.prior


def _smoothed_logodds(likes: np.ndarray, counts: np.ndarray, rate: float, k: float) -> np.ndarray:
    return logit((likes + k * rate) / (counts + k))


def fit_count_model(data: SequenceData, pseudo_counts: float = PSEUDO_COUNTS) -> CountModel:
    """Like rates of every user and item on the training part (the module docstring)."""
    if pseudo_counts <= 0:
        raise ValueError(f"pseudo_counts must be > 0, got {pseudo_counts}")
    n_train = np.clip(data.lengths - 2, 0, None)  # [U] interactions before the validation target
    position = np.arange(len(data.items)) - np.repeat(data.offsets[:-1], data.lengths)
    train = position < np.repeat(n_train, data.lengths)  # [total]
    liked = (data.ratings >= data.like_threshold) & train
    total = int(train.sum())
    if total == 0:
        raise ValueError(f"{data.name}: no training interactions to count")
    rate = float(liked.sum()) / total  # exact: like_statistics keeps its rate inside (0, 1)
    if not 0.0 < rate < 1.0:
        raise ValueError(
            f"{data.name}: the training part's like rate is {rate:g}; a count model needs both "
            "liked and not liked interactions"
        )
    user_of = np.repeat(np.arange(data.num_users), data.lengths)
    user_likes = np.bincount(user_of, weights=liked, minlength=data.num_users)
    stats = data.like_statistics()  # the items' counts, as the model's ranking prior reads them
    return CountModel(
        user=_smoothed_logodds(user_likes, n_train.astype(np.float64), rate, pseudo_counts),
        item=_smoothed_logodds(stats["item_likes"], stats["item_ratings"], rate, pseudo_counts),
        prior=float(logit(rate)),
        global_rate=rate,
        pseudo_counts=float(pseudo_counts),
    )


def count_model_outcomes(
    data: SequenceData, split: str, model: CountModel | None = None, users: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-user outcomes (`unigrf.evaluation.outcomes` schema) of the count model's like logit
    for each user's `split` target; `users` default: every user with >= 3 interactions (the
    users the evaluation scores)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    model = model if model is not None else fit_count_model(data)
    if users is None:
        users = np.flatnonzero(data.lengths >= 3)
    users = np.asarray(users, dtype=np.int64)
    target = data.offsets[users] + data.lengths[users] - (2 if split == "val" else 1)
    items = data.items[target]
    labels = (data.ratings[target] >= data.like_threshold).astype(np.int8)
    logits = model.like_logits(users, items)
    return outcomes_frame(users, np.full(len(users), data.num_items), labels, logits)


def count_model_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """AUC and LogLoss of a count-model outcomes frame (as `evaluate` computes them), and the
    number of users."""
    labels = frame["like_label"].to_numpy()
    probs = expit(frame["like_logit"].to_numpy())
    return {"auc": auc(labels, probs), "logloss": logloss(labels, probs), "num_users": len(frame)}
