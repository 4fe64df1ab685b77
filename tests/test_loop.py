"""The plain training loop (`unigrf.training.loop.fit`) on a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from unigrf.config import SyntheticConfig, load_config, resolved_objective
from unigrf.data.sequences import SequenceData
from unigrf.data.synthetic import generate_synthetic
from unigrf.evaluation import evaluate
from unigrf.evaluation.cascade_score import choose_lambda, format_lambda
from unigrf.evaluation.outcomes import metrics_from_outcomes, read_outcomes
from unigrf.model import build_model
from unigrf.training.loop import (
    CHECKPOINT_FILE,
    TrainContext,
    epoch_batches,
    epoch_users,
    fit,
    load_selected_model,
    objective_value,
    parse_objective,
    resolved_selection,
    steps_per_epoch,
)
from unigrf.training.precision import autocast, autocast_dtype

# A model and data small enough for an epoch in well under a second on one core.
TINY = [
    "model.size=tiny",
    "loss.num_negatives=16",
    "model.dropout=0.1",
    "train.batch_size=32",
    "train.epochs=3",
    "train.lr=0.005",
    "train.keep_checkpoints=10",
    "enhancer.top_k=10",
    "enhancer.m=4",
    "enhancer.warmup_epochs=1",
    "weighter.interval=2",
    "eval.ks=[10]",
    "eval.cascade_top_c=20",
    "data.max_len=20",
]


def tiny_data(num_users: int = 120, num_items: int = 60, seed: int = 0) -> SequenceData:
    """The synthetic generator's log (topics, successors, ratings 1..5), as SequenceData."""
    cfg = SyntheticConfig(num_users=num_users, num_items=num_items, mean_seq_len=15, min_seq_len=5, seed=seed)
    log = generate_synthetic(cfg)  # rows in time order, ties in generation order
    codes, _ = pd.factorize(log["item"])
    log = log.assign(item_id=codes + 1)
    users = [g for _, g in log.groupby("user", sort=False)]
    return SequenceData.from_arrays(
        [g["item_id"].to_numpy() for g in users],
        [g["rating"].to_numpy() for g in users],
        [g["timestamp"].to_numpy() for g in users],
        num_items=int(codes.max()) + 1,
        max_len=20,
        name="tiny",
    )


def tiny_config(*overrides: str):
    return load_config(None, [*TINY, *overrides])


@pytest.fixture(scope="module")
def data() -> SequenceData:
    torch.set_num_threads(1)  # bit-identical reruns, and a fair share of the 2 cores
    return tiny_data()


def local(run_dir: Path, cls: type[TrainContext] | None = None, **kwargs: Any) -> TrainContext:
    """A quiet context keeping every checkpoint (tests inspect them)."""
    return (cls or TrainContext)(run_dir, keep_checkpoints=kwargs.pop("keep", 10), verbose=False, **kwargs)


