"""Prepared sequences in memory and their torch batches (pure torch/numpy, no Ray).

A prepared dataset directory (written by `unigrf.data.prepare`) holds `sequences.parquet`
(one row per user: `user`, `items`, `ratings`, `timestamps`, chronological, ties in file
order) and `meta.json`. `SequenceData` keeps them in CSR form (one flat array per field plus
per-user offsets) so batches are built with vectorised numpy, never a per-user Python loop
over tensors.

Leave-one-out split [SPEC §2], for a user with n interactions (n >= 3):
- train: items[0 : n-2]  — every position is a training position;
- validation: history items[0 : n-2], target items[n-2];
- test: history items[0 : n-1] (validation item included), target items[n-1].

Training windows (`train_examples`, `data.train_windows`). A training *example* is a window of
at most `max_len` consecutive items of one user's training part, named by (user, end): the
window is items[end - length : end]. Within a window every item is a ranking target (its like
label) and every item but the first a retrieval target (the next item of the feedback token
before it). A training part of n items and L = max_len:
- "last": one window per user, ending at n (the last L items; an earlier part of a longer
  history is never trained on);
- "all": the windows ending at n, n - (L-1), n - 2(L-1), ... down to the one that starts at
  item 0: 1 + ceil(max(n - L, 0) / (L - 1)) windows, consecutive ones sharing one item, so
  every training item but the first is a retrieval target exactly once per epoch, and every
  item a ranking target (the shared ones twice). A shorter earliest window is kept as it is
  (no padding with a later window's items: those would be trained on twice);
- "sample": the windows of "all", `num_users` of them per epoch drawn without replacement
  (`TrainExamples.per_epoch`): every target equally likely, epochs as long as "last".
Windows of one user never differ in anything but their items: the enhancer's anchor is the
window's last retrieval position, its `history` every item of the user before the window's end.

Token conventions shared with the model: item ids 1..num_items (0 = padding); feedback tokens
are rating levels 1..num_levels (index into `rating_values` + 1; 0 = padding); batches are
right-padded, so with a causal mask padding never influences real positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

SPLITS = ("val", "test")
TRAIN_WINDOWS = ("all", "last", "sample")


@dataclass(frozen=True)
class TrainExamples:
    """An epoch's training examples: [E] windows, each one user's items
    `[ends - lengths, ends)` counted within that user's sequence (0-based).

    `per_epoch` examples are trained on per epoch: all E, or fewer drawn from them ("sample").
    """

    users: np.ndarray  # [E] int64
    ends: np.ndarray  # [E] int64, one past the window's last item, within the user's sequence
    lengths: np.ndarray  # [E] int64, 1..max_len
    per_epoch: int

    def __len__(self) -> int:
        return len(self.users)

    def targets_per_epoch(self) -> dict[str, float]:
        """Expected training targets an epoch trains on: `ranking` (item tokens) and `retrieval`
        (next items), averaged over the examples when an epoch draws a subset."""
        share = self.per_epoch / max(len(self), 1)
        return {
            "examples": float(self.per_epoch),
            "ranking": float(self.lengths.sum()) * share,
            "retrieval": float(np.maximum(self.lengths - 1, 0).sum()) * share,
        }


@dataclass
class SequenceData:
    """All users' chronological interactions, CSR-packed.

    `offsets[u] : offsets[u+1]` indexes user u's interactions in the flat arrays.
    """

    offsets: np.ndarray  # [U + 1] int64
    items: np.ndarray  # [total] int64, 1..num_items
    ratings: np.ndarray  # [total] float64, raw rating values
    timestamps: np.ndarray  # [total] int64
    num_items: int
    rating_values: np.ndarray  # [L] sorted distinct rating values; level = index + 1
    like_threshold: float
    max_len: int
    name: str = "dataset"

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_levels(self) -> int:
        return len(self.rating_values)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def levels(self, ratings: np.ndarray) -> np.ndarray:
        """Rating values -> feedback token ids 1..L (searchsorted into the known values)."""
        return np.searchsorted(self.rating_values, ratings).astype(np.int64) + 1

    @classmethod
    def from_arrays(
        cls,
        user_items: list[np.ndarray],
        user_ratings: list[np.ndarray],
        user_timestamps: list[np.ndarray] | None = None,
        num_items: int | None = None,
        like_threshold: float = 4.0,
        max_len: int = 50,
        name: str = "arrays",
    ) -> SequenceData:
        """Build from per-user arrays (tests, synthetic data already in memory)."""
        lengths = np.array([len(x) for x in user_items], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate(user_items).astype(np.int64)
        ratings = np.concatenate(user_ratings).astype(np.float64)
        if user_timestamps is None:
            timestamps = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
        else:
            timestamps = np.concatenate(user_timestamps).astype(np.int64)
        return cls(
            offsets=offsets,
            items=items,
            ratings=ratings,
            timestamps=timestamps,
            num_items=int(num_items if num_items is not None else items.max()),
            rating_values=np.unique(ratings),
            like_threshold=like_threshold,
            max_len=max_len,
            name=name,
        )

    @classmethod
    def load(cls, prepared_dir: str | Path, max_len: int | None = None) -> SequenceData:
        """Load a directory written by `unigrf.data.prepare.prepare_dataset`."""
        prepared_dir = Path(prepared_dir)
        meta = json.loads((prepared_dir / "meta.json").read_text())
        table = pq.read_table(prepared_dir / "sequences.parquet").sort_by("user")
        lengths = np.asarray(table.column("items").combine_chunks().value_lengths(), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def flat(col: str, dtype: type) -> np.ndarray:
            return np.asarray(table.column(col).combine_chunks().flatten(), dtype=dtype)

        return cls(
            offsets=offsets,
            items=flat("items", np.int64),
            ratings=flat("ratings", np.float64),
            timestamps=flat("timestamps", np.int64),
            num_items=int(meta["num_items"]),
            rating_values=np.asarray(meta["rating_values"], dtype=np.float64),
            like_threshold=float(meta["like_threshold"]),
            max_len=int(max_len if max_len is not None else meta["max_len"]),
            name=str(meta.get("dataset", prepared_dir.name)),
        )

    # ---------------------------------------------------------------------------------------
    # batches
    # ---------------------------------------------------------------------------------------

    def _gather(self, users: np.ndarray, end: np.ndarray, length: np.ndarray) -> dict[str, np.ndarray]:
        """Right-padded windows `[end - length, end)` (absolute flat indices) per user.

        Returns arrays [B, N] with N = max(length); padding positions get index -1.
        """
        width = max(int(length.max()) if len(length) else 0, 1)
        cols = np.arange(width)[None, :]
        start = end - length
        idx = start[:, None] + cols
        valid = cols < length[:, None]
        idx = np.where(valid, idx, -1)
        safe = np.where(valid, idx, 0)
        items = np.where(valid, self.items[safe], 0)
        ratings = self.ratings[safe]
        levels = np.where(valid, self.levels(ratings), 0)
        likes = np.where(valid, (ratings >= self.like_threshold).astype(np.float32), 0.0)
        times = np.where(valid, self.timestamps[safe], 0)
        return {"items": items, "feedback": levels, "likes": likes, "timestamps": times, "valid": valid}

    def like_statistics(self) -> dict[str, np.ndarray | float]:
        """Like counts of the training part (before every user's validation and test targets):
        `like_levels` [L + 1] bool (which feedback levels are likes; 0, padding, never),
        `like_rate` (kept inside (0, 1)), `item_likes` / `item_ratings` [num_items + 1] (each
        item's likes and ratings). What the ranking prior reads (`unigrf.model.ranking_prior`)."""
        train = self.train_mask()
        likes = self.ratings[train] >= self.like_threshold
        rate = float(likes.mean()) if len(likes) else 0.5
        size = self.num_items + 1
        return {
            "like_levels": np.concatenate([[False], self.rating_values >= self.like_threshold]),
            "like_rate": min(max(rate, 1e-3), 1.0 - 1e-3),
            "item_likes": np.bincount(self.items[train], weights=likes, minlength=size),
            "item_ratings": np.bincount(self.items[train], minlength=size).astype(np.float64),
        }

    def train_mask(self) -> np.ndarray:
        """[total] bool: the interactions of every user's training part."""
        pos = np.arange(len(self.items)) - np.repeat(self.offsets[:-1], self.lengths)
        return pos < np.repeat(self.lengths - 2, self.lengths)

    @property
    def num_train_interactions(self) -> int:
        """Interactions before every user's validation and test targets: the data's scale, which
        `model.size: auto` reads."""
        return int(np.clip(self.lengths - 2, 0, None).sum())

    @property
    def train_lengths(self) -> np.ndarray:
        """[num_users] items in each user's last training window: everything before the
        validation and test targets, at most the last `max_len` (the "last" scheme's windows)."""
        return np.minimum(self.lengths - 2, self.max_len)

    def train_examples(self, scheme: str) -> TrainExamples:
        """The training windows of `scheme` in TRAIN_WINDOWS (see the module docstring), ordered
        by user, then by end. Under "last" example u is user u."""
        if scheme not in TRAIN_WINDOWS:
            raise ValueError(f"train windows must be one of {TRAIN_WINDOWS}, got {scheme!r}")
        n_train = np.maximum(self.lengths - 2, 0)
        if scheme == "last":
            users = np.arange(self.num_users, dtype=np.int64)
            return TrainExamples(users, n_train, self.train_lengths, self.num_users)
        if self.max_len < 2:
            raise ValueError(f"windows over the whole training part need max_len >= 2, got {self.max_len}")
        stride = self.max_len - 1  # consecutive windows share one item: no target is lost
        count = 1 + -(-np.maximum(n_train - self.max_len, 0) // stride)  # ceil division
        users = np.repeat(np.arange(self.num_users, dtype=np.int64), count)
        first = np.concatenate([[0], np.cumsum(count)[:-1]])
        back = np.arange(len(users)) - np.repeat(first, count)  # 0 = the window at the end
        ends = np.repeat(n_train, count) - back * stride
        order = np.lexsort((ends, users))  # earliest window first within a user
        users, ends = users[order], ends[order]
        lengths = np.minimum(ends, self.max_len)
        per_epoch = len(users) if scheme == "all" else min(self.num_users, len(users))
        return TrainExamples(users, ends.astype(np.int64), lengths.astype(np.int64), per_epoch)

    def train_batch(self, users: np.ndarray, ends: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Training batch of windows: for each user, the last `max_len` items before `ends`
        (within the user's sequence; default: the end of the training part, before the
        validation item).

        Keys (all [B, N] unless noted): items, feedback, timestamps, likes (ranking label at item
        positions), next_items (retrieval target at feedback position k = items[k+1], 0 where
        none), lengths [B], users [B], history [B, H] (every item of the user before the
        window's end, also what came before the window; 0 = padding: what the enhancer must
        never mine as a negative).
        """
        users = np.asarray(users, dtype=np.int64)
        n_train = self.lengths[users] - 2  # the training part ends before the validation item
        if ends is None:
            ends = n_train
        ends = np.asarray(ends, dtype=np.int64)
        if np.any(ends > n_train) or np.any(ends < 0):
            raise ValueError("train_batch: a window ends beyond the user's training part")
        length = np.minimum(ends, self.max_len)
        end = self.offsets[users] + ends
        g = self._gather(users, end, length)
        history = g["items"] if np.array_equal(ends, length) else self._gather(users, end, ends)["items"]
        next_items = np.zeros_like(g["items"])
        next_items[:, :-1] = g["items"][:, 1:]
        return {
            "users": torch.from_numpy(users),
            "items": torch.from_numpy(g["items"]),
            "feedback": torch.from_numpy(g["feedback"]),
            "timestamps": torch.from_numpy(g["timestamps"]),
            "likes": torch.from_numpy(g["likes"]),
            "next_items": torch.from_numpy(next_items),
            "lengths": torch.from_numpy(length),
            "history": torch.from_numpy(history),
        }

    def eval_batch(self, users: np.ndarray, split: str) -> dict[str, torch.Tensor]:
        """Evaluation batch for `split` in ("val", "test").

        `items`/`feedback`/`timestamps` are [B, N+1]: the last `max_len` history items, then the
        target item appended at index `lengths` with feedback 0 (unknown), so one forward pass
        gives the retrieval query (at the last feedback position) and the target's ranking
        logit (at the appended item position). Also: targets [B], target_likes [B],
        history [B, H] (every earlier item of the user, for masking; 0 = padding), lengths [B].
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        users = np.asarray(users, dtype=np.int64)
        n_hist = self.lengths[users] - (2 if split == "val" else 1)
        length = np.minimum(n_hist, self.max_len)
        end = self.offsets[users] + n_hist
        g = self._gather(users, end, length)
        target_idx = end  # the interaction right after the history
        targets = self.items[target_idx]
        target_ratings = self.ratings[target_idx]
        b = len(users)
        items = np.concatenate([g["items"], np.zeros((b, 1), np.int64)], axis=1)
        feedback = np.concatenate([g["feedback"], np.zeros((b, 1), np.int64)], axis=1)
        times = np.concatenate([g["timestamps"], np.zeros((b, 1), np.int64)], axis=1)
        rows = np.arange(b)
        items[rows, length] = targets
        times[rows, length] = self.timestamps[target_idx]
        # the full (untruncated) history for masking already-seen items
        full = self._gather(users, end, n_hist)["items"]
        return {
            "users": torch.from_numpy(users),
            "items": torch.from_numpy(items),
            "feedback": torch.from_numpy(feedback),
            "timestamps": torch.from_numpy(times),
            "lengths": torch.from_numpy(length),
            "targets": torch.from_numpy(targets.astype(np.int64)),
            "target_likes": torch.from_numpy((target_ratings >= self.like_threshold).astype(np.float32)),
            "history": torch.from_numpy(full),
        }

    def item_counts(self, split: str = "val") -> np.ndarray:
        """[num_items + 1] interaction counts over the data visible before `split`'s targets
        (training part for val, training + validation items for test): the popularity baseline."""
        keep = self.lengths - (2 if split == "val" else 1)
        pos = np.arange(len(self.items)) - np.repeat(self.offsets[:-1], self.lengths)
        mask = pos < np.repeat(keep, self.lengths)
        return np.bincount(self.items[mask], minlength=self.num_items + 1)
