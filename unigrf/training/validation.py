"""Evaluation inside a run: on rank 0, shared with every rank.

Every rank then takes the same decisions (early stopping, the cascade's λ), and the numbers
equal a single-process evaluation. The cascade's λ (log P(next) + λ·log P(like),
`unigrf.evaluation.cascade_score`) is chosen on validation at the selected weights and applied
to test; when the objective reads a cascade metric, each epoch's validation chooses its own λ
(still validation).

The budget's last epoch is validated as the final validation would be (the cascade, per-user
outcomes, stored as `final-val`): when its weights are the ones selected — every run whose last
epoch is its best, a one-epoch run always — the final validation reuses that pass instead of
evaluating the same weights again (at Amazon-Books' size a pass is hours on a CPU). The reuse
is decided by the weights' digest, not by reasoning about the selection, and a resumed run finds
the pass's stored batches under the same evaluation fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from unigrf.config import EvalConfig
from unigrf.data.sequences import SequenceData
from unigrf.evaluation.batch_store import fingerprint
from unigrf.evaluation.evaluate import evaluate
from unigrf.training.eval_progress import FINAL_VAL
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


@dataclass(frozen=True)
class FullValidation:
    """A validation pass with the cascade and per-user outcomes: `weights`, the digest of the
    weights it evaluated (`unigrf.evaluation.batch_store.fingerprint`); `metrics`, as
    `evaluate` returns them (`cascade_lambda` included); `outcomes`, the frame (rank 0; None
    on the other ranks)."""

    weights: str
    metrics: dict[str, float]
    outcomes: pd.DataFrame | None


def weights_digest(model: nn.Module) -> str:
    return fingerprint([model])


def epoch_validation(
    model: nn.Module,
    data: SequenceData,
    cfg: EvalConfig,
    ctx: Any,
    amp,
    cascade: bool,
    epoch: int,
    last: bool = False,
) -> tuple[dict, FullValidation | None]:
    """Epoch `epoch`'s validation metrics as `val/<name>`, and for the budget's `last` epoch
    the pass the final validation reuses when these weights are selected (else None). The
    cascade's keys (NaN when skipped) enter the history only when `cascade` (the objective
    reads it); the last epoch always evaluates the cascade, so the history is the same."""
    if last:
        val, frame = evaluate_on_main(model, data, "val", cfg, ctx, amp, outcomes=True, tag=FINAL_VAL)
        kept = FullValidation(weights_digest(model), dict(val), frame)
    else:
        tag = f"epoch_{epoch:04d}-val"
        val, kept = evaluate_on_main(model, data, "val", cfg, ctx, amp, cascade=cascade, tag=tag), None
    return {f"val/{k}": float(v) for k, v in val.items() if cascade or not k.startswith("cascade")}, kept


def final_evaluation(
    model: nn.Module, data: SequenceData, cfg: EvalConfig, ctx: Any, amp, last: FullValidation | None = None
) -> tuple:
    """The selected weights' full validation and test metrics and per-user outcomes ->
    (val metrics, test metrics, cascade λ, {"val": frame, "test": frame}). The per-epoch
    evaluation may have skipped the cascade, and per stage the two best epochs were never
    evaluated together; every other number is recomputed identically — except when `last`
    (the budget's last epoch's pass) evaluated these very weights: then it is the validation.
    λ is chosen here, on validation, and test is read once, at it."""
    if last is not None and last.weights == weights_digest(model):
        val, val_outcomes = dict(last.metrics), last.outcomes
    else:
        val, val_outcomes = evaluate_on_main(model, data, "val", cfg, ctx, amp, outcomes=True, tag=FINAL_VAL)
    cascade_lambda = float(val.pop("cascade_lambda"))
    test, test_outcomes = evaluate_on_main(
        model, data, "test", cfg, ctx, amp, outcomes=True, cascade_lambda=cascade_lambda, tag="final-test"
    )
    test.pop("cascade_lambda")
    return val, test, cascade_lambda, {"val": val_outcomes, "test": test_outcomes}
