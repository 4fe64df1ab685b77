"""Ablation grid files (YAML) → named cells, each one complete `ExperimentConfig`.

A grid crosses rows (backbone × variant, optionally with row-specific overrides) with an
optional axis (one dotted config key and its values: `enhancer.m`, `model.size`, ...), the
datasets and the seeds. Every cell is one training run, named
`<backbone>/<variant or label>[/<axis label>=<value>]/<dataset>/seed<k>`, e.g.
`hstu/unigrf/ml-100k/seed0` or `hstu/unigrf/m=8/ml-100k/seed1`; a *row* is the same name
without dataset and seed (`hstu/unigrf/m=8`) and is what the report aggregates over seeds.

The schema (every key but `rows`/`variants` is optional; the files in `ablations/` carry it in
their header comment):

    name: paper                      # report directory name (default: the file's stem)
    description: one line for the report title
    base_config: configs/ml-100k.yaml  # a training config; relative to the grid file or the cwd
    overrides: {train.epochs: 15}    # dotted overrides applied to every cell (the budget)
    seeds: 3                         # N (seeds 0..N-1) or an explicit list [0, 1, 2]
    datasets: [synthetic]            # dataset names, or {name: ..., overrides: {...}} mappings
    backbones: [hstu]                # with `variants`: the full product of the two
    variants: [unigrf, wo_both]
    rows:                            # instead of (or besides) the product: explicit rows
      - {backbone: sasrec, variant: retrieval_only}
      - {backbone: hstu, variant: unigrf, label: unigrf_gn, overrides: {weighter.kind: grad_norm}}
    axis: {key: enhancer.m, values: [0, 2, 8], label: m}   # one swept key, crossing every row
    reference: hstu/unigrf           # the row others are compared against (default: the first)
    metrics: [test/hr@10, test/ndcg@10, test/auc]          # report columns, in order
    significance: auto               # auto | welch | paired (see unigrf.ablation.aggregate)
    alpha: 0.05
    peaks: {retrieval: val/ndcg@10, ranking: val/auc}      # per-stage peak-epoch table
    equivalence_margin_epochs: 15    # with `peaks`: the margin of the test that both stages
                                     # peak at the same epoch (TOST, `unigrf claims`), declared
                                     # before the runs
    figures:
      - {kind: axis, metrics: [test/ndcg@10]}   # metric vs the axis values (m-sweep, scaling)
      - {kind: curves, metrics: [val/ndcg@10, val/auc]}    # per-epoch validation curves

Precedence of settings, lowest first: the config defaults, `base_config`, `overrides`, the
dataset's overrides, the row's overrides, the axis value, the command-line overrides, then the
cell's own backbone, variant and seed (which, like the axis key, the command line may not set:
that would collapse cells). Any error names the grid file and the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unigrf.config import (
    VARIANTS,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_config,
)
from unigrf.names import check_name, name_problem
from unigrf.yaml_input import check_keys, load_yaml_mapping

BACKBONES = ("hstu", "llama", "sasrec")
DEFAULT_METRICS = ("test/hr@10", "test/ndcg@10", "test/mrr", "test/auc", "test/logloss")
# Metric names a report may ask for: split/name. @k values are checked against eval.ks.
METRIC_PATTERN = re.compile(
    r"^(?:(?:val|test)/(?:hr@\d+|ndcg@\d+|mrr|auc|gauc|logloss|cascade0?_hr@\d+|cascade0?_ndcg@\d+)"
    r"|train/loss_(?:retrieval|ranking))$"
)
# a curves figure may also plot the per-epoch loss weights (weights/<task>, the epoch's last;
# weights/<task>_min / _max, its range over the epoch's steps)
CURVE_PATTERN = re.compile(rf"{METRIC_PATTERN.pattern}|^weights/(?:retrieval|ranking)(?:_min|_max)?$")
FIGURE_KINDS = ("axis", "curves")
TOP_KEYS = (
    "name",
    "description",
    "base_config",
    "overrides",
    "seeds",
    "datasets",
    "backbones",
    "variants",
    "rows",
    "axis",
    "reference",
    "metrics",
    "significance",
    "alpha",
    "peaks",
    "equivalence_margin_epochs",
    "figures",
)
# Keys that define a cell: a global override of one of them would collapse cells.
CELL_KEYS = ("train.variant", "model.backbone", "train.seed")


class GridError(ConfigError):
    """A grid file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # label in cell names and reports
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class RowSpec:
    backbone: str
    variant: str
    label: str | None = None  # replaces the variant in the row name
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def base_name(self) -> str:
        return f"{self.backbone}/{self.label or self.variant}"


