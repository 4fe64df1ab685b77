"""RecBole's SASRec (full-softmax cross-entropy), run side by side with the project.

RecBole is third-party code run from an environment of its own — built here on first use
(`ensure_env`), never a dependency of the project, never copied into it — the way
benchmarks/anchor.py runs SASRec.pytorch from ../shared/anchors. One run:

1. the dataset is read through the project's own prepared data (`unigrf.training.prepared`:
   same users, items and chronological order as every project row, users with >= 3
   interactions, per-user stable sort with ties in file order) and written as RecBole atomic
   files (`<name>.inter`: user_id:token, item_id:token, rating:float, timestamp:float) in a
   temporary directory, each timestamp being the position in the user's sequence (0, 1, 2, ...)
   so that RecBole's own sort cannot reorder tied interactions;
2. benchmarks/recbole_driver.py runs RecBole 1.2.1's SASRec in a subprocess of that
   environment with the generated config (`recbole_config`): leave-one-out (last item test,
   second to last validation), full ranking over every item with the user's history masked,
   cross-entropy over the whole catalogue, Hit/NDCG/MRR at 10/50/200, early stopping on
   validation NDCG@10, the test split read once with the best-validation checkpoint. The
   driver's three adjustments to RecBole (history masking for sequential models, a validation
   row for users with exactly 3 interactions, NumPy 2's removed aliases) are listed in its
   docstring; none touches the model or its training;
3. RecBole's log is parsed (`parse_log`): per-epoch training and evaluation seconds, each
   epoch's validation metrics, the best-validation epoch and its test metrics.

RecBole's SASRec trains on **every prefix** of every training sequence (its sequential data
augmentation: a user with training items i1..ik gives the k-1 examples <i1> -> i2, ...,
<i1..ik-1> -> ik, each history cut to its last `max_len` items), where SASRec.pytorch and the
project's default train each user once per epoch on one window. Its settings are RecBole's
defaults for SASRec (2 layers, 2 heads, hidden 64, inner 256, dropout 0.5, batch 2048, Adam
lr 1e-3, no weight decay) unless `extra` overrides them.

    python benchmarks/recbole_anchor.py --dataset amazon-mi --seed 0 --epochs 2 --env /path/to/env
    python benchmarks/recbole_anchor.py --dataset ml-100k --seed 0 --epochs 200 --stopping-step 10 \
        --max-len 50 --env /path/to/env --log-dir results/recbole/ml-100k-s0
    python benchmarks/recbole_anchor.py ... --set train_batch_size=256   # any RecBole key

prints one JSON line (`RecBoleRun.summary`). Used by benchmarks/quality_bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DRIVER = Path(__file__).resolve().parent / "recbole_driver.py"
SYSTEM = "RecBole SASRec (CE)"
# The anchor environment, installed in this order: torch first and pinned (an unpinned torch
# pulls a multi-GB CUDA build), then RecBole, then a Ray whose `ray.tune` imports with today's
# setuptools (RecBole 1.2.1 pins ray<=2.6.3, which fails to import without pkg_resources; it
# imports `ray.tune` at module level only, so the newer Ray is what pip warns about, no more).
ENV_PINS = ("torch==2.13.0", "recbole==1.2.1", "ray[tune]==2.60.0")
RECBOLE_VERSION = "1.2.1"
INTER_COLUMNS = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
TOPK = [10, 50, 200]
# RecBole's metric name -> the quality table's column (MRR is left out: RecBole's is cut at k,
# the table's `test/mrr` is over the full ranking)
QUALITY_KEYS = {f"{m}@{k}": f"test/{c}@{k}" for m, c in (("hit", "hr"), ("ndcg", "ndcg")) for k in TOPK}


def dataset_overrides(dataset: str) -> tuple[Path | None, list[str]]:
    """The project's config file and data keys for `dataset` (the quality grid's names)."""
    if dataset == "ml-100k":
        return None, ["data.dataset=ml-100k", f"data.data_dir={SHARED_DATA / 'ml-100k'}"]
    if dataset == "amazon-mi":
        return None, [
            "data.dataset=amazon-reviews",
            f"data.data_dir={SHARED_DATA / 'amazon_musical_instruments_5core'}",
        ]
    if dataset == "movietweetings":
        data_dir = f"data.data_dir={SHARED_DATA / 'movietweetings-100k'}"
        config = REPO / "configs" / "movietweetings.yaml"
        if config.exists():
            return config, [data_dir]
        return None, ["data.dataset=ml-1m", data_dir, "data.rating_scale=[0,10]"]
    raise ValueError(f"unknown dataset {dataset!r}: expected one of ml-100k, amazon-mi, movietweetings")


DATASETS = ("ml-100k", "amazon-mi", "movietweetings")


def project_data(dataset: str, results_dir: str | Path = "results"):
    """The project's prepared `SequenceData` of `dataset` (cached under `results_dir/data`)."""
    from unigrf.config import load_config
    from unigrf.training.prepared import load_data

    config, overrides = dataset_overrides(dataset)
    return load_data(load_config(config, [*overrides, f"results_dir={results_dir}"]))


