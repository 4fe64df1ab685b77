"""Evaluation on real data: the popularity baseline against SPEC §3, and the wall time of a
full-ranking evaluation (retrieval over all items, ranking AUC, cascade re-scoring) of every
ML-100K user with a random-init UniGRF of the default size.

    nice -n 10 .venv/bin/python benchmarks/eval_bench.py [--threads 2] [--repeats 5] [--max-len 200]

Prints a Markdown section (paste it under "## Evaluation" in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_dataset  # noqa: E402

from unigrf.config import EvalConfig, ModelConfig
from unigrf.data.sequences import SequenceData
from unigrf.evaluation import (
    evaluate,
    format_metrics_table,
    popularity_baseline,
    retrieval_metrics,
    target_ranks,
)


class Timed(nn.Module):
    """Wraps a model and accumulates the wall time spent in its evaluation methods. Without
    `eval_prefix`, `evaluate` takes the two-pass path (score_eval, then score_candidates
    re-encoding the history); `TimedPrefix` exposes it (one pass + a continuation)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0
        self.retrieval_temperature = model.retrieval_temperature  # the cascade's P(next)

    def _timed(self, method: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = getattr(self.model, method)(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out

    def score_eval(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self._timed("score_eval", batch)

    def score_candidates(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._timed("score_candidates", *args, **kwargs)


class TimedPrefix(Timed):
    def eval_prefix(self, batch: dict[str, Tensor]) -> tuple[Tensor, Any]:
        return self._timed("eval_prefix", batch)


class RandomScores(nn.Module):
    """A model of zero cost (scores looked up in a fixed random table): what is left of the
    timing is the evaluation layer itself (batching, masks, ranks, top-C, metrics)."""

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.scores = torch.randn(num_users, num_items + 1, generator=gen)
        self.items = torch.randn(num_items + 1, generator=gen)
        self.retrieval_temperature = 1.0

    def score_eval(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.scores[batch["users"]], self.items[batch["targets"]]

    def score_candidates(
        self, items: Tensor, feedback: Tensor, timestamps: Tensor, lengths: Tensor, candidates: Tensor
    ) -> Tensor:
        return self.items[candidates]


def time_evaluate(timed: Timed, data: SequenceData, cfg: EvalConfig, repeats: int) -> dict[str, float]:
    """Median and min wall time of `evaluate` on all test users, and the time inside the
    model's methods in the fastest run."""
    # every λ of cfg.cascade_lambdas is ranked whichever one is reported (timing only)
    evaluate(timed, data, "test", cfg, users=np.arange(64), cascade_lambda=1.0)  # warm-up
    runs = []
    for _ in range(repeats):
        timed.seconds = 0.0
        start = time.perf_counter()
        evaluate(timed, data, "test", cfg, cascade_lambda=1.0)
        runs.append((time.perf_counter() - start, timed.seconds))
    walls = [wall for wall, _ in runs]
    return {"median_s": statistics.median(walls), "min_s": min(walls), "model_s": min(runs)[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[64, 512],
    )
    parser.add_argument("--backbones", default="hstu,llama,sasrec")
    parser.add_argument("--size", default="small")
    parser.add_argument("--max-len", type=int, default=200, help="items kept per user (SPEC §2: 200)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = load_dataset("ml-100k", args.max_len, args.data_root)
    print(
        f"## Evaluation\n\n`{data.name}`: {data.num_users} users, {data.num_items} items, {len(data.items)} ratings"
    )
    print(
        "(`u.data` as `unigrf train` prepares it: per user by timestamp, ties in file order; leave-one-out, history masked)\n"
    )

    rows = {}
    for split in ("val", "test"):
        for ties in ("pessimistic", "optimistic"):
            cfg = EvalConfig(ks=(10, 50, 200), ties=ties)
            rows[f"popularity {split}, {ties} ties"] = popularity_baseline(data, split, cfg)
    # the pitfall SPEC §3 warns about: the same scores without the history mask (padding only)
    batch = data.eval_batch(np.arange(data.num_users), "test")
    counts = torch.as_tensor(data.item_counts("test"), dtype=torch.float64).expand(data.num_users, -1)
    pad_only = torch.zeros(counts.shape, dtype=torch.bool)
    pad_only[:, 0] = True
    unmasked = target_ranks(counts, batch["targets"], pad_only)
    rows["popularity test, history NOT masked"] = {
        **retrieval_metrics(unmasked, (10, 50, 200)),
        "num_users": data.num_users,
    }
    rows["SPEC §3 reference (test)"] = {"hr@10": 0.086, "hr@50": 0.199, "ndcg@10": 0.045}
    print(format_metrics_table(rows))

    print(
        f"\nFull evaluation of all {data.num_users} test users (`evaluate`: retrieval over all items, "
        f"AUC, cascade top-{EvalConfig.cascade_top_c} -> {EvalConfig.cascade_k}), random-init UniGRF size "
        f"`{args.size}`, last {args.max_len} items per user, torch {torch.__version__}, {args.threads} thread(s), "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; warm-up on 64 users, then "
        f"median/min of {args.repeats} runs; "
        "seconds inside the model from the fastest run. Path `two-pass`: score_eval over history + target, "
        "then score_candidates re-encoding the history; `prefix reuse`: the history encoded once "
        "(eval_prefix), then target + candidates as one continuation:\n"
    )
    print("| model | path | eval batch | params | median s | min s | in model s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    from unigrf.model.unified import UniGRF  # the real model (imported late: the data part needs none)

    models: dict[str, nn.Module] = {
        "(no model: evaluation layer only)": RandomScores(data.num_users, data.num_items)
    }
    for backbone in filter(None, args.backbones.split(",")):
        cfg = ModelConfig(backbone=backbone, size=args.size)
        models[backbone] = UniGRF(cfg, data.num_items, data.num_levels, data.max_len)
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        paths = {"two-pass": Timed(model)}
        if hasattr(model, "eval_prefix"):
            paths["prefix reuse"] = TimedPrefix(model)
        for batch_size in args.batch_sizes:
            for path, timed in paths.items():
                t = time_evaluate(timed, data, EvalConfig(batch_size=batch_size), args.repeats)
                print(
                    f"| {name} | {path} | {batch_size} | {params:,} | {t['median_s']:.3f} | "
                    f"{t['min_s']:.3f} | {t['model_s']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
