"""Recommendation metrics as pure functions on tensors/arrays (no model, no data loading).

Retrieval [SPEC §2.1] works on the 0-based rank of the single held-out target among all
non-excluded items (full ranking, never sampled negatives):
- `target_ranks` turns a score matrix into ranks;
- `hit_rate`, `ndcg`, `mrr` average over users.

**Tie rule (pessimistic).** An item counts above the target when its score is strictly greater
*or equal* (the target itself aside). A model that gives every item the same score therefore
ranks the target last, never first, and the result does not depend on item ids, on the order of
items in the table or on how `torch.topk` breaks ties. Pass `ties="optimistic"` to count only
strictly greater scores (used to measure how much a tie-heavy scorer such as popularity depends
on the rule).

Ranking [SPEC §2.2] works on binary like labels and predicted like-probabilities: `auc`
(scikit-learn's `roc_auc_score`), `logloss` (scikit-learn's `log_loss`, probabilities clipped),
and `gauc` (per-group AUC, impression-weighted over the groups that have both classes).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss, roc_auc_score

Ties = Literal["pessimistic", "optimistic"]

ArrayLike = torch.Tensor | np.ndarray

# Probabilities are clipped to [eps, 1 - eps] before the log: a saturated sigmoid (exactly 0
# or 1 in float32) would otherwise give an infinite loss for one confident mistake.
LOGLOSS_EPS = 1e-7


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------


def history_mask(history: torch.Tensor, num_items: int, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Items to exclude from ranking: everything in the user's history, plus padding item 0.

    history: [B, H] long, item ids 1..num_items, 0 = padding.
    targets: [B] long or None; when given, the target is never masked even if it also appears
        in the history (a re-consumed item is a legitimate target and must stay rankable).
    Returns [B, num_items + 1] bool, True = excluded. Built with one scatter, no Python loop.
    """
    if history.numel() and (int(history.min()) < 0 or int(history.max()) > num_items):
        raise ValueError(
            f"history holds item ids outside 0..{num_items} "
            f"(min {int(history.min())}, max {int(history.max())})"
        )
    mask = torch.zeros(history.shape[0], num_items + 1, dtype=torch.bool, device=history.device)
    mask.scatter_(1, history.long(), True)
    mask[:, 0] = True  # padding is never a recommendation
    if targets is not None:
        mask.scatter_(1, targets.long().view(-1, 1), False)
    return mask


def contains_nan(x: torch.Tensor) -> bool:
    """Whether `x` holds a NaN. The sum is NaN whenever an element is (and when +inf and -inf
    meet), so one reduction answers for almost every tensor; only then is `isnan` run, which
    costs several passes over a [B, num_items] score matrix."""
    return bool(torch.isnan(x.sum())) and bool(torch.isnan(x).any())


def count_true(x: torch.Tensor) -> torch.Tensor:
    """[B, I] bool -> [B] long: True entries per row. Summed in int32 (rows hold far fewer than
    2^31 items): a bool sum into int64 takes tens of times longer on the CPU."""
    return x.sum(dim=1, dtype=torch.int32).long()


