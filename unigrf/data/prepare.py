"""Raw ratings -> per-user chronological sequences on disk (Ray Data), cached.

`prepare_dataset(cfg, results_dir)`:
1. parse + validate (`unigrf.data.readers.read_coded`, pandas C parser; delimited text in
   chunks, ids coded as they come), keeping `row` = file order;
2. optional k-core (iterative: every user AND every item >= k), then drop users with < 3
   interactions (leave-one-out needs a train, a validation and a test item), repeated until
   stable and counted;
3. remap users to 0..U-1 and items to 1..N (0 = padding), both by first appearance in the file;
4. **Ray Data**: users are hash-partitioned into blocks (`user % num_blocks`) and one
   `map_batches` task per block sorts its rows by (user, timestamp, row) and cuts them into
   per-user lists. `row` as the last key is what keeps tied timestamps in file order whatever
   order the rows reach the task in. (Partitioning ourselves and grouping per block with numpy
   avoids `groupby().map_groups()`'s per-group pandas work: benchmarks/RESULTS.md,
   "Preprocessing".) An input of at most one
   block's worth (`ROWS_PER_BLOCK`) is grouped by the same function in the preparing process,
   without Ray (`ray_blocks: 0` in the stats).
5. resolve the defaults that follow the data: `like_threshold` from the rating scale and
   `max_len` from the users' training lengths (`DataConfig.resolved_like_threshold`,
   `unigrf.config.derive_max_len`; an explicit value wins), recorded in meta.json with where
   each came from (`defaults`) and printed;
6. write `sequences.parquet`, `item_map.parquet`, `user_map.parquet` and `meta.json`
   (format: docs/ARCHITECTURE.md; loaded by `unigrf.data.sequences.SequenceData.load`).

Cache: `<results_dir>/data/<dataset>-<key>/`, `key` hashing the source files' md5 and the data
config (`config_hash`; `data_dir`/`path` are left out, the md5 already identifies the content;
so is `train_windows`, which only the training loop reads; the synthetic generator's settings
count only for the synthetic dataset). A hit is reused and
said so; any change of a source file or of the config gives a new key. The directory is written
under a temporary name in the same parent and renamed into place (`unigrf.atomic.write_dir_atomic`), so a crash
never leaves a half-written cache that a later run would trust; and a file lock per entry
(`<results_dir>/.locks/`, outside `data/`) makes a second process preparing the same entry at
the same time wait for the first and reuse its result.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from unigrf.atomic import make_dirs, write_dir_atomic
from unigrf.config import (
    LIKE_THRESHOLD_POSITION,
    MAX_LEN_BOUNDS,
    MAX_LEN_QUANTILE,
    MAX_LEN_STEP,
    DataConfig,
    SyntheticConfig,
    config_hash,
    config_to_dict,
    derive_max_len,
    length_quantile,
)
from unigrf.data.download import file_md5
from unigrf.data.readers import DataError, Interactions, read_coded, source_files
from unigrf.footprint import check_prepare
from unigrf.results_dir import check_writable

PREPARE_VERSION = 2  # bump when the output format or the pipeline's semantics change
MIN_INTERACTIONS = 3  # leave-one-out: train, validation and test items
ROWS_PER_BLOCK = 50_000  # below this a block is not worth a Ray task
MAX_ROWS_PER_BLOCK = 2_000_000  # bounds one task's memory
LOCK_DIR = ".locks"  # <results_dir>/.locks/data-<entry>.lock: one preparer per cache entry

SEQUENCE_SCHEMA = pa.schema(
    [
        ("user", pa.int64()),
        ("items", pa.list_(pa.int64())),
        ("ratings", pa.list_(pa.float64())),
        ("timestamps", pa.list_(pa.int64())),
    ]
)


# --------------------------------------------------------------------------------------------
# Cache key
# --------------------------------------------------------------------------------------------


def _key_config(cfg: DataConfig) -> DataConfig:
    """The part of `cfg` that determines the output: not where the files are (their md5 says
    what they are), not which training windows the loop cuts, and the generator's settings only
    for the synthetic dataset."""
    synthetic = cfg.synthetic if cfg.dataset == "synthetic" else SyntheticConfig()
    windows = DataConfig.train_windows
    return dataclasses.replace(cfg, data_dir=None, path=None, synthetic=synthetic, train_windows=windows)


def data_fingerprint(cfg: DataConfig) -> str:
    """What the prepared dataset of `cfg` is, wherever its raw files lie: the name of its cache
    directory (the dataset, the data config without locations, the source files' md5)."""
    return f"{cfg.dataset}-{cache_key(cfg, [_md5(p) for p in source_files(cfg)])}"


def _md5(path: Path) -> str:
    stat = path.stat()
    return _md5_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _md5_of(path: str, size: int, mtime_ns: int) -> str:
    """A file's md5, read once per process while the file is unchanged (a resumed grid asks
    for every cell's data fingerprint)."""
    return file_md5(path)


def cache_key(cfg: DataConfig, source_md5s: list[str]) -> str:
    blob = json.dumps(
        {"version": PREPARE_VERSION, "config": config_hash(_key_config(cfg)), "sources": source_md5s},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Filtering (vectorised, on integer codes)
# --------------------------------------------------------------------------------------------


def filter_interactions(
    users: np.ndarray, items: np.ndarray, k_core: int, min_interactions: int = MIN_INTERACTIONS
) -> tuple[np.ndarray, dict[str, int]]:
    """Keep-mask [n] for codes `users`/`items` [n] (0..U-1, 0..I-1).

    Iterates to a fixed point: k-core (users and items with >= k_core interactions), then users
    with >= `min_interactions`. Returns the mask and counts of what each rule removed.
    """
    keep = np.ones(len(users), dtype=bool)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    stats = {"kcore_removed_interactions": 0, "users_dropped_short": 0, "kcore_iterations": 0}
    while True:
        changed = False
        if k_core > 1:
            while True:  # the k-core fixed point
                u_count = np.bincount(users[keep], minlength=n_users)
                i_count = np.bincount(items[keep], minlength=n_items)
                new = keep & (u_count[users] >= k_core) & (i_count[items] >= k_core)
                removed = int(keep.sum() - new.sum())
                if removed == 0:
                    break
                stats["kcore_removed_interactions"] += removed
                stats["kcore_iterations"] += 1
                keep, changed = new, True
        u_count = np.bincount(users[keep], minlength=n_users)
        short = keep & (u_count[users] < min_interactions)
        if short.any():
            stats["users_dropped_short"] += int(
                np.count_nonzero((u_count > 0) & (u_count < min_interactions))
            )
            keep = keep & ~short
            changed = True
        if not changed or k_core <= 1:
            return keep, stats


# --------------------------------------------------------------------------------------------
# The Ray Data stage: per-block sort and grouping
# --------------------------------------------------------------------------------------------


def sequences_of_block(block: pd.DataFrame) -> pa.Table:
    """Rows of whole users [n] (user, item, rating, timestamp, row; any order) -> one row per
    user with its chronological lists, ties in file order (the `row` key).

    `np.lexsort` sorts by (user, timestamp, row); `row` is unique, so the result does not
    depend on the order the rows arrive in (a hash shuffle is free to reorder them).
    """
    if len(block) == 0:
        return SEQUENCE_SCHEMA.empty_table()
    user = block["user"].to_numpy(np.int64)
    order = np.lexsort((block["row"].to_numpy(np.int64), block["timestamp"].to_numpy(np.int64), user))
    user = user[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(user)) + 1])
    offsets = pa.array(np.append(starts, len(user)).astype(np.int32), pa.int32())

    def lists(col: str, dtype: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(block[col].to_numpy()[order], dtype))

    return pa.table(
        [
            pa.array(user[starts], pa.int64()),
            lists("item", pa.int64()),
            lists("rating", pa.float64()),
            lists("timestamp", pa.int64()),
        ],
        schema=SEQUENCE_SCHEMA,
    )


