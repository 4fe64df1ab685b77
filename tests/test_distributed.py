"""Ray Train (`unigrf.training.distributed`) on a tiny synthetic dataset, 1-2 CPU workers.

The reference for every comparison is the plain loop in this process: a 1-worker Ray run of
the same config and seed must reproduce it exactly (same data order, negatives, init), also
after a worker failure or a driver restart in the middle.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from ray.train import UserCallback
from test_loop import scalars, tiny_config, tiny_data, without_times

from unigrf.data.sequences import SequenceData
from unigrf.evaluation import evaluate
from unigrf.evaluation.outcomes import metrics_from_outcomes, read_outcomes
from unigrf.model import build_model
from unigrf.training.distributed import RayTrainContext, build_trainer, run_worker, train_worker
from unigrf.training.loop import CHECKPOINT_FILE, TrainContext, fit, load_selected_model
from unigrf.training.precision import autocast, autocast_dtype

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

CRASH_EPOCH = 1


def write_prepared(data: SequenceData, path: Path) -> Path:
    """The `prepare_dataset` output format (sequences.parquet + meta.json) for `data`."""
    path.mkdir(parents=True, exist_ok=True)
    bounds = zip(data.offsets[:-1], data.offsets[1:])
    rows = [(int(a), int(b)) for a, b in bounds]
    pq.write_table(
        pa.table(
            {
                "user": np.arange(data.num_users, dtype=np.int64),
                "items": [data.items[a:b].tolist() for a, b in rows],
                "ratings": [data.ratings[a:b].tolist() for a, b in rows],
                "timestamps": [data.timestamps[a:b].tolist() for a, b in rows],
            }
        ),
        path / "sequences.parquet",
    )
    meta = {
        "dataset": data.name,
        "num_items": data.num_items,
        "rating_values": data.rating_values.tolist(),
        "like_threshold": data.like_threshold,
        "max_len": data.max_len,
    }
    (path / "meta.json").write_text(json.dumps(meta))
    return path


class ReportLog(UserCallback):
    """A Ray Train `UserCallback` (runs in the controller) appending rank 0's reports to a
    JSON-lines file, so the test sees every report of every attempt."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"metrics": metrics[0], "checkpoint": checkpoint is not None}) + "\n")

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        pass

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []


class FlakyContext(RayTrainContext):
    """Raises in epoch CRASH_EPOCH's report (before anything reaches Ray) the first time only:
    a marker file next to the run directory remembers that the crash happened."""

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        marker = self.run_dir.parent / f"{self.run_dir.name}.crashed"
        if int(metrics["epoch"]) == CRASH_EPOCH and not marker.exists():
            marker.write_text("crashed once")
            raise RuntimeError(f"injected failure in epoch {CRASH_EPOCH}")
        super().report(metrics, state)


def flaky_worker(config: dict[str, Any]) -> dict[str, Any]:
    return run_worker(config, FlakyContext)


class FullDiskContext(RayTrainContext):
    """The disk fills up while epoch CRASH_EPOCH's checkpoint is written (torch.save raises
    ENOSPC after writing part of the file), the first time only."""

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        marker = self.run_dir.parent / f"{self.run_dir.name}.disk-full"
        if int(metrics["epoch"]) != CRASH_EPOCH or state is None or marker.exists():
            return super().report(metrics, state)
        marker.write_text("disk full once")

        def full_disk(obj, f, *args, **kwargs):
            f.write(b"partial")  # (a file object: the writer records the OSError's reason)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with mock.patch.object(torch, "save", full_disk):
            super().report(metrics, state)


def full_disk_worker(config: dict[str, Any]) -> dict[str, Any]:
    return run_worker(config, FullDiskContext)