def without_times(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


class Recorder(TrainContext):
    """Records the epochs it is asked to report."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reported: list[int] = []

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        self.reported.append(int(metrics["epoch"]))
        super().report(metrics, state)


class Crash(RuntimeError):
    pass


class CrashingContext(TrainContext):
    """Dies in `report` of `crash_epoch`, before its checkpoint is written (after its
    TensorBoard scalars are): the worst moment for a resume."""

    crash_epoch = 2

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        if int(metrics["epoch"]) == self.crash_epoch:
            raise Crash(f"killed in epoch {self.crash_epoch}")
        super().report(metrics, state)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ---------------------------------------------------------------------------------------------


def test_epoch_users_shards_a_seeded_permutation():
    full = epoch_users(10, seed=3, epoch=1, rank=0, world_size=1)
    assert sorted(full) == list(range(10))
    assert not np.array_equal(full, epoch_users(10, seed=3, epoch=2, rank=0, world_size=1))
    shards = [epoch_users(10, seed=3, epoch=1, rank=r, world_size=3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded by wrapping: equal batch counts
    assert set(np.concatenate(shards)) == set(range(10))


def test_epoch_batches_cover_every_user_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 200, size=1000)
    users = epoch_users(1000, seed=0, epoch=0, rank=0, world_size=1)
    batches = epoch_batches(users, lengths, 16, seed=0, epoch=0, rank=0)
    assert len(batches) == 63  # ceil(1000 / 16), as DDP's equal step counts need
    assert sorted(np.concatenate(batches)) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    unsorted = sum(len(b) * lengths[b].max() for b in np.array_split(users, range(16, 1000, 16)))
    assert padded < 0.8 * unsorted
    again = epoch_batches(users, lengths, 16, seed=0, epoch=0, rank=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_epoch_users_draws_per_epoch_examples_and_pads_ranks_equally():
    """`sample`: the first per_epoch examples of the epoch's permutation, a different subset
    each epoch; `last`/`all` (per_epoch = all) give exactly the permutation of before."""
    assert np.array_equal(epoch_users(10, 3, 1, 0, 1, per_epoch=10), epoch_users(10, 3, 1, 0, 1))
    first = epoch_users(50, seed=3, epoch=0, rank=0, world_size=1, per_epoch=7)
    assert len(first) == len(set(first)) == 7
    assert set(first) != set(epoch_users(50, seed=3, epoch=1, rank=0, world_size=1, per_epoch=7))
    shards = [epoch_users(50, 3, 0, r, 3, per_epoch=7) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3] and set(np.concatenate(shards)) == set(first)


@pytest.mark.parametrize("scheme", ["all", "last", "sample"])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_window_epochs_give_every_rank_the_same_steps(data, scheme, world_size):
    """Over the windows of a scheme: every rank gets `steps_per_epoch` batches (DDP deadlocks
    otherwise), the ranks together cover each of the epoch's examples, batches are cut from
    length-sorted pools, and an epoch is a function of (seed, epoch, rank) only."""
    import dataclasses

    windows = dataclasses.replace(data, max_len=6)
    ex = windows.train_examples(scheme)
    assert scheme == "last" or len(ex) > windows.num_users  # histories longer than 6: windows
    steps = steps_per_epoch(ex.per_epoch, world_size, 8)
    seen = []
    for rank in range(world_size):
        ids = epoch_users(len(ex), 5, 2, rank, world_size, ex.per_epoch)
        batches = epoch_batches(ids, ex.lengths, 8, 5, 2, rank)
        assert len(batches) == steps
        again = epoch_batches(
            epoch_users(len(ex), 5, 2, rank, world_size, ex.per_epoch), ex.lengths, 8, 5, 2, rank
        )
        assert all(np.array_equal(a, b) for a, b in zip(batches, again))
        seen.append(np.concatenate(batches))
    drawn = epoch_users(len(ex), 5, 2, 0, 1, ex.per_epoch)
    assert set(np.concatenate(seen)) == set(drawn) and len(drawn) == ex.per_epoch


def test_fit_writes_metrics_checkpoints_and_learns(data, tmp_path):
    result = fit(tiny_config("train.epochs=4"), data, local(tmp_path))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["best_epoch"] == result["best_epoch"]
    assert {"val/hr@10", "val/ndcg@10", "val/auc", "val/cascade_ndcg@10"} <= set(saved["val"])
    assert {"test/hr@10", "test/ndcg@10", "test/auc", "test/cascade_ndcg@10"} <= set(saved["test"])
    assert saved["test"]["test/num_users"] == data.num_users
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2, 3]
    assert (tmp_path / "best_model.pt").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        f"epoch_{e:04d}" for e in range(4)
    ]
    # it really learns: the retrieval loss falls, retrieval improves on the first epoch and
    # beats chance (10 of 60 items), the ranking loss falls (val AUC on 120 users is too noisy)
    history = result["history"]
    assert history[-1]["train/loss_retrieval"] < 0.9 * history[0]["train/loss_retrieval"]
    assert result["val"]["val/ndcg@10"] > history[0]["val/ndcg@10"] + 0.03
    assert result["val"]["val/hr@10"] > 1.5 * 10 / data.num_items
    assert history[-1]["train/loss_ranking"] < history[0]["train/loss_ranking"]


@pytest.mark.parametrize("variant", ["unigrf", "two_stage"])
def test_fit_writes_per_user_outcomes_that_recompute_its_metrics(data, tmp_path, variant):
    """`<run dir>/outcomes/{val,test}.parquet` hold the selected weights' per-user outcomes:
    every metric fit reports for val and test is recomputed from them exactly; the cascade's
    λ is validation's argmax and is recorded top-level (JSON Infinity for inf)."""
    cfg = tiny_config("train.epochs=3", f"train.variant={variant}", "train.objective=val/ndcg@10 + val/auc")
    result = fit(cfg, data, local(tmp_path))
    assert set(result["outcomes"]) == {"val", "test"}
    for split in ("val", "test"):
        path = Path(result["outcomes"][split])
        assert path.is_absolute() and path == (tmp_path / "outcomes" / f"{split}.parquet").resolve()
        frame = read_outcomes(path)
        assert list(frame["user"]) == list(range(data.num_users))
        again = metrics_from_outcomes(frame, cfg.eval.ks, cfg.eval.cascade_k)
        assert {f"{split}/{k}": v for k, v in again.items()} == {
            f"{split}/{k}": result[split][f"{split}/{k}"] for k in again
        }
        assert again["cascade_num_users"] > 0 and np.isfinite(again["cascade_ndcg@10"])
    lam = result["cascade_lambda"]
    curve = {
        x: result["val"][f"val/cascade_ndcg@10/lambda_{format_lambda(x)}"] for x in cfg.eval.cascade_lambdas
    }
    assert lam == choose_lambda(curve) and result["val"]["val/cascade_ndcg@10"] == curve[lam]
    assert (
        result["test"]["test/cascade_ndcg@10"]
        == result["test"][f"test/cascade_ndcg@10/lambda_{format_lambda(lam)}"]
    )
    assert "val/cascade_lambda" not in result["val"] and "test/cascade_lambda" not in result["test"]
    saved = json.loads((tmp_path / "metrics.json").read_text())  # Python's json reads Infinity
    assert saved["cascade_lambda"] == lam and saved["outcomes"] == result["outcomes"]
    assert saved["selection"] == ("per_stage" if variant == "two_stage" else "joint")


def test_the_cascade_lambda_never_reads_test(tmp_path):
    """Two datasets that differ only in the test targets' ratings: the same training, the same
    validation and the same λ; only test numbers move."""
    torch.set_num_threads(1)
    a, b = tiny_data(), tiny_data()
    last = b.offsets[1:] - 1  # every user's test interaction
    b.ratings[last] = np.where(b.ratings[last] >= b.like_threshold, 1.0, 5.0)  # likes flipped
    cfg = tiny_config("train.epochs=2")
    ra, rb = fit(cfg, a, local(tmp_path / "a")), fit(cfg, b, local(tmp_path / "b"))
    assert ra["val"] == rb["val"] and ra["cascade_lambda"] == rb["cascade_lambda"]
    assert without_times(ra["history"]) == without_times(rb["history"])
    assert ra["test"]["test/cascade_num_users"] != rb["test"]["test/cascade_num_users"]


def test_keeps_the_best_k_checkpoints_and_the_latest(data, tmp_path):
    # a constant objective: epoch 0 stays the best, so "best 1" and "latest" differ
    cfg = tiny_config("train.epochs=4", "train.objective=val/num_users")
    result = fit(cfg, data, local(tmp_path, keep=1))
    assert result["best_epoch"] == 0
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["epoch_0000", "epoch_0003"]


def test_interrupted_run_resumes_without_losing_or_repeating_an_epoch(data, tmp_path):
    cfg = tiny_config("train.epochs=4")
    reference = fit(cfg, data, local(tmp_path / "ref"))

    run = tmp_path / "run"
    with pytest.raises(Crash):
        fit(cfg, data, local(run, CrashingContext))
    latest = TrainContext(run).load_checkpoint()
    assert latest["epoch"] == CrashingContext.crash_epoch - 1
    # the checkpoint holds exactly the uninterrupted run's optimizer state after that epoch
    ref_state = torch.load(run.parent / "ref/checkpoints/epoch_0001" / CHECKPOINT_FILE, weights_only=False)
    for ref_p, p in zip(ref_state["optimizer"]["state"].values(), latest["optimizer"]["state"].values()):
        assert torch.equal(ref_p["exp_avg"], p["exp_avg"]) and torch.equal(
            ref_p["exp_avg_sq"], p["exp_avg_sq"]
        )
    assert ref_state["weighter"] == latest["weighter"]

    resumed_ctx = local(run, Recorder)
    resumed = fit(cfg, data, resumed_ctx)
    assert resumed_ctx.reported == [2, 3]  # continues at the epoch after the checkpoint
    assert without_times(resumed["history"]) == without_times(reference["history"])
    assert resumed["test"] == reference["test"]
    assert resumed["best_epoch"] == reference["best_epoch"]

    # TensorBoard: the crashed attempt's epoch-2 scalars were purged, each epoch appears once
    tb = scalars(run)
    assert [step for step, _ in tb["val/ndcg@10"]] == [0, 1, 2, 3]
    for tag in ("val/ndcg@10", "train/loss_retrieval", "weights/ranking", "objective"):
        expected = [h[tag] for h in reference["history"]]
        assert [v for _, v in tb[tag]] == pytest.approx(expected, rel=1e-6), tag
    assert tb["test/ndcg@10"] == [(reference["best_epoch"], pytest.approx(reference["test"]["test/ndcg@10"]))]


def test_resumes_a_checkpoint_from_before_per_stage_selection(data, tmp_path):
    """Checkpoints written before `Selection` kept the best-so-far as flat keys (one joint
    selection): the default (one checkpoint) resumes them; per-stage selection refuses them,
    naming the fix."""
    reference = fit(tiny_config("train.epochs=3"), data, local(tmp_path / "ref"))
    run = tmp_path / "run"
    fit(tiny_config("train.epochs=2"), data, local(run))
    path = run / "checkpoints/epoch_0001" / CHECKPOINT_FILE
    state = torch.load(path, weights_only=False)
    (sel,) = state.pop("selections")
    state.update(
        best_objective=sel["best_objective"],
        best_epoch=sel["best_epoch"],
        stale=sel["stale"],
        best_model=sel["best_state"],
    )
    torch.save(state, path)
    with pytest.raises(ValueError, match="train.selection=joint"):
        fit(tiny_config("train.epochs=3", "train.selection=per_stage"), data, local(run))
    resumed = fit(tiny_config("train.epochs=3"), data, local(run))  # auto: one checkpoint
    assert without_times(resumed["history"]) == without_times(reference["history"])
    assert resumed["test"] == reference["test"] and resumed["best_epoch"] == reference["best_epoch"]


def test_a_per_stage_checkpoint_is_refused_under_the_one_checkpoint_default(data, tmp_path):
    """A run written under `per_stage` (two selections) resumed under the default (`auto`: one
    checkpoint) is refused, naming the selection to resume it with; with it, it resumes."""
    per_stage = "train.selection=per_stage"
    reference = fit(tiny_config("train.epochs=3", per_stage), data, local(tmp_path / "ref"))
    run = tmp_path / "run"
    fit(tiny_config("train.epochs=2", per_stage), data, local(run))
    with pytest.raises(
        ValueError, match=r"2 model selection\(s\), this config makes 1.*train\.selection=per_stage"
    ):
        fit(tiny_config("train.epochs=3"), data, local(run))
    resumed = fit(tiny_config("train.epochs=3", per_stage), data, local(run))
    assert without_times(resumed["history"]) == without_times(reference["history"])
    assert resumed["test"] == reference["test"] and resumed["selection"] == "per_stage"


def test_finished_run_is_not_retrained(data, tmp_path):
    cfg = tiny_config("train.epochs=2")
    first = fit(cfg, data, local(tmp_path))
    ctx = local(tmp_path, Recorder)
    again = fit(cfg, data, ctx)
    assert ctx.reported == []
    assert again["test"] == first["test"]


def test_same_seed_identical_other_seed_different(data, tmp_path):
    cfg = tiny_config("train.epochs=2")
    a = fit(cfg, data, local(tmp_path / "a"))
    b = fit(cfg, data, local(tmp_path / "b"))
    c = fit(tiny_config("train.epochs=2", "train.seed=1"), data, local(tmp_path / "c"))
    assert without_times(a["history"]) == without_times(b["history"])
    assert a["test"] == b["test"]
    assert without_times(a["history"]) != without_times(c["history"])


def test_early_stopping(data, tmp_path):
    # val/num_users never improves after epoch 0: stop after `patience` stale epochs
    cfg = tiny_config("train.epochs=10", "train.patience=2", "train.objective=val/num_users")
    result = fit(cfg, data, local(tmp_path))
    assert result["epochs_run"] == 3
    assert result["best_epoch"] == 0
    assert result["val"]["val/num_users"] == data.num_users


def test_objective_parsing():
    assert parse_objective("val/ndcg@10") == [(1.0, "val/ndcg@10")]
    assert parse_objective("0.5*val/ndcg@10 + 0.5*val/auc") == [(0.5, "val/ndcg@10"), (0.5, "val/auc")]
    assert parse_objective("val/hr@10 - 1e-1 * val/logloss") == [(1.0, "val/hr@10"), (-0.1, "val/logloss")]
    metrics = {"val/ndcg@10": 0.2, "val/auc": 0.8, "val/logloss": 0.5}
    assert objective_value("0.5*val/ndcg@10 + 0.5*val/auc", metrics) == pytest.approx(0.5)
    assert objective_value("val/auc - 0.2*val/logloss", metrics) == pytest.approx(0.7)
    for bad in ("test/ndcg@10", "0.5*val/ndcg@10 + 0.5*test/auc", "val/a val/b", "", "0.5*", "val/a +"):
        with pytest.raises(ValueError):
            parse_objective(bad)
    with pytest.raises(KeyError, match="val/mrr"):
        objective_value("val/mrr", metrics)


def test_bad_objective_fails_before_training(data, tmp_path):
    with pytest.raises(ValueError, match="val/"):
        fit(tiny_config("train.objective=test/ndcg@10"), data, local(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_two_stage_keeps_each_stages_best_epoch(data, tmp_path):
    """The retriever and the ranker are separate models: each keeps the weights of the epoch
    its own metric peaked (NDCG@10, AUC), and the test pair is those two checkpoints."""
    cfg = tiny_config("train.variant=two_stage", "train.epochs=6", "train.objective=val/ndcg@10 + val/auc")
    result = fit(cfg, data, local(tmp_path))
    history = result["history"]
    first_best = {m: int(np.argmax([h[m] for h in history])) for m in ("val/ndcg@10", "val/auc")}
    stages = result["stage_best_epochs"]
    assert stages == {"retrieval": first_best["val/ndcg@10"], "ranking": first_best["val/auc"]}
    assert stages["retrieval"] != stages["ranking"]  # this seed: the stages peak apart
    assert result["best_epoch"] == max(stages.values()) == history[-1]["best_epoch"]
    # the composed pair's val metrics: retrieval from the retriever's epoch, ranking from the ranker's
    assert result["val"]["val/ndcg@10"] == history[stages["retrieval"]]["val/ndcg@10"]
    assert result["val"]["val/auc"] == history[stages["ranking"]]["val/auc"]
    assert result["best_objective"] == pytest.approx(result["val"]["val/ndcg@10"] + result["val"]["val/auc"])
    best = torch.load(tmp_path / "best_model.pt", weights_only=False)
    for stage, epoch in (("retriever", stages["retrieval"]), ("ranker", stages["ranking"])):
        ckpt = torch.load(tmp_path / f"checkpoints/epoch_{epoch:04d}" / CHECKPOINT_FILE, weights_only=False)
        for key, value in ckpt["model"].items():
            if key.startswith(stage + "."):
                assert torch.equal(best[key], value), key


def test_per_stage_selection_tests_one_run_at_each_stages_best_epoch(data, tmp_path):
    """`train.selection: per_stage` on UniGRF: the same training as `joint` (selection never
    changes a step), run until both stages are stale, and tested as the pair of snapshots
    retrieval's and ranking's best epochs hold."""
    common = ("train.epochs=12", "train.patience=2", "train.lr=0.02")  # this seed peaks by epoch 6
    joint = fit(tiny_config(*common), data, local(tmp_path / "joint"))  # auto: one checkpoint
    run = tmp_path / "per_stage"
    result = fit(tiny_config(*common, "train.selection=per_stage"), data, local(run))
    assert (result["selection"], joint["selection"]) == ("per_stage", "joint")
    assert json.loads((run / "metrics.json").read_text())["selection"] == "per_stage"

    def trained(history):  # what training and validation produced, not what selection logged
        return [{k: v for k, v in h.items() if k.startswith(("train/", "val/", "weights/"))} for h in history]

    history = result["history"]
    n = min(len(history), joint["epochs_run"])
    assert trained(history[:n]) == trained(joint["history"][:n])
    peaks = {m: int(np.argmax([h[m] for h in history])) for m in ("val/ndcg@10", "val/auc")}
    stages = result["stage_best_epochs"]
    assert stages == {"retrieval": peaks["val/ndcg@10"], "ranking": peaks["val/auc"]}
    assert stages["retrieval"] != stages["ranking"]  # this seed: the stages peak apart
    # it stops once both are stale for `patience` epochs (or at the epoch cap)
    assert result["epochs_run"] == max(stages.values()) + 2 + 1 < 12
    assert result["val"]["val/ndcg@10"] == history[stages["retrieval"]]["val/ndcg@10"]
    assert result["val"]["val/auc"] == history[stages["ranking"]]["val/auc"]
    # the joint checkpoint gives up one stage's best here; per stage keeps both
    assert (
        result["val"]["val/ndcg@10"] + result["val"]["val/auc"]
        > joint["val"]["val/ndcg@10"] + joint["val"]["val/auc"]
    )
    best = torch.load(run / "best_model.pt", weights_only=False)
    for stage, epoch in (("retriever", stages["retrieval"]), ("ranker", stages["ranking"])):
        ckpt = torch.load(run / f"checkpoints/epoch_{epoch:04d}" / CHECKPOINT_FILE, weights_only=False)
        for key, value in ckpt["model"].items():
            assert torch.equal(best[f"{stage}.{key}"], value), key
    # the saved pair, loaded into a fresh model of the config, gives the reported test metrics
    # at the reported λ (the composed pair's, chosen on validation)
    cfg = tiny_config(*common)
    for directory, reported in ((run, result), (tmp_path / "joint", joint)):
        fresh = build_model(cfg, data.num_items, data.num_levels, data.max_len)
        tested = load_selected_model(fresh, directory / "best_model.pt")
        with autocast(torch.device("cpu"), autocast_dtype(cfg.train.precision, torch.device("cpu"))):
            val = evaluate(tested, data, "val", cfg.eval, "cpu")
            test = evaluate(tested, data, "test", cfg.eval, "cpu", cascade_lambda=reported["cascade_lambda"])
        assert val.pop("cascade_lambda") == reported["cascade_lambda"]
        assert {f"val/{k}": float(v) for k, v in val.items()} == reported["val"]
        assert test.pop("cascade_lambda") == reported["cascade_lambda"]
        assert {f"test/{k}": float(v) for k, v in test.items()} == reported["test"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "joint"),  # one checkpoint is the unified model, under the default objective too
        (["train.objective=val/ndcg@10"], "joint"),
        (["train.objective=val/cascade_ndcg@10 + val/auc"], "joint"),
        (["train.selection=joint"], "joint"),
        (["train.selection=per_stage"], "per_stage"),  # two snapshots, only when asked for
        (["train.variant=wo_both"], "joint"),
        (["train.variant=retrieval_only"], "joint"),  # one stage, one selection
        (["train.variant=retrieval_only", "train.selection=per_stage"], "joint"),
        (["train.variant=two_stage", "train.objective=val/ndcg@10 + val/auc"], "per_stage"),  # two models
        (["train.variant=two_stage", "train.selection=joint"], "per_stage"),
    ],
)
def test_auto_selection_is_one_checkpoint_for_one_model(overrides, expected):
    cfg = tiny_config(*overrides)
    assert resolved_selection(cfg, resolved_objective(cfg)) == expected


def test_per_stage_selection_needs_a_term_per_stage_and_ignores_one_stage_models(data, tmp_path):
    for objective, match in (
        ("val/ndcg@10", "no ranking metric"),
        ("val/cascade_ndcg@10 + val/auc", "both stages"),
    ):
        cfg = tiny_config("train.selection=per_stage", f"train.objective={objective}")
        with pytest.raises(ValueError, match=f"{match}.*train.selection: per_stage"):
            fit(cfg, data, local(tmp_path))
    assert not (tmp_path / "checkpoints").exists()
    # a retrieval-only model has one stage: per_stage selects exactly as joint does
    one = fit(tiny_config("train.variant=retrieval_only", "train.epochs=2"), data, local(tmp_path / "a"))
    per = fit(
        tiny_config("train.variant=retrieval_only", "train.epochs=2", "train.selection=per_stage"),
        data,
        local(tmp_path / "b"),
    )
    assert per["test"] == one["test"] and "stage_best_epochs" not in per


def test_two_stage_objective_must_judge_each_stage_alone(data, tmp_path):
    for objective, match in (
        ("val/ndcg@10", "no ranking metric"),
        ("val/cascade_ndcg@10 + val/auc", "both stages"),
    ):
        cfg = tiny_config("train.variant=two_stage", f"train.objective={objective}")
        with pytest.raises(ValueError, match=match):
            fit(cfg, data, local(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("variant", "extra"),
    [
        ("unigrf", []),
        ("unigrf", ["weighter.kind=grad_norm", "weighter.interval=1"]),
        ("unigrf", ["weighter.kind=grad_share", "weighter.interval=1"]),
        ("wo_enhancer", []),
        ("wo_weighter", []),
        ("wo_both", []),
        ("retrieval_only", []),
        ("ranking_only", []),
        ("two_stage", ["train.objective=0.5*val/ndcg@10 + 0.5*val/auc"]),
        ("item_only", []),
    ],
)
def test_every_variant_runs_an_epoch(data, tmp_path, variant, extra):
    cfg = tiny_config(f"train.variant={variant}", "train.epochs=1", "enhancer.warmup_epochs=0", *extra)
    result = fit(cfg, data, local(tmp_path))
    (h,) = result["history"]
    trains_retrieval = variant != "ranking_only"
    trains_ranking = variant not in ("retrieval_only", "item_only")
    assert ("train/loss_retrieval" in h) == trains_retrieval
    assert ("train/loss_ranking" in h) == trains_ranking
    assert h["enhancer/active"] == float(variant in ("unigrf", "wo_weighter"))
    assert np.isfinite(result["test"]["test/ndcg@10"])
    if variant == "item_only":  # no ranking head: its ranking metrics are undefined
        assert np.isnan(result["test"]["test/auc"]) and np.isnan(h["val/auc"])
    else:
        assert all(np.isfinite(v) for v in h.values())
        assert np.isfinite(result["test"]["test/auc"])
    if "weighter.kind=grad_norm" in extra:  # weights measured on the first step already
        assert h["weights/retrieval"] != 1.0
        assert h["weights/retrieval"] + h["weights/ranking"] == pytest.approx(2.0)
    if "weighter.kind=grad_share" in extra:  # the task with the larger gradient keeps weight 1
        assert min(h["weights/retrieval"], h["weights/ranking"]) == 1.0
    for task in ("retrieval", "ranking"):  # the epoch's range of the weights brackets its end value
        if trains_retrieval and trains_ranking:
            assert h[f"weights/{task}_min"] <= h[f"weights/{task}"] <= h[f"weights/{task}_max"]


def test_train_command_parses_overrides_without_a_config(tmp_path, monkeypatch):
    from unigrf import cli
    from unigrf.training import run

    seen = {}
    monkeypatch.setattr(run, "run_training", lambda cfg, **kwargs: seen.update(cfg=cfg, **kwargs))
    assert cli.main(["train", "train.epochs=2", "model.size=tiny", "--results-dir", str(tmp_path)]) == 0
    assert seen["cfg"].train.epochs == 2 and seen["cfg"].model.size == "tiny"
    assert seen["cfg"].results_dir == str(tmp_path)
    assert cli.main(["train", "train.epochs=2", "--workers", "2", "--max-failures", "1"]) == 0
    assert seen["cfg"].train.num_workers == 2 and seen["max_failures"] == 1
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 7\n")
    assert cli.main(["train", str(config), "model.size=tiny"]) == 0
    assert seen["cfg"].train.epochs == 7 and seen["cfg"].model.size == "tiny"


def test_run_training_resumes_and_restarts(data, tmp_path, monkeypatch):
    from unigrf.training import run

    monkeypatch.setattr(run, "load_data", lambda cfg: data)
    cfg = tiny_config("train.epochs=2", f"results_dir={tmp_path}", "name=r")
    first = run.run_training(cfg, verbose=False)
    run_dir = tmp_path / "runs" / "r"
    assert (run_dir / "config.yaml").exists() and (run_dir / "metrics.json").exists()
    longer = run.run_training(
        load_config(None, [*TINY, "train.epochs=3", f"results_dir={tmp_path}", "name=r"]), verbose=False
    )
    assert without_times(longer["history"][:2]) == without_times(first["history"])  # resumed
    fresh = run.run_training(cfg, restart=True, verbose=False)
    assert [h["epoch"] for h in fresh["history"]] == [0, 1]
    assert fresh["test"] == first["test"]


@pytest.mark.parametrize("loss", ["full_softmax", "sampled_softmax", "bce", "gbce"])
def test_every_retrieval_loss_trains(data, tmp_path, loss):
    cfg = tiny_config(f"loss.retrieval={loss}", "train.epochs=2", "train.variant=retrieval_only")
    result = fit(cfg, data, local(tmp_path))
    first, last = (h["train/loss_retrieval"] for h in (result["history"][0], result["history"][-1]))
    assert np.isfinite(first) and last < first  # the retrieval loss falls


def test_lr_warms_up_then_decays():
    from unigrf.training.loop import lr_factor

    cfg = tiny_config("train.warmup_steps=4", "train.lr_schedule=cosine", "train.min_lr_ratio=0.1")
    factors = [lr_factor(step, 20, cfg) for step in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))  # monotone decay
    assert lr_factor(20, 20, cfg) == pytest.approx(0.1)  # min_lr_ratio at the end
    linear = tiny_config("train.lr_schedule=linear")
    assert lr_factor(10, 20, linear) == pytest.approx(0.5)
    assert all(lr_factor(s, 20, tiny_config()) == 1.0 for s in range(25))  # constant


def test_the_learning_rate_schedule_is_applied_and_logged(data, tmp_path):
    cfg = tiny_config("train.lr_schedule=linear", "train.epochs=2", "train.lr=0.004")
    result = fit(cfg, data, local(tmp_path))
    lrs = [h["lr"] for h in result["history"]]
    steps = result["history"][0]["step"]
    assert lrs[0] == pytest.approx(0.004 * (1 - (steps - 1) / (2 * steps)))
    assert lrs[1] < lrs[0]


def test_a_diverging_loss_stops_the_run_naming_epoch_and_step(data, tmp_path, monkeypatch):
    from unigrf.training import loop

    calls = {"n": 0}
    real = loop._LossForward.forward

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:  # the 6th step overall: epoch 1 with 4 steps per epoch
            out["retrieval"] = out["retrieval"] * float("nan")
        return out

    monkeypatch.setattr(loop._LossForward, "forward", poisoned)
    cfg = tiny_config()
    with pytest.raises(loop.TrainingError, match=r"non-finite training loss at epoch 1, step 5"):
        fit(cfg, data, local(tmp_path))
    assert not (tmp_path / "metrics.json").exists()


def test_a_huge_learning_rate_is_caught(data, tmp_path):
    from unigrf.training.loop import TrainingError

    cfg = tiny_config("train.lr=1e3", "train.grad_clip=null")
    with pytest.raises(TrainingError, match=r"non-finite training loss at epoch 0, step \d+ \(retrieval"):
        fit(cfg, data, local(tmp_path))
    assert not (tmp_path / "metrics.json").exists()


def test_an_objective_never_finite_is_refused(data, tmp_path, monkeypatch):
    from unigrf.training import loop, validation

    real = validation.evaluate

    def no_auc(*args, **kwargs):
        out = real(*args, **kwargs)
        out["auc"] = float("nan")  # as when every validation target has one label
        return out

    monkeypatch.setattr(validation, "evaluate", no_auc)
    cfg = tiny_config("train.objective=val/auc", "train.patience=2", "train.epochs=5")
    with pytest.raises(loop.TrainingError, match=r"val/auc.*not finite at any of the 2 epochs"):
        fit(cfg, data, local(tmp_path))
    assert not (tmp_path / "metrics.json").exists()  # test was never read


def test_bf16_training_matches_fp32_within_seed_noise(data, tmp_path):
    """bf16 autocast changes rounding only: after 3 epochs its validation NDCG@10 is within the
    spread that the seed alone causes under fp32."""
    runs = {}
    for precision, seed in (("fp32", 0), ("fp32", 1), ("fp32", 2), ("bf16", 0)):
        cfg = tiny_config(f"train.precision={precision}", f"train.seed={seed}", "enhancer.m=0")
        result = fit(cfg, data, local(tmp_path / f"{precision}{seed}"))
        runs[(precision, seed)] = result["val"]["val/ndcg@10"]
    fp32 = [runs[("fp32", s)] for s in range(3)]
    spread = max(fp32) - min(fp32)
    assert abs(runs[("bf16", 0)] - runs[("fp32", 0)]) <= max(spread, 0.02)
    assert runs[("bf16", 0)] > 0.0
