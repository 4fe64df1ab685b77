"""Ray Train: the same `fit` in `TorchTrainer` workers (DDP; gloo on CPU, NCCL on GPU).

Driver side, `train_distributed(cfg)`: connect to Ray (`unigrf.ray_utils.init_ray`), prepare the
data once (Ray Data, cached Parquet under `<results_dir>/data/`), build a `TorchTrainer`
(`build_trainer`) and run it. Ray keeps the checkpoints under `<storage_path>/<cfg.name>/`;
TensorBoard files and `metrics.json` go to the run directory `<results_dir>/runs/<cfg.name>/`
(written by rank 0).

Worker side, `train_worker(config)`: load the prepared sequences, wrap Ray's session in a
`RayTrainContext` and call `unigrf.training.loop.fit`, which shards the users per epoch
(`epoch_users`, a DistributedSampler-style seeded permutation), wraps the model in DDP and
evaluates on rank 0. After `fit` returns, every rank reports once more with the test metrics
(`"final": 1`), so Tune and the ablation layer see them.

Fault tolerance (Train V2 semantics):
- a worker that raises is replaced up to `FailureConfig(max_failures)` times, and the new worker
  group restarts `fit` from the latest reported checkpoint (`ray.train.get_checkpoint()`);
- a driver restarted with the same `name` and `storage_path` reloads the run's checkpoint-manager
  snapshot from storage, so `ray.train.get_checkpoint()` again returns the latest checkpoint:
  re-running `unigrf train CONFIG --workers N` resumes; `--restart` deletes both directories.
Because `fit` re-seeds every epoch from (seed, epoch, rank) and the checkpoint carries the model,
optimizer, weighter and history, a resumed run reproduces an uninterrupted one exactly.

On a multi-node cluster `results_dir` (the prepared Parquet) must be on storage every node can
read, and `storage_path` on shared storage (NFS path or `s3://...`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unigrf.compat import dashboard_url, quiet_train_report_log
from unigrf.config import ConfigError, ExperimentConfig, config_from_dict, config_to_dict
from unigrf.data.sequences import SequenceData
from unigrf.training.checkpoint_io import load_reported_checkpoint, write_reported_checkpoint
from unigrf.training.context import TrainContext
from unigrf.training.logs import progress_line
from unigrf.training.loop import fit

if TYPE_CHECKING:  # importing Ray is deferred to the functions that need it
    from ray.train.torch import TorchTrainer

logger = logging.getLogger(__name__)


class RayTrainContext(TrainContext):
    """`fit`'s context inside a Ray Train worker: checkpoints go through Ray's session.

    `report` is called on every rank every epoch (Ray's report is a barrier); only rank 0 hands
    Ray a checkpoint, written to a temporary directory that Ray copies into storage.
    """

    in_epoch_checkpoints = False  # a run resumes from the epochs it reported (unigrf.training.in_epoch)

    def load_checkpoint(self) -> dict[str, Any] | None:
        import ray.train

        return load_reported_checkpoint(ray.train.get_checkpoint())

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        import ray.train

        name = f"epoch_{int(metrics['epoch']):04d}"  # unique per run: each epoch is reported once
        if state is None or not self.is_main:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        else:
            # A write that fails here (a full disk) raises before Ray sees the checkpoint: the
            # temporary directory is removed, and the run's storage keeps its last good one.
            with tempfile.TemporaryDirectory(prefix="unigrf-ckpt-") as tmp:
                write_reported_checkpoint(Path(tmp), state, metrics)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        self.log(progress_line(metrics))

    def log(self, message: str) -> None:
        # Through logging, not print: Train V2 patches print into the root logger *and* tees it
        # to the redirected stdout, so a print would reach the console twice.
        if self.verbose and self.is_main:
            logger.info(message)


# What the last report carries besides numbers, as `fit` returns it: how the tested weights were
# selected ("joint" | "per_stage"), the cascade's λ chosen on validation, and the per-user
# outcome files ({"val": path, "test": path}) the ablation layer collects.
FINAL_PASS_THROUGH = ("selection", "cascade_lambda", "outcomes")


def final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The last report of a run: the best epoch's validation metrics and the test metrics, plus
    `FINAL_PASS_THROUGH` (selection, cascade_lambda, outcomes) where the result has them.

    `objective` is the best validation objective, so a Tune scheduler reading the last result
    sees the run's selected model; `"final": 1` tells it apart from the per-epoch reports."""
    history = result["history"]
    out: dict[str, Any] = {
        "final": 1,
        "epoch": float(history[-1]["epoch"]) if history else -1.0,
        "epochs_run": float(result["epochs_run"]),
        "best_epoch": float(result["best_epoch"]),
        "objective": float(result["best_objective"]),
        **{k: float(v) for k, v in result["val"].items()},
        **{k: float(v) for k, v in result["test"].items()},
    }
    for key in FINAL_PASS_THROUGH:
        if key in result:
            value = result[key]
            out[key] = dict(value) if isinstance(value, dict) else value
    return out


# ---------------------------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------------------------


def run_worker(
    config: dict[str, Any], context_type: type[RayTrainContext] = RayTrainContext
) -> dict[str, Any]:
    """Body of `train_worker`, with the context class as a parameter (tests inject faults
    through a subclass). Returns `fit`'s result (Ray hands rank 0's to `Result.return_value`)."""
    import ray
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(config["cfg"])
    quiet_train_report_log()  # rank 0's progress line says the same in one line
    session = ray.train.get_context()
    rank, world_size = session.get_world_rank(), session.get_world_size()
    device = ray.train.torch.get_device() if cfg.train.use_gpu else torch.device("cpu")
    # One intra-op thread per reserved CPU: workers sharing a node must not oversubscribe it.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))

    data_dir = config.get("data_dir")
    if data_dir is None:  # a caller that did not prepare in the driver (cached after the first)
        from unigrf.data.prepare import prepare_dataset

        data_dir = prepare_dataset(cfg.data, cfg.results_dir)
    data = SequenceData.load(data_dir, max_len=cfg.data.max_len)

    ctx = context_type(
        run_dir=Path(config["run_dir"]),
        device=device,
        rank=rank,
        world_size=world_size,
        keep_checkpoints=cfg.train.keep_checkpoints,
        verbose=bool(config.get("verbose", True)),
    )
    result = fit(cfg, data, ctx)
    ray.train.report(final_metrics(result), checkpoint=None, checkpoint_dir_name="final")
    return result


def train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The per-worker training function of `TorchTrainer`.

    config: {"cfg": config_to_dict(cfg), "run_dir": str, optional "data_dir": the prepared
    dataset directory (else prepared in the worker), optional "verbose": bool}.
    """
    return run_worker(config, RayTrainContext)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def build_trainer(
    cfg: ExperimentConfig,
    run_dir: Path,
    storage_path: str,
    name: str,
    max_failures: int = 0,
    *,
    data_dir: str | Path | None = None,
    train_fn: Any = None,
    callbacks: list[Any] | None = None,
    verbose: bool = True,
) -> TorchTrainer:
    """A `TorchTrainer` running `train_worker` on `cfg.train.num_workers` workers.

    data_dir: the prepared dataset (default: prepared here, in the driver, once; cached).
    train_fn: the per-worker function (default `train_worker`); callbacks: Ray Train
    `UserCallback`s (e.g. Tune's report callback). Paths are made absolute: workers do not share
    the driver's working directory.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from unigrf.ray_utils import resolve_storage_path, worker_resources

    if data_dir is None:
        from unigrf.data.prepare import prepare_dataset

        data_dir = prepare_dataset(cfg.data, cfg.results_dir)
    loop_config = {
        "cfg": config_to_dict(cfg),
        "run_dir": str(Path(run_dir).resolve()),
        "data_dir": str(Path(data_dir).resolve()),
        "verbose": verbose,
    }
    return TorchTrainer(
        train_fn or train_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker=worker_resources(cfg.train.use_gpu),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=resolve_storage_path(storage_path, cfg.results_dir),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.keep_checkpoints,
                checkpoint_score_attribute="objective",
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
            # Ray Train's own INFO lines dump every rank's metrics each epoch; rank 0's progress
            # line (unigrf's logger, not filtered by this) says the same in one line.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def run_storage(storage_path: str, name: str) -> str:
    """`<storage_path>/<name>`: where Ray Train keeps run `name` (a local path or a URI)."""
    from unigrf.names import run_name_problem

    problem = run_name_problem(name)
    if problem is not None:
        raise ConfigError(f"name: {problem}")
    return f"{storage_path.rstrip('/')}/{name}" if "://" in storage_path else str(Path(storage_path) / name)


def storage_holds_run(storage_path: str, name: str) -> bool:
    """Whether Ray storage holds run `name` (a run Ray Train would resume)."""
    target = run_storage(storage_path, name)
    if "://" not in target:
        return Path(target).is_dir()
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(target)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def delete_storage(storage_path: str, name: str) -> None:
    """Remove a run's Ray storage (`<storage_path>/<name>`), local path or URI, so it starts
    fresh instead of resuming; only ever inside `storage_path` (`unigrf.names.remove_tree`)."""
    from unigrf.names import remove_tree

    remove_tree(run_storage(storage_path, name), storage_path)


def _print_dashboard_url() -> None:
    url = dashboard_url()  # the URL is only a convenience: no line where Ray cannot say
    if url:
        print(f"Ray dashboard: http://{url}" if "://" not in url else f"Ray dashboard: {url}", flush=True)


def train_distributed(
    cfg: ExperimentConfig,
    address: str | None = None,
    storage_path: str | None = None,
    verbose: bool = True,
    *,
    restart: bool = False,
    max_failures: int = 0,
) -> dict[str, Any]:
    """Run `cfg` on Ray Train and return `fit`'s result from rank 0 (best_epoch,
    best_objective, epochs_run, val, test, history) plus `storage` (the run's Ray directory).

    A run whose storage already holds checkpoints resumes from the latest unless `restart`.
    """
    import ray

    from unigrf.interrupts import call_interruptibly
    from unigrf.ray_utils import (
        init_ray,
        leave_no_train_cleaners,
        node_capacity,
        require_workers_fit,
        resolve_storage_path,
    )
    from unigrf.training.prepared import load_data_dir, run_dir_for

    started = init_ray(address)
    try:
        require_workers_fit(cfg, node_capacity())  # before the data is prepared or Train starts
        if verbose:
            _print_dashboard_url()
        storage = resolve_storage_path(storage_path, cfg.results_dir)
        if restart:
            delete_storage(storage, cfg.name)
        trainer = build_trainer(
            cfg,
            run_dir_for(cfg),
            storage,
            cfg.name,
            max_failures=max_failures,
            data_dir=load_data_dir(cfg),
            verbose=verbose,
        )
        # in a helper thread: Ctrl-C is then a KeyboardInterrupt here (exit 130; the storage
        # keeps the last checkpoint), not Train's handler aborting its controller under us
        outcome = call_interruptibly(trainer.fit)
    finally:
        leave_no_train_cleaners()
        if started:
            ray.shutdown()
    result = dict(outcome.return_value)
    result["storage"] = str(outcome.path)
    return result
