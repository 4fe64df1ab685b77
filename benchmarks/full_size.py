"""Scale (issue 34): a paper config trained for one whole epoch and evaluated on its full-size
stand-in, through `unigrf train` itself — not extrapolated from a few steps.

`scale_bench.py`'s `configs` plan times a bounded number of steps and extrapolates the epoch;
this runs the command a user runs:

    unigrf train configs/<name>.yaml data.data_dir=<stand-in> results_dir=<results> \\
        name=<name>-full train.epochs=1 train.checkpoint_every_steps=<k> \\
        eval.checkpoint_every_batches=<b>

(prepare with Ray Data, every step of the epoch, validation and test over all users), so an
epoch or an evaluation of hours on one CPU core is resumed across sessions by running the same
line again (`unigrf.training.in_epoch`, `unigrf.training.eval_progress`). Each attempt is one record in `--out` (JSON, rewritten whole
every `--heartbeat` seconds, so an attempt killed with its session keeps its wall time and
peak within that): the command, start, wall seconds, the peak resident memory of the `unigrf
train` process tree (/proc, sampled every second), the 2048² fp32 GEMM anchor timed before it
and the load average (the machine is shared; compare speeds as ratios to the anchor), the exit
code, and once the run has finished its metrics.json's epoch timing and test metrics. The
stand-ins carry no taste structure: the metrics say the pipeline ran, not how good a model is.

    python benchmarks/full_size.py run ml-1m --work /tmp/scale_work --results /work/results/full-size \\
        --out /work/results/full-size/attempts.json
    python benchmarks/full_size.py report benchmarks/full_size.json      # the RESULTS.md table
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_bench import CONFIGS, REPO, anchor_gflops, child_standin, tree_rss  # noqa: E402

from unigrf.atomic import write_text_atomic  # noqa: E402

GIB = 2**30


def command(name: str, raw: Path, results: Path, every: int, eval_every: int, extra: list[str]) -> list[str]:
    """The `unigrf train` line of config `name` on its stand-in in `raw` (`extra`: more
    overrides, none for the measured runs)."""
    return [
        sys.executable,
        "-m",
        "unigrf.cli",
        "train",
        str(CONFIGS[name].relative_to(REPO)),
        f"data.data_dir={raw}",
        f"results_dir={results}",
        f"name={name}-full",
        "train.epochs=1",
        f"train.checkpoint_every_steps={every}",
        f"eval.checkpoint_every_batches={eval_every}",
        *extra,
    ]


def load_records(out: Path) -> list[dict[str, Any]]:
    return json.loads(out.read_text()) if out.exists() else []


def save_records(out: Path, records: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(records, indent=1) + "\n")


def finished_run(results: Path, name: str) -> dict[str, Any] | None:
    """What the finished run's metrics.json says of the epoch and the test, or None."""
    run_dir = results / "runs" / f"{name}-full"
    if not (run_dir / "metrics.json").exists():
        return None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epoch = json.loads((run_dir / "checkpoints" / "epoch_0000" / "metrics.json").read_text())
    return {
        "epoch_s": epoch["time/epoch_s"],  # training (every attempt's steps) and validation
        "train_s": epoch["time/train_s"],
        "test": {k: v for k, v in metrics["test"].items() if k in ("test/ndcg@10", "test/hr@10", "test/auc")},
    }


def epoch_progress(results: Path, name: str) -> dict[str, Any] | None:
    """Where the run's unfinished epoch stands: its in-epoch checkpoint's steps done and the
    seconds they took over every attempt (`unigrf.training.in_epoch`), None without one."""
    from unigrf.training.checkpoint_io import load_state_file
    from unigrf.training.in_epoch import PROGRESS_KEY, progress_file

    file = progress_file(results / "runs" / f"{name}-full")
    if not file.exists():
        return None
    state = load_state_file(file, "in-epoch checkpoint")[PROGRESS_KEY]
    return {"steps_done": int(state["steps_done"]), "train_s": round(float(state.get("train_s", 0.0)), 1)}


