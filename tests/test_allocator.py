"""keep_freed_memory (unigrf/kernels.py): glibc keeps a freed block for reuse."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from unigrf.kernels import keep_freed_memory

pytestmark = pytest.mark.timeout(60)

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@glibc_only
def test_glibc_accepts_the_settings_and_a_freed_block_stays_resident() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
    # A 16 MiB tensor, written (its pages faulted in), then freed: glibc's default maps it and
    # unmaps it on free (resident memory drops by 16 MiB: checked in a fresh process below);
    # kept, its pages stay in the process for the next allocations.
    block = torch.ones(4 << 20)  # 16 MiB of fp32
    before_free = resident_bytes()
    del block
    assert resident_bytes() > before_free - (8 << 20)


@glibc_only
def test_without_it_glibc_hands_a_freed_block_back() -> None:
    """The reference for the test above, in a process that never called keep_freed_memory."""
    code = (
        "import os, torch\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "b = torch.ones(4 << 20); x = rss(); del b; print(x - rss())\n"
    )
    dropped = int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert dropped >= 15 << 20
