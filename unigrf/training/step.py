"""One training step, and what it steps: the one implementation `fit` and every benchmark run.

`build_trainer(cfg, data, device)` builds a run's model (initialised from `train.seed`), its
AdamW (the recipe's weight decay and betas), loss weighter and enhancer — `Trainer`.
`train_step(trainer, batch, lr, mine)` is one batch: the enhancer's hard negatives (when
`mine`), the forward pass and losses (under bf16 autocast where `train.precision` resolves to
it), the weighter's combination, backward, gradient clipping per separately trained model, and
the optimizer step at learning rate `lr`. It returns the combined loss and the per-task losses
as device tensors: reading them is a host sync, and the caller decides when (`FiniteGuard`
below keeps the non-finite check on the device until the caller reads it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from unigrf.config import ExperimentConfig, effective_m, effective_weighter_kind, variant_spec
from unigrf.data.sequences import SequenceData
from unigrf.model import RankingDrivenEnhancer, TwoStage, build_model, build_weighter
from unigrf.model.ranking_prior import PriorStats
from unigrf.model.weighter import Weighter
from unigrf.training.precision import autocast, autocast_dtype
from unigrf.training.selection import TrainingError


class LossForward(nn.Module):
    """Makes `model.losses` the forward of a module, so DDP synchronises its gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, hard_negatives, retrieval: bool, ranking: bool) -> dict[str, Tensor]:
        return self.model.losses(batch, hard_negatives, retrieval=retrieval, ranking=ranking)


@dataclass
class Trainer:
    """What one training step reads and updates. `model` is what is evaluated and saved;
    `forward` computes its losses (wrapped in DDP with several ranks)."""

    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    weighter: Weighter
    enhancer: RankingDrivenEnhancer
    tasks: list[str]  # the trained losses: "retrieval", "ranking" or both
    shared: list[nn.Parameter]  # both tasks' gradients meet here (the grad_norm weighter)
    clip_groups: list[list[nn.Parameter]]  # clipped together: one group per separate model
    grad_clip: float | None
    device: torch.device
    amp: torch.dtype | None  # autocast dtype, None: fp32

    @property
    def retrieval(self) -> bool:
        return "retrieval" in self.tasks

    @property
    def ranking(self) -> bool:
        return "ranking" in self.tasks


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_trainer(
    cfg: ExperimentConfig, data: SequenceData, device: torch.device, world_size: int = 1
) -> Trainer:
    """`cfg`'s model on `data` (initialised from `train.seed`, identical on every rank), its
    optimizer, weighter and enhancer. `cfg.model.size` must be resolved (`resolve_model_size`)."""
    spec = variant_spec(cfg)
    tasks = [t for t, on in (("retrieval", spec.retrieval), ("ranking", spec.ranking)) if on]
    seed_everything(cfg.train.seed)
    counts = torch.as_tensor(data.item_counts("val"))  # training interactions per item
    prior = PriorStats.of(data.like_statistics())
    model = build_model(cfg, data.num_items, data.num_levels, data.max_len, counts, prior).to(device)
    forward: nn.Module = LossForward(model)
    if world_size > 1:
        forward = nn.parallel.DistributedDataParallel(
            forward,
            device_ids=[device.index] if device.type == "cuda" else None,
            # one-task variants leave a head without gradient
            find_unused_parameters=len(tasks) < 2 or isinstance(model, TwoStage),
        )
    t = cfg.train
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=t.adam_betas
    )
    return Trainer(
        model=model,
        forward=forward,
        optimizer=optimizer,
        weighter=build_weighter(effective_weighter_kind(cfg), cfg.weighter, tasks),
        enhancer=RankingDrivenEnhancer(cfg.enhancer, effective_m(cfg)),
        tasks=tasks,
        shared=shared_parameters(model),
        clip_groups=clip_groups(model),
        grad_clip=t.grad_clip,
        device=device,
        amp=autocast_dtype(t.precision, device),
    )


def train_step(
    trainer: Trainer, batch: dict[str, Tensor], lr: float, mine: bool
) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimizer step on `batch` (a `SequenceData.train_batch`, on the trainer's device) at
    learning rate `lr`, mining hard negatives when `mine` -> (combined loss, {task: loss}),
    detached device tensors. No host sync."""
    t = trainer
    with autocast(t.device, t.amp):
        hard = t.enhancer.mine(t.model, batch) if mine else None
        losses = t.forward(batch, hard, t.retrieval, t.ranking)
    total = t.weighter.combine(losses, t.shared)
    for group in t.optimizer.param_groups:
        group["lr"] = lr
    t.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if t.grad_clip:
        for params in t.clip_groups:
            nn.utils.clip_grad_norm_(params, t.grad_clip)
    t.optimizer.step()
    return total.detach(), {k: v.detach() for k, v in losses.items()}


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters both tasks share, for gradient-based weighting: the last backbone block."""
    if hasattr(model, "shared_parameters"):
        return list(model.shared_parameters())
    return [p for p in model.parameters() if p.requires_grad]


def clip_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter groups whose gradient norm is clipped together: one per separately trained
    model, so the two-stage pipeline's stages stay independent (a joint norm would couple them)."""
    if isinstance(model, TwoStage):
        return [list(model.retriever.parameters()), list(model.ranker.parameters())]
    return [list(model.parameters())]


class FiniteGuard:
    """The first step whose combined loss was NaN or inf, kept on the device (no sync per step).

    `record` after every step; `check(epoch)` reads it — one host sync — and raises a
    `TrainingError` naming that step and its losses. `fit` checks where it reads the losses
    anyway: every `train.log_every` steps and at each epoch's end, so a diverged run stops
    within the epoch it diverged in, before validation."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.values: Tensor | None = None  # [tasks] the losses of that step
        self.names: list[str] = []

    def record(self, total: Tensor, losses: dict[str, Tensor], step: int) -> None:
        values = torch.stack([v.float() for v in losses.values()])
        if self.values is None:
            self.names, self.values = list(losses), torch.zeros_like(values)
        first = ~torch.isfinite(total) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.values = torch.where(first, values, self.values)

    def check(self, epoch: int) -> None:
        step = int(self.step)
        if step >= 0:
            parts = ", ".join(f"{k} {float(v):.4g}" for k, v in zip(self.names, self.values.tolist()))
            raise TrainingError(
                f"non-finite training loss at epoch {epoch}, step {step} ({parts}): the run diverged; "
                "lower train.lr or check the data"
            )
