"""The quality table: the project's models, SASRec.pytorch and popularity on the same data
under the same protocol (SPEC §2: leave-one-out, full ranking over every item, history
masked), ≥ 3 seeds, one row per run in benchmarks/quality.csv.

1. the project: `ablations/quality.yaml` through the ablation layer (`unigrf ablate`): every
   cell is the config tree's defaults — the recipe — with only data keys set;
2. SASRec.pytorch (`../shared/anchors/sasrec_pytorch/`, run from a temporary copy by
   benchmarks/anchor.py) at its published settings (maxlen 200 on MovieLens, 50 on Amazon,
   `--epochs`, full-ranking evaluation every `--anchor-eval-every` epochs): the test metrics
   of its best-validation evaluation, as model selection on validation does for ours;
3. popularity (training counts, history masked), computed here.

Then prints, per dataset, the mean ± std table and the paired t-tests (over seeds) of the best
UniGRF row against the strongest single-task baseline, and writes its rows into
benchmarks/quality.csv: each replaces the row of the same dataset, system and seed; all other
rows are kept (`merge_rows`).

    python benchmarks/quality_bench.py                                  # both datasets, seeds 0-2
    python benchmarks/quality_bench.py --datasets amazon-mi --seeds 0 1 2 3 4
    python benchmarks/quality_bench.py --skip-grid                      # anchor + tables only
    python benchmarks/quality_bench.py --datasets ml-100k --rows sasrec/item_only hstu/unigrf --skip-anchor
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchor import run_anchor  # noqa: E402

from unigrf.config import variant_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "benchmarks" / "quality.csv"
GRID = REPO / "ablations" / "quality.yaml"
# grid dataset name -> (anchor dataset name, anchor maxlen)
ANCHOR = {"ml-100k": ("ml100k", 200), "amazon-mi": ("ami", 50)}
METRICS = [
    "test/hr@10", "test/ndcg@10", "test/hr@50", "test/ndcg@50", "test/hr@200", "test/ndcg@200", "test/mrr",
    "test/auc", "test/logloss", "test/cascade_hr@10", "test/cascade_ndcg@10",
]  # fmt: skip
ANCHOR_KEYS = {
    "HR@10": "test/hr@10",
    "NDCG@10": "test/ndcg@10",
    "HR@50": "test/hr@50",
    "NDCG@50": "test/ndcg@50",
    "MRR": "test/mrr",
}
LOSS_NAMES = {"full_softmax": "CE", "sampled_softmax": "sampled softmax", "bce": "BCE", "gbce": "gBCE"}
BACKBONE_NAMES = {"hstu": "HSTU", "llama": "Llama", "sasrec": "SASRec"}


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


def grid_rows(args: argparse.Namespace) -> pd.DataFrame:
    """Run (or resume) the quality grid; its results as quality.csv rows."""
    from unigrf.ablation.grid import load_grid
    from unigrf.ablation.runner import run_ablation

    spec = load_grid(GRID).with_seeds(max(args.seeds) + 1).subset(args.datasets, args.rows)
    report_dir, _ = run_ablation(
        spec,
        {"results_dir": str(args.results_dir)},
        resume=(Path(args.results_dir) / "ablations" / spec.name).exists(),
        command=f"python benchmarks/quality_bench.py {' '.join(sys.argv[1:])}",
    )
    results = pd.read_csv(report_dir / "results.csv")
    configs = yaml.safe_load((report_dir / "configs.yaml").read_text())
    rows = []
    for rec in results.to_dict("records"):
        if rec["dataset"] not in args.datasets or rec["seed"] not in args.seeds:
            continue
        loss = configs[rec["cell"]]["loss"]["retrieval"]
        row = {
            "dataset": rec["dataset"],
            "system": system_name(rec["backbone"], rec["variant"], loss),
            "seed": int(rec["seed"]),
            "epochs": rec.get("epochs_run"),
            "best_epoch": rec.get("best_epoch"),
            "wall_s": rec.get("time_s"),
            "status": rec["status"],
            "command": f"python benchmarks/quality_bench.py {' '.join(sys.argv[1:])} (grid {spec.name}, cell {rec['cell']})",
        }
        spec_v = variant_spec(_cfg(configs[rec["cell"]]))
        for m in METRICS:
            value = rec.get(m, np.nan)
            undefined = (
                (not spec_v.ranking and m.split("/")[1] in ("auc", "logloss"))
                or (m.startswith("test/cascade") and not (spec_v.ranking and spec_v.retrieval))
                or (not spec_v.retrieval and not m.startswith(("test/auc", "test/logloss")))
            )
            row[m] = np.nan if undefined else value
        rows.append(row)
    return pd.DataFrame(rows)


def _cfg(d: dict):
    from unigrf.config import config_from_dict

    return config_from_dict(d)


def anchor_rows(args: argparse.Namespace) -> pd.DataFrame:
    rows = []
    for dataset in args.datasets:
        name, maxlen = ANCHOR[dataset]
        for seed in args.seeds:
            start = time.perf_counter()
            run = run_anchor(
                name,
                epochs=args.epochs,
                maxlen=maxlen,
                seed=seed,
                threads=1,
                full_eval_every=args.anchor_eval_every,
            )
            best = max(run.evaluations, key=lambda e: e["valid"]["NDCG@10"])
            row = {
                "dataset": dataset,
                "system": "SASRec.pytorch",
                "seed": seed,
                "epochs": args.epochs,
                "best_epoch": best["epoch"],
                "wall_s": time.perf_counter() - start,
                "status": "ok",
                "command": f"python benchmarks/quality_bench.py --skip-grid --datasets {dataset} --seeds {seed} "
                f"(SASRec.pytorch main.py {' '.join(run.args)})",
            }
            row.update({m: np.nan for m in METRICS})
            row.update({ours: best["test"][theirs] for theirs, ours in ANCHOR_KEYS.items()})
            rows.append(row)
            print(f"SASRec.pytorch {dataset} seed {seed}: test NDCG@10 {row['test/ndcg@10']:.4f} "
                  f"(best validation at epoch {best['epoch']}, {row['wall_s']:.0f} s)", flush=True)  # fmt: skip
    return pd.DataFrame(rows)


def popularity_rows(args: argparse.Namespace) -> pd.DataFrame:
    from unigrf.config import load_config
    from unigrf.evaluation import popularity_baseline
    from unigrf.training.prepared import load_data

    data_keys = {
        "ml-100k": ["data.dataset=ml-100k", f"data.data_dir={REPO.parent / 'shared/data/ml-100k'}"],
        "amazon-mi": [
            "data.dataset=amazon-reviews",
            f"data.data_dir={REPO.parent / 'shared/data/amazon_musical_instruments_5core'}",
        ],
    }
    rows = []
    for dataset in args.datasets:
        cfg = load_config(None, [*data_keys[dataset], f"results_dir={args.results_dir}"])
        pop = popularity_baseline(load_data(cfg), "test", cfg.eval)
        row = {
            "dataset": dataset,
            "system": "popularity",
            "seed": 0,
            "epochs": 0,
            "best_epoch": np.nan,
            "wall_s": 0.0,
        }
        row.update(
            {
                "status": "ok",
                "command": "python benchmarks/quality_bench.py (popularity_baseline, test split)",
            }
        )
        row.update({m: pop.get(m.split("/")[1], np.nan) for m in METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> str:
    """Per dataset: mean ± std per system, and the best UniGRF against the strongest
    single-task retriever (paired over seeds). Only finished runs count: a failed run's row
    (kept in the CSV until a rerun replaces it) is not a seed."""
    if "status" in frame:
        frame = frame[frame["status"].fillna("ok") == "ok"]
    out = []
    cols = [
        "test/hr@10",
        "test/ndcg@10",
        "test/ndcg@50",
        "test/mrr",
        "test/auc",
        "test/logloss",
        "test/cascade_ndcg@10",
    ]
    for dataset, ds in frame.groupby("dataset", sort=False):
        out += ["", f"### {dataset}", "", "| system | seeds | " + " | ".join(cols) + " | epochs | wall s |"]
        out.append("|" + "---|" * (len(cols) + 4))
        for system, g in ds.groupby("system", sort=False):
            cells = []
            for c in cols:
                v = g[c].dropna()
                cells.append(
                    "—"
                    if v.empty
                    else (f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}")
                )
            out.append(
                f"| {system} | {len(g)} | "
                + " | ".join(cells)
                + f" | {g['epochs'].mean():.0f} | {g['wall_s'].mean():.0f} |"
            )
        unified = ds[ds["system"].str.startswith("UniGRF")]
        single = ds[ds["system"].str.startswith(("item-only", "retrieval-only", "SASRec.pytorch"))]
        if unified.empty or single.empty:
            continue
        best_u = unified.groupby("system")["test/ndcg@10"].mean().idxmax()
        best_s = single.groupby("system")["test/ndcg@10"].mean().idxmax()
        a = unified[unified["system"] == best_u].set_index("seed")["test/ndcg@10"]
        b = single[single["system"] == best_s].set_index("seed")["test/ndcg@10"]
        seeds = a.index.intersection(b.index)
        if len(seeds) >= 2:
            t = stats.ttest_rel(a[seeds], b[seeds])
            diff = (a[seeds] - b[seeds]).mean()
            out += ["", f"{best_u} vs {best_s}, test NDCG@10, paired over seeds {list(seeds)}: "
                    f"{diff:+.4f} ({diff / b[seeds].mean():+.1%}), t = {t.statistic:.2f}, p = {t.pvalue:.3f}"]  # fmt: skip
    return "\n".join(out)


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """quality.csv after a run: the run's rows replace the rows with the same (dataset, system,
    seed); every other row is kept (other datasets, rows a --rows subset did not run, the
    anchor's rows under --skip-anchor)."""
    key = ["dataset", "system", "seed"]
    if new.empty:
        return old
    replaced = old.merge(new[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"] == "both"
    return pd.concat([old[~replaced.to_numpy()], new], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(ANCHOR), choices=list(ANCHOR))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--rows",
        nargs="+",
        default=None,
        help="a subset of the grid's rows, e.g. sasrec/item_only hstu/unigrf",
    )
    parser.add_argument("--epochs", type=int, default=200, help="SASRec.pytorch epochs")
    parser.add_argument("--anchor-eval-every", type=int, default=10)
    parser.add_argument("--results-dir", type=Path, default=REPO / "results")
    parser.add_argument("--skip-grid", action="store_true", help="keep the project's rows already in the CSV")
    parser.add_argument(
        "--skip-anchor", action="store_true", help="keep SASRec.pytorch's rows already in the CSV"
    )
    args = parser.parse_args()
    # measure first, read the CSV last: two invocations on different datasets or rows (or one
    # running the anchor, another the grid) may overlap, and each keeps what the other wrote
    parts = [popularity_rows(args)]
    if not args.skip_anchor:
        parts.append(anchor_rows(args))
    if not args.skip_grid:
        parts.append(grid_rows(args))
    old = pd.read_csv(CSV) if CSV.exists() else pd.DataFrame(columns=["dataset", "system", "seed"])
    frame = merge_rows(old, pd.concat([p for p in parts if not p.empty], ignore_index=True))
    frame = frame.sort_values(["dataset", "system", "seed"], kind="stable")
    frame.to_csv(CSV, index=False, float_format="%.6g")
    print(summary(frame[frame["dataset"].isin(args.datasets)]))
    print(f"\nwritten: {CSV}")


if __name__ == "__main__":
    main()
