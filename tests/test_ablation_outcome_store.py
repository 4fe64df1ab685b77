"""Per-user outcomes carried from the runs into the report directory: where a run's files are
found (reported paths, else its run directory), the checked copy, reading them back; and the
runner's bookkeeping around it — each run's model selection and the grid's declaration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from unigrf.ablation.grid import parse_grid
from unigrf.ablation.outcome_store import (
    OUTCOMES_DIR,
    copy_outcomes,
    load_count_model_outcomes,
    load_outcomes,
    outcome_paths,
    write_count_model_outcomes,
)
from unigrf.ablation.runner import declaration, normalise, read_outcome_paths, run_selection
from unigrf.evaluation.outcomes import outcomes_frame, write_outcomes


def frame(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return outcomes_frame(np.arange(n), rng.integers(0, 9, n), rng.integers(0, 2, n), rng.normal(size=n))


def test_a_runs_outcomes_are_found_where_fit_reports_or_writes_them(tmp_path):
    run = tmp_path / "runs" / "hstu__unigrf__toy__seed0"
    write_outcomes(frame(), run / OUTCOMES_DIR / "test.parquet")
    write_outcomes(frame(), run / OUTCOMES_DIR / "val.parquet")
    elsewhere = write_outcomes(frame(seed=1), tmp_path / "elsewhere" / "v.parquet")
    # the trainable's reported paths win; the run directory fills in the rest
    got = outcome_paths({"outcomes": {"val": str(elsewhere)}, "run_dir": str(run)})
    assert got == {"val": elsewhere, "test": run / OUTCOMES_DIR / "test.parquet"}
    assert outcome_paths({"run_dir": str(tmp_path / "nothing")}) == {}
    assert outcome_paths({"outcomes": {"test": str(tmp_path / "gone.parquet")}}) == {}
    table = pd.DataFrame(
        [{"name": "hstu__unigrf__toy__seed0", "run_dir": str(run)}, {"name": "x", "run_dir": None}]
    )
    assert set(read_outcome_paths(table)) == {"hstu__unigrf__toy__seed0"}


def test_copy_checks_each_file_and_reading_back_gives_the_same_frames(tmp_path, capsys):
    good = write_outcomes(frame(), tmp_path / "a" / "test.parquet")
    bad = tmp_path / "b" / "test.parquet"
    bad.parent.mkdir()
    bad.write_text("not parquet")
    report = tmp_path / "report"
    warnings = copy_outcomes(
        report, {"hstu__unigrf__toy__seed0": {"test": good}, "hstu__x__toy__seed0": {"test": bad}}
    )
    assert len(warnings) == 1 and "hstu__x__toy__seed0: test outcomes not copied" in warnings[0]
    assert "warning: hstu__x__toy__seed0" in capsys.readouterr().err
    loaded = load_outcomes(report, ["hstu/unigrf/toy/seed0", "hstu/x/toy/seed0"])
    assert list(loaded) == ["hstu/unigrf/toy/seed0"]
    pd.testing.assert_frame_equal(loaded["hstu/unigrf/toy/seed0"]["test"], frame())
    write_count_model_outcomes(report, "toy", {"val": frame(seed=2), "test": frame(seed=3)})
    floor = load_count_model_outcomes(report, "toy")
    assert set(floor) == {"val", "test"}
    pd.testing.assert_frame_equal(floor["test"], frame(seed=3))
    assert (
        load_outcomes(tmp_path / "no-report", ["c"]) == {}
        and load_count_model_outcomes(report, "other") == {}
    )


def test_the_selection_each_run_used_is_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"selection": "per_stage", "best_epoch": 3}))
    assert run_selection({"selection": "joint", "run_dir": str(run)}) == "joint"  # reported wins
    assert run_selection({"run_dir": str(run)}) == "per_stage"
    assert run_selection({"run_dir": str(tmp_path / "none")}) == "" and run_selection({}) == ""
    spec = parse_grid({"name": "g", "rows": [{"backbone": "hstu", "variant": "unigrf"}], "seeds": 1})
    cell = spec.expand()[0]
    sweep = pd.DataFrame(
        [{"name": "hstu__unigrf__synthetic__seed0", "test/ndcg@10": 0.1, "run_dir": str(run), "error": None}]
    )
    results, _ = normalise(sweep, [cell])
    assert results.loc[0, "selection"] == "per_stage" and results.loc[0, "status"] == "ok"


def test_a_grid_declares_its_seeds_at_its_first_run_only():
    spec = parse_grid({"name": "g", "rows": [{"backbone": "hstu", "variant": "unigrf"}], "seeds": 2})
    first = declaration(spec, None, "2026-12-01T10:00:00+00:00")
    assert first == {
        "at": "2026-12-01T10:00:00+00:00",
        "seeds": [0, 1],
        "rows": ["hstu/unigrf"],
        "datasets": ["synthetic"],
    }
    # a later run (resume, more seeds) keeps the first declaration
    later = declaration(spec.with_seeds(4), {"declared": first}, "2026-12-05T10:00:00+00:00")
    assert later == first
    # a directory from before the record: what was declared is unknown, not "now"
    assert declaration(spec, {"grid": "g"}, "2026-12-05T10:00:00+00:00") is None


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_broken_file_in_a_report_is_named(tmp_path, split):
    from unigrf.evaluation.outcomes import OutcomesError

    path = tmp_path / OUTCOMES_DIR / "hstu__unigrf__toy__seed0" / f"{split}.parquet"
    path.parent.mkdir(parents=True)
    path.write_text("x")
    with pytest.raises(OutcomesError, match=f"{split}.parquet"):
        load_outcomes(tmp_path, ["hstu/unigrf/toy/seed0"])
