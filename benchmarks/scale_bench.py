"""Scale (issue 34): prepare, train and evaluate at the paper datasets' real size, on their
shape-matched stand-ins (`unigrf.data.standins`), with time and peak memory per size.

Every measurement runs in a process of its own (`child`), so its peak memory is its own: the
peak resident set of the process and of its descendants (Ray's raylet and workers when prepare
runs Ray Data), sampled from /proc every 50 ms, and the process's own `ru_maxrss`. Each child
times a 2048² fp32 GEMM first (`anchor_gflops`): speeds are also given as ratios against it,
since the CPU changes between sessions and the machine is shared. Before a measurement's work
starts, its memory is estimated from the shapes (`unigrf.footprint`); one that would not fit
`--budget-gib` is recorded as refused with the estimate's message, never run.

    nice -n 10 .venv/bin/python benchmarks/scale_bench.py run --plan rows --out benchmarks/scale.json
    nice -n 10 .venv/bin/python benchmarks/scale_bench.py run --plan catalogue --out benchmarks/scale.json
    nice -n 10 .venv/bin/python benchmarks/scale_bench.py run --plan configs --out benchmarks/scale.json
    .venv/bin/python benchmarks/scale_bench.py report benchmarks/scale.json   # Markdown for RESULTS.md

Plans:
- `rows`: the ML-20M stand-in scaled to 1M, 5M and 20M ratings (its 26,744 items and history
  lengths kept; users in proportion): prepare (cold cache), a training epoch per backbone of
  `configs/ml-20m.yaml` — `--steps` steps timed after one warm-up, extrapolated to the epoch by
  padded tokens (the epoch's batches are cut exactly as `fit` cuts them, without running them)
  — and the evaluation of `--eval-users` users (full ranking, AUC, cascade), extrapolated to all
  users by their number;
- `catalogue`: 3,706, 26,744, 200,000 and 700,000 items (`--cat-users` synthetic users of 50
  items, model `small`, batch 256 windows of 50): one training step of each retrieval-loss
  option (time, peak, FLOPs), and the evaluation of those users (the chunked path past
  `ITEM_CHUNK` items; the unchunked one beside it for the memory it would take); at 200k and
  700k items, the enhancer's candidate pass on `--mine-batch` windows, chunked and in one piece;
- `configs`: `configs/ml-1m.yaml`, `ml-20m.yaml` and `amazon-books.yaml` on their full-size
  stand-ins, nothing changed but `data.data_dir`: prepare, a bounded number of training steps
  (extrapolated to the epoch) and the evaluation (all users for ML-1M, a subset otherwise).
  `unigrf train configs/ml-1m.yaml data.data_dir=DIR train.epochs=1` is the whole command
  (RESULTS.md gives its run).

Work files go to `--work` (default /tmp/unigrf-scale): stand-in files and prepared datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {name: REPO / "configs" / f"{name}.yaml" for name in ("ml-1m", "ml-20m", "amazon-books")}
BACKBONES = ("hstu", "llama", "sasrec")
ROWS = (1_000_000, 5_000_000, 20_000_263)
CATALOGUES = (3_706, 26_744, 200_000, 700_000)
# the options whose cost differs (gbce costs what bce does; popularity sampling what uniform does,
# plus drawing from the counts)
LOSSES = {
    "sampled_softmax uniform 1024": [
        "loss.retrieval=sampled_softmax",
        "loss.sampler=uniform",
        "loss.num_negatives=1024",
    ],
    "sampled_softmax in_batch + 1024": [
        "loss.retrieval=sampled_softmax",
        "loss.sampler=in_batch",
        "loss.num_negatives=1024",
    ],
    "bce 128": ["loss.retrieval=bce", "loss.num_negatives=128"],
    "full_softmax": [],  # last: the slowest at a large catalogue (a --timeout cuts it, recorded)
}
GIB = 1024**3


# ------------------------------------------------------------------------------------------
# Peak memory of a process tree
# ------------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (/proc)."""
    kids, total, todo = _children(), 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


class PeakSampler:
    """The highest `tree_rss` of this process seen every `every` seconds while running."""

    def __init__(self, every: float = 0.05) -> None:
        self.peak, self.every, self._stop = 0, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(os.getpid()))


# ------------------------------------------------------------------------------------------
# Children: one measurement each
# ------------------------------------------------------------------------------------------


