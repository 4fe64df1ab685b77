"""benchmarks/library_ab.py: seeds parsed as written, the old-against-new summary equal to
scipy's paired tests, and end to end: one checkout against itself trains identical runs (zero
difference on every seed), written to one CSV; a second call reads them instead of training
again, unless the checkout's commit is no longer the one that trained them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from unigrf.provenance import git_commit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ab(benchmark_module):
    return benchmark_module("library_ab")


def test_seeds_are_ranges_and_lists(ab):
    assert ab.parse_seeds("0-4,7,9") == [0, 1, 2, 3, 4, 7, 9]
    assert ab.parse_seeds("3, 1-2, 3") == [3, 1, 2]
    for bad in ("", "a", "5-2", "1-x"):
        with pytest.raises(Exception, match="--seeds"):
            ab.parse_seeds(bad)


def test_summary_is_scipys_paired_test(ab):
    rng = np.random.default_rng(0)
    old = rng.normal(0.05, 0.004, 12)
    new = old + rng.normal(-0.001, 0.002, 12)
    frame = pd.DataFrame(
        [
            {"library": lib, "seed": s, "test/ndcg@10": v[s]}
            for lib, v in (("old", old), ("new", new))
            for s in range(12)
        ]
    )
    out = ab.summarise(frame, "test/ndcg@10")
    assert out["seeds"] == 12
    assert out["paired t p"] == f"{stats.ttest_rel(new, old).pvalue:.3f}"
    assert out["Wilcoxon p"] == f"{stats.wilcoxon(new - old).pvalue:.3f}"
    assert out["new lower"] == f"{int((new < old).sum())}/12"
    assert out["new - old"].startswith(f"{(new - old).mean():+.4f}")
    with pytest.raises(KeyError, match="test/auc"):
        ab.summarise(frame, "test/auc")


TINY = [
    "model.size=tiny",
    "train.epochs=1",
    "train.batch_size=64",
    "loss.num_negatives=16",
    "eval.cascade_top_c=20",
    "data.max_len=20",
]


@pytest.mark.timeout(240)
def test_a_checkout_against_itself_differs_by_nothing(ab, tmp_path, monkeypatch, capsys):
    results = tmp_path / "ab"
    argv = ["--old", str(REPO), "--new", str(REPO), "--seeds", "0-1", "--results-dir", str(results), *TINY]
    assert ab.main(argv) == 0
    frame = pd.read_csv(results / "library_ab.csv")
    assert sorted(zip(frame["library"], frame["seed"])) == [("new", 0), ("new", 1), ("old", 0), ("old", 1)]
    by_seed = frame.pivot(index="seed", columns="library", values="test/ndcg@10")
    assert (by_seed["old"] == by_seed["new"]).all()  # same code, same seed: the same run on CPU
    assert by_seed["old"].nunique() == 2  # ... and the seeds are different runs
    printed = capsys.readouterr().out
    assert "| test/ndcg@10 | 2 |" in printed and "0/2" in printed

    # finished runs are read back, not trained again: no training may start now
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ab, "launch", no_training)
    assert ab.main(argv) == 0
    assert pd.read_csv(results / "library_ab.csv")["commit"].eq(git_commit(REPO)).all()

    # ... but a run that another commit trained is not: the checkout moved, so it trains again
    monkeypatch.setattr(ab, "git_commit", lambda path: "abc1234")
    with pytest.raises(AssertionError, match="trained again"):
        ab.main(argv)


def test_a_path_that_is_not_a_checkout_is_refused(ab, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ab.main(["--old", str(tmp_path), "--new", str(REPO), "--seeds", "0"])
    assert "not a checkout of this project" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ab.main(["--old", str(REPO), "--new", str(REPO), "--config", "configs/nope.yaml"])
    assert "configs/nope.yaml: not found" in capsys.readouterr().err
