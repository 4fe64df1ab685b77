"""The training loop, pure PyTorch: read it top to bottom.

`fit(cfg, data, ctx)` trains one configuration: every epoch it trains on the users' training
windows (one joint forward pass for retrieval and ranking), combines the losses with the
weighter, mines hard negatives with the enhancer after its warm-up, evaluates the validation
split, reports and checkpoints through `ctx`, and early-stops on `train.objective`. At the
end the best checkpoint is evaluated once on the test split [SPEC §2: test is read once].

The same function runs in the plain local runner (`TrainContext`, checkpoints under
`run_dir/checkpoints/`) and in Ray Train workers (`unigrf.training.distributed.RayTrainContext`):
a context supplies rank / world size / device, restores the latest checkpoint and receives each
epoch's metrics and state. With world_size > 1 the model is wrapped in DistributedDataParallel
and each rank trains on its shard of the users (`epoch_users`); rank 0 evaluates.

Determinism: the initial weights come from `train.seed`; each epoch re-seeds torch from
(seed, epoch, rank) and permutes the users from (seed, epoch), so an epoch's negatives, dropout
masks and batches do not depend on what ran before it. A run resumed from a checkpoint (model,
optimizer, weighter, early-stopping state, history) therefore repeats an uninterrupted run
exactly, for the same thread count.

Outputs under `ctx.run_dir` (rank 0): `tensorboard/` (per-epoch scalars: train/*, weights/*,
val/*, objective, time/*, then test/* at the best epoch; `tensorboard/steps/`: per-step losses
and weights every `train.log_every` steps), `metrics.json` (best epoch, its val metrics, test
metrics, the selection, the cascade's λ, timing; with per-stage selection each stage's best
epoch), `best_model.pt` (the selected weights; per stage a TwoStage state, `retriever.*` and
`ranker.*`: `load_selected_model` loads either) and `outcomes/val.parquet`,
`outcomes/test.parquet` (the selected weights' per-user outcomes, `unigrf.evaluation.outcomes`:
what every reported metric is computed from; their paths are `result["outcomes"]`).

Model selection (`train.selection`, `resolved_selection`): a model serving both stages is
tested at one epoch (`joint`, the default through `auto`): the epoch with the best validation
objective, by default 0.5·NDCG@10 + 0.5·AUC — one checkpoint serves retrieval and ranking, as
the unified model is meant to (claim 5 asks whether one checkpoint can be best for both). The
two metrics enter unscaled, so the sum leans towards the one that moves more between epochs:
AUC's spread over a run's epochs is about twice NDCG@10's on Amazon MI and ML-100K
(reports/quality/amazon-mi-objective and ml-100k-session16-unigrf-two-stage, histories.csv).
It is kept as the one documented rule the claim grids were run with; `train.objective` sets
another (e.g. weights that equalise the two spreads). `per_stage`, explicit only, tests two
snapshots of the one run: retrieval at its best epoch on the objective's retrieval terms,
ranking at its best on the ranking terms, training until both are stale (the selection the
two_stage variant always gets: two separately trained models); its results record
`selection: per_stage`, and serving would hold two snapshots. Validation only, always.

The cascade's λ (log P(next) + λ·log P(like), `unigrf.evaluation.cascade_score`) is chosen on
validation at the selected weights and applied to test (`result["cascade_lambda"]`). When the
objective reads a cascade metric, each epoch's validation chooses its own λ (still
validation): the epoch's cascade term is its best λ's.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from unigrf.atomic import WriteError, failure_reason, is_write_failure, write_atomic, write_text_atomic
from unigrf.config import (
    ExperimentConfig,
    config_to_dict,
    effective_m,
    effective_weighter_kind,
    resolve_model_size,
    resolved_objective,
    variant_spec,
)
from unigrf.data.sequences import SequenceData
from unigrf.evaluation.evaluate import evaluate
from unigrf.model import RankingDrivenEnhancer, TwoStage, build_model, build_weighter
from unigrf.model.ranking_prior import PriorStats
from unigrf.names import remove_tree
from unigrf.kernels import keep_freed_memory
from unigrf.training.checkpoint_io import (
    CheckedWriter,
    CheckpointError,
    check_checkpoint_state,
    restore_state,
    tensorboard_error,
    write_results,
)
from unigrf.training.memory import check_memory
from unigrf.training.precision import autocast, autocast_dtype

CHECKPOINT_FILE = "state.pt"


class TrainingError(RuntimeError):
    """Training cannot go on or its result would be meaningless (a non-finite loss, an
    objective that was never finite); the message says where and why."""


# ---------------------------------------------------------------------------------------------
# The objective: a metric name or a weighted sum of metric names, always maximised.
# ---------------------------------------------------------------------------------------------

_TERM = re.compile(r"\s*([+-])?\s*(?:(\d*\.?\d+(?:[eE][-+]?\d+)?)\s*\*\s*)?([A-Za-z_][\w/@.]*)\s*")


def parse_objective(expr: str) -> list[tuple[float, str]]:
    """`"0.5*val/ndcg@10 + 0.5*val/auc - 0.1*val/logloss"` -> [(0.5, "val/ndcg@10"), ...]."""
    terms, pos = [], 0
    while pos < len(expr):
        match = _TERM.match(expr, pos)
        if not match or match.end() == pos or (terms and not match.group(1)):
            raise ValueError(f"train.objective: cannot parse {expr!r} at character {pos}")
        sign = -1.0 if match.group(1) == "-" else 1.0
        weight = float(match.group(2)) if match.group(2) else 1.0
        terms.append((sign * weight, match.group(3)))
        pos = match.end()
    if not terms:
        raise ValueError("train.objective is empty")
    if any(not name.startswith("val/") for _, name in terms):
        raise ValueError(f"train.objective {expr!r}: model selection may only use val/ metrics")
    return terms


def objective_value(expr: str, metrics: dict[str, float]) -> float:
    return terms_value(parse_objective(expr), metrics)


def terms_value(terms: list[tuple[float, str]], metrics: dict[str, float]) -> float:
    total = 0.0
    for weight, name in terms:
        if name not in metrics:
            raise KeyError(f"objective metric {name!r} not reported (have: {', '.join(sorted(metrics))})")
        total += weight * float(metrics[name])
    return total


def metric_stage(name: str) -> str | None:
    """The stage whose model alone decides metric `name`: "retrieval" (hr@k, ndcg@k, mrr),
    "ranking" (auc, logloss, gauc), or None (cascade metrics depend on both stages)."""
    metric = name.removeprefix("val/")
    if metric.startswith(("hr@", "ndcg@")) or metric == "mrr":
        return "retrieval"
    if metric in ("auc", "logloss", "gauc"):
        return "ranking"
    return None


# ---------------------------------------------------------------------------------------------
# Model selection: the best epoch of each separately trained model on its own objective terms.
# ---------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """Early stopping and best-checkpoint tracking for `module` on `terms` (always maximised).

    One Selection covers a single model. The two-stage pipeline has one per stage: its
    retriever and ranker are separate models, so each keeps the weights of its own best epoch
    (the ranker typically peaks many epochs before the retriever) and training stops when both
    are stale — as if each had been trained and early-stopped alone."""

    name: str
    terms: list[tuple[float, str]]
    module: nn.Module
    best_objective: float = -math.inf
    best_epoch: int = -1
    stale: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    STATE_KEYS = ("best_objective", "best_epoch", "stale", "best_state")

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record `epoch`'s metrics; True when it is this selection's new best (strictly)."""
        value = terms_value(self.terms, metrics)
        if not math.isfinite(value):  # never selected; counts against patience
            self.stale += 1
            return False
        if value > self.best_objective:
            self.best_objective, self.best_epoch, self.stale = value, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
            return True
        self.stale += 1
        return False

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.STATE_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def selections(objective: str, model: nn.Module, per_stage: bool = False) -> list[Selection]:
    """[one Selection on the whole objective], or [retrieval's, ranking's], each on the
    objective's terms that judge that stage alone: always for TwoStage (a retriever and a ranker,
    one Selection each), and for a model serving both stages when `per_stage`
    (`train.selection: per_stage`: two Selections of the same weights, kept at two epochs).
    Raises ValueError when a per-stage objective has a term no single stage decides (cascade)
    or leaves a stage unjudged."""
    terms = parse_objective(objective)
    two_stage = isinstance(model, TwoStage)
    if not (two_stage or per_stage):
        return [Selection("model", terms, model)]
    who = "the two_stage variant" if two_stage else "train.selection: per_stage"
    by_stage: dict[str, list[tuple[float, str]]] = {"retrieval": [], "ranking": []}
    for weight, name in terms:
        stage = metric_stage(name)
        if stage is None:
            raise ValueError(
                f"train.objective {objective!r}: {name} depends on both stages; {who} "
                "selects each stage's checkpoint on its own terms (retrieval: hr@k, ndcg@k, mrr; "
                "ranking: auc, logloss, gauc)"
            )
        by_stage[stage].append((weight, name))
    for stage, own in by_stage.items():
        if not own:
            raise ValueError(
                f"train.objective {objective!r} has no {stage} metric, so {who} cannot "
                f"select its {stage} checkpoint; e.g. train.objective='0.5*val/ndcg@10 + 0.5*val/auc'"
            )
    retriever, ranker = (model.retriever, model.ranker) if two_stage else (model, model)
    return [
        Selection("retrieval", by_stage["retrieval"], retriever),
        Selection("ranking", by_stage["ranking"], ranker),
    ]