def anchor_gflops() -> float:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed_bench import gemm_gflops

    return gemm_gflops(torch.float32, torch.device("cpu"), 2048, 2.0)


def _config(task: dict[str, Any]):
    from unigrf.config import load_config

    return load_config(str(task["config"]), task.get("overrides", []))


def child_standin(task: dict[str, Any]) -> dict[str, Any]:
    from unigrf.data.standins import write_standin

    sidecar = Path(task["dir"], "standin.json")
    wanted = {"dataset": task["dataset"], "ratings": task.get("ratings"), "seed": 0}
    if sidecar.exists() and json.loads(sidecar.read_text())["wanted"] == wanted:
        return json.loads(sidecar.read_text())["result"] | {"reused": True}
    start = time.perf_counter()
    standin = write_standin(task["dataset"], task["dir"], task.get("ratings"), seed=0)
    result = {"seconds": time.perf_counter() - start, "stats": standin.stats, "path": str(standin.path)}
    sidecar.write_text(json.dumps({"wanted": wanted, "result": result}))
    return result


def child_prepare(task: dict[str, Any]) -> dict[str, Any]:
    from unigrf.data.prepare import load_meta, prepare_dataset
    from unigrf.footprint import check_prepare

    cfg = _config(task)
    estimate = check_prepare(cfg.data, task["budget"])
    start = time.perf_counter()
    prepared = prepare_dataset(cfg.data, cfg.results_dir, verbose=False)
    seconds = time.perf_counter() - start
    meta = load_meta(prepared)
    s = meta["stats"]
    return {
        "seconds": seconds,
        "estimate_bytes": estimate,
        "rows": meta["num_interactions"],
        "users": meta["num_users"],
        "items": meta["num_items"],
        "max_len": meta["max_len"],
        "ray_stage_s": s["ray_stage_seconds"],
        "ray_blocks": s["ray_blocks"],
    }


def _windows_tokens(examples, batches) -> list[int]:
    """Padded tokens of each batch: its size x its longest window."""
    return [len(b) * int(examples.lengths[b].max()) for b in batches]


