"""The synthetic generator's oracle measured under the evaluation protocol: the Bayes ceiling.

`unigrf.data.synthetic.synthetic_oracle(cfg)` knows, for every user's held-out event, the
distribution the next item was drawn from and the probability that its rating is a like.
Scored exactly as `unigrf.evaluation.evaluate.evaluate` scores a model — full ranking over the
prepared catalogue with the user's history masked, the same tie rule and the same metric
functions — it gives the best retrieval and ranking any model can reach in expectation on that
data: ranking items by their true probability maximises the expected HR@k, NDCG@k and MRR of
the drawn target, and the true like-probability is the Bayes-optimal ranking score (AUC) and
forecast (LogLoss). A model's row next to the popularity row (the floor) and the oracle row (the
ceiling) says how much of the learnable structure it learned.

The cascade (retrieval top-C re-ranked, HR/NDCG@k of the liked targets) ranks the oracle's
top-C under the same rule family as a model's (`unigrf.evaluation.cascade_score`):
log P(next = i) + λ·log P(like | i), with the true distribution and the true like-probability,
every λ of `eval.cascade_lambdas` evaluated and λ chosen on validation (cascade NDCG@k), then
applied to test — exactly how a model's λ is chosen, so the oracle row is the ceiling of the
rule the model rows use. At λ = 1 the score is log P(next = i, liked), the Bayes-optimal order
on the users whose target is liked; validation normally picks it or a neighbour.

Items the generator never emitted are absent from the prepared catalogue and so from the
ranking (they would only add zero-probability competitors). The prepared dataset must hold the
generator's full sequences (the synthetic default, k_core = 0): a filter that removed
interactions would change the histories and targets, and is refused with a clear error.
Pure numpy/torch (no Ray).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from unigrf.config import DataConfig, EvalConfig
from unigrf.data.sequences import SPLITS, SequenceData
from unigrf.data.synthetic import HELD_OUT, SyntheticOracle, synthetic_oracle
from unigrf.evaluation.evaluate import (
    cascade_candidates,
    cascade_lambda_metrics,
    cascade_ranks_by_lambda,
    check_cascade_lambda,
    evaluated_lambdas,
    retrieval_metrics,
)
from unigrf.evaluation.metrics import auc, history_mask, logloss, target_ranks


def load_id_maps(prepared_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(raw user id of each user index [U], raw item id of each item index [N + 1], "" at the
    padding index 0) from a prepared directory's user_map / item_map parquet files."""
    prepared_dir = Path(prepared_dir)
    maps = []
    for name, first in (("user_map.parquet", 0), ("item_map.parquet", 1)):
        table = pq.read_table(prepared_dir / name)
        index = table.column("index").to_numpy()
        ids = np.full(len(index) + first, "", dtype=object)
        ids[index] = np.asarray(table.column("raw").to_pylist(), dtype=object)
        maps.append(ids)
    return maps[0], maps[1]


FULL_SEQUENCES_HINT = (
    "the oracle describes the generator's full sequences: prepare with k_core = 0 and the same "
    "data.synthetic config"
)


def _event_rows(oracle: SyntheticOracle, data: SequenceData, user_ids: np.ndarray, split: str) -> np.ndarray:
    """[U] row of each prepared user's event in `oracle.splits[split]`, after checking that the
    prepared sequences are the generator's (every user known, full lengths)."""
    events = oracle.splits[split]
    rows = pd.Index(events.users).get_indexer(np.asarray(user_ids, dtype=str))
    lost = len(events) - data.num_users
    if (rows < 0).any() or lost:
        raise ValueError(
            f"{data.name}: the prepared users are not the generator's ({int((rows < 0).sum())} unknown, "
            f"{max(lost, 0)} missing): {FULL_SEQUENCES_HINT}"
        )
    full = data.lengths - HELD_OUT[split] == events.positions[rows]
    if not full.all():
        user = int(np.flatnonzero(~full)[0])
        raise ValueError(
            f"{data.name}: user {user_ids[user]} has {data.lengths[user]} interactions, the generator "
            f"made {events.positions[rows[user]] + HELD_OUT[split]}: {FULL_SEQUENCES_HINT}"
        )
    return rows


def _batches(num_users: int, batch_size: int) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"eval.batch_size must be >= 1, got {batch_size}")
    for start in range(0, num_users, batch_size):
        yield np.arange(start, min(start + batch_size, num_users))


