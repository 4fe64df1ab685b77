"""An evaluation's finished user batches, kept so that an interrupted evaluation resumes.

At the paper's sizes one full-ranking pass takes hours on a CPU (Amazon-Books: 695k users, each
ranked against 687k items; benchmarks/RESULTS.md, "Scale"). `evaluate(..., store=...)` keeps
each batch's per-user numbers (`BatchRecord`: the users, their target ranks, cascade ranks per
λ, like logits and labels) and hands the new ones to the store every `store.every` batches; a
store that already holds batches of the same evaluation makes it skip them. The metrics are
then computed from all batches exactly as without a store, so a resumed evaluation reports the
uninterrupted one's numbers (tests/test_batch_store.py).

"The same evaluation" is `fingerprint`: the weights of the model (and of the ranking model),
the split, the users, the evaluation config and the cascade's λ. Batches stored under another
fingerprint — other weights after more training, another λ — are never reused.

A training run keeps them in its run directory (`unigrf.training.eval_progress.DirectoryStore`).
No Ray here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class BatchRecord:
    """One evaluated batch of B users: users [B] int64; ranks [B] long; cascade [L, B] long
    (one row per evaluated λ) or None; logits [B] float64 (the target's like logit); likes [B]
    (the target's like label)."""

    users: np.ndarray
    ranks: torch.Tensor
    cascade: torch.Tensor | None
    logits: torch.Tensor
    likes: torch.Tensor

    def to_state(self) -> dict[str, Any]:
        return {
            "users": torch.from_numpy(np.ascontiguousarray(self.users, dtype=np.int64)),
            "ranks": self.ranks,
            "cascade": self.cascade,
            "logits": self.logits,
            "likes": self.likes,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BatchRecord:
        return cls(
            users=state["users"].numpy(),
            ranks=state["ranks"],
            cascade=state["cascade"],
            logits=state["logits"],
            likes=state["likes"],
        )


class BatchStore(Protocol):
    """Where `evaluate` keeps finished batches: `load(key)` gives those stored under `key`
    (batch index -> record), `save(key, new)` adds `new`; `every`: batches between saves."""

    every: int

    def load(self, key: str) -> dict[int, BatchRecord]: ...

    def save(self, key: str, new: Mapping[int, BatchRecord]) -> None: ...


def fingerprint(models: Iterable[torch.nn.Module], *parts: Any) -> str:
    """A digest of the models' weights (every state tensor, in order) and `parts` (their
    reprs: split, users, config, λ): equal exactly when the evaluation would compute the
    same numbers."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()