# --------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------


def atomic_frame(data) -> pd.DataFrame:
    """`SequenceData` [U users, total interactions] -> the rows of a RecBole `.inter` file.

    One row per interaction, users in order and each user's interactions in the project's
    chronological order (ties already in file order); user and item tokens are the project's
    indices (users 0..U-1, items 1..N); the timestamp is the position in the user's sequence,
    so it is unique per user and RecBole's sort by (user, timestamp) keeps the project's order.
    """
    lengths = data.lengths
    users = np.repeat(np.arange(data.num_users, dtype=np.int64), lengths)
    positions = np.arange(len(data.items), dtype=np.int64) - np.repeat(data.offsets[:-1], lengths)
    return pd.DataFrame(
        {
            INTER_COLUMNS[0]: users,
            INTER_COLUMNS[1]: data.items,
            INTER_COLUMNS[2]: data.ratings,
            INTER_COLUMNS[3]: positions,
        }
    )


def write_atomic(data, directory: str | Path, name: str) -> Path:
    """Write `<directory>/<name>/<name>.inter` (RecBole's layout for `data_path=directory`,
    `dataset=name`); returns the file's path."""
    path = Path(directory) / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_frame(data).to_csv(path, sep="\t", index=False)
    return path


def read_atomic(path: str | Path) -> pd.DataFrame:
    """A `.inter` file written by `write_atomic`, with its typed header checked."""
    frame = pd.read_csv(path, sep="\t")
    if list(frame.columns) != INTER_COLUMNS:
        raise ValueError(f"{path}: header {list(frame.columns)}, expected {INTER_COLUMNS}")
    return frame


def data_counts(data) -> dict[str, int]:
    """What the anchor is given, in the project's terms and RecBole's."""
    n = data.lengths
    return {
        "users": int(data.num_users),
        "items": int(len(np.unique(data.items))),
        "interactions": int(n.sum()),
        # RecBole's training examples: one per training item after the first (every prefix)
        "train_targets": int(np.clip(n - 3, 0, None).sum()),
    }


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def recbole_config(
    name: str,
    data_path: str | Path,
    checkpoint_dir: str | Path,
    *,
    epochs: int,
    max_len: int = 50,
    seed: int = 0,
    stopping_step: int = 10,
    extra: dict | None = None,
) -> dict:
    """RecBole's config for one SASRec run under SPEC §2 (`extra` overrides any key)."""
    config = {
        "dataset": name,
        "data_path": str(data_path),
        "checkpoint_dir": str(checkpoint_dir),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "RATING_FIELD": "rating",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": max_len,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": TOPK,
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 6,
        "epochs": epochs,
        "eval_step": 1,
        "stopping_step": stopping_step,
        "seed": seed,
        "reproducibility": True,
        "use_gpu": False,
        "worker": 0,  # data loading in the training process: no worker processes
        "show_progress": False,
        "state": "INFO",
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
    }
    config.update(extra or {})
    return config


