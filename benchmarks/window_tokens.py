"""Training targets an epoch trains on, per `data.train_windows` scheme (issue 35, point 1).

For each dataset and max_len: the training interactions (everything before each user's
validation item), and per scheme the examples (windows) per epoch, the ranking targets (item
tokens) and retrieval targets (next items) one epoch trains on, as counts and as a share of the
training interactions, and the padded window positions the length-sorted batches of
`epoch_batches` cost (batch 32, epoch 0). Reads prepared datasets (`unigrf data prepare`):

    python benchmarks/window_tokens.py DIR[:MAX_LEN] ...
e.g.
    python benchmarks/window_tokens.py results/data/ml-100k-<key>:50 results/data/ml-100k-<key>:200

prints a Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np

from unigrf.data.sequences import TRAIN_WINDOWS, SequenceData
from unigrf.training.loop import epoch_batches, epoch_users


def rows(data: SequenceData, batch_size: int = 32) -> list[dict]:
    n_train = int(data.num_train_interactions)
    out = []
    for scheme in TRAIN_WINDOWS:
        ex = data.train_examples(scheme)
        t = ex.targets_per_epoch()
        ids = epoch_users(len(ex), 0, 0, 0, 1, ex.per_epoch)
        padded = sum(
            len(b) * int(ex.lengths[b].max()) for b in epoch_batches(ids, ex.lengths, batch_size, 0, 0, 0)
        )
        out.append(
            {
                "dataset": data.name,
                "max_len": data.max_len,
                "scheme": scheme,
                "train interactions": n_train,
                "examples / epoch": int(t["examples"]),
                "ranking targets / epoch": round(t["ranking"]),
                "share": t["ranking"] / n_train,
                "retrieval targets / epoch": round(t["retrieval"]),
                "retrieval share": t["retrieval"] / max(n_train - data.num_users, 1),
                "padded positions": padded,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="prepared dataset directories, each optionally :MAX_LEN")
    args = parser.parse_args()
    table = []
    for spec in args.dirs:
        path, _, max_len = spec.partition(":")
        table += rows(SequenceData.load(path, max_len=int(max_len) if max_len else None))
    keys = list(table[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in table:
        cells = [
            f"{v:.1%}" if isinstance(v, float) else f"{v:,}" if isinstance(v, (int, np.integer)) else str(v)
            for v in row.values()
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
