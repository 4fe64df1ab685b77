"""Loss weighters: hand-computed DWA weights on a scripted loss sequence, GradNorm-style
equalised gradient norms, fixed weights, state round trips and errors."""

from __future__ import annotations

import math

import pytest
import torch

from unigrf.config import WeighterConfig
from unigrf.model.weighter import build_weighter

pytestmark = pytest.mark.timeout(30)
TASKS = ["retrieval", "ranking"]


def losses(ret: float, rank: float) -> dict[str, torch.Tensor]:
    return {"retrieval": torch.tensor(ret), "ranking": torch.tensor(rank)}


def dwa(r_ret: float, r_rank: float, temperature: float) -> tuple[float, float]:
    z_ret, z_rank = math.exp(r_ret / temperature), math.exp(r_rank / temperature)
    return 2 * z_ret / (z_ret + z_rank), 2 * z_rank / (z_ret + z_rank)


def test_loss_ratio_hand_computed() -> None:
    w = build_weighter("loss_ratio", WeighterConfig(temperature=2.0, interval=2), TASKS)
    assert w.weights == {"retrieval": 1.0, "ranking": 1.0}
    # window 1 (means 4, 2) only records
    assert float(w.combine(losses(4.0, 2.0))) == pytest.approx(6.0)
    w.combine(losses(4.0, 2.0))
    assert w.weights == {"retrieval": 1.0, "ranking": 1.0}
    # window 2 (means 3, 1): retrieval fell by 25 %, ranking by 50 % -> retrieval weighs more
    w.combine(losses(3.5, 1.5))
    assert w.weights == {"retrieval": 1.0, "ranking": 1.0}  # not before the window ends
    w.combine(losses(2.5, 0.5))
    expected = dwa(3 / 4, 1 / 2, 2.0)
    assert expected == pytest.approx((1.0624, 0.9376), abs=1e-4)  # by hand: 2e^.375/(e^.375+e^.25)
    assert (w.weights["retrieval"], w.weights["ranking"]) == pytest.approx(expected)
    assert w.weights["retrieval"] > 1 > w.weights["ranking"]  # toward the slower-converging task
    # the new weights apply from the next step on
    total = w.combine(losses(1.0, 1.0))
    assert float(total) == pytest.approx(sum(expected))
    # window 3 (means 2.7, 0.9) compared with window 2, not window 1: equal ratios -> equal weights
    w.combine(losses(4.4, 0.8))
    assert w.weights["retrieval"] == pytest.approx(1.0) and w.weights["ranking"] == pytest.approx(1.0)


def test_loss_ratio_temperature() -> None:
    def weights_after(temperature: float) -> dict[str, float]:
        w = build_weighter("loss_ratio", WeighterConfig(temperature=temperature, interval=1), TASKS)
        w.combine(losses(4.0, 2.0))
        w.combine(losses(4.0, 1.0))  # retrieval flat (r = 1), ranking halved (r = 0.5)
        return w.weights

    sharp, mild = weights_after(0.1), weights_after(100.0)
    assert (sharp["retrieval"], sharp["ranking"]) == pytest.approx(dwa(1.0, 0.5, 0.1))
    assert sharp["retrieval"] > 1.98 and sharp["ranking"] < 0.02
    assert mild["retrieval"] == pytest.approx(1.0, abs=0.01)
    assert sum(sharp.values()) == pytest.approx(2.0) and sum(mild.values()) == pytest.approx(2.0)


def test_loss_ratio_state_round_trip_mid_window() -> None:
    cfg = WeighterConfig(temperature=1.0, interval=3)
    seq = [(5.0, 2.0), (4.0, 1.9), (3.9, 1.8), (3.0, 1.7), (2.9, 1.7), (2.5, 1.6), (2.4, 1.6), (2.0, 1.5)]
    a = build_weighter("loss_ratio", cfg, TASKS)
    for pair in seq[:4]:
        a.combine(losses(*pair))
    b = build_weighter("loss_ratio", cfg, TASKS)
    b.load_state_dict(a.state_dict())
    for pair in seq[4:]:
        a.combine(losses(*pair))
        b.combine(losses(*pair))
    assert a.weights == b.weights and a.weights["retrieval"] != 1.0


def test_single_task_always_weighs_one() -> None:
    for kind in ("loss_ratio", "grad_norm", "fixed"):
        w = build_weighter(kind, WeighterConfig(interval=1), ["retrieval"])
        for value in (5.0, 1.0, 0.1):
            total = w.combine({"retrieval": torch.tensor(value)}, [])
            assert float(total) == pytest.approx(value)
        assert w.weights == {"retrieval": 1.0}


def test_fixed_is_the_plain_sum() -> None:
    w = build_weighter("fixed", WeighterConfig(), TASKS)
    for pair in [(4.0, 2.0), (1.0, 3.0)] * 30:
        assert float(w.combine(losses(*pair))) == pytest.approx(sum(pair))
    assert w.weights == {"retrieval": 1.0, "ranking": 1.0}


