"""Old library against new, same config, many seeds: did a code change move the metrics?

A change to how the training step computes (a fused kernel, a new dropout mask, another
summation order) can keep every loss and gradient equal up to rounding and still send each run
down another trajectory, so "metrics unchanged within seed noise" (issue "Throughput",
acceptance 2) is a question for many seeds, not one. This script trains one config with the
library of two checkouts, seed by seed, and compares them seed for seed:

    python benchmarks/library_ab.py --old ../old-checkout --new . --seeds 0-19 \
        --config configs/amazon-reviews.yaml data.data_dir=$PWD/../shared/data/amazon_musical_instruments_5core

Each run is `unigrf train CONFIG OVERRIDES train.seed=S` in a subprocess whose `PYTHONPATH` is
its checkout (so `import unigrf` is that checkout's code; the interpreter and packages are this
one's), started in that checkout (relative paths in the config resolve there: give data paths
as absolute paths), with `OMP_NUM_THREADS=1` and `--parallel` runs at a time (2 on 2 cores:
one thread each keeps a run deterministic on CPU). A run already finished under the results
directory is read, not repeated, when the commit in its `provenance.json` is its checkout's
commit now (an interrupted comparison resumes; a checkout moved to another commit trains again;
uncommitted edits are not told apart: the commit reads "<hash> (uncommitted changes)" for all).

Output: `<results-dir>/library_ab.csv` (one row per library and seed: its commit, the seed,
epochs, every test metric) and, per `--metrics`, the means ± std, the mean difference new − old
with the paired t-test's 95 % interval and p (`unigrf.ablation.aggregate.compare`, the
ablation reports' test), the Wilcoxon signed-rank p, and on how many seeds the new library is
lower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from scipy import stats

from unigrf.ablation.aggregate import compare
from unigrf.config import load_config
from unigrf.provenance import git_commit
from unigrf.training.prepared import run_dir_for

LIBRARIES = ("old", "new")


def parse_seeds(text: str) -> list[int]:
    """ "0-4,7,9" -> [0, 1, 2, 3, 4, 7, 9] (ranges inclusive, order kept, duplicates dropped)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            span = range(int(low), int(high) + 1) if sep else [int(low)]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--seeds: {part!r} is not a seed or a range like 0-19"
            ) from None
        if sep and int(high) < int(low):
            raise argparse.ArgumentTypeError(f"--seeds: empty range {part!r}")
        seeds.extend(s for s in span if s not in seeds)
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds: no seed given")
    return seeds


def run_dir(results_dir: Path, library: str, seed: int) -> Path:
    """Where `unigrf train --results-dir <results_dir>/<library> name=ab-<library>-s<seed>` writes."""
    return run_dir_for(
        load_config(None, [f"name=ab-{library}-s{seed}", f"results_dir={results_dir / library}"])
    )


