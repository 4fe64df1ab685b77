"""The CPU kernels' switch (unigrf/kernels.py): on for CPU tensors, off elsewhere or when turned
off, and each kernel computing what its plain PyTorch form computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unigrf import kernels

pytestmark = pytest.mark.timeout(60)


def test_the_switch_is_on_for_the_cpu_only_and_can_be_turned_off() -> None:
    assert kernels.enabled(torch.device("cpu")) and kernels.enabled(None)
    assert not kernels.enabled(torch.device("cuda"))
    assert not kernels.enabled(torch.device("meta"))
    with kernels.cpu_kernels(False):
        assert not kernels.enabled(torch.device("cpu"))
        assert kernels.keep_freed_memory() is False  # nothing changed
        assert kernels.keep_freed_memory(torch.device("cuda")) is False
    assert kernels.enabled(torch.device("cpu"))


def test_the_environment_variable_turns_them_off_in_a_fresh_process() -> None:
    import subprocess
    import sys

    code = "import torch; from unigrf import kernels; print(kernels.enabled(torch.device('cpu')))"
    env = {"UNIGRF_CPU_KERNELS": "0", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_dropout_off_is_torchs_own_and_on_draws_its_own_mask() -> None:
    x = torch.rand(300, 200) + 0.5
    with kernels.cpu_kernels(False):
        torch.manual_seed(0)
        plain = kernels.dropout(x, 0.3, training=True)
    torch.manual_seed(0)
    assert torch.equal(plain, F.dropout(x, 0.3, training=True))
    torch.manual_seed(0)
    fast = kernels.dropout(x, 0.3, training=True)
    torch.manual_seed(0)
    assert torch.equal(fast != 0, torch.rand(x.shape) >= 0.3)  # the mask is `rand >= p`
    assert not torch.equal(fast, plain)


def test_silu_fresh_equals_silu_with_and_without_the_kernels() -> None:
    x = torch.randn(4, 7)
    expected = F.silu(x)
    for on in (True, False):
        with kernels.cpu_kernels(on), torch.no_grad():
            assert torch.equal(kernels.silu_fresh(x.clone()), expected)
    leaf = x.clone().requires_grad_()
    out = kernels.silu_fresh(leaf)  # a gradient needs the input: never in place
    assert torch.equal(out, expected) and torch.equal(leaf.detach(), x)


def test_logsumexp_over_logits_equals_autograd_both_ways() -> None:
    torch.manual_seed(0)
    q = torch.randn(9, 5, requires_grad=True)
    table = torch.randn(13, 5, requires_grad=True)
    reference = torch.logsumexp(q @ table.T / 0.2, dim=1)
    ref_grads = torch.autograd.grad(reference.sum(), (q, table))
    for on in (True, False):
        with kernels.cpu_kernels(on):
            out = kernels.logsumexp_over_logits(q, table, 0.2)
        torch.testing.assert_close(out, reference, rtol=0, atol=0)
        for got, want in zip(torch.autograd.grad(out.sum(), (q, table)), ref_grads):
            torch.testing.assert_close(got, want)