def _num_blocks(n_rows: int) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    wanted = min(cpus, math.ceil(n_rows / ROWS_PER_BLOCK))
    return max(1, wanted, math.ceil(n_rows / MAX_ROWS_PER_BLOCK))


def build_sequences(frame: pd.DataFrame, num_blocks: int | None = None) -> tuple[pa.Table, int]:
    """Ray Data: `frame` (user 0..U-1, item, rating, timestamp, row) -> (the sequence table, one
    row per user sorted by user; the number of blocks used). Ray must be initialised."""
    import ray
    import ray.data

    num_blocks = num_blocks or _num_blocks(len(frame))
    part = frame["user"].to_numpy() % num_blocks
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(1, num_blocks))
    blocks = [frame.iloc[idx].reset_index(drop=True) for idx in np.split(order, bounds)]

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    try:
        ds = ray.data.from_pandas(blocks).map_batches(
            sequences_of_block, batch_format="pandas", batch_size=None, zero_copy_batch=True
        )
        del blocks  # from_pandas put them in the object store: the driver's copies can go
        tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
    table = pa.concat_tables(tables).sort_by("user") if tables else SEQUENCE_SCHEMA.empty_table()
    users = table.column("user").to_numpy()
    if len(users) and (np.any(np.diff(users) == 0) or users[-1] != len(users) - 1):
        # a block split by the executor would cut a user's rows in two: never silently accept it
        raise RuntimeError("prepare: a user's rows were split across Ray Data blocks")
    return table, num_blocks


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"data: {message}", flush=True)


