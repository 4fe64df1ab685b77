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
                  (test) and, on synthetic data, the generator's oracle (the Bayes ceiling:
                  `unigrf.evaluation.oracle`);
                  `configs.yaml` every cell's full config;
and the outputs: `report.md`, `report.tex`, `summary.csv` (the aggregated long table: means,
intervals, raw and Holm-corrected p-values), `figures/*.png`. The report is always rendered from
the stored files, so a rebuild reproduces it exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from unigrf.ablation.aggregate import (
    OK_STATUS,
    aggregate,
    aggregate_peaks,
    aggregate_weights,
    metric_base,
    seconds_per_epoch,
)
from unigrf.ablation.figures import axis_figure, curves_figure, metric_label
from unigrf.ablation.grid import GridSpec, parse_grid
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
ORACLE_ROW = "oracle (true distribution)"
# rows of reference numbers under the model rows: datasets.json key -> row label
SECONDS_PER_EPOCH = "s / epoch"
REFERENCE_ROWS = (("popularity", POPULARITY_ROW), ("oracle", ORACLE_ROW))
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


# --------------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    write_text_atomic(path, text)  # a full disk: one WriteError naming the file, nothing partial


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
    write_atomic(report_dir / "grid.yaml", yaml.safe_dump(raw, sort_keys=False))
    write_atomic(report_dir / "meta.json", json.dumps(dict(meta), indent=2, default=str))
    write_atomic(report_dir / "datasets.json", json.dumps(dict(datasets), indent=2))
    write_atomic(report_dir / "results.csv", results.to_csv(index=False))
    write_atomic(report_dir / "histories.csv", histories.to_csv(index=False))
    if configs is not None:
        write_atomic(report_dir / "configs.yaml", yaml.safe_dump(dict(configs), sort_keys=False))


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
    return ReportInputs(spec, results, histories, meta, datasets)


# --------------------------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------------------------


def fmt_value(mean: float, std: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_change(rel: float, low: float, high: float, p: float, significant: bool) -> str:
    """`+5.3% [-1.2, +11.8] (p = 0.150) *`: the change in % of the reference mean, its 95 %
    interval, the (corrected) p-value and * when significant."""
    if not math.isfinite(rel):
        return "—"
    interval = f" [{low:+.1f}, {high:+.1f}]" if math.isfinite(low) and math.isfinite(high) else ""
    p_text = "p = n/a" if not math.isfinite(p) else (f"p = {p:.3f}" if p >= 0.001 else "p < 0.001")
    return f"{rel:+.1f}%{interval} ({p_text}){' *' if significant else ''}"


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
    )


def row_order(inputs: ReportInputs) -> list[str]:
    order = [r for r in inputs.spec.row_names() if r in set(inputs.results["row"])]
    return order + [r for r in dict.fromkeys(inputs.results["row"]) if r not in order]


def significance_note(table: pd.DataFrame, spec: GridSpec) -> str:
    used = sorted(set(table["test"]) - {""})
    parts = []
    if "paired" in used:
        parts.append(
            "paired t-test (`scipy.stats.ttest_rel`) on the per-seed values where a row finished the "
            "same seeds as the reference — the seed fixes the batch order, the negative-sampling "
            "stream and the initialisation for every variant, so seed-level variation shared by both "
            "rows cancels in the per-seed differences"
        )
    if "welch" in used:
        parts.append(
            "Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`) on the per-seed values"
            + (" where the seed sets differ" if spec.significance == "auto" else "")
            + " — no equal-variance assumption across variants"
        )
    if not parts:
        return "No significance test: fewer than 2 finished seeds per row."
    return (
        "Significance against the reference row: "
        + "; ".join(parts)
        + ". Each cell: the change of the mean in % of the reference mean, [its 95 % confidence "
        "interval] on the same scale, and the two-sided p-value Holm-corrected over the column's "
        f"rows (statsmodels `multipletests`); * marks a corrected p < {spec.alpha:g}. Raw p-values: "
        "summary.csv."
    )


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
    table = aggregate(results, spec.metrics, spec.reference, spec.significance, spec.alpha, order)
    peaks = (
        aggregate_peaks(results, inputs.histories, spec.peaks.retrieval, spec.peaks.ranking, order)
        if spec.peaks is not None and not inputs.histories.empty
        else pd.DataFrame()
    )
    figures = _figures(inputs, report_dir, order)
    md = _markdown(inputs, table, peaks, figures, report_dir, order)
    tex = _latex(inputs, table, peaks, order)
    return Rendered(md, tex, figures, table)


def console_summary(report_dir: str | Path) -> str:
    """What `unigrf ablate` prints at the end: per dataset, the mean ± std table and the change
    against the reference row (the report's two main tables, without the header block)."""
    inputs = load_inputs(report_dir)
    spec = inputs.spec
    order = row_order(inputs)
    table = aggregate(inputs.results, spec.metrics, spec.reference, spec.significance, spec.alpha, order)
    out: list[str] = []
    for dataset in dict.fromkeys(inputs.results["dataset"]):
        out += ["", f"{dataset}: mean ± std over seeds († reference row)"]
        header = ["row", "seeds", *(metric_label(m) for m in spec.metrics), SECONDS_PER_EPOCH]
        out.append(md_table(header, _main_rows(inputs, table, dataset, order, ("", ""))))
        change = _change_rows(inputs, table, dataset, order)
        if change:
            out += [
                "",
                f"change against {spec.reference}: % [95 % CI] (t-test over seeds, Holm-corrected p; "
                f"* p < {spec.alpha})",
            ]
            out.append(md_table(["row", *(metric_label(m) for m in spec.metrics)], change))
    return "\n".join(out)


