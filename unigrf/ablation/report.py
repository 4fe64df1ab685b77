"""An ablation's report directory: what is stored, and the report rebuilt from it.

`<results_dir>/ablations/<grid>/` holds the inputs (written by the runner, read back by
`unigrf report DIR` without re-running anything):
- `results.csv`   one row per run: cell, row, group, dataset, backbone, variant, axis_value,
                  seed, status, best_epoch, epochs_run, time_s (wall), epoch_time_s,
                  model_shape, num_params, the
                  final val/* (best epoch), test/* and last-epoch train/* metrics;
- `histories.csv` one row per run and epoch: cell, epoch (0-based as logged), per-epoch metrics;
- `grid.yaml`     the grid as run (effective seeds); `meta.json` command, git commit, times,
                  command-line overrides, the budget (distinct values of the budget keys over
                  the cells); `datasets.json` dataset sizes, the popularity baseline
                  (test), the count model's AUC / LogLoss (val, test: the ranking floor,
                  `unigrf.evaluation.count_model`) and, on synthetic data, the generator's
                  oracle (the Bayes ceiling: `unigrf.evaluation.oracle`);
                  `configs.yaml` every cell's full config;
- `outcomes/`     per-user outcomes of every finished run and of each dataset's count model
                  (`unigrf.ablation.outcome_store`), where the runs kept them: what the
                  comparisons' bootstrap over test users and seeds reads;
and the outputs: `report.md`, `report.tex`, `summary.csv` (the aggregated long table: means,
intervals, raw and Holm-corrected p-values), `figures/*.png`. The report is always rendered from
the stored files, so a rebuild reproduces it exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from unigrf.ablation.aggregate import (
    OK_STATUS,
    Floor,
    aggregate,
    aggregate_peaks,
    aggregate_weights,
    metric_base,
    seconds_per_epoch,
)
from unigrf.ablation.figures import axis_figure, curves_figure, metric_label
from unigrf.ablation.grid import GridSpec, parse_grid
from unigrf.ablation.outcome_store import load_count_model_outcomes, load_outcomes
from unigrf.ablation.paired import DEFAULT_REPLICATES
from unigrf.atomic import write_text_atomic

PROTOCOL = (
    "leave-one-out (test target = each user's last interaction, validation target = the second "
    "to last, training = everything before; model selection and early stopping on validation "
    "only, test read once per run on the best-validation checkpoint); retrieval by full ranking "
    "over all items with the user's history masked; ranking AUC/LogLoss on the held-out target's "
    "like label; cascade = retrieval top-C re-ranked by the ranking branch, HR/NDCG@10 of liked "
    "test items"
)
POPULARITY_ROW = "popularity (train counts)"
COUNT_MODEL_ROW = "count model (train like rates)"
ORACLE_ROW = "oracle (true distribution)"
# rows of reference numbers under the model rows: datasets.json key -> row label (the count
# model's row comes from the aggregate table, between them: it is compared with the reference)
SECONDS_PER_EPOCH = "s / epoch"
REFERENCE_ROWS = (("popularity", POPULARITY_ROW), ("oracle", ORACLE_ROW))
TWO_SNAPSHOTS = "two snapshots"  # the label of a row whose runs test each stage at its own epoch
SEEDS_ONLY = "‡"  # marks an interval and p over seeds only (the runs kept no per-user outcomes)
INPUT_FILES = ("results.csv", "histories.csv", "grid.yaml", "meta.json", "datasets.json")


# results.csv columns every report reads (the rest are metrics, optional per grid)
RESULT_COLUMNS = ("cell", "row", "group", "dataset", "seed", "status")
INTERRUPTED = "interrupted"  # = unigrf.sweep.results.INTERRUPTED (the report layer reads files only)


class ReportError(RuntimeError):
    """A report directory is missing or holds unreadable files; the message names the file."""


@dataclass
class ReportInputs:
    spec: GridSpec
    results: pd.DataFrame
    histories: pd.DataFrame
    meta: dict[str, Any]
    datasets: dict[str, Any]
    outcomes: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)  # cell → split → frame
    floors: dict[str, Floor] = field(default_factory=dict)  # dataset → its count model row

    def aggregate(self, order: Sequence[str] | None = None) -> pd.DataFrame:
        """`aggregate`'s long table of these runs, with their outcomes and floors."""
        spec = self.spec
        return aggregate(
            self.results,
            spec.metrics,
            spec.reference,
            spec.significance,
            spec.alpha,
            order if order is not None else row_order(self),
            outcomes=self.outcomes,
            floors=self.floors,
        )


