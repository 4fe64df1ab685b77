"""The quality table: the project's models, SASRec.pytorch, RecBole's SASRec, popularity and the
count model on the same data under the same protocol (SPEC §2: leave-one-out, full ranking over
every item, history masked), 3 seeds, one row per run in benchmarks/quality.csv, and per
dataset a summary whose verdicts read validation for every choice and test once.

Measured, per dataset of `ablations/quality.yaml` (ml-100k, amazon-mi, movietweetings):
1. the project: the grid through the ablation layer, each dataset its own report
   (`<results-dir>/ablations/quality-<dataset>[-<rows>]`, resumed when it exists): every cell is
   the config tree's defaults with only data keys set, and every backbone (HSTU, Llama, SASRec)
   has its item-only, retrieval-only, ranking-only, two-stage and UniGRF row; UniGRF is tested
   at one checkpoint (`selection: joint`; a `per_stage` row is labelled "two snapshots");
2. SASRec.pytorch (`../shared/anchors/sasrec_pytorch/`, benchmarks/anchor.py) at its published
   settings (maxlen 200 on MovieLens, 50 on Amazon, the project's data-derived max_len on
   MovieTweetings; `--epochs`, full-ranking evaluation every `--anchor-eval-every` epochs): the
   test metrics of its best-validation evaluation. MovieTweetings is given to it as the project's
   prepared sequences (a CSV, users with >= 3 interactions, their order, timestamp = position);
   it evaluates only users with >= 4 interactions, so there it is compared with the project's
   runs recomputed on those users from their per-user outcomes;
3. RecBole's SASRec (`--recbole-env PATH`, opt-in: slow; benchmarks/recbole_anchor.py) on the
   project's prepared data, at the project's max_len;
4. popularity (the retrieval floor) and the count model (the ranking floor:
   `unigrf.evaluation.count_model`), computed here on validation and test.

Each run is one CSV row with its validation and test metrics, `protocol` ("current" for rows of
this version; rows measured before one-checkpoint selection and windows over whole histories are
kept and marked "earlier (...)"), `row` (the grid row), `selection`, `users` (test users
evaluated), epochs, best epoch, wall seconds, status, the cascade's λ (chosen on validation) and
the exact command. A run's rows replace those of the same dataset, system and seed; all other
rows are kept (`merge_rows`).

The summary (printed, and `<report-dir>/<dataset>/README.md`), per dataset:
a. mean ± std over seeds of every row (val NDCG@10 beside the test metrics), and the tokens
   one epoch trains on before → after windows over whole histories (benchmarks/window_tokens.py);
b. backbone-matched comparisons — UniGRF-b against item-only-b, retrieval-only-b and two-stage-b
   on test NDCG@10, against ranking-only-b and two-stage-b on test AUC — each change with its
   95 % interval over test users and seeds (`Comparator.test`), Holm-corrected over the
   dataset's family;
c. the headline, chosen on validation only (`unigrf.ablation.headline`): the one-checkpoint
   UniGRF row with the best mean val NDCG@10 against the single-task baseline (item-only,
   retrieval-only, two-stage of every backbone, and the anchors) with the best mean val
   NDCG@10, tested on test with a Bonferroni correction over the candidate pairs;
d. issue 35's acceptance lines: the validation-chosen UniGRF and item-only rows as ratios to
   SASRec.pytorch and RecBole measured side by side; each UniGRF and ranking-only row's test AUC
   minus the count model's (bar +0.02), with its interval.

    python benchmarks/quality_bench.py                                  # every dataset, seeds 0-2
    python benchmarks/quality_bench.py --datasets amazon-mi --recbole-env ../recbole-env
    python benchmarks/quality_bench.py --datasets ml-100k --rows hstu/unigrf hstu/item_only --skip-anchor
    python benchmarks/quality_bench.py --skip-grid --skip-anchor        # the summary from what is stored
    python benchmarks/quality_bench.py --datasets movietweetings --reuse-from results/ablations/paper-movietweetings
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchor  # noqa: E402

from unigrf.ablation.aggregate import Comparator, Floor, holm  # noqa: E402
from unigrf.ablation.grid import BACKBONES as GRID_BACKBONES  # noqa: E402
from unigrf.ablation.headline import (  # noqa: E402
    Choice,
    ChosenTest,
    choose_on_validation,
    compare_chosen,
    validation_means,
)
from unigrf.ablation.paired import DEFAULT_REPLICATES, TestResult  # noqa: E402
from unigrf.ablation.report import fmt_change, md_table  # noqa: E402
from unigrf.ablation.user_subset import restrict_to_users  # noqa: E402
from unigrf.config import VARIANTS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "benchmarks" / "quality.csv"
GRID = REPO / "ablations" / "quality.yaml"
REPORTS = REPO / "reports" / "quality"
DATASETS = ("ml-100k", "amazon-mi", "movietweetings")
BACKBONES = GRID_BACKBONES  # the one backbone list (unigrf.config.BackboneName)
VARIANT_ORDER = ("item_only", "retrieval_only", "ranking_only", "two_stage", "unigrf")
SINGLE_TASK = ("item_only", "retrieval_only", "two_stage")  # the headline's baselines
# grid dataset name -> (SASRec.pytorch's dataset name, its maxlen; None: the project's max_len)
ANCHOR = {"ml-100k": ("ml100k", 200), "amazon-mi": ("ami", 50), "movietweetings": ("mt", None)}
ANCHOR_MIN_INTERACTIONS = 4  # SASRec.pytorch evaluates users with >= 4 (utils.data_partition)
SASREC = "SASRec.pytorch"
RECBOLE = "RecBole SASRec (CE)"  # = recbole_anchor.SYSTEM (not imported: it loads its own deps)
POPULARITY = "popularity"
COUNT_MODEL = "count model"
ANCHORS = (SASREC, RECBOLE)
CURRENT = "current"
# the rows measured before this protocol (benchmarks/quality.csv's history: Amazon MI at
# 9a115f9, ML-100K at b1adc1e; UniGRF tested per stage, each user's last window only, the
# cascade by p(like) alone)
EARLIER = "earlier (per-stage selection, last window only)"
EARLIER_BESIDE = "earlier (beside the per-stage, last-window rows)"  # anchors, popularity then
VAL_METRICS = ["val/hr@10", "val/ndcg@10", "val/mrr", "val/auc", "val/logloss"]
TEST_METRICS = [
    "test/hr@10", "test/ndcg@10", "test/hr@50", "test/ndcg@50", "test/hr@200", "test/ndcg@200", "test/mrr",
    "test/auc", "test/logloss", "test/cascade_hr@10", "test/cascade_ndcg@10", "test/cascade0_hr@10",
    "test/cascade0_ndcg@10",
]  # fmt: skip
METRICS = VAL_METRICS + TEST_METRICS
COLUMNS = [
    "dataset", "system", "seed", "protocol", "row", "selection", "users", "epochs", "best_epoch", "wall_s",
    "status", "cascade_lambda", "command", *METRICS,
]  # fmt: skip
ANCHOR_KEYS = {"HR@10": "hr@10", "NDCG@10": "ndcg@10", "HR@50": "hr@50", "NDCG@50": "ndcg@50", "MRR": "mrr"}
LOSS_NAMES = {"full_softmax": "CE", "sampled_softmax": "sampled softmax", "bce": "BCE", "gbce": "gBCE"}
BACKBONE_NAMES = {"hstu": "HSTU", "llama": "Llama", "sasrec": "SASRec"}
TWO_SNAPSHOTS = "two snapshots"
METRIC_NAMES = {"test/ndcg@10": "NDCG@10", "test/auc": "AUC"}
BAR_SASREC, BAR_RECBOLE, BAR_AUC = 1.1, 1.0, 0.02  # issue 35's acceptance bars


def system_name(backbone: str, variant: str, loss: str) -> str:
    """What a row is, in words a reader of the table expects."""
    b = BACKBONE_NAMES[backbone]
    if variant == "item_only":
        return f"item-only {b} ({LOSS_NAMES[loss]})"
    if variant == "retrieval_only":
        return f"retrieval-only {b} (items + feedback, {LOSS_NAMES[loss]})"
    if variant == "ranking_only":
        return f"ranking-only {b}"
    if variant == "two_stage":
        return f"two-stage {b} (retrieval-only + ranking-only)"
    return f"UniGRF-{b}" if variant == "unigrf" else f"UniGRF-{b} ({variant})"


def defined(variant: str, metric: str) -> bool:
    """Whether `variant` trains what `metric` measures (an untrained head's number is not a
    result): ranking metrics need the ranking head, cascade metrics both stages, the rest
    the retrieval head."""
    spec = VARIANTS[variant]
    base = metric.split("/", 1)[1]
    if base.startswith(("cascade_", "cascade0_")):
        return spec.retrieval and spec.ranking
    if base in ("auc", "logloss"):
        return spec.ranking
    return spec.retrieval


# --------------------------------------------------------------------------------------------
# the CSV
# --------------------------------------------------------------------------------------------


def earlier_protocol(system: str) -> str:
    """The protocol of a row measured before the `protocol` column existed."""
    return EARLIER_BESIDE if system in (*ANCHORS, POPULARITY) else EARLIER


def read_table(path: Path) -> pd.DataFrame:
    """quality.csv; rows from before the `protocol` column are marked as the earlier protocol."""
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path)
    if "protocol" not in frame:
        frame["protocol"] = frame["system"].map(earlier_protocol)
    return frame


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """quality.csv after a run: the run's rows replace the rows with the same (dataset, system,
    seed); every other row is kept (other datasets, rows a --rows subset did not run, the
    anchor's rows under --skip-anchor)."""
    key = ["dataset", "system", "seed"]
    if new.empty:
        return old
    replaced = old.merge(new[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"] == "both"
    return pd.concat([old[~replaced.to_numpy()], new], ignore_index=True)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Known columns first (COLUMNS), then any other; sorted by dataset, system, seed."""
    columns = [c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]
    frame = frame[columns].sort_values(["dataset", "system", "seed"], kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.6g")


def _row(dataset: str, system: str, seed: int, command: str, **values) -> dict:
    row = {c: math.nan for c in COLUMNS}
    row.update(dataset=dataset, system=system, seed=int(seed), protocol=CURRENT, status="ok", command=command)
    row.update(values)
    return row


# --------------------------------------------------------------------------------------------
# the project's rows: the grid, one report per dataset
# --------------------------------------------------------------------------------------------


def run_cascade_lambda(report_dir: Path, cell: str, rec: Mapping, lambdas: Sequence[float]) -> float:
    """The cascade's λ a run chose on validation: its metrics.json when the run directory is
    there, else the validation curve of results.csv (`val/cascade_ndcg@10/lambda_<λ>`) read by
    the same rule (`choose_lambda`); NaN for a run without a cascade."""
    from unigrf.ablation.outcome_store import run_name
    from unigrf.evaluation.cascade_score import choose_lambda, format_lambda

    try:
        stored = json.loads((report_dir / "runs" / run_name(cell) / "metrics.json").read_text())
        return float(stored.get("cascade_lambda", math.nan))
    except (OSError, ValueError, TypeError):
        pass
    curve = {lam: rec.get(f"val/cascade_ndcg@10/lambda_{format_lambda(lam)}", math.nan) for lam in lambdas}
    curve = {lam: float(v) for lam, v in curve.items() if v is not None}
    try:
        return float(choose_lambda(curve, lambdas))
    except (ValueError, KeyError):
        return math.nan


def report_rows(report_dir: Path, seeds: Sequence[int] | None, command: str) -> pd.DataFrame:
    """A grid report directory's runs as quality.csv rows (every seed when `seeds` is None)."""
    from unigrf.config import CASCADE_LAMBDAS

    results = pd.read_csv(report_dir / "results.csv")
    configs_path = report_dir / "configs.yaml"
    configs = yaml.safe_load(configs_path.read_text()) if configs_path.exists() else {}
    grid = report_dir.name  # the grid's (subset's) name: grid.yaml keeps the file's own
    rows = []
    for rec in results.to_dict("records"):
        if seeds is not None and int(rec["seed"]) not in seeds:
            continue
        cfg = configs.get(rec["cell"], {})
        loss = cfg.get("loss", {}).get("retrieval", "full_softmax")
        lambdas = tuple(float(x) for x in cfg.get("eval", {}).get("cascade_lambdas", CASCADE_LAMBDAS))
        variant = str(rec["variant"])
        selection = rec.get("selection")
        row = _row(
            rec["dataset"],
            system_name(rec["backbone"], variant, loss),
            rec["seed"],
            f"{command} (grid {grid}, cell {rec['cell']})",
            row=rec["row"],
            selection=selection if isinstance(selection, str) and selection else math.nan,
            users=rec.get("test/num_users", math.nan),
            epochs=rec.get("epochs_run"),
            best_epoch=rec.get("best_epoch"),
            wall_s=rec.get("time_s"),
            status=rec["status"],
            cascade_lambda=(
                run_cascade_lambda(report_dir, rec["cell"], rec, lambdas)
                if defined(variant, "test/cascade_ndcg@10")
                else math.nan
            ),
        )
        for m in METRICS:
            row[m] = float(rec.get(m, math.nan)) if defined(variant, m) else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def grid_spec(dataset: str, seeds: Sequence[int], rows: Sequence[str] | None):
    from unigrf.ablation.grid import load_grid

    return load_grid(GRID).with_seeds(max(seeds) + 1).subset([dataset], rows)


def run_grid(args: argparse.Namespace, dataset: str, command: str) -> tuple[pd.DataFrame, Path]:
    """Run (or resume) the dataset's part of the quality grid; its rows and report directory."""
    from unigrf.ablation.runner import run_ablation

    spec = grid_spec(dataset, args.seeds, args.rows)
    report_dir, _ = run_ablation(
        spec,
        {"results_dir": str(args.results_dir)},
        resume=(Path(args.results_dir) / "ablations" / spec.name).exists(),
        max_concurrent=args.max_concurrent,
        command=command,
        reuse_from=args.reuse_from,
    )
    return report_rows(report_dir, args.seeds, command), report_dir


# --------------------------------------------------------------------------------------------
# data, popularity, the count model, tokens per epoch
# --------------------------------------------------------------------------------------------


def dataset_config(dataset: str, results_dir: Path):
    """The grid's data keys for `dataset` (paths relative to the repository root) on the defaults."""
    from unigrf.ablation.grid import load_grid
    from unigrf.config import apply_overrides, load_config

    spec = load_grid(GRID, check_cells=False)
    entry = next((d for d in spec.datasets if d.name == dataset), None)
    if entry is None:
        raise SystemExit(f"{GRID}: no dataset {dataset!r} (has {[d.name for d in spec.datasets]})")
    overrides = {"data.dataset": dataset, **entry.overrides}
    for key in ("data.data_dir", "data.path"):
        if isinstance(overrides.get(key), str) and not Path(overrides[key]).is_absolute():
            overrides[key] = str((REPO / overrides[key]).resolve())
    return apply_overrides(load_config(None), {**overrides, "results_dir": str(results_dir)})


def floor_rows(dataset: str, cfg, data, command: str) -> tuple[pd.DataFrame, Floor]:
    """Popularity and the count model on validation and test: their rows, and the count model
    as the comparisons' floor (with its per-user outcomes)."""
    from unigrf.evaluation import popularity_baseline
    from unigrf.evaluation.count_model import count_model_metrics, count_model_outcomes, fit_count_model

    pop = {s: popularity_baseline(data, s, cfg.eval) for s in ("val", "test")}
    model = fit_count_model(data)
    frames = {s: count_model_outcomes(data, s, model) for s in ("val", "test")}
    counts = {s: count_model_metrics(f) for s, f in frames.items()}
    popularity = _row(dataset, POPULARITY, 0, f"{command} (popularity_baseline, val and test)",
                      users=pop["test"]["num_users"], epochs=0, wall_s=0.0)  # fmt: skip
    count = _row(dataset, COUNT_MODEL, 0, f"{command} (count model: unigrf.evaluation.count_model)",
                 users=counts["test"]["num_users"], epochs=0, wall_s=0.0)  # fmt: skip
    for m in METRICS:
        split, base = m.split("/", 1)
        popularity[m] = float(pop[split].get(base, math.nan))
        count[m] = float(counts[split].get(base, math.nan)) if base in ("auc", "logloss") else math.nan
    values = {f"{s}/{k}": float(counts[s][k]) for s in counts for k in ("auc", "logloss")}
    return pd.DataFrame([popularity, count], columns=COLUMNS), Floor(COUNT_MODEL, values, frames)


def data_line(data) -> str:
    """The prepared data every row of the dataset ran on."""
    return (
        f"Data: {data.num_users:,} users (>= 3 interactions), {data.num_items:,} items, "
        f"{len(data.items):,} interactions; like threshold {data.like_threshold:g}, max_len {data.max_len} "
        "(the prepared data's, derived from the data where the config leaves them unset)."
    )


def tokens_line(data, after: str) -> str:
    """What one epoch trains on with each user's last window only (before) and with the
    `after` scheme (the default, windows over whole histories): benchmarks/window_tokens.py."""
    import window_tokens

    table = {r["scheme"]: r for r in window_tokens.rows(data)}
    b, a = table["last"], table[after]

    def pair(key: str, share: str | None) -> str:
        text = f"{b[key]:,} → {a[key]:,}"
        return text + (f" ({b[share]:.0%} → {a[share]:.0%})" if share else "")

    return (
        f"Tokens per epoch (before → after windows; `{after}` windows, max_len {data.max_len}, "
        f"{b['train interactions']:,} training interactions): ranking targets "
        f"{pair('ranking targets / epoch', 'share')}, retrieval targets "
        f"{pair('retrieval targets / epoch', 'retrieval share')}, padded positions (batch 32) "
        f"{pair('padded positions', None)} (benchmarks/window_tokens.py)."
    )


# --------------------------------------------------------------------------------------------
# the anchors
# --------------------------------------------------------------------------------------------


def write_sequences_csv(data, path: Path) -> Path:
    """The project's prepared sequences as a CSV SASRec.pytorch's prep.py reads (header
    user,item,timestamp): users 0..U-1 (every user with >= 3 interactions), items 1..N, each
    user's interactions in the project's order with timestamp = position, so that prep.py's
    stable sort keeps that order and its user k + 1 is the project's user k."""
    users = np.repeat(np.arange(data.num_users, dtype=np.int64), data.lengths)
    positions = np.arange(len(data.items), dtype=np.int64) - np.repeat(data.offsets[:-1], data.lengths)
    frame = pd.DataFrame({"user": users, "item": data.items, "timestamp": positions})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def anchor_users(data) -> np.ndarray:
    """The project's users SASRec.pytorch evaluates when fed `write_sequences_csv`."""
    return np.flatnonzero(data.lengths >= ANCHOR_MIN_INTERACTIONS)


@contextmanager
def anchor_source(name: str, path: Path) -> Iterator[None]:
    """Make `path` SASRec.pytorch's input for dataset `name` (benchmarks/anchor.py's DATASETS)
    for the duration of the block."""
    previous = anchor.DATASETS.get(name)
    anchor.DATASETS[name] = path
    try:
        yield
    finally:
        if previous is None:
            anchor.DATASETS.pop(name, None)
        else:
            anchor.DATASETS[name] = previous


def sasrec_row(dataset: str, seed: int, run, wall_s: float, epochs: int, command: str) -> dict:
    """SASRec.pytorch's best-validation evaluation as a row."""
    if not run.evaluations:
        raise RuntimeError(f"SASRec.pytorch on {dataset} seed {seed} printed no full evaluation")
    best = max(run.evaluations, key=lambda e: e["valid"]["NDCG@10"])
    row = _row(dataset, SASREC, seed, f"{command} (SASRec.pytorch main.py {' '.join(run.args)})",
               users=best["test"].get("n_users", math.nan), epochs=epochs, best_epoch=best["epoch"],
               wall_s=wall_s)  # fmt: skip
    for theirs, ours in ANCHOR_KEYS.items():
        row[f"test/{ours}"] = best["test"].get(theirs, math.nan)
        if ours in ("hr@10", "ndcg@10", "mrr"):
            row[f"val/{ours}"] = best["valid"].get(theirs, math.nan)
    return row


def sasrec_rows(args: argparse.Namespace, dataset: str, data, command: str) -> pd.DataFrame:
    name, maxlen = ANCHOR[dataset]
    maxlen = maxlen if maxlen is not None else int(data.max_len)
    every = max(1, min(args.anchor_eval_every, args.epochs))
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="quality-anchor-") as tmp,
        _maybe_source(dataset, name, data, tmp),
    ):
        for seed in args.seeds:
            start = time.perf_counter()
            run = anchor.run_anchor(
                name, epochs=args.epochs, maxlen=maxlen, seed=seed, threads=1, full_eval_every=every
            )
            row = sasrec_row(dataset, seed, run, time.perf_counter() - start, args.epochs, command)
            rows.append(row)
            print(f"{SASREC} {dataset} seed {seed}: val / test NDCG@10 {row['val/ndcg@10']:.4f} / "
                  f"{row['test/ndcg@10']:.4f} on {row['users']} users (best validation at epoch "
                  f"{row['best_epoch']}, {row['wall_s']:.0f} s)", flush=True)  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


@contextmanager
def _maybe_source(dataset: str, name: str, data, tmp: str) -> Iterator[None]:
    if name in anchor.DATASETS:  # a raw file the anchor's prep.py reads itself
        yield
        return
    path = write_sequences_csv(data, Path(tmp) / f"{dataset}.csv")
    with anchor_source(name, path):
        yield


def recbole_rows(args: argparse.Namespace, dataset: str, data, command: str) -> pd.DataFrame:
    from recbole_anchor import run_recbole_anchor

    rows = []
    for seed in args.seeds:
        run = run_recbole_anchor(
            dataset,
            env=args.recbole_env,
            epochs=args.recbole_epochs,
            max_len=int(data.max_len),
            seed=seed,
            threads=1,
            results_dir=args.results_dir,
            log_dir=Path(args.results_dir) / "recbole" / f"{dataset}-seed{seed}",
        )
        row = _row(dataset, RECBOLE, seed, "", users=run.data["users"])
        row.update(run.quality_row(f"{command} (benchmarks/recbole_anchor.py, max_len {data.max_len})"))
        row["val/ndcg@10"] = run.log.best_valid.get("ndcg@10", math.nan)
        row["val/hr@10"] = run.log.best_valid.get("hit@10", math.nan)
        rows.append(row)
        print(f"{RECBOLE} {dataset} seed {seed}: val / test NDCG@10 {row['val/ndcg@10']:.4f} / "
              f"{row['test/ndcg@10']:.4f} ({run.wall_s:.0f} s)", flush=True)  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------------------------------
# the summary
# --------------------------------------------------------------------------------------------


def _fmt(values: pd.Series, digits: int = 4) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "—"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def _variant(row: object) -> str:
    return str(row).split("/", 1)[1] if isinstance(row, str) and "/" in row else ""


def _order(system: str, row: object) -> tuple:
    if isinstance(row, str) and "/" in row:
        backbone, variant = row.split("/", 1)
        return (0, BACKBONES.index(backbone) if backbone in BACKBONES else 9,
                VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else 9, system)  # fmt: skip
    rest = (*ANCHORS, POPULARITY, COUNT_MODEL)
    return (1, rest.index(system) if system in rest else 9, 0, system)


def label(system: str, selection: object, row: object) -> str:
    """The table's name of a row: per-stage selection of a one-model row is two snapshots."""
    if selection == "per_stage" and _variant(row) != "two_stage":
        return f"{system} ({TWO_SNAPSHOTS})"
    return system


MAIN_COLUMNS = [
    ("val/ndcg@10", "val NDCG@10"), ("test/hr@10", "HR@10"), ("test/ndcg@10", "NDCG@10"),
    ("test/ndcg@50", "NDCG@50"), ("test/mrr", "MRR"), ("test/auc", "AUC"), ("test/logloss", "LogLoss"),
    ("test/cascade_ndcg@10", "cascade NDCG@10"), ("test/cascade0_ndcg@10", "cascade λ=0 NDCG@10"),
]  # fmt: skip


def main_table(table: pd.DataFrame) -> list[str]:
    """Mean ± std over seeds per (system, protocol)."""
    groups = []
    for (system, protocol), g in table.groupby(["system", "protocol"], sort=False, dropna=False):
        row = g["row"].dropna().iloc[0] if "row" in g and g["row"].notna().any() else math.nan
        selection = g["selection"].dropna().iloc[0] if g["selection"].notna().any() else math.nan
        groups.append((_order(system, row), system, protocol, row, selection, g))
    body = []
    for _, system, protocol, row, selection, g in sorted(groups, key=lambda x: (x[0], x[2] != CURRENT)):
        lambdas = ", ".join(f"{v:g}" for v in g["cascade_lambda"].dropna())
        body.append(
            [
                label(system, selection, row),
                "current" if protocol == CURRENT else "earlier",
                str(len(g)),
                _fmt(g["users"], 0).split(" ±")[0],
                *(_fmt(g[m]) for m, _ in MAIN_COLUMNS),
                lambdas or "—",
                _fmt(g["epochs"], 0),
                _fmt(g["best_epoch"], 0),
                _fmt(g["wall_s"], 0),
            ]
        )
    header = [
        "system",
        "protocol",
        "seeds",
        "test users",
        *(h for _, h in MAIN_COLUMNS),
        "λ",
        "epochs",
        "best epoch",
        "wall s",
    ]
    return [md_table(header, body)]


def comparator_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The current rows as the Comparator's results: project rows by their grid row (cells named
    as the grid names them, so the stored outcomes attach), anchors by their system name."""
    current = table[(table["protocol"] == CURRENT) & (table["status"] == "ok")].copy()
    project = current["row"].notna()
    current = current[project | current["system"].isin(ANCHORS)]
    current["row"] = current["row"].where(current["row"].notna(), current["system"])
    current["cell"] = [
        f"{r}/{d}/seed{int(s)}" for r, d, s in zip(current["row"], current["dataset"], current["seed"])
    ]
    return current.reset_index(drop=True)


def consistent_outcomes(
    results: pd.DataFrame, outcomes: Mapping[str, Mapping[str, pd.DataFrame]]
) -> tuple[dict[str, dict[str, pd.DataFrame]], list[str]]:
    """The outcomes of the CSV's runs: a cell's stored outcomes are used only where they give the
    CSV's val and test NDCG@10 (to its 6 significant digits); others are named and left out, so
    a comparison never mixes one run's numbers with another run's users."""
    from unigrf.evaluation.outcomes import per_user

    kept, dropped = {}, []
    for rec in results.to_dict("records"):
        frames = outcomes.get(rec["cell"])
        if not frames:
            continue
        ok = True
        for split, frame in frames.items():
            want = float(rec.get(f"{split}/ndcg@10", math.nan))
            got = float(per_user(frame, "ndcg@10").mean()) if len(frame) else math.nan
            if math.isfinite(want) and not math.isclose(want, got, rel_tol=1e-5, abs_tol=1e-9):
                ok = False
        if ok:
            kept[rec["cell"]] = dict(frames)
        else:
            dropped.append(rec["cell"])
    return kept, dropped


def matched_pairs(rows: Sequence[str]) -> list[tuple[str, str, str]]:
    """The backbone-matched comparisons (UniGRF-b, baseline-b, metric), for every backbone with
    a UniGRF row among `rows`; a missing baseline row stays in the list (its test is n/a)."""
    out = []
    present = set(rows)
    for b in BACKBONES:
        if f"{b}/unigrf" not in present:
            continue
        for variant in ("item_only", "retrieval_only", "two_stage"):
            out.append((f"{b}/unigrf", f"{b}/{variant}", "test/ndcg@10"))
        for variant in ("ranking_only", "two_stage"):
            out.append((f"{b}/unigrf", f"{b}/{variant}", "test/auc"))
    return out


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _test_kind(t: TestResult | ChosenTest) -> str:
    if t.test == "bootstrap":
        return f"users × seeds ({t.n_users} users, {_seeds(t.n)})"
    if t.test in ("paired", "welch"):
        return f"seeds only‡ ({t.test}, {_seeds(t.n)})"
    return "n/a"


def row_name(row: str, names: Mapping[str, str]) -> str:
    """The table's name of a grid row, also of one that has no runs (the grid's default loss)."""
    if row in names:
        return names[row]
    backbone, _, variant = row.partition("/")
    if backbone in BACKBONE_NAMES and variant in VARIANTS:
        return system_name(backbone, variant, "full_softmax")
    return row


def matched_comparisons(comparator: Comparator, dataset: str, names: Mapping[str, str]) -> list[str]:
    rows = list(dict.fromkeys(comparator.ok.loc[comparator.ok["dataset"] == dataset, "row"]))
    pairs = matched_pairs(rows)
    if not pairs:
        return ["No UniGRF row of the current protocol: no backbone-matched comparison."]
    comparator.register(dataset, rows, sorted({m for *_, m in pairs}))
    tests = []
    for a, b, metric in pairs:
        va, vb = comparator.per_seed(dataset, a, metric), comparator.per_seed(dataset, b, metric)
        t = comparator.test(dataset, a, b, metric) if len(va) and len(vb) else TestResult(math.nan, "", 0)
        tests.append((a, b, metric, va, vb, t))
    adjusted = holm([t.p_value for *_, t in tests])
    body = []
    for (a, b, metric, va, vb, t), p_holm in zip(tests, adjusted):
        name = METRIC_NAMES[metric]
        if not (len(va) and len(vb)):
            body.append([row_name(a, names), row_name(b, names), name, "n/a (no runs)", "n/a"])
            continue
        ref = float(vb.mean())
        scale = 100.0 / abs(ref) if ref else math.nan
        change = fmt_change((float(va.mean()) - ref) * scale, t.low * scale, t.high * scale, p_holm,
                            bool(math.isfinite(p_holm) and p_holm < 0.05),
                            seeds_only=t.test in ("paired", "welch"))  # fmt: skip
        body.append([row_name(a, names), row_name(b, names), name, change, _test_kind(t)])
    return [
        md_table(["UniGRF", "against", "test metric", "change [95 % interval] (p, Holm)", "test"], body),
        "",
        f"Each change: UniGRF's mean minus the baseline's in % of the baseline's mean, its 95 % "
        f"interval from a paired two-level bootstrap over the test users and the seeds both rows "
        f"finished (`unigrf.ablation.paired`; ‡: over seeds only, where a run kept no per-user "
        f"outcomes), p two-sided and Holm-corrected over the family of this table's tests "
        f"({sum(math.isfinite(p) for p in adjusted)} here); * corrected p < 0.05; n/a: no runs of a "
        f"row, or no test possible (< 3 seeds without outcomes).",
    ]


def headline(
    comparator: Comparator,
    dataset: str,
    names: Mapping[str, str],
    subset: Comparator | None = None,
    subset_anchors: Sequence[str] = (),
) -> tuple[list[str], ChosenTest | None]:
    """(c): the rows chosen on validation and their corrected test comparison. `subset`: the
    comparator on the users the `subset_anchors` evaluate; an anchor there competes with the
    best project baseline on those users (validation, both on the same users)."""
    ok = comparator.ok[comparator.ok["dataset"] == dataset]
    rows = list(dict.fromkeys(ok["row"]))
    joint = ok[ok["selection"] == "joint"] if "selection" in ok else ok.iloc[0:0]
    unified = [r for r in rows if _variant(r) == "unigrf" and r in set(joint["row"])]
    baselines = [r for r in rows if _variant(r) in SINGLE_TASK] + [r for r in rows if r in ANCHORS]
    metric = "val/ndcg@10"
    u_scores = validation_means(comparator, dataset, unified, metric)
    b_scores = validation_means(comparator, dataset, baselines, metric)
    s_scores = validation_means(subset, dataset, list(subset_anchors), metric) if subset is not None else {}
    if not any(math.isfinite(v) for v in u_scores.values()) or not any(
        math.isfinite(v) for v in (*b_scores.values(), *s_scores.values())
    ):
        return ["n/a: no one-checkpoint UniGRF row or no single-task baseline with validation metrics."], None
    row = choose_on_validation(u_scores, metric)
    where, note = comparator, ""
    if not s_scores:
        base = choose_on_validation(b_scores, metric)
    else:  # the subset anchors against the best project baseline, both on the anchors' users
        project = (
            choose_on_validation(b_scores, metric) if any(map(math.isfinite, b_scores.values())) else None
        )
        duel = {} if project is None else validation_means(subset, dataset, [project.chosen], metric)
        winner = choose_on_validation({**duel, **s_scores}, metric).chosen
        base = Choice(winner, metric, {**b_scores, **s_scores})
        if winner in subset_anchors:
            where = subset
            rival = names.get(project.chosen, project.chosen) if project is not None else "no project row"
            note = (f" {names.get(winner, winner)} evaluates fewer users than the project: it was chosen "
                    f"over {rival} on validation measured on its users, and the test comparison below is "
                    "on those users.")  # fmt: skip
    test = compare_chosen(where, dataset, row, base, "test/ndcg@10")

    def listing(scores: Mapping[str, float]) -> str:
        return ", ".join(f"{names.get(r, r)} {v:.4f}" for r, v in scores.items() if math.isfinite(v))

    change = fmt_change(test.rel_change, test.rel_low, test.rel_high, test.p_value, False,
                        seeds_only=test.test in ("paired", "welch"))  # fmt: skip
    lines = [
        f"Chosen on validation only (mean val NDCG@10 over seeds). One-checkpoint UniGRF rows: "
        f"{listing(u_scores)} → **{names.get(row.chosen, row.chosen)}**. Single-task baselines: "
        f"{listing({**b_scores, **s_scores})} → **{names.get(base.chosen, base.chosen)}**.{note}",
        "",
        f"On test (read once): {names.get(row.chosen, row.chosen)} {test.mean_row:.4f} against "
        f"{names.get(base.chosen, base.chosen)} {test.mean_baseline:.4f}, NDCG@10 {change} — the "
        f"interval at confidence 1 − 0.05/k = {test.level:.2%} and p × k, Bonferroni over the "
        f"k = {row.n_candidates} × {base.n_candidates} = {test.k} pairs the choice ranged over; test: "
        f"{_test_kind(test)}. Result: **{test.result}**"
        + (" (the corrected interval excludes 0)." if test.result != "inconclusive" else " (the corrected interval spans 0, or no test)."),
    ]  # fmt: skip
    return lines, test


def _ratio_line(comparator: Comparator, dataset: str, row: Choice, anchor_row: str, bar: float,
                names: Mapping[str, str], where: str = "") -> str:  # fmt: skip
    """The validation-chosen `row` over an anchor on test NDCG@10: the ratio of the means and its
    interval, corrected for the choice among `row`'s candidates (the anchor is fixed)."""
    who = f"{names.get(row.chosen, row.chosen)} / {anchor_row}"
    fixed = Choice(anchor_row, row.metric, {anchor_row: 1.0})
    t = compare_chosen(comparator, dataset, row, fixed, "test/ndcg@10")
    if not (math.isfinite(t.mean_row) and math.isfinite(t.mean_baseline)):
        return f"- {who}: n/a (no runs)"
    ratio = t.mean_row / t.mean_baseline
    low, high = (1 + x / t.mean_baseline for x in (t.low, t.high))
    interval = ""
    if math.isfinite(low):
        interval = f" [{low:.2f}, {high:.2f}]" + ("‡" if t.test in ("paired", "welch") else "")
    if ratio < bar:
        verdict = "not met"
    elif not math.isfinite(low):
        verdict = "met by the point estimate; no interval"
    elif low < bar:
        verdict = "met by the point estimate; the interval reaches below"
    else:
        verdict = "met, interval included"
    return (f"- {who}, test NDCG@10{where}: {ratio:.2f}×{interval} at {t.level:.1%} (k = {t.k}), "
            f"p × k = {_p(t.p_value)}; bar ≥ {bar:g}×: {verdict}")  # fmt: skip


