"""The ranking head's prior: what a table of like counts knows, as the head's starting point.

AUC over one held-out event per user is dominated by who the user is and what the item is: the
count model (`unigrf.evaluation.count_model`: the user's and the item's like rates, smoothed
towards the global rate) reaches test AUC 0.78 on ML-100K and 0.64 on Amazon MI. A transformer
ranker can represent both rates, but on sparse data (Amazon MI: ~5 training ratings per user) it
over-fits the like labels long before it learns them: every ranking-only and UniGRF row stayed
at AUC 0.56–0.61 there, below the counts (reports/recipe/README.md, "Ranking prior").

So with `model.ranking_prior` the ranking logit is the count model plus the head:

    logit(like | history, i) = f_φ(h_i) + w_u · u + w_i · v_i + logit g

- u = logit p_u − logit g: p_u the user's like rate over the feedback tokens the model sees
  before the item (the count model's user rate when the history fits in `max_len`);
- v_i = logit p_i − logit g: p_i the item's like rate over every user's training part — at a
  training position without that position's own label (leave one out), so the term never
  reads the label it is trained on;
- both rates smoothed towards the global training like rate g with `PSEUDO_COUNTS`
  pseudo-ratings, as the count model; w_u = 1 + δ_u, w_i = 1 + δ_i with learned shifts δ
  starting at 0.

The head's last layer starts at zero, so the model starts as the count model (its naive-Bayes
sum of logits) and f_φ learns what the counts miss. Every learned part of the prior is zero at
the count model — the head's last layer and the shifts — so the recipe's weight decay (on every
parameter) pulls the ranker back towards the counts; decaying w_u and w_i themselves would pull
them towards 0 and fade the counts out as training goes on. The like levels, g and the item counts are
buffers saved with the weights: a served or reloaded model needs no data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unigrf.evaluation.count_model import PSEUDO_COUNTS  # the count model's smoothing (SPEC §3)

__all__ = ["PSEUDO_COUNTS", "PriorStats", "RankingPrior"]


@dataclass(frozen=True)
class PriorStats:
    """What the prior reads from the training data (`PriorStats.of(SequenceData.like_statistics())`).

    like_levels [num_levels + 1] bool: which feedback levels are likes (0, padding, never);
    like_rate: the training part's like rate, in (0, 1);
    item_likes, item_ratings [num_items + 1]: each item's likes and ratings in the training part.
    """

    like_levels: Tensor
    like_rate: float
    item_likes: Tensor
    item_ratings: Tensor

    @classmethod
    def of(cls, statistics: Mapping[str, Any]) -> PriorStats:
        """From `SequenceData.like_statistics()` (numpy arrays and a float)."""
        return cls(
            like_levels=torch.as_tensor(statistics["like_levels"], dtype=torch.bool),
            like_rate=float(statistics["like_rate"]),
            item_likes=torch.as_tensor(statistics["item_likes"], dtype=torch.float32),
            item_ratings=torch.as_tensor(statistics["item_ratings"], dtype=torch.float32),
        )


class RankingPrior(nn.Module):
    """The count-model terms of the ranking logit (see the module docstring)."""

    def __init__(self, num_items: int, num_levels: int, stats: PriorStats | None = None) -> None:
        """Without `stats` (a model built without data) the buffers say "unknown" — no level is a
        like, rate 1/2, no item rated — until a checkpoint fills them."""
        super().__init__()
        if stats is None:
            stats = PriorStats(
                torch.zeros(num_levels + 1, dtype=torch.bool),
                0.5,
                torch.zeros(num_items + 1),
                torch.zeros(num_items + 1),
            )
        if stats.like_levels.shape != (num_levels + 1,):
            raise ValueError(
                f"like_levels must have shape [{num_levels + 1}], got {tuple(stats.like_levels.shape)}"
            )
        if stats.item_likes.shape != (num_items + 1,) or stats.item_ratings.shape != (num_items + 1,):
            raise ValueError(f"item_likes and item_ratings must have shape [{num_items + 1}]")
        if not 0.0 < stats.like_rate < 1.0:
            raise ValueError(f"like_rate must be in (0, 1), got {stats.like_rate}")
        self.register_buffer("like_levels", stats.like_levels.bool().clone())
        self.register_buffer("global_rate", torch.tensor(float(stats.like_rate)))
        self.register_buffer("item_likes", stats.item_likes.float().clone())
        self.register_buffer("item_ratings", stats.item_ratings.float().clone())
        # The terms' weights are 1 + a learned shift that starts at 0: weight decay (the recipe
        # decays every parameter) then pulls the model towards the count model, not towards a
        # ranker without its counts, which a decay of the weights themselves would do.
        self.user_shift = nn.Parameter(torch.zeros(()))
        self.item_shift = nn.Parameter(torch.zeros(()))
        self._register_load_state_dict_pre_hook(_weights_to_shifts)

    def _term(self, likes: Tensor, ratings: Tensor) -> Tensor:
        """logit p − logit g for `likes` of `ratings`, smoothed (any shape)."""
        g = self.global_rate
        p = (likes + PSEUDO_COUNTS * g) / (ratings + PSEUDO_COUNTS)
        return torch.logit(p) - torch.logit(g)

    def user_terms(self, feedback: Tensor) -> Tensor:
        """feedback [B, N] levels (0 = padding or unknown) -> [B, N]: at each position, the user
        term over the feedback strictly before it."""
        liked = self.like_levels[feedback].float()
        rated = (feedback > 0).float()
        return self._term(torch.cumsum(liked, dim=1) - liked, torch.cumsum(rated, dim=1) - rated)

    def next_user_term(self, feedback: Tensor, lengths: Tensor) -> Tensor:
        """feedback [B, ≥ max(lengths)], lengths [B] -> [B]: the user term over the first
        `lengths[b]` interactions (for an item placed right after them)."""
        keep = torch.arange(feedback.shape[1], device=feedback.device)[None, :] < lengths[:, None]
        fb = torch.where(keep, feedback, 0)
        return self._term(self.like_levels[fb].float().sum(dim=1), (fb > 0).float().sum(dim=1))

    def item_terms(self, items: Tensor, labels: Tensor | None = None) -> Tensor:
        """items [...] -> [...]: the item term; with the positions' own like `labels` [...]
        (training), each left out of its item's counts."""
        likes, ratings = self.item_likes[items], self.item_ratings[items]
        if labels is not None:
            likes, ratings = likes - labels.float(), (ratings - 1.0).clamp(min=0.0)
        return self._term(likes.clamp(min=0.0), ratings)

    def forward(self, items: Tensor, user_term: Tensor, labels: Tensor | None = None) -> Tensor:
        """items [...] long, user_term [...] (broadcastable), labels [...] | None -> [...]."""
        item_term = self.item_terms(items, labels)
        user_weight, item_weight = 1.0 + self.user_shift, 1.0 + self.item_shift
        return user_weight * user_term + item_weight * item_term + torch.logit(self.global_rate)


def _weights_to_shifts(state_dict, prefix, *args) -> None:
    """A checkpoint that stored the weights themselves (`user_weight`, `item_weight`) loads as
    their shifts from 1."""
    for name in ("user", "item"):
        old = state_dict.pop(f"{prefix}{name}_weight", None)
        if old is not None:
            state_dict[f"{prefix}{name}_shift"] = old - 1.0
