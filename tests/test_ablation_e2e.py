"""A tiny grid end to end through Ray Tune (session Ray): report.md, results.csv and PNG
figures; `--resume` skips finished cells; `unigrf report DIR` rebuilds the same report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from unigrf.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

TINY_GRID = {
    "name": "tiny",
    "description": "end-to-end test grid",
    "overrides": {
        # no model.size: `auto` resolves to tiny on these few hundred training interactions
        "loss.num_negatives": 8,
        "train.epochs": 1,
        "train.batch_size": 32,
        "train.objective": "0.5*val/ndcg@10 + 0.5*val/auc",
        "enhancer.top_k": 10,
        "enhancer.warmup_epochs": 0,
        "eval.ks": [5, 10],
        "eval.cascade_top_c": 20,
        "data.synthetic.num_users": 40,
        "data.synthetic.num_items": 30,
        "data.synthetic.mean_seq_len": 10,
        "data.synthetic.min_seq_len": 5,
    },
    "seeds": 1,
    "datasets": ["synthetic"],
    "rows": [{"backbone": "hstu", "variant": "unigrf"}],
    "axis": {"key": "enhancer.m", "values": [0, 2], "label": "m"},
    "reference": "hstu/unigrf/m=0",
    "metrics": ["test/hr@10", "test/ndcg@10", "test/auc"],
    "peaks": {"retrieval": "val/ndcg@10", "ranking": "val/auc"},
    "figures": [
        {"kind": "axis", "metrics": ["test/ndcg@10", "test/auc"]},
        {"kind": "curves", "metrics": ["val/ndcg@10", "val/auc"]},
    ],
}


def test_tiny_grid_end_to_end_resume_and_report(tmp_path, ray_cluster, capsys):
    grid = tmp_path / "tiny.yaml"
    grid.write_text(yaml.safe_dump(TINY_GRID))
    results_dir = tmp_path / "results"
    assert main(["ablate", str(grid), "--results-dir", str(results_dir)]) == 0
    out = results_dir / "ablations" / "tiny"

    results = pd.read_csv(out / "results.csv")
    assert list(results["cell"]) == ["hstu/unigrf/m=0/synthetic/seed0", "hstu/unigrf/m=2/synthetic/seed0"]
    assert (results["status"] == "ok").all()
    assert results["test/hr@10"].between(0, 1).all() and results["test/auc"].between(0, 1).all()
    assert (results["num_params"] > 0).all() and (results["model_shape"] == "1×1×32").all()
    histories = pd.read_csv(out / "histories.csv")
    assert sorted(histories["cell"]) == sorted(results["cell"]) and (histories["epoch"] == 0).all()
    # the report records each cell's config (seed included), the commit and package versions
    meta = json.loads((out / "meta.json").read_text())
    assert meta["git_commit"] and set(meta["versions"]) >= {
        "python",
        "torch",
        "ray",
        "optuna",
        "numpy",
        "pandas",
    }
    configs = yaml.safe_load((out / "configs.yaml").read_text())
    assert configs["hstu/unigrf/m=2/synthetic/seed0"]["train"]["seed"] == 0
    # `model.size: auto` was resolved against the data before the cells ran: configs, shapes
    # and the report's budget name the preset that trained
    assert {c["model"]["size"] for c in configs.values()} == {"tiny"}
    assert meta["budget"]["model.size"] == ["tiny"]

    md = (out / "report.md").read_text()
    # a run that tested each stage at its own epoch is labelled as two snapshots
    per_stage = set(results.loc[results["selection"] == "per_stage", "row"])
    for row in ("hstu/unigrf/m=0", "hstu/unigrf/m=2"):
        label = f"{row} (two snapshots)" if row in per_stage else row
        assert f"| {label}{' †' if row.endswith('m=0') else ''} | 1 |" in md
    assert "synthetic (40 users, 30 items" in md and "popularity (train counts)" in md
    assert "oracle (true distribution)" in md  # the synthetic data's Bayes ceiling
    # the ranking floor: the count model's row, its metrics and per-user outcomes stored
    assert "| count model (train like rates) | — | — | — |" in md
    floor = json.loads((out / "datasets.json").read_text())["synthetic"]["count_model"]
    assert 0.5 < floor["test"]["auc"] < 1 and set(floor) == {"val", "test"}
    assert (out / "outcomes" / "count_model__synthetic" / "test.parquet").is_file()
    assert meta["declared"]["seeds"] == [0] and "declared before the first run" in md
    assert f"`unigrf ablate {grid} --results-dir {results_dir}`" in md
    for png in ("axis0_synthetic.png", "curves1_synthetic.png"):
        assert (out / "figures" / png).read_bytes()[:4] == b"\x89PNG"
    assert "hstu/unigrf/m=2" in capsys.readouterr().out  # the report is printed

    # without --resume an existing grid is refused, not overwritten
    assert main(["ablate", str(grid), "--results-dir", str(results_dir)]) == 2
    assert "resume" in capsys.readouterr().err

    # --resume with a second seed: the two finished cells are skipped, only seed 1 trains
    finished = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/trial_result.json")}
    assert len(finished) == 2
    assert main(["ablate", str(grid), "--results-dir", str(results_dir), "--seeds", "2", "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not re-run
    assert len(list((out / "runs").glob("*/trial_result.json"))) == 4
    resumed = pd.read_csv(out / "results.csv")
    assert len(resumed) == 4 and (resumed["status"] == "ok").all()
    first = resumed.set_index("cell").loc[results["cell"], "test/ndcg@10"].to_numpy()
    assert first == pytest.approx(results["test/ndcg@10"].to_numpy())  # the same stored results
    # the seed added after the first run is named, with the first run's date
    declared = json.loads((out / "meta.json").read_text())["declared"]
    assert declared == meta["declared"]
    assert f"seeds 1 added after the first run on {declared['at'][:10]}" in (out / "report.md").read_text()

    # `unigrf report DIR` reproduces the report from the stored files
    md = (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert main(["report", str(out), "--quiet"]) == 0
    assert (out / "report.md").read_text() == md
