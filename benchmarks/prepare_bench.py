"""Time `prepare_dataset` (cold cache) on ML-100K and on a 1M-interaction synthetic set.

    nice -n 10 .venv/bin/python benchmarks/prepare_bench.py [--ml100k-dir ../shared/data/ml-100k]
        [--synthetic-users 25000] [--compare-map-groups]

Ray is started and Ray Data warmed up once up front (reported separately, not charged to a
dataset).
Each dataset is prepared into a fresh temporary results dir (cold cache), then once more
(cache hit). The per-stage split comes from the prepared meta.json (`ray_stage_seconds`) and
from timing the reader / generator alone. `--compare-map-groups` also times Ray Data's
`groupby("user").map_groups` doing the same per-user sort on the synthetic rows, the
alternative the pipeline's hand partitioning replaces.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from unigrf.config import DataConfig, SyntheticConfig
from unigrf.data.prepare import load_meta, prepare_dataset
from unigrf.data.readers import read_interactions
from unigrf.data.synthetic import generate_synthetic


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def bench(name: str, cfg: DataConfig) -> dict:
    _, read_s = timed(read_interactions, cfg)
    with tempfile.TemporaryDirectory() as results:
        prepared, cold_s = timed(prepare_dataset, cfg, results, verbose=False)
        _, warm_s = timed(prepare_dataset, cfg, results, verbose=False)
        meta = load_meta(prepared)
    s = meta["stats"]
    row = {
        "dataset": name,
        "interactions": meta["num_interactions"],
        "users": meta["num_users"],
        "items": meta["num_items"],
        "read_s": read_s,
        "ray_stage_s": s["ray_stage_seconds"],
        "blocks": s["ray_blocks"],
        "cold_s": cold_s,
        "cached_s": warm_s,
    }
    print(
        f"{name}: {row['interactions']:,} interactions, {row['users']:,} users, {row['items']:,} items | "
        f"read+validate {read_s:.2f} s | Ray stage {row['ray_stage_s']:.2f} s ({row['blocks']} blocks) | "
        f"cold prepare {cold_s:.2f} s | cache hit {warm_s:.2f} s",
        flush=True,
    )
    return row


def map_groups_seconds(cfg: SyntheticConfig) -> float:
    """The alternative: Ray Data's groupby(user).map_groups sorting each user's rows."""
    import ray.data

    df = generate_synthetic(cfg)
    frame = pd.DataFrame(
        {
            "user": pd.factorize(df["user"])[0],
            "item": pd.factorize(df["item"])[0] + 1,
            "rating": df["rating"].to_numpy(),
            "timestamp": df["timestamp"].to_numpy(),
            "row": np.arange(len(df)),
        }
    )

    def per_user(g: pd.DataFrame) -> pd.DataFrame:
        g = g.sort_values(["timestamp", "row"], kind="stable")
        return pd.DataFrame(
            {
                "user": [g["user"].iloc[0]],
                "items": [g["item"].to_numpy()],
                "ratings": [g["rating"].to_numpy()],
                "timestamps": [g["timestamp"].to_numpy()],
            }
        )

    start = time.perf_counter()
    ds = ray.data.from_pandas(frame).groupby("user").map_groups(per_user, batch_format="pandas")
    n = ds.count()
    elapsed = time.perf_counter() - start
    assert n == frame["user"].nunique()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ml100k-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/ml-100k")
    )
    parser.add_argument("--synthetic-users", type=int, default=25_000)
    parser.add_argument("--synthetic-mean-len", type=int, default=40)
    parser.add_argument("--compare-map-groups", action="store_true")
    args = parser.parse_args()

    import ray
    import ray.data

    # a fresh local Ray of our own: never join another process's cluster on a shared machine
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _, ray_start_s = timed(ray.init, address="local", num_cpus=os.cpu_count(), include_dashboard=False)

    # the first Ray Data job pays for worker start-up and imports: charge it to no dataset
    _, warmup_s = timed(lambda: ray.data.range(10).map_batches(lambda b: b).count())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"Ray start {ray_start_s:.1f} s, Ray Data warm-up {warmup_s:.1f} s"
    )

    bench("ml-100k", DataConfig(dataset="ml-100k", data_dir=args.ml100k_dir))
    syn = SyntheticConfig(num_users=args.synthetic_users, mean_seq_len=args.synthetic_mean_len)
    _, gen_s = timed(generate_synthetic, syn)
    print(f"synthetic generation alone: {gen_s:.2f} s")
    bench(
        f"synthetic ({args.synthetic_users:,} users x {args.synthetic_mean_len})", DataConfig(synthetic=syn)
    )
    if args.compare_map_groups:
        print(f"groupby().map_groups on the same synthetic rows: {map_groups_seconds(syn):.2f} s", flush=True)


if __name__ == "__main__":
    main()