def target_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    ties: Ties = "pessimistic",
) -> torch.Tensor:
    """0-based rank of each target among the non-excluded items.

    scores: [B, I] float, higher = better. targets: [B] long, column index of the target.
    mask: [B, I] bool, True = excluded (history, padding); None = nothing excluded. The
        target's own mask entry is ignored: the target is always ranked.
    ties: "pessimistic" (default) counts other items with an equal score as ranked above the
        target; "optimistic" counts only strictly greater scores. See the module docstring.
    Returns [B] long: the number of eligible non-target items ranked above the target.
    """
    if scores.dim() != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(
            f"expected scores [B, I] and targets [B], got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    if contains_nan(scores):
        # NaN compares False with everything, which would silently rank a NaN target first.
        raise ValueError("scores contain NaN")
    targets = targets.long().view(-1, 1)
    competitors = torch.ones_like(scores, dtype=torch.bool) if mask is None else ~mask
    competitors.scatter_(1, targets, False)  # the target does not compete with itself
    target_score = scores.gather(1, targets)  # [B, 1]
    above = scores >= target_score if ties == "pessimistic" else scores > target_score
    return count_true(above & competitors)


def hit_rate(ranks: torch.Tensor, k: int) -> float:
    """HR@k: share of users whose target ranks in the top k. NaN for no users."""
    if ranks.numel() == 0:
        return math.nan
    return (ranks < k).double().mean().item()


def ndcg(ranks: torch.Tensor, k: int) -> float:
    """NDCG@k with one relevant item (ideal DCG = 1): mean of 1 / log2(rank + 2) if rank < k."""
    if ranks.numel() == 0:
        return math.nan
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    return torch.where(ranks < k, gain, torch.zeros_like(gain)).mean().item()


def mrr(ranks: torch.Tensor) -> float:
    """Mean reciprocal rank over the full ranking (no cut-off): mean of 1 / (rank + 1)."""
    if ranks.numel() == 0:
        return math.nan
    return (1.0 / (ranks.double() + 1.0)).mean().item()


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


def auc(labels: ArrayLike, probs: ArrayLike) -> float:
    """ROC AUC (scikit-learn). NaN, with a RuntimeWarning saying why, when only one class occurs.

    labels: [N] {0, 1}; probs: [N] scores (any monotone score works, e.g. logits).
    """
    y = _numpy(labels).astype(np.float64).ravel()
    p = _numpy(probs).astype(np.float64).ravel()
    classes = np.unique(y)
    if len(classes) < 2:
        which = f"all {len(y)} labels are {classes[0]:g}" if len(y) else "there are no labels"
        warnings.warn(f"AUC is undefined (NaN): {which}", RuntimeWarning, stacklevel=2)
        return math.nan
    return float(roc_auc_score(y, p))


def logloss(labels: ArrayLike, probs: ArrayLike, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy (scikit-learn `log_loss`), probabilities clipped to [eps, 1-eps].

    labels: [N] {0, 1}; probs: [N] like-probabilities. Defined for one class too. NaN for N = 0.
    """
    y = _numpy(labels).astype(np.float64).ravel()
    if len(y) == 0:
        return math.nan
    p = np.clip(_numpy(probs).astype(np.float64).ravel(), eps, 1.0 - eps)
    return float(log_loss(y, p, labels=[0, 1]))


def gauc(groups: ArrayLike, labels: ArrayLike, probs: ArrayLike) -> float:
    """Group AUC: per-group AUC averaged with weights = the group's number of impressions,
    over the groups that contain both classes (the others have no AUC and are skipped).

    groups: [N] group ids (e.g. users); labels: [N] {0, 1}; probs: [N] scores.
    Vectorised through the Mann-Whitney form AUC = (R+ - n+(n+ + 1)/2) / (n+ n-), with R+ the
    sum of the positives' within-group ranks (ties get the average rank, so a tie counts 1/2
    exactly as in `roc_auc_score`). NaN with a RuntimeWarning when no group has both classes.
    """
    frame = pd.DataFrame(
        {
            "g": _numpy(groups).ravel(),
            "y": _numpy(labels).astype(np.float64).ravel(),
            "p": _numpy(probs).astype(np.float64).ravel(),
        }
    )
    frame["r"] = frame.groupby("g")["p"].rank(method="average")
    frame["r_pos"] = frame["r"] * frame["y"]
    per = frame.groupby("g").agg(n=("y", "size"), n_pos=("y", "sum"), r_pos=("r_pos", "sum"))
    n_neg = per["n"] - per["n_pos"]
    both = (per["n_pos"] > 0) & (n_neg > 0)
    if not both.any():
        warnings.warn("GAUC is undefined (NaN): no group has both classes", RuntimeWarning, stacklevel=2)
        return math.nan
    per, n_neg = per[both], n_neg[both]
    group_auc = (per["r_pos"] - per["n_pos"] * (per["n_pos"] + 1) / 2) / (per["n_pos"] * n_neg)
    return float(np.average(group_auc, weights=per["n"]))