# --------------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------------


def store_inputs(
    report_dir: Path,
    spec: GridSpec,
    results: pd.DataFrame,
    histories: pd.DataFrame,
    meta: Mapping[str, Any],
    datasets: Mapping[str, Any],
    configs: Mapping[str, Any] | None = None,
) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    raw = dict(spec.raw)
    raw["seeds"] = list(spec.seeds)
    write_text_atomic(report_dir / "grid.yaml", yaml.safe_dump(raw, sort_keys=False))
    write_text_atomic(report_dir / "meta.json", json.dumps(dict(meta), indent=2, default=str))
    write_text_atomic(report_dir / "datasets.json", json.dumps(dict(datasets), indent=2))
    write_text_atomic(report_dir / "results.csv", results.to_csv(index=False))
    write_text_atomic(report_dir / "histories.csv", histories.to_csv(index=False))
    if configs is not None:
        write_text_atomic(report_dir / "configs.yaml", yaml.safe_dump(dict(configs), sort_keys=False))


def load_inputs(report_dir: str | Path) -> ReportInputs:
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        raise ReportError(f"{report_dir}: not a directory (expected <results_dir>/ablations/<grid>/)")
    missing = [f for f in INPUT_FILES if not (report_dir / f).is_file()]
    if missing:
        raise ReportError(f"{report_dir / missing[0]}: missing; run `unigrf ablate` on the grid first")
    try:
        raw = yaml.safe_load((report_dir / "grid.yaml").read_text())
        spec = parse_grid(raw, path=report_dir / "grid.yaml", check_cells=False)
        results = pd.read_csv(report_dir / "results.csv")
        try:
            histories = pd.read_csv(report_dir / "histories.csv")
        except pd.errors.EmptyDataError:
            histories = pd.DataFrame(columns=["cell", "epoch"])
        meta = json.loads((report_dir / "meta.json").read_text())
        datasets = json.loads((report_dir / "datasets.json").read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ReportError(f"{report_dir}: cannot read the stored results ({err})") from None
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing or not isinstance(meta, dict) or not isinstance(datasets, dict):
        what = (
            f"results.csv lacks column(s) {', '.join(missing)}"
            if missing
            else "meta.json or datasets.json is not a JSON object"
        )
        raise ReportError(
            f"{report_dir}: cannot read the stored results ({what}); run `unigrf ablate` on the grid again"
        )
    try:
        ok = results[results["status"] == OK_STATUS] if "status" in results else results
        outcomes = load_outcomes(report_dir, ok["cell"].astype(str))
        floors = {
            str(name): floor
            for name in dict.fromkeys(results["dataset"])
            if (floor := count_model_floor(report_dir, str(name), datasets.get(str(name), {}))) is not None
        }
    except (OSError, ValueError) as err:  # OutcomesError is a ValueError
        raise ReportError(f"{report_dir}: cannot read the stored per-user outcomes ({err})") from None
    return ReportInputs(spec, results, histories, meta, datasets, outcomes, floors)


def count_model_floor(report_dir: Path, dataset: str, info: Mapping[str, Any]) -> Floor | None:
    """The dataset's count-model row from datasets.json (`count_model`: {split: {auc, logloss}})
    and its stored outcomes; None for reports written before it existed."""
    stored = info.get("count_model")
    if not isinstance(stored, Mapping):
        return None
    values = {
        f"{split}/{k}": float(v)
        for split, metrics in stored.items()
        if split in ("val", "test") and isinstance(metrics, Mapping)
        for k, v in metrics.items()
        if k in ("auc", "logloss")
    }
    return Floor(COUNT_MODEL_ROW, values, load_count_model_outcomes(report_dir, dataset))


# --------------------------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------------------------


def fmt_value(mean: float, std: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_change(
    rel: float, low: float, high: float, p: float, significant: bool, seeds_only: bool = False
) -> str:
    """`+5.3% [-1.2, +11.8] (p = 0.150) *`: the change in % of the reference mean, its 95 %
    interval, the (corrected) p-value and * when significant; `seeds_only` marks an interval
    over seeds only (‡, runs without per-user outcomes). Without a test: `+0.8% (p = n/a)`."""
    if not math.isfinite(rel):
        return "—"
    interval = f" [{low:+.1f}, {high:+.1f}]" if math.isfinite(low) and math.isfinite(high) else ""
    if interval and seeds_only:
        interval += SEEDS_ONLY
    p_text = "p = n/a" if not math.isfinite(p) else (f"p = {p:.3f}" if p >= 0.001 else "p < 0.001")
    return f"{rel:+.1f}%{interval} ({p_text}){' *' if significant and math.isfinite(p) else ''}"


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def tex_escape(text: str) -> str:
    out = text
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        out = out.replace(a, b)
    out = out.replace("<", "$<$").replace(">", "$>$")
    return (
        out.replace("↓", r"$\downarrow$")
        .replace("±", r"$\pm$")
        .replace("—", "--")
        .replace("†", r"$^\dagger$")
        .replace("‡", r"$^\ddagger$")
    )


def row_order(inputs: ReportInputs) -> list[str]:
    order = [r for r in inputs.spec.row_names() if r in set(inputs.results["row"])]
    return order + [r for r in dict.fromkeys(inputs.results["row"]) if r not in order]


def row_labels(inputs: ReportInputs) -> dict[str, str]:
    """Row → the name every table shows: a row whose runs tested each stage at its own best
    epoch (`selection` per_stage: two snapshots of one model, served as two) is labelled so;
    the two-stage pipeline is two models by definition and keeps its name."""
    res = inputs.results
    labels = {str(r): str(r) for r in dict.fromkeys(res["row"])}
    if "selection" in res:
        per_stage = res[(res["selection"].astype(str) == "per_stage") & (res["variant"] != "two_stage")]
        for row in dict.fromkeys(per_stage["row"]):
            labels[str(row)] = f"{row} ({TWO_SNAPSHOTS})"
    return labels


def significance_note(table: pd.DataFrame, spec: GridSpec) -> str:
    compared = table[~table["is_reference"] & table["applicable"] & table["rel_change"].notna()]
    used = set(compared["test"])
    parts = []
    if "bootstrap" in used:
        parts.append(
            f"a paired two-level bootstrap over test users and seeds ({DEFAULT_REPLICATES:,} replicates, "
            "seeded): "
            "each replicate draws the seeds both rows finished and the test users with "
            "replacement — the same users for both rows and for every seed (the test users are "
            "one sample shared by all seeds) — and recomputes the difference (user-mean metrics "
            "over the drawn users, cascade metrics over the drawn liked users, AUC on the drawn "
            "users per seed, then the mean over the drawn seeds); the interval is the 95 % "
            "percentile interval, p two-sided from the same replicates (`unigrf.ablation.paired`; "
            "DeLong's test of AUC differences, users only, in summary.csv `p_delong`)"
        )
    if "paired" in used or "welch" in used:
        parts.append(
            f"{SEEDS_ONLY} where the runs kept no per-user outcomes: a t-test over seeds only "
            "(paired on the common seeds, else Welch's) — it ignores the test users' sampling noise"
        )
    if not parts:
        return (
            "No test: the runs kept no per-user outcomes, and a t-test over seeds needs at least "
            "3 seeds with differences that vary (p = n/a)."
        )
    return (
        "Significance against the reference row: "
        + "; ".join(parts)
        + ". A t-test over seeds needs at least 3 seeds and differences that vary, else p = n/a. "
        "Each cell: the change of the mean in % of the reference mean, [its 95 % interval] on the "
        "same scale, and the two-sided p-value Holm-corrected over the column's rows (Holm's "
        f"step-down); * marks a corrected p < {spec.alpha:g}. Raw p-values: summary.csv."
    )


def declared_note(inputs: ReportInputs) -> str:
    """What was added after the grid's first run (seeds, rows, datasets), from meta.json's
    `declared` record; "" when nothing was."""
    declared = inputs.meta.get("declared")
    if not isinstance(declared, Mapping):
        return "declared seeds not recorded (the report predates the record)"
    when = str(declared.get("at", "?"))[:10]
    res = inputs.results
    added = []
    for key, column, fmt in (
        ("seeds", "seed", _fmt_seeds),
        ("rows", "row", None),
        ("datasets", "dataset", None),
    ):
        before = {str(v) for v in declared.get(key, [])}
        new = [v for v in dict.fromkeys(res[column]) if str(v) not in before]
        if new:
            text = fmt(new) if fmt else ", ".join(str(v) for v in new)
            added.append(f"{key} {text}")
    if not added:
        return "declared before the first run"
    return f"{'; '.join(added)} added after the first run on {when}"


def _fmt_seeds(seeds: Sequence[Any]) -> str:
    values = sorted(int(s) for s in seeds)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(str(v) for v in values)


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass
class Rendered:
    markdown: str
    latex: str
    figures: list[Path]
    summary: pd.DataFrame  # `aggregate`'s long table: every mean, interval, raw and corrected p


def render(inputs: ReportInputs, report_dir: Path) -> Rendered:
    """Aggregate and render; writes the figures under `report_dir/figures/`."""
    spec, results = inputs.spec, inputs.results
    order = row_order(inputs)
    table = inputs.aggregate(order)
    peaks = (
        aggregate_peaks(results, inputs.histories, spec.peaks.retrieval, spec.peaks.ranking, order)
        if spec.peaks is not None and not inputs.histories.empty
        else pd.DataFrame()
    )
    figures = _figures(inputs, report_dir, order)
    md = _markdown(inputs, table, peaks, figures, report_dir, order)
    tex = _latex(inputs, table, peaks, order)
    return Rendered(md, tex, figures, table)


def console_summary(report_dir: str | Path, table: pd.DataFrame | None = None) -> str:
    """What `unigrf ablate` prints at the end: per dataset, the mean ± std table and the change
    against the reference row (the report's two main tables, without the header block).
    `table`: the report's aggregate (`Rendered.summary`), so that it is not computed twice."""
    inputs = load_inputs(report_dir)
    spec = inputs.spec
    order = row_order(inputs)
    table = inputs.aggregate(order) if table is None else table
    out: list[str] = []
    for dataset in dict.fromkeys(inputs.results["dataset"]):
        out += ["", f"{dataset}: mean ± std over seeds († reference row)"]
        header = ["row", "seeds", *(metric_label(m) for m in spec.metrics), SECONDS_PER_EPOCH]
        out.append(md_table(header, _main_rows(inputs, table, dataset, order, ("", ""))))
        change = _change_rows(inputs, table, dataset, order)
        if change:
            out += ["", f"change against {spec.reference}: {_change_legend(table, dataset, spec.alpha)}"]
            out.append(md_table(["row", *(metric_label(m) for m in spec.metrics)], change))
    return "\n".join(out)


def _change_legend(table: pd.DataFrame, dataset: str, alpha: float) -> str:
    """One line saying what the change table's intervals and p-values are."""
    ds = table[(table["dataset"] == dataset) & ~table["is_reference"] & table["rel_change"].notna()]
    tests = set(ds["test"])
    parts = ["% [95 % interval]"]
    if "bootstrap" in tests:
        parts.append("over test users and seeds (paired bootstrap)")
    if tests & {"paired", "welch"}:
        parts.append(f"{SEEDS_ONLY}: over seeds only, no per-user outcomes")
    if "" in tests:
        parts.append("n/a: no outcomes and < 3 seeds or no variance")
    return "; ".join(parts) + f"; Holm-corrected p, * p < {alpha:g}"


def write_report(report_dir: str | Path) -> Rendered:
    """Rebuild report.md, report.tex and the figures from the stored inputs."""
    report_dir = Path(report_dir)
    rendered = render(load_inputs(report_dir), report_dir)
    write_text_atomic(report_dir / "report.md", rendered.markdown)
    write_text_atomic(report_dir / "report.tex", rendered.latex)
    write_text_atomic(report_dir / "summary.csv", rendered.summary.to_csv(index=False))
    return rendered


def _figures(inputs: ReportInputs, report_dir: Path, order: list[str]) -> list[Path]:
    spec, results = inputs.spec, inputs.results
    out: list[Path] = []
    for i, fig in enumerate(spec.figures):
        for dataset in dict.fromkeys(results["dataset"]):
            ds = results[results["dataset"] == dataset]
            name = f"{fig.kind}{i}_{dataset}.png" if len(spec.figures) > 1 else f"{fig.kind}_{dataset}.png"
            path = report_dir / "figures" / name
            title = f"{spec.name} — {dataset}"
            if fig.kind == "axis" and spec.axis is not None:
                shapes = _tick_labels(ds) if spec.axis.key.startswith("model.") else None
                info = inputs.datasets.get(str(dataset), {})
                out.append(
                    axis_figure(
                        ds,
                        fig.metrics,
                        spec.axis.key,
                        spec.axis.values,
                        path,
                        popularity=info.get("popularity"),
                        oracle=info.get("oracle"),
                        title=title,
                        tick_labels=shapes,
                    )
                )
            elif fig.kind == "curves":
                hist = inputs.histories[inputs.histories["cell"].isin(ds["cell"])]
                if hist.empty:
                    continue
                out.append(curves_figure(ds, hist, fig.metrics, path, order, title=title))
    return out


def _tick_labels(ds: pd.DataFrame) -> dict[str, str]:
    """Axis value → 'value\\nLxHxD, N params' for model-size axes (from the stored runs)."""
    labels = {}
    for value, sub in ds.groupby(ds["axis_value"].astype(str)):
        shape = str(sub["model_shape"].iloc[0]) if "model_shape" in sub else ""
        params = sub["num_params"].iloc[0] if "num_params" in sub else math.nan
        extra = f"{shape}" + (f", {params / 1e6:.2f}M" if math.isfinite(float(params)) else "")
        labels[value] = f"{value}\n{extra}" if extra else value
    return labels


def _header_lines(inputs: ReportInputs) -> list[tuple[str, str]]:
    meta, results = inputs.meta, inputs.results
    datasets = []
    for name in dict.fromkeys(results["dataset"]):
        info = inputs.datasets.get(str(name), {})
        sizes = ", ".join(
            f"{info[k]:,} {label}"
            for k, label in (
                ("num_users", "users"),
                ("num_items", "items"),
                ("num_interactions", "interactions"),
            )
            if k in info
        )
        datasets.append(f"{name}" + (f" ({sizes})" if sizes else ""))
    n_ok = int((results["status"] == OK_STATUS).sum())
    n_int = int((results["status"] == INTERRUPTED).sum())
    budget = "; ".join(
        f"{k} = {' / '.join(str(v) for v in vals)}" for k, vals in meta.get("budget", {}).items()
    )
    done = results[results["status"] == OK_STATUS]

    def mean_of(col: str) -> float:
        return float(done[col].astype(float).mean()) if col in done and len(done) else math.nan

    seeds = sorted({int(s) for s in results["seed"]})
    lines = [
        ("Dataset", "; ".join(datasets)),
        ("Protocol", PROTOCOL),
        ("Seeds", f"{', '.join(str(s) for s in seeds)} ({len(seeds)} per row); {declared_note(inputs)}"),
        ("Budget per run", budget or "—"),
        (
            "Runs",
            f"{len(results)} ({n_ok} finished, {len(results) - n_ok - n_int} failed"
            + (f", {n_int} interrupted" if n_int else "")
            + "); mean time per run "
            f"{fmt_duration(mean_of('time_s'))} wall ({fmt_duration(mean_of('epoch_time_s'))} in its "
            f"epochs); wall time of the last `unigrf ablate` call "
            f"{fmt_duration(float(meta.get('wall_s', math.nan)))}",
        ),
        ("Git commit", str(meta.get("git_commit", "unknown"))),
        ("Command", f"`{meta.get('command', '?')}`"),
    ]
    if meta.get("interrupted"):
        lines.append(("Interrupted", "Ctrl-C stopped the grid; `unigrf ablate ... --resume` runs the rest"))
    if meta.get("note"):
        lines.append(("Note", str(meta["note"])))
    return lines


def _main_rows(
    inputs: ReportInputs, table: pd.DataFrame, dataset: str, order: list[str], bold: tuple[str, str]
) -> list[list[str]]:
    spec = inputs.spec
    ds = table[(table["dataset"] == dataset) & ~table["is_floor"]]
    labels = row_labels(inputs)
    body = []
    for row in order:
        sub = ds[ds["row"] == row].set_index("metric")
        if sub.empty:
            continue
        name = labels.get(row, row)
        name = f"{name} †" if row == spec.reference else name
        n = int(sub["n"].max())
        cells = []
        for metric in spec.metrics:
            r = sub.loc[metric]
            text = fmt_value(float(r["mean"]), float(r["std"]))
            cells.append(f"{bold[0]}{text}{bold[1]}" if bool(r["best"]) and text != "—" else text)
        runs = inputs.results[
            (inputs.results["dataset"] == dataset)
            & (inputs.results["row"] == row)
            & (inputs.results["status"] == OK_STATUS)
        ]
        per_epoch = seconds_per_epoch(runs).dropna()
        cells.append(
            fmt_value(
                float(per_epoch.mean()), float(per_epoch.std(ddof=1)) if len(per_epoch) > 1 else math.nan, 2
            )
            if len(per_epoch)
            else "—"
        )
        body.append([name, str(n), *cells])
    floors = table[(table["dataset"] == dataset) & table["is_floor"]]
    for key, label in REFERENCE_ROWS:  # numbers that need no training run
        reference = inputs.datasets.get(str(dataset), {}).get(key)
        if reference and any(metric_base(m) in reference for m in spec.metrics if m.startswith("test/")):
            cells = [
                f"{reference[metric_base(m)]:.4f}"
                if m.startswith("test/") and metric_base(m) in reference
                else "—"
                for m in spec.metrics
            ]
            body.append([label, "—", *cells, "—"])
        if key == "popularity":  # the ranking floor next: popularity is the retrieval floor
            for row in dict.fromkeys(floors["row"]):
                sub = floors[floors["row"] == row].set_index("metric")
                cells = [
                    fmt_value(float(sub.loc[m, "mean"]), math.nan) if m in sub.index else "—"
                    for m in spec.metrics
                ]
                body.append([str(row), "—", *cells, "—"])
    return body


def _change_rows(
    inputs: ReportInputs, table: pd.DataFrame, dataset: str, order: list[str]
) -> list[list[str]]:
    ds = table[table["dataset"] == dataset]
    labels = row_labels(inputs)
    floors = list(dict.fromkeys(ds.loc[ds["is_floor"], "row"]))
    body = []
    for row in [*order, *floors]:
        if row == inputs.spec.reference:
            continue
        sub = ds[ds["row"] == row].set_index("metric")
        if sub.empty:
            continue
        body.append(
            [
                labels.get(row, row),
                *(
                    fmt_change(
                        float(sub.loc[m, "rel_change"]),
                        float(sub.loc[m, "rel_low"]),
                        float(sub.loc[m, "rel_high"]),
                        float(sub.loc[m, "p_adjusted"]),
                        bool(sub.loc[m, "significant"]),
                        seeds_only=str(sub.loc[m, "test"]) in ("paired", "welch"),
                    )
                    if m in sub.index
                    else "—"
                    for m in inputs.spec.metrics
                ),
            ]
        )
    return body


def _peak_rows(peaks: pd.DataFrame, dataset: str, labels: Mapping[str, str]) -> list[list[str]]:
    ds = peaks[peaks["dataset"] == dataset] if not peaks.empty else peaks
    body = []
    for _, r in ds.iterrows():
        body.append(
            [
                labels.get(str(r["row"]), str(r["row"])),
                str(int(r["n"])),
                *(
                    fmt_value(float(r[f"{c}_mean"]), float(r[f"{c}_std"]), 1)
                    for c in ("retrieval_peak", "ranking_peak", "gap", "epochs")
                ),
            ]
        )
    return body


WEIGHTED_TASKS = ("retrieval", "ranking")


def _weights_by_task(inputs: ReportInputs, order: list[str]) -> dict[str, pd.DataFrame]:
    """`aggregate_weights` of each task, every dataset at once."""
    return {t: aggregate_weights(inputs.results, inputs.histories, t, order) for t in WEIGHTED_TASKS}


def _weight_rows(
    inputs: ReportInputs, weights: Mapping[str, pd.DataFrame], dataset: str, order: list[str]
) -> list[list[str]]:
    """One line per row whose runs weigh both tasks: each task's lowest / mean / highest weight
    (`weights`, from `_weights_by_task`); "—" where the histories lack a task's weight (older runs)."""
    per_task = {
        t: {str(r["row"]): r for _, r in frame[frame["dataset"] == dataset].iterrows()}
        for t, frame in weights.items()
    }
    labels = row_labels(inputs)
    lines = []
    for row in order:
        found = [per_task[t].get(row) for t in WEIGHTED_TASKS]
        if all(r is None for r in found):
            continue
        seeds = next(int(r["n"]) for r in found if r is not None)
        cells = []
        for r in found:
            cells += ["—"] * 3 if r is None else [f"{float(r[c]):.3f}" for c in ("low", "mean", "high")]
        lines.append([labels.get(row, row), str(seeds), *cells])
    return lines


def _markdown(
    inputs: ReportInputs,
    table: pd.DataFrame,
    peaks: pd.DataFrame,
    figures: list[Path],
    report_dir: Path,
    order: list[str],
) -> str:
    spec = inputs.spec
    out = [f"# Ablation `{spec.name}`" + (f": {spec.description}" if spec.description else ""), ""]
    out.append(md_table(["", ""], [[f"**{k}**", v] for k, v in _header_lines(inputs)]))
    header = ["row", "seeds", *(metric_label(m) for m in spec.metrics), SECONDS_PER_EPOCH]
    all_weights = _weights_by_task(inputs, order)
    for dataset in dict.fromkeys(inputs.results["dataset"]):
        out += ["", f"## {dataset}: mean ± std over seeds", ""]
        out.append(md_table(header, _main_rows(inputs, table, dataset, order, ("**", "**"))))
        out += [
            "",
            "† reference row. **Bold**: best mean per column among the rows. —: not applicable (a "
            "retrieval-only model's ranking head and a ranking-only model's retrieval head are "
            "untrained; single-stage models have no cascade). Val metrics are at the best-validation "
            "epoch, test metrics are read once on that checkpoint, train losses are the last epoch's. "
            f"{POPULARITY_ROW}: the retrieval floor; {COUNT_MODEL_ROW}: the ranking floor — the "
            "user's and the item's like rates on the training part, smoothed towards the global rate "
            "(5 pseudo-counts), combined as a sum of logits (`unigrf.evaluation.count_model`); a "
            "ranker below it has not learned what a table of counts knows. "
            f"({TWO_SNAPSHOTS}): each stage tested at its own best epoch — two sets of weights, "
            "not one model. "
            f"{SECONDS_PER_EPOCH}: wall seconds per epoch (training + validation) with the grid's "
            "runs sharing the machine — compare rows within one report, not across reports.",
        ]
        change = _change_rows(inputs, table, dataset, order)
        if change:
            out += ["", f"### {dataset}: change against `{spec.reference}`", ""]
            out.append(md_table(["row", *(metric_label(m) for m in spec.metrics)], change))
            out += ["", significance_note(table, spec)]
        if spec.peaks is not None and not peaks.empty:
            out += ["", f"### {dataset}: peak epochs (1-based)", ""]
            ph = [
                "row",
                "seeds",
                f"retrieval peak ({spec.peaks.retrieval})",
                f"ranking peak ({spec.peaks.ranking})",
                "gap |ret − rank|",
                "epochs run",
            ]
            out.append(md_table(ph, _peak_rows(peaks, dataset, row_labels(inputs))))
            out += [
                "",
                "Peak = the epoch with the best validation value of each stage's metric, per run; "
                "mean ± std over seeds.",
            ]
        weights = _weight_rows(inputs, all_weights, dataset, order)
        if weights:
            out += ["", f"### {dataset}: the loss weights over training", ""]
            wh = ["row", "seeds"] + [f"{t} {c}" for t in WEIGHTED_TASKS for c in ("lowest", "mean", "highest")]
            out.append(md_table(wh, weights))
            out += [
                "",
                "Each task's weight every training step used: per run its lowest and highest and the "
                "mean of its epoch-end values, then the mean over seeds. Fixed weights stay at 1.000; "
                "the loss-ratio and gradient-norm weighters keep the two summing to 2; grad_share keeps "
                "the larger task's gradient at weight 1 and raises the other's.",
            ]
    if figures:
        out += ["", "## Figures", ""]
        for path in figures:
            rel = path.relative_to(report_dir).as_posix()
            out += [f"![{path.stem}]({rel})", ""]
    status = inputs.results["status"]
    failed = inputs.results[(status != OK_STATUS) & (status != INTERRUPTED)]
    if not failed.empty:
        out += ["", "## Failed runs", ""]
        out += [f"- `{c}`: {s}" for c, s in zip(failed["cell"], failed["status"])]
    stopped = inputs.results[status == INTERRUPTED]
    if not stopped.empty:
        out += ["", "## Interrupted runs", ""]
        out += [f"- `{c}`: interrupted" for c in stopped["cell"]]
    return "\n".join(out).rstrip() + "\n"


def _latex(inputs: ReportInputs, table: pd.DataFrame, peaks: pd.DataFrame, order: list[str]) -> str:
    spec, meta = inputs.spec, inputs.meta
    lines = [
        f"% Ablation {spec.name}: generated by unigrf from results.csv (needs \\usepackage{{booktabs}})",
        f"% command: {meta.get('command', '?')}",
        f"% git commit: {meta.get('git_commit', 'unknown')}",
    ]
    cols = "l" + "r" * (len(spec.metrics) + 2)
    for dataset in dict.fromkeys(inputs.results["dataset"]):
        head = " & ".join(
            ["row", "seeds", *(tex_escape(metric_label(m)) for m in spec.metrics), SECONDS_PER_EPOCH]
        )
        body = _main_rows(inputs, table, dataset, order, ("\\textbf{", "}"))
        lines += [
            "",
            "\\begin{table}[t]",
            "\\centering\\small",
            f"\\caption{{{tex_escape(spec.name)} on {tex_escape(str(dataset))}: mean $\\pm$ std over "
            f"seeds; bold: best per column; $^\\dagger$: reference row.}}",
            f"\\begin{{tabular}}{{{cols}}}",
            "\\toprule",
            head + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join(_tex_cell(c) for c in r) + " \\\\" for r in body]
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        change = _change_rows(inputs, table, dataset, order)
        if change:
            lines += [
                "",
                "\\begin{table}[t]",
                "\\centering\\small",
                f"\\caption{{{tex_escape(spec.name)} on {tex_escape(str(dataset))}: change against "
                f"{tex_escape(spec.reference)}: {tex_escape(_change_legend(table, str(dataset), spec.alpha))}.}}",
                f"\\begin{{tabular}}{{{'l' + 'r' * len(spec.metrics)}}}",
                "\\toprule",
                " & ".join(["row", *(tex_escape(metric_label(m)) for m in spec.metrics)]) + " \\\\",
                "\\midrule",
            ]
            lines += [" & ".join(_tex_cell(c) for c in r) + " \\\\" for r in change]
            lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        if spec.peaks is not None and not peaks.empty:
            lines += [
                "",
                "\\begin{table}[t]",
                "\\centering\\small",
                f"\\caption{{{tex_escape(spec.name)} on {tex_escape(str(dataset))}: epoch (1-based) of the "
                "best validation value per stage, mean $\\pm$ std over seeds.}",
                "\\begin{tabular}{lrrrrr}",
                "\\toprule",
                "row & seeds & retrieval peak & ranking peak & gap & epochs \\\\",
                "\\midrule",
            ]
            lines += [
                " & ".join(_tex_cell(c) for c in r) + " \\\\"
                for r in _peak_rows(peaks, dataset, row_labels(inputs))
            ]
            lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _tex_cell(text: str) -> str:
    if text.startswith("\\textbf{"):
        return "\\textbf{" + tex_escape(text[len("\\textbf{") : -1]) + "}"
    return tex_escape(text.replace(" *", "$^*$") if text.endswith(" *") else text)