def oracle_metrics(
    oracle: SyntheticOracle,
    data: SequenceData,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    split: str,
    cfg: EvalConfig,
    cascade_lambda: float | None = None,
) -> dict[str, float]:
    """The oracle's metrics on `split` of `data`, with the keys of `evaluate`'s result.

    user_ids: [U] raw id of each user index of `data`; item_ids: [N + 1] raw id of each item
    index (index 0, padding, ignored) — `load_id_maps` of the prepared directory.
    cascade_lambda: the λ of the cascade reported; None chooses it on validation (for the
    test split, the validation split is evaluated first to choose it).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "val" and cascade_lambda is None:  # chosen on validation, as a model's is
        cascade_lambda = oracle_metrics(oracle, data, user_ids, item_ids, "val", cfg)["cascade_lambda"]
    check_cascade_lambda(split, cascade_lambda, True)
    lambdas = evaluated_lambdas(cfg, cascade_lambda)
    rows = _event_rows(oracle, data, user_ids, split)
    events = oracle.splits[split]
    column = pd.Index(oracle.items).get_indexer(np.asarray(item_ids[1:], dtype=str))  # [N]
    if (column < 0).any():
        raise ValueError(
            f"{data.name}: item {item_ids[1:][column < 0][0]} is not in the generator's catalogue: "
            f"{FULL_SEQUENCES_HINT}"
        )
    index_of_column = np.full(len(oracle.items), -1, dtype=np.int64)  # [N_gen] prepared index, -1: absent
    index_of_column[column] = np.arange(1, len(column) + 1)
    target_index = index_of_column[pd.Index(oracle.items).get_indexer(events.targets)]  # [E]
    like_all = oracle.like_probabilities(split, data.like_threshold)  # [E, N_gen]
    target_like = oracle.target_like_probabilities(split, data.like_threshold)  # [E]

    all_ranks, all_cascade, all_probs, all_likes = [], [], [], []
    for chunk in _batches(data.num_users, cfg.batch_size):
        batch = data.eval_batch(chunk, split)
        targets = batch["targets"]
        picked = rows[chunk]
        if not np.array_equal(target_index[picked], targets.numpy()):
            raise ValueError(
                f"{data.name}: the prepared {split} targets are not the generator's: {FULL_SEQUENCES_HINT}"
            )
        scores = torch.zeros(len(chunk), data.num_items + 1)  # [B, N + 1], padding column 0
        scores[:, 1:] = torch.from_numpy(events.item_probs[picked][:, column])
        like = torch.zeros(len(chunk), data.num_items + 1, dtype=torch.float64)
        like[:, 1:] = torch.from_numpy(like_all[picked][:, column])
        mask = history_mask(batch["history"], data.num_items, targets)
        ranks = target_ranks(scores, targets, mask, ties=cfg.ties)
        candidates = cascade_candidates(scores, mask, cfg.cascade_top_c)  # [B, C]
        p_next = scores.double().gather(1, candidates)  # the true P(next): its log is log P(next)
        p_like = like.gather(1, candidates)
        all_cascade.append(
            cascade_ranks_by_lambda(
                torch.logit(p_like),  # log σ(logit p) = log p: the combined score's log P(like)
                p_next,
                torch.log(p_next),
                candidates,
                mask,
                targets,
                ranks,
                lambdas,
                cfg.ties,
            )
        )
        all_ranks.append(ranks)
        all_probs.append(torch.from_numpy(target_like[picked]))
        all_likes.append(batch["target_likes"])

    ranks = torch.cat(all_ranks)
    likes, probs = torch.cat(all_likes), torch.cat(all_probs)
    liked = likes > 0.5
    cascade, _ = cascade_lambda_metrics(
        torch.cat(all_cascade, dim=1), liked.numpy(), lambdas, cfg, cascade_lambda
    )
    out = retrieval_metrics(ranks, cfg.ks)
    out["auc"] = auc(likes, probs)
    out["logloss"] = logloss(likes, probs)
    out.update(cascade)
    out["cascade_num_users"] = int(liked.sum())
    out["num_users"] = data.num_users
    return out


def synthetic_oracle_metrics(
    data_cfg: DataConfig, prepared_dir: str | Path, split: str, cfg: EvalConfig
) -> dict[str, float]:
    """`oracle_metrics` of the synthetic dataset `prepare_dataset(data_cfg, ...)` wrote to
    `prepared_dir` (its generator is re-run from `data_cfg.synthetic`: same seed, same draws);
    the cascade's λ chosen on validation."""
    if data_cfg.dataset != "synthetic":
        raise ValueError(f"the oracle exists for the synthetic dataset only, not {data_cfg.dataset!r}")
    data = SequenceData.load(prepared_dir)
    user_ids, item_ids = load_id_maps(prepared_dir)
    return oracle_metrics(synthetic_oracle(data_cfg.synthetic), data, user_ids, item_ids, split, cfg)
