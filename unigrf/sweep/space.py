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
  weighter.temperature: {loguniform: [0.05, 20]}
  train.lr: {loguniform: [1.0e-4, 3.0e-3]}
  model.dropout: {float: [0.0, 0.5]}          # optional `step`
  model.size: {choice: [tiny, small]}
```

Every error names the file and the entry: an unknown config key, a value the field rejects
(each range end and every choice is applied to the base config with `apply_overrides`), an
empty or reversed range, a non-positive log-uniform bound, an unknown distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from unigrf.config import ConfigError, ExperimentConfig, apply_overrides, load_config, parse_override
from unigrf.names import check_name
from unigrf.yaml_input import check_keys, load_yaml_mapping


class SpaceError(ConfigError):
    """A search-space file is invalid; the message names the file and the entry."""


DISTRIBUTIONS = ("int", "float", "loguniform", "choice")
SAMPLERS = ("tpe", "random")
MO_SAMPLERS = ("nsga2", "tpe", "random")
SCHEDULERS = ("asha", "fifo")
_TOP_KEYS = {
    "name",
    "base_config",
    "fixed",
    "objective",
    "multi_objective",
    "num_samples",
    "max_concurrent",
    "sampler",
    "scheduler",
    "space",
}


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

    kind: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    max_epochs: int | None = None  # every trial's train.epochs (ASHA's max_t); None: the base's


@dataclass(frozen=True)
class SamplerSpec:
    kind: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 5  # TPE: random trials before the model is used


@dataclass(frozen=True)
class MultiObjectiveSpec:
    metrics: tuple[str, ...] = ("val/ndcg@10", "val/auc")
    modes: tuple[str, ...] = ("max", "max")
    sampler: str = "nsga2"


@dataclass(frozen=True)
class SweepSpec:
    """A parsed search-space file (see the module docstring for the YAML schema)."""

    path: Path
    name: str
    params: dict[str, Param]
    base_config: Path | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    objective: str = "val/ndcg@10"
    multi_objective: MultiObjectiveSpec = field(default_factory=MultiObjectiveSpec)
    num_samples: int = 8
    max_concurrent: int | None = None
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)

    def optuna_space(self) -> dict[str, Any]:
        """{dotted key: Optuna distribution}: what OptunaSearch samples (names = config keys)."""
        return {key: p.to_optuna() for key, p in self.params.items()}


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _number(value: Any, where: str, integer: bool) -> float | int:
    """A range bound. PyYAML reads `1e-4` (no dot) as a string, so numeric strings are accepted
    for float bounds; integer bounds must be YAML integers."""
    if isinstance(value, bool):
        raise SpaceError(f"{where}: expected a number, got {value!r}")
    if integer:
        if isinstance(value, int):
            return value
        raise SpaceError(f"{where}: bounds of an int range must be integers, got {value!r}")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            raise SpaceError(f"{where}: expected a number, got {value!r}") from None
    else:
        raise SpaceError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(result):
        raise SpaceError(f"{where}: bounds must be finite, got {value!r}")
    return result


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


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpaceError(f"{where}: expected a mapping, got {value!r}")
    return value if isinstance(value, dict) else dict(value)  # a LineMapping keeps its key lines


def _positive_int(value: Any, where: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpaceError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _choose(value: Any, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise SpaceError(f"{where}: {value!r} is not one of {', '.join(options)}")
    return value


def _sub_spec(cls: type, data: dict[str, Any], path: Path, section: str) -> dict[str, Any]:
    check_keys(data, cls.__dataclass_fields__, SpaceError, file=path, section=section)
    return data


def parse_space_dict(data: Mapping[str, Any], path: Path) -> SweepSpec:
    """Parse a loaded YAML mapping; `path` names the file in errors and anchors base_config."""
    where = str(path)
    check_keys(data, _TOP_KEYS, SpaceError, file=path)
    space = _mapping(data.get("space"), f"{where}: space")
    if not space:
        raise SpaceError(f"{where}: `space` is empty: nothing to search")
    params = {str(k): parse_param(str(k), v, where) for k, v in space.items()}

    base = data.get("base_config")
    base_path = None
    if base is not None:
        if not isinstance(base, str):
            raise SpaceError(f"{where}: base_config must be a path, got {base!r}")
        base_path = (path.parent / base).resolve()
        if not base_path.exists():
            raise SpaceError(f"{where}: base_config {base} not found (looked at {base_path})")

    objective = data.get("objective", "val/ndcg@10")
    if not isinstance(objective, str):
        raise SpaceError(f"{where}: objective must be a string, got {objective!r}")

    mo = _sub_spec(
        MultiObjectiveSpec,
        _mapping(data.get("multi_objective"), f"{where}: multi_objective"),
        path,
        "multi_objective",
    )
    mo_spec = MultiObjectiveSpec(
        metrics=tuple(mo.get("metrics", MultiObjectiveSpec.metrics)),
        modes=tuple(mo.get("modes", MultiObjectiveSpec.modes)),
        sampler=_choose(mo.get("sampler", "nsga2"), MO_SAMPLERS, f"{where}: multi_objective.sampler"),
    )
    if len(mo_spec.metrics) < 2 or len(mo_spec.modes) != len(mo_spec.metrics):
        raise SpaceError(
            f"{where}: multi_objective needs >= 2 metrics and one mode per metric, got "
            f"{list(mo_spec.metrics)} / {list(mo_spec.modes)}"
        )
    for i, (metric, mode) in enumerate(zip(mo_spec.metrics, mo_spec.modes)):
        if not isinstance(metric, str) or not metric.startswith("val/"):
            raise SpaceError(
                f"{where}: multi_objective.metrics[{i}] = {metric!r}: search may only read val/ metrics"
            )
        _choose(mode, ("max", "min"), f"{where}: multi_objective.modes[{i}]")

    sampler = _sub_spec(SamplerSpec, _mapping(data.get("sampler"), f"{where}: sampler"), path, "sampler")
    sampler_spec = SamplerSpec(
        kind=_choose(sampler.get("kind", "tpe"), SAMPLERS, f"{where}: sampler.kind"),
        seed=int(sampler.get("seed", 0)),
        n_startup_trials=_positive_int(
            sampler.get("n_startup_trials", 5), f"{where}: sampler.n_startup_trials"
        ),
    )
    sched = _sub_spec(
        SchedulerSpec, _mapping(data.get("scheduler"), f"{where}: scheduler"), path, "scheduler"
    )
    sched_spec = SchedulerSpec(
        kind=_choose(sched.get("kind", "asha"), SCHEDULERS, f"{where}: scheduler.kind"),
        grace_period=_positive_int(sched.get("grace_period", 1), f"{where}: scheduler.grace_period"),
        reduction_factor=_positive_int(
            sched.get("reduction_factor", 2), f"{where}: scheduler.reduction_factor"
        ),
        max_epochs=_positive_int(sched.get("max_epochs"), f"{where}: scheduler.max_epochs", allow_none=True),
    )
    if sched_spec.reduction_factor < 2:
        raise SpaceError(f"{where}: scheduler.reduction_factor must be >= 2")

    name = check_name(data.get("name", path.stem), f"{where}: name", SpaceError)  # a directory
    return SweepSpec(
        path=path,
        name=name,
        params=params,
        base_config=base_path,
        fixed={str(k): v for k, v in _mapping(data.get("fixed"), f"{where}: fixed").items()},
        objective=objective,
        multi_objective=mo_spec,
        num_samples=_positive_int(data.get("num_samples", 8), f"{where}: num_samples"),
        max_concurrent=_positive_int(data.get("max_concurrent"), f"{where}: max_concurrent", allow_none=True),
        sampler=sampler_spec,
        scheduler=sched_spec,
    )


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
    try:
        cfg = load_config(spec.base_config)
    except ConfigError as err:
        raise SpaceError(f"{where}: base_config: {err}") from None
    # A searched key holds its first probe value in the base (every trial replaces it), so the
    # config's cross-field checks see a value from the space, not the default: fixing
    # enhancer.top_k = 20 while searching enhancer.m in [0, 16] must not trip on the default m.
    searched = {key: clean_value(param.probe_values()[0]) for key, param in spec.params.items()}
    for source, values in (("fixed", spec.fixed), ("command line", cli)):
        try:
            cfg = apply_overrides(cfg, {**values, **searched})
        except ConfigError as err:
            # a searched value the config rejects on its own (a float for an int field, an
            # unknown key) is the error to report, not `fixed`
            _probe(spec, cfg, first_only=True)
            raise SpaceError(f"{where}: {source}: {err}") from None
    _check_objective(spec)
    sweep_keys: dict[str, Any] = {"train.objective": spec.objective}
    if spec.scheduler.max_epochs is not None:
        if "train.epochs" in {**spec.fixed, **cli}:
            raise SpaceError(f"{where}: scheduler.max_epochs and a fixed train.epochs both set the epochs")
        sweep_keys["train.epochs"] = spec.scheduler.max_epochs
    try:
        cfg = apply_overrides(cfg, sweep_keys)
    except ConfigError as err:
        raise SpaceError(f"{where}: objective: {err}") from None
    if spec.scheduler.kind == "asha" and spec.scheduler.grace_period > cfg.train.epochs - 2:
        raise SpaceError(
            f"{where}: scheduler.grace_period ({spec.scheduler.grace_period}) must be <= the trials' "
            f"epochs ({cfg.train.epochs}) - 2: ASHA's rungs are epoch indices before the last one"
        )
    return cfg


def _probe(spec: SweepSpec, cfg: ExperimentConfig, first_only: bool = False) -> None:
    """Apply each searched value (each key's first, or all its probe values) to `cfg` alone;
    the first one the config rejects is a SpaceError naming the file, the key and the value."""
    for key, param in spec.params.items():
        for value in param.probe_values()[:1] if first_only else param.probe_values():
            value = clean_value(value)
            try:
                apply_overrides(cfg, {key: value})
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
            "base_config": str(spec.base_config) if spec.base_config else None,
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
