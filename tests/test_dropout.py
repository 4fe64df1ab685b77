"""Dropout (unigrf/kernels.py): nn.Dropout's behaviour with a cheaper mask on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from unigrf.kernels import Dropout

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("p", [0.1, 0.4, 0.7])
def test_keeps_each_element_with_probability_one_minus_p_and_rescales_it(p) -> None:
    torch.manual_seed(0)
    x = torch.rand(400, 500) + 0.5  # no zeros of its own
    y = Dropout(p).train()(x)
    kept = y != 0
    n = x.numel()
    # the kept count is Binomial(n, 1 - p): within 5 standard deviations
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # as nn.Dropout: the expectation is preserved
    assert y.mean().item() == pytest.approx(x.mean().item(), rel=0.01)


def test_gradient_is_the_same_mask_and_scale() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 33, dtype=torch.float64, requires_grad=True)
    y = Dropout(0.3).train()(x)
    upstream = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * upstream).sum(), x)
    keep = (y != 0).to(x.dtype)
    torch.testing.assert_close(grad, upstream * keep / 0.7)

    def same_mask(a: torch.Tensor) -> torch.Tensor:  # gradcheck calls it many times: one mask
        torch.manual_seed(2)
        return Dropout(0.3).train()(a)

    assert torch.autograd.gradcheck(same_mask, (x,))


def test_a_seed_repeats_the_mask_and_bf16_keeps_its_dtype() -> None:
    x = torch.randn(50, 60)
    torch.manual_seed(3)
    a = Dropout(0.5).train()(x)
    torch.manual_seed(3)
    b = Dropout(0.5).train()(x)
    assert torch.equal(a, b)
    assert Dropout(0.5).train()(x.bfloat16()).dtype == torch.bfloat16


def test_eval_mode_and_p_zero_are_the_identity_and_p_one_zeroes() -> None:
    x = torch.randn(10, 10)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
