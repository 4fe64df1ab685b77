"""Model selection and early stopping: which epoch's weights are tested, and when to stop.

A model serving both stages is tested at one epoch (`train.selection: auto` -> `joint`): the
epoch with the best validation objective, by default 0.5·NDCG@10 + 0.5·AUC — one checkpoint
serves retrieval and ranking, as the unified model is meant to (claim 5 asks whether one
checkpoint can be best for both). The two metrics enter unscaled, so the sum leans towards the
one that moves more between epochs (AUC's spread over a run's epochs is larger than NDCG@10's on
Amazon MI and ML-100K: the histories.csv of reports/quality); it is kept as the one documented
rule the claim grids were run with, and `train.objective` sets another. `per_stage`, explicit
only, tests two snapshots of the one run: retrieval at its best epoch on the objective's
retrieval terms, ranking at its best on the ranking terms, training until both are stale (the
selection the two_stage variant always gets: two separately trained models); its results record
`selection: per_stage`, and serving would hold two snapshots. Validation only, always.

`Selection` tracks one model's best epoch; `RunSelection` holds a run's one or two of them and
everything `fit` asks of them (stop? the best so far, the weights test is read with).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unigrf.config import ExperimentConfig, variant_spec
from unigrf.model import TwoStage
from unigrf.training.checkpoint_io import load_state_file
from unigrf.training.objective import Terms, metric_stage, parse_objective, terms_value


class TrainingError(RuntimeError):
    """Training cannot go on or its result would be meaningless (a non-finite loss, an
    objective that was never finite); the message says where and why."""


@dataclass
class Selection:
    """Early stopping and best-checkpoint tracking for `module` on `terms` (always maximised).

    One Selection covers a single model. The two-stage pipeline has one per stage: its
    retriever and ranker are separate models, so each keeps the weights of its own best epoch
    (the ranker typically peaks many epochs before the retriever) and training stops when both
    are stale — as if each had been trained and early-stopped alone."""

    name: str
    terms: Terms
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
            self.best_state = snapshot(self.module, self.best_state)
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


def snapshot(module: nn.Module, into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A CPU copy of `module`'s state, written into `into`'s tensors where their shapes and dtypes
    match: a new best epoch overwrites the last one in place instead of holding two copies of
    the model at once (a 700k-item table is 180 MB at dim 64, and its AdamW state twice that)."""
    state = module.state_dict()
    if into is not None and into.keys() == state.keys():
        fits = all(into[k].shape == v.shape and into[k].dtype == v.dtype for k, v in state.items())
        if fits:
            for k, v in state.items():
                into[k].copy_(v.detach())
            return into
    return {k: v.detach().cpu().clone() for k, v in state.items()}


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
    by_stage: dict[str, Terms] = {"retrieval": [], "ranking": []}
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


def resolved_selection(cfg: ExperimentConfig, objective: str) -> str:
    """ "joint" or "per_stage": the two_stage variant always selects per stage (two models, each
    on its own terms); a one-stage model has one selection ("joint"); a model serving both
    stages takes `train.selection`, "auto" being joint — one checkpoint is the unified model
    (per_stage, two snapshots of it, only when asked for). `objective` is checked by
    `selections` (a per-stage objective needs terms that judge each stage alone)."""
    del objective  # the rule does not depend on it; kept for the callers' signature
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


def load_selected_model(model: nn.Module, file: Path) -> nn.Module:
    """The model a run was tested with, from its `best_model.pt` and a freshly built `model`
    of its config: `model` with the weights loaded, or for a per-stage selection (a TwoStage
    state: `retriever.*`, `ranker.*`) a TwoStage of `model` and a copy of it."""
    state = load_state_file(file)
    if not isinstance(model, TwoStage) and any(k.startswith("retriever.") for k in state):
        model = TwoStage.of(model, copy.deepcopy(model))
    model.load_state_dict(state)
    return model


# the flat keys a checkpoint held before `Selection` (one joint selection)
_FLAT_SELECTION_KEYS = ("best_objective", "best_epoch", "stale", "best_model")


