"""A report's runs restricted to a subset of the test users, metrics recomputed from the runs'
per-user outcomes.

A system compared side by side must be measured on the same users. An anchor that evaluates
fewer users than the project (SASRec.pytorch scores only users with >= 4 interactions; the
project every user with >= 3) is compared with the project's runs recomputed on the anchor's
users: `restrict_to_users` recomputes every metric the outcomes hold
(`unigrf.evaluation.outcomes.metrics_from_outcomes`, the same functions `evaluate` uses) on the
subset, for validation and test, and keeps only those users' outcomes — so that a `Comparator`
built on the result tests on the subset too. A run without outcomes for a split cannot be
restricted: its metrics of that split become NaN (not silently left on the full user set);
metrics the outcomes do not determine (losses, GAUC, the cascade's per-λ curve and λ = 0
columns) become NaN as well.

Pure pandas/numpy (the outcomes schema's helpers, imported where used, load torch's import
with `unigrf.evaluation`); no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from unigrf.ablation.aggregate import Floor

SPLITS = ("val", "test")


def subset_metrics(
    frame: pd.DataFrame, users: np.ndarray, ks: Sequence[int], cascade_k: int
) -> dict[str, float]:
    """Every metric of `frame`'s users in `users` (`metrics_from_outcomes`), unprefixed."""
    from unigrf.evaluation.outcomes import metrics_from_outcomes

    return metrics_from_outcomes(frame[frame["user"].isin(users)], ks, cascade_k)


def restrict_to_users(
    results: pd.DataFrame,
    outcomes: Mapping[str, Mapping[str, pd.DataFrame]],
    users: np.ndarray,
    ks: Sequence[int],
    cascade_k: int,
    floors: Mapping[str, Floor] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, pd.DataFrame]], dict[str, Floor]]:
    """(results, outcomes, floors) of the same runs on `users` only (the module docstring).

    `results`: one row per run (`cell`, and `val/*`, `test/*` metric columns); `outcomes`:
    cell → split → per-user outcomes; `floors`: dataset → its count model."""
    users = np.unique(np.asarray(users, dtype=np.int64))
    out = results.copy()
    kept: dict[str, dict[str, pd.DataFrame]] = {}
    for split in SPLITS:
        columns = [c for c in out.columns if isinstance(c, str) and c.startswith(f"{split}/")]
        if not columns:
            continue
        values = pd.DataFrame(math.nan, index=out.index, columns=columns)
        for index, cell in out["cell"].astype(str).items():
            frame = outcomes.get(cell, {}).get(split)
            if frame is None:
                continue
            sub = frame[frame["user"].isin(users)].reset_index(drop=True)
            kept.setdefault(cell, {})[split] = sub
            recomputed = subset_metrics(sub, users, ks, cascade_k)
            values.loc[index] = [float(recomputed.get(c.split("/", 1)[1], math.nan)) for c in columns]
        out[columns] = values
    restricted_floors = {}
    for dataset, floor in (floors or {}).items():
        frames = {s: f[f["user"].isin(users)].reset_index(drop=True) for s, f in floor.outcomes.items()}
        values = {}
        for split, frame in frames.items():
            m = subset_metrics(frame, users, ks, cascade_k)
            values.update({f"{split}/auc": m["auc"], f"{split}/logloss": m["logloss"]})
        restricted_floors[dataset] = Floor(floor.row, values, frames)
    return out, kept, restricted_floors
