"""What the claim grids cost and what is left: cells done, CPU time per cell, hours to go.

The claim grids on ML-100K (200 items) and MovieTweetings run in the background across sessions
(issue 36): one trial at a time, resumed cell by cell. This reads what a results directory (or
the committed archives under reports/) holds — each finished cell's trial result, whose
`time_s` is the training's wall time on one core — and, for every grid × dataset, prints the
cells done of the grid's total, the measured seconds per cell by row, the CPU hours spent and
the hours the missing cells will take (each missing cell at its row's measured mean; a row with
no finished cell at the grid's mean, else at the mean UniGRF-HSTU cell of any grid on the same
dataset in the results directory — marked "~").

    python benchmarks/grid_cost.py --results-dir /work/results                 # ablations/<grid>-<ds>
    python benchmarks/grid_cost.py --report reports/current/amazon-mi/paper --grid paper --dataset amazon-mi
    python benchmarks/grid_cost.py --results-dir /work/results --markdown reports/grid-cost.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRIDS = ("paper", "m_sweep", "sync", "scaling")
DATASETS = ("amazon-mi", "ml-100k", "movietweetings")


@dataclass(frozen=True)
class GridCost:
    grid: str
    dataset: str
    report: Path | None
    total: int
    done: int
    cpu_s: float  # over the finished cells
    left_s: float  # the missing cells at their row's mean
    estimated: bool  # some missing row had no finished cell: the grid's mean stood in
    per_row: dict[str, float]  # row → mean seconds per finished cell


def planned_cells(grid: str, dataset: str) -> list[tuple[str, str]]:
    """(run name, row) of every cell of `ablations/<grid>.yaml` on `dataset`."""
    from unigrf.ablation.grid import load_grid
    from unigrf.ablation.outcome_store import run_name

    spec = load_grid(REPO / "ablations" / f"{grid}.yaml", check_cells=False).subset([dataset])
    return [(run_name(c.name), c.row) for c in spec.expand()]


def finished_times(report: Path | None) -> dict[str, float]:
    """Run name → training seconds of every finished cell of a report directory."""
    if report is None or not (report / "runs").is_dir():
        return {}
    out = {}
    for path in (report / "runs").glob("*/trial_result.json"):
        try:
            out[path.parent.name] = float(json.loads(path.read_text()).get("time_s", math.nan))
        except (OSError, ValueError, TypeError):
            continue  # unreadable: the resume runs it again, so it counts as missing
    return out


def unigrf_seconds(results_dir: Path, dataset: str) -> float:
    """Mean training seconds of the finished UniGRF-HSTU cells of every grid on `dataset` in a
    results directory (the stand-in for a grid not started yet); NaN when there is none."""
    times = [
        t
        for report in (results_dir / "ablations").glob(f"*-{dataset}")
        for name, t in finished_times(report).items()
        if name.startswith("hstu__unigrf") and math.isfinite(t)
    ]
    return statistics.fmean(times) if times else math.nan


def grid_cost(grid: str, dataset: str, report: Path | None, stand_in: float = math.nan) -> GridCost:
    cells = planned_cells(grid, dataset)
    times = finished_times(report)
    by_row: dict[str, list[float]] = {}
    for name, row in cells:
        if name in times and math.isfinite(times[name]):
            by_row.setdefault(row, []).append(times[name])
    per_row = {row: statistics.fmean(ts) for row, ts in by_row.items()}
    every = [t for ts in by_row.values() for t in ts]
    fallback = statistics.fmean(every) if every else stand_in
    missing = [row for name, row in cells if name not in times]
    left = sum(per_row.get(row, fallback) for row in missing)
    return GridCost(
        grid=grid,
        dataset=dataset,
        report=report,
        total=len(cells),
        done=len(cells) - len(missing),
        cpu_s=sum(every),
        left_s=left,
        estimated=any(row not in per_row for row in missing),
        per_row=per_row,
    )


def hours(seconds: float) -> str:
    return "–" if not math.isfinite(seconds) else f"{seconds / 3600:.1f}"


def table(costs: Sequence[GridCost]) -> str:
    lines = [
        "| grid | dataset | cells done | s per cell (min–max over rows) | CPU h spent | CPU h to go |",
        "|---|---|---|---|---|---|",
    ]
    for c in costs:
        span = (
            f"{min(c.per_row.values()):.0f}–{max(c.per_row.values()):.0f}"
            if c.per_row
            else "not measured yet"
        )
        to_go = "0" if c.done == c.total else f"{'~' if c.estimated else ''}{hours(c.left_s)}"
        lines.append(f"| {c.grid} | {c.dataset} | {c.done}/{c.total} | {span} | {hours(c.cpu_s)} | {to_go} |")
    spent = sum(c.cpu_s for c in costs)
    left = sum(c.left_s for c in costs if c.done < c.total)
    lines.append(f"| **all** | | {sum(c.done for c in costs)}/{sum(c.total for c in costs)} | "
                 f"| **{hours(spent)}** | **{hours(left)}** |")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="read <results-dir>/ablations/<grid>-<dataset>/ for every claim grid and dataset")  # fmt: skip
    parser.add_argument(
        "--report", type=Path, default=None, help="one report directory (with --grid, --dataset)"
    )
    parser.add_argument("--grid", choices=GRIDS, default=None)
    parser.add_argument("--dataset", choices=DATASETS, default=None)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.report is not None and (args.grid is None or args.dataset is None):
        parser.error("--report needs --grid and --dataset")
    if args.report is None and args.results_dir is None:
        parser.error("give --results-dir or --report")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report is not None:
        costs = [grid_cost(args.grid, args.dataset, args.report)]
    else:
        costs = []
        for dataset in args.datasets:
            stand_in = unigrf_seconds(args.results_dir, dataset)
            for grid in GRIDS:
                report = args.results_dir / "ablations" / f"{grid}-{dataset}"
                costs.append(grid_cost(grid, dataset, report if report.is_dir() else None, stand_in))
    text = table(costs)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
