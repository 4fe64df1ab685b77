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


@pytest.mark.timeout(240)
def test_full_size_runs_unigrf_train_and_records_the_attempt(benchmark_module, tmp_path, monkeypatch, capsys):
    """benchmarks/full_size.py at reduced size: the attempt's record (command, wall, the process
    tree's peak, exit code) and, the run finished, its epoch timing and test metrics; the report
    shows full-size records only."""
    import argparse
    import json

    full = benchmark_module("full_size")
    monkeypatch.setattr(full, "anchor_gflops", lambda: 100.0)
    out = tmp_path / "attempts.json"
    args = argparse.Namespace(
        config="ml-1m", work=str(tmp_path / "work"), results=str(tmp_path / "results"), out=str(out),
        every=2, eval_every=1, heartbeat=0.5, ratings=20_000,
        set=["model.size=tiny", "train.batch_size=64", "eval.ks=[10]", "data.max_len=20"],
    )  # fmt: skip
    assert full.run(args) == 0
    (record,) = json.loads(out.read_text())
    assert record["exit"] == 0 and record["wall_s"] > 0 and record["peak_gib"] > 0.1  # Ray's processes too
    assert "unigrf.cli train configs/ml-1m.yaml" in record["command"]
    assert "train.checkpoint_every_steps=2" in record["command"]
    assert "eval.checkpoint_every_batches=1" in record["command"]
    done = record["finished"]
    assert done["epoch_s"] >= done["train_s"] > 0 and 0 <= done["test"]["test/ndcg@10"] <= 1
    run_dir = tmp_path / "results" / "runs" / "ml-1m-full"
    assert not (run_dir / "checkpoints" / "in_epoch").exists()  # removed with the epoch's checkpoint
    assert not (run_dir / "checkpoints" / "eval").exists()  # and the evaluations', with the results

    assert full.run(args) == 0 and len(json.loads(out.read_text())) == 1  # finished: not run again
    assert record["epoch_progress"] is None  # the epoch finished: its in-epoch checkpoint is gone
    full_record = {**record, "ratings": None}
    unfinished = {**full_record, "config": "ml-20m", "epoch_progress": {"steps_done": 1250, "train_s": 2914.0}}
    del unfinished["finished"]
    out.write_text(json.dumps([record, full_record, unfinished]))
    capsys.readouterr()
    full.report(argparse.Namespace(json=str(out)))
    table = capsys.readouterr().out
    assert "| `configs/ml-20m.yaml` | 1 |" in table and "not yet: 1,250 steps in 0.81 h" in table
    assert table.count("`configs/ml-1m.yaml`") == 1 and "| 1 |" in table and "yes" in table


@pytest.mark.timeout(240)
def test_eval_ab_times_two_checkouts_and_compares_their_metrics(benchmark_module, monkeypatch, capsys):
    """benchmarks/eval_ab.py with this checkout on both sides: each side measured in its own
    process, the table printed, the metrics equal."""
    ab = benchmark_module("eval_ab")
    repo = str(ab.HERE.parent)
    argv = ["eval_ab.py", "--old", repo, "--new", repo, "--items", "400", "--users", "16", "--repeats", "1"]
    monkeypatch.setattr("sys.argv", argv)
    ab.main()
    out = capsys.readouterr().out
    assert "metrics equal: True" in out and out.count("| old (") == 1 and out.count("| new (") == 1
    assert ab.same({"a": float("nan"), "b": 1.0}, {"a": float("nan"), "b": 1.0})
    assert not ab.same({"a": 1.0}, {"a": 2.0})


@pytest.mark.timeout(60)
def test_full_size_reads_the_epoch_progress_of_an_unfinished_run(benchmark_module, tmp_path):
    import torch

    from unigrf.training.in_epoch import EpochProgress, save_progress

    full = benchmark_module("full_size")
    assert full.epoch_progress(tmp_path, "ml-20m") is None
    progress = EpochProgress.capture(0, 150, {"retrieval": torch.tensor(1.0)}, {}, torch.device("cpu"), 42.25)
    save_progress(tmp_path / "runs" / "ml-20m-full", {"epoch": -1}, progress)
    assert full.epoch_progress(tmp_path, "ml-20m") == {"steps_done": 150, "train_s": 42.2}


@pytest.mark.timeout(60)
def test_full_size_reads_the_evaluation_progress_of_an_unfinished_run(benchmark_module, tmp_path, capsys):
    """An evaluation pass in progress is recorded by its part files (`DirectoryStore`): parts so
    far, the pass's size from the prepared users and eval.batch_size, the seconds between parts;
    the report turns them into the pass's hours."""
    import argparse
    import json
    import os

    import numpy as np
    import torch
    import yaml

    from unigrf.evaluation.batch_store import BatchRecord
    from unigrf.training.eval_progress import DirectoryStore, eval_dir

    full = benchmark_module("full_size")
    run_dir = tmp_path / "runs" / "amazon-books-full"
    assert full.evaluation_progress(tmp_path, "amazon-books") == []
    run_dir.mkdir(parents=True)
    config = {"data": {"dataset": "amazon-books"}, "eval": {"checkpoint_every_batches": 10, "batch_size": 64}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "data" / "amazon-books-abc").mkdir(parents=True)
    (tmp_path / "data" / "amazon-books-abc" / "meta.json").write_text(json.dumps({"num_users": 6401}))
    store = DirectoryStore(eval_dir(run_dir) / "epoch_0000-val", every=10, root=run_dir)
    record = BatchRecord(np.arange(2), torch.zeros(2, dtype=torch.long), None, torch.zeros(2), torch.ones(2))
    for part in range(4):
        store.save("key", {part: record})
    # one part every 30 s, but a restart between attempts before the last: the median gap
    for when, path in zip([1000.0, 1030.0, 1060.0, 1900.0], sorted((eval_dir(run_dir) / "epoch_0000-val").glob("part_*.pt"))):
        os.utime(path, (when, when))
    (progress,) = full.evaluation_progress(tmp_path, "amazon-books")
    assert progress == {
        "tag": "epoch_0000-val", "parts": 4, "batches_per_part": 10, "batches_per_pass": 101, "s_per_part": 30.0,
    }  # fmt: skip

    record = {
        "config": "amazon-books", "ratings": None, "wall_s": 3600.0, "peak_gib": 5.0, "gemm_gflops": 50.0,
        "epoch_progress": {"steps_done": 2882, "train_s": 4754.8}, "evaluation_progress": [progress],
    }  # fmt: skip
    out = tmp_path / "attempts.json"
    out.write_text(json.dumps([record]))
    full.report(argparse.Namespace(json=str(out)))
    table = capsys.readouterr().out
    assert "not yet: 2,882 steps in 1.32 h; evaluation `epoch_0000-val` 4/11 parts (30 s a part: 0.1 h a pass)" in table