@dataclass(frozen=True)
class AxisSpec:
    key: str  # dotted config key
    values: tuple[Any, ...]
    label: str  # short name in row names, e.g. "m" → hstu/unigrf/m=8


@dataclass(frozen=True)
class FigureSpec:
    kind: Literal["axis", "curves"]
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class PeakSpec:
    retrieval: str  # validation metric whose argmax epoch is the retrieval peak
    ranking: str


@dataclass(frozen=True)
class Cell:
    """One training run of a grid."""

    name: str  # hstu/unigrf/m=8/ml-100k/seed0
    row: str  # hstu/unigrf/m=8
    group: str  # the row without its axis value (hstu/unigrf): one line in an axis figure
    dataset: str
    backbone: str
    variant: str
    axis_value: Any  # None without an axis
    seed: int
    config: ExperimentConfig

    def identity(self) -> dict[str, Any]:
        """The columns that name this cell in results.csv."""
        return {
            "cell": self.name,
            "row": self.row,
            "group": self.group,
            "dataset": self.dataset,
            "backbone": self.backbone,
            "variant": self.variant,
            "axis_value": self.axis_value,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class GridSpec:
    name: str
    path: Path | None
    description: str
    base_config: Path | None
    overrides: Mapping[str, Any]
    seeds: tuple[int, ...]
    datasets: tuple[DatasetSpec, ...]
    rows: tuple[RowSpec, ...]
    axis: AxisSpec | None
    reference: str
    metrics: tuple[str, ...]
    significance: Literal["auto", "welch", "paired"]
    alpha: float
    peaks: PeakSpec | None
    figures: tuple[FigureSpec, ...]
    raw: Mapping[str, Any] = field(default_factory=dict)  # the file as loaded, for the report dir
    equivalence_margin_epochs: float | None = None  # TOST margin on the peak epochs' difference

    def row_names(self) -> list[str]:
        """Row names in grid order (rows outer, axis values inner)."""
        return [row_name(r, self.axis, v) for r in self.rows for v in axis_values(self.axis)]

    def declaration(self) -> dict[str, list[Any]]:
        """What the grid commits to before it runs — its seeds, rows and datasets — recorded at
        its first run (meta.json `declared`) so a report can name what was added later."""
        return {
            "seeds": list(self.seeds),
            "rows": self.row_names(),
            "datasets": [d.name for d in self.datasets],
        }

    def with_seeds(self, n: int) -> GridSpec:
        if n < 1:
            raise GridError(f"{self.path or self.name}: --seeds must be >= 1, got {n}")
        return _replace(self, seeds=tuple(range(n)))

    def subset(self, datasets: Sequence[str] | None = None, rows: Sequence[str] | None = None) -> GridSpec:
        """The grid restricted to some of its `datasets` (names) and `rows` (e.g. hstu/unigrf),
        named `<name>-<datasets>[-<rows>]` so that its Tune experiment and report directory never
        mix with the whole grid's or another subset's. The reference row stays if kept, else the
        first kept row becomes the reference."""
        where = self.path or self.name
        known_ds = [d.name for d in self.datasets]
        known_rows = [r.base_name for r in self.rows]
        for flag, asked, known in (("--datasets", datasets, known_ds), ("--rows", rows, known_rows)):
            unknown = sorted(set(asked or ()) - set(known))
            if unknown:
                raise GridError(f"{where}: {flag}: unknown {unknown}; the grid has {known}")
        kept_ds = tuple(d for d in self.datasets if datasets is None or d.name in datasets)
        kept_rows = tuple(r for r in self.rows if rows is None or r.base_name in rows)
        if len(kept_ds) == len(self.datasets) and len(kept_rows) == len(self.rows):
            return self
        suffix = [d.name for d in kept_ds] if len(kept_ds) < len(self.datasets) else []
        if len(kept_rows) < len(self.rows):
            suffix += [r.base_name.replace("/", "_") for r in kept_rows]
        sub_name = check_name(
            f"{self.name}-{'-'.join(suffix)}", f"{where}: --datasets/--rows (grid name)", GridError
        )
        sub = _replace(self, name=sub_name, datasets=kept_ds, rows=kept_rows)
        names = sub.row_names()
        return sub if self.reference in names else _replace(sub, reference=names[0])

    def expand(self, cli_overrides: Mapping[str, Any] | None = None) -> list[Cell]:
        """Every cell's config, validated; rows outer, then axis, dataset, seed."""
        where = str(self.path or self.name)
        cli_overrides = dict(cli_overrides or {})
        for key in cli_overrides:
            if key in CELL_KEYS or (self.axis is not None and key == self.axis.key):
                raise GridError(
                    f"{where}: override {key} would collapse the grid's cells; edit the grid instead"
                )
        try:
            base = load_config(self.base_config)
        except ConfigError as err:
            raise GridError(f"{where}: base_config: {err}") from None
        cells: list[Cell] = []
        for row in self.rows:
            for value in axis_values(self.axis):
                # The axis value goes in with every stage, so a cross-field check (enhancer.m <=
                # enhancer.top_k) sees this cell's value, not the default, whichever stage sets
                # the other field.
                axis = {} if self.axis is None else {self.axis.key: value}
                at = "" if self.axis is None else f" (at axis {self.axis.key}={value!r})"
                value_base = _apply(base, {**self.overrides, **axis}, where, f"overrides{at}")
                name = row_name(row, self.axis, value)
                for ds in self.datasets:
                    cfg = _apply(
                        value_base,
                        {**_dataset_overrides(ds), **axis},
                        where,
                        f"datasets[{ds.name}].overrides{at}",
                    )
                    cfg = _apply(
                        cfg, {**row.overrides, **axis}, where, f"rows[{row.base_name}].overrides{at}"
                    )
                    cfg = _apply(cfg, cli_overrides, where, "command-line overrides")
                    for seed in self.seeds:
                        cell_name = f"{name}/{ds.name}/seed{seed}"
                        cell_cfg = _apply(
                            cfg,
                            {
                                "model.backbone": row.backbone,
                                "train.variant": row.variant,
                                "train.seed": seed,
                                "name": f"ablate-{self.name}-{cell_name.replace('/', '-')}",
                            },
                            where,
                            f"rows[{row.base_name}]",
                        )
                        _check_metrics(self, cell_cfg, where)
                        cells.append(
                            Cell(
                                name=cell_name,
                                row=name,
                                group=row.base_name,
                                dataset=ds.name,
                                backbone=row.backbone,
                                variant=row.variant,
                                axis_value=value,
                                seed=seed,
                                config=cell_cfg,
                            )
                        )
        return cells


def axis_values(axis: AxisSpec | None) -> tuple[Any, ...]:
    return axis.values if axis is not None else (None,)


def row_name(row: RowSpec, axis: AxisSpec | None, value: Any) -> str:
    return row.base_name if axis is None else f"{row.base_name}/{axis.label}={value}"


def _replace(spec: GridSpec, **changes: Any) -> GridSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _apply(cfg: ExperimentConfig, overrides: Mapping[str, Any], where: str, key: str) -> ExperimentConfig:
    if not overrides:
        return cfg
    try:
        return apply_overrides(cfg, overrides)
    except ConfigError as err:
        raise GridError(f"{where}: {key}: {err}") from None


def _dataset_overrides(ds: DatasetSpec) -> dict[str, Any]:
    out = dict(ds.overrides)
    out.setdefault("data.dataset", ds.name)
    return out


def _check_metrics(spec: GridSpec, cfg: ExperimentConfig, where: str) -> None:
    """@k metrics must be ones the evaluation computes (eval.ks / eval.cascade_k)."""
    named = [("metrics", m) for m in spec.metrics]
    named += [(f"figures[{i}].metrics", m) for i, f in enumerate(spec.figures) for m in f.metrics]
    if spec.peaks is not None:
        named += [("peaks.retrieval", spec.peaks.retrieval), ("peaks.ranking", spec.peaks.ranking)]
    for key, metric in named:
        k = re.search(r"@(\d+)$", metric)
        if k is None:
            continue
        allowed = cfg.eval.ks if "cascade_" not in metric else (cfg.eval.cascade_k,)
        if int(k.group(1)) not in allowed:
            raise GridError(f"{where}: {key}: {metric} is not computed (k must be one of {list(allowed)})")


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


def load_grid(path: str | Path, check_cells: bool = True) -> GridSpec:
    """Read and validate a grid file; `GridError` names the file and the key on any problem."""
    path = Path(path)
    data = load_yaml_mapping(path, "grid", GridError)
    return parse_grid(data, path=path, check_cells=check_cells)


def parse_grid(
    data: Any, path: Path | None = None, name: str | None = None, check_cells: bool = True
) -> GridSpec:
    """Validate a loaded grid mapping. `check_cells=False` skips building the cells' configs
    (a report rebuilt elsewhere needs the grid's report settings, not its base config file)."""
    where = str(path) if path is not None else (name or "<grid>")
    if not isinstance(data, Mapping):
        raise GridError(f"{where}: a grid must be a YAML mapping, got {type(data).__name__}")
    check_keys(data, TOP_KEYS, GridError, file=where)

    fail = _Fail(where)
    grid_name = data.get("name", name or (path.stem if path is not None else None))
    problem = name_problem(grid_name)  # the report directory: `..` or a path would escape it
    if problem is not None:
        raise fail("name", problem)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"expected a string, got {description!r}")

    base_config = None
    if data.get("base_config") is not None:
        raw = data["base_config"]
        if not isinstance(raw, str):
            raise fail("base_config", f"expected a path, got {raw!r}")
        base_config = _resolve_path(raw, path) or (None if check_cells else Path(raw))
        if base_config is None:
            raise fail("base_config", f"file {raw!r} not found (relative to the grid file or the cwd)")

    overrides = _overrides(data.get("overrides"), "overrides", fail)
    seeds = _seeds(data.get("seeds", 3), fail)
    datasets = _datasets(data.get("datasets", ["synthetic"]), fail)
    rows = _rows(data, fail)
    axis = _axis(data.get("axis"), fail)

    fixed = set(CELL_KEYS) | ({axis.key} if axis is not None else set())
    scoped = [("overrides", overrides)]
    scoped += [(f"datasets[{i}].overrides", d.overrides) for i, d in enumerate(datasets)]
    scoped += [(f"rows[{i}].overrides", r.overrides) for i, r in enumerate(rows)]
    for key, mapping in scoped:
        clash = sorted(fixed & set(mapping))
        if clash:
            raise fail(f"{key}.{clash[0]}", "is set per cell (rows, axis, seeds); it may not be overridden")

    row_names = [row_name(r, axis, v) for r in rows for v in axis_values(axis)]
    dupes = sorted({n for n in row_names if row_names.count(n) > 1})
    if dupes:
        raise fail("rows", f"duplicate row {dupes[0]!r} (give one a distinct `label`)")
    reference = data.get("reference", row_names[0])
    if reference not in row_names:
        raise fail("reference", f"{reference!r} is not a row of this grid (rows: {', '.join(row_names)})")

    metrics = _metric_list(data.get("metrics", list(DEFAULT_METRICS)), "metrics", fail)
    significance = data.get("significance", "auto")
    if significance not in ("auto", "welch", "paired"):
        raise fail("significance", f"{significance!r} is not one of 'auto', 'welch', 'paired'")
    alpha = data.get("alpha", 0.05)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise fail("alpha", f"expected a number in (0, 1), got {alpha!r}")
    peaks = _peaks(data.get("peaks"), fail)
    margin = data.get("equivalence_margin_epochs")
    if margin is not None:
        if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not margin > 0:
            raise fail("equivalence_margin_epochs", f"expected a number of epochs > 0, got {margin!r}")
        if peaks is None:
            raise fail("equivalence_margin_epochs", "needs `peaks` (the per-stage peak epochs it tests)")
    figures = _figures(data.get("figures", []), axis, fail)

    spec = GridSpec(
        name=grid_name,
        path=path,
        description=description,
        base_config=base_config,
        overrides=overrides,
        seeds=seeds,
        datasets=datasets,
        rows=rows,
        axis=axis,
        reference=reference,
        metrics=metrics,
        significance=significance,
        alpha=float(alpha),
        peaks=peaks,
        figures=figures,
        raw=dict(data),
        equivalence_margin_epochs=float(margin) if margin is not None else None,
    )
    if check_cells:
        spec.expand()  # every cell must build: bad override keys/values fail here, named
    return spec


