"""`unigrf archive`: what reports/ commits is small and resumable from another clone — a grid
resumed from an archive, in another results directory with the raw data at another path,
trains only the cells it lacks, and the archive rebuilds the same report."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from raw_fixtures import write_random_ratings as write_ratings
from tiny_configs import TINY_GRID

from unigrf.ablation.archive import ArchiveError, archive, finished_cells
from unigrf.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def grid_file(tmp_path, data_dir):
    grid = {
        "name": "arch",
        "description": "archive test grid",
        "overrides": TINY_GRID,
        "seeds": 1,
        "datasets": [
            {"name": "mt", "overrides": {"data.dataset": "movietweetings", "data.data_dir": str(data_dir)}}
        ],
        "rows": [{"backbone": "hstu", "variant": "unigrf"}, {"backbone": "hstu", "variant": "item_only"}],
        "reference": "hstu/item_only",
        "metrics": ["test/ndcg@10", "test/auc"],
    }
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_a_grid_resumed_from_its_archive_elsewhere_trains_only_the_missing_cells(
    tmp_path, ray_cluster, capsys
):
    first = write_ratings(tmp_path / "clone1" / "data")
    results = tmp_path / "clone1" / "results"
    assert main(["ablate", str(grid_file(tmp_path / "clone1", first)), "--results-dir", str(results)]) == 0
    source = results / "ablations" / "arch"
    assert len(finished_cells(source)) == 2 and list(source.rglob("*.pt"))  # checkpoints there

    committed = tmp_path / "repo" / "reports" / "arch-mt"
    assert main(["archive", str(source), str(committed)]) == 0
    assert finished_cells(committed) == finished_cells(source)
    assert not list(committed.rglob("*.pt")) and not (committed / "ray").exists()
    assert not list(committed.rglob("events.out.tfevents*"))
    assert (committed / "outcomes").is_dir()
    # the archive alone rebuilds the report (per-user intervals included)
    report = (source / "report.md").read_text()
    (committed / "report.md").unlink()
    assert main(["report", str(committed), "--quiet"]) == 0
    assert (committed / "report.md").read_text() == report

    # a fresh clone: the same data at another path, another results directory, one more seed
    second = tmp_path / "clone2" / "data"
    second.parent.mkdir()
    shutil.copytree(first, second)
    results2 = tmp_path / "clone2" / "results"
    restored = results2 / "ablations" / "arch"
    assert main(["archive", str(committed), str(restored)]) == 0
    kept = {p: p.read_bytes() for p in restored.glob("runs/*/trial_result.json")}
    grid2 = grid_file(tmp_path / "clone2", second)
    capsys.readouterr()
    assert main(["ablate", str(grid2), "--results-dir", str(results2), "--resume", "--seeds", "2"]) == 0
    assert {p: p.read_bytes() for p in kept} == kept  # the archived cells were not trained again
    assert not list(restored.glob("runs/*seed0/*.pt"))  # ...nor given checkpoints
    assert len(list(restored.glob("runs/*seed1/*.pt"))) == 2  # only the missing seed trained
    table = pd.read_csv(restored / "results.csv")
    assert len(table) == 4 and (table["status"] == "ok").all()

    # other data at that path is not the same cell: refused (not mixed, not silently kept)
    changed = write_ratings(tmp_path / "clone3" / "data", seed=1)
    results3 = tmp_path / "clone3" / "results"
    assert main(["archive", str(committed), str(results3 / "ablations" / "arch")]) == 0
    capsys.readouterr()
    grid3 = grid_file(tmp_path / "clone3", changed)
    assert main(["ablate", str(grid3), "--results-dir", str(results3), "--resume"]) == 2
    assert "ran under another config" in capsys.readouterr().err
    assert not list((results3 / "ablations" / "arch").rglob("*.pt"))


def test_archive_refuses_what_is_not_a_report_and_what_it_did_not_make(tmp_path):
    with pytest.raises(ArchiveError, match="not an ablation report directory"):
        archive(tmp_path, tmp_path / "out")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "grid.yaml").write_text("name: x\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ArchiveError, match="is not a report directory"):
        archive(tmp_path / "src", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["archive", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2


def test_a_finished_cell_is_known_by_what_it_computed_not_where_its_files_lie():
    from unigrf.config import load_config
    from unigrf.run_identity import identity_hash, portable_hash

    base = load_config(None, ["data.dataset=ml-100k", "data.data_dir=/a/ml-100k", "results_dir=/r1"])
    moved = load_config(None, ["data.dataset=ml-100k", "data.data_dir=/b/ml-100k", "results_dir=/r2"])
    longer = load_config(
        None, ["data.dataset=ml-100k", "data.data_dir=/a/ml-100k", "results_dir=/r1", "train.epochs=7"]
    )
    assert portable_hash(base) == portable_hash(moved)
    assert portable_hash(base) != portable_hash(longer)  # a finished result depends on the budget
    assert identity_hash(base) == identity_hash(longer)  # a resumed run may train longer
