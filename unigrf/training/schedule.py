"""The learning-rate schedule: linear warm-up, then constant, cosine or linear decay."""

from __future__ import annotations

import math

from unigrf.config import ExperimentConfig


def lr_factor(step: int, total_steps: int, cfg: ExperimentConfig) -> float:
    """The learning-rate multiplier after `step` optimizer steps of `total_steps`: linear
    warm-up over `train.warmup_steps`, then `train.lr_schedule` (constant, or cosine / linear
    decay from 1 to `train.min_lr_ratio` at `total_steps`)."""
    t = cfg.train
    if t.warmup_steps and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return 1.0
    span = max(total_steps - t.warmup_steps, 1)
    progress = min(max(step - t.warmup_steps, 0) / span, 1.0)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if t.lr_schedule == "cosine" else 1.0 - progress
    return t.min_lr_ratio + (1.0 - t.min_lr_ratio) * shape
