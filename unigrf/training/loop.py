"""The training loop, pure PyTorch: read `fit` top to bottom.

`fit(cfg, data, ctx)` trains one configuration: every epoch it trains on the users' training
windows (`train_epoch`: one `train_step` per batch — one joint forward pass for retrieval and
ranking, the weighter's combination, the enhancer's hard negatives after its warm-up),
evaluates the validation split, reports and checkpoints through `ctx`, and early-stops on
`train.objective`. At the end the selected weights are evaluated once on the test split
[SPEC §2: test is read once]. Each named step lives in a module with one job:

    step.py        build_trainer, train_step, FiniteGuard   batches.py    epoch_users, epoch_batches
    schedule.py    lr_factor                                 validation.py evaluate_on_main, ...
    selection.py   RunSelection, Selection, TrainingError    objective.py  parse_objective
    checkpoint_io.py  checkpoint files, rotation, results    logs.py       progress_line, RunLog
    context.py     TrainContext (where it runs)              in_epoch.py   EpochProgress

The same function runs in the plain local runner (`TrainContext`, checkpoints under
`run_dir/checkpoints/`) and in Ray Train workers (`unigrf.training.distributed.RayTrainContext`):
a context supplies rank / world size / device, restores the latest checkpoint and receives each
epoch's metrics and state. With world_size > 1 the model is wrapped in DistributedDataParallel
and each rank trains on its shard of the users (`epoch_users`); rank 0 evaluates.

Determinism: the initial weights come from `train.seed`; each epoch re-seeds torch from
(seed, epoch, rank) and permutes the users from (seed, epoch), so an epoch's negatives, dropout
masks and batches do not depend on what ran before it. A run resumed from a checkpoint (model,
optimizer, weighter, early-stopping state, history) therefore repeats an uninterrupted run
exactly, for the same thread count. With `train.checkpoint_every_steps` the plain loop also
saves the epoch in progress (`unigrf.training.in_epoch`: the steps done, the loss sums, torch's
random state), and a run resumed from it repeats the uninterrupted one too.

Host syncs: the per-task loss sums stay on the device during an epoch; the host reads losses
every `train.log_every` steps (TensorBoard's step scalars and the non-finite check) and at the
epoch's end.

Outputs under `ctx.run_dir` (rank 0): `tensorboard/` (`logs.RunLog`), `metrics.json` (best
epoch, its val metrics, test metrics, the selection, the cascade's λ, timing; with per-stage
selection each stage's best epoch), `best_model.pt` (the selected weights; per stage a TwoStage
state, `retriever.*` and `ranker.*`: `load_selected_model` loads either) and
`outcomes/val.parquet`, `outcomes/test.parquet` (the selected weights' per-user outcomes,
`unigrf.evaluation.outcomes`: what every reported metric is computed from; their paths are
`result["outcomes"]`). Model selection: `unigrf.training.selection`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from unigrf.config import ExperimentConfig, config_to_dict, resolve_model_size, resolved_objective
from unigrf.data.sequences import SequenceData, TrainExamples
from unigrf.kernels import keep_freed_memory
from unigrf.training.batches import epoch_batches, epoch_users, steps_per_epoch, to_device
from unigrf.training.checkpoint_io import (  # noqa: F401 - the loop's public names, re-exported
    CHECKPOINT_FILE,
    CheckpointError,
    load_reported_checkpoint,
    load_state_file,
    restore_state,
    write_reported_checkpoint,
    write_results,
)
from unigrf.training.context import TrainContext, resolve_device  # noqa: F401
from unigrf.training.in_epoch import EpochProgress
from unigrf.training.logs import RunLog, progress_line  # noqa: F401
from unigrf.training.memory import check_memory
from unigrf.training.objective import objective_value, parse_objective  # noqa: F401
from unigrf.training.schedule import lr_factor
from unigrf.training.selection import (  # noqa: F401
    RunSelection,
    Selection,
    TrainingError,
    load_selected_model,
    resolved_selection,
    selections,
)
from unigrf.training.step import FiniteGuard, LossForward, Trainer, build_trainer, train_step
from unigrf.training.validation import epoch_validation, final_evaluation

_LossForward = LossForward  # the module DDP wraps (tests patch its forward)


def fit(cfg: ExperimentConfig, data: SequenceData, ctx: TrainContext) -> dict[str, Any]:
    """Train `cfg` on `data`; returns {best_epoch, best_objective, epochs_run, val, test,
    history, time, selection ("joint" | "per_stage"), cascade_lambda (the cascade's λ, chosen on
    validation; inf: the ranking head's order; NaN: no cascade), outcomes ({"val", "test"}:
    absolute paths of the per-user outcome files, written by rank 0)}, plus stage_best_epochs
    per stage. Resumes from `ctx.load_checkpoint()` when it returns a state (the epoch after
    the checkpoint's, with its model, optimizer, weighter, early-stopping counters and history).
    """
    if cfg.model.size == "auto":
        cfg = resolve_model_size(cfg, data.num_train_interactions)
        ctx.log(
            f"model: size auto -> {cfg.model.size} ({data.num_train_interactions:,} training interactions)"
        )
    keep_freed_memory(ctx.device)  # a step's freed tensors are reused by the next, not faulted in again
    check_memory(cfg, data.num_items, data.max_len)  # a config that cannot fit fails before the first step
    trainer = build_trainer(cfg, data, ctx.device, ctx.world_size)
    objective = resolved_objective(cfg)
    selection = RunSelection.of(cfg, trainer.model, objective)  # a bad objective fails here
    # the cascade is evaluated every epoch only when the objective reads it
    per_epoch_cascade = "cascade" in objective
    for key, value in (
        ("train.checkpoint_every_steps", cfg.train.checkpoint_every_steps),
        ("eval.checkpoint_every_batches", cfg.eval.checkpoint_every_batches),
    ):
        if value and not ctx.in_epoch_checkpoints:
            raise ValueError(
                f"{key} ({value}): progress inside an epoch or an evaluation is saved by the plain "
                "loop only (one worker, no Ray address); under Ray a run resumes from its epochs: "
                "set it to 0"
            )
    start_epoch, history, progress = resume(ctx, trainer, selection)
    examples = data.train_examples(cfg.data.train_windows)
    per_epoch = steps_per_epoch(examples.per_epoch, ctx.world_size, cfg.train.batch_size)
    done = progress.steps_done if progress is not None else 0
    log = RunLog(ctx.run_dir, ctx.is_main, start_epoch, start_epoch * per_epoch + done)

    def save_progress(p: EpochProgress) -> None:  # the last finished epoch's state, and p
        ctx.save_progress(checkpoint_state(cfg, trainer, selection, p.epoch - 1, history), p)

    last_pass = None  # the budget's last epoch's validation, which the final one may reuse
    for epoch in range(start_epoch, cfg.train.epochs):
        if selection.should_stop(cfg.train.patience):
            break
        t0 = time.perf_counter()
        metrics = train_epoch(
            cfg, trainer, data, examples, epoch, ctx, log, per_epoch, progress, save_progress
        )
        before = progress.train_s if progress is not None else 0.0  # an earlier attempt's steps
        progress = None  # only the first epoch resumed continues one
        train_s = time.perf_counter() - t0
        val, last_pass = epoch_validation(
            trainer.model, data, cfg.eval, ctx, trainer.amp, per_epoch_cascade, epoch, epoch == cfg.train.epochs - 1
        )
        metrics.update(val)
        metrics["objective"] = objective_value(objective, metrics)
        selection.update(epoch, metrics)  # early stopping; adds best_objective, best_epoch
        metrics.update({"time/train_s": before + train_s, "time/epoch_s": before + time.perf_counter() - t0})
        history.append(metrics)
        log.epoch(epoch, metrics)
        ctx.report(
            metrics, checkpoint_state(cfg, trainer, selection, epoch, history) if ctx.is_main else None
        )

    final = selection.final_model(trainer.model, history)  # test: the selected weights, once
    val, test, cascade_lambda, outcomes = final_evaluation(final, data, cfg.eval, ctx, trainer.amp, last_pass)
    best_val = (
        {f"val/{k}": float(v) for k, v in val.items()} if selection.best_epoch >= 0 else selection.best_val
    )
    epoch_times = [h["time/epoch_s"] for h in history]
    result = {
        "best_epoch": selection.best_epoch,
        "best_objective": selection.best_objective,
        "epochs_run": len(history),
        "val": best_val,
        "test": {f"test/{k}": float(v) for k, v in test.items()},
        "time": {"total_s": sum(epoch_times), "epoch_s": sum(epoch_times) / max(len(epoch_times), 1)},
        "history": history,
        "selection": selection.kind,
        "cascade_lambda": cascade_lambda,  # chosen on validation, applied to test; what serving ranks by
        "outcomes": {s: str((ctx.run_dir / "outcomes" / f"{s}.parquet").resolve()) for s in ("val", "test")},
    }
    if selection.stage_best_epochs():
        result["stage_best_epochs"] = selection.stage_best_epochs()
    if ctx.is_main:
        write_results(ctx.run_dir, result, final, outcomes)
        ctx.drop_progress()  # the evaluations in progress, finished
    log.close(result["test"], selection.best_epoch)
    return result


def train_epoch(
    cfg: ExperimentConfig,
    trainer: Trainer,
    data: SequenceData,
    examples: TrainExamples,
    epoch: int,
    ctx: TrainContext,
    log: RunLog,
    per_epoch: int,
    progress: EpochProgress | None = None,
    save_progress: Callable[[EpochProgress], None] | None = None,
) -> dict[str, float]:
    """One epoch of `train_step`s over this rank's batches -> the epoch's training metrics
    (epoch, step, train/loss_<task> means, weights/<task> with their range over the steps,
    enhancer/active, lr). A non-finite loss is a TrainingError naming its epoch and step.

    `progress` (this epoch's, from an in-epoch checkpoint): continue after its steps, from its
    random state and loss sums. `save_progress` is called every `train.checkpoint_every_steps`
    steps and after the last (the epoch's validation, before its own checkpoint, can take long
    too: a run stopped there resumes at the validation)."""
    trainer.forward.train()
    ids = epoch_users(len(examples), cfg.train.seed, epoch, ctx.rank, ctx.world_size, examples.per_epoch)
    batches = epoch_batches(ids, examples.lengths, cfg.train.batch_size, cfg.train.seed, epoch, ctx.rank)
    if progress is None:
        # negatives and dropout depend on (seed, epoch, rank) only: a resumed run is identical
        torch.manual_seed(cfg.train.seed * 100_003 + epoch * 1_009 + ctx.rank)
        sums = {t: torch.zeros((), device=ctx.device) for t in trainer.tasks}  # summed on the device
        weight_range = {t: (math.inf, -math.inf) for t in trainer.tasks}
        done = 0
    else:
        progress.restore_rng(ctx.device)
        sums, weight_range, done = progress.sums_on(ctx.device), dict(progress.weight_range), progress.steps_done
    guard, mining = FiniteGuard(ctx.device), trainer.enhancer.active(epoch)
    step, total_steps = epoch * per_epoch + done, per_epoch * cfg.train.epochs
    t0, before = time.perf_counter(), progress.train_s if progress is not None else 0.0
    every = cfg.train.checkpoint_every_steps
    for i, batch_ids in enumerate(batches[done:], start=done):
        batch = to_device(data.train_batch(examples.users[batch_ids], examples.ends[batch_ids]), ctx.device)
        lr = cfg.train.lr * lr_factor(step, total_steps, cfg)
        total, losses = train_step(trainer, batch, lr, mining)
        guard.record(total, losses, step)
        for t, w in trainer.weighter.weights.items():
            low, high = weight_range[t]
            weight_range[t] = (min(low, w), max(high, w))
        for t in trainer.tasks:
            sums[t] += losses[t]
        step += 1
        if step % cfg.train.log_every == 0:  # the host reads the losses here
            guard.check(epoch)
            log.step(step, losses, trainer.weighter.weights)
        # every k steps, and at the epoch's end: its validation may take long too
        if every and save_progress is not None and ((i + 1) % every == 0 or i + 1 == len(batches)):
            guard.check(epoch)  # a diverged state is never saved
            elapsed = before + time.perf_counter() - t0
            save_progress(EpochProgress.capture(epoch, i + 1, sums, weight_range, ctx.device, elapsed))
    guard.check(epoch)
    metrics: dict[str, float] = {"epoch": float(epoch), "step": float(step)}
    for t in trainer.tasks:
        metrics[f"train/loss_{t}"] = float(sums[t]) / max(len(batches), 1)
    for t, w in trainer.weighter.weights.items():
        metrics[f"weights/{t}"] = float(w)
        if batches:
            metrics[f"weights/{t}_min"], metrics[f"weights/{t}_max"] = weight_range[t]
    metrics["enhancer/active"] = float(mining)
    metrics["lr"] = float(trainer.optimizer.param_groups[0]["lr"])
    return metrics


def resume(
    ctx: TrainContext, trainer: Trainer, selection: RunSelection
) -> tuple[int, list[dict[str, float]], EpochProgress | None]:
    """The latest checkpoint restored into `trainer` and `selection` -> (first epoch to run,
    the history so far, where that epoch stands: an in-epoch checkpoint's progress, or None);
    (0, [], None) for a fresh run. An in-epoch checkpoint that continues the latest epoch
    checkpoint is the later state, so it is the one restored."""
    latest = ctx.load_checkpoint()
    partial = ctx.load_progress(latest)
    state = partial if partial is not None else latest
    if state is None:
        return 0, [], None
    restore_state(trainer.model, state["model"], "model", ctx.run_dir)
    restore_state(trainer.optimizer, state["optimizer"], "optimizer", ctx.run_dir)
    restore_state(trainer.weighter, state["weighter"], "loss weighter", ctx.run_dir)
    selection.load_state_dict(state, ctx.run_dir)
    if partial is None:
        ctx.log(f"resuming after epoch {state['epoch']} (best epoch {selection.best_epoch})")
        return state["epoch"] + 1, state["history"], None
    progress = EpochProgress.from_state(partial["in_epoch"])
    ctx.log(f"resuming epoch {progress.epoch} after its step {progress.steps_done}")
    return progress.epoch, state["history"], progress


def checkpoint_state(
    cfg: ExperimentConfig, trainer: Trainer, selection: RunSelection, epoch: int, history: list
) -> dict[str, Any]:
    """What a checkpoint holds: everything a resumed run continues from exactly."""
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "weighter": trainer.weighter.state_dict(),
        "epoch": epoch,
        **selection.state_dict(),  # selections, best_val
        "history": history,
        "config": config_to_dict(cfg),
    }