def acceptance(
    comparator: Comparator,
    dataset: str,
    names: Mapping[str, str],
    chosen_unigrf: Choice | None,
    subset: Comparator | None,
    subset_anchors: Sequence[str],
    subset_users: int,
) -> list[str]:
    """(d): issue 35's acceptance lines."""
    ok = comparator.ok[comparator.ok["dataset"] == dataset]
    rows = list(dict.fromkeys(ok["row"]))
    item_only = [r for r in rows if _variant(r) == "item_only"]
    out = []
    scores = validation_means(comparator, dataset, item_only, "val/ndcg@10")
    chosen_item = (
        choose_on_validation(scores, "val/ndcg@10") if any(map(math.isfinite, scores.values())) else None
    )
    for anchor_row, bar in ((SASREC, BAR_SASREC), (RECBOLE, BAR_RECBOLE)):
        on_subset = anchor_row in subset_anchors and subset is not None
        comp = subset if on_subset else comparator
        if comp.per_seed(dataset, anchor_row, "test/ndcg@10").empty:
            out.append(f"- {anchor_row}: not run on this dataset (n/a)")
            continue
        where = (
            f" on its {subset_users:,} users (>= {ANCHOR_MIN_INTERACTIONS} interactions)" if on_subset else ""
        )
        for row, what in ((chosen_unigrf, "one-checkpoint UniGRF"), (chosen_item, "item-only")):
            if row is None:
                out.append(f"- validation-chosen {what} row / {anchor_row}: n/a (no {what} row)")
                continue
            out.append(_ratio_line(comp, dataset, row, anchor_row, bar, names, where))
    floor = comparator.floors.get(dataset)
    for b in BACKBONES:
        for variant in ("unigrf", "ranking_only"):
            row = f"{b}/{variant}"
            values = comparator.per_seed(dataset, row, "test/auc")
            if values.empty:
                continue
            if floor is None or not floor.measures("test/auc"):
                out.append(f"- {names.get(row, row)} test AUC − count model: n/a (no count model)")
                continue
            diff = float(values.mean()) - float(floor.values["test/auc"])
            t = comparator.test(dataset, row, COUNT_MODEL, "test/auc")
            interval = f" [{t.low:+.3f}, {t.high:+.3f}]" if math.isfinite(t.low) else " [n/a]"
            if t.test in ("paired", "welch"):
                interval += "‡"
            if math.isfinite(t.low) and t.low >= BAR_AUC:
                verdict = "met, interval included"
            elif diff >= BAR_AUC:
                verdict = "met by the point estimate only"
            else:
                verdict = "not met"
            out.append(f"- {names.get(row, row)} test AUC − count model: {diff:+.3f}{interval} "
                       f"({float(values.mean()):.3f} vs {float(floor.values['test/auc']):.3f}; bar +{BAR_AUC:g}: {verdict})")  # fmt: skip
    return out


