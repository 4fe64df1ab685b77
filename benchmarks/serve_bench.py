"""Serving latency on ML-100K through Ray Serve over loopback HTTP: one model (one pass over the
history, the candidates scored from its key/value cache) vs two models (the two_stage
pipeline: two passes) vs no cache (one model, the history re-encoded for every candidate).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_bench.py --results /work/scratch/serve/results

1. Two short ML-100K runs, trained if missing with the config defaults (`unigrf train
   configs/ml-100k.yaml train.epochs=3 ...`: `train.selection=joint`, so the one-model run's
   checkpoint is one model; `train.variant=two_stage`). Latency does not depend on how long a
   model trained, only on its shape (model.size auto -> small on ML-100K, max_len 200).
2. In-process compute per query (no HTTP, no Serve): `Recommender.recommend` on batches of 1
   and of 8 queries, one torch thread.
3. Each system deployed in turn as the same Serve application (one replica, one CPU, one
   torch thread, batches of up to 8 gathered for 5 ms) and driven open-loop at fixed request
   rates: requests sent on a fixed schedule whatever the answers, each with a client timeout,
   every cell bounded in count and time. Requests are real users' test-split histories (every
   interaction but the last; the model reads the latest 200) for the time of their test item.
4. A bounded load test on the one-model system: `--load-seconds` at `--load-rate`, every 10th
   request a bad-input probe; it counts 5xx (must be 0) and probes not answered 4xx (must be 0).

Prints Markdown tables (paste into docs/serving.md and benchmarks/RESULTS.md "Serving") and
writes them with the raw numbers to `<results>/serve_bench.json`. The load generator, the HTTP
proxy and the replica share the machine's cores: the absolute times include that contention;
the ratios between systems, measured in one run under the same conditions, are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ml-100k.yaml"
RUNS = {"serve-unified": ["train.selection=joint"], "serve-two-stage": ["train.variant=two_stage"]}
SYSTEMS = {  # name -> (run, mode)
    "one model": ("serve-unified", "cached"),
    "two models": ("serve-two-stage", "cached"),
    "no cache": ("serve-unified", "no_cache"),
}
PROBES: list[tuple[bytes, int]] = [
    (b"{not json", 400),
    (b'"a string"', 422),
    (b'{"histroy": []}', 422),
    (b'{"history": [{"item": "50", "rating": 3.5, "timestamp": 1}]}', 422),
    (b'{"history": [{"item": "50", "rating": 5, "timestamp": 1}], "k": 0}', 422),
    (b'{"history": [{"item": "50", "rating": 5, "timestamp": 1}], "k": 1000}', 422),
    (b'{"history": [{"item": "50", "rating": 5}]}', 422),
]


def ensure_run(results: Path, name: str, overrides: list[str], data_dir: Path, epochs: int) -> Path:
    """`<results>/runs/<name>`, trained with `unigrf train` when it has no best_model.pt."""
    run_dir = results / "runs" / name
    if not (run_dir / "best_model.pt").exists():
        command = [
            str(Path(sys.executable).parent / "unigrf"),
            "train",
            str(CONFIG),
            f"data.data_dir={data_dir}",
            f"train.epochs={epochs}",
            f"name={name}",
            *overrides,
            "--results-dir",
            str(results),
        ]
        print("training:", " ".join(command), flush=True)
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run_dir


def user_requests(run_dir: Path, count: int, seed: int = 0) -> tuple[list[bytes], list[Any]]:
    """`count` users' test-split histories as request bodies (raw ids), and as `Query`s."""
    from unigrf.data.sequences import SequenceData
    from unigrf.serving.recommender import Interaction, Query, load_run

    run = load_run(run_dir)
    data = SequenceData.load(run.prepared_dir)
    users = np.random.default_rng(seed).choice(data.num_users, size=count, replace=count > data.num_users)
    bodies, queries = [], []
    for u in users:
        start, end = data.offsets[u], data.offsets[u + 1] - 1
        events = [
            {"item": str(run.item_raw[i]), "rating": float(r), "timestamp": int(t)}
            for i, r, t in zip(data.items[start:end], data.ratings[start:end], data.timestamps[start:end])
        ]
        time_for = int(data.timestamps[end])
        bodies.append(json.dumps({"history": events, "k": 10, "time": time_for}).encode())
        history = tuple(Interaction(e["item"], e["rating"], e["timestamp"]) for e in events)
        queries.append(Query(history, 10, time_for))
    return bodies, queries


