"""Loss weighters [SPEC §1.3]: combine the per-task losses into the training objective.

`build_weighter(kind, cfg, tasks)`; `.combine(losses, shared_params) -> total`,
`.weights -> {task: float}`, `state_dict()` / `load_state_dict()` (plain Python values, so a
checkpoint resumes the weighting exactly). Weights are constants in the objective (no
gradient flows into them). A single-task list always weights that task 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from unigrf.config import WeighterConfig

_EPS = 1e-12


class Weighter:
    """Base: fixed weights, checks that `losses` names exactly the configured tasks."""

    kind = "base"

    def __init__(self, cfg: WeighterConfig, tasks: list[str]) -> None:
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"weighter: tasks must be non-empty and distinct, got {tasks}")
        self.cfg, self.tasks = cfg, list(tasks)
        self._weights = {t: 1.0 for t in self.tasks}

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    def _check(self, losses: Mapping[str, Tensor]) -> None:
        if set(losses) != set(self.tasks):
            raise ValueError(f"weighter: got losses {sorted(losses)}, configured tasks {sorted(self.tasks)}")

    def _total(self, losses: Mapping[str, Tensor]) -> Tensor:
        return sum(self._weights[t] * losses[t] for t in self.tasks)  # type: ignore[return-value]

    def combine(self, losses: Mapping[str, Tensor], shared_params: Iterable[nn.Parameter] = ()) -> Tensor:
        self._check(losses)
        return self._total(losses)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": dict(self._weights)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"weighter: state is for {state.get('kind')!r}, this is {self.kind!r}")
        if set(state["weights"]) != set(self.tasks):
            raise ValueError(
                f"weighter: state has tasks {sorted(state['weights'])}, expected {sorted(self.tasks)}"
            )
        self._weights = {t: float(state["weights"][t]) for t in self.tasks}


class FixedWeighter(Weighter):
    """Every task weighs 1 (the "w/o weighter" ablation)."""

    kind = "fixed"


class LossRatioWeighter(Weighter):
    """Dynamic Weight Average on windowed mean losses.

    Every `interval` steps, with L̄_τ the mean loss of task τ over the window just ended:
    r_τ = L̄_τ(this window) / L̄_τ(previous window),
    w_τ = n_tasks · exp(r_τ / T) / Σ_τ' exp(r_τ' / T).
    Weights start at 1; the first window only records its means. A task whose loss falls more
    slowly (larger r) gets the larger weight. Losses are accumulated as detached tensors, so
    the host reads them once per window, not once per step.
    """

    kind = "loss_ratio"

    def __init__(self, cfg: WeighterConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self._sums: dict[str, Tensor | float] = {t: 0.0 for t in self.tasks}
        self._count = 0
        self._previous: dict[str, float] | None = None

    def combine(self, losses: Mapping[str, Tensor], shared_params: Iterable[nn.Parameter] = ()) -> Tensor:
        self._check(losses)
        total = self._total(losses)
        if len(self.tasks) > 1:
            self._record(losses)
        return total

    def _record(self, losses: Mapping[str, Tensor]) -> None:
        for t in self.tasks:
            self._sums[t] = self._sums[t] + losses[t].detach()
        self._count += 1
        if self._count < self.cfg.interval:
            return
        means = {t: float(self._sums[t]) / self._count for t in self.tasks}
        if self._previous is not None:
            ratios = [means[t] / max(self._previous[t], _EPS) for t in self.tasks]
            logits = [r / self.cfg.temperature for r in ratios]
            top = max(logits)
            z = [math.exp(v - top) for v in logits]
            n = len(self.tasks)
            self._weights = {t: n * zi / sum(z) for t, zi in zip(self.tasks, z)}
        self._previous = means
        self._sums = {t: 0.0 for t in self.tasks}
        self._count = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "sums": {t: float(v) for t, v in self._sums.items()},
            "count": self._count,
            "previous": None if self._previous is None else dict(self._previous),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._sums = {t: float(state["sums"][t]) for t in self.tasks}
        self._count = int(state["count"])
        prev = state["previous"]
        self._previous = None if prev is None else {t: float(prev[t]) for t in self.tasks}


class GradNormWeighter(Weighter):
    """Equalise the weighted gradient norms on the shared parameters.

    Every `interval` steps (the first step included), on that step's losses: g_τ =
    ‖∇_shared L_τ‖₂ over `shared_params` (the last backbone block: `model.shared_parameters()`),
    then w_τ = n_tasks · g_τ⁻¹ / Σ_τ' g_τ'⁻¹, so that w_τ · g_τ is the same for every task and
    the weights sum to n_tasks. The weights hold until the next measurement.
    This is GradNorm's balancing target with asymmetry α = 0 (no training-rate term), solved
    in closed form instead of by gradient steps on learned weights. The cost is one extra
    partial backward per task (to the last block only) every `interval` steps; `temperature`
    is not used.
    """

    kind = "grad_norm"

    def __init__(self, cfg: WeighterConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self._step = 0
        self.grad_norms: dict[str, float] = {}

    def combine(self, losses: Mapping[str, Tensor], shared_params: Iterable[nn.Parameter] = ()) -> Tensor:
        self._check(losses)
        if len(self.tasks) > 1 and self._step % self.cfg.interval == 0:
            self._update(losses, [p for p in shared_params if p.requires_grad])
        self._step += 1
        return self._total(losses)

    def _update(self, losses: Mapping[str, Tensor], params: list[nn.Parameter]) -> None:
        self.grad_norms = shared_grad_norms(losses, params, self.tasks, self.kind)
        inverse = {t: 1.0 / max(self.grad_norms[t], _EPS) for t in self.tasks}
        total = sum(inverse.values())
        self._weights = {t: len(self.tasks) * inverse[t] / total for t in self.tasks}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step": self._step, "grad_norms": dict(self.grad_norms)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._step = int(state["step"])
        self.grad_norms = {t: float(v) for t, v in state["grad_norms"].items()}


class GradShareWeighter(GradNormWeighter):
    """Raise a task whose gradient on the shared parameters is small, never lower one.

    Measured as GradNorm measures (every `interval` steps, g_τ = ‖∇_shared L_τ‖₂), then
    w_τ = min(max(1, share · max_τ' g_τ' / g_τ), max_weight): the task with the largest gradient
    keeps weight 1 and every other task's weighted gradient is at least `share` (≤ 1) of it.

    Why not GradNorm: with the ranking prior, the ranking loss starts near its optimum and its
    gradient on the trunk is a tenth of retrieval's or less, so the trunk — updated by AdamW,
    which scales by the gradient's running size — follows retrieval alone and the ranking head
    stays at the prior (reports/recipe/README.md, "Ranking prior"). Equalising the two
    (GradNorm) pays for the ranking weight with retrieval's; raising ranking to a share of
    retrieval's leaves retrieval's weight at 1 — the regime the model trains in without the
    prior, where the ratio is 0.4–0.9.
    """

    kind = "grad_share"

    def _update(self, losses: Mapping[str, Tensor], params: list[nn.Parameter]) -> None:
        self.grad_norms = shared_grad_norms(losses, params, self.tasks, self.kind)
        largest = max(self.grad_norms.values())
        self._weights = {
            t: min(max(1.0, self.cfg.share * largest / max(g, _EPS)), float(self.cfg.max_weight))
            for t, g in self.grad_norms.items()
        }


def shared_grad_norms(
    losses: Mapping[str, Tensor], params: list[nn.Parameter], tasks: list[str], kind: str
) -> dict[str, float]:
    """{task: ‖∇_params L_task‖₂} (one partial backward per task, the graph kept for the step's)."""
    if not params:
        raise ValueError(f"{kind} weighter: no shared parameters (pass model.shared_parameters())")
    norms = {}
    for t in tasks:
        grads = torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
        norms[t] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
    return norms


WEIGHTERS: dict[str, type[Weighter]] = {
    "fixed": FixedWeighter,
    "loss_ratio": LossRatioWeighter,
    "grad_norm": GradNormWeighter,
    "grad_share": GradShareWeighter,
}


def build_weighter(kind: str, cfg: WeighterConfig, tasks: list[str]) -> Weighter:
    """`kind` is `config.effective_weighter_kind(cfg)` (the variant may force "fixed")."""
    if kind not in WEIGHTERS:
        raise ValueError(f"weighter.kind: unknown {kind!r} (choices: {', '.join(WEIGHTERS)})")
    return WEIGHTERS[kind](cfg, tasks)
