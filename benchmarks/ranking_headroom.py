"""How far above the count model can a ranker get on this data? A feature model as a yardstick.

Issue 35 asks every ranker for test AUC ≥ the count model + 0.02. Whether that bar can be met
depends on the data as much as on the model: AUC is global over one held-out event per user,
so it is mostly who the user is and what the item is, which the count model already has. This
benchmark measures the headroom with a model that needs no training loop: a logistic regression
on count statistics of what the sequence model sees before each target — the count model's two
log-odds, the user's like rate and mean rating over the whole history and over the last 1, 3, 5
and 10 events, history length, rating spread, time since the previous event, and the item's
mean rating and count on the training part. Two learners (a logistic regression, shallow
boosted trees) are fitted on the **validation** targets; the one with the better 5-fold
cross-validated AUC there is scored once on the test targets.

Per dataset (the quality grid's data keys on the defaults), printed and with `--out DIR` written
as DIR/ranking_headroom.json (RESULTS.md's table, `benchmarks/tables.py`):
users, test negatives (the minority class), the count model's test AUC, the feature model's,
their difference with DeLong's paired standard error and p, and 1.96 × that standard error (the
smallest difference a test over these users can tell from zero: where it is near 0.02 the bar
sits at the noise level of a single run).

    python benchmarks/ranking_headroom.py --results-dir results
    python benchmarks/ranking_headroom.py --results-dir results --out benchmarks/current
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
WINDOWS = (1, 3, 5, 10)
FEATURES = (
    "count: user log-odds",
    "count: item log-odds",
    "count: sum",
    *[f"user like rate, {k}" for k in ("all", *(f"last {w}" for w in WINDOWS))],
    *[f"user mean rating, {k}" for k in ("all", *(f"last {w}" for w in WINDOWS))],
    "log history length",
    "user rating spread",
    "log seconds since previous",
    "item mean rating",
    "log item count",
)


def _smoothed(total: float, count: int, prior: float, k: float) -> float:
    return (total + k * prior) / (count + k)


def features(data, model, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X [U, len(FEATURES)], like labels [U], the count model's logits [U]) for every scored
    user's `split` target, from the interactions before it (for test, the validation event is
    history) and the training part's item statistics."""
    from unigrf.evaluation.count_model import PSEUDO_COUNTS

    users = np.flatnonzero(data.lengths >= 3)
    target = data.offsets[users] + data.lengths[users] - (2 if split == "val" else 1)
    items = data.items[target]
    labels = (data.ratings[target] >= data.like_threshold).astype(np.int8)
    low, high = float(data.rating_values.min()), float(data.rating_values.max())
    scaled = (data.ratings - low) / (high - low) if high > low else np.zeros_like(data.ratings)
    liked = (data.ratings >= data.like_threshold).astype(np.float64)
    train = data.train_mask()
    rating_prior = float(scaled[train].mean())
    rows = []
    for user, end in zip(users, target, strict=True):
        past = slice(data.offsets[user], end)
        likes, values = liked[past], scaled[past]
        rate = _smoothed(likes.sum(), len(likes), model.global_rate, PSEUDO_COUNTS)
        mean = _smoothed(values.sum(), len(values), rating_prior, PSEUDO_COUNTS)
        row = [rate, *(_smoothed(likes[-w:].sum(), len(likes[-w:]), rate, 2.0) for w in WINDOWS)]
        row += [mean, *(_smoothed(values[-w:].sum(), len(values[-w:]), mean, 2.0) for w in WINDOWS)]
        gap = max(int(data.timestamps[end]) - int(data.timestamps[end - 1]), 0) if end > past.start else 0
        row += [math.log1p(len(likes)), float(values.std()) if len(values) else 0.0, math.log1p(gap)]
        rows.append(row)
    sums = np.bincount(data.items[train], weights=scaled[train], minlength=data.num_items + 1)
    counts = np.bincount(data.items[train], minlength=data.num_items + 1)
    item_mean = (sums + PSEUDO_COUNTS * rating_prior) / (counts + PSEUDO_COUNTS)
    logits = model.like_logits(users, items)
    x = np.column_stack(
        [
            model.user[users],
            model.item[items],
            logits,
            np.asarray(rows),
            item_mean[items],
            np.log1p(counts[items]),
        ]
    )
    return x, labels, logits