def _is_complete(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "sequences.parquet").is_file()


def load_meta(prepared_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(prepared_dir) / "meta.json").read_text())


def prepare_dataset(
    cfg: DataConfig,
    results_dir: str | Path,
    *,
    num_blocks: int | None = None,
    verbose: bool = True,
    available: int | None = None,
) -> Path:
    """Prepare `cfg`'s dataset under `<results_dir>/data/` (or reuse the cache); returns the dir.

    Ray Data groups the sequences of inputs above `ROWS_PER_BLOCK` rows: it starts a local Ray
    (or joins $RAY_ADDRESS) only if none is initialised, and shuts down only a Ray it started.
    `num_blocks` overrides the number of Ray Data blocks (default: from the row count and the
    cluster's CPUs; a smaller input is grouped in this process unless `num_blocks` is given).
    A preparation whose estimated peak (`unigrf.footprint.check_prepare`) exceeds `available`
    bytes (default: that share of this machine's memory) is refused before reading.
    """
    check_writable(results_dir)  # before reading: an unwritable cache fails at once
    sources = source_files(cfg)
    md5s = [_md5(p) for p in sources]
    final = Path(results_dir) / "data" / f"{cfg.dataset}-{cache_key(cfg, md5s)}"
    if _is_complete(final):
        _log(verbose, f"reusing cached {final} (same source md5 and data config)")
        _log(verbose, describe_defaults(load_meta(final)))
        return final
    check_prepare(cfg, available)  # what cannot fit fails here, not as an out-of-memory kill
    lock = _acquire_cache_lock(final, verbose)
    try:
        if _is_complete(final):  # another process prepared it while this one waited
            _log(verbose, f"reusing {final}, prepared meanwhile by another process")
            _log(verbose, describe_defaults(load_meta(final)))
            return final
        _prepare(cfg, sources, md5s, final, num_blocks, verbose)
    finally:
        lock.release()
    return final


def _acquire_cache_lock(final: Path, verbose: bool):
    """The inter-process lock of one cache entry (`<results_dir>/.locks/data-<entry>.lock`),
    acquired: two
    commands preparing the same dataset into one results directory at once do the work once,
    and the second reuses the first's result. (Without it both would still end with one intact
    entry — the rename is atomic and the loser's copy is discarded — but do the work twice.)"""
    from filelock import FileLock, Timeout

    locks = final.parent.parent / LOCK_DIR  # beside data/, which holds cache entries only
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(locks / f"data-{final.name}.lock")
    try:
        lock.acquire(blocking=False)
    except Timeout:
        _log(verbose, f"waiting for another process preparing {final} (lock {lock.lock_file})")
        lock.acquire()
    return lock


