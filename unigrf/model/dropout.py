"""Dropout, as `nn.Dropout` computes it, with a cheaper mask on the CPU.

In training each element is kept with probability 1 − p and scaled by 1 / (1 − p), else zeroed;
in eval mode it is the identity. `nn.Dropout` draws its mask with `bernoulli_(1 − p)`, which on
the CPU costs about as much as the rest of a `small` model's element-wise work in a step: at
ML-100K's training shape (128 × 236 × 64) one mask took 26 ms against 10 ms for `torch.rand`
of the same shape (benchmarks/RESULTS.md, "Session 11"). Here the mask is `rand >= p` (fp32
uniforms: p is resolved to 2⁻²⁴, whatever the activations' dtype) and the backward multiplies
by the same saved boolean mask (1 byte per element, where `nn.Dropout` keeps it in the
activations' dtype).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _MaskedScale(torch.autograd.Function):
    """x * mask * scale, saving only the boolean mask for the backward."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """x [...] with each element zeroed with probability p (scaled by 1 / (1 − p)) in training."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    keep = torch.rand(x.shape, device=x.device) >= p  # bool [...]
    return _MaskedScale.apply(x, keep, 1.0 / (1.0 - p))


class Dropout(nn.Module):
    """`nn.Dropout(p)`'s behaviour (see the module docstring for what differs: the mask's draw)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
