"""Hyper-parameter search: search-space files, Ray Tune + Optuna sweeps, result tables.

`run_sweep` starts Ray only when called; importing this package does not.
"""

from unigrf.sweep.space import SpaceError, SweepSpec, load_space, resolve
from unigrf.sweep.tuner import SweepError, SweepOptions, run_sweep

__all__ = [
    "SpaceError",
    "SweepError",
    "SweepOptions",
    "SweepSpec",
    "load_space",
    "resolve",
    "run_sweep",
]
