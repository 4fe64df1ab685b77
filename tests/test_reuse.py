"""`--reuse-from`: a cell two grids share is trained once — the second grid copies the first's
finished cell (same computation, same data) and trains only what it lacks; a cell whose config
differs in anything but its name and locations is trained, not reused."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from raw_fixtures import write_random_ratings
from tiny_configs import TINY_GRID

from unigrf.ablation.archive import finished_cells
from unigrf.ablation.reuse import ReuseError, check_sources, reuse_cells, source_index
from unigrf.cli import main
from unigrf.config import apply_overrides, config_to_yaml, load_config
from unigrf.run_identity import computation_hash, portable_hash
from unigrf.sweep.trainable import data_fingerprint_of, read_trial_result


def grid_file(tmp_path, name, data_dir, rows):
    grid = {
        "name": name,
        "description": "reuse test grid",
        "overrides": TINY_GRID,
        "seeds": 1,
        "datasets": [
            {"name": "mt", "overrides": {"data.dataset": "movietweetings", "data.data_dir": str(data_dir)}}
        ],
        "rows": rows,
        "reference": "hstu/item_only",
        "metrics": ["test/ndcg@10"],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_the_computation_hash_ignores_names_and_locations_only():
    cfg = load_config(None)
    renamed = apply_overrides(cfg, {"name": "other", "results_dir": "/elsewhere", "data.data_dir": "/d"})
    assert computation_hash(renamed) == computation_hash(cfg)
    assert portable_hash(renamed) != portable_hash(cfg)  # the name counts for a resume of one grid
    assert computation_hash(apply_overrides(cfg, {"train.lr": cfg.train.lr * 2})) != computation_hash(cfg)


def legacy_report(root, name, cfg):
    """A report directory holding one cell finished before results recorded their data's
    fingerprint and portable hash (a trial result with its metrics only)."""
    (root / "grid.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text("name: old\n")
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(cfg))
    (run / "trial_result.json").write_text(json.dumps({"config_hash": "old", "final": {"test/ndcg@10": 0.5}}))
    (run / "history.json").write_text("[]")


def test_a_legacy_cell_is_matched_by_the_data_its_config_names_and_rekeyed(tmp_path):
    old = apply_overrides(load_config(None), {"name": "ablate-old-cell", "results_dir": str(tmp_path / "a")})
    legacy_report(tmp_path / "old", "cell", old)
    assert source_index([tmp_path / "old"]) == {
        (computation_hash(old), data_fingerprint_of(old)): (tmp_path / "old", "cell")
    }
    new = apply_overrides(old, {"name": "ablate-new-other", "results_dir": str(tmp_path / "b")})
    other = apply_overrides(new, {"train.seed": old.train.seed + 1})
    report = tmp_path / "new"
    reused = reuse_cells(report, [("other", new), ("third", other)], [tmp_path / "old"])
    assert reused == {"other": {"report": str(tmp_path / "old"), "cell": "cell"}}  # not the other seed
    stored = read_trial_result(report / "runs" / "other", new)
    assert stored is not None and stored["final"] == {"test/ndcg@10": 0.5}
    assert not (report / "runs" / "third").exists()
    # the grid's own finished cell is never replaced
    assert reuse_cells(report, [("other", new)], [tmp_path / "old"]) == {}


def test_a_source_that_is_no_report_directory_is_refused(tmp_path):
    with pytest.raises(ReuseError, match=r"no grid.yaml\) nor a grid's results directory \(no runs/\)"):
        check_sources([tmp_path])
    (tmp_path / "runs").mkdir()  # a grid still running, or stopped before its report
    check_sources([tmp_path])


def test_a_grid_not_reported_yet_lends_its_finished_cells_with_their_outcomes(tmp_path):
    """A grid killed before its report has runs/ but no grid.yaml and no report-level outcomes/:
    its finished cells are reused all the same, the per-user outcomes from the run directory."""
    cfg = apply_overrides(
        load_config(None), {"name": "ablate-running-cell", "results_dir": str(tmp_path / "a")}
    )
    running = tmp_path / "running"
    run = running / "runs" / "cell"
    (run / "outcomes").mkdir(parents=True)
    (run / "config.yaml").write_text(config_to_yaml(cfg))
    stored = {"config_hash": "x", "data": data_fingerprint_of(cfg), "final": {"test/ndcg@10": 0.25}}
    (run / "trial_result.json").write_text(json.dumps(stored))
    (run / "outcomes" / "test.parquet").write_bytes(b"per-user outcomes")
    (running / "runs" / "unfinished").mkdir()  # no trial result: not offered
    new = apply_overrides(cfg, {"name": "ablate-new-cell", "results_dir": str(tmp_path / "b")})
    report = tmp_path / "new"
    assert reuse_cells(report, [("cell", new)], [running]) == {
        "cell": {"report": str(running), "cell": "cell"}
    }
    assert read_trial_result(report / "runs" / "cell", new)["final"] == {"test/ndcg@10": 0.25}
    assert (report / "runs" / "cell" / "outcomes" / "test.parquet").read_bytes() == b"per-user outcomes"


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_a_grid_reuses_the_cells_another_grid_finished(tmp_path, ray_cluster, capsys):
    data = write_random_ratings(tmp_path / "data")
    results = tmp_path / "results"
    first = grid_file(tmp_path, "first", data, [{"backbone": "hstu", "variant": "item_only"}])
    assert main(["ablate", str(first), "--results-dir", str(results)]) == 0
    source = results / "ablations" / "first"

    rows = [
        {"backbone": "hstu", "variant": "item_only"},  # the same computation: reused
        {"backbone": "hstu", "variant": "item_only", "label": "lr2", "overrides": {"train.lr": 0.0037}},
    ]
    second = grid_file(tmp_path, "second", data, rows)
    capsys.readouterr()
    assert main(["ablate", str(second), "--results-dir", str(results), "--reuse-from", str(source)]) == 0
    out = capsys.readouterr().out
    assert "reused 1 finished cell(s)" in out, out
    report = results / "ablations" / "second"
    assert len(finished_cells(report)) == 2
    reused = report / "runs" / "hstu__item_only__mt__seed0"
    assert not list(reused.glob("*.pt"))  # copied, not trained
    assert len(list((report / "runs").glob("*lr2*/*.pt"))) >= 1  # the other cell trained
    stored = json.loads((reused / "trial_result.json").read_text())
    assert stored["reused_from"]["cell"] == "hstu__item_only__mt__seed0"
    meta = json.loads((report / "meta.json").read_text())
    assert list(meta["reused"]) == ["hstu__item_only__mt__seed0"]
    assert (report / "outcomes" / "hstu__item_only__mt__seed0" / "test.parquet").is_file()

    a = pd.read_csv(source / "results.csv").set_index("row")
    b = pd.read_csv(report / "results.csv").set_index("row")
    assert b.loc["hstu/item_only", "test/ndcg@10"] == a.loc["hstu/item_only", "test/ndcg@10"]
    assert (b["status"] == "ok").all()


def test_a_variant_without_adaptive_weights_is_the_same_computation_whatever_the_weighter():
    """The weighter section is read only by variants with adaptive weights: for the others it
    is no part of the identity, so their cells stay reusable when the defaults' weighter changes."""
    from unigrf.run_identity import identity_hash

    for variant in ("item_only", "retrieval_only", "ranking_only", "two_stage", "wo_weighter", "wo_both"):
        cfg = apply_overrides(load_config(None), {"train.variant": variant})
        other = apply_overrides(cfg, {"weighter.kind": "loss_ratio", "weighter.temperature": 0.2})
        assert computation_hash(other) == computation_hash(cfg) and identity_hash(other) == identity_hash(cfg)
    for variant in ("unigrf", "wo_enhancer"):
        cfg = apply_overrides(load_config(None), {"train.variant": variant})
        other = apply_overrides(cfg, {"weighter.kind": "loss_ratio"})
        assert computation_hash(other) != computation_hash(cfg) and identity_hash(other) != identity_hash(cfg)