@dataclass
class RunSelection:
    """A run's selection: `objective` (resolved), `kind` ("joint" | "per_stage") and its one or
    two `Selection`s, the validation metrics of the best epoch (`best_val`, joint only: per
    stage the two best epochs were never evaluated together)."""

    objective: str
    kind: str
    selected: list[Selection]
    best_val: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: ExperimentConfig, model: nn.Module, objective: str) -> RunSelection:
        """A bad objective (unparsable, or per stage without each stage's terms) fails here."""
        kind = resolved_selection(cfg, objective)
        return cls(objective, kind, selections(objective, model, kind == "per_stage"))

    def should_stop(self, patience: int) -> bool:
        """Every selection has gone `patience` epochs without improving."""
        return all(sel.stale >= patience for sel in self.selected)

    @property
    def best_epoch(self) -> int:
        return max(sel.best_epoch for sel in self.selected)

    @property
    def best_objective(self) -> float:
        # two stages: the stage objectives split the objective's terms, so their bests add up
        return sum(sel.best_objective for sel in self.selected)

    def update(self, epoch: int, metrics: dict[str, float]) -> None:
        """Judge `epoch` on its `metrics` (which must hold `objective`'s terms) and add the
        best-so-far keys to them: best_objective, best_epoch (and best_epoch/<stage>)."""
        improved = [sel.update(epoch, metrics) for sel in self.selected]
        if len(self.selected) == 1 and improved[0]:
            self.best_val = {k: v for k, v in metrics.items() if k.startswith("val/")}
        metrics["best_objective"] = self.best_objective
        metrics["best_epoch"] = float(self.best_epoch)
        if len(self.selected) > 1:
            metrics.update({f"best_epoch/{sel.name}": float(sel.best_epoch) for sel in self.selected})

    def state_dict(self) -> dict[str, Any]:
        return {"selections": [sel.state_dict() for sel in self.selected], "best_val": self.best_val}

    def load_state_dict(self, state: dict[str, Any], run_dir: Path) -> None:
        """From a checkpoint (`state_dict`'s keys, or a checkpoint's flat keys from before
        per-stage selection); a checkpoint of the other selection kind is refused."""
        sel_states = state.get("selections")
        if sel_states is None:
            sel_states = [
                dict(zip(Selection.STATE_KEYS, (state[k] for k in _FLAT_SELECTION_KEYS), strict=True))
            ]
        if len(sel_states) != len(self.selected):  # e.g. a per_stage run resumed under the joint default
            written = "train.selection=per_stage" if len(sel_states) == 2 else "train.selection=joint"
            raise ValueError(
                f"the checkpoint in {run_dir} was written under {len(sel_states)} model selection(s), "
                f"this config makes {len(self.selected)} (train.selection resolves to {self.kind!r}); resume "
                f"it with the selection it was trained with ({written}), or restart it"
            )
        for sel, sel_state in zip(self.selected, sel_states, strict=True):
            sel.load_state_dict(sel_state)
        self.best_val = state["best_val"]

    def final_model(self, model: nn.Module, history: list[dict[str, float]]) -> nn.Module:
        """The weights test is read with (`selected_model`); a TrainingError when some
        selection never saw a finite objective in the epochs run (`history`)."""
        never = [sel for sel in self.selected if sel.best_epoch < 0]
        if never and history:
            raise TrainingError(
                f"train.objective {self.objective!r} was not finite at any of the {len(history)} epochs "
                f"run (last value {history[-1]['objective']}), so no checkpoint can be selected and test is "
                "not read; choose a metric the validation split defines (AUC needs both labels among the targets)"
            )
        return selected_model(model, self.selected)

    def stage_best_epochs(self) -> dict[str, int]:
        """{stage: its best epoch} for a per-stage selection, {} for a joint one."""
        return {sel.name: sel.best_epoch for sel in self.selected} if len(self.selected) > 1 else {}
