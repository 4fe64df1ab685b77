"""Evaluation of two checkouts side by side: the same random-init model and synthetic users,
timed alternately, old, new, old, new, ...: did a change to the evaluation make it faster, and
are its numbers the same?

Each measurement is a process of its own whose `PYTHONPATH` is its checkout (so `import unigrf`
is that checkout's code; the interpreter and packages are this one's): it builds the data
(`scale_bench._synthetic`: `--users` users of 50 items over `--items` items, popularity-skewed),
a `small` UniGRF seeded 0, evaluates 8 users once to warm up, then times `evaluate` of every
user on the test split (the cascade at λ = 1, as a run's test pass), and times the 2048² fp32
GEMM anchor in the same process. Alternating the checkouts spreads the shared machine's load
over both; the table gives each run's seconds, the anchor, and seconds × anchor (work in anchor
units: comparable across load), and whether every metric of every run equals the first run's.

    nice -n 10 .venv/bin/python benchmarks/eval_ab.py --old ../old-checkout --new . \\
        --items 700000 --users 128 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
import torch
sys.path.insert(0, {bench!r})
from scale_bench import _synthetic, anchor_gflops
from unigrf.config import EvalConfig, ModelConfig
from unigrf.evaluation import evaluate
from unigrf.model.unified import UniGRF

torch.set_num_threads({threads})
data = _synthetic({items}, {users}, 50)
torch.manual_seed(0)
model = UniGRF(ModelConfig(size="small"), data.num_items, data.num_levels, data.max_len).eval()
cfg = EvalConfig()
evaluate(model, data, "test", cfg, users=torch.arange(8).numpy(), cascade_lambda=1.0)
start = time.perf_counter()
metrics = evaluate(model, data, "test", cfg, cascade_lambda=1.0)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "gemm": anchor_gflops(), "metrics": metrics}}))
"""


def measure(checkout: Path, args: argparse.Namespace) -> dict:
    code = CHILD.format(bench=str(HERE), threads=args.threads, items=args.items, users=args.users)
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve()), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{checkout}: the measurement failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def same(a: dict, b: dict) -> bool:
    """Metrics equal, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--new", type=Path, default=HERE.parent)
    parser.add_argument("--items", type=int, default=700_000)
    parser.add_argument("--users", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(args.repeats):
        for name in ("old", "new"):
            runs[name].append(measure(getattr(args, name), args))
    first = runs["old"][0]["metrics"]
    equal = all(same(r["metrics"], first) for rs in runs.values() for r in rs)
    print(f"{args.items:,} items, {args.users} users, {args.threads} thread(s), {args.repeats} runs each")
    print("| checkout | seconds | GEMM GFLOP/s | GFLOP-equivalents (s × GEMM) |")
    print("|---|---|---|---:|")
    work = {}
    for name, rs in runs.items():
        work[name] = statistics.median(r["seconds"] * r["gemm"] for r in rs)
        secs = ", ".join(f"{r['seconds']:.2f}" for r in rs)
        gemm = ", ".join(f"{r['gemm']:.0f}" for r in rs)
        print(f"| {name} ({getattr(args, name)}) | {secs} | {gemm} | {work[name]:.0f} (median) |")
    print(f"\nold / new (median anchor-units): {work['old'] / work['new']:.2f}×; metrics equal: {equal}")


if __name__ == "__main__":
    main()
