"""benchmarks/grid_cost.py: cells done against the grid's plan, seconds per cell by row, and the
hours left priced at each row's mean (a grid not started at the dataset's UniGRF cell)."""

from __future__ import annotations

import json
import math

import pytest


def finish(report, name, seconds):
    run = report / "runs" / name
    run.mkdir(parents=True)
    (run / "trial_result.json").write_text(json.dumps({"final": {}, "time_s": seconds}))


@pytest.mark.timeout(120)
def test_the_cost_counts_finished_cells_and_prices_the_missing_ones(benchmark_module, tmp_path):
    cost = benchmark_module("grid_cost")
    plan = cost.planned_cells("sync", "amazon-mi")
    assert len(plan) == 18  # 6 rows x 3 seeds
    report = tmp_path / "ablations" / "sync-amazon-mi"
    (plan_a, row_a), (plan_b, _), (plan_c, _) = plan[:3]
    finish(report, plan_a, 100.0)
    finish(report, plan_b, 300.0)
    (report / "runs" / plan_c).mkdir(parents=True)  # started, not finished: still missing
    (report / "runs" / plan_c / "trial_result.json").write_text("{truncated")

    c = cost.grid_cost("sync", "amazon-mi", report)
    assert (c.done, c.total) == (2, 18)
    assert c.per_row == {row_a: 200.0} and c.cpu_s == 400.0
    assert c.left_s == pytest.approx(16 * 200.0)  # other rows at the grid's mean: an estimate
    assert c.estimated

    empty = cost.grid_cost("scaling", "amazon-mi", None, stand_in=50.0)
    assert (empty.done, empty.total, empty.left_s) == (0, 9, 450.0)
    assert math.isnan(cost.grid_cost("scaling", "amazon-mi", None).left_s)
    assert cost.unigrf_seconds(tmp_path, "amazon-mi") == 200.0  # sync's first row is hstu/unigrf
    text = cost.table([c, empty])
    assert "| sync | amazon-mi | 2/18 | 200–200 | 0.1 | ~0.9 |" in text
