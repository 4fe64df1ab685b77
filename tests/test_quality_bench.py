"""benchmarks/quality_bench.py's CSV update: a run's rows replace those of the same dataset,
system and seed, and every other row — another dataset, a row a --rows subset did not run,
the anchor under --skip-anchor — is kept."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def bench(benchmark_module):
    return benchmark_module("quality_bench")


def rows(*entries):
    return pd.DataFrame([{"dataset": d, "system": s, "seed": k, "test/ndcg@10": v} for d, s, k, v in entries])


def test_a_run_replaces_only_what_it_measured(bench):
    old = rows(
        ("amazon-mi", "UniGRF-HSTU", 0, 0.05),
        ("amazon-mi", "UniGRF-HSTU", 1, 0.06),
        ("amazon-mi", "SASRec.pytorch", 0, 0.04),
        ("ml-100k", "UniGRF-HSTU", 0, 0.10),
    )
    new = rows(("amazon-mi", "UniGRF-HSTU", 1, 0.07), ("amazon-mi", "item-only SASRec (CE)", 0, 0.08))
    merged = bench.merge_rows(old, new).set_index(["dataset", "system", "seed"])["test/ndcg@10"]
    assert merged.to_dict() == {
        ("amazon-mi", "UniGRF-HSTU", 0): 0.05,  # a seed the run did not measure
        ("amazon-mi", "UniGRF-HSTU", 1): 0.07,  # replaced
        ("amazon-mi", "SASRec.pytorch", 0): 0.04,  # another system of the dataset
        ("ml-100k", "UniGRF-HSTU", 0): 0.10,  # another dataset
        ("amazon-mi", "item-only SASRec (CE)", 0): 0.08,  # new
    }
    assert bench.merge_rows(old, new.iloc[0:0]) is old


def test_a_failed_run_is_not_a_seed_of_the_table(bench):
    frame = rows(
        ("ml-100k", "ranking-only HSTU", 0, 0.10),
        ("ml-100k", "ranking-only HSTU", 1, float("nan")),
        ("ml-100k", "ranking-only HSTU", 2, 0.12),
    )
    for metric in (
        "test/hr@10",
        "test/ndcg@50",
        "test/mrr",
        "test/auc",
        "test/logloss",
        "test/cascade_ndcg@10",
    ):
        frame[metric] = float("nan")
    frame["status"] = ["ok", "failed", "ok"]
    frame["epochs"], frame["wall_s"] = [10, 1, 30], [100.0, 5.0, 300.0]
    line = next(x for x in bench.summary(frame).splitlines() if x.startswith("| ranking-only HSTU"))
    assert line.startswith("| ranking-only HSTU | 2 | ") and line.endswith("| 20 | 200 |")
