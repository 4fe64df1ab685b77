"""Sweep results: one row per trial, Markdown/CSV tables, the Pareto set. Pure pandas/numpy.

A trial's row comes from what Tune recorded for it: its last result and its per-epoch results.
A trial that ran to the end (its training's last report has `"final": 1`) gives the selected
(best-epoch) validation metrics and the test metrics; one that ASHA stopped gives the best
epoch it reached and no test metrics (test is only read at the end of a training).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COMPLETED, STOPPED, ERROR = "completed", "stopped", "error"
INTERRUPTED = "interrupted"  # a fixed-config run that Ctrl-C stopped before it finished
# Columns shown in the Markdown table (the CSV has every metric).
SUMMARY_METRICS = ("val/ndcg@10", "val/hr@10", "val/auc", "test/ndcg@10", "test/hr@10", "test/auc")


def trial_row(
    trial_id: str,
    params: Mapping[str, Any],
    last: Mapping[str, Any],
    history: pd.DataFrame | None,
    error: bool,
) -> dict[str, Any]:
    """One trial's row: id, status, params, epochs_run, best_epoch, objective, val/*, test/*.

    last: the trial's last reported result; history: its per-epoch results (rows with an
    `epoch`, without `final`), possibly empty when it failed before reporting.
    """
    row: dict[str, Any] = {"trial_id": trial_id}
    row.update(params)
    epochs = _epoch_rows(history)
    if last.get("final") == 1:
        row["status"] = COMPLETED
        row["epochs_run"] = int(last.get("epochs_run", len(epochs)))
        row["best_epoch"] = int(last.get("best_epoch", -1))
        row["objective"] = float(last["objective"])
        row.update({k: float(v) for k, v in last.items() if k.startswith(("val/", "test/"))})
        return row
    row["status"] = ERROR if error else STOPPED
    row["epochs_run"] = len(epochs)
    if len(epochs) and "objective" in epochs:
        best = epochs.loc[epochs["objective"].idxmax()]
        row["best_epoch"] = int(best["epoch"])
        row["objective"] = float(best["objective"])
        row.update({k: float(best[k]) for k in epochs.columns if k.startswith("val/")})
    else:
        row["best_epoch"], row["objective"] = -1, math.nan
    return row


def _epoch_rows(history: pd.DataFrame | None) -> pd.DataFrame:
    if history is None or history.empty or "epoch" not in history:
        return pd.DataFrame()
    rows = history[history["epoch"].notna()]
    if "final" in rows:
        rows = rows[rows["final"].fillna(0) != 1]
    # a trial resumed after a crash may report an epoch twice: keep the latest
    return rows.drop_duplicates(subset="epoch", keep="last").sort_values("epoch")


def trials_table(
    rows: Iterable[dict[str, Any]], sort_by: str = "objective", ascending: bool = False
) -> pd.DataFrame:
    """All trial rows sorted by `sort_by` (NaN last), fixed columns first."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    first = ["trial_id", "status", "epochs_run", "best_epoch", "objective"]
    metrics = sorted(c for c in table.columns if c.startswith(("val/", "test/")))
    params = [c for c in table.columns if c not in first and c not in metrics]
    table = table[[*first[:1], *params, *first[1:], *metrics]]
    return table.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable").reset_index(
        drop=True
    )


def pareto_mask(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Non-dominated rows of `values` [n, k] (`modes[j]` "max" or "min" for column j).

    Row a dominates row b when it is at least as good on every objective and strictly better on
    one. Rows with a NaN are never on the front. Returns a bool mask [n].
    """
    values = np.asarray(values, dtype=float)
    sign = np.array([1.0 if m == "max" else -1.0 for m in modes])
    v = values * sign  # all objectives maximised
    valid = ~np.isnan(v).any(axis=1)
    v = np.where(valid[:, None], v, -np.inf)
    geq = (v[:, None, :] >= v[None, :, :]).all(axis=2)  # [n, n]: a >= b everywhere
    gt = (v[:, None, :] > v[None, :, :]).any(axis=2)  # [n, n]: a > b somewhere
    dominated = ((geq & gt) & valid[:, None]).any(axis=0)
    return valid & ~dominated


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(table: pd.DataFrame, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub Markdown table of `table` (plain formatting: `tabulate` is not a dependency)."""
    columns = [c for c in (columns or table.columns) if c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in table[columns].iterrows():
        lines.append("| " + " | ".join(_cell(row[c], digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def summary_columns(table: pd.DataFrame, param_keys: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The columns of the console/Markdown view: ids, params, progress, objective, key metrics."""
    wanted = [
        "trial_id",
        *param_keys,
        "status",
        "epochs_run",
        "best_epoch",
        "objective",
        *extra,
        *SUMMARY_METRICS,
    ]
    return [c for c in dict.fromkeys(wanted) if c in table.columns]


def write_text_atomic(path: Path, text: str) -> None:
    """`text` to `path` whole or not at all (`unigrf.atomic`: a failure is one `WriteError`)."""
    from unigrf.atomic import make_dirs
    from unigrf.atomic import write_text_atomic as write

    make_dirs(path.parent)
    write(path, text)


def write_table(table: pd.DataFrame, directory: Path, stem: str, columns: Sequence[str], title: str) -> None:
    """`<stem>.csv` (every column) and `<stem>.md` (`columns`), written atomically."""
    write_text_atomic(directory / f"{stem}.csv", table.to_csv(index=False))
    write_text_atomic(directory / f"{stem}.md", f"# {title}\n\n" + markdown_table(table, columns))
