"""Runs RecBole's SASRec inside the anchor environment that benchmarks/recbole_anchor.py builds.

This file is executed by that environment's Python (never imported by the project, which does
not depend on RecBole):

    <env>/bin/python recbole_driver.py CONFIG.yaml INTER_FILE THREADS

RecBole 1.2.1 as published, its model and its training untouched, with three adjustments made
here at run time so that its numbers follow SPEC §2 like every other row of the quality table:

1. **History masked in full-sort evaluation.** For a sequential model RecBole's
   `FullSortEvalDataLoader` returns no history (`history_index` None), so the items a user
   already rated compete with the target. Here every item before the target's position in the
   user's sequence is masked (the position is the `timestamp` the anchor writes), the target
   itself never — as `unigrf.evaluation.metrics.history_mask` does.
2. **Every user validated.** RecBole's `_split_index_by_leave_one_out` keeps at least one
   augmented row for training, so a user with exactly 3 interactions (2 rows after the prefix
   augmentation) gets no validation row and its validation item becomes a training target.
   Here such a user has validation and test rows and no training row, as in SPEC §2's split.
3. **NumPy 2's removed aliases.** RecBole's `Config.compatibility_settings` restores the
   aliases NumPy 1.24 removed (`np.float`, still used by its MRR) from `np.float_`,
   `np.complex_` and `np.unicode_`, which NumPy 2 removed too; they are set first to the
   types they always named (`np.float64`, `np.complex128`, `np.str_`).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch


def install_history_mask(inter_file: str) -> None:
    """Patch 1: the eval loader of a sequential model returns each row's history to mask."""
    from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader

    original = FullSortEvalDataLoader.collate_fn
    histories: dict[int, dict[int, np.ndarray]] = {}  # id(field2token_id) -> uid -> items

    def user_histories(dataset) -> dict[int, np.ndarray]:
        """Internal user id -> internal item ids in sequence order (the anchor writes each
        user's interactions in order with timestamp = position 0, 1, 2, ...)."""
        key = id(dataset.field2token_id)
        if key not in histories:
            frame = pd.read_csv(inter_file, sep="\t", dtype=str)
            frame.columns = [c.split(":")[0] for c in frame.columns]
            users = dataset.field2token_id[dataset.uid_field]
            items = dataset.field2token_id[dataset.iid_field]
            uid = frame["user_id"].map(users).to_numpy()
            iid = frame["item_id"].map(items).to_numpy()
            pos = frame["timestamp"].astype(float).to_numpy()
            order = np.lexsort((pos, uid))
            uid, iid = uid[order], iid[order]
            starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
            histories[key] = dict(zip(uid[starts].tolist(), np.split(iid, starts[1:]), strict=True))
        return histories[key]

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = original(self, index)
        if not self.is_sequential:
            return interaction, history_index, positive_u, positive_i
        per_user = user_histories(self._dataset)
        uids = interaction[self.uid_field].numpy()
        positions = np.rint(interaction[self._dataset.time_field].numpy()).astype(np.int64)
        targets = positive_i.numpy()
        rows, items = [], []
        for row, (u, p, target) in enumerate(zip(uids, positions, targets, strict=True)):
            before = per_user[int(u)][:p]
            before = before[before != target]  # a re-consumed item stays rankable
            rows.append(np.full(len(before), row, dtype=np.int64))
            items.append(before.astype(np.int64))
        history_index = (torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(items)))
        return interaction, history_index, positive_u, positive_i

    FullSortEvalDataLoader.collate_fn = collate_fn


def install_leave_one_out() -> None:
    """Patch 2: leave-one-out without RecBole's "at least one training row" rule."""
    from recbole.data.dataset.dataset import Dataset

    def split(self, grouped_index, leave_one_num):
        next_index = [[] for _ in range(leave_one_num + 1)]
        for index in grouped_index:
            index = list(index)
            held_out = min(leave_one_num, len(index))
            start = len(index) - held_out
            next_index[0].extend(index[:start])
            for i in range(held_out):
                next_index[-held_out + i].append(index[start + i])
        return next_index

    Dataset._split_index_by_leave_one_out = split


def main() -> None:
    config_file, inter_file, threads = sys.argv[1:4]
    sys.argv = sys.argv[:1]  # RecBole's Config reads `--key=value` pairs from the command line
    torch.set_num_threads(int(threads))
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)  # patch 3
    install_history_mask(inter_file)
    install_leave_one_out()
    from recbole.quick_start import run_recbole

    run_recbole(model="SASRec", config_file_list=[config_file])


if __name__ == "__main__":
    main()
