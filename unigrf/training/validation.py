"""Evaluation inside a run: on rank 0, shared with every rank.

Every rank then takes the same decisions (early stopping, the cascade's λ), and the numbers
equal a single-process evaluation. The cascade's λ (log P(next) + λ·log P(like),
`unigrf.evaluation.cascade_score`) is chosen on validation at the selected weights and applied
to test; when the objective reads a cascade metric, each epoch's validation chooses its own λ
(still validation).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from unigrf.config import EvalConfig
from unigrf.data.sequences import SequenceData
from unigrf.evaluation.evaluate import evaluate
from unigrf.training.precision import autocast


def evaluate_on_main(
    model: nn.Module,
    data: SequenceData,
    split: str,
    cfg: EvalConfig,
    ctx: Any,
    amp: torch.dtype | None = None,
    cascade: bool = True,
    outcomes: bool = False,
    cascade_lambda: float | None = None,
    tag: str | None = None,
) -> Any:
    """`evaluate` on rank 0 of `ctx` (a TrainContext) under autocast `amp`, the metrics
    broadcast to the other ranks. With `outcomes`, (metrics, the per-user outcomes frame on rank
    0, None on the others). `tag` names the evaluation for `ctx.eval_store` (with
    `eval.checkpoint_every_batches`, its finished batches are kept and an interrupted one
    resumes: `unigrf.training.eval_progress`)."""
    result = frame = None
    if ctx.is_main:
        store = ctx.eval_store(tag, cfg.checkpoint_every_batches) if tag is not None else None
        with autocast(ctx.device, amp):
            result = evaluate(
                model,
                data,
                split,
                cfg,
                ctx.device,
                cascade=cascade,
                cascade_lambda=cascade_lambda,
                outcomes=outcomes,
                store=store,
            )
        if outcomes:
            result, frame = result
    if ctx.world_size > 1 and dist.is_initialized():
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    return (result, frame) if outcomes else result


def epoch_validation(
    model: nn.Module, data: SequenceData, cfg: EvalConfig, ctx: Any, amp, cascade: bool, epoch: int
) -> dict:
    """Epoch `epoch`'s validation metrics as `val/<name>`. The cascade is evaluated only when
    `cascade` (the objective reads it); otherwise its keys (NaN) are left out of the history."""
    tag = f"epoch_{epoch:04d}-val"
    val = evaluate_on_main(model, data, "val", cfg, ctx, amp, cascade=cascade, tag=tag)
    return {f"val/{k}": float(v) for k, v in val.items() if cascade or not k.startswith("cascade")}


def final_evaluation(model: nn.Module, data: SequenceData, cfg: EvalConfig, ctx: Any, amp) -> tuple:
    """The selected weights' full validation and test metrics and per-user outcomes ->
    (val metrics, test metrics, cascade λ, {"val": frame, "test": frame}). The per-epoch
    evaluation may have skipped the cascade, and per stage the two best epochs were never
    evaluated together; every other number is recomputed identically. λ is chosen here, on
    validation, and test is read once, at it."""
    val, val_outcomes = evaluate_on_main(model, data, "val", cfg, ctx, amp, outcomes=True, tag="final-val")
    cascade_lambda = float(val.pop("cascade_lambda"))
    test, test_outcomes = evaluate_on_main(
        model, data, "test", cfg, ctx, amp, outcomes=True, cascade_lambda=cascade_lambda, tag="final-test"
    )
    test.pop("cascade_lambda")
    return val, test, cascade_lambda, {"val": val_outcomes, "test": test_outcomes}