def child_train(task: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed_bench import Step

    from unigrf.config import resolve_model_size
    from unigrf.training.batches import epoch_batches, epoch_users
    from unigrf.training.memory import check_memory
    from unigrf.training.prepared import load_data

    cfg = _config(task)
    t0 = time.perf_counter()
    data = load_data(cfg)
    load_s = time.perf_counter() - t0
    cfg = resolve_model_size(cfg, data.num_train_interactions)
    check_memory(cfg, data.num_items, data.max_len, available=task["budget"])
    examples = data.train_examples(cfg.data.train_windows)
    ids = epoch_users(len(examples), cfg.train.seed, 0, 0, 1, examples.per_epoch)
    batches = epoch_batches(ids, examples.lengths, cfg.train.batch_size, cfg.train.seed, 0, 0)
    tokens = _windows_tokens(examples, batches)
    step = Step(cfg, data)

    def batch(i: int):
        b = batches[i]
        return data.train_batch(examples.users[b], examples.ends[b])

    n = min(task["steps"], len(batches) - 1)
    step(batch(0))  # warm-up
    with FlopCounterMode(display=False) as counter:
        step(batch(0))
    flops_first = counter.get_total_flops()
    seconds = []
    for i in range(1, n + 1):
        b = batch(i)
        start = time.perf_counter()
        step(b)
        seconds.append(time.perf_counter() - start)
    timed_tokens = sum(tokens[1 : n + 1])
    per_token = sum(seconds) / timed_tokens
    return {
        "size": cfg.model.size,
        "batch_size": cfg.train.batch_size,
        "max_len": data.max_len,
        "steps_per_epoch": len(batches),
        "timed_steps": n,
        "step_s_median": float(np.median(seconds)),
        "epoch_s_extrapolated": per_token * sum(tokens),
        "epoch_padded_tokens": int(sum(tokens)),
        "flops_per_padded_token": flops_first / tokens[0],
        "epoch_flops_extrapolated": flops_first / tokens[0] * sum(tokens),
        "load_s": load_s,
        "params": sum(p.numel() for p in step.model.parameters()),
        "threads": torch.get_num_threads(),
    }


def child_eval(task: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from unigrf.config import resolve_model_size
    from unigrf.evaluation import evaluate
    from unigrf.footprint import check_evaluation
    from unigrf.model import build_model
    from unigrf.training.prepared import load_data

    cfg = _config(task)
    data = load_data(cfg)
    cfg = resolve_model_size(cfg, data.num_train_interactions)
    check_evaluation(cfg, data.num_users, data.num_items, len(data.items), task["budget"])
    torch.manual_seed(0)
    model = build_model(
        cfg, data.num_items, data.num_levels, data.max_len, torch.as_tensor(data.item_counts("val"))
    )
    users = np.arange(data.num_users)
    if task.get("users") and task["users"] < data.num_users:
        users = np.sort(np.random.default_rng(0).choice(data.num_users, task["users"], replace=False))
    start = time.perf_counter()
    metrics = evaluate(model, data, "test", cfg.eval, users=users, cascade_lambda=1.0)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "users": len(users),
        "all_users": data.num_users,
        "seconds_all_users": seconds * data.num_users / len(users),
        "items": data.num_items,
        "cascade_users": metrics["cascade_num_users"],
        "hr@10": metrics["hr@10"],
    }


def _synthetic(num_items: int, users: int, length: int, seed: int = 0):
    """SequenceData of `users` users with `length + 2` interactions each over `num_items` items
    (popularity-skewed draws, distinct per user)."""
    import numpy as np

    from unigrf.data.sequences import SequenceData

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.8
    cdf = np.cumsum(weights / weights.sum())
    drawn = np.minimum(np.searchsorted(cdf, rng.random((users, 3 * (length + 2)))), num_items - 1)
    items = []
    for row in drawn:  # the first length + 2 distinct draws, in draw order
        distinct = row[np.sort(np.unique(row, return_index=True)[1])][: length + 2]
        if len(distinct) < length + 2:
            distinct = rng.choice(num_items, length + 2, replace=False)
        items.append(distinct + 1)
    ratings = [rng.integers(1, 6, len(x)).astype(float) for x in items]
    times = [np.arange(len(x), dtype=np.int64) for x in items]
    return SequenceData.from_arrays(
        items, ratings, times, num_items=num_items, max_len=length, name="synthetic"
    )


def child_loss(task: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed_bench import Step

    from unigrf.config import load_config
    from unigrf.training.memory import check_memory, estimate_bytes

    bs = task["batch"]
    cfg = load_config(None, ["model.size=small", f"train.batch_size={bs}", *task["overrides"]])
    estimate = sum(b for b, _ in estimate_bytes(cfg, task["items"], 50).values())
    check_memory(cfg, task["items"], 50, available=task["budget"])
    data = _synthetic(task["items"], bs * (task["steps"] + 2), 50)
    step = Step(cfg, data)
    users = np.arange(data.num_users)

    def batch(i: int):
        return data.train_batch(users[i * bs : (i + 1) * bs])

    step(batch(0))
    with FlopCounterMode(display=False) as counter:
        step(batch(1))
    seconds = []
    for i in range(2, task["steps"] + 2):
        b = batch(i)
        start = time.perf_counter()
        step(b)
        seconds.append(time.perf_counter() - start)
    return {
        "step_s_median": float(np.median(seconds)),
        "flops": counter.get_total_flops(),
        "estimate_bytes": estimate,
        "threads": torch.get_num_threads(),
    }


def child_evalcat(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    from unigrf.config import EvalConfig, ModelConfig
    from unigrf.evaluation import evaluate, topk
    from unigrf.footprint import evaluation_bytes
    from unigrf.model.unified import UniGRF

    if not task["chunked"]:
        topk.ITEM_CHUNK = 1 << 40  # the unchunked path, for the memory it takes
    eval_cfg = EvalConfig()
    estimate = evaluation_bytes(eval_cfg.batch_size, task["items"], 64, chunked=task["chunked"])
    if estimate > task["budget"]:
        raise MemoryError(f"estimated {estimate / GIB:.1f} GiB > budget")
    data = _synthetic(task["items"], task["users"], 50)
    torch.manual_seed(0)
    model = UniGRF(ModelConfig(size="small"), data.num_items, data.num_levels, data.max_len)
    evaluate(model, data, "test", eval_cfg, users=torch.arange(64).numpy(), cascade_lambda=1.0)
    start = time.perf_counter()
    evaluate(model, data, "test", eval_cfg, cascade_lambda=1.0)
    return {
        "seconds": time.perf_counter() - start,
        "users": data.num_users,
        "estimate_bytes": estimate,
        "chunk": topk.ITEM_CHUNK if task["chunked"] else None,
    }


def child_mine(task: dict[str, Any]) -> dict[str, Any]:
    """The ranking-driven enhancer's candidate pass (`RankingDrivenEnhancer.mine`) on one batch of
    `batch` windows of 50 over `items` items: through the catalogue's chunks past ITEM_CHUNK
    (`chunked`), or as one [batch, items + 1] score matrix, for the memory that takes."""
    import numpy as np
    import torch

    from unigrf.config import EnhancerConfig, ModelConfig
    from unigrf.evaluation import topk
    from unigrf.model import RankingDrivenEnhancer
    from unigrf.model.unified import UniGRF

    if not task["chunked"]:
        topk.ITEM_CHUNK = 1 << 40  # one piece, for the memory it takes
    data = _synthetic(task["items"], task["batch"], 50)
    torch.manual_seed(0)
    model = UniGRF(ModelConfig(size="small"), data.num_items, data.num_levels, data.max_len).train()
    cfg = EnhancerConfig()
    enhancer = RankingDrivenEnhancer(cfg, cfg.m)
    batch = data.train_batch(np.arange(data.num_users))
    enhancer.mine(model, batch)  # warm-up
    start = time.perf_counter()
    hard = enhancer.mine(model, batch)
    return {
        "seconds": time.perf_counter() - start,
        "negatives": int((hard > 0).sum()),
        "negatives_sum": int(hard.sum()),  # the same negatives on both paths
        "chunk": topk.ITEM_CHUNK if task["chunked"] else None,
    }


CHILDREN = {
    "standin": child_standin,
    "prepare": child_prepare,
    "train": child_train,
    "eval": child_eval,
    "loss": child_loss,
    "evalcat": child_evalcat,
    "mine": child_mine,
}


def run_child(task: dict[str, Any]) -> dict[str, Any]:
    """The measurement `task` in this process: its result, timings and peaks (or the refusal)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(task.get("threads", 2))
    out: dict[str, Any] = {"task": task, "load_average": os.getloadavg()[0]}
    out["gemm_gflops"] = anchor_gflops()
    start = time.perf_counter()
    try:
        with PeakSampler() as sampler:
            out["result"] = CHILDREN[task["kind"]](task)
    except (MemoryError, ValueError, RuntimeError) as err:
        from unigrf.footprint import ResourceError

        # the estimates' refusals: ResourceError, check_memory's ConfigError (a ValueError)
        if not isinstance(err, (ResourceError, ValueError, MemoryError)):
            raise
        out["refused"] = str(err)
    out["wall_s"] = time.perf_counter() - start
    out["tree_peak_bytes"] = sampler.peak
    out["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


# ------------------------------------------------------------------------------------------
# Plans and the driver
# ------------------------------------------------------------------------------------------


def plan_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    tasks = []
    for rows in ROWS:
        raw = Path(args.work, "raw", f"ml-20m-{rows}")
        results = str(Path(args.work, "results-rows"))
        over = [f"data.data_dir={raw}", f"results_dir={results}"]
        base = {"config": str(CONFIGS["ml-20m"]), "rows_target": rows}
        full = rows == ROWS[-1]
        tasks.append(
            {"kind": "standin", "dataset": "ml-20m", "dir": str(raw), "ratings": None if full else rows}
        )
        tasks.append({**base, "kind": "prepare", "overrides": over})
        for backbone in BACKBONES:
            tasks.append(
                {
                    **base,
                    "kind": "train",
                    "overrides": [*over, f"model.backbone={backbone}"],
                    "steps": args.steps,
                }
            )
        tasks.append({**base, "kind": "eval", "overrides": over, "users": args.eval_users})
    return tasks


def plan_catalogue(args: argparse.Namespace) -> list[dict[str, Any]]:
    tasks = []
    for items in CATALOGUES:
        for name, over in LOSSES.items():
            tasks.append(
                {
                    "kind": "loss",
                    "items": items,
                    "loss": name,
                    "overrides": over,
                    "steps": 2,
                    "batch": args.cat_batch,
                }
            )
        tasks.append({"kind": "evalcat", "items": items, "users": args.cat_users, "chunked": True})
        if items == CATALOGUES[-1]:  # the unchunked path beside it, for the memory it would take
            tasks.append({"kind": "evalcat", "items": items, "users": args.cat_users, "chunked": False})
        if items > CATALOGUES[1]:  # the enhancer's candidate pass past one chunk, and in one piece
            for chunked in (True, False):
                tasks.append({"kind": "mine", "items": items, "batch": args.mine_batch, "chunked": chunked})
    return tasks


def plan_configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    tasks = []
    for name, config in CONFIGS.items():
        if name == "ml-20m":
            continue  # the rows plan's 20M point is this config on this stand-in
        raw = Path(args.work, "raw", f"{name}-full")
        over = [f"data.data_dir={raw}", f"results_dir={Path(args.work, 'results-configs')}"]
        base = {"config": str(config), "standin": name}
        tasks.append({"kind": "standin", "dataset": name, "dir": str(raw)})
        tasks.append({**base, "kind": "prepare", "overrides": over})
        tasks.append({**base, "kind": "train", "overrides": over, "steps": args.steps})
        users = None if name == "ml-1m" else args.eval_users
        tasks.append({**base, "kind": "eval", "overrides": over, "users": users})
    return tasks


PLANS = {"rows": plan_rows, "catalogue": plan_catalogue, "configs": plan_configs}


def run_plan(args: argparse.Namespace) -> None:
    out = Path(args.out)
    done: list[dict[str, Any]] = json.loads(out.read_text()) if out.exists() else []
    seen = {json.dumps(d["task"], sort_keys=True) for d in done if "result" in d or "refused" in d}
    for task in PLANS[args.plan](args):
        if args.only and task["kind"] not in args.only:
            continue
        task = {**task, "budget": int(args.budget_gib * GIB), "threads": args.threads, "plan": args.plan}
        key = json.dumps(task, sort_keys=True)
        if key in seen and not args.again:
            continue
        cmd = ["nice", "-n", "10", sys.executable, __file__, "child", key]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc = None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")] if proc else []
        if proc is None:
            record = {"task": task, "failed": f"not finished within --timeout {args.timeout} s"}
        elif proc.returncode or not lines:
            record = {"task": task, "failed": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
        else:
            record = json.loads(lines[-1])
        record["process_wall_s"] = time.perf_counter() - start
        done = [d for d in done if json.dumps(d["task"], sort_keys=True) != key] + [record]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(done, indent=1, default=str) + "\n")
        brief = record.get("result") or record.get("refused") or record.get("failed")
        print(
            f"{task['kind']} {task.get('items') or task.get('rows_target') or task.get('standin')} "
            f"{task.get('loss') or task.get('overrides', [''])[-1]}: {json.dumps(brief, default=str)[:300]} "
            f"peak {record.get('tree_peak_bytes', 0) / GIB:.2f} GiB",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--plan", choices=sorted(PLANS), required=True)
    run.add_argument("--out", default=str(REPO / "benchmarks" / "scale.json"))
    run.add_argument("--work", default="/tmp/unigrf-scale")
    run.add_argument("--budget-gib", type=float, default=14.0)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--steps", type=int, default=2)
    run.add_argument("--eval-users", type=int, default=2048)
    run.add_argument("--cat-users", type=int, default=512)
    run.add_argument("--cat-batch", type=int, default=64)
    run.add_argument("--only", nargs="*", choices=sorted(CHILDREN), help="run only these kinds of the plan")
    run.add_argument("--mine-batch", type=int, default=256, help="the enhancer's batch (configs/amazon-books.yaml's)")
    run.add_argument("--timeout", type=int, default=1800)
    run.add_argument("--again", action="store_true", help="re-measure tasks already in --out")
    child = sub.add_parser("child")
    child.add_argument("task")
    report = sub.add_parser("report")
    report.add_argument("json")
    report.add_argument("--cluster", action="store_true", help="docs/CLUSTER.md's extrapolation table")
    args = parser.parse_args()
    if args.command == "child":
        print(json.dumps(run_child(json.loads(args.task)), default=str), flush=True)
    elif args.command == "run":
        run_plan(args)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from scale_report import cluster_section
        from scale_report import report as make_report

        records = json.loads(Path(args.json).read_text())
        print("\n".join(cluster_section(records)) if args.cluster else make_report(records))


if __name__ == "__main__":
    main()
