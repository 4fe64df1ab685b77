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
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from unigrf import schema
from unigrf.config import (
    BackboneName,
    ConfigError,
    ExperimentConfig,
    Variant,
    apply_overrides,
    load_base_config,
    unread_reason,
)
from unigrf.names import check_name, name_problem
from unigrf.schema import Check, Label, NonEmpty, Number, Range, Str
from unigrf.yaml_input import load_yaml_mapping

BACKBONES: tuple[str, ...] = typing.get_args(BackboneName)
DEFAULT_METRICS = ("test/hr@10", "test/ndcg@10", "test/mrr", "test/auc", "test/logloss")
# Metric names a report may ask for: split/name. @k values are checked against eval.ks.
METRIC_PATTERN = re.compile(
    r"^(?:(?:val|test)/(?:hr@\d+|ndcg@\d+|mrr|auc|gauc|logloss|cascade0?_hr@\d+|cascade0?_ndcg@\d+)"
    r"|train/loss_(?:retrieval|ranking))$"
)
# a curves figure may also plot the per-epoch loss weights (weights/<task>, the epoch's last;
# weights/<task>_min / _max, its range over the epoch's steps)
CURVE_PATTERN = re.compile(rf"{METRIC_PATTERN.pattern}|^weights/(?:retrieval|ranking)(?:_min|_max)?$")
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
        base = load_base_config(self.base_config, where, GridError)
        cells: list[Cell] = []
        for row in self.rows:
            for value in axis_values(self.axis):
                at = "" if self.axis is None else f" (at axis {self.axis.key}={value!r})"
                value_base = _apply(base, self.overrides, where, f"overrides{at}")
                name = row_name(row, self.axis, value)
                for ds in self.datasets:
                    cfg = _apply(
                        value_base, _dataset_overrides(ds), where, f"datasets[{ds.name}].overrides{at}"
                    )
                    cfg = _apply(cfg, row.overrides, where, f"rows[{row.base_name}].overrides{at}")
                    if self.axis is not None:
                        cfg = _apply(cfg, {self.axis.key: value}, where, f"axis{at}")
                    cfg = _apply(cfg, cli_overrides, where, "command-line overrides")
                    for seed in self.seeds:
                        cell_name = f"{name}/{ds.name}/seed{seed}"
                        cell = {
                            "model.backbone": row.backbone,
                            "train.variant": row.variant,
                            "train.seed": seed,
                            "name": f"ablate-{self.name}-{cell_name.replace('/', '-')}",
                        }
                        # the rules between fields hold for the whole cell, whichever layer set them
                        cell_cfg = _apply(cfg, cell, where, f"rows[{row.base_name}]{at}", validate=True)
                        _check_metrics(self, cell_cfg, where)
                        _check_read(self, row, cell_cfg, where)
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


def _apply(
    cfg: ExperimentConfig, overrides: Mapping[str, Any], where: str, key: str, validate: bool = False
) -> ExperimentConfig:
    """`overrides` (one layer of a cell's settings) applied to `cfg`: its keys, types and
    ranges; with `validate` the rules between fields, on the composed config."""
    if not overrides and not validate:
        return cfg
    try:
        return apply_overrides(cfg, overrides, validate=validate)
    except ConfigError as err:
        raise GridError(f"{where}: {key}: {err}") from None


def _check_read(spec: GridSpec, row: RowSpec, cfg: ExperimentConfig, where: str) -> None:
    """A row's own overrides, and the axis, must set keys its cells read: a row that sets one
    they ignore (weighter.temperature under grad_share) repeats another row under a new label.
    The grid-wide overrides may reach rows that ignore them (a single-task row)."""
    keys = [(f"rows[{row.base_name}].overrides", k) for k in row.overrides]
    if spec.axis is not None:
        keys.append(("axis", spec.axis.key))
    for layer, key in keys:
        reason = unread_reason(cfg, key)
        if reason is not None:
            raise GridError(
                f"{where}: {layer}: {key} is never read by this row's cells ({reason}): "
                "set the key that makes it read (e.g. weighter.kind) or drop it"
            )


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