def test_grad_norm_equalises_weighted_gradient_norms() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    head = torch.nn.Parameter(torch.tensor(2.0))  # not shared: ignored by the weighting
    w = build_weighter("grad_norm", WeighterConfig(interval=3), TASKS)

    def step(a_ret: list[float], a_rank: list[float]) -> torch.Tensor:
        ls = {
            "retrieval": (torch.tensor(a_ret) * p).sum() * head,
            "ranking": (torch.tensor(a_rank) * p).sum(),
        }
        return w.combine(ls, [p])

    total = step([1.5, 0.0, 2.0], [0.0, 1.0, 0.0])  # gradient norms on p: 2·2.5 = 5 and 1
    assert w.grad_norms == pytest.approx({"retrieval": 5.0, "ranking": 1.0})
    assert w.weights["retrieval"] == pytest.approx(2 * 0.2 / 1.2)  # n · g⁻¹ / Σ g⁻¹ = 1/3
    assert w.weights["ranking"] == pytest.approx(2 * 1.0 / 1.2)  # 5/3
    assert w.weights["retrieval"] * 5.0 == pytest.approx(w.weights["ranking"] * 1.0)
    total.backward()  # the graph survives the measurement; weights act as constants
    w_ret, w_rank = w.weights["retrieval"], w.weights["ranking"]
    expected = w_ret * 2.0 * torch.tensor([1.5, 0.0, 2.0]) + w_rank * torch.tensor([0.0, 1.0, 0.0])
    torch.testing.assert_close(p.grad, expected)
    # measured every `interval` steps only
    before = w.weights
    step([10.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    step([10.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    assert w.weights == before
    step([0.0, 0.0, 0.5], [0.0, 1.0, 0.0])  # step 3: norms 1 and 1 -> equal weights
    assert w.weights["retrieval"] == pytest.approx(1.0) and w.weights["ranking"] == pytest.approx(1.0)
    clone = build_weighter("grad_norm", WeighterConfig(interval=3), TASKS)
    clone.load_state_dict(w.state_dict())
    assert clone.weights == w.weights and clone.grad_norms == w.grad_norms


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown"):
        build_weighter("uncertainty", WeighterConfig(), TASKS)
    w = build_weighter("loss_ratio", WeighterConfig(), TASKS)
    with pytest.raises(ValueError, match="configured tasks"):
        w.combine({"retrieval": torch.tensor(1.0)})
    g = build_weighter("grad_norm", WeighterConfig(), TASKS)
    with pytest.raises(ValueError, match="shared parameters"):
        g.combine(losses(1.0, 1.0), [])
    with pytest.raises(ValueError, match="state is for"):
        g.load_state_dict(w.state_dict())


def test_grad_share_raises_the_small_task_to_its_share_and_never_lowers_one() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

    def measured(share: float, max_weight: float, a_ret: list[float], a_rank: list[float]):
        w = build_weighter("grad_share", WeighterConfig(interval=3, share=share, max_weight=max_weight), TASKS)
        ls = {"retrieval": (torch.tensor(a_ret) * p).sum(), "ranking": (torch.tensor(a_rank) * p).sum()}
        p.grad = None
        w.combine(ls, [p]).backward()  # the graph survives the measurement
        return w

    w = measured(0.5, 100.0, [3.0, 0.0, 4.0], [0.0, 1.0, 0.0])  # gradient norms 5 and 1
    assert w.grad_norms == pytest.approx({"retrieval": 5.0, "ranking": 1.0})
    assert w.weights == pytest.approx({"retrieval": 1.0, "ranking": 2.5})  # 2.5 · 1 = 0.5 · 5
    torch.testing.assert_close(p.grad, torch.tensor([3.0, 2.5, 4.0]))  # weights act as constants
    assert measured(0.1, 100.0, [3.0, 0.0, 4.0], [0.0, 1.0, 0.0]).weights == pytest.approx(
        {"retrieval": 1.0, "ranking": 1.0}  # already above its share: not lowered
    )
    assert measured(0.5, 2.0, [3.0, 0.0, 4.0], [0.0, 1.0, 0.0]).weights["ranking"] == pytest.approx(2.0)  # capped
    flipped = measured(1.0, 100.0, [0.0, 1.0, 0.0], [3.0, 0.0, 4.0])  # the larger task keeps 1, whichever
    assert flipped.weights == pytest.approx({"retrieval": 5.0, "ranking": 1.0})
    clone = build_weighter("grad_share", WeighterConfig(interval=3), TASKS)
    clone.load_state_dict(w.state_dict())
    assert clone.weights == w.weights and clone.grad_norms == w.grad_norms
    with pytest.raises(ValueError, match="state is for"):
        build_weighter("grad_norm", WeighterConfig(), TASKS).load_state_dict(w.state_dict())
    with pytest.raises(ValueError, match="shared parameters"):
        build_weighter("grad_share", WeighterConfig(), TASKS).combine(losses(1.0, 1.0), [])
