"""Probe of reports/recipe/README.md ("Ranking prior", the learned item shift): does the prior's
leave-one-out item term leak the training label to a model that knows the item?

At a training position the prior's item term leaves the position's own label out of its item's
counts, so within one item it is lower for a like than for a dislike. A model that also knows the
item (the transformer, from the item's embedding) can read the label from that difference; the
trained models' item shift goes to −0.55..−0.61 on Amazon MI (weight 0.4) against the decay that
pulls it to 0. This probe fits logistic regressions on every training event — the prior's two
terms, with and without a one-hot of the item — with the item term left-one-out (the prior's),
ordered in time (each event sees only its item's earlier training events: no label of its own,
CatBoost's ordered statistics) or with the own label in, and scores the validation targets with
the full-count term, as the prior is evaluated. Deterministic; no torch model. From the
repository root:

    OMP_NUM_THREADS=1 python reports/recipe/ranking-prior/probes/item_term_leak.py --results-dir <results>
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO / "benchmarks"))
import quality_bench  # noqa: E402  (the quality grid's data keys on the defaults)

from unigrf.evaluation.count_model import PSEUDO_COUNTS  # noqa: E402
from unigrf.training.prepared import load_data  # noqa: E402


def term(likes, n, g):
    return logit((likes + PSEUDO_COUNTS * g) / (n + PSEUDO_COUNTS)) - logit(g)


def item_terms(data, liked, train, g):
    """[total] item terms of every event: full training counts, leave-one-out, ordered in time."""
    items, size = data.items.astype(np.int64), data.num_items + 1
    likes = np.bincount(items[train], weights=liked[train], minlength=size)
    counts = np.bincount(items[train], minlength=size).astype(float)
    full = term(likes[items], counts[items], g)
    loo = term(likes[items] - liked, counts[items] - 1, g)
    events = np.flatnonzero(train)
    rng = np.random.default_rng(0)  # ties in time broken at random
    order = events[np.lexsort((rng.random(len(events)), data.timestamps[events]))]
    before_l, before_n = np.zeros(len(liked)), np.zeros(len(liked))
    seen_l, seen_n = np.zeros(size), np.zeros(size)
    for e in order:
        i = items[e]
        before_l[e], before_n[e] = seen_l[i], seen_n[i]
        seen_l[i] += liked[e]
        seen_n[i] += 1
    return full, {"leave-one-out": loo, "ordered in time": term(before_l, before_n, g), "own label in": full}


def onehot(data, rows):
    """[len(rows), num_items + 1] one-hot of the events' items."""
    shape = (len(rows), data.num_items + 1)
    return sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), data.items[rows])), shape=shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["amazon-mi", "ml-100k", "movietweetings"])
    args = parser.parse_args()
    print("| dataset | item term in training | item one-hot | w_u | w_i | train AUC | val AUC |")
    print("|---|---|---|---:|---:|---:|---:|")
    for ds in args.datasets:
        data = load_data(quality_bench.dataset_config(ds, args.results_dir))
        train = data.train_mask()
        liked = (data.ratings >= data.like_threshold).astype(np.float64)
        g = liked[train].mean()
        start = np.repeat(data.offsets[:-1], data.lengths)
        cum = np.concatenate([[0.0], np.cumsum(liked)])
        position = np.arange(len(liked))
        user = term(cum[position] - cum[start], position - start, g)  # the user's events before
        full, kinds = item_terms(data, liked, train, g)
        events = np.flatnonzero(train)
        val = (data.offsets[:-1] + data.lengths - 2)[data.lengths >= 3]
        y_train, y_val = liked[events], liked[val]
        print(f"| {ds} | count model | — | 1 | 1 | — | {roc_auc_score(y_val, user[val] + full[val]):.4f} |")

        for name, item in kinds.items():
            for with_item in (False, True):
                x_train = np.column_stack([user[events], item[events]])
                x_val = np.column_stack([user[val], full[val]])
                if with_item:
                    x_train = sp.hstack([sp.csr_matrix(x_train), onehot(data, events)]).tocsr()
                    x_val = sp.hstack([sp.csr_matrix(x_val), onehot(data, val)]).tocsr()
                fit = LogisticRegression(C=1.0, max_iter=2000).fit(x_train, y_train)
                print(
                    f"| {ds} | {name} | {'yes' if with_item else 'no'} | {fit.coef_[0, 0]:+.3f} | "
                    f"{fit.coef_[0, 1]:+.3f} | {roc_auc_score(y_train, fit.decision_function(x_train)):.4f} | "
                    f"{roc_auc_score(y_val, fit.decision_function(x_val)):.4f} |"
                )


if __name__ == "__main__":
    main()
