"""benchmarks/scale_bench.py: a measurement child records its result and peaks, refuses what
its estimate says cannot fit, and the report turns the records into the RESULTS tables."""

from __future__ import annotations

import os

import pytest


@pytest.mark.timeout(120)
def test_a_child_measures_a_small_stand_in_and_the_report_shows_it(benchmark_module, tmp_path, monkeypatch):
    bench = benchmark_module("scale_bench")
    report = benchmark_module("scale_report")
    monkeypatch.setattr(bench, "anchor_gflops", lambda: 100.0)  # the 2 s GEMM: not what is tested
    assert bench.tree_rss(os.getpid()) > 0
    raw = tmp_path / "raw"
    standin = bench.run_child({"kind": "standin", "dataset": "ml-1m", "dir": str(raw), "ratings": 20_000})
    assert standin["result"]["stats"]["ratings"] == 20_000 and standin["tree_peak_bytes"] > 0
    again = bench.run_child({"kind": "standin", "dataset": "ml-1m", "dir": str(raw), "ratings": 20_000})
    assert again["result"]["reused"]
    task = {
        "kind": "prepare",
        "plan": "rows",
        "rows_target": 20_000,
        "config": str(bench.CONFIGS["ml-1m"]),
        "overrides": [f"data.data_dir={raw}", f"results_dir={tmp_path / 'results'}"],
        "budget": 64 * 1024**3,
    }
    prepared = bench.run_child(task)
    assert prepared["result"]["rows"] == 20_000
    refused = bench.run_child({**task, "budget": 1024})
    assert "needs about" in refused["refused"] and "result" not in refused
    text = "\n".join(report.linearity_section([prepared]))
    assert "| 20,000 |" in text


@pytest.mark.timeout(120)
def test_the_mining_child_finds_the_same_negatives_chunked_and_in_one_piece(benchmark_module, monkeypatch):
    """At reduced size (chunks of 64 items over 300): the candidate pass through chunks and in one
    piece mine the same negatives, and the report's catalogue section shows both rows."""
    bench = benchmark_module("scale_bench")
    report = benchmark_module("scale_report")
    from unigrf.evaluation import topk

    monkeypatch.setattr(bench, "anchor_gflops", lambda: 100.0)
    records = []
    for chunked in (True, False):
        monkeypatch.setattr(topk, "ITEM_CHUNK", 64)
        task = {"kind": "mine", "plan": "catalogue", "items": 300, "batch": 8, "chunked": chunked}
        records.append(bench.run_child(task))
    chunked, one_piece = (r["result"] for r in records)
    assert chunked["chunk"] == 64 and one_piece["chunk"] is None
    assert chunked["negatives"] > 0 and chunked["negatives_sum"] == one_piece["negatives_sum"]
    text = "\n".join(report.catalogue_section(records))
    assert "| 300 | chunked |" in text and "| 300 | one piece |" in text
