"""Ablation grids: YAML grid → cells (`grid`), execution through the sweep layer (`runner`),
mean ± std / change / significance against the reference row (`aggregate`), Markdown / LaTeX
report (`report`) and PNG figures (`figures`). Importing this package does not import Ray."""

from unigrf.ablation.aggregate import aggregate, aggregate_peaks, compare, peak_epochs
from unigrf.ablation.grid import Cell, GridError, GridSpec, load_grid, parse_grid
from unigrf.ablation.report import ReportError, load_inputs, store_inputs, write_report

__all__ = [
    "Cell",
    "GridError",
    "GridSpec",
    "ReportError",
    "aggregate",
    "aggregate_peaks",
    "compare",
    "load_grid",
    "load_inputs",
    "parse_grid",
    "peak_epochs",
    "store_inputs",
    "write_report",
]
