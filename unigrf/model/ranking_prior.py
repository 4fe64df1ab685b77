"""The ranking head's prior: what a table of like counts knows, as the head's starting point.

AUC over one held-out event per user is dominated by who the user is and what the item is: the
count model (`unigrf.evaluation.count_model`: the user's and the item's like rates, smoothed
towards the global rate) reaches test AUC 0.78 on ML-100K and 0.64 on Amazon MI. A transformer
ranker can represent both rates, but on sparse data (Amazon MI: ~5 training ratings per user) it
does not learn them from the like labels before it over-fits: every ranking-only and UniGRF row
stayed at AUC 0.56–0.61 there, below the counts (reports/recipe/README.md, "Ranking prior").

So the ranking logit is the head's output on top of the count model's form (`model.ranking_prior`):

    logit(like | history, i) = f_φ(h_i) + w · (logit p_u − logit g) + b_i + logit g

- p_u: the user's like rate over the feedback tokens the model sees before the item (the
  window's; exactly the count model's user rate when the history fits in `max_len`), smoothed
  towards the global training like rate g with `PSEUDO_COUNTS` pseudo-ratings — computed from
  the tokens, no parameter; w a learned scalar starting at 1;
- b_i: a learned per-item bias starting at 0 (weight decay shrinks it towards 0: the same
  shrinkage the count model's pseudo-counts give the item rate);
- logit g: the global rate (a buffer, from the training data).

At initialisation f_φ is small, so the head starts as the user half of the count model and
learns the item half and everything beyond it. Which feedback levels are likes and the global
rate are buffers (saved with the weights), so a served or reloaded model needs no data.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PSEUDO_COUNTS = 5.0  # the count model's smoothing (SPEC §3, "ranking floor")


class RankingPrior(nn.Module):
    """The count-model terms of the ranking logit (see the module docstring)."""

    def __init__(
        self,
        num_items: int,
        num_levels: int,
        like_levels: Tensor | None = None,
        like_rate: float | None = None,
    ) -> None:
        """like_levels: [num_levels + 1] bool, which feedback levels are likes (level 0, padding,
        never); like_rate: the training part's like rate in (0, 1). Both default to "unknown"
        (no level is a like, rate 1/2): a model built without data, whose buffers a checkpoint
        then fills."""
        super().__init__()
        levels = torch.zeros(num_levels + 1, dtype=torch.bool) if like_levels is None else like_levels.bool()
        if levels.shape != (num_levels + 1,):
            raise ValueError(f"like_levels must have shape [{num_levels + 1}], got {tuple(levels.shape)}")
        rate = 0.5 if like_rate is None else float(like_rate)
        if not 0.0 < rate < 1.0:
            raise ValueError(f"like_rate must be in (0, 1), got {rate}")
        self.register_buffer("like_levels", levels.clone())
        self.register_buffer("global_rate", torch.tensor(rate, dtype=torch.float32))
        self.item_bias = nn.Embedding(num_items + 1, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.user_weight = nn.Parameter(torch.ones(()))

    def _user_term(self, likes: Tensor, counts: Tensor) -> Tensor:
        """logit p_u − logit g for `likes` of `counts` ratings (any shape)."""
        g = self.global_rate
        p = (likes + PSEUDO_COUNTS * g) / (counts + PSEUDO_COUNTS)
        return torch.logit(p) - torch.logit(g)

    def user_terms(self, feedback: Tensor) -> Tensor:
        """feedback [B, N] levels (0 = padding or unknown) -> [B, N]: at each position, the user
        term over the feedback strictly before it."""
        liked = self.like_levels[feedback].float()
        rated = (feedback > 0).float()
        likes = torch.cumsum(liked, dim=1) - liked
        counts = torch.cumsum(rated, dim=1) - rated
        return self._user_term(likes, counts)

    def next_user_term(self, feedback: Tensor, lengths: Tensor) -> Tensor:
        """feedback [B, ≥ max(lengths)], lengths [B] -> [B]: the user term over the first
        `lengths[b]` interactions (for an item placed right after them)."""
        keep = torch.arange(feedback.shape[1], device=feedback.device)[None, :] < lengths[:, None]
        fb = torch.where(keep, feedback, 0)
        likes = self.like_levels[fb].float().sum(dim=1)
        counts = (fb > 0).float().sum(dim=1)
        return self._user_term(likes, counts)

    def forward(self, items: Tensor, user_term: Tensor) -> Tensor:
        """items [...] long, user_term [...] (broadcastable) -> the prior's logit [...]."""
        g = self.global_rate
        return self.item_bias(items).squeeze(-1) + self.user_weight * user_term + torch.logit(g)