def launch(command: list[str], checkout: Path, log: Path) -> int:
    """Run `command` in `checkout` with its library on PYTHONPATH, one OpenMP thread, output to
    `log` -> its exit code."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with log.open("w") as out:
        return subprocess.run(command, cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def train_one(
    checkout: Path,
    commit: str,
    library: str,
    seed: int,
    config: str | None,
    overrides: list[str],
    results_dir: Path,
) -> dict:
    """Train one seed with `checkout`'s library, at `commit` (or read the run that commit
    finished) -> its metrics.json."""
    directory = run_dir(results_dir, library, seed)
    done, provenance = directory / "metrics.json", directory / "provenance.json"
    finished = done.exists() and provenance.exists()
    if not finished or json.loads(provenance.read_text()).get("git_commit") != commit:
        command = [sys.executable, "-m", "unigrf.cli", "train"]
        command += [config] if config else []
        command += [*overrides, f"train.seed={seed}", f"name=ab-{library}-s{seed}"]
        command += ["--results-dir", str(results_dir / library), "--restart"]
        log = results_dir / f"{library}-s{seed}.log"
        code = launch(command, checkout, log)
        if code != 0 or not done.exists():
            raise RuntimeError(
                f"{library} library ({checkout}), seed {seed}: `unigrf train` exited {code}; see {log}"
            )
    return json.loads(done.read_text())


def row(library: str, commit: str, seed: int, metrics: dict) -> dict:
    return {
        "library": library,
        "commit": commit,
        "seed": seed,
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        **metrics["test"],
    }


def summarise(frame: pd.DataFrame, metric: str) -> dict:
    """Old against new on `metric` over the seeds both libraries finished."""
    if metric not in frame.columns:
        raise KeyError(
            f"no metric {metric!r} in the runs (have: {', '.join(c for c in frame.columns if '/' in c)})"
        )
    by_seed = frame.pivot(index="seed", columns="library", values=metric)
    old, new = by_seed["old"], by_seed["new"]
    test = compare(new, old, method="paired")
    diff = (new - old).dropna()
    nonzero = diff[diff != 0]
    return {
        "metric": metric,
        "seeds": len(diff),
        "old": f"{old.mean():.4f} ± {old.std(ddof=1):.4f}",
        "new": f"{new.mean():.4f} ± {new.std(ddof=1):.4f}",
        "new - old": f"{diff.mean():+.4f} ({diff.mean() / old.mean() * 100:+.1f} %)",
        "95 % CI": f"[{test.low:+.4f}, {test.high:+.4f}]",
        "paired t p": f"{test.p_value:.3f}",
        "Wilcoxon p": f"{stats.wilcoxon(nonzero).pvalue:.3f}" if len(nonzero) else "—",
        "new lower": f"{int((diff < 0).sum())}/{len(diff)}",
    }


def markdown(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old library")
    parser.add_argument("--new", type=Path, required=True, help="checkout of the new library")
    parser.add_argument(
        "--config", help="YAML config, relative to each checkout (default: built-in defaults)"
    )
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-9"), help="e.g. 0-19 or 0,3,5-9")
    parser.add_argument("--metrics", nargs="+", default=["test/ndcg@10", "test/auc"])
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--results-dir", type=Path, default=Path("results/library_ab"))
    parser.add_argument("overrides", nargs="*", help="dotted KEY=VALUE overrides for both libraries")
    args = parser.parse_args(argv)
    checkouts = {"old": args.old.resolve(), "new": args.new.resolve()}
    for library, path in checkouts.items():
        if not (path / "unigrf" / "__init__.py").exists():
            parser.error(f"--{library} {path}: not a checkout of this project (no unigrf/__init__.py)")
        if args.config and not (path / args.config).exists():
            parser.error(f"--config {args.config}: not found in the {library} checkout {path}")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be KEY=VALUE, got {bad}")
    args.results_dir.mkdir(parents=True, exist_ok=True)

    commits = {library: git_commit(path) for library, path in checkouts.items()}
    jobs = [(library, seed) for seed in args.seeds for library in LIBRARIES]
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = {
            job: pool.submit(
                train_one,
                checkouts[job[0]],
                commits[job[0]],
                job[0],
                job[1],
                args.config,
                args.overrides,
                args.results_dir,
            )
            for job in jobs
        }
        rows = []
        for (library, seed), future in futures.items():
            rows.append(row(library, commits[library], seed, future.result()))
            print(
                f"{library} seed {seed}: "
                + ", ".join(f"{m} {rows[-1].get(m, float('nan')):.4f}" for m in args.metrics),
                flush=True,
            )
    frame = pd.DataFrame(rows)
    out = args.results_dir / "library_ab.csv"
    tmp = out.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)
    print(f"\nold {commits['old']} ({checkouts['old']}) against new {commits['new']} ({checkouts['new']})")
    print(f"runs: {out}\n")
    print(markdown([summarise(frame, m) for m in args.metrics]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