def _prepare(
    cfg: DataConfig, sources: list[Path], md5s: list[str], final: Path, num_blocks: int | None, verbose: bool
) -> None:
    """Read, filter, group (Ray Data) and write the cache entry `final` (see the module docstring)."""
    start = time.perf_counter()
    what = ", ".join(map(str, sources)) or f"the generator (seed {cfg.synthetic.seed})"
    _log(verbose, f"reading {cfg.dataset} from {what}")
    data, _ = read_coded(cfg)
    bad_rows, first_bad_row, raw_rows = data.bad_rows, data.first_bad_row, len(data)
    if bad_rows:
        _log(verbose, f"skipped {bad_rows:,} bad rows (first: {first_bad_row})")

    # filter on the reader's integer codes (by first appearance in the file), then remap
    raw_users, raw_items = len(data.user_ids), len(data.item_ids)
    k = cfg.resolved_k_core()
    keep, filter_stats = filter_interactions(data.user, data.item, k)
    if not keep.any():
        where = sources[0] if sources else "synthetic data"
        raise DataError(
            f"{where}: no user left after filtering ({raw_rows:,} interactions of {raw_users:,} users "
            f"read; k_core={k}, each user needs >= {MIN_INTERACTIONS} interactions)"
        )
    rows = np.flatnonzero(keep)  # file order of the kept interactions
    frame, user_raw, item_raw = _kept_rows(data, rows)
    del data, keep, rows  # the raw codes are not needed past here: free them before the grouping

    t_group = time.perf_counter()
    if num_blocks is None and len(frame) <= ROWS_PER_BLOCK:
        # one block's worth: grouped here — a Ray Data pipeline (and, from `unigrf data`, a
        # Ray start) would cost seconds for what numpy does in milliseconds
        table, used_blocks = sequences_of_block(frame), 0
    else:
        from unigrf.ray_utils import init_ray

        started = init_ray(announce=False)
        try:
            table, used_blocks = build_sequences(frame, num_blocks)
        finally:
            if started:
                import ray

                ray.shutdown()
    group_seconds = time.perf_counter() - t_group

    lengths = np.asarray(table.column("items").combine_chunks().value_lengths())
    ratings = frame["rating"].to_numpy()
    flat_ts = np.asarray(table.column("timestamps").combine_chunks().flatten())
    owner = np.repeat(np.arange(len(lengths)), lengths)
    pairs = owner[1:] == owner[:-1]  # consecutive interactions of one user
    tied = int(np.count_nonzero((flat_ts[1:] == flat_ts[:-1]) & pairs))
    rating_values = sorted(float(r) for r in np.unique(ratings))
    like_threshold = cfg.resolved_like_threshold()
    train_lengths = np.maximum(lengths - 2, 0)  # before each user's validation and test items
    max_len = cfg.resolved_max_len(derive_max_len(train_lengths.tolist()))
    stats = {
        "users": int(len(lengths)),
        "items": int(len(item_raw)),
        "interactions": int(len(frame)),
        "seq_len_mean": round(float(lengths.mean()), 2),
        "seq_len_median": float(np.median(lengths)),
        "seq_len_max": int(lengths.max()),
        "seq_len_min": int(lengths.min()),
        "like_ratio": round(float(np.mean(ratings >= like_threshold)), 4),
        # the training part (all but the validation and test items) and how much of it one
        # window per user at max_len covers (data.train_windows: last); "all" covers every item
        "train_interactions": int(train_lengths.sum()),
        "train_len_p95": length_quantile(train_lengths.tolist(), MAX_LEN_QUANTILE),
        "last_window_share": round(
            float(np.minimum(train_lengths, max_len).sum() / max(int(train_lengths.sum()), 1)), 4
        ),
        "tied_next_share": round(tied / max(1, int(pairs.sum())), 4),
        "raw_interactions": int(raw_rows + bad_rows),
        "raw_users": int(raw_users),
        "raw_items": int(raw_items),
        "bad_rows_skipped": bad_rows,
        "first_bad_row": first_bad_row,
        "users_dropped_short": filter_stats["users_dropped_short"],
        "kcore_removed_interactions": filter_stats["kcore_removed_interactions"],
        "ray_blocks": int(used_blocks),  # 0: grouped in the preparing process (one block's worth)
        "ray_stage_seconds": round(group_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
    meta = {
        "dataset": cfg.dataset,
        "num_users": stats["users"],
        "num_items": stats["items"],
        "num_interactions": stats["interactions"],
        "rating_values": rating_values,
        "like_threshold": like_threshold,
        "max_len": max_len,
        "defaults": _defaults_source(cfg),  # where like_threshold and max_len came from
        "k_core": k,
        "sources": [{"path": str(p.resolve()), "md5": m} for p, m in zip(sources, md5s)],
        "config_hash": config_hash(_key_config(cfg)),
        "config": config_to_dict(cfg),
        "prepare_version": PREPARE_VERSION,
        "stats": stats,
    }
    user_map = pa.table(
        {
            "raw": pa.array(np.asarray(user_raw, dtype=object), pa.string()),
            "index": pa.array(np.arange(len(user_raw)), pa.int64()),
        }
    )
    item_map = pa.table(
        {
            "raw": pa.array(np.asarray(item_raw, dtype=object), pa.string()),
            "index": pa.array(np.arange(1, len(item_raw) + 1), pa.int64()),
        }
    )
    _write_atomically(final, table, user_map, item_map, meta)
    _log(verbose, describe_defaults(meta))
    _log(verbose, f"prepared {final} in {time.perf_counter() - start:.1f} s")


def _kept_rows(data: Interactions, rows: np.ndarray) -> tuple[pd.DataFrame, pd.Index, pd.Index]:
    """The rows `rows` (file order) of `data` renumbered for the sequences: (frame of user
    0..U-1, item 1..N (0 is padding), rating, timestamp, row = the file order; the raw user ids
    by new code; the raw item ids by new code - 1). Both numberings are by first appearance in
    the file among the kept rows, as factorising their raw ids would give."""
    if len(rows) == len(data):  # nothing filtered: the reader's codes are already these
        user_idx, user_raw = data.user, data.user_ids
        item_idx, item_raw = data.item, data.item_ids
        rating, timestamp = data.rating, data.timestamp
    else:
        user_idx, user_first = pd.factorize(data.user[rows], sort=False)
        item_idx, item_first = pd.factorize(data.item[rows], sort=False)
        user_raw, item_raw = data.user_ids.take(user_first), data.item_ids.take(item_first)
        rating, timestamp = data.rating[rows], data.timestamp[rows]
    frame = pd.DataFrame(
        {
            "user": user_idx.astype(np.int64),
            "item": item_idx.astype(np.int64) + 1,  # 0 is padding
            "rating": rating.astype(np.float64),
            "timestamp": timestamp.astype(np.int64),
            "row": rows.astype(np.int64),
        }
    )
    return frame, user_raw, item_raw


def _defaults_source(cfg: DataConfig) -> dict[str, str]:
    """How `like_threshold` and `max_len` were chosen: the config's value, or the rule."""
    lo, hi = cfg.resolved_rating_scale()
    like = (
        "data.like_threshold"
        if cfg.like_threshold is not None
        else f"derived: {LIKE_THRESHOLD_POSITION:g} of the way up the rating scale [{lo:g}, {hi:g}]"
    )
    max_len = (
        "data.max_len"
        if cfg.max_len is not None
        else f"derived: the {MAX_LEN_QUANTILE:.0%} quantile of users' training lengths, rounded up to "
        f"{MAX_LEN_STEP}s, within [{MAX_LEN_BOUNDS[0]}, {MAX_LEN_BOUNDS[1]}]"
    )
    return {"like_threshold": like, "max_len": max_len}


def describe_defaults(meta: dict[str, Any]) -> str:
    """One console line: the like threshold and max_len a prepared dataset uses, and why."""
    source = meta.get("defaults", {})
    return (
        f"like_threshold {meta['like_threshold']:g} ({source.get('like_threshold', 'data.like_threshold')}), "
        f"max_len {meta['max_len']} ({source.get('max_len', 'data.max_len')})"
    )


def _write_atomically(
    final: Path, table: pa.Table, user_map: pa.Table, item_map: pa.Table, meta: dict[str, Any]
) -> None:
    """The prepared dataset, whole or not at all (`unigrf.atomic.write_dir_atomic`); a copy
    another process finished first stands."""

    def fill(tmp: Path) -> None:
        pq.write_table(table, tmp / "sequences.parquet")
        pq.write_table(user_map, tmp / "user_map.parquet")
        pq.write_table(item_map, tmp / "item_map.parquet")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    make_dirs(final.parent)
    write_dir_atomic(final, fill, inside=final.parent, keep_existing=True)


# --------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------


def format_stats(meta: dict[str, Any]) -> str:
    """A readable table of a prepared dataset's meta.json."""
    s = meta["stats"]
    source = meta.get("defaults", {})  # absent in entries prepared before the data-derived defaults
    values = ", ".join(f"{v:g}" for v in meta["rating_values"])
    rows = [
        ("dataset", meta["dataset"]),
        ("users", f"{s['users']:,}"),
        ("items", f"{s['items']:,}"),
        ("interactions", f"{s['interactions']:,}"),
        (
            "sequence length",
            f"mean {s['seq_len_mean']:.1f}, median {s['seq_len_median']:g}, "
            f"min {s['seq_len_min']:,}, max {s['seq_len_max']:,}",
        ),
        ("rating values", values),
        ("like ratio", f"{s['like_ratio']:.3f} (rating >= {meta['like_threshold']:g})"),
        (
            "like_threshold",
            f"{meta['like_threshold']:g} ({source.get('like_threshold', 'data.like_threshold')})",
        ),
        ("tied timestamps", f"{s['tied_next_share']:.3f} of consecutive pairs (kept in file order)"),
        ("max_len", f"{meta['max_len']} ({source.get('max_len', 'data.max_len')})"),
    ]
    if "train_interactions" in s:
        rows.append(
            (
                "training part",
                f"{s['train_interactions']:,} interactions, 95th percentile {s['train_len_p95']:,} per user; "
                f"its last max_len items cover {s['last_window_share']:.1%} (train_windows last)",
            )
        )
    rows += [
        ("k-core", f"{meta['k_core']} ({s['kcore_removed_interactions']:,} interactions removed)"),
        ("users dropped (< 3)", f"{s['users_dropped_short']:,}"),
        ("bad rows skipped", f"{s['bad_rows_skipped']:,}"),
        ("raw", f"{s['raw_users']:,} users, {s['raw_items']:,} items, {s['raw_interactions']:,} rows"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
