"""Search versus random: best validation objective after k trials, for two sweeps of one space.

Reads each sweep's `trials.csv` (the best epoch's objective of every trial, ASHA-stopped ones
included) and its Optuna study (the order the trials were drawn in), and prints a Markdown table
of the best-so-far objective after every trial count in `--at`, plus each sweep's best trial.

    .venv/bin/python reports/sweep-ml-100k/compare.py results/tune/ml-100k results/tune/ml-100k-random
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
import pandas as pd


def best_so_far(sweep_dir: Path) -> pd.Series:
    """Running maximum of the trials' objectives in the order Optuna drew them [num trials]."""
    summary = json.loads((sweep_dir / "summary.json").read_text())
    table = pd.read_csv(sweep_dir / "trials.csv").set_index("trial_id")
    study = optuna.load_study(study_name=summary["name"], storage=summary["study_storage"])
    order = [t.user_attrs["tune_trial_id"] for t in sorted(study.trials, key=lambda t: t.number)]
    order = [t for t in order if t in table.index]  # FAIL-ed orphans of a crash never ran
    return table.loc[order, "objective"].cummax().reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep directories (<results>/tune/<name>)")
    parser.add_argument("--at", type=int, nargs="+", default=[4, 8, 12], help="trial counts to report")
    args = parser.parse_args()
    curves = {d.name: best_so_far(d) for d in args.sweeps}
    print("| trials | " + " | ".join(curves) + " |")
    print("|---:|" + "---:|" * len(curves))
    for k in args.at:
        cells = [f"{c.iloc[k - 1]:.4f}" if len(c) >= k else "—" for c in curves.values()]
        print(f"| {k} | " + " | ".join(cells) + " |")
    for d in args.sweeps:
        table = pd.read_csv(d / "trials.csv")
        best = table.iloc[0]
        counts = table["status"].value_counts().to_dict()
        print(
            f"\n{d.name}: best trial {best['trial_id']} objective {best['objective']:.4f} "
            f"(test NDCG@10 {best.get('test/ndcg@10', float('nan')):.4f}); trials {counts}"
        )


if __name__ == "__main__":
    main()