# --------------------------------------------------------------------------------------------
# Log parsing
# --------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])")
NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
TRAIN_LINE = re.compile(rf"epoch (\d+) training \[time: {NUMBER}s, train loss: {NUMBER}\]")
EVAL_LINE = re.compile(rf"epoch (\d+) evaluating \[time: {NUMBER}s, valid_score: {NUMBER}\]")
# `hit@10 : 0.1` (RecBole's dict2str) and a dict's repr: `('hit@10', 0.1)` or `'hit@10': 0.1`,
# the value `np.float64(0.1)` under NumPy 2
METRIC_TEXT = re.compile(rf"(\w+@\d+) : {NUMBER}")
METRIC_REPR = re.compile(rf"'(\w+@\d+)'(?:,|:)\s*(?:np\.float\d*\()?{NUMBER}")
COUNT_LINE = re.compile(r"The number of (users|items|inters): (\d+)")
STOP_LINE = re.compile(r"Finished training, best eval result in epoch (\d+)")


@dataclass
class RecBoleLog:
    """What RecBole logged for one run."""

    epoch_train_s: list[float] = field(default_factory=list)  # per epoch, training only
    train_loss: list[float] = field(default_factory=list)
    epoch_eval_s: list[float] = field(default_factory=list)  # per evaluated epoch, validation
    valid: list[dict] = field(default_factory=list)  # {"epoch", "score", "metrics"} per evaluation
    best_valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)  # with the best-validation checkpoint
    counts: dict[str, int] = field(default_factory=dict)  # RecBole's users / items / inters
    stopped_at: int | None = None  # the best epoch RecBole named when it stopped early

    @property
    def best_epoch(self) -> int | None:
        """The epoch whose checkpoint gave `test`: RecBole keeps the last epoch whose
        validation score is >= every earlier one (`recbole.utils.early_stopping`)."""
        best, epoch = -np.inf, None
        for v in self.valid:
            if v["score"] >= best:
                best, epoch = v["score"], v["epoch"]
        return epoch


def parse_log(text: str) -> RecBoleLog:
    """Parse a RecBole 1.2.1 training log (its log file or its stdout; colour codes ignored).

    Raises ValueError when the log holds no test result (the run did not finish) or when the
    best validation result it names is not one of the epochs it logged."""
    log = RecBoleLog()
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    for i, line in enumerate(lines):
        if m := TRAIN_LINE.search(line):
            log.epoch_train_s.append(float(m.group(2)))
            log.train_loss.append(float(m.group(3)))
        elif m := EVAL_LINE.search(line):
            log.epoch_eval_s.append(float(m.group(2)))
            log.valid.append({"epoch": int(m.group(1)), "score": float(m.group(3)), "metrics": {}})
        elif "valid result:" in line and log.valid:
            rest = line.split("valid result:", 1)[1] + " " + (lines[i + 1] if i + 1 < len(lines) else "")
            log.valid[-1]["metrics"] = {k: float(v) for k, v in METRIC_TEXT.findall(rest)}
        elif "best valid" in line:
            log.best_valid = {k: float(v) for k, v in METRIC_REPR.findall(line)}
        elif "test result" in line:
            log.test = {k: float(v) for k, v in METRIC_REPR.findall(line)}
        elif m := COUNT_LINE.search(line):
            log.counts.setdefault(m.group(1), int(m.group(2)))  # the first: the whole dataset
        elif m := STOP_LINE.search(line):
            log.stopped_at = int(m.group(1))
    if not log.test:
        raise ValueError("RecBole's log holds no test result: the run did not finish")
    if log.valid and log.best_valid != next(v for v in log.valid if v["epoch"] == log.best_epoch)["metrics"]:
        raise ValueError(
            f"RecBole's best validation result {log.best_valid} is not that of epoch {log.best_epoch}"
        )
    return log


# --------------------------------------------------------------------------------------------
# The environment and the run
# --------------------------------------------------------------------------------------------


