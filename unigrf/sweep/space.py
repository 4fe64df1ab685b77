"""Search-space files (`tune/*.yaml`): parse, validate against the config tree, build the base.

A file holds the search space (dotted config keys -> distributions) and the sweep's settings;
the schema is documented at the top of every file under `tune/` and in `SweepSpec` below:

```yaml
name: sweep-ml-100k          # results go to <results_dir>/tune/<name>/ (--name overrides)
base_config: null            # an ExperimentConfig YAML, relative to this file; null: defaults
fixed:                       # dotted overrides applied to the base before sampling
  data.dataset: ml-100k
objective: val/ndcg@10       # maximised; a metric or weighted sum ("0.5*val/ndcg@10 + 0.5*val/auc")
multi_objective:             # used with --multi-objective (Pareto front, no ASHA)
  metrics: [val/ndcg@10, val/auc]
  modes: [max, max]
  sampler: nsga2             # nsga2 | tpe
num_samples: 16
max_concurrent: null         # null: as many trials as the cluster's resources fit
sampler: {kind: tpe, seed: 0, n_startup_trials: 5}   # tpe | random
scheduler: {kind: asha, grace_period: 1, reduction_factor: 2, max_epochs: null}  # asha | fifo
space:
  enhancer.m: {int: [0, 32]}                  # integers lo..hi inclusive; optional `step`
  weighter.share: {float: [0.1, 1.0]}
  train.lr: {loguniform: [1.0e-4, 3.0e-3]}
  model.dropout: {float: [0.0, 0.5]}          # optional `step`
  model.size: {choice: [tiny, small]}
```

Every error names the file and the entry: an unknown config key, a value the field rejects
(each range end and every choice is applied to the base config with `apply_overrides`), an
empty or reversed range, a non-positive log-uniform bound, an unknown distribution.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from unigrf import schema
from unigrf.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_base_config,
    parse_override,
    unread_reason,
)
from unigrf.names import check_name
from unigrf.schema import Check, Int, Number, PositiveInt, Range, Str
from unigrf.yaml_input import load_yaml_mapping


class SpaceError(ConfigError):
    """A search-space file is invalid; the message names the file and the entry."""


DISTRIBUTIONS = ("int", "float", "loguniform", "choice")


@dataclass(frozen=True)
class Param:
    """One searched config key: `kind` in DISTRIBUTIONS; `low`/`high` (inclusive) for ranges,
    `choices` for `choice`, `step` for quantised int/float ranges."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def probe_values(self) -> list[Any]:
        """Values that must all be valid for the field: both range ends, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def to_optuna(self):
        """The Optuna distribution (inclusive bounds, as Optuna defines them)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1))
        if self.kind == "float":
            return FloatDistribution(float(self.low), float(self.high), step=self.step)
        if self.kind == "loguniform":
            return FloatDistribution(float(self.low), float(self.high), log=True)
        return CategoricalDistribution(list(self.choices))

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice {list(self.choices)}"
        step = f" step {self.step}" if self.step else ""
        return f"{self.kind} [{self.low}, {self.high}]{step}"


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA on the per-epoch validation `objective`, with the 0-based `epoch` as its time: the
    first rung is at epoch index `grace_period` (a trial trains at least grace_period + 1
    epochs), the next at grace_period * reduction_factor, ..., none at the last epoch. Trials
    that pass every rung run to the end (`max_epochs`), so their test metrics are measured."""

    kind: Literal["asha", "fifo"] = "asha"
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[Int, Range(ge=2)] = 2
    max_epochs: PositiveInt | None = None  # every trial's train.epochs (ASHA's max_t); None: the base's


@dataclass(frozen=True)
class SamplerSpec:
    kind: Literal["tpe", "random"] = "tpe"
    seed: Int = 0
    n_startup_trials: PositiveInt = 5  # TPE: random trials before the model is used


ValMetric = Annotated[
    Str, Check(lambda m: m.startswith("val/"), "{key} = {value!r}: search may only read val/ metrics")
]


@dataclass(frozen=True)
class MultiObjectiveSpec:
    metrics: tuple[ValMetric, ...] = ("val/ndcg@10", "val/auc")
    modes: tuple[Literal["max", "min"], ...] = ("max", "max")
    sampler: Literal["nsga2", "tpe", "random"] = "nsga2"


@dataclass(frozen=True)
class SpaceFile:
    """What a search-space file may hold, key by key (the module docstring shows one); what
    `parse_space_dict` turns into a `SweepSpec`."""

    name: Str | None = None
    base_config: Str | None = None
    fixed: dict[Str, Any] | None = None
    objective: Str = "val/ndcg@10"
    multi_objective: MultiObjectiveSpec = field(default_factory=MultiObjectiveSpec)
    num_samples: PositiveInt = 8
    max_concurrent: PositiveInt | None = None
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    space: dict[Str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class SweepSpec(SpaceFile):
    """A parsed search-space file: its settings (`SpaceFile`; `name` checked, `fixed` a
    mapping), the file's `path`, its base config found (`base_path`) and its space parsed
    (`params`)."""

    path: Path
    params: dict[str, Param]
    base_path: Path | None = None

    def optuna_space(self) -> dict[str, Any]:
        """{dotted key: Optuna distribution}: what OptunaSearch samples (names = config keys)."""
        return {key: p.to_optuna() for key, p in self.params.items()}


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


# A range bound: integer bounds are YAML integers; float bounds any finite number (also the
# numeric text PyYAML leaves `1e-4` as).
_INT_BOUND = "{key}: bounds of an int range must be integers, got {value!r}"
_FLOAT_BOUND = Annotated[
    Number, Range(gt=-math.inf, lt=math.inf, says="{key}: bounds must be finite, got {value!r}")
]


def _number(value: Any, where: str, integer: bool) -> float | int:
    if integer:
        return schema.check_value(Int, value, where, SpaceError, says=_INT_BOUND)
    return schema.check_value(_FLOAT_BOUND, value, where, SpaceError)


def parse_param(key: str, spec: Any, where: str) -> Param:
    """`{int: [lo, hi]}` (optional `step`), `{float: [lo, hi]}` (optional `step`),
    `{loguniform: [lo, hi]}`, `{choice: [...]}` -> Param. `where` prefixes errors."""
    where = f"{where}: space.{key}"
    if not isinstance(spec, Mapping):
        raise SpaceError(f"{where}: expected a distribution mapping such as {{int: [0, 32]}}, got {spec!r}")
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    extra = sorted(set(spec) - set(DISTRIBUTIONS) - {"step"})
    if extra or len(kinds) != 1:
        bad = extra[0] if extra else (", ".join(kinds) or "none")
        raise SpaceError(
            f"{where}: unknown or ambiguous distribution {bad!r} "
            f"(expected exactly one of {', '.join(DISTRIBUTIONS)}; `step` for int/float)"
        )
    kind = kinds[0]
    args = spec[kind]
    if kind == "choice":
        if "step" in spec:
            raise SpaceError(f"{where}: `step` applies to int/float ranges only")
        if not isinstance(args, list) or not args:
            raise SpaceError(f"{where}: choice needs a non-empty list of values, got {args!r}")
        for value in args:
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise SpaceError(f"{where}: choice values must be scalars (Optuna), got {value!r}")
        if len({repr(v) for v in args}) != len(args):
            raise SpaceError(f"{where}: choice lists a value twice: {args!r}")
        return Param(key, kind, choices=tuple(args))

    if not isinstance(args, list) or len(args) != 2:
        raise SpaceError(f"{where}: {kind} needs [low, high], got {args!r}")
    integer = kind == "int"
    low = _number(args[0], f"{where}.{kind}[0]", integer)
    high = _number(args[1], f"{where}.{kind}[1]", integer)
    if low > high:
        raise SpaceError(f"{where}: low {low} > high {high}")
    if low == high:
        raise SpaceError(f"{where}: empty range [{low}, {high}] (fix the value under `fixed` instead)")
    step = None
    if "step" in spec:
        if kind == "loguniform":
            raise SpaceError(f"{where}: `step` is not supported with loguniform")
        step = _number(spec["step"], f"{where}.step", integer)
        if step <= 0:
            raise SpaceError(f"{where}: step must be > 0, got {step}")
        count = (high - low) / step
        if abs(count - round(count)) > 1e-9:
            raise SpaceError(f"{where}: the range [{low}, {high}] is not a whole number of steps of {step}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform bounds must be > 0, got [{low}, {high}]")
    return Param(key, kind, low=low, high=high, step=step)


def parse_space_dict(data: Mapping[str, Any], path: Path) -> SweepSpec:
    """Parse a loaded YAML mapping; `path` names the file in errors and anchors base_config."""
    where = str(path)
    file = schema.parse(SpaceFile, data, SpaceError, file=path)
    space = file.space or {}
    if not space:
        raise SpaceError(f"{where}: `space` is empty: nothing to search")
    params = {str(k): parse_param(str(k), v, where) for k, v in space.items()}

    base_path = None
    if file.base_config is not None:
        base_path = (path.parent / file.base_config).resolve()
        if not base_path.exists():
            raise SpaceError(f"{where}: base_config {file.base_config} not found (looked at {base_path})")

    mo = file.multi_objective
    if len(mo.metrics) < 2 or len(mo.modes) != len(mo.metrics):
        raise SpaceError(
            f"{where}: multi_objective needs >= 2 metrics and one mode per metric, got "
            f"{list(mo.metrics)} / {list(mo.modes)}"
        )
    name = check_name(file.name if file.name is not None else path.stem, f"{where}: name", SpaceError)
    return replace_fields(
        file,
        SweepSpec,
        path=path,
        name=name,
        params=params,
        base_path=base_path,
        fixed=dict(file.fixed or {}),
    )


def replace_fields(source: Any, cls: type, **changes: Any) -> Any:
    """An instance of `cls` with `source`'s fields, `changes` replacing some and adding others."""
    values = {f.name: getattr(source, f.name) for f in dataclasses.fields(source)}
    return cls(**{**values, **changes})


