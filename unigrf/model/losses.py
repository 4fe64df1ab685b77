"""The retrieval objective as a pure function of logits and item ids (testable alone)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sampled_softmax_loss(
    pos_logits: Tensor, neg_logits: Tensor, neg_ids: Tensor, positives: Tensor
) -> Tensor:
    """Mean over P positions of −log softmax([positive, negatives])[positive].

    pos_logits [P]; neg_logits [P, M]; neg_ids [P, M] or [1, M] (the item id behind each
    negative logit; 0 = no negative in that slot); positives [P] item ids.
    A negative whose id equals the position's positive (a sampling collision, an in-batch
    duplicate, a hard negative that is the target) or is 0 gets −inf: it is not in the softmax.
    """
    ignore = (neg_ids == positives[:, None]) | (neg_ids == 0)
    logits = torch.cat([pos_logits[:, None], neg_logits.masked_fill(ignore, float("-inf"))], dim=1)
    target = torch.zeros(len(pos_logits), dtype=torch.long, device=pos_logits.device)
    return F.cross_entropy(logits, target)