class _Fail:
    """Builds the GridError of one grid file: `fail(key, what)` -> "<file>: <key>: <what>"."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, key: str, what: str) -> GridError:
        return GridError(f"{self.where}: {key}: {what}")


def _resolve_path(raw: str, grid_path: Path | None) -> Path | None:
    candidates = [Path(raw)]
    if grid_path is not None and not Path(raw).is_absolute():
        candidates.insert(0, grid_path.parent / raw)
    return next((c for c in candidates if c.is_file()), None)


def _overrides(value: Any, key: str, fail) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fail(key, f"expected a mapping of dotted keys to values, got {value!r}")
    return dict(value)


def _seeds(value: Any, fail) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise fail("seeds", f"expected at least 1 seed, got {value}")
        return tuple(range(value))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        if len(set(value)) != len(value):
            raise fail("seeds", f"duplicate seeds in {value}")
        return tuple(value)
    raise fail("seeds", f"expected a count or a non-empty list of integers, got {value!r}")


def _datasets(value: Any, fail) -> tuple[DatasetSpec, ...]:
    if not isinstance(value, list) or not value:
        raise fail("datasets", f"expected a non-empty list, got {value!r}")
    out = []
    for i, entry in enumerate(value):
        key = f"datasets[{i}]"
        if isinstance(entry, str):
            out.append(DatasetSpec(entry, {}))
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise fail(key, f"expected a dataset name or {{name: ..., overrides: {{...}}}}, got {entry!r}")
        check_keys(entry, ("name", "overrides"), GridError, file=fail.where, section=key)
        out.append(DatasetSpec(entry["name"], _overrides(entry.get("overrides"), f"{key}.overrides", fail)))
    names = [d.name for d in out]
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", n):
            raise fail("datasets", f"dataset name {n!r} may only hold letters, digits, '_', '-', '.'")
    if len(set(names)) != len(names):
        raise fail("datasets", f"duplicate dataset names in {names}")
    return tuple(out)


def _choice(value: Any, choices: Sequence[str], key: str, fail) -> str:
    if value not in choices:
        raise fail(key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _rows(data: Mapping[str, Any], fail) -> tuple[RowSpec, ...]:
    rows: list[RowSpec] = []
    if "variants" in data or "backbones" in data:
        variants = data.get("variants")
        backbones = data.get("backbones", ["hstu"])
        if not isinstance(variants, list) or not variants:
            raise fail("variants", f"expected a non-empty list of variants, got {variants!r}")
        if not isinstance(backbones, list) or not backbones:
            raise fail("backbones", f"expected a non-empty list of backbones, got {backbones!r}")
        for i, v in enumerate(variants):
            _choice(v, list(VARIANTS), f"variants[{i}]", fail)
        for i, b in enumerate(backbones):
            _choice(b, BACKBONES, f"backbones[{i}]", fail)
        rows += [RowSpec(b, v) for b in backbones for v in variants]
    explicit = data.get("rows", [])
    if not isinstance(explicit, list):
        raise fail("rows", f"expected a list of rows, got {explicit!r}")
    for i, entry in enumerate(explicit):
        key = f"rows[{i}]"
        if not isinstance(entry, Mapping):
            raise fail(key, f"expected a mapping {{backbone, variant, label?, overrides?}}, got {entry!r}")
        check_keys(
            entry, ("backbone", "variant", "label", "overrides"), GridError, file=fail.where, section=key
        )
        label = entry.get("label")
        if label is not None and (not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", label)):
            raise fail(f"{key}.label", f"expected letters, digits, '_', '-', '.', got {label!r}")
        rows.append(
            RowSpec(
                backbone=_choice(entry.get("backbone", "hstu"), BACKBONES, f"{key}.backbone", fail),
                variant=_choice(entry.get("variant"), list(VARIANTS), f"{key}.variant", fail),
                label=label,
                overrides=_overrides(entry.get("overrides"), f"{key}.overrides", fail),
            )
        )
    if not rows:
        raise fail("rows", "the grid has no rows (give `variants` [+ `backbones`] or `rows`)")
    return tuple(rows)


def _axis(value: Any, fail) -> AxisSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise fail("axis", f"expected {{key, values, label?}}, got {value!r}")
    check_keys(value, ("key", "values", "label"), GridError, file=fail.where, section="axis")
    key = value.get("key")
    if not isinstance(key, str) or "." not in key:
        raise fail("axis.key", f"expected a dotted config key such as enhancer.m, got {key!r}")
    if key in CELL_KEYS:
        raise fail("axis.key", f"{key} is set per row; list the values as rows instead")
    values = value.get("values")
    if not isinstance(values, list) or not values:
        raise fail("axis.values", f"expected a non-empty list, got {values!r}")
    if len({repr(v) for v in values}) != len(values):
        raise fail("axis.values", f"duplicate values in {values}")
    label = value.get("label", key.rsplit(".", 1)[-1])
    if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
        raise fail("axis.label", f"expected letters, digits, '_', '-', '.', got {label!r}")
    return AxisSpec(key, tuple(values), label)


def _metric_list(value: Any, key: str, fail, pattern: re.Pattern = METRIC_PATTERN) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise fail(key, f"expected a non-empty list of metric names, got {value!r}")
    for i, m in enumerate(value):
        if not isinstance(m, str) or not pattern.match(m):
            raise fail(
                f"{key}[{i}]",
                f"{m!r} is not a metric (e.g. test/hr@10, val/ndcg@10, test/auc, test/logloss, "
                "test/cascade_hr@10, train/loss_retrieval)",
            )
    return tuple(value)


def _peaks(value: Any, fail) -> PeakSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"retrieval", "ranking"}:
        raise fail("peaks", f"expected {{retrieval: val/..., ranking: val/...}}, got {value!r}")
    for k in ("retrieval", "ranking"):
        m = value[k]
        if not isinstance(m, str) or not METRIC_PATTERN.match(m) or not m.startswith("val/"):
            raise fail(f"peaks.{k}", f"expected a per-epoch validation metric such as val/ndcg@10, got {m!r}")
    return PeakSpec(value["retrieval"], value["ranking"])


def _figures(value: Any, axis: AxisSpec | None, fail) -> tuple[FigureSpec, ...]:
    if not isinstance(value, list):
        raise fail("figures", f"expected a list, got {value!r}")
    out = []
    for i, entry in enumerate(value):
        key = f"figures[{i}]"
        if not isinstance(entry, Mapping):
            raise fail(key, f"expected {{kind, metrics}}, got {entry!r}")
        check_keys(entry, ("kind", "metrics"), GridError, file=fail.where, section=key)
        kind = _choice(entry.get("kind"), FIGURE_KINDS, f"{key}.kind", fail)
        if kind == "axis" and axis is None:
            raise fail(f"{key}.kind", "an axis figure needs the grid's `axis`")
        pattern = CURVE_PATTERN if kind == "curves" else METRIC_PATTERN
        metrics = _metric_list(entry.get("metrics"), f"{key}.metrics", fail, pattern)
        if kind == "curves":
            bad = [m for m in metrics if m.startswith("test/")]
            if bad:
                raise fail(
                    f"{key}.metrics", f"{bad[0]} is read once per run; curves need val/ or train/ metrics"
                )
        out.append(FigureSpec(kind, metrics))
    return tuple(out)