@pytest.fixture(scope="module")
def ray_pickling(ray_cluster):
    """Ray ships this module's functions and classes to workers by value (`tests/` is not
    importable there)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_cluster
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def data() -> SequenceData:
    torch.set_num_threads(1)  # the Ray workers get one CPU, hence one thread, too
    return tiny_data()


@pytest.fixture(scope="module")
def prepared(data, tmp_path_factory) -> Path:
    return write_prepared(data, tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, Any]:
    """The plain loop, 3 epochs, in this process."""
    run_dir = tmp_path_factory.mktemp("plain")
    return fit(tiny_config(), data, TrainContext(run_dir, verbose=False))


def train(tmp_path: Path, prepared: Path, name: str, *overrides: str, train_fn=None, max_failures: int = 0):
    """(ray.train.Result, ReportLog) of one `TorchTrainer.fit` under `tmp_path`."""
    log = ReportLog(tmp_path / f"{name}.reports.jsonl")
    trainer = build_trainer(
        tiny_config(*overrides),
        tmp_path / "runs" / name,
        str(tmp_path / "ray"),
        name,
        max_failures=max_failures,
        data_dir=prepared,
        train_fn=train_fn,
        callbacks=[log],
        verbose=False,
    )
    return trainer.fit(), log


def test_two_workers_train_and_match_single_process_evaluation(ray_pickling, data, prepared, tmp_path):
    result, log = train(tmp_path, prepared, "two", "train.num_workers=2", "train.epochs=2")
    out = result.return_value
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    assert out["val"]["val/num_users"] == data.num_users  # rank 0 evaluated every user

    # every report reached the controller; the last one carries the test metrics
    reports = log.read()
    assert [r["metrics"]["epoch"] for r in reports] == [0, 1, 1]
    assert [r["checkpoint"] for r in reports] == [True, True, False]
    final = reports[-1]["metrics"]
    assert final["final"] == 1 and final["test/ndcg@10"] == out["test"]["test/ndcg@10"]
    # ...and how the weights were selected, the cascade's λ and rank 0's per-user outcome files
    assert final["selection"] == out["selection"] == "joint"
    assert final["cascade_lambda"] == out["cascade_lambda"]
    assert final["outcomes"] == out["outcomes"]
    for split, path in out["outcomes"].items():
        assert Path(path) == (tmp_path / "runs" / "two" / "outcomes" / f"{split}.parquet").resolve()
        again = metrics_from_outcomes(
            read_outcomes(path), tiny_config().eval.ks, tiny_config().eval.cascade_k
        )
        assert {f"{split}/{k}": v for k, v in again.items()} == {
            f"{split}/{k}": out[split][f"{split}/{k}"] for k in again
        }

    # rank 0 wrote metrics.json, the best model and TensorBoard scalars
    run_dir = tmp_path / "runs" / "two"
    assert json.loads((run_dir / "metrics.json").read_text())["test"] == out["test"]
    tb = scalars(run_dir)
    assert [v for _, v in tb["val/ndcg@10"]] == pytest.approx([h["val/ndcg@10"] for h in out["history"]])
    assert "train/loss_retrieval" in tb and "weights/ranking" in tb and "test/auc" in tb

    # the checkpoint round trip: the latest checkpoint in storage loads into a fresh model,
    # and the best model evaluated here, in one process and at the run's precision (bf16 autocast
    # where `train.precision: auto` finds native bf16), gives the reported test metrics exactly
    cfg = tiny_config()
    with result.checkpoint.as_directory() as path:
        state = torch.load(Path(path) / CHECKPOINT_FILE, weights_only=False)
    assert state["epoch"] == 1 and len(state["history"]) == 2
    model = build_model(cfg, data.num_items, data.num_levels, data.max_len)
    model.load_state_dict(state["model"])
    # UniGRF is tested at one checkpoint (the default), at the λ chosen on validation
    model = load_selected_model(model, run_dir / "best_model.pt")
    cpu = torch.device("cpu")
    with autocast(cpu, autocast_dtype(cfg.train.precision, cpu)):
        test = evaluate(model, data, "test", cfg.eval, "cpu", cascade_lambda=out["cascade_lambda"])
    assert test.pop("cascade_lambda") == out["cascade_lambda"]
    assert {f"test/{k}": float(v) for k, v in test.items()} == out["test"]


def test_worker_failure_resumes_from_the_last_checkpoint(ray_pickling, prepared, reference, tmp_path):
    result, log = train(tmp_path, prepared, "flaky", train_fn=flaky_worker, max_failures=1)
    assert (tmp_path / "runs" / "flaky.crashed").exists()  # the failure did happen
    out = result.return_value
    # the replaced worker group restarted after epoch 0's checkpoint: no epoch lost or repeated,
    # and the same seed gave exactly the plain loop's numbers
    assert [r["metrics"]["epoch"] for r in log.read()] == [0, 1, 2, 2]
    assert without_times(out["history"]) == without_times(reference["history"])
    assert out["test"] == reference["test"]


def test_full_disk_while_checkpointing_keeps_the_last_good_one(ray_pickling, prepared, reference, tmp_path):
    from ray.train import TrainingFailedError

    with pytest.raises(TrainingFailedError, match="No space left on device"):
        train(tmp_path, prepared, "disk", train_fn=full_disk_worker, max_failures=0)
    assert (tmp_path / "runs" / "disk.disk-full").exists()  # the failure did happen
    # the run's storage holds epoch 0's checkpoint only, loadable; nothing of epoch 1
    ckpts = sorted((tmp_path / "ray" / "disk").rglob(CHECKPOINT_FILE))
    assert [p.parent.name for p in ckpts] == ["epoch_0000"], ckpts
    assert torch.load(ckpts[0], weights_only=True)["epoch"] == 0
    # the same command again (space freed) resumes after epoch 0, to the plain loop's numbers
    result, log = train(tmp_path, prepared, "disk", train_fn=train_worker)
    assert [r["metrics"]["epoch"] for r in log.read()] == [0, 1, 2, 2]
    out = result.return_value
    assert without_times(out["history"]) == without_times(reference["history"])
    assert out["test"] == reference["test"]


def test_driver_restart_resumes_the_run(ray_pickling, prepared, reference, tmp_path):
    from ray.train import TrainingFailedError

    with pytest.raises(TrainingFailedError):
        train(tmp_path, prepared, "restart", train_fn=flaky_worker, max_failures=0)
    # a new trainer with the same name and storage: Train V2 reloads the run's checkpoints
    result, log = train(tmp_path, prepared, "restart", train_fn=train_worker)
    assert [r["metrics"]["epoch"] for r in log.read()] == [0, 1, 2, 2]
    out = result.return_value
    assert without_times(out["history"]) == without_times(reference["history"])
    assert out["test"] == reference["test"]
    tb = scalars(tmp_path / "runs" / "restart")
    assert [step for step, _ in tb["val/ndcg@10"]] == [0, 1, 2]