def load_selected_model(model: nn.Module, file: Path) -> nn.Module:
    """The model a run was tested with, from its `best_model.pt` and a freshly built `model`
    of its config: `model` with the weights loaded, or for a per-stage selection (a TwoStage
    state: `retriever.*`, `ranker.*`) a TwoStage of `model` and a copy of it."""
    state = load_state_file(file)
    if not isinstance(model, TwoStage) and any(k.startswith("retriever.") for k in state):
        model = TwoStage.of(model, copy.deepcopy(model))
    model.load_state_dict(state)
    return model


def resolved_selection(cfg: ExperimentConfig, objective: str) -> str:
    """ "joint" or "per_stage": the two_stage variant always selects per stage (two models, each
    on its own terms); a one-stage model has one selection ("joint"); a model serving both
    stages takes `train.selection`, "auto" being joint — one checkpoint is the unified model
    (per_stage, two snapshots of it, only when asked for). `objective` is checked by
    `selections` (a per-stage objective needs terms that judge each stage alone)."""
    del objective  # the rule no longer depends on it; kept for the callers' signature
    spec = variant_spec(cfg)
    if cfg.train.variant == "two_stage":
        return "per_stage"
    if not (spec.retrieval and spec.ranking):
        return "joint"
    return "joint" if cfg.train.selection == "auto" else cfg.train.selection


