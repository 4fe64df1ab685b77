"""pmixer/SASRec.pytorch, run side by side with the project (`../shared/anchors/sasrec_pytorch/`).

The anchor is third-party code kept beside the project to be *run*, never copied into it: every
call copies the anchor folder to a temporary directory (so its data/ and output folders stay
out of shared/), writes the dataset there with the anchor's own `prep.py` (stable per-user time
sort, as the project's protocol), runs its `main.py` in a subprocess with the given settings,
and parses what it prints: `epoch E train_time T` per epoch and, every `--full_eval_every`
epochs, a `FULL {json}` line with the full-ranking validation and test metrics of the anchor's
evaluator (SPEC §2: every item scored, history masked).

Used by benchmarks/speed_bench.py (epoch time) and benchmarks/quality_bench.py (quality).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANCHOR_DIR = REPO.parent / "shared" / "anchors" / "sasrec_pytorch"
SHARED_DATA = REPO.parent / "shared" / "data"
# the anchor's name for a dataset -> its raw file under ../shared/data
DATASETS = {
    "ml100k": SHARED_DATA / "ml-100k" / "u.data",
    "ami": SHARED_DATA / "amazon_musical_instruments_5core" / "reviews_Musical_Instruments_5.json.gz",
}
EPOCH_LINE = re.compile(r"^epoch (\d+) train_time ([0-9.]+)s")


@dataclass
class AnchorRun:
    """What one SASRec.pytorch run printed."""

    args: list[str]
    epoch_train_s: list[float] = field(default_factory=list)  # per epoch, training only
    evaluations: list[dict] = field(default_factory=list)  # the FULL lines (epoch, val/test metrics)
    wall_s: float = 0.0
    output_tail: str = ""


def run_anchor(
    dataset: str,
    *,
    epochs: int,
    maxlen: int,
    seed: int = 0,
    threads: int = 1,
    full_eval_every: int = 0,
    extra: list[str] | None = None,
    timeout_s: float = 4 * 3600,
) -> AnchorRun:
    """Run SASRec.pytorch on `dataset` ("ml100k" or "ami") from a temporary copy and parse it.

    Its defaults are its published settings (hidden 50, 2 blocks, 1 head, dropout 0.2, batch
    128, lr 1e-3, BCE with one negative); `extra` passes more of its flags."""
    if not ANCHOR_DIR.is_dir():
        raise FileNotFoundError(
            f"SASRec.pytorch anchor not found at {ANCHOR_DIR} (expected ../shared beside the repo)"
        )
    src = DATASETS[dataset]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="sasrec-anchor-") as tmp:
        work = Path(tmp) / "sasrec_pytorch"
        shutil.copytree(ANCHOR_DIR, work)
        subprocess.run(
            [sys.executable, "prep.py", str(src), dataset], cwd=work, check=True, capture_output=True
        )
        args = [
            "--dataset", dataset, "--train_dir", "run", "--device", "cpu", "--num_epochs", str(epochs),
            "--maxlen", str(maxlen), "--quiet", "--eval_every", "100000",
            "--full_eval_every", str(full_eval_every or 100000), "--seed", str(seed), *(extra or []),
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "main.py", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        run = AnchorRun(
            args=args, wall_s=time.perf_counter() - start, output_tail=(done.stdout + done.stderr)[-3000:]
        )
        if done.returncode != 0:
            raise RuntimeError(f"SASRec.pytorch failed (exit {done.returncode}):\n{run.output_tail}")
        for line in done.stdout.splitlines():
            if m := EPOCH_LINE.match(line):
                run.epoch_train_s.append(float(m.group(2)))
            elif line.startswith("FULL "):
                run.evaluations.append(json.loads(line[5:]))
    return run
