"""How far above the count model can a ranker get on this data? Three yardsticks.

Issue 35 asks every ranker for test AUC ≥ the count model + 0.02. Whether that bar can be met
depends on the data as much as on the model: AUC is global over one held-out event per user,
so it is mostly who the user is and what the item is, which the count model already has. This
benchmark measures the headroom with three models that are cheap to fit and tune honestly (every
choice on the **validation** targets, the test targets scored once):

* **feature model** — a logistic regression on count statistics of what the sequence model sees
  before each target: the count model's two log-odds, the user's like rate and mean rating over
  the whole history and over the last 1, 3, 5 and 10 events, history length, rating spread, time
  since the previous event, and the item's mean rating and count on the training part. Two
  learners (a logistic regression, shallow boosted trees) are fitted on the validation targets;
  the one with the better 5-fold cross-validated AUC there is scored on test.
* **logistic MF** — collaborative filtering, the user–item *affinity* the counts cannot have:
  p(like | u, i) = σ(b + b_u + b_i + p_u·q_i), fitted full-batch (Adam, seeded) on the training
  part's (user, item, like) events — the count model's training part, each user's events before
  the validation target — with L2 on biases and factors. Its dimension and factor L2 (MF_DIMS ×
  MF_L2) and its number of steps (early stopping) are chosen on the validation targets' AUC. A
  user or item with no training event has zero factors and bias: it falls back to the biases.
* **stacked** — the feature model with the MF's logit and its dot product p_u·q_i as two more
  features, its learner chosen by CV on validation as the feature model's is.

If none of the three reaches count + 0.02, the bar is beyond what counts, recency and affinity
give on that data; if one does and the project's ranker does not, the ranker is short.

Per dataset and yardstick (the quality grid's data keys on the defaults), printed and with
`--out DIR` written as DIR/ranking_headroom.json (RESULTS.md's table, `benchmarks/tables.py`):
users, test negatives (the minority class), the count model's test AUC, the yardstick's, their
difference with DeLong's paired standard error and p, and 1.96 × that standard error (the
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
from dataclasses import dataclass
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
STACKED = (*FEATURES, "MF logit", "MF dot product")
MF_DIMS = (8, 32)
MF_L2 = (1.0, 3.0, 10.0, 30.0)  # on the factors: pseudo-events per user / item row (module doc)
MF_BIAS_L2 = 1.0  # on b_u, b_i: light, as the count model's 5 pseudo-counts are
MF_STEPS = 300  # full-batch Adam steps at most
MF_EVAL_EVERY = 10  # validation AUC every this many steps; the best step's parameters are kept
MF_PATIENCE = 50  # stop after this many steps without a better validation AUC
MF_LR = 0.03


def _smoothed(total: float, count: int, prior: float, k: float) -> float:
    return (total + k * prior) / (count + k)


def targets(data, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users [U], items [U], like labels [U] int8) of every scored user's (>= 3 interactions,
    as the evaluation scores them) `split` target: the second-to-last event for "val", the last
    for "test"."""
    users = np.flatnonzero(data.lengths >= 3)
    target = data.offsets[users] + data.lengths[users] - (2 if split == "val" else 1)
    labels = (data.ratings[target] >= data.like_threshold).astype(np.int8)
    return users, data.items[target].astype(np.int64), labels


def features(data, model, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X [U, len(FEATURES)], like labels [U], the count model's logits [U]) for every scored
    user's `split` target, from the interactions before it (for test, the validation event is
    history) and the training part's item statistics."""
    from unigrf.evaluation.count_model import PSEUDO_COUNTS

    users, items, labels = targets(data, split)
    target = data.offsets[users] + data.lengths[users] - (2 if split == "val" else 1)
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