def selected_model(model: nn.Module, selected: list[Selection]) -> nn.Module:
    """The weights test is read with: `model` with each Selection's best state restored, or
    for a per-stage selection of one model, a TwoStage of its two snapshots (retrieval's best
    epoch retrieves, ranking's best epoch ranks and re-ranks the cascade)."""
    if len(selected) == 1 or isinstance(model, TwoStage):
        for sel in selected:
            sel.restore_best()
        return model
    retrieval, ranking = selected
    ranker = copy.deepcopy(model)
    if ranking.best_state is not None:
        ranker.load_state_dict(ranking.best_state)
    retrieval.restore_best()
    return TwoStage.of(model, ranker)


# ---------------------------------------------------------------------------------------------
# Contexts: where the loop runs (rank, device) and where its checkpoints and metrics go.
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainContext:
    """Local single-process runner: checkpoints under `run_dir/checkpoints/epoch_XXXX/`."""

    run_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    keep_checkpoints: int = 2
    verbose: bool = True
    _warned: set[Path] = field(default_factory=set, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint's state, or None for a fresh run."""
        ckpts = sorted((self.run_dir / "checkpoints").glob("epoch_*"))
        for path in reversed(ckpts):
            file = path / CHECKPOINT_FILE
            if file.exists():
                return check_checkpoint_state(load_state_file(file), file)
        return None

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        """Called once per epoch on every rank; `state` is the checkpoint (rank 0 only)."""
        if state is not None and self.is_main:
            self._save(metrics, state)
        self.log(progress_line(metrics))

    def log(self, message: str) -> None:
        """A console line from rank 0 (when verbose)."""
        if self.verbose and self.is_main:
            print(message, flush=True)

    def _save(self, metrics: dict[str, float], state: dict[str, Any]) -> None:
        """Write the checkpoint under a temporary name and rename it into place: a write that
        fails (a full disk, a read-only directory) or is interrupted leaves the previous
        checkpoints as they were, and no partial one."""
        root = self.run_dir / "checkpoints"
        final = root / f"epoch_{int(metrics['epoch']):04d}"
        tmp = root / f".tmp_{final.name}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            remove_tree(tmp, self.run_dir, ignore_errors=True)
            tmp.mkdir()
            write_checkpoint_dir(tmp, state, metrics)
            remove_tree(final, self.run_dir)  # the same epoch again (a crash after its rename)
            os.replace(tmp, final)
        except BaseException as err:
            remove_tree(tmp, self.run_dir, ignore_errors=True)  # free what was written
            if not (isinstance(err, WriteError) or (isinstance(err, Exception) and is_write_failure(err))):
                raise
            cause = err.cause if isinstance(err, WriteError) else failure_reason(err)
            kept = sorted(p.name for p in root.glob("epoch_*")) if root.is_dir() else []
            raise CheckpointError(
                f"{final}: cannot write the checkpoint ({cause}); "
                + (f"the last good one, {root / kept[-1]}, is kept: " if kept else "")
                + "free space and run the same command again to resume"
            ) from err
        self._prune(root)

    def _prune(self, root: Path) -> None:
        """Keep the best `keep_checkpoints` by objective, and always the latest (for resume).
        Ties go to the earlier epoch, as in `fit`'s model selection (strict improvement). A
        checkpoint whose metrics.json cannot be read is never pruned (its rank is unknown) and
        named once on stderr."""
        scored = []
        for path in root.glob("epoch_*"):
            objective = self._stored_objective(path / "metrics.json")
            if objective is not None:
                scored.append((objective, path))
        if not scored:
            return
        latest = max(p for p in root.glob("epoch_*"))
        ranked = sorted(scored, key=lambda t: (-t[0], t[1].name))
        best = {p for _, p in ranked[: self.keep_checkpoints]}
        for _, path in scored:
            if path not in best and path != latest:
                remove_tree(path, self.run_dir, ignore_errors=True)

    def _stored_objective(self, file: Path) -> float | None:
        """A checkpoint's objective from its metrics.json, None (and a warning) if unreadable."""
        try:
            value = json.loads(file.read_text()).get("objective", -math.inf)
            return float(value) if value is not None else -math.inf
        except (OSError, ValueError, AttributeError, TypeError) as err:
            if file not in self._warned:
                self._warned.add(file)
                reason = getattr(err, "strerror", None) or str(err).splitlines()[0] or type(err).__name__
                print(
                    f"warning: {file}: unreadable ({reason}); this checkpoint is kept, not ranked",
                    file=sys.stderr,
                )
            return None


def write_checkpoint_dir(directory: Path, state: dict[str, Any], metrics: dict[str, float]) -> None:
    """`state` (tensors and plain Python types only: `load_state_file` refuses anything else)
    and the epoch's metrics into `directory`. A failed write is a `WriteError` naming the file
    and the real cause (torch's own error does not say it), the file not left behind."""
    write_atomic(directory / CHECKPOINT_FILE, lambda fh: torch.save(state, fh))
    write_text_atomic(directory / "metrics.json", json.dumps(metrics, indent=2))


def write_reported_checkpoint(directory: Path, state: dict[str, Any], metrics: dict[str, float]) -> None:
    """`write_checkpoint_dir` into the temporary directory a Ray session (Train or Tune) then
    copies into its storage; a failed write (a full disk) is a CheckpointError before Ray sees
    the checkpoint, so the storage keeps the last good one."""
    try:
        write_checkpoint_dir(directory, state, metrics)
    except (WriteError, OSError) as err:
        cause = err.cause if isinstance(err, WriteError) else failure_reason(err)
        raise CheckpointError(
            f"epoch {int(metrics['epoch'])}: cannot write the checkpoint to {directory} "
            f"({cause}); the run's storage keeps its last good checkpoint: "
            "free space and run the same command again to resume"
        ) from err


def load_reported_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The state in a Ray session's checkpoint (`ray.train.get_checkpoint()` or
    `ray.tune.get_checkpoint()`: anything with `as_directory`), None when there is none."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        file = Path(path) / CHECKPOINT_FILE
        return check_checkpoint_state(load_state_file(file), file)


