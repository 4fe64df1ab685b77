"""Paper-style figures of an ablation as PNG (matplotlib, Agg canvas; no pyplot global state).

- `axis_figure`: each metric against the grid's axis values (the m-sweep of Figure 2, model
  size of Figure 4), one line per row group, mean ± std over seeds as error bars, the
  popularity baseline dashed and the synthetic oracle (the Bayes ceiling) dotted where they apply.
- `curves_figure`: per-epoch validation curves (Figure 3's sync plot), one line per row, mean
  over seeds with a ±std band, each curve's peak epoch marked.

Epochs are 1-based on every axis, as in the report's peak table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from unigrf.ablation.aggregate import OK_STATUS, applicable, lower_is_better, metric_base
from unigrf.atomic import make_dirs, write_atomic

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: a grid without figures
    from matplotlib.figure import Figure  # (the quick grid) never pays for its import


def metric_label(metric: str) -> str:
    """`test/ndcg@10` -> `NDCG@10 (test)`, with ↓ for lower-is-better metrics."""
    split, _, base = metric.partition("/")
    pretty = {
        "auc": "AUC",
        "gauc": "GAUC",
        "logloss": "LogLoss",
        "mrr": "MRR",
        "loss_retrieval": "loss (retrieval)",
        "loss_ranking": "loss (ranking)",
    }.get(base)
    if pretty is None:
        name, _, k = base.partition("@")
        name = {
            "hr": "HR",
            "ndcg": "NDCG",
            "cascade_hr": "cascade HR",
            "cascade_ndcg": "cascade NDCG",
            "cascade0_hr": "cascade HR",
            "cascade0_ndcg": "cascade NDCG",
        }.get(name, name)
        pretty = f"{name}@{k}" if k else name
        if base.startswith("cascade0_"):  # the cascade re-ranked by retrieval alone
            pretty += ", λ=0"
    arrow = " ↓" if lower_is_better(metric) else ""
    return f"{pretty} ({split}){arrow}"


def _grid(n: int) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    make_dirs(path.parent)
    return write_atomic(path, lambda fh: fig.savefig(fh, dpi=120, format="png"))


def axis_figure(
    results: pd.DataFrame,
    metrics: Sequence[str],
    axis_label: str,
    axis_values: Sequence[object],
    path: Path,
    popularity: Mapping[str, float] | None = None,
    title: str = "",
    tick_labels: Mapping[str, str] | None = None,
    oracle: Mapping[str, float] | None = None,
) -> Path:
    """Metric vs axis value for one dataset's runs (`results` already filtered to it).

    `results` needs columns group, variant, axis_value, status and the metrics. Axis values are
    placed evenly in grid order (m = 0, 2, 4, … and tiny/small/base are both ordinal here).
    """
    ok = results[results["status"] == OK_STATUS]
    order = [str(v) for v in axis_values]
    xs = np.arange(len(order))
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics):
        for group in dict.fromkeys(results["group"]):
            sub = ok[ok["group"] == group]
            if sub.empty or metric not in sub or not applicable(str(sub["variant"].iloc[0]), metric):
                continue
            stats = sub.groupby(sub["axis_value"].astype(str))[metric].agg(["mean", "std"])
            stats = stats.reindex(order)
            ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3, label=group)
        for reference, label, style in ((popularity, "popularity", "--"), (oracle, "oracle", ":")):
            if reference and metric.startswith("test/") and metric_base(metric) in reference:
                ax.axhline(reference[metric_base(metric)], color="grey", ls=style, lw=1, label=label)
        ax.set_xticks(xs, [tick_labels.get(v, v) if tick_labels else v for v in order])
        ax.set_xlabel(axis_label)
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def curves_figure(
    results: pd.DataFrame,
    histories: pd.DataFrame,
    metrics: Sequence[str],
    path: Path,
    row_order: Sequence[str],
    title: str = "",
) -> Path:
    """Per-epoch curves for one dataset's runs; mean over the seeds that reached each epoch.

    `results` needs columns cell, row, variant; `histories` cell, epoch and the metrics.
    """
    import matplotlib

    merged = histories.merge(results[["cell", "row", "variant"]], on="cell", how="inner")
    fig, axes = _grid(len(metrics))
    # one colour per row in every panel (a panel skips rows its metric does not apply to)
    # and distinct colours while there are at most 20 rows (the default cycle has 10)
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(row_order) > len(palette):
        palette = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    colours = {row: palette[i % len(palette)] for i, row in enumerate(row_order)}
    for ax, metric in zip(axes, metrics):
        for row in row_order:
            sub = merged[merged["row"] == row]
            if sub.empty or metric not in sub or not applicable(str(sub["variant"].iloc[0]), metric):
                continue
            stats = sub.groupby("epoch")[metric].agg(["mean", "std"]).sort_index()
            if stats["mean"].isna().all():
                continue
            epochs = stats.index.to_numpy(dtype=float) + 1.0
            mean, std = stats["mean"].to_numpy(), stats["std"].fillna(0.0).to_numpy()
            (line,) = ax.plot(epochs, mean, label=row, color=colours[row])
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
            best = int(np.nanargmin(mean) if lower_is_better(metric) else np.nanargmax(mean))
            ax.plot([epochs[best]], [mean[best]], marker="*", ms=11, color=line.get_color())
            ax.axvline(epochs[best], color=line.get_color(), ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    # every row in the legend, whichever panel drew it
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines() if not h.get_label().startswith("_")}
    axes[0].legend(
        [handles[r] for r in row_order if r in handles], [r for r in row_order if r in handles], fontsize=8
    )
    if title:
        fig.suptitle(title)
    return _save(fig, path)
