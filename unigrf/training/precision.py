"""Mixed precision: where bf16 autocast pays, and the context that applies it.

`train.precision` is `auto`, `fp32` or `bf16`. `auto` turns bf16 autocast on only where the
hardware computes bf16 natively — a CUDA GPU that supports it, or a CPU with AMX tiles or
AVX-512-BF16 — and keeps fp32 elsewhere: without those instructions bf16 matmuls are emulated
and run several times slower than fp32 (measured in benchmarks/RESULTS.md "Throughput").
Autocast covers the model's forward passes (training losses, enhancer mining, evaluation);
parameters, optimizer state and the loss reductions stay fp32 (the losses cast their logits to
fp32 before log-sum-exp), so bf16 changes the rounding of activations only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matmuls natively."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.precision` on `device` (None: plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """bf16 autocast on `device` when `dtype` is set, else nothing."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