def load_space(path: str | Path) -> SweepSpec:
    """Read and parse a search-space YAML (no validation against the config: see `resolve`)."""
    path = Path(path)
    return parse_space_dict(load_yaml_mapping(path, "search space", SpaceError), path)


# ---------------------------------------------------------------------------------------------
# Validation against the config tree, and the base config of every trial
# ---------------------------------------------------------------------------------------------


def base_config(spec: SweepSpec, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config every trial starts from: base_config + `fixed` + command-line overrides, with
    `train.objective` set to the sweep's objective (so early stopping and the search agree).
    A key both fixed (file or command line) and searched is an error."""
    where = str(spec.path)
    cli = dict(parse_override(o) for o in overrides or [])
    for key in (*spec.fixed, *cli):
        if key in spec.params:
            raise SpaceError(
                f"{where}: space.{key} is searched but also fixed (in `fixed` or on the command line)"
            )
    cfg = load_base_config(spec.base_path, where, SpaceError)
    sweep_keys: dict[str, Any] = {"train.objective": spec.objective}
    if spec.scheduler.max_epochs is not None:
        if "train.epochs" in {**spec.fixed, **cli}:
            raise SpaceError(f"{where}: scheduler.max_epochs and a fixed train.epochs both set the epochs")
        sweep_keys["train.epochs"] = spec.scheduler.max_epochs
    # Each layer's keys and values are checked as it is applied; the rules between fields once,
    # on the whole: a fixed enhancer.top_k = 12 while enhancer.m is searched in [2, 12] holds for
    # every trial, though not for the default m the base config had.
    for source, values in (("fixed", spec.fixed), ("command line", cli)):
        try:
            cfg = apply_overrides(cfg, values, validate=False)
        except ConfigError as err:
            raise SpaceError(f"{where}: {source}: {err}") from None
    _probe(spec, cfg, first_only=True, validate=False)  # a searched value no config could hold
    _check_objective(spec)
    try:
        cfg = apply_overrides(cfg, sweep_keys, validate=False)
    except ConfigError as err:
        raise SpaceError(f"{where}: objective: {err}") from None
    # A searched key holds its first value in the base (every trial replaces it).
    searched = {key: clean_value(param.probe_values()[0]) for key, param in spec.params.items()}
    try:
        cfg = apply_overrides(cfg, searched)
    except ConfigError as err:
        source = "fixed" if spec.fixed else "command line" if cli else "base_config"
        raise SpaceError(f"{where}: {source}: {err}") from None
    _check_read(spec, cfg)
    if spec.scheduler.kind == "asha" and spec.scheduler.grace_period > cfg.train.epochs - 2:
        raise SpaceError(
            f"{where}: scheduler.grace_period ({spec.scheduler.grace_period}) must be <= the trials' "
            f"epochs ({cfg.train.epochs}) - 2: ASHA's rungs are epoch indices before the last one"
        )
    return cfg


# the keys that decide whether a weighter key is read (config.unread_reason)
_READ_DECIDERS = ("weighter.kind", "train.variant")


def _check_read(spec: SweepSpec, cfg: ExperimentConfig) -> None:
    """A searched key every trial's config ignores (weighter.temperature under grad_share) spends
    the budget on one model under many values; unless the space also searches what decides it."""
    if any(key in spec.params for key in _READ_DECIDERS):
        return
    for key in spec.params:
        reason = unread_reason(cfg, key)
        if reason is not None:
            raise SpaceError(
                f"{spec.path}: space.{key} is never read ({reason}): search a key the trials read, "
                "or fix the one that makes it read (e.g. weighter.kind under `fixed`)"
            )


def _probe(spec: SweepSpec, cfg: ExperimentConfig, first_only: bool = False, validate: bool = True) -> None:
    """Apply each searched value (each key's first, or all its probe values) to `cfg` alone;
    the first one the config rejects (its key, type and range; with `validate` the rules between
    fields too) is a SpaceError naming the file, the key and the value."""
    for key, param in spec.params.items():
        for value in param.probe_values()[:1] if first_only else param.probe_values():
            value = clean_value(value)
            try:
                apply_overrides(cfg, {key: value}, validate=validate)
            except ConfigError as err:
                raise SpaceError(
                    f"{spec.path}: space.{key} ({param.describe()}): value {value!r}: {err}"
                ) from None


def _check_objective(spec: SweepSpec) -> None:
    from unigrf.training.objective import parse_objective

    try:
        parse_objective(spec.objective)
    except ValueError as err:
        raise SpaceError(f"{spec.path}: objective: {err}") from None


def validate_space(spec: SweepSpec, base: ExperimentConfig) -> None:
    """Apply every range end / choice of every parameter to `base`; the first value the config
    rejects (unknown key, wrong type, outside a Literal, failing a cross-field check) is an
    error naming the file and the key."""
    _probe(spec, base)


def resolve(
    path: str | Path, overrides: list[str] | None = None, **changes: Any
) -> tuple[SweepSpec, ExperimentConfig]:
    """Load, validate and return (spec, base config). `changes` replace SweepSpec fields
    (e.g. num_samples from the command line)."""
    spec = load_space(path)
    if changes:
        spec = replace(spec, **{k: v for k, v in changes.items() if v is not None})
    base = base_config(spec, overrides)
    validate_space(spec, base)
    return spec, base


def clean_value(value: Any) -> Any:
    """A sampled value as it goes into a config: floats cut to 12 significant digits, so a
    quantised 0.1-step sample reads 0.3, not Optuna's 0.30000000000000004."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars from tables
        return clean_value(value.item())
    return value


def trial_config(base: ExperimentConfig, params: Mapping[str, Any], name: str) -> ExperimentConfig:
    """The full config of one trial: `base` with the sampled `params` (dotted keys) and `name`."""
    return apply_overrides(base, {**{k: clean_value(v) for k, v in params.items()}, "name": name})


def dump_spec(spec: SweepSpec) -> str:
    """The spec as YAML (written beside the sweep's results for the record)."""
    return yaml.safe_dump(
        {
            "name": spec.name,
            "base_config": str(spec.base_path) if spec.base_path else None,
            "fixed": spec.fixed,
            "objective": spec.objective,
            "num_samples": spec.num_samples,
            "sampler": spec.sampler.__dict__,
            "scheduler": spec.scheduler.__dict__,
            "multi_objective": {
                "metrics": list(spec.multi_objective.metrics),
                "modes": list(spec.multi_objective.modes),
                "sampler": spec.multi_objective.sampler,
            },
            "space": {k: p.describe() for k, p in spec.params.items()},
        },
        sort_keys=False,
    )
