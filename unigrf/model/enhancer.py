"""The ranking-driven enhancer [SPEC §1.2]: the ranking head picks hard negatives for retrieval.

For each training window (items i_1..i_L of a `train_batch` row) the anchor is the last
training retrieval position: the feedback token b_{L−1}, whose true next item is i_L.
`mine` then, without gradients and in eval mode (dropout off; the model's mode is restored):
1. encodes the prefix i_1, b_1, …, i_{L−1}, b_{L−1} once, keeping the backbone's per-layer
   keys/values (`UniGRF.encode_prefix`) and the retrieval query at the anchor;
2. takes the top-K (`top_k`) items by retrieval score, excluding the padding item and the
   user's whole training history (`history`: the window, which includes the true next item
   i_L, and everything the user consumed before it), as evaluation masks the history;
3. scores the K candidates with the ranking head as the next item after the prefix, as one
   K-token continuation of the cached prefix (`UniGRF.score_candidates(prefix=...)`: each
   candidate attends the prefix and itself, at position 2·(L−1));
4. keeps the m candidates with the lowest like-logit: items retrieval ranks high that ranking
   predicts the user dislikes. With `alpha`, a kept candidate whose like-probability is above
   alpha is replaced by 0 (no negative). Rows with L < 2 (no anchor) get all zeros.

Cost (see benchmarks/RESULTS.md "Throughput"), all exact — the result equals the plain
packed pass over each row: when that saves attention work (a batch of skewed lengths) rows are
mined in `MINING_GROUPS` groups of similar length (`mining_groups`), each
padded only to its own longest row; the prefix is encoded once, in causal chunks that skip
key blocks hidden from the whole chunk, without the last block's attention (later tokens need
only its keys/values); the anchor query and the K candidates are one- and K-token
continuations of that cached prefix; plus the top-K over the catalogue, one [B, num_items + 1]
product up to `topk.ITEM_CHUNK` items and chunks of it past that (`unseen_candidates`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unigrf.config import EnhancerConfig
from unigrf.evaluation import topk

MINING_GROUPS = 4  # length groups per batch (see `mining_groups`)
GROUPING_GAIN = 0.7  # group only when it cuts the padded attention work to this share or less


def mining_groups(lengths: Tensor) -> list[Tensor]:
    """Row indices of a batch, sorted by length, in MINING_GROUPS groups when that cuts the
    padded attention work (Σ rows × width²) to GROUPING_GAIN of one group's or less; else one
    group. The training loop's batches are already of similar length (`epoch_batches`), and
    for them every extra group is only another round of small kernel calls."""
    order = torch.argsort(lengths)
    groups = list(order.tensor_split(min(MINING_GROUPS, len(order))))
    one = len(order) * float(lengths.max()) ** 2
    split = sum(len(g) * float(lengths[g].max()) ** 2 for g in groups if len(g))
    return groups if split <= GROUPING_GAIN * one else [order]


def unseen_candidates(query: Tensor, table: Tensor, history: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Retrieval's top k items outside each row's history and the padding item:
    query [b, D], table [num_items + 1, D], history [b, H] (0 = padding) -> (scores [b, k],
    best first, -inf where excluded; item ids [b, k]). One [b, num_items + 1] product up to
    `topk.ITEM_CHUNK` items; past that the catalogue is walked in chunks (`topk.unseen_topk`),
    so a 700k-item catalogue costs [b, chunk] at a time. Both give the same candidates wherever
    no two eligible items tie at the k-th place."""
    num_items = table.shape[0] - 1
    if num_items + 1 > topk.ITEM_CHUNK:
        return topk.unseen_topk(query, table, history, k)
    scores = query @ table.T  # [b, num_items + 1]
    scores.scatter_(1, history, float("-inf"))  # the history (padding 0 -> the padding item)
    scores[:, 0] = float("-inf")
    return scores.topk(k, dim=1)


class RankingDrivenEnhancer:
    """`m` is `config.effective_m(cfg)`, so a variant without the enhancer passes 0."""

    def __init__(self, cfg: EnhancerConfig, m: int) -> None:
        if m < 0 or cfg.top_k < 1:
            raise ValueError(f"enhancer: need m >= 0 and top_k >= 1 (got m={m}, top_k={cfg.top_k})")
        self.cfg, self.m = cfg, m

    def active(self, epoch: int) -> bool:
        """Whether to mine in `epoch` (0-based): after `warmup_epochs` epochs, when m > 0."""
        return self.m > 0 and epoch >= self.cfg.warmup_epochs

    @torch.no_grad()
    def mine(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """`train_batch` -> hard negative item ids [B, m] (0 = none)."""
        if not hasattr(model, "encode_prefix"):
            raise TypeError(f"enhancer: {type(model).__name__} has no encode_prefix (needs a UniGRF)")
        items, lengths = batch["items"], batch["lengths"]
        hard = torch.zeros(items.shape[0], self.m, dtype=torch.long, device=items.device)
        if self.m == 0 or items.shape[0] == 0:
            return hard
        was_training = model.training
        model.eval()
        try:
            table = model.item_table()
            # Rows sorted by length, mined in a few groups each padded to its own longest row:
            # exact (padding never changes a row's result) and, with skewed lengths, much less
            # padded attention than one pass at the batch's width.
            for rows in mining_groups(lengths):
                sub = {key: batch[key][rows] for key in ("items", "feedback", "lengths")}
                sub["history"] = batch.get("history", batch["items"])[rows]
                sub["timestamps"] = batch["timestamps"][rows] if batch.get("timestamps") is not None else None
                hard[rows] = self._mine_rows(model, sub, table)
        finally:
            model.train(was_training)
        return hard

    def _mine_rows(self, model: nn.Module, batch: dict[str, Tensor | None], table: Tensor) -> Tensor:
        """Mining for a group of rows (see the module docstring) -> [b, m]."""
        items, lengths = batch["items"], batch["lengths"]
        prefix_len = (lengths - 1).clamp(min=0)  # interactions up to and including the anchor
        width = max(int(lengths.max()), 1)  # the group's own width (the anchor's next item included)
        items = items[:, :width]
        timestamps = batch["timestamps"][:, :width] if batch["timestamps"] is not None else None
        prefix = model.encode_prefix(items, batch["feedback"][:, :width], timestamps, prefix_len)
        k = min(self.cfg.top_k, model.num_items)
        top_scores, candidates = unseen_candidates(prefix.query, table, batch["history"], k)
        logits = model.score_candidates(None, None, None, prefix_len, candidates, prefix=prefix)
        logits = logits.masked_fill(top_scores == float("-inf"), float("inf"))  # not candidates
        m = min(self.m, k)
        low, idx = logits.topk(m, dim=1, largest=False)
        keep = torch.isfinite(low) & (lengths >= 2)[:, None]
        if self.cfg.alpha is not None:
            keep &= torch.sigmoid(low) <= self.cfg.alpha
        hard = torch.zeros(items.shape[0], self.m, dtype=torch.long, device=items.device)
        hard[:, :m] = torch.where(keep, candidates.gather(1, idx), 0)
        return hard