def run(args: argparse.Namespace) -> int:
    sized = "full" if args.ratings is None else str(args.ratings)
    raw = Path(args.work, "raw", f"{args.config}-{sized}")
    # written once, reused after (scale_bench's stand-in task and sidecar)
    child_standin({"dataset": args.config, "dir": str(raw), "ratings": args.ratings})
    results, out = Path(args.results), Path(args.out)
    if finished_run(results, args.config) is not None:
        print(f"{args.config}: already finished under {results} (its record is in {out})")
        return 0
    cmd = command(args.config, raw, results, args.every, args.eval_every, args.set)
    record: dict[str, Any] = {
        "config": args.config,
        "ratings": args.ratings,
        "command": shlex.join(["python", *cmd[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "gemm_gflops": round(anchor_gflops(), 1),
        "loadavg": round(os.getloadavg()[0], 2),
        "wall_s": 0.0,
        "peak_gib": 0.0,
        "exit": None,
    }
    records = load_records(out)
    records.append(record)
    save_records(out, records)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    peak, stop = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        last = time.perf_counter()
        while not stop.is_set():
            peak = max(peak, tree_rss(proc.pid))
            if time.perf_counter() - last >= args.heartbeat:
                last = time.perf_counter()
                record.update(wall_s=round(last - start, 1), peak_gib=round(peak / GIB, 3))
                record["epoch_progress"] = _progress_or_none(results, args.config)
                record["evaluation_progress"] = _evaluation_or_none(results, args.config)
                save_records(out, records)
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    stop.set()
    sampler.join()
    record.update(wall_s=round(time.perf_counter() - start, 1), peak_gib=round(peak / GIB, 3), exit=code)
    record["epoch_progress"] = _progress_or_none(results, args.config)
    record["evaluation_progress"] = _evaluation_or_none(results, args.config) or record.get("evaluation_progress")
    done = finished_run(results, args.config)
    if code == 0 and done is not None:
        record["finished"] = done
    save_records(out, records)
    return code


def evaluation_progress(results: Path, name: str) -> list[dict[str, Any]]:
    """The run's evaluations in progress (`unigrf.training.eval_progress`), oldest first: each
    pass's tag (`epoch_0000-val`, `final-val`, `final-test`), its part files so far, the batches
    a part holds (`eval.checkpoint_every_batches`), the batches a whole pass has (users over
    `eval.batch_size`) and the seconds between parts (the pass's speed: the median gap, which a
    restart between attempts or a burst of load beside the run does not move; None below two
    parts)."""
    import yaml

    from unigrf.data.prepare import load_meta
    from unigrf.training.eval_progress import eval_dir

    run_dir = results / "runs" / f"{name}-full"
    passes = sorted(eval_dir(run_dir).glob("*/"), key=lambda d: d.stat().st_mtime)
    if not passes:
        return []
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    every, size = int(cfg["eval"]["checkpoint_every_batches"]), int(cfg["eval"]["batch_size"])
    (data,) = [d for d in (results / "data").glob(f"{cfg['data']['dataset']}-*") if (d / "meta.json").exists()]
    batches = -(-int(load_meta(data)["num_users"]) // size)
    out = []
    for tag_dir in passes:
        times = sorted(p.stat().st_mtime for p in tag_dir.glob("part_*.pt"))
        per_part = statistics.median(b - a for a, b in itertools.pairwise(times)) if len(times) > 1 else None
        out.append({
            "tag": tag_dir.name, "parts": len(times), "batches_per_part": every, "batches_per_pass": batches,
            "s_per_part": None if per_part is None else round(per_part, 1),
        })  # fmt: skip
    return out


def _progress_or_none(results: Path, name: str) -> dict[str, Any] | None:
    try:
        return epoch_progress(results, name)
    except Exception:  # noqa: BLE001 - a file being replaced as it is read: the next heartbeat
        return None


def _evaluation_or_none(results: Path, name: str) -> list[dict[str, Any]] | None:
    try:
        return evaluation_progress(results, name) or None
    except Exception:  # noqa: BLE001 - as above: a part being written, the next heartbeat reads it
        return None


def report(args: argparse.Namespace) -> None:
    """One row per config: attempts, their wall time and peak, the epoch's timing when done."""
    records = load_records(Path(args.json))
    print(
        "| config | attempts | wall h, all attempts | peak GiB | GEMM GFLOP/s (range) | finished | "
        "train h | validation h | test NDCG@10 |"
    )
    print("|---|---:|---:|---:|---|---|---:|---:|---:|")
    for name in CONFIGS:
        mine = [r for r in records if r["config"] == name and r.get("ratings") is None]
        if not mine:
            continue
        done = next((r["finished"] for r in mine if "finished" in r), None)
        gemm = [r["gemm_gflops"] for r in mine]
        train = f"{done['train_s'] / 3600:.2f}" if done else "—"
        val = f"{(done['epoch_s'] - done['train_s']) / 3600:.2f}" if done else "—"
        ndcg = f"{done['test']['test/ndcg@10']:.4f}" if done else "—"
        print(
            f"| `configs/{name}.yaml` | {len(mine)} | {sum(r['wall_s'] for r in mine) / 3600:.2f} | "
            f"{max(r['peak_gib'] for r in mine):.2f} | {min(gemm):.0f}–{max(gemm):.0f} | "
            f"{'yes' if done else _unfinished(mine)} | {train} | {val} | {ndcg} |"
        )


def _unfinished(records: list[dict[str, Any]]) -> str:
    """`not yet: 1,250 steps in 0.81 h` from the latest record that saw the epoch's progress."""
    seen = [r["epoch_progress"] for r in records if r.get("epoch_progress")]
    if not seen:
        return "not yet"
    last = seen[-1]
    text = f"not yet: {last['steps_done']:,} steps in {last['train_s'] / 3600:.2f} h"
    evaluations = [r["evaluation_progress"] for r in records if r.get("evaluation_progress")]
    for done in evaluations[-1] if evaluations else []:
        parts = -(-done["batches_per_pass"] // done["batches_per_part"])
        text += f"; evaluation `{done['tag']}` {done['parts']:,}/{parts:,} parts"
        if done["s_per_part"] is not None:
            text += f" ({done['s_per_part']:.0f} s a part: {parts * done['s_per_part'] / 3600:.1f} h a pass)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one attempt: run (or resume) the config's full-size epoch")
    r.add_argument("config", choices=sorted(CONFIGS))
    r.add_argument("--work", default="/tmp/unigrf-scale", help="stand-in files (scale_bench's --work)")
    r.add_argument("--results", required=True, help="the run's results directory (outside the work tree)")
    r.add_argument("--out", default=str(REPO / "benchmarks" / "full_size.json"))
    r.add_argument("--every", type=int, default=25, help="train.checkpoint_every_steps")
    r.add_argument("--eval-every", type=int, default=100, help="eval.checkpoint_every_batches")
    r.add_argument("--heartbeat", type=float, default=60.0, help="seconds between record rewrites")
    r.add_argument("--ratings", type=int, help="a smaller stand-in of this many ratings (default: full size)")
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides (tests)")
    p = sub.add_parser("report", help="the table of the attempts in a JSON file")
    p.add_argument("json")
    args = parser.parse_args()
    if args.cmd == "run":
        sys.exit(run(args))
    report(args)


if __name__ == "__main__":
    main()