def learners() -> dict[str, object]:
    """The two feature models: a logistic regression (its C chosen by 5-fold CV) and gradient-
    boosted trees (shallow, early-stopped on a validation split of their own)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic regression": make_pipeline(
            StandardScaler(),
            LogisticRegressionCV(
                Cs=np.logspace(-3, 1, 9),
                l1_ratios=(0.0,),
                cv=5,
                scoring="roc_auc",
                max_iter=5000,
                use_legacy_attributes=False,
            ),
        ),
        "boosted trees": HistGradientBoostingClassifier(
            max_depth=3, learning_rate=0.05, max_iter=300, early_stopping=True, random_state=0
        ),
    }


def headroom(data) -> dict[str, float]:
    """Fit on validation, score test once: the count model's test AUC, and the feature model's
    — the learner with the better 5-fold cross-validated AUC on the validation targets — with
    their DeLong comparison."""
    from sklearn.model_selection import cross_val_score

    from unigrf.ablation.paired import delong_test
    from unigrf.evaluation.count_model import fit_count_model
    from unigrf.evaluation.metrics import auc

    model = fit_count_model(data)
    x_val, y_val, _ = features(data, model, "val")
    x_test, y_test, count_logits = features(data, model, "test")
    cv = {
        name: float(cross_val_score(m, x_val, y_val, cv=5, scoring="roc_auc").mean())
        for name, m in learners().items()
    }
    chosen = max(cv, key=cv.get)
    learner = learners()[chosen].fit(x_val, y_val)
    scores = learner.predict_proba(x_test)[:, 1]
    test = delong_test([scores], [count_logits], y_test)
    return {
        "users": int(len(y_test)),
        "test_negatives": int(min((y_test == 0).sum(), (y_test == 1).sum())),
        "count_auc": float(auc(y_test, count_logits)),
        "feature_auc": float(auc(y_test, scores)),
        "difference": test.difference,
        "se": test.se,
        "p": test.p_value,
        "detectable": 1.96 * test.se,
        "learner": chosen,
        "validation_cv_auc": cv,
    }


def table(results: dict[str, dict[str, float]], command: str):
    """The RESULTS.md table (`common.Table`, name "ranking_headroom")."""
    from common import Table

    rows = [
        [
            name,
            f"{r['users']:,}",
            f"{r['test_negatives']:,}",
            f"{r['count_auc']:.4f}",
            f"{r['feature_auc']:.4f} ({r['learner']})",
            f"{r['difference']:+.4f} ({r['se']:.4f}, p {r['p']:.2g})",
            f"{r['detectable']:.4f}",
        ]
        for name, r in results.items()
    ]
    return Table(
        name="ranking_headroom",
        title="Test AUC: the count model and a feature model fitted on validation",
        columns=[
            "dataset",
            "test users",
            "minority class",
            "count model",
            "feature model (learner chosen by CV on validation)",
            "difference (DeLong SE, p)",
            "1.96 SE",
        ],  # fmt: skip
        rows=rows,
        command=command,
        machine="numpy / scikit-learn, deterministic",
        notes="features: " + "; ".join(FEATURES),
        align=["l", "r", "r", "r", "r", "r", "r"],
    )


def main(argv: Sequence[str] | None = None) -> None:
    from quality_bench import DATASETS, dataset_config

    from unigrf.training.prepared import load_data

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--results-dir", type=Path, default=REPO / "results")
    parser.add_argument("--out", type=Path, default=None,
                        help="write DIR/ranking_headroom.json (the RESULTS.md table; benchmarks/tables.py)")  # fmt: skip
    args = parser.parse_args(argv)
    results = {}
    for name in args.datasets:
        data = load_data(dataset_config(name, args.results_dir))
        results[name] = headroom(data)
    command = "python benchmarks/ranking_headroom.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = table(results, command)
    print(result.markdown())
    print(json.dumps(results, indent=1))
    if args.out is not None:
        from common import write_json

        print(f"wrote {write_json(result, args.out)}")


if __name__ == "__main__":
    sys.exit(main())
