"""benchmarks/quality_bench.py's CSV update: a run's rows replace those of the same dataset,
system and seed, and every other row — another dataset, a row a --rows subset did not run,
the anchor under --skip-anchor — is kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("quality_bench", REPO / "benchmarks" / "quality_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
