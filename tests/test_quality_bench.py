"""benchmarks/quality_bench.py's grid subsets: the rows and datasets asked for, under a name of
their own, and a clear error for a row the grid does not have."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from unigrf.ablation.grid import load_grid

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("quality_bench", REPO / "benchmarks" / "quality_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_whole_grid_is_itself(bench):
    grid = load_grid(REPO / "ablations" / "quality.yaml")
    assert bench.subset_grid(grid, ["ml-100k", "amazon-mi"], None) is grid


def test_a_subset_keeps_the_asked_rows_and_datasets_under_its_own_name(bench):
    grid = load_grid(REPO / "ablations" / "quality.yaml")
    sub = bench.subset_grid(grid, ["ml-100k"], ["sasrec/item_only", "hstu/unigrf"])
    assert [d.name for d in sub.datasets] == ["ml-100k"]
    assert [r.base_name for r in sub.rows] == ["sasrec/item_only", "hstu/unigrf"]
    assert sub.reference == "hstu/unigrf" and sub.name != grid.name
    cells = sub.expand()
    assert len(cells) == 2 * len(grid.seeds)
    assert {c.config.data.dataset for c in cells} == {"ml-100k"}
    # without the reference row, the first kept row is the reference
    assert bench.subset_grid(grid, ["amazon-mi"], ["sasrec/item_only"]).reference == "sasrec/item_only"


def test_an_unknown_row_names_the_grids_rows(bench):
    grid = load_grid(REPO / "ablations" / "quality.yaml")
    with pytest.raises(SystemExit, match=r"unknown row\(s\) \['hstu/bogus'\].*sasrec/item_only"):
        bench.subset_grid(grid, ["ml-100k"], ["hstu/bogus"])