def env_python(env: Path) -> Path:
    return Path(env) / "bin" / "python"


def ensure_env(env: str | Path, *, verbose: bool = True) -> Path:
    """The anchor environment at `env`: created when missing (`ENV_PINS`, in order), checked
    when present. Returns its Python. A failed build removes the half-built directory; a
    directory that exists but is not a working RecBole environment is an error, left alone."""
    env = Path(env).resolve()
    python = env_python(env)
    check = [
        str(python),
        "-c",
        f"import recbole, ray.tune, torch; assert recbole.__version__ == {RECBOLE_VERSION!r}, recbole.__version__",
    ]
    clean = _clean_env()
    if env.exists():
        if not python.exists():
            raise RuntimeError(
                f"{env} exists but has no bin/python (remove it to build the RecBole environment)"
            )
        done = subprocess.run(check, capture_output=True, text=True, env=clean)
        if done.returncode != 0:
            raise RuntimeError(
                f"{env} exists but is not a RecBole {RECBOLE_VERSION} environment "
                f"(remove it to rebuild):\n{(done.stdout + done.stderr)[-2000:]}"
            )
        return python
    try:
        steps = [[sys.executable, "-m", "venv", str(env)]]
        steps += [[str(python), "-m", "pip", "install", "-q", pin] for pin in ENV_PINS]
        for step in steps:
            if verbose:
                print("recbole env:", " ".join(step), flush=True)
            done = subprocess.run(step, capture_output=True, text=True, env=clean)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(step)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        done = subprocess.run(check, capture_output=True, text=True, env=clean)
        if done.returncode != 0:
            raise RuntimeError(f"the new environment does not import RecBole:\n{done.stderr[-3000:]}")
    except BaseException:
        shutil.rmtree(env, ignore_errors=True)
        raise
    return python


