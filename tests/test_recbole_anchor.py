"""benchmarks/recbole_anchor.py without RecBole (not a project dependency): the atomic files it
gives RecBole (the project's users, items and order; positions as timestamps), the config it
generates, the parsing of RecBole's log, and the checks around the run."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raw_fixtures import fixtures_dir

from unigrf.config import load_config
from unigrf.data.sequences import SequenceData
from unigrf.training.prepared import load_data

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ra(benchmark_module):
    return benchmark_module("recbole_anchor")


def per_user(frame) -> dict[int, list]:
    """The .inter rows in file order, grouped by user: [(item, rating, timestamp), ...]."""
    out: dict[int, list] = {}
    for u, i, r, t in frame.itertuples(index=False):
        out.setdefault(int(u), []).append((int(i), float(r), float(t)))
    return out


def test_fixture_through_the_project_keeps_ties_in_file_order(ra, tmp_path):
    """The ml-100k fixture read by the project's prepare: user "4" (2 interactions) is gone,
    user "3"'s three items share one timestamp and keep the file's order 30, 10, 20."""
    cfg = load_config(
        None,
        ["data.dataset=ml-100k", f"data.data_dir={fixtures_dir() / 'ml-100k'}", f"results_dir={tmp_path}"],
    )
    data = load_data(cfg)
    path = ra.write_atomic(data, tmp_path / "atomic", "fx")
    assert path == tmp_path / "atomic" / "fx" / "fx.inter"
    assert path.read_text().splitlines()[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    rows = per_user(ra.read_atomic(path))
    # items numbered by first appearance: 10->1, 20->2, 30->3, 5->4, 21->5, 40->6, 22->7
    assert rows == {
        0: [(4, 2.0, 0.0), (1, 4.0, 1.0), (3, 5.0, 2.0), (6, 4.0, 3.0)],  # 10 and 30 tied at t=100
        1: [(2, 3.0, 0.0), (5, 1.0, 1.0), (7, 5.0, 2.0)],  # 20 and 21 tied at t=50
        2: [(3, 4.0, 0.0), (1, 5.0, 1.0), (2, 2.0, 2.0)],  # 30, 10, 20 all at t=10
    }
    assert ra.data_counts(data) == {"users": 3, "items": 7, "interactions": 10, "train_targets": 1}


def test_amazon_mi_atomic_file_is_the_projects_data(ra, amazon_mi_dir, tmp_path):
    """Real data (10k rows, prepared without Ray): the .inter holds exactly the project's
    sequences — SPEC §3's counts — and each user's timestamps are 0..n-1."""
    data = ra.project_data("amazon-mi", tmp_path)
    frame = ra.read_atomic(ra.write_atomic(data, tmp_path / "atomic", "ami"))
    counts = ra.data_counts(data)
    assert counts["users"] == 1429 and counts["items"] == 900 and counts["interactions"] == 10261
    assert frame["user_id:token"].nunique() == 1429 and frame["item_id:token"].nunique() == 900
    assert len(frame) == 10261
    users = frame["user_id:token"].to_numpy()
    assert np.all(np.diff(users) >= 0)  # users in order, each user's rows contiguous
    np.testing.assert_array_equal(frame["item_id:token"].to_numpy(), data.items)
    np.testing.assert_array_equal(frame["rating:float"].to_numpy(), data.ratings)
    positions = frame["timestamp:float"].to_numpy()
    expected = np.concatenate([np.arange(n) for n in data.lengths])
    np.testing.assert_array_equal(positions, expected)
    # RecBole trains on every prefix: one target per training item after the first
    assert counts["train_targets"] == int((data.lengths - 3).sum())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(1, 6), st.integers(0, 2)), min_size=3, max_size=12),
        min_size=1,
        max_size=6,
    )
)
def test_any_sort_by_user_and_timestamp_gives_back_the_projects_order(ra, users):
    """Timestamps with many ties (0..2) in the project's data; in the .inter file each user's
    timestamps are distinct, so even an unstable sort by (user, timestamp) — what RecBole's
    sort may be — reproduces the project's order exactly."""
    data = SequenceData.from_arrays(
        [np.array([i for i, _ in u]) for u in users],
        [np.full(len(u), 4.0) for u in users],
        [np.array(sorted(t for _, t in u)) for u in users],
    )
    frame = ra.atomic_frame(data)
    shuffled = frame.sample(frac=1.0, random_state=0)
    order = np.lexsort((shuffled["timestamp:float"].to_numpy(), shuffled["user_id:token"].to_numpy()))
    np.testing.assert_array_equal(shuffled["item_id:token"].to_numpy()[order], data.items)
    for u in range(data.num_users):
        ts = frame.loc[frame["user_id:token"] == u, "timestamp:float"].to_numpy()
        np.testing.assert_array_equal(ts, np.arange(data.lengths[u]))


