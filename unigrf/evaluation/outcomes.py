"""Per-user outcomes of one evaluation: what every metric is a mean (or an AUC) of.

A comparison between two systems has two sources of noise — the training seed and the sample
of test users — and only per-user outcomes let a test account for the second (a paired
bootstrap over users, DeLong's test for AUC). So every run keeps, for validation and test, one
row per evaluated user (`<run dir>/outcomes/<split>.parquet`, a few kB):

    user          int64    the prepared data's user index (0..U-1)
    rank          int64    the target's 0-based rank among all eligible items (full ranking,
                           history masked, the evaluation's tie rule)
    like_label    int8     1 when the target's rating is a like
    like_logit    float64  the ranking head's logit of the target (NaN: no ranking head)
    cascade_rank  int64    for a liked target, its 0-based rank after the cascade (retrieval's
                           top C re-ranked by the run's combined score; C when retrieval missed
                           it); -1 where the cascade does not count the user (target not liked)
                           or was not computed

`metrics_from_outcomes` recomputes every metric of `unigrf.evaluation.evaluate.evaluate` from
these rows with the same metric functions (evaluate computes them from this frame, so they are
equal exactly), so a stored file and the run's reported numbers can be checked against each
other; `per_user` gives the per-user values a metric averages. Not recomputable from one
frame: evaluate's λ keys (`cascade_lambda`, the per-λ curve `cascade_ndcg@K/lambda_<λ>`), which
need every λ's ranks; `cascade0_*` (λ = 0) is min(rank, C) over the liked users under the
default pessimistic ties.

Pure pandas/numpy/pyarrow (no torch model, no Ray).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import expit

from unigrf.atomic import make_dirs, write_bytes_atomic
from unigrf.evaluation.metrics import auc, logloss

COLUMNS: dict[str, str] = {
    "user": "int64",
    "rank": "int64",
    "like_label": "int8",
    "like_logit": "float64",
    "cascade_rank": "int64",
}
NOT_COUNTED = -1  # cascade_rank of a user the cascade metrics do not count


class OutcomesError(ValueError):
    """A per-user outcomes file or frame does not follow the schema; the message names it."""


def outcomes_frame(
    users: np.ndarray,
    ranks: np.ndarray,
    like_labels: np.ndarray,
    like_logits: np.ndarray,
    cascade_ranks: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a checked outcomes frame from per-user arrays [U] (in any user order)."""
    n = len(users)
    if cascade_ranks is None:
        cascade_ranks = np.full(n, NOT_COUNTED)
    frame = pd.DataFrame(
        {
            "user": np.asarray(users),
            "rank": np.asarray(ranks),
            "like_label": np.asarray(like_labels),
            "like_logit": np.asarray(like_logits, dtype=np.float64),
            "cascade_rank": np.asarray(cascade_ranks),
        }
    )
    return check_outcomes(frame)


def check_outcomes(frame: pd.DataFrame, source: str = "outcomes") -> pd.DataFrame:
    """`frame` with the schema's dtypes, sorted by user; OutcomesError naming `source` when a
    column is missing, a user repeats, a rank is negative or a label is not 0/1."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise OutcomesError(f"{source}: missing column(s) {', '.join(missing)}")
    frame = frame[list(COLUMNS)]
    if frame[["user", "rank", "like_label", "cascade_rank"]].isna().any().any():
        raise OutcomesError(f"{source}: null values in an integer column")
    frame = frame.astype(COLUMNS).sort_values("user", kind="stable").reset_index(drop=True)
    if frame["user"].duplicated().any():
        raise OutcomesError(
            f"{source}: user {int(frame['user'][frame['user'].duplicated()].iloc[0])} repeats"
        )
    if (frame["rank"] < 0).any():
        raise OutcomesError(f"{source}: negative rank")
    if not frame["like_label"].isin([0, 1]).all():
        raise OutcomesError(f"{source}: like_label must be 0 or 1")
    if (frame["cascade_rank"] < NOT_COUNTED).any():
        raise OutcomesError(f"{source}: cascade_rank below {NOT_COUNTED}")
    return frame


def write_outcomes(frame: pd.DataFrame, path: str | Path, hint: str = "") -> Path:
    """Write a checked frame to Parquet at `path` atomically (`unigrf.atomic`: a temporary file,
    then rename; a full or read-only disk is a `WriteError` naming the file, nothing partial)."""
    path = Path(path)
    frame = check_outcomes(frame, str(path))
    buffer = io.BytesIO()  # a few kB: serialised first, then written whole
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    make_dirs(path.parent, hint)
    return write_bytes_atomic(path, buffer.getvalue(), hint=hint)


def read_outcomes(path: str | Path) -> pd.DataFrame:
    """Read and check an outcomes Parquet file; OutcomesError naming the file when it is not one."""
    path = Path(path)
    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as err:
        raise OutcomesError(f"{path}: cannot read per-user outcomes ({err})") from None
    return check_outcomes(frame, str(path))


def per_user(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """Per-user values [U'] whose mean is `metric` (`hr@k`, `ndcg@k`, `mrr`, `cascade_hr@k`,
    `cascade_ndcg@k`; cascade metrics over the counted users only, U' <= U). AUC and LogLoss
    are not user means in this sense (AUC pairs users): ValueError for them."""
    if metric.startswith("cascade_"):
        ranks = frame["cascade_rank"].to_numpy()
        ranks = ranks[ranks != NOT_COUNTED]
        metric = metric.removeprefix("cascade_")
    else:
        ranks = frame["rank"].to_numpy()
    ranks = ranks.astype(np.float64)
    if metric.startswith("hr@"):
        return (ranks < int(metric[3:])).astype(np.float64)
    if metric.startswith("ndcg@"):
        return np.where(ranks < int(metric[5:]), 1.0 / np.log2(ranks + 2.0), 0.0)
    if metric == "mrr":
        return 1.0 / (ranks + 1.0)
    raise ValueError(f"{metric!r} is not a mean over users (hr@k, ndcg@k, mrr, cascade_hr@k, cascade_ndcg@k)")


def metrics_from_outcomes(frame: pd.DataFrame, ks: Sequence[int], cascade_k: int) -> dict[str, float]:
    """Every metric `evaluate` reports, recomputed from per-user outcomes: hr@k, ndcg@k (k in
    ks), mrr, auc, logloss (NaN without ranking logits), cascade_hr@K, cascade_ndcg@K
    (K = cascade_k; NaN when no user is counted), cascade_num_users, num_users."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = float(per_user(frame, f"hr@{k}").mean()) if len(frame) else math.nan
    for k in ks:
        out[f"ndcg@{k}"] = float(per_user(frame, f"ndcg@{k}").mean()) if len(frame) else math.nan
    out["mrr"] = float(per_user(frame, "mrr").mean()) if len(frame) else math.nan
    logits = frame["like_logit"].to_numpy()
    labels = frame["like_label"].to_numpy()
    has_logits = len(frame) > 0 and np.isfinite(logits).all()
    probs = expit(logits)  # as evaluate: AUC and LogLoss of the float64 probabilities
    out["auc"] = auc(labels, probs) if has_logits else math.nan
    out["logloss"] = logloss(labels, probs) if has_logits else math.nan
    counted = frame["cascade_rank"].to_numpy() != NOT_COUNTED
    for name in (f"cascade_hr@{cascade_k}", f"cascade_ndcg@{cascade_k}"):
        out[name] = float(per_user(frame, name).mean()) if counted.any() else math.nan
    out["cascade_num_users"] = int(counted.sum())
    out["num_users"] = len(frame)
    return out
