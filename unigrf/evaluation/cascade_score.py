"""The cascade's combined score: how retrieval's top-C candidates are re-ranked [SPEC §2.3].

A serving system that retrieves C candidates and re-ranks them should order them by what it
wants to show: items the user will interact with next *and* like. With the retrieval
distribution P(next = i | history) and the ranking head's P(like | history, i), the family

    score_λ(i) = log P(next = i) + λ · log P(like | i)

spans both ends: λ = 0 keeps retrieval's order (the ranking head is ignored), λ → ∞ orders by
P(like) alone (retrieval only decides which C items are candidates), and λ = 1 is the joint
probability P(next = i, like) — the rule the generator's oracle would use. λ is a property of a
trained model's two heads (their calibration differs), so it is chosen on validation
(`choose_lambda`) and applied unchanged to test and to serving.

P(next) is the model's own training distribution: a softmax over the catalogue of the
similarities divided by the retrieval loss's temperature, with the excluded items (history,
padding) removed from the normaliser. The normaliser does not change one user's order, but it
keeps λ on the scale of log-probabilities, comparable across users and models.

Pure torch; used by the evaluation, the oracle and the serving layer alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from unigrf.config import CASCADE_LAMBDAS

# λ values evaluated on validation (`EvalConfig.cascade_lambdas`' default); 0 = retrieval's
# order, inf = the ranking head's order.
DEFAULT_LAMBDAS: tuple[float, ...] = CASCADE_LAMBDAS


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """`t` as float32, or as it is when it is float64 (the evaluation ranks in float64, where
    distinct float32 scores stay distinct after the softmax's shift)."""
    return t if t.dtype == torch.float64 else t.float()


def retrieval_log_probs(scores: torch.Tensor, mask: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """log P(next = i) [B, I]: log-softmax of `scores / temperature` over the eligible items.

    scores: [B, I] similarities; mask: [B, I] bool, True = excluded (their log-probability is
    -inf and they take no mass), or None; temperature > 0 (the retrieval loss's). Computed in
    float32, or float64 for float64 scores.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = _at_least_float32(scores) / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, -math.inf)
    return F.log_softmax(logits, dim=-1)


def combined_scores(retrieval_logprob: torch.Tensor, like_logit: torch.Tensor, lam: float) -> torch.Tensor:
    """score_λ = log P(next) + λ · log σ(like_logit), elementwise over candidates [..., C].

    λ = 0 returns `retrieval_logprob`; λ = inf returns log σ(like_logit) (the ranking head's
    order) plus 1e-6 · log P(next), so that retrieval breaks the head's exact ties. Computed in
    float32, or float64 where a float64 input asks for it.
    """
    if lam < 0 or math.isnan(lam):
        raise ValueError(f"lambda must be >= 0, got {lam}")
    if lam == 0:
        return retrieval_logprob
    log_like = F.logsigmoid(_at_least_float32(like_logit))
    if math.isinf(lam):
        return log_like + 1e-6 * retrieval_logprob.clamp_min(-1e6)
    return retrieval_logprob + lam * log_like


def choose_lambda(metric_by_lambda: Mapping[float, float], lambdas: Sequence[float] | None = None) -> float:
    """The λ with the highest validation metric; ties (and NaNs) go to the smaller λ, i.e. the
    rule closer to retrieval alone. Raises ValueError when no λ has a finite metric."""
    order = sorted(metric_by_lambda if lambdas is None else lambdas)
    best, best_value = None, -math.inf
    for lam in order:
        value = metric_by_lambda[lam]
        if math.isfinite(value) and value > best_value:
            best, best_value = lam, value
    if best is None:
        raise ValueError("no lambda has a finite validation metric")
    return best


def format_lambda(lam: float) -> str:
    """`0.25` -> "0.25", inf -> "inf" (for metric keys and tables)."""
    return "inf" if math.isinf(lam) else f"{lam:g}"