@dataclass
class Views:
    """What a dataset's comparisons read: the Comparator on every user (`full`: the project's
    current rows and the anchors that evaluate the project's users) and, where an anchor
    evaluates fewer users, the Comparator on those users (`subset`: the project's rows
    recomputed there, and those anchors)."""

    full: Comparator
    subset: Comparator | None
    subset_anchors: list[str]
    users: np.ndarray  # the subset's users (empty without one)
    names: dict[str, str]  # comparator row -> the table's name
    dropped: list[str]  # cells whose stored outcomes do not give the CSV's numbers


def build_views(
    dataset: str,
    table: pd.DataFrame,
    outcomes: Mapping[str, Mapping[str, pd.DataFrame]] | None,
    floor: Floor | None,
    subset_users: Mapping[str, np.ndarray] | None = None,
    n_replicates: int = DEFAULT_REPLICATES,
    ks: Sequence[int] = (10, 50, 200),
    cascade_k: int = 10,
) -> Views:
    """The dataset's `Views` from its quality.csv rows (`table`: current, finished rows count),
    the runs' per-user outcomes (cell → split → frame) and the count model (`floor`)."""
    table = table.reindex(columns=[*COLUMNS, *(c for c in table.columns if c not in COLUMNS)])
    results = comparator_frame(table[table["dataset"] == dataset])
    kept, dropped = consistent_outcomes(results, outcomes or {})
    names = {
        r: label(s, sel, r) for r, s, sel in zip(results["row"], results["system"], results["selection"])
    }
    subset_users = dict(subset_users or {})
    subset_anchors = [a for a in subset_users if a in set(results["row"])]
    full = results[~results["row"].isin(subset_anchors)]
    floors = {dataset: floor} if floor is not None else {}
    subset = None
    users: np.ndarray = np.zeros(0, dtype=np.int64)
    if subset_anchors:
        users = np.asarray(subset_users[subset_anchors[0]])
        res, sub_outcomes, sub_floors = restrict_to_users(full, kept, users, ks, cascade_k, floors)
        anchors = results[results["row"].isin(subset_anchors)]
        subset = Comparator(
            pd.concat([res, anchors], ignore_index=True), sub_outcomes, sub_floors, n_replicates=n_replicates
        )
    full_comparator = Comparator(full, kept, floors, n_replicates=n_replicates)
    return Views(full_comparator, subset, subset_anchors, users, names, dropped)