def load_state_file(file: Path) -> dict[str, Any]:
    """A checkpoint written by `write_checkpoint_dir`, loaded with `weights_only=True`: only
    tensors and plain types are unpickled, so a tampered file cannot run code when a run
    resumes. Any failure (tampered, truncated, not a checkpoint) is a CheckpointError."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{file}: not a loadable checkpoint ({reason}); delete it to resume from an earlier "
            "one, or start over with --restart"
        ) from None


def progress_line(m: dict[str, float]) -> str:
    parts = [f"epoch {int(m['epoch']):3d}"]
    for key in ("train/loss_retrieval", "train/loss_ranking", "weights/retrieval", "weights/ranking"):
        if key in m:
            parts.append(f"{key.split('/')[1]} {m[key]:.4f}")
    for key in ("val/ndcg@10", "val/hr@10", "val/auc", "objective"):
        if key in m:
            parts.append(f"{key} {m[key]:.4f}")
    parts.append(f"{m.get('time/epoch_s', 0.0):.1f}s")
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_users(
    num_examples: int, seed: int, epoch: int, rank: int, world_size: int, per_epoch: int | None = None
) -> np.ndarray:
    """This rank's training examples for `epoch` (ids 0..num_examples-1: the windows of
    `SequenceData.train_examples`; one per user under `data.train_windows: last`): the first
    `per_epoch` (default all) of a seeded permutation, padded (by wrapping) so every rank gets
    the same number — unequal batch counts would deadlock DDP's all-reduce."""
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    if per_epoch is not None:
        perm = perm[:per_epoch]
    per_rank = math.ceil(len(perm) / world_size)
    perm = np.resize(perm, per_rank * world_size)
    return perm[rank::world_size]