def write_report(report_dir: str | Path) -> Rendered:
    """Rebuild report.md, report.tex and the figures from the stored inputs."""
    report_dir = Path(report_dir)
    rendered = render(load_inputs(report_dir), report_dir)
    write_atomic(report_dir / "report.md", rendered.markdown)
    write_atomic(report_dir / "report.tex", rendered.latex)
    write_atomic(report_dir / "summary.csv", rendered.summary.to_csv(index=False))
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
        ("Seeds", f"{', '.join(str(s) for s in seeds)} ({len(seeds)} per row)"),
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
    ds = table[table["dataset"] == dataset]
    body = []
    for row in order:
        sub = ds[ds["row"] == row].set_index("metric")
        if sub.empty:
            continue
        name = f"{row} †" if row == spec.reference else row
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
    for key, label in REFERENCE_ROWS:  # test-split numbers that need no training run
        reference = inputs.datasets.get(str(dataset), {}).get(key)
        if reference and any(metric_base(m) in reference for m in spec.metrics if m.startswith("test/")):
            cells = [
                f"{reference[metric_base(m)]:.4f}"
                if m.startswith("test/") and metric_base(m) in reference
                else "—"
                for m in spec.metrics
            ]
            body.append([label, "—", *cells, "—"])
    return body


def _change_rows(
    inputs: ReportInputs, table: pd.DataFrame, dataset: str, order: list[str]
) -> list[list[str]]:
    ds = table[table["dataset"] == dataset]
    body = []
    for row in order:
        if row == inputs.spec.reference:
            continue
        sub = ds[ds["row"] == row].set_index("metric")
        if sub.empty:
            continue
        body.append(
            [
                row,
                *(
                    fmt_change(
                        float(sub.loc[m, "rel_change"]),
                        float(sub.loc[m, "rel_low"]),
                        float(sub.loc[m, "rel_high"]),
                        float(sub.loc[m, "p_adjusted"]),
                        bool(sub.loc[m, "significant"]),
                    )
                    for m in inputs.spec.metrics
                ),
            ]
        )
    return body


def _peak_rows(peaks: pd.DataFrame, dataset: str) -> list[list[str]]:
    ds = peaks[peaks["dataset"] == dataset] if not peaks.empty else peaks
    body = []
    for _, r in ds.iterrows():
        body.append(
            [
                str(r["row"]),
                str(int(r["n"])),
                *(
                    fmt_value(float(r[f"{c}_mean"]), float(r[f"{c}_std"]), 1)
                    for c in ("retrieval_peak", "ranking_peak", "gap", "epochs")
                ),
            ]
        )
    return body


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
    for dataset in dict.fromkeys(inputs.results["dataset"]):
        out += ["", f"## {dataset}: mean ± std over seeds", ""]
        out.append(md_table(header, _main_rows(inputs, table, dataset, order, ("**", "**"))))
        out += [
            "",
            "† reference row. **Bold**: best mean per column among the rows. —: not applicable (a "
            "retrieval-only model's ranking head and a ranking-only model's retrieval head are "
            "untrained; single-stage models have no cascade). Val metrics are at the best-validation "
            "epoch, test metrics are read once on that checkpoint, train losses are the last epoch's. "
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
            out.append(md_table(ph, _peak_rows(peaks, dataset)))
            out += [
                "",
                "Peak = the epoch with the best validation value of each stage's metric, per run; "
                "mean ± std over seeds.",
            ]
        weights = aggregate_weights(inputs.results, inputs.histories, "retrieval", order)
        weights = weights[weights["dataset"] == dataset]
        if not weights.empty:
            out += ["", f"### {dataset}: the retrieval loss's weight over training", ""]
            wh = ["row", "seeds", "lowest", "mean (epoch ends)", "highest", "spread"]
            out.append(
                md_table(
                    wh,
                    [
                        [
                            str(r["row"]),
                            str(int(r["n"])),
                            *(f"{float(r[c]):.3f}" for c in ("low", "mean", "high", "spread")),
                        ]
                        for _, r in weights.iterrows()
                    ],
                )
            )
            out += [
                "",
                "The weight every training step used (the ranking loss's is 2 − it), per run its "
                "lowest and highest and the mean of its epoch-end values, then the mean over seeds. "
                "A fixed weighter stays at 1.000.",
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
                f"{tex_escape(spec.reference)}: \\% [95\\% CI] (two-sided t-test over seeds, "
                f"Holm-corrected p-value; * p < {spec.alpha:g}).}}",
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
            lines += [" & ".join(_tex_cell(c) for c in r) + " \\\\" for r in _peak_rows(peaks, dataset)]
            lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _tex_cell(text: str) -> str:
    if text.startswith("\\textbf{"):
        return "\\textbf{" + tex_escape(text[len("\\textbf{") : -1]) + "}"
    return tex_escape(text.replace(" *", "$^*$") if text.endswith(" *") else text)