_METRIC_EXAMPLES = (
    "e.g. test/hr@10, val/ndcg@10, test/auc, test/logloss, test/cascade_hr@10, train/loss_retrieval"
)
Metric = Annotated[
    Str,
    Check(
        lambda m: METRIC_PATTERN.match(m) is not None,
        "{key}: {value!r} is not a metric (" + _METRIC_EXAMPLES + ")",
    ),
]
ValMetric = Annotated[
    Str,
    Check(
        lambda m: METRIC_PATTERN.match(m) is not None and m.startswith("val/"),
        "{key}: expected a per-epoch validation metric such as val/ndcg@10, got {value!r}",
    ),
]
Overrides = dict[Str, Any] | None  # dotted config keys -> values


def _seeds(value: Any) -> Any:
    """A count N (seeds 0..N-1) or a non-empty list of distinct integers, as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return tuple(range(value))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        return tuple(value)
    return None  # refused below, naming the value as given


Seeds = Annotated[
    tuple[int, ...] | None,
    BeforeValidator(lambda v: _seeds(v) or ("bad", v)),
    Check(
        lambda v: v is not None and len(set(v)) == len(v),
        "{key}: expected a count or a non-empty list of distinct integers, got {value!r}",
    ),
]


@dataclass(frozen=True)
class DatasetEntry:
    name: Label
    overrides: Overrides = None


@dataclass(frozen=True)
class RowEntry:
    variant: Variant
    backbone: BackboneName = "hstu"
    label: Label | None = None  # replaces the variant in the row name
    overrides: Overrides = None


@dataclass(frozen=True)
class AxisEntry:
    key: Annotated[
        Str,
        Check(lambda k: "." in k, "{key}: expected a dotted config key such as enhancer.m, got {value!r}"),
    ]
    values: Annotated[list[Any], NonEmpty]
    label: Label | None = None  # default: the key's last part


@dataclass(frozen=True)
class FigureEntry:
    kind: Literal["axis", "curves"]
    metrics: Annotated[list[Str], NonEmpty]


@dataclass(frozen=True)
class PeakEntry:
    retrieval: ValMetric  # the validation metric whose argmax epoch is the retrieval peak
    ranking: ValMetric


@dataclass(frozen=True)
class GridFile:
    """What a grid file may hold, key by key (the module docstring shows one); what
    `parse_grid` turns into a `GridSpec`."""

    name: Str | None = None
    description: Str = ""
    base_config: Str | None = None
    overrides: Overrides = None
    seeds: Seeds = (0, 1, 2)
    datasets: Annotated[list[Label | DatasetEntry], NonEmpty] = field(default_factory=lambda: ["synthetic"])
    backbones: Annotated[list[BackboneName], NonEmpty] | None = None
    variants: Annotated[list[Variant], NonEmpty] | None = None
    rows: list[RowEntry] | None = None
    axis: AxisEntry | None = None
    reference: Str | None = None
    metrics: Annotated[list[Metric], NonEmpty] = field(default_factory=lambda: list(DEFAULT_METRICS))
    significance: Literal["auto", "welch", "paired"] = "auto"
    alpha: Annotated[Number, Range(gt=0, lt=1)] = 0.05
    peaks: PeakEntry | None = None
    # the margin of the test that both stages peak at the same epoch (TOST), declared before the runs
    equivalence_margin_epochs: Annotated[Number, Range(gt=0)] | None = None
    figures: list[FigureEntry] = field(default_factory=list)


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
    grid = schema.parse(GridFile, data, GridError, file=where)

    def fail(key: str, what: str) -> GridError:
        return GridError(f"{where}: {key}: {what}")

    grid_name = grid.name if grid.name is not None else (name or (path.stem if path is not None else None))
    problem = name_problem(grid_name)  # the report directory: `..` or a path would escape it
    if problem is not None:
        raise fail("name", problem)
    base_config = None
    if grid.base_config is not None:
        base_config = _resolve_path(grid.base_config, path) or (
            None if check_cells else Path(grid.base_config)
        )
        if base_config is None:
            raise fail(
                "base_config", f"file {grid.base_config!r} not found (relative to the grid file or the cwd)"
            )
    datasets = tuple(
        DatasetSpec(d, {}) if isinstance(d, str) else DatasetSpec(d.name, dict(d.overrides or {}))
        for d in grid.datasets
    )
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise fail("datasets", f"duplicate dataset names in {names}")
    rows = _rows(grid, fail)
    axis = None
    if grid.axis is not None:
        if grid.axis.key in CELL_KEYS:
            raise fail("axis.key", f"{grid.axis.key} is set per row; list the values as rows instead")
        if len({repr(v) for v in grid.axis.values}) != len(grid.axis.values):
            raise fail("axis.values", f"duplicate values in {grid.axis.values}")
        label = grid.axis.label or grid.axis.key.rsplit(".", 1)[-1]
        axis = AxisSpec(grid.axis.key, tuple(grid.axis.values), label)
    overrides = dict(grid.overrides or {})

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
    reference = grid.reference if grid.reference is not None else row_names[0]
    if reference not in row_names:
        raise fail("reference", f"{reference!r} is not a row of this grid (rows: {', '.join(row_names)})")
    twice = sorted({m for m in grid.metrics if grid.metrics.count(m) > 1})
    if twice:  # one report column per metric: a repeated one has no single place in the table
        raise fail("metrics", f"{twice[0]} is listed more than once")
    peaks = PeakSpec(grid.peaks.retrieval, grid.peaks.ranking) if grid.peaks is not None else None
    if grid.equivalence_margin_epochs is not None and peaks is None:
        raise fail("equivalence_margin_epochs", "needs `peaks` (the per-stage peak epochs it tests)")

    spec = GridSpec(
        name=grid_name,
        path=path,
        description=grid.description,
        base_config=base_config,
        overrides=overrides,
        seeds=grid.seeds,
        datasets=datasets,
        rows=rows,
        axis=axis,
        reference=reference,
        metrics=tuple(grid.metrics),
        significance=grid.significance,
        alpha=float(grid.alpha),
        peaks=peaks,
        figures=_figures(grid.figures, axis, fail),
        raw=dict(data),
        equivalence_margin_epochs=grid.equivalence_margin_epochs,
    )
    if check_cells:
        spec.expand()  # every cell must build: bad override keys/values fail here, named
    return spec


def _resolve_path(raw: str, grid_path: Path | None) -> Path | None:
    candidates = [Path(raw)]
    if grid_path is not None and not Path(raw).is_absolute():
        candidates.insert(0, grid_path.parent / raw)
    return next((c for c in candidates if c.is_file()), None)


def _rows(grid: GridFile, fail) -> tuple[RowSpec, ...]:
    """The product of `backbones` (default hstu) and `variants`, then the explicit `rows`."""
    rows: list[RowSpec] = []
    if grid.variants is not None or grid.backbones is not None:
        if grid.variants is None:
            raise fail("variants", "expected a non-empty list of variants, got None")
        rows += [RowSpec(b, v) for b in grid.backbones or ["hstu"] for v in grid.variants]
    for entry in grid.rows or []:
        rows.append(RowSpec(entry.backbone, entry.variant, entry.label, dict(entry.overrides or {})))
    if not rows:
        raise fail("rows", "the grid has no rows (give `variants` [+ `backbones`] or `rows`)")
    return tuple(rows)


def _figures(entries: list[FigureEntry], axis: AxisSpec | None, fail) -> tuple[FigureSpec, ...]:
    out = []
    for i, entry in enumerate(entries):
        key = f"figures[{i}]"
        if entry.kind == "axis" and axis is None:
            raise fail(f"{key}.kind", "an axis figure needs the grid's `axis`")
        pattern = CURVE_PATTERN if entry.kind == "curves" else METRIC_PATTERN
        for j, m in enumerate(entry.metrics):
            if not pattern.match(m):
                raise fail(f"{key}.metrics[{j}]", f"{m!r} is not a metric ({_METRIC_EXAMPLES})")
        if entry.kind == "curves":
            bad = [m for m in entry.metrics if m.startswith("test/")]
            if bad:
                raise fail(
                    f"{key}.metrics", f"{bad[0]} is read once per run; curves need val/ or train/ metrics"
                )
        out.append(FigureSpec(entry.kind, tuple(entry.metrics)))
    return tuple(out)
