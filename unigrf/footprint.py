"""Memory a data preparation or an evaluation will need, estimated from the shapes before it starts.

`unigrf.training.memory.check_memory` refuses a training configuration that cannot fit; this
module does the same for the two other commands that grow with a dataset:

- **prepare** (`check_prepare`, called by `prepare_dataset` before it reads): a fixed part (a
  local Ray: GCS, raylet, the Ray Data workers) plus a part per raw row (the rows as integer
  codes — delimited text is read in chunks, never whole —, the per-block copies and the object
  store's, the sequence table: the Ray Data grouping sets the peak). The rows are
  counted from the file's size and the mean length of its first lines (`estimate_rows`), so the
  estimate costs a read of 1 MiB.
- **evaluation** (`evaluation_bytes`, `check_evaluation`): the prepared sequences in memory, the
  item table, and one user batch's scores — [eval.batch_size, items] several times over on the
  unchunked path, [eval.batch_size, ITEM_CHUNK] on the chunked one (`unigrf.evaluation.topk`).

The per-row and per-score constants are upper bounds fitted to the measured peaks
(benchmarks/RESULTS.md "Scale": prepare and evaluation peak memory against rows and catalogue);
a `ResourceError` names the file or key, the estimate, its largest part and what to change.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

GIB = 1024**3
MEMORY_SHARE = 0.8  # of physical memory, the most one command may plan to use
# Upper bounds over the measured peaks (benchmarks/RESULTS.md "Scale": ~2.6 GiB at 1M rows and
# 245-270 bytes per added row, ML-20M's and Amazon-Books' stand-ins): room for longer raw ids
RAY_FIXED_BYTES = 3 * GIB  # a local Ray and its Ray Data workers, before any row
PREPARE_BYTES_PER_ROW = 400  # coded rows, blocks, object store, sequence table
SEQUENCE_BYTES_PER_ROW = 40  # SequenceData: items, ratings, timestamps, levels per interaction
SCORE_COPIES_UNCHUNKED = 6  # scores, masked copy, mask, competitors, comparisons, topk's buffer
SCORE_COPIES_CHUNKED = 8  # the same per chunk, plus float64 for P(next)'s normaliser
FLOAT = 4


def physical_memory_bytes() -> int | None:
    """This machine's physical memory (POSIX), or None where it cannot be read."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


class ResourceError(RuntimeError):
    """A command would not fit in this machine's memory; the message says what and why."""


def estimate_rows(path: str | Path, sample: int = 1 << 20) -> int:
    """Rows of a line-oriented file, from its size and the mean length of its first `sample` bytes."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(sample)
    lines = head.count(b"\n")
    if lines == 0:
        return 1
    return math.ceil(size / (len(head) / lines))


def prepare_bytes(rows: int) -> dict[str, int]:
    """{part: bytes} preparing `rows` raw rows takes at its peak."""
    return {"a local Ray and its workers": RAY_FIXED_BYTES, "the rows": rows * PREPARE_BYTES_PER_ROW}


def evaluation_bytes(batch_size: int, num_items: int, dim: int, chunked: bool, interactions: int = 0) -> int:
    """Bytes an evaluation holds at its peak: the sequences of `interactions` ratings, the item
    table [num_items + 1, dim] and one batch's scores (chunked: over ITEM_CHUNK items at most)."""
    from unigrf.evaluation.topk import ITEM_CHUNK

    width = min(num_items + 1, ITEM_CHUNK) if chunked else num_items + 1
    copies = SCORE_COPIES_CHUNKED if chunked else SCORE_COPIES_UNCHUNKED
    return (
        interactions * SEQUENCE_BYTES_PER_ROW
        + (num_items + 1) * dim * FLOAT
        + batch_size * width * FLOAT * copies
    )


def _available(available: int | None) -> int | None:
    if available is not None:
        return available
    physical = physical_memory_bytes()
    return int(MEMORY_SHARE * physical) if physical else None


def check_fits(parts: dict[str, int], available: int | None, what: str, advice: str) -> int:
    """The sum of `parts`; raise ResourceError when it exceeds `available` bytes (default:
    MEMORY_SHARE of physical memory; unknown: no check)."""
    total = sum(parts.values())
    available = _available(available)
    if available and total > available:
        largest, size = max(parts.items(), key=lambda kv: kv[1])
        raise ResourceError(
            f"{what} needs about {total / GIB:.1f} GiB, more than the {available / GIB:.1f} GiB available; "
            f"the largest part is {largest} ({size / GIB:.1f} GiB). {advice}"
        )
    return total


def check_prepare(cfg, available: int | None = None) -> int:
    """Estimated peak bytes of preparing `cfg` (a DataConfig) from its raw files; ResourceError
    naming the file when they would not fit. The synthetic generator is not estimated here."""
    from unigrf.data.readers import source_files

    sources = source_files(cfg) if cfg.dataset != "synthetic" else []
    if not sources:
        return 0
    rows = sum(estimate_rows(p) for p in sources)
    return check_fits(
        prepare_bytes(rows),
        available,
        f"{sources[0]}: preparing about {rows:,} rows",
        "Prepare it on a machine with more memory (the prepared directory is portable: copy "
        "<results_dir>/data/ over), or join a Ray cluster (--address) whose nodes hold the blocks.",
    )


def check_evaluation(
    cfg, num_users: int, num_items: int, interactions: int, available: int | None = None
) -> int:
    """Estimated peak bytes of evaluating `cfg` (an ExperimentConfig, model size resolved) on
    prepared data of that shape; ResourceError naming eval.batch_size when it would not fit."""
    _, _, dim = cfg.model.resolved_shape()
    total = evaluation_bytes(cfg.eval.batch_size, num_items, dim, chunked=True, interactions=interactions)
    parts = {
        "the sequences": interactions * SEQUENCE_BYTES_PER_ROW,
        "one batch's scores and the item table": total - interactions * SEQUENCE_BYTES_PER_ROW,
    }
    return check_fits(
        parts,
        available,
        f"eval.batch_size: evaluating {num_users:,} users against {num_items:,} items",
        "Lower eval.batch_size, or evaluate on a machine with more memory.",
    )