def dataset_summary(
    dataset: str,
    table: pd.DataFrame,
    outcomes: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
    floor: Floor | None = None,
    *,
    context: Sequence[str] = (),
    subset_users: Mapping[str, np.ndarray] | None = None,
    sources: Sequence[str] = (),
    n_replicates: int = DEFAULT_REPLICATES,
    ks: Sequence[int] = (10, 50, 200),
    cascade_k: int = 10,
) -> str:
    """The dataset's summary (the module docstring, a–d) from its quality.csv rows (`table`),
    the runs' per-user outcomes (cell → split → frame), the count model (`floor`), and
    `subset_users`: anchor system → the project's users it evaluates, where fewer than ours."""
    table = table.reindex(columns=[*COLUMNS, *(c for c in table.columns if c not in COLUMNS)])
    table = table[(table["dataset"] == dataset) & (table["status"].fillna("ok") == "ok")]
    out = [f"# Quality on {dataset}", ""]
    if table.empty:
        return "\n".join([*out, "No finished runs.", ""])
    v = build_views(dataset, table, outcomes, floor, subset_users, n_replicates, ks, cascade_k)
    names, comparator, subset, subset_anchors, users = v.names, v.full, v.subset, v.subset_anchors, v.users
    dropped = v.dropped

    out += ["## Mean ± std over seeds", ""]
    out += main_table(table)
    earlier = sorted(set(table["protocol"]) - {CURRENT})
    out += [
        "",
        "val NDCG@10: at the selected checkpoint (the retrieval model's for two-stage); test metrics read "
        "once there. AUC/LogLoss only for rows with a ranking head, cascade columns only for rows with "
        "both stages: retrieval's top 100 re-ranked by log P(next) + λ·log P(like), λ chosen on "
        "validation (column λ, per seed); λ=0 is retrieval's order over the same liked users. "
        f"({TWO_SNAPSHOTS}): each stage tested at its own best epoch, two sets of weights. Popularity "
        "and the count model are deterministic (one row). "
        + (f"Protocol `earlier`: {'; '.join(earlier)} — shown, never compared or chosen." if earlier else ""),
    ]
    for line in context:
        out += ["", line]
    if subset is not None:
        out += ["", f"### The same users as {', '.join(subset_anchors)} ({len(users):,} users with >= "
                f"{ANCHOR_MIN_INTERACTIONS} interactions)", ""]  # fmt: skip
        body = []
        for row in dict.fromkeys(subset.ok["row"]):
            cells = [
                _fmt(subset.per_seed(dataset, row, m))
                for m in ("val/ndcg@10", "test/hr@10", "test/ndcg@10", "test/mrr")
            ]
            body.append(
                [names.get(row, row), str(len(subset.per_seed(dataset, row, "test/ndcg@10"))), *cells]
            )
        out.append(md_table(["system", "seeds", "val NDCG@10", "HR@10", "NDCG@10", "MRR"], body))
        out += ["", "The project's rows recomputed on those users from their per-user outcomes "
                "(`unigrf.ablation.user_subset`); a run without outcomes has no number here."]  # fmt: skip

    out += ["", "## Backbone-matched comparisons (test)", ""]
    out += matched_comparisons(comparator, dataset, names)
    out += ["", "## Headline (chosen on validation, corrected for the choice)", ""]
    lines, chosen = headline(comparator, dataset, names, subset, subset_anchors)
    out += lines
    out += ["", "## Acceptance (issue 35)", ""]
    out += acceptance(
        comparator, dataset, names, chosen.row if chosen else None, subset, subset_anchors, len(users)
    )
    out += [
        "",
        "Ratios: mean test NDCG@10 over seeds, side by side (the anchors run on the same data), of "
        "the rows chosen on validation (the UniGRF row of the headline, the item-only row with the "
        "best mean val NDCG@10); the interval maps the difference's interval onto the ratio with the "
        "anchor's mean fixed, Bonferroni-corrected for the choice among k candidates (1 − 0.05/k). "
        "The anchors keep no per-user outcomes: their comparisons are over seeds only (‡, n/a below 3 "
        "seeds). AUC − count model: the count model's outcomes are this dataset's, so the interval is "
        "over test users and seeds where the row kept outcomes.",
    ]
    notes = []
    if dropped:
        notes.append(f"stored outcomes left out (they do not give the CSV's numbers): {', '.join(dropped)}")
    if sources:
        notes.append(f"per-user outcomes read from: {', '.join(sources)}")
    if notes:
        out += ["", *(f"Note: {n}." for n in notes)]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def stored_outcomes(report_dirs: Sequence[Path]) -> dict[str, dict[str, pd.DataFrame]]:
    """cell → split → outcomes of the finished runs of these report directories (a later
    directory's run replaces an earlier one's)."""
    from unigrf.ablation.outcome_store import load_outcomes

    out: dict[str, dict[str, pd.DataFrame]] = {}
    for d in report_dirs:
        results = pd.read_csv(Path(d) / "results.csv")
        finished = results.loc[results["status"] == "ok", "cell"].astype(str)
        out.update(load_outcomes(d, finished))
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--rows", nargs="+", default=None, help="a subset of the grid's rows, e.g. hstu/unigrf"
    )
    parser.add_argument("--epochs", type=int, default=200, help="SASRec.pytorch epochs")
    parser.add_argument("--anchor-eval-every", type=int, default=10)
    parser.add_argument("--recbole-env", type=Path, default=None,
                        help="run RecBole's SASRec from this environment (built there when missing; slow)")  # fmt: skip
    parser.add_argument("--recbole-epochs", type=int, default=200, help="RecBole's epochs (it stops early)")
    parser.add_argument("--results-dir", type=Path, default=REPO / "results")
    parser.add_argument(
        "--reuse-from",
        nargs="+",
        default=[],
        metavar="REPORT_DIR",
        help="other grids' report directories (e.g. <results-dir>/ablations/paper-movietweetings): "
        "cells they finished under the same config and data are copied, not trained again",
    )
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="the grid's runs at once (default: one per free CPU)")  # fmt: skip
    parser.add_argument(
        "--csv", type=Path, default=CSV, help="the table to update (default benchmarks/quality.csv)"
    )
    parser.add_argument("--report-dir", type=Path, default=REPORTS,
                        help="write <report-dir>/<dataset>/README.md (default reports/quality)")  # fmt: skip
    parser.add_argument("--reports", nargs="*", type=Path, default=[],
                        help="more grid report directories whose per-user outcomes the comparisons read")  # fmt: skip
    parser.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES, help="bootstrap replicates")
    parser.add_argument("--skip-grid", action="store_true", help="keep the project's rows already in the CSV")
    parser.add_argument(
        "--skip-anchor", action="store_true", help="keep SASRec.pytorch's rows already in the CSV"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    from unigrf.training.prepared import load_data

    args = parse_args(argv)
    command = "python benchmarks/quality_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    parts, report_dirs, floors, context, subsets = [], [], {}, {}, {}
    for dataset in args.datasets:
        cfg = dataset_config(dataset, args.results_dir)
        data = load_data(cfg)
        rows, floors[dataset] = floor_rows(dataset, cfg, data, command)
        parts.append(rows)
        context[dataset] = [data_line(data), tokens_line(data, cfg.data.train_windows)]
        theirs = anchor_users(data)
        if ANCHOR[dataset][0] not in anchor.DATASETS and len(theirs) < int((data.lengths >= 3).sum()):
            subsets[dataset] = {SASREC: theirs}  # fed our sequences: fewer users than ours
        if not args.skip_anchor:
            parts.append(sasrec_rows(args, dataset, data, command))
        if args.recbole_env is not None:
            parts.append(recbole_rows(args, dataset, data, command))
        if not args.skip_grid:
            rows, report_dir = run_grid(args, dataset, command)
            parts.append(rows)
            report_dirs.append(report_dir)
        else:
            stored = Path(args.results_dir) / "ablations" / grid_spec(dataset, args.seeds, args.rows).name
            if (stored / "results.csv").exists():
                report_dirs.append(stored)
    # measure first, read the CSV last: two invocations on different datasets or rows may
    # overlap, and each keeps what the other wrote
    frame = merge_rows(read_table(args.csv), pd.concat([p for p in parts if not p.empty], ignore_index=True))
    write_table(frame, args.csv)
    report_dirs += list(args.reports)
    outcomes = stored_outcomes(report_dirs)
    eval_cfg = dataset_config(args.datasets[0], args.results_dir).eval
    for dataset in args.datasets:
        text = dataset_summary(
            dataset,
            frame,
            outcomes,
            floors[dataset],
            context=context[dataset],
            subset_users=subsets.get(dataset),
            sources=[str(d) for d in report_dirs],
            n_replicates=args.replicates,
            ks=eval_cfg.ks,
            cascade_k=eval_cfg.cascade_k,
        )
        print(text, flush=True)
        if args.report_dir is not None:
            path = Path(args.report_dir) / dataset / "README.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + f"\nCommand: `{command}`; table: {args.csv}.\n")
            print(f"written: {path}")
    print(f"written: {args.csv}")


if __name__ == "__main__":
    main()
