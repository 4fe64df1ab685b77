"""Host memory reuse: keep freed blocks in the process instead of handing them back per step.

A training step on the CPU allocates and frees the same few hundred tensors every step, many of
them megabytes ([P, I] logits, [B, T, D] activations). glibc's malloc serves a block above its
mmap threshold with a fresh `mmap` and returns it with `munmap` when freed, and trims the heap's
free top back to the OS past its trim threshold, so the next step pays the kernel to zero-fill
and fault those pages in again: on the 2-core VM this project is developed on, a `small` UniGRF
step got about 8 % faster once freed blocks were kept (benchmarks/RESULTS.md, "Session 11"). jemalloc or
tcmalloc (`LD_PRELOAD`, what Intel's PyTorch launcher uses) fix this from outside; this module
does the same with glibc's own `mallopt`: the mmap threshold fixed at its maximum (32 MiB on
64-bit glibc; blocks below it come from the heap, larger ones are still mapped) and trimming
(up to 2 GiB of free heap) off, so a freed block is reused by the next step. Peak memory is unchanged; resident memory
stays at the peak instead of shrinking between steps.

It changes no result (which memory a tensor lands in is invisible to the arithmetic) and is a
no-op where glibc is not the allocator (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more than HEAP_MAX_SIZE / 2 on 64-bit
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: trim only past 2 GiB free


@functools.cache
def keep_freed_memory() -> bool:
    """Tune this process's glibc malloc for reuse (see the module docstring); idempotent.
    Returns whether glibc accepted both settings (False: not glibc, nothing changed)."""
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
