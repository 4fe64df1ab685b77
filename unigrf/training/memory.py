"""Refuse, before the first step, a configuration whose tensors cannot fit in this machine.

`check_memory(cfg, num_items, max_len)` estimates the few tensors that grow with the catalogue, the
batch or a loss option — the item table with its gradient and AdamW state, the retrieval
loss's per-step logits (or, for BCE/gBCE and hard negatives, the gathered [positions, negatives,
dim] item rows), HSTU's saved attention scores and the evaluation's [users, items] score
matrix — and raises a `ConfigError` naming the key that dominates when their sum exceeds
`MEMORY_SHARE` of the machine's physical memory. The estimate is an upper bound in the shapes
that matter (every training position of a full batch), not an accounting of every buffer: it
is there so that `loss.retrieval=bce loss.num_negatives=4096` on a large catalogue fails in a
second with the reason, instead of swapping or being killed an hour into a sweep.
"""

from __future__ import annotations

from unigrf.config import ConfigError, ExperimentConfig, effective_m
from unigrf.evaluation.topk import ITEM_CHUNK
from unigrf.footprint import MEMORY_SHARE, physical_memory_bytes

FLOAT = 4  # bytes
__all__ = ["MEMORY_SHARE", "check_memory", "estimate_bytes", "physical_memory_bytes"]


def estimate_bytes(cfg: ExperimentConfig, num_items: int, max_len: int) -> dict[str, tuple[int, str]]:
    """{what: (bytes, the config key that sizes it)} for the tensors that can outgrow memory,
    with windows of `max_len` items (the data's: `data.max_len` or the value derived from it).
    One step's tensors: the number of windows an epoch trains on does not change them."""
    layers, heads, dim = cfg.model.resolved_shape()
    models = 2 if cfg.train.variant == "two_stage" else 1
    positions = cfg.train.batch_size * max_len  # every training position of a full batch
    tokens = 2 * max_len
    loss = cfg.loss
    out: dict[str, tuple[int, str]] = {
        "item table, its gradient and AdamW state": (models * (num_items + 1) * dim * FLOAT * 4, "model.dim"),
        # walked in item chunks past ITEM_CHUNK items (unigrf.evaluation.topk)
        "evaluation scores [eval.batch_size, items]": (
            cfg.eval.batch_size * min(num_items + 1, ITEM_CHUNK) * FLOAT * 4,
            "eval.batch_size",
        ),
    }
    if loss.retrieval == "full_softmax":
        out["full-softmax logits"] = (
            min(positions * num_items, loss.chunk_logits) * FLOAT * 3,
            "loss.chunk_logits",
        )
    elif loss.retrieval == "sampled_softmax":
        width = loss.num_negatives + (cfg.train.batch_size if loss.sampler == "in_batch" else 0)
        out["sampled-softmax logits"] = (positions * width * FLOAT * 3, "loss.num_negatives")
    else:  # bce / gbce gather [positions, negatives, dim] item rows
        out[f"{loss.retrieval} negatives' item rows"] = (
            positions * loss.num_negatives * dim * FLOAT * 2,
            "loss.num_negatives",
        )
    m = effective_m(cfg)
    if m:
        out["hard negatives' item rows"] = (positions * m * dim * FLOAT * 2, "enhancer.m")
        # the candidate pass's scores and its top-K's working copy, chunked past ITEM_CHUNK items
        out["enhancer candidate scores [train.batch_size, items]"] = (
            cfg.train.batch_size * min(num_items + 1, ITEM_CHUNK) * FLOAT * 2,
            "train.batch_size",
        )
    if cfg.model.backbone == "hstu":  # pointwise attention keeps its causal scores for backward
        out["HSTU attention scores"] = (
            models * cfg.train.batch_size * heads * tokens * tokens // 2 * FLOAT * layers,
            "data.max_len",
        )
    return out  # fmt: skip


def check_memory(cfg: ExperimentConfig, num_items: int, max_len: int, available: int | None = None) -> None:
    """Raise ConfigError when the estimate for `num_items` items and windows of `max_len` exceeds
    MEMORY_SHARE of `available` bytes (default: the machine's physical memory; unknown: no check)."""
    available = physical_memory_bytes() if available is None else available
    if not available:
        return
    parts = estimate_bytes(cfg, num_items, max_len)
    total = sum(b for b, _ in parts.values())
    if total <= MEMORY_SHARE * available:
        return
    what, (size, key) = max(parts.items(), key=lambda kv: kv[1][0])
    gib = 1024**3
    raise ConfigError(
        f"{key}: this configuration needs about {total / gib:.1f} GiB for {num_items:,} items, more than "
        f"{MEMORY_SHARE:.0%} of this machine's {available / gib:.1f} GiB; the largest part is the {what} "
        f"({size / gib:.1f} GiB, sized by {key}). Lower {key}, train.batch_size or data.max_len, or use "
        "loss.retrieval=full_softmax (its logits are computed in bounded chunks)"
    )
