"""The console of `unigrf ablate`: one progress bar for the grid and one line per finished run.

`GridProgress` is a Tune callback living in the driver: Tune calls it when a trial (a grid
cell) completes or fails; it advances a tqdm bar (runs done / total, elapsed, ETA) and prints
one line per run above the bar — its test metrics, epochs and time, or the error. With it the
grid runs with Tune's own console off (`verbose=0`) and Ray's start-up and worker output muted
(`unigrf.ray_utils.init_ray(quiet=True)`); `unigrf ablate --verbose` brings those back.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback
from tqdm import tqdm

from unigrf.sweep.trainable import CELL_KEY

# what a run's line shows, when the run reports it: (metric key, label)
LINE_METRICS = (("test/ndcg@10", "NDCG@10"), ("test/hr@10", "HR@10"), ("test/auc", "AUC"))


def run_line(name: str, result: dict[str, Any]) -> str:
    """`name: NDCG@10 0.0812 · HR@10 0.1600 · AUC 0.7100 · 4 epochs (best 3) · 7.1 s`."""
    parts = []
    for key, label in LINE_METRICS:
        value = result.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{label} {value:.4f}")
    if isinstance(result.get("epochs_run"), (int, float)):
        parts.append(f"{int(result['epochs_run'])} epochs (best {int(result.get('best_epoch', -1)) + 1})")
    if isinstance(result.get("time_total_s"), (int, float)):
        parts.append(f"{result['time_total_s']:.1f} s")
    return f"{name}: " + " · ".join(parts)


class GridProgress(Callback):
    """tqdm bar over the grid's `total` runs (`done` already finished before this call)."""

    def __init__(self, total: int, done: int = 0) -> None:
        self.total, self.done = total, done
        self.bar: tqdm | None = None
        self.start = time.monotonic()

    def _bar(self) -> tqdm:
        if self.bar is None:  # disable=None: a live bar on a terminal, none in a log file
            self.bar = tqdm(
                total=self.total, initial=self.done, desc="runs", unit="run", mininterval=1.0, disable=None
            )
        return self.bar

    def _finished(self, line: str) -> None:
        bar = self._bar()
        self.done += 1
        bar.write(f"[{self.done}/{self.total} {time.monotonic() - self.start:5.0f}s] {line}")
        bar.update(1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(run_line(str(trial.config.get(CELL_KEY, trial.trial_id)), trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = str(getattr(trial, "error_msg", None) or "").strip()
        last = error.splitlines()[-1] if error else "failed"
        self._finished(f"{trial.config.get(CELL_KEY, trial.trial_id)}: FAILED ({last[:200]})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