# Examples are sorted by window length within pools of this many batches of the permutation.
SORT_POOL_BATCHES = 8


def epoch_batches(
    examples: np.ndarray, window_lengths: np.ndarray, batch_size: int, seed: int, epoch: int, rank: int
) -> list[np.ndarray]:
    """`examples` (this rank's permutation) cut into batches of similar training-window length.

    A right-padded batch costs as much as its longest window (attention is quadratic in it), so
    within each pool of `SORT_POOL_BATCHES` consecutive batches of the permutation the examples
    are sorted by `window_lengths[example]` before cutting, and the batches are then shuffled
    (seeded by seed, epoch, rank). Every example still appears once per epoch, and the batch
    count — which DDP needs equal on every rank — is unchanged. ML-100K, max_len 200, batch 16,
    last windows: 95k instead of 187k padded window positions per epoch (84k real ones).
    """
    pool = batch_size * SORT_POOL_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(examples), pool):
        chunk = examples[start : start + pool]
        chunk = chunk[np.argsort(window_lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = np.random.default_rng([seed, epoch, rank, 1]).permutation(len(batches))
    return [batches[i] for i in order]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class _LossForward(nn.Module):
    """Makes `model.losses` the forward of a module, so DDP synchronises its gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, hard_negatives, retrieval: bool, ranking: bool) -> dict[str, torch.Tensor]:
        return self.model.losses(batch, hard_negatives, retrieval=retrieval, ranking=ranking)


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


def steps_per_epoch(num_examples: int, world_size: int, batch_size: int) -> int:
    """Optimizer steps per epoch for `num_examples` training examples per epoch
    (`TrainExamples.per_epoch`), as `epoch_users` pads them over the ranks."""
    return math.ceil(math.ceil(num_examples / world_size) / batch_size)


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


def check_finite(loss: torch.Tensor, losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    """Raise TrainingError naming the epoch and step when the combined loss is NaN or inf."""
    if not bool(torch.isfinite(loss)):
        parts = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
        raise TrainingError(
            f"non-finite training loss at epoch {epoch}, step {step} ({parts}): the run diverged; "
            "lower train.lr or check the data"
        )


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------


def fit(cfg: ExperimentConfig, data: SequenceData, ctx: TrainContext) -> dict[str, Any]:
    """Train `cfg` on `data`; returns {best_epoch, best_objective, epochs_run, val, test,
    history, time, selection ("joint" | "per_stage"), cascade_lambda (the cascade's λ, chosen on
    validation; inf: the ranking head's order; NaN: no cascade), outcomes ({"val", "test"}:
    absolute paths of the per-user outcome files, written by rank 0)}, plus stage_best_epochs
    per stage.

    Resumes from `ctx.load_checkpoint()` when it returns a state (the epoch after the
    checkpoint's, with its model, optimizer, weighter, early-stopping counters and history).
    """
    if cfg.model.size == "auto":
        cfg = resolve_model_size(cfg, data.num_train_interactions)
        ctx.log(
            f"model: size auto -> {cfg.model.size} ({data.num_train_interactions:,} training interactions)"
        )
    spec = variant_spec(cfg)
    tasks = [t for t, on in (("retrieval", spec.retrieval), ("ranking", spec.ranking)) if on]
    device = ctx.device
    keep_freed_memory()  # a step's freed tensors are reused by the next, not faulted in again
    seed_everything(cfg.train.seed)  # init is identical on every rank

    check_memory(cfg, data.num_items, data.max_len)  # a config that cannot fit fails before the first step
    counts = torch.as_tensor(data.item_counts("val"))  # training interactions per item
    model = build_model(
        cfg, data.num_items, data.num_levels, data.max_len, counts, PriorStats.of(data.like_statistics())
    ).to(device)
    amp = autocast_dtype(cfg.train.precision, device)
    objective = resolved_objective(cfg)
    selection = resolved_selection(cfg, objective)
    selected = selections(objective, model, selection == "per_stage")  # a bad objective fails here
    # the cascade (retrieval's top-C re-ranked) is evaluated every epoch only when the objective
    # reads it; the selected checkpoint's validation metrics always include it (see below)
    per_epoch_cascade = "cascade" in objective
    loss_module: nn.Module = _LossForward(model)
    if ctx.world_size > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            # one-task variants leave a head without gradient
            find_unused_parameters=len(tasks) < 2 or isinstance(model, TwoStage),
        )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, betas=cfg.train.adam_betas
    )
    weighter = build_weighter(effective_weighter_kind(cfg), cfg.weighter, tasks)
    enhancer = RankingDrivenEnhancer(cfg.enhancer, effective_m(cfg))
    shared = shared_parameters(model)
    groups = clip_groups(model)

    start_epoch = 0
    best_val: dict[str, float] = {}
    history: list[dict[str, float]] = []
    state = ctx.load_checkpoint()
    if state is not None:
        restore_state(model, state["model"], "model", ctx.run_dir)
        restore_state(optimizer, state["optimizer"], "optimizer", ctx.run_dir)
        restore_state(weighter, state["weighter"], "loss weighter", ctx.run_dir)
        start_epoch = state["epoch"] + 1
        sel_states = state.get("selections")
        if sel_states is None:  # a checkpoint from before per-stage selection: one model
            keys = ("best_objective", "best_epoch", "stale", "best_model")
            sel_states = [dict(zip(Selection.STATE_KEYS, (state[k] for k in keys), strict=True))]
        if len(sel_states) != len(selected):  # e.g. a per_stage run resumed under the joint default
            written = "train.selection=per_stage" if len(sel_states) == 2 else "train.selection=joint"
            raise ValueError(
                f"the checkpoint in {ctx.run_dir} was written under {len(sel_states)} model selection(s), "
                f"this config makes {len(selected)} (train.selection resolves to {selection!r}); resume it "
                f"with the selection it was trained with ({written}), or restart it"
            )
        for sel, sel_state in zip(selected, sel_states, strict=True):
            sel.load_state_dict(sel_state)
        best_val, history = state["best_val"], state["history"]
        ctx.log(f"resuming after epoch {state['epoch']} (best epoch {max(s.best_epoch for s in selected)})")

    examples = data.train_examples(cfg.data.train_windows)
    per_epoch = steps_per_epoch(examples.per_epoch, ctx.world_size, cfg.train.batch_size)
    total_steps = per_epoch * cfg.train.epochs
    step = start_epoch * per_epoch
    writer, step_writer = _tensorboard(ctx, start_epoch, step)
    for epoch in range(start_epoch, cfg.train.epochs):
        if all(sel.stale >= cfg.train.patience for sel in selected):
            break
        t0 = time.perf_counter()
        # negatives and dropout depend on (seed, epoch, rank) only: a resumed run is identical
        torch.manual_seed(cfg.train.seed * 100_003 + epoch * 1_009 + ctx.rank)
        loss_module.train()
        ids = epoch_users(len(examples), cfg.train.seed, epoch, ctx.rank, ctx.world_size, examples.per_epoch)
        batches = epoch_batches(ids, examples.lengths, cfg.train.batch_size, cfg.train.seed, epoch, ctx.rank)
        sums = {t: torch.zeros((), device=device) for t in tasks}  # summed on device: no per-step sync
        n_batches = 0
        # the weights' range over the epoch's steps (the history also keeps the epoch-end value)
        weight_range = {t: (math.inf, -math.inf) for t in tasks}
        mining = enhancer.active(epoch)
        for batch_ids in batches:
            batch = _to(data.train_batch(examples.users[batch_ids], examples.ends[batch_ids]), device)
            with autocast(device, amp):
                hard = enhancer.mine(model, batch) if mining else None
                losses = loss_module(batch, hard, spec.retrieval, spec.ranking)
            total = weighter.combine(losses, shared)
            check_finite(total.detach(), losses, epoch, step)
            for t, w in weighter.weights.items():
                low, high = weight_range[t]
                weight_range[t] = (min(low, w), max(high, w))
            for group in optimizer.param_groups:
                group["lr"] = cfg.train.lr * lr_factor(step, total_steps, cfg)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg.train.grad_clip:
                for params in groups:
                    nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            optimizer.step()
            for t in tasks:
                sums[t] += losses[t].detach()
            n_batches += 1
            step += 1
            if step_writer is not None and step % cfg.train.log_every == 0:
                for t in tasks:
                    step_writer.add_scalar(f"step/loss_{t}", float(losses[t].detach()), step)
                for t, w in weighter.weights.items():
                    step_writer.add_scalar(f"step/weight_{t}", w, step)
        train_s = time.perf_counter() - t0

        metrics: dict[str, float] = {"epoch": float(epoch), "step": float(step)}
        for t in tasks:
            metrics[f"train/loss_{t}"] = float(sums[t]) / max(n_batches, 1)
        for t, w in weighter.weights.items():
            metrics[f"weights/{t}"] = float(w)
            if n_batches:
                metrics[f"weights/{t}_min"], metrics[f"weights/{t}_max"] = weight_range[t]
        metrics["enhancer/active"] = float(mining)
        metrics["lr"] = float(optimizer.param_groups[0]["lr"])
        # with a cascade term, this epoch's λ is chosen on this epoch's validation (val/cascade_lambda)
        val = _evaluate_main(model, data, "val", cfg, ctx, amp, cascade=per_epoch_cascade)
        if not per_epoch_cascade:  # not computed this epoch (NaN): left out of the history
            val = {k: v for k, v in val.items() if not k.startswith("cascade")}
        metrics.update({f"val/{k}": float(v) for k, v in val.items()})
        metrics["objective"] = objective_value(objective, metrics)
        improved = [sel.update(epoch, metrics) for sel in selected]
        if len(selected) == 1 and improved[0]:
            best_val = {k: v for k, v in metrics.items() if k.startswith("val/")}
        # two stages: the stage objectives split the objective's terms, so their bests add up
        metrics["best_objective"] = sum(sel.best_objective for sel in selected)
        metrics["best_epoch"] = float(max(sel.best_epoch for sel in selected))
        if len(selected) > 1:
            metrics.update({f"best_epoch/{sel.name}": float(sel.best_epoch) for sel in selected})
        metrics["time/train_s"] = train_s
        metrics["time/epoch_s"] = time.perf_counter() - t0
        history.append(metrics)
        if writer is not None:
            for k, v in metrics.items():
                if k not in ("epoch", "step") and math.isfinite(v):
                    writer.add_scalar(k, v, epoch)
            writer.flush()
        checkpoint = None
        if ctx.is_main:
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "weighter": weighter.state_dict(),
                "epoch": epoch,
                "selections": [sel.state_dict() for sel in selected],
                "best_val": best_val,
                "history": history,
                "config": config_to_dict(cfg),
            }
        ctx.report(metrics, checkpoint)

    never = [sel for sel in selected if sel.best_epoch < 0]
    if never and history:
        raise TrainingError(
            f"train.objective {objective!r} was not finite at any of the {len(history)} epochs "
            f"run (last value {history[-1]['objective']}), so no checkpoint can be selected and test is "
            "not read; choose a metric the validation split defines (AUC needs both labels among the targets)"
        )
    # test is read once, on the best checkpoint (per stage: each stage's best epoch)
    final = selected_model(model, selected)
    best_epoch = max(sel.best_epoch for sel in selected)
    best_obj = sum(sel.best_objective for sel in selected)
    # The selected weights' full validation metrics and per-user outcomes (the per-epoch
    # evaluation may have skipped the cascade, and per stage the two best epochs were never
    # evaluated together; every other number is recomputed identically). The cascade's λ is
    # chosen here, on validation, and test is read at it.
    val, val_outcomes = _evaluate_main(final, data, "val", cfg, ctx, amp, outcomes=True)
    cascade_lambda = float(val.pop("cascade_lambda"))
    if best_epoch >= 0:
        best_val = {f"val/{k}": float(v) for k, v in val.items()}
    test, test_outcomes = _evaluate_main(
        final, data, "test", cfg, ctx, amp, outcomes=True, cascade_lambda=cascade_lambda
    )
    test.pop("cascade_lambda")
    outcome_files = {
        split: (ctx.run_dir / "outcomes" / f"{split}.parquet").resolve() for split in ("val", "test")
    }
    epoch_times = [h["time/epoch_s"] for h in history]
    result = {
        "best_epoch": best_epoch,
        "best_objective": best_obj,
        "epochs_run": len(history),
        "val": best_val,
        "test": {f"test/{k}": float(v) for k, v in test.items()},
        "time": {"total_s": sum(epoch_times), "epoch_s": sum(epoch_times) / max(len(epoch_times), 1)},
        "history": history,
        "selection": selection,
        # chosen on validation (cascade NDCG@K), applied to test; what serving ranks by
        "cascade_lambda": cascade_lambda,
        "outcomes": {split: str(path) for split, path in outcome_files.items()},
    }
    if len(selected) > 1:
        result["stage_best_epochs"] = {sel.name: sel.best_epoch for sel in selected}
    if ctx.is_main:
        write_results(ctx.run_dir, result, final, {"val": val_outcomes, "test": test_outcomes})
    if writer is not None:
        for k, v in result["test"].items():
            if math.isfinite(v):
                writer.add_scalar(k, v, max(best_epoch, 0))
        writer.close()
        step_writer.close()
    return result


def _evaluate_main(
    model: nn.Module,
    data: SequenceData,
    split: str,
    cfg: ExperimentConfig,
    ctx: TrainContext,
    amp: torch.dtype | None = None,
    cascade: bool = True,
    outcomes: bool = False,
    cascade_lambda: float | None = None,
) -> Any:
    """Evaluate on rank 0 (under autocast `amp`) and share the metrics: every rank then takes
    the same decisions (early stopping, the cascade's λ), and the numbers equal a
    single-process evaluation. With `outcomes`, (metrics, the per-user outcomes frame on rank
    0, None on the others)."""
    result = frame = None
    if ctx.is_main:
        with autocast(ctx.device, amp):
            result = evaluate(
                model,
                data,
                split,
                cfg.eval,
                ctx.device,
                cascade=cascade,
                cascade_lambda=cascade_lambda,
                outcomes=outcomes,
            )
        if outcomes:
            result, frame = result
    if ctx.world_size > 1 and dist.is_initialized():
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    return (result, frame) if outcomes else result


def _after_existing_event_files(root: Path) -> None:
    """Wait until the clock's second is past every event file's under `root`.

    TensorBoard reads a directory's event files in name order, and a name is
    `events.out.tfevents.<unix second>.<host>.<pid>.<per-process counter>`: a resumed writer
    opened within the second of the one it continues could sort before it (counter 10 < 9 as
    text), and its purge would then apply to nothing."""
    seconds = [int(p.name.split(".")[3]) for p in root.rglob("events.out.tfevents.*")]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


def _tensorboard(ctx: TrainContext, start_epoch: int, start_step: int):
    """(per-epoch writer, per-step writer) on rank 0, else (None, None).

    Epoch scalars are indexed by epoch, step scalars by global step, so they live in two
    directories: `purge_step` then drops, in each, what a crashed attempt logged beyond the
    checkpoint this run resumes from, and a resumed run's curves have no duplicated points.
    A writer that cannot write (a full or read-only disk) raises `WriteError` naming its
    directory (`CheckedWriter`)."""
    if not ctx.is_main:
        return None, None
    from torch.utils.tensorboard import SummaryWriter

    root = ctx.run_dir / "tensorboard"
    if start_epoch or start_step:
        _after_existing_event_files(root)
    writers = []
    for log_dir, purge in ((root, start_epoch), (root / "steps", start_step)):
        try:
            writers.append(
                CheckedWriter(SummaryWriter(log_dir=str(log_dir), purge_step=purge or None), log_dir)
            )
        except OSError as err:
            raise tensorboard_error(log_dir, err) from err
    return writers[0], writers[1]