def test_a_cell_recorded_under_an_earlier_identity_rule_is_recognised_by_its_stored_config(tmp_path):
    """A finished cell whose stored hashes are those of an earlier rule (here: made up) counts as
    finished when the config it stored (run.json or config.yaml) is the same computation now,
    and its data is the same; any other config or data runs again."""
    cfg = apply_overrides(
        load_config(None), {"name": "cell", "results_dir": str(tmp_path), "train.variant": "item_only"}
    )
    run = tmp_path / "runs" / "cell"
    run.mkdir(parents=True)
    stored = {"config_hash": "earlier", "portable_hash": "earlier", "data": data_fingerprint_of(cfg),
              "final": {"test/ndcg@10": 0.5}}  # fmt: skip
    (run / "trial_result.json").write_text(json.dumps(stored))
    assert read_trial_result(run, cfg) is None  # no stored config: nothing to recompute from
    (run / "config.yaml").write_text(config_to_yaml(apply_overrides(cfg, {"weighter.kind": "grad_norm"})))
    assert read_trial_result(run, cfg)["final"] == {"test/ndcg@10": 0.5}  # the weighter is unread here
    assert read_trial_result(run, apply_overrides(cfg, {"train.lr": cfg.train.lr * 2})) is None
    (run / "trial_result.json").write_text(json.dumps({**stored, "data": "other data"}))
    assert read_trial_result(run, cfg) is None


def test_a_copy_of_a_copy_still_names_the_grid_that_trained_the_cell(tmp_path):
    """A report re-written from its own archive copies every cell from itself: each cell's
    `reused_from` names that copy, and `trained_in` keeps the grid that trained it."""
    cfg = apply_overrides(load_config(None), {"name": "ablate-a-cell", "results_dir": str(tmp_path / "a")})

    def lend(source, stored):
        run = source / "runs" / "cell"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(config_to_yaml(cfg))
        (run / "trial_result.json").write_text(json.dumps(stored))

    stored = {"config_hash": "x", "data": data_fingerprint_of(cfg), "final": {"test/ndcg@10": 0.25}}
    lend(tmp_path / "trained", stored)
    first, second = tmp_path / "first", tmp_path / "second"
    reuse_cells(first, [("cell", cfg)], [tmp_path / "trained"])
    reuse_cells(second, [("cell", cfg)], [first])
    copied = json.loads((second / "runs" / "cell" / "trial_result.json").read_text())["reused_from"]
    assert copied == {
        "report": str(first),
        "cell": "cell",
        "trained_in": {"report": str(tmp_path / "trained"), "cell": "cell"},
    }
    third = tmp_path / "third"
    reuse_cells(third, [("cell", cfg)], [second])
    again = json.loads((third / "runs" / "cell" / "trial_result.json").read_text())["reused_from"]
    assert again["report"] == str(second) and again["trained_in"] == copied["trained_in"]
    first_copy = json.loads((first / "runs" / "cell" / "trial_result.json").read_text())["reused_from"]
    assert "trained_in" not in first_copy  # a direct copy: `report` is where it was trained
