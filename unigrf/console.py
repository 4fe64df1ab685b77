"""What the console shows: this program's own lines, and third-party log lines only on request.

Ray, Ray Data, Tune, Train, Serve and Optuna log start-up banners, progress and notices (Ray's
token-authentication warning, "Started a local Ray instance", "Progress bars disabled", the
streaming executor's INFO lines, Optuna's per-trial lines) that say nothing a user of `unigrf`
acts on. The command line (`unigrf.cli.main`) calls `set_verbose(False)` unless `--verbose` is
given: those loggers then show errors only, and Ray starts without its banners and without
forwarding its workers' output (`unigrf.ray_utils.init_ray`). Library callers keep every
library's own logging (`verbose()` is True until a command says otherwise).
"""

from __future__ import annotations

import logging

# Loggers of the libraries whose INFO / WARNING lines are off by default.
THIRD_PARTY_LOGGERS = ("ray", "ray.data", "ray.tune", "ray.train", "ray.serve", "optuna", "filelock")

_state = {"verbose": True}


def verbose() -> bool:
    """Whether third-party log lines are shown (True unless the command line turned them off)."""
    return _state["verbose"]


def set_verbose(on: bool) -> None:
    """Show third-party log lines (`on`), or quiet them for the rest of this process."""
    _state["verbose"] = on
    if not on:
        quiet_third_party()


def quiet_third_party() -> None:
    """The libraries' loggers at ERROR in this process, Tune's console at its classic reporter
    (silent at verbose=0) and Ray Data's progress bars off."""
    from unigrf.compat import classic_tune_console

    classic_tune_console()
    try:  # first: importing Ray configures its loggers
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
    except ImportError:  # pragma: no cover - ray[data] is a dependency
        pass
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