def compute_times(run_dir: Path, mode: str, queries: list[Any], batch: int) -> float:
    """Mean milliseconds of model work per query (in-process, one thread), batches of `batch`."""
    import torch

    from unigrf.serving.recommender import Recommender, load_run

    torch.set_num_threads(1)
    recommender = Recommender(load_run(run_dir), mode=mode)
    recommender.recommend(queries[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        recommender.recommend(queries[i : i + batch])
    return 1000 * (time.perf_counter() - start) / len(queries)


async def fire(url: str, bodies: list[bytes], rate: float, count: int, timeout_s: float) -> dict[str, Any]:
    """Open loop: request i sent at i / rate seconds whatever came back; -> latency summary."""
    import aiohttp

    results: list[tuple[Any, float]] = []

    async def one(session: aiohttp.ClientSession, body: bytes) -> None:
        start = time.perf_counter()
        try:
            async with session.post(
                f"{url}/recommend", data=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as r:
                await r.read()
                results.append((r.status, time.perf_counter() - start))
        except TimeoutError:
            results.append(("timeout", time.perf_counter() - start))
        except aiohttp.ClientError as err:
            results.append((type(err).__name__, time.perf_counter() - start))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        begin = time.perf_counter()
        tasks = []
        for i in range(count):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
    ok = sorted(latency for status, latency in results if status == 200)
    return {
        "rate": rate,
        "sent": count,
        "ok": len(ok),
        "5xx": sum(isinstance(s, int) and s >= 500 for s, _ in results),
        "failed": sum(not isinstance(s, int) for s, _ in results),
        "p50_ms": 1000 * float(np.percentile(ok, 50)) if ok else float("nan"),
        "p99_ms": 1000 * float(np.percentile(ok, 99)) if ok else float("nan"),
        "throughput": len(ok) / elapsed,
        "seconds": elapsed,
        "load": os.getloadavg()[0],
    }


async def load_test(
    url: str, bodies: list[bytes], rate: float, seconds: float, timeout_s: float
) -> dict[str, Any]:
    """`seconds` at `rate`, every 10th request a bad-input probe: counts by status."""
    import aiohttp

    good: list[Any] = []
    probes: list[tuple[Any, int]] = []

    async def one(session: aiohttp.ClientSession, body: bytes, expected: int | None) -> None:
        try:
            async with session.post(
                f"{url}/recommend", data=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as r:
                await r.read()
                status: Any = r.status
        except TimeoutError:
            status = "timeout"
        except aiohttp.ClientError as err:
            status = type(err).__name__
        if expected is None:
            good.append(status)
        else:
            probes.append((status, expected))

    count = int(rate * seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        begin = time.perf_counter()
        tasks = []
        for i in range(count):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i % 10 == 9:
                body, expected = PROBES[(i // 10) % len(PROBES)]
                tasks.append(asyncio.create_task(one(session, body, expected)))
            else:
                tasks.append(asyncio.create_task(one(session, bodies[i % len(bodies)], None)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
        async with session.get(f"{url}/health") as r:
            healthy = r.status == 200
    return {
        "rate": rate,
        "seconds": elapsed,
        "requests": len(good),
        "ok": sum(s == 200 for s in good),
        "5xx": sum(isinstance(s, int) and s >= 500 for s in good + [s for s, _ in probes]),
        "failed": sum(not isinstance(s, int) for s in good),
        "probes": len(probes),
        "probes_as_expected": sum(s == e for s, e in probes),
        "healthy_after": healthy,
    }


def markdown(
    cells: dict[str, list[dict[str, Any]]], compute: dict[str, dict[int, float]], load: dict[str, Any]
) -> str:
    lines = [
        "Model work per query, in-process (no HTTP), one torch thread, mean over the requests:",
        "",
        "| system | passes over the history | batch 1 (ms) | batch 8 (ms/query) |",
        "|---|---:|---:|---:|",
    ]
    passes = {"one model": "1", "two models": "2", "no cache": "1 + C (C = 100)"}
    for name, times in compute.items():
        lines.append(f"| {name} | {passes[name]} | {times[1]:.1f} | {times[8]:.1f} |")
    lines += [
        "",
        "Over HTTP (Ray Serve, one replica with one CPU, batches of up to 8 within 5 ms), open loop:",
        "",
        "| rate (req/s) | system | sent | ok | p50 (ms) | p99 (ms) | throughput (req/s) | 5xx | timed out / failed | p50 / one model |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {c["rate"]: c["p50_ms"] for c in cells.get("one model", [])}
    rates = sorted({c["rate"] for rows in cells.values() for c in rows})
    for rate in rates:
        for name, rows in cells.items():
            for c in rows:
                if c["rate"] == rate:
                    ratio = c["p50_ms"] / base[rate] if base.get(rate) else float("nan")
                    lines.append(
                        f"| {rate:g} | {name} | {c['sent']} | {c['ok']} | {c['p50_ms']:.0f} | {c['p99_ms']:.0f} | "
                        f"{c['throughput']:.2f} | {c['5xx']} | {c['failed']} | {ratio:.2f} |"
                    )
    lines += [
        "",
        f"Load test (one model): {load['seconds']:.0f} s at {load['rate']:g} req/s — {load['requests']} requests, "
        f"{load['ok']} answered 200, {load['5xx']} 5xx, {load['failed']} failed; {load['probes']} bad-input "
        f"probes, {load['probes_as_expected']} answered their 4xx; healthy after: {load['healthy_after']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path("/work/scratch/serve/results"))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    parser.add_argument(
        "--epochs", type=int, default=3, help="training epochs of the runs trained if missing"
    )
    parser.add_argument("--rates", default="1,4,12", help="request rates (req/s), comma-separated")
    parser.add_argument("--seconds", type=float, default=30, help="sending time per (system, rate) cell")
    parser.add_argument("--max-requests", type=int, default=400, help="requests per cell at most")
    parser.add_argument("--timeout", type=float, default=30, help="client timeout per request (s)")
    parser.add_argument(
        "--compute-queries", type=int, default=48, help="queries timed in-process (no cache: 1/6)"
    )
    parser.add_argument("--load-rate", type=float, default=6)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=18123)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    results = args.results.resolve()
    runs = {
        name: ensure_run(results, name, extra, args.data_dir, args.epochs) for name, extra in RUNS.items()
    }
    bodies, queries = user_requests(runs["serve-unified"], 400)

    compute: dict[str, dict[int, float]] = {}
    for name, (run, mode) in SYSTEMS.items():
        n = args.compute_queries if mode == "cached" else max(8, args.compute_queries // 6)
        compute[name] = {b: compute_times(runs[run], mode, queries[:n], b) for b in (1, 8)}
        print(f"compute {name}: {compute[name]}", flush=True)

    from ray import serve

    from unigrf.ray_utils import init_ray
    from unigrf.serving.deploy import deploy
    from unigrf.serving.settings import ServeSettings

    init_ray(None, num_cpus=2, quiet=True)
    settings = ServeSettings(port=args.port, app_name="bench", replicas=1, num_cpus=1.0, max_batch_size=8)
    rates = [float(r) for r in args.rates.split(",")]
    cells: dict[str, list[dict[str, Any]]] = {}
    load: dict[str, Any] = {}
    try:
        for name, (run, mode) in SYSTEMS.items():
            url = deploy(runs[run], dataclasses.replace(settings, mode=mode))
            asyncio.run(fire(url, bodies, 2.0, 6, args.timeout))  # warm-up
            cells[name] = []
            for rate in rates:
                count = min(args.max_requests, int(rate * args.seconds))
                cell = asyncio.run(fire(url, bodies, rate, count, args.timeout))
                cells[name].append(cell)
                print(f"{name} @ {rate:g}/s: {json.dumps(cell)}", flush=True)
        url = deploy(runs["serve-unified"], settings)
        load = asyncio.run(load_test(url, bodies, args.load_rate, args.load_seconds, args.timeout))
        print(f"load test: {json.dumps(load)}", flush=True)
    finally:
        serve.shutdown()
    table = markdown(cells, compute, load)
    summary = {
        "cells": cells,
        "compute_ms_per_query": compute,
        "load_test": load,
        "settings": dataclasses.asdict(settings),
        "cpus": os.cpu_count(),
        "median_load_during_cells": statistics.median(c["load"] for rows in cells.values() for c in rows),
        "markdown": table,
    }
    (results / "serve_bench.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(table)
    return 0 if load.get("5xx", 1) == 0 and load.get("probes_as_expected") == load.get("probes") else 1


if __name__ == "__main__":
    sys.exit(main())