@dataclass(frozen=True)
class LogisticMF:
    """A fitted logistic MF: logit p(like | u, i) = bias + user_bias[u] + item_bias[i] +
    user_factors[u]·item_factors[i]; rows of users and items without a training event are zero."""

    bias: float
    user_bias: np.ndarray  # [num_users]
    item_bias: np.ndarray  # [num_items + 1] (index 0 = padding, zero)
    user_factors: np.ndarray  # [num_users, dim]
    item_factors: np.ndarray  # [num_items + 1, dim]
    l2: float
    steps: int  # the chosen step (early stopping on validation AUC)
    val_auc: float

    @property
    def dim(self) -> int:
        return self.user_factors.shape[1]

    def dots(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[B] p_u·q_i: the affinity part alone."""
        return np.einsum("bd,bd->b", self.user_factors[users], self.item_factors[items])

    def logits(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[B] logit p(like) of each (user, item) pair."""
        return self.bias + self.user_bias[users] + self.item_bias[items] + self.dots(users, items)


def training_events(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users [N], items [N], likes [N] float) of the training part (`SequenceData.train_mask`:
    each user's events before the validation target), what the count model counts too."""
    train = data.train_mask()
    users = np.repeat(np.arange(data.num_users), data.lengths)[train]
    likes = (data.ratings[train] >= data.like_threshold).astype(np.float64)
    return users, data.items[train].astype(np.int64), likes


def fit_mf(data, dim: int, l2: float, val: tuple, seed: int = 0) -> LogisticMF:
    """The MF of `dim` factors and factor L2 `l2` on the training events, full-batch Adam for at
    most MF_STEPS steps; every MF_EVAL_EVERY steps the AUC on `val` (users [V], items [V], labels
    [V]) is read and the best step's parameters kept, stopping MF_PATIENCE steps after it.

    The L2 is summed over rows, not events: a prior per user and item that its own events
    outweigh (heavy users' biases move as far as their data say, light users' stay near the
    global rate, as the count model's pseudo-counts do); per-event L2 would shrink every user
    alike. Float64, one seeded generator: the same data give the same model."""
    import torch

    from unigrf.evaluation.metrics import auc

    users, items, likes = training_events(data)
    n_users, n_items = data.num_users, data.num_items + 1
    seen_u = torch.as_tensor(np.bincount(users, minlength=n_users) > 0)
    seen_i = torch.as_tensor(np.bincount(items, minlength=n_items) > 0)
    gen = torch.Generator().manual_seed(seed)
    # unseen rows start at zero and get no gradient but the L2's (zero there): they stay zero
    p = (0.1 * torch.randn(n_users, dim, generator=gen, dtype=torch.float64) * seen_u[:, None]).requires_grad_()  # fmt: skip
    q = (0.1 * torch.randn(n_items, dim, generator=gen, dtype=torch.float64) * seen_i[:, None]).requires_grad_()  # fmt: skip
    b_u = torch.zeros(n_users, dtype=torch.float64, requires_grad=True)
    b_i = torch.zeros(n_items, dtype=torch.float64, requires_grad=True)
    rate = float(np.clip(likes.mean(), 1e-3, 1 - 1e-3))
    b = torch.tensor(math.log(rate / (1 - rate)), dtype=torch.float64, requires_grad=True)
    u, i, y = torch.as_tensor(users), torch.as_tensor(items), torch.as_tensor(likes)
    vu, vi = torch.as_tensor(val[0]), torch.as_tensor(val[1])
    optimizer = torch.optim.Adam([p, q, b_u, b_i, b], lr=MF_LR)
    best, best_step, state = -math.inf, 0, None
    for step in range(1, MF_STEPS + 1):
        optimizer.zero_grad()
        logit = b + b_u[u] + b_i[i] + (p[u] * q[i]).sum(1)
        factors = p.square().sum() + q.square().sum()
        penalty = l2 * factors + MF_BIAS_L2 * (b_u.square().sum() + b_i.square().sum())
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y) + penalty / len(y)
        loss.backward()
        optimizer.step()
        if step % MF_EVAL_EVERY:
            continue
        with torch.no_grad():
            score = float(auc(val[2], (b + b_u[vu] + b_i[vi] + (p[vu] * q[vi]).sum(1)).numpy()))
        if score > best:
            best, best_step = score, step
            state = [t.detach().numpy().copy() for t in (b, b_u, b_i, p, q)]
        elif step - best_step >= MF_PATIENCE:
            break
    return LogisticMF(float(state[0]), *state[1:], l2=l2, steps=best_step, val_auc=best)


def choose_mf(data) -> tuple[LogisticMF, dict[str, float]]:
    """The MF with the best validation AUC over MF_DIMS × MF_L2 (and its early-stopped step),
    and every grid point's validation AUC. Reads the training part and the validation targets
    only: the test targets play no part in the choice."""
    val = targets(data, "val")
    fits = [fit_mf(data, dim, l2, val) for dim in MF_DIMS for l2 in MF_L2]
    grid = {f"dim {m.dim}, L2 {m.l2:g}": m.val_auc for m in fits}
    return max(fits, key=lambda m: m.val_auc), grid


def fit_learner(x_val: np.ndarray, y_val: np.ndarray):
    """(name, {learner: 5-fold CV AUC on validation}, the chosen learner refitted on all the
    validation targets) for X [V, F], y [V]."""
    from sklearn.model_selection import cross_val_score

    cv = {
        name: float(cross_val_score(m, x_val, y_val, cv=5, scoring="roc_auc").mean())
        for name, m in learners().items()
    }
    chosen = max(cv, key=cv.get)
    return chosen, cv, learners()[chosen].fit(x_val, y_val)


def compare(scores: np.ndarray, count_logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """A yardstick's test AUC and its DeLong comparison with the count model, scores [U] and
    count_logits [U] of the same users as labels [U]."""
    from unigrf.ablation.paired import delong_test
    from unigrf.evaluation.metrics import auc

    test = delong_test([scores], [count_logits], labels)
    return {
        "auc": float(auc(labels, scores)),
        "difference": test.difference,
        "se": test.se,
        "p": test.p_value,
        "detectable": 1.96 * test.se,
    }


def headroom(data) -> dict:
    """Fit on validation, score test once: the count model's test AUC, and each yardstick's
    (module docstring) with its DeLong comparison, under "yardsticks" by name."""
    from unigrf.evaluation.count_model import fit_count_model
    from unigrf.evaluation.metrics import auc

    model = fit_count_model(data)
    x_val, y_val, _ = features(data, model, "val")
    x_test, y_test, count_logits = features(data, model, "test")
    chosen, cv, learner = fit_learner(x_val, y_val)
    feature = {**compare(learner.predict_proba(x_test)[:, 1], count_logits, y_test),
               "choice": chosen, "validation": cv}  # fmt: skip

    mf, grid = choose_mf(data)
    (vu, vi, _), (tu, ti, _) = targets(data, "val"), targets(data, "test")
    logistic_mf = {**compare(mf.logits(tu, ti), count_logits, y_test),
                   "choice": f"dim {mf.dim}, L2 {mf.l2:g}, {mf.steps} steps", "validation": grid}  # fmt: skip

    s_val = np.column_stack([x_val, mf.logits(vu, vi), mf.dots(vu, vi)])
    s_test = np.column_stack([x_test, mf.logits(tu, ti), mf.dots(tu, ti)])
    chosen, cv, learner = fit_learner(s_val, y_val)
    stacked = {**compare(learner.predict_proba(s_test)[:, 1], count_logits, y_test),
               "choice": chosen, "validation": cv}  # fmt: skip
    return {
        "users": int(len(y_test)),
        "test_negatives": int(min((y_test == 0).sum(), (y_test == 1).sum())),
        "count_auc": float(auc(y_test, count_logits)),
        "yardsticks": {"feature model": feature, "logistic MF": logistic_mf, "stacked": stacked},
    }


def table(results: dict[str, dict], command: str):
    """The RESULTS.md table (`common.Table`, name "ranking_headroom"): a row per dataset and
    yardstick."""
    from common import Table

    rows = [
        [
            name,
            f"{r['users']:,}",
            f"{r['test_negatives']:,}",
            f"{r['count_auc']:.4f}",
            f"{yardstick} ({y['choice']})",
            f"{y['auc']:.4f}",
            f"{y['difference']:+.4f} ({y['se']:.4f}, p {y['p']:.2g})",
            f"{y['detectable']:.4f}",
        ]
        for name, r in results.items()
        for yardstick, y in r["yardsticks"].items()
    ]
    return Table(
        name="ranking_headroom",
        title="Test AUC: the count model and three yardsticks chosen on validation",
        columns=[
            "dataset",
            "test users",
            "minority class",
            "count model",
            "yardstick (chosen on validation)",
            "yardstick AUC",
            "difference (DeLong SE, p)",
            "1.96 SE",
        ],  # fmt: skip
        rows=rows,
        command=command,
        machine="numpy / scikit-learn / torch (CPU), deterministic",
        notes="feature model: a logistic regression or boosted trees, chosen by 5-fold CV on validation, on: "
        + "; ".join(FEATURES)
        + f". Logistic MF: σ(b + b_u + b_i + p_u·q_i) on the training part, dim in {list(MF_DIMS)}, "
        f"factor L2 in {list(MF_L2)} (bias L2 {MF_BIAS_L2:g}; per row, in events) and steps (≤ {MF_STEPS}, "
        "full-batch Adam) chosen by validation AUC. Stacked: the feature model plus the MF logit and "
        "p_u·q_i.",
        align=["l", "r", "r", "r", "l", "r", "r", "r"],
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