def test_config_is_spec_protocol(ra, tmp_path):
    c = ra.recbole_config("x", tmp_path / "d", tmp_path / "s", epochs=4, max_len=200, seed=3, stopping_step=5)
    assert c["eval_args"] == {
        "split": {"LS": "valid_and_test"},
        "group_by": "user",
        "order": "TO",
        "mode": "full",
    }
    assert c["loss_type"] == "CE" and c["train_neg_sample_args"] is None
    assert c["MAX_ITEM_LIST_LENGTH"] == 200 and c["valid_metric"] == "NDCG@10"
    assert (c["epochs"], c["seed"], c["stopping_step"], c["use_gpu"], c["worker"]) == (4, 3, 5, False, 0)
    assert c["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert c["data_path"] == str(tmp_path / "d") and c["checkpoint_dir"] == str(tmp_path / "s")
    assert ra.recbole_config("x", "d", "s", epochs=1, extra={"hidden_size": 50})["hidden_size"] == 50


def test_set_overrides_are_yaml(ra):
    assert ra.parse_sets(["train_batch_size=256", "hidden_dropout_prob=0.2", "topk=[10, 20]"]) == {
        "train_batch_size": 256,
        "hidden_dropout_prob": 0.2,
        "topk": [10, 20],
    }
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        ra.parse_sets(["train_batch_size"])


# --------------------------------------------------------------------------------------------
# RecBole's log
# --------------------------------------------------------------------------------------------

# Captured from a RecBole 1.2.1 log file (Amazon MI, 3 epochs; metric lines shortened to 10
# and 50, the model printout and the config dump left out).
LOG = """\
Sun 06 Dec 2026 21:25:39 INFO  unigrf_amazon_mi
The number of users: 1430
Average actions of users: 7.1805458362491255
The number of items: 901
Average actions of items: 11.401111111111112
The number of inters: 10261
The sparsity of the dataset: 99.20360438673424%
Remain Fields: ['user_id', 'item_id', 'timestamp']
Sun 06 Dec 2026 21:25:40 INFO  FLOPs: 4983464.0
Sun 06 Dec 2026 21:27:03 INFO  epoch 0 training [time: 83.25s, train loss: 20.4406]
Sun 06 Dec 2026 21:27:05 INFO  epoch 0 evaluating [time: 2.17s, valid_score: 0.008332]
Sun 06 Dec 2026 21:27:05 INFO  valid result: \nhit@10 : 0.017495    hit@50 : 0.079776    ndcg@10 : 0.008332    ndcg@50 : 0.021289    mrr@10 : 0.005614
Sun 06 Dec 2026 21:27:05 INFO  Saving current: /tmp/recbole-anchor-x/saved/SASRec-Dec-06-2026_21-20-54.pth
Sun 06 Dec 2026 21:28:22 INFO  epoch 1 training [time: 77.12s, train loss: 20.3257]
Sun 06 Dec 2026 21:28:24 INFO  epoch 1 evaluating [time: 2.00s, valid_score: 0.013671]
Sun 06 Dec 2026 21:28:24 INFO  valid result: \nhit@10 : 0.027992    hit@50 : 0.092372    ndcg@10 : 0.013671    ndcg@50 : 0.027121    mrr@10 : 0.009479
Sun 06 Dec 2026 21:28:24 INFO  Saving current: /tmp/recbole-anchor-x/saved/SASRec-Dec-06-2026_21-20-54.pth
Sun 06 Dec 2026 21:29:40 INFO  epoch 2 training [time: 75.5s, train loss: 20.1000]
Sun 06 Dec 2026 21:29:42 INFO  epoch 2 evaluating [time: 1.98s, valid_score: 0.011]
Sun 06 Dec 2026 21:29:42 INFO  valid result: \nhit@10 : 0.02    hit@50 : 0.09    ndcg@10 : 0.011    ndcg@50 : 0.025    mrr@10 : 0.008
Sun 06 Dec 2026 21:29:45 INFO  Loading model structure and parameters from /tmp/recbole-anchor-x/saved/SASRec-Dec-06-2026_21-20-54.pth
Sun 06 Dec 2026 21:29:45 INFO  best valid : OrderedDict([('hit@10', np.float64(0.027992)), ('hit@50', np.float64(0.092372)), ('ndcg@10', np.float64(0.013671)), ('ndcg@50', np.float64(0.027121)), ('mrr@10', np.float64(0.009479))])
Sun 06 Dec 2026 21:29:45 INFO  test result: OrderedDict([('hit@10', np.float64(0.011896)), ('hit@50', np.float64(0.062281)), ('ndcg@10', np.float64(0.005355)), ('ndcg@50', np.float64(0.016006)), ('mrr@10', np.float64(0.003376))])
""".replace("\\n", "\n")


def test_parse_log(ra):
    log = ra.parse_log(LOG)
    assert log.counts == {"users": 1430, "items": 901, "inters": 10261}
    assert log.epoch_eval_s == [2.17, 2.0, 1.98]
    assert log.epoch_train_s == [83.25, 77.12, 75.5]
    assert log.train_loss == [20.4406, 20.3257, 20.1]
    assert [v["epoch"] for v in log.valid] == [0, 1, 2]
    assert log.valid[1]["metrics"] == {
        "hit@10": 0.027992,
        "hit@50": 0.092372,
        "ndcg@10": 0.013671,
        "ndcg@50": 0.027121,
        "mrr@10": 0.009479,
    }
    assert log.best_epoch == 1 and log.best_valid == log.valid[1]["metrics"]
    assert log.test == {
        "hit@10": 0.011896,
        "hit@50": 0.062281,
        "ndcg@10": 0.005355,
        "ndcg@50": 0.016006,
        "mrr@10": 0.003376,
    }
    assert log.stopped_at is None


def test_parse_colored_stdout_and_older_reprs(ra):
    """RecBole's stdout colours its keys; a NumPy 1 or dict repr has bare floats."""
    colored = (
        "\x1b[1;32mepoch 0 training\x1b[0m [\x1b[1;34mtime\x1b[0m: 1.50s, \x1b[1;34mtrain loss\x1b[0m: 9.0000]\n"
        "\x1b[1;32mepoch 0 evaluating\x1b[0m [\x1b[1;34mtime\x1b[0m: 0.50s, \x1b[1;34mvalid_score\x1b[0m: 0.100000]\n"
        "\x1b[1;34mvalid result\x1b[0m: \nhit@10 : 0.2    ndcg@10 : 0.1\n"
        "\x1b[1;33mbest valid \x1b[0m: {'hit@10': 0.2, 'ndcg@10': 0.1}\n"
        "\x1b[1;33mtest result\x1b[0m: OrderedDict([('hit@10', 0.25), ('ndcg@10', 1.5e-01)])\n"
    )
    log = ra.parse_log(colored)
    assert log.epoch_train_s == [1.5] and log.best_epoch == 0
    assert log.test == {"hit@10": 0.25, "ndcg@10": 0.15}


def test_early_stop_and_the_best_epoch_rule(ra):
    """RecBole keeps the last epoch whose score is >= every earlier one (a tie moves it later)."""
    lines = []
    for epoch, score in enumerate([0.1, 0.3, 0.3, 0.2]):
        lines += [
            f"x INFO  epoch {epoch} evaluating [time: 1.00s, valid_score: {score}]",
            "x INFO  valid result: ",
            f"ndcg@10 : {score}    hit@10 : {epoch}",
        ]
    lines += [
        "x INFO  Finished training, best eval result in epoch 2",
        "x INFO  best valid : OrderedDict([('ndcg@10', 0.3), ('hit@10', 2.0)])",
        "x INFO  test result: OrderedDict([('ndcg@10', 0.25)])",
    ]
    log = ra.parse_log("\n".join(lines))
    assert log.best_epoch == 2 and log.stopped_at == 2


def test_unfinished_or_inconsistent_log_is_an_error(ra):
    unfinished = LOG.split("Sun 06 Dec 2026 21:29:45 INFO  best valid")[0]
    with pytest.raises(ValueError, match="no test result"):
        ra.parse_log(unfinished)
    with pytest.raises(ValueError, match="not that of epoch 1"):
        ra.parse_log(LOG.replace("('hit@10', np.float64(0.027992))", "('hit@10', np.float64(0.5))"))


def test_run_summary_maps_to_quality_columns(ra):
    log = ra.parse_log(LOG)
    config = ra.recbole_config("x", "d", "s", epochs=3)
    run = ra.RecBoleRun("amazon-mi", 0, config, log, {"users": 1429}, 250.0)
    assert run.quality == {
        "test/hr@10": 0.011896,
        "test/hr@50": 0.062281,
        "test/ndcg@10": 0.005355,
        "test/ndcg@50": 0.016006,
    }  # no MRR: RecBole's is cut at k
    row = run.quality_row("python benchmarks/recbole_anchor.py ...")
    assert (row["system"], row["seed"], row["epochs"], row["best_epoch"]) == ("RecBole SASRec (CE)", 0, 3, 1)
    assert row["test/ndcg@10"] == 0.005355 and row["status"] == "ok"
    summary = json.loads(json.dumps(run.summary()))
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 3 and summary["max_len"] == 50
    assert summary["s_per_epoch"] == pytest.approx((83.25 + 77.12 + 75.5) / 3)


def test_counts_must_match_the_project(ra):
    project = {"users": 1429, "items": 900, "interactions": 10261, "train_targets": 5974}
    ra.check_counts({"users": 1430, "items": 901, "inters": 10261}, project)
    with pytest.raises(RuntimeError, match="RecBole read"):
        ra.check_counts({"users": 1430, "items": 901, "inters": 10200}, project)


# --------------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------------


def test_an_existing_directory_that_is_not_the_env_is_left_alone(ra, tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="no bin/python"):
        ra.ensure_env(tmp_path / "env", verbose=False)
    assert (tmp_path / "env" / "keep.txt").read_text() == "mine"


def test_a_failed_build_leaves_nothing_and_installs_torch_first(ra, tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (tmp_path / "env" / "bin").mkdir(parents=True)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if cmd[-1] == "recbole==1.2.1":
            return subprocess.CompletedProcess(cmd, 1, "", "no matching distribution")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(ra.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="recbole==1.2.1 failed"):
        ra.ensure_env(tmp_path / "env", verbose=False)
    assert not (tmp_path / "env").exists()
    assert [c[-1] for c in calls[1:]] == ["torch==2.13.0", "recbole==1.2.1"]