def _clean_env(threads: int | None = None) -> dict[str, str]:
    """The caller's environment without what would leak the project's Python into the anchor's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if threads is not None:
        env.update(
            {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
        )
        # RecBole 1.2.1 reloads its own best checkpoint (a pickled dict with its config) with
        # `torch.load`, whose default became `weights_only=True` in torch 2.6
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return env


def check_counts(recbole: dict[str, int], project: dict[str, int]) -> None:
    """RecBole's logged dataset size (`RecBoleLog.counts`) must be the project's (`data_counts`):
    RecBole counts one padding user and one padding item besides the real ones."""
    expected = {
        "users": project["users"] + 1,
        "items": project["items"] + 1,
        "inters": project["interactions"],
    }
    if recbole != expected:
        raise RuntimeError(f"RecBole read {recbole}, the project's data is {expected} (padding included)")


@dataclass
class RecBoleRun:
    """One RecBole SASRec run: its settings, what it logged, the data it was given."""

    dataset: str
    seed: int
    config: dict
    log: RecBoleLog
    data: dict[str, int]
    wall_s: float
    output_tail: str = ""

    @property
    def quality(self) -> dict[str, float]:
        """The test metrics as quality-table columns (`QUALITY_KEYS`)."""
        return {
            ours: self.log.test[theirs] for theirs, ours in QUALITY_KEYS.items() if theirs in self.log.test
        }

    def quality_row(self, command: str) -> dict:
        """The run as a benchmarks/quality.csv row (the columns it has; quality_bench fills the
        rest with NaN). `best_epoch` counts from 0, as RecBole and the project do."""
        return {
            "dataset": self.dataset,
            "system": SYSTEM,
            "seed": self.seed,
            "epochs": len(self.log.epoch_train_s),
            "best_epoch": self.log.best_epoch,
            "wall_s": self.wall_s,
            "status": "ok",
            "command": command,
            **self.quality,
        }

    def summary(self) -> dict:
        log = self.log
        return {
            "dataset": self.dataset,
            "system": SYSTEM,
            "seed": self.seed,
            "max_len": self.config["MAX_ITEM_LIST_LENGTH"],
            "epochs": self.config["epochs"],
            "epochs_run": len(log.epoch_train_s),
            "best_epoch": log.best_epoch,
            "stopped_early": log.stopped_at is not None,
            "s_per_epoch": float(np.mean(log.epoch_train_s)) if log.epoch_train_s else None,
            "epoch_train_s": log.epoch_train_s,
            "epoch_eval_s": log.epoch_eval_s,
            "best_valid": log.best_valid,
            "test": log.test,
            "quality": self.quality,
            "valid_ndcg@10_per_epoch": [v["metrics"].get("ndcg@10") for v in log.valid],
            "data": self.data,
            "recbole_counts": log.counts,
            "wall_s": self.wall_s,
            "config": self.config,
        }


def run_recbole_anchor(
    dataset: str,
    *,
    env: str | Path,
    epochs: int,
    max_len: int = 50,
    seed: int = 0,
    stopping_step: int = 10,
    threads: int = 1,
    results_dir: str | Path = "results",
    log_dir: str | Path | None = None,
    extra: dict | None = None,
    timeout_s: float = 24 * 3600,
) -> RecBoleRun:
    """Run RecBole's SASRec on `dataset` (see the module docstring) and parse its log.

    `env`: the anchor environment (built by `ensure_env` when missing). `log_dir`: where the
    RecBole log, the config and the `.inter` file's counts are copied (kept; the run's own
    directory is temporary). Raises RuntimeError with the output's tail when RecBole fails, and
    when RecBole's user/item/interaction counts differ from the project's."""
    python = ensure_env(env)
    data = project_data(dataset, results_dir)
    counts = data_counts(data)
    name = "unigrf_" + dataset.replace("-", "_")
    with tempfile.TemporaryDirectory(prefix="recbole-anchor-") as tmp:
        work = Path(tmp)
        inter = write_atomic(data, work / "data", name)
        config = recbole_config(
            name,
            work / "data",
            work / "saved",
            epochs=epochs,
            max_len=max_len,
            seed=seed,
            stopping_step=stopping_step,
            extra=extra,
        )
        config_file = work / "config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        start = time.perf_counter()
        done = subprocess.run(
            [str(python), str(DRIVER), str(config_file), str(inter), str(threads)],
            cwd=work,
            env=_clean_env(threads),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        wall_s = time.perf_counter() - start
        tail = (done.stdout + done.stderr)[-4000:]
        logs = sorted((work / "log").glob("**/*.log"))
        if log_dir is not None:
            out = Path(log_dir)
            out.mkdir(parents=True, exist_ok=True)
            for path in logs:
                shutil.copy(path, out / path.name)
            (out / "config.yaml").write_text(config_file.read_text())
            (out / "output.txt").write_text(done.stdout + done.stderr)
        if done.returncode != 0 or not logs:
            raise RuntimeError(f"RecBole failed (exit {done.returncode}):\n{tail}")
        log = parse_log(logs[-1].read_text())
    check_counts(log.counts, counts)
    return RecBoleRun(dataset, seed, config, log, counts, wall_s, tail)


def parse_sets(pairs: list[str]) -> dict:
    """`["key=value", ...]` -> {key: YAML value} (RecBole config overrides from the command line)."""
    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    return extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--stopping-step", type=int, default=10, help="RecBole's early-stopping patience")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--env", required=True, help="the RecBole environment (built there when missing)")
    parser.add_argument("--results-dir", default="results", help="the project's prepared-data cache")
    parser.add_argument("--log-dir", default=None, help="keep RecBole's log and config here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a RecBole config key (VALUE read as YAML), e.g. --set train_batch_size=256; repeatable",
    )
    args = parser.parse_args(argv)
    run = run_recbole_anchor(
        args.dataset,
        env=args.env,
        epochs=args.epochs,
        max_len=args.max_len,
        seed=args.seed,
        stopping_step=args.stopping_step,
        threads=args.threads,
        results_dir=args.results_dir,
        log_dir=args.log_dir,
        extra=parse_sets(args.set),
    )
    print(json.dumps(run.summary()), flush=True)


if __name__ == "__main__":
    main()
