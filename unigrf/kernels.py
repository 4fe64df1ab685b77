"""CPU kernels: cheaper ways to compute the same numbers on the CPU, behind one switch.

The model and the loop call the functions here where the method reads plainly — dropout, SiLU,
the full softmax's log-sum-exp, the host allocator — and each one decides by the switch:

    enabled(device)  ->  device is the CPU and the kernels are not turned off

On (a CPU tensor), it runs the cheaper form measured on CPUs (benchmarks/RESULTS.md,
"Throughput"): a training step's element-wise work there is bound by fresh allocations, page
faults and mask draws more than by arithmetic. Off (a GPU, or `UNIGRF_CPU_KERNELS=0`, or inside
`cpu_kernels(False)`), it runs the plain PyTorch form. Both forms give the same results up to
floating-point rounding (the tests compare them), except dropout's mask, which is drawn another
way (the same distribution, other random numbers): a CPU run's numbers depend on the switch,
and the switch is on for CPU runs by default.

- `dropout` / `Dropout`: the mask as `rand >= p` (fp32 uniforms: p resolved to 2⁻²⁴, whatever
  the activations' dtype) instead of `bernoulli_(1 − p)`, several times cheaper on the CPU, and
  the backward multiplying by the same saved boolean mask (1 byte per element, where
  `nn.Dropout` keeps it in the activations' dtype).
- `silu_fresh`: SiLU in place on a freshly computed tensor nothing else reads, where no
  gradient needs its input (evaluation, the enhancer's mining): an out-of-place SiLU on the CPU
  costs about twice the in-place one (a fresh [B, H, T, S] tensor).
- `logsumexp_over_logits` (`InPlaceLogSumExp`): the full softmax's [P, I] element-wise steps
  in place, the backward's softmax from the saved exponentials; a fresh [P, I] result per
  step is what costs on the CPU.
- `keep_freed_memory`: glibc's malloc keeps freed blocks (mmap threshold at its 32 MiB maximum,
  trimming only past 2 GiB), so a step reuses the last step's memory instead of faulting fresh
  pages in; jemalloc or tcmalloc (`LD_PRELOAD`) do the same from outside. No effect on results;
  peak memory is unchanged, resident memory stays at the peak; a no-op off glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENV_VAR = "UNIGRF_CPU_KERNELS"  # "0": the plain PyTorch forms on the CPU too
_switch = {"on": os.environ.get(ENV_VAR, "1").strip() != "0"}


def enabled(device: torch.device | None = None) -> bool:
    """Whether the CPU kernels run for tensors on `device` (None: the host)."""
    return _switch["on"] and (device is None or torch.device(device).type == "cpu")


@contextlib.contextmanager
def cpu_kernels(on: bool) -> Iterator[None]:
    """The switch set to `on` inside the block (benchmarks and tests compare the two forms)."""
    previous = _switch["on"]
    _switch["on"] = on
    try:
        yield
    finally:
        _switch["on"] = previous


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------


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
    if not enabled(x.device):
        return F.dropout(x, p, training=True)
    keep = torch.rand(x.shape, device=x.device) >= p  # bool [...]
    return _MaskedScale.apply(x, keep, 1.0 / (1.0 - p))


class Dropout(nn.Module):
    """`nn.Dropout(p)`: every dropout in the model (see `dropout` for the CPU's mask)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ---------------------------------------------------------------------------------------------
# SiLU of a fresh tensor
# ---------------------------------------------------------------------------------------------


def silu_fresh(x: Tensor) -> Tensor:
    """SiLU of a freshly computed tensor (scores, a projection) that nothing else reads: in
    place where no gradient needs its input and the kernels are on."""
    inplace = enabled(x.device) and not (torch.is_grad_enabled() and x.requires_grad)
    return F.silu(x, inplace=inplace)


# ---------------------------------------------------------------------------------------------
# the full softmax's log-sum-exp
# ---------------------------------------------------------------------------------------------


def wide(x: Tensor) -> Tensor:
    """x in at least fp32 (bf16/fp16 logits from autocast are widened before log-sum-exp)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


class InPlaceLogSumExp(torch.autograd.Function):
    """logsumexp over items of (q @ table.T) / tau, [P, D], [I, D] -> [P], with every [P, I]
    step after the matmul done in place.

    Forward turns the logits into e = exp(logit − row max) in place and keeps e and its row sums
    s: the log-sum-exp is log s + max, bitwise autograd's `torch.logsumexp`. Backward's softmax
    is then e / s — one [P, I] product, no second exp — where autograd recomputes
    exp(logit − lse); the gradients agree with autograd's to fp32 rounding
    (tests/test_retrieval_losses.py). One saved [P, I] tensor and one temporary per pass."""

    @staticmethod
    def forward(ctx, q: Tensor, table: Tensor, tau: float) -> Tensor:
        raw = q @ table.T  # under autocast in its dtype (bf16), widened below as autograd's path is
        logits = wide(raw).div_(tau)  # `raw` itself when it is fp32: nothing else reads it
        peak = logits.amax(dim=1, keepdim=True)
        e = logits.sub_(peak).exp_()  # [P, I], in place
        sums = e.sum(dim=1)
        lse = sums.log().add_(peak.squeeze(1))
        ctx.save_for_backward(q, table, e, sums)
        ctx.tau, ctx.mm_dtype = tau, raw.dtype
        return lse

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, table, e, sums = ctx.saved_tensors
        # softmax x upstream gradient / tau; out of place: a retained graph may run it again
        weights = e.mul((grad.to(e.dtype) / ctx.tau / sums)[:, None])
        weights = weights.to(ctx.mm_dtype)  # the matmul's backward in its forward's dtype
        grad_q = weights @ table.to(ctx.mm_dtype)
        grad_table = (q.to(ctx.mm_dtype).t() @ weights).t()
        return grad_q.to(q.dtype), grad_table.to(table.dtype), None


def logsumexp_over_logits(q: Tensor, table: Tensor, tau: float) -> Tensor:
    """log Σ_i exp(<q, table[i]> / tau) for q [P, D], table [I, D] -> [P], all [P, I] logits at once."""
    if enabled(q.device):
        return InPlaceLogSumExp.apply(q, table, tau)
    return torch.logsumexp(wide(q @ table.T) / tau, dim=1)


# ---------------------------------------------------------------------------------------------
# the host allocator
# ---------------------------------------------------------------------------------------------

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more than HEAP_MAX_SIZE / 2 on 64-bit
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: trim only past 2 GiB free


def keep_freed_memory(device: torch.device | None = None) -> bool:
    """Tune this process's glibc malloc for reuse when training on `device` (None: the host)
    runs the CPU kernels; idempotent. Returns whether glibc took both settings (False: not
    glibc, or the kernels are off for `device`: nothing changed)."""
    return enabled(device) and _tune_glibc()


@functools.cache
def _tune_glibc() -> bool:
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (raises AttributeError off glibc)
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # trim first: setting either one turns glibc's dynamic threshold adjustment off
    trimmed = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    return trimmed and mapped
