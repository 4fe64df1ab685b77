"""Every workaround that reaches into Ray's, Tune's or Optuna's private internals, in one place.

Each section names the versions it was written against (`PINNED`, pyproject.toml's ranges), the
upstream issue that would make it unnecessary (or the closest one, where none asks for exactly
this), and what breaks without it; tests/test_compat.py checks that the upstream behaviour each
one relies on, or works around, is still there, so an upgrade that changes it fails there first.
Importing this module imports neither Ray nor Optuna.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

# The versions every workaround below was written and tested against (pyproject.toml pins them).
PINNED = {"ray": "2.60", "optuna": "5.1"}

Resources = dict[str, float]

# ---------------------------------------------------------------------------------------------
# Ray Train V2 placement-group cleaners (ray._private.state)
# ---------------------------------------------------------------------------------------------
# Ray Train V2 starts one detached `PlacementGroupCleaner` actor per training run to remove the
# run's placement group if its controller dies. It polls the controller through the State API,
# which needs the dashboard; on a cluster without one it never sees the controller die and lives
# on, one process per run (upstream: ray-project/ray#61689, a cleaner outliving its controller,
# and #65443, one cleaner process per run). The actors are anonymous, so the only way to find
# them is Ray's private state tables.

TRAIN_CLEANER_CLASS = "PlacementGroupCleaner"


def alive_actors(class_name: str) -> list[dict[str, Any]]:
    """Every alive actor of class `class_name`: its `JobID`, `Pid`, `Address.NodeID`."""
    from ray._private import state

    return [
        info
        for info in state.actors(actor_state_name="ALIVE").values()
        if info["ActorClassName"] == class_name
    ]


def ended_jobs() -> set[str]:
    """The ids of the jobs that ended (their drivers exited or were killed)."""
    from ray._private import state

    return {job["JobID"] for job in state.jobs() if job.get("IsDead")}


# ---------------------------------------------------------------------------------------------
# The autoscaler's capacity (~/ray_bootstrap_config.yaml)
# ---------------------------------------------------------------------------------------------
# A sweep on a cluster whose GPU nodes are not started yet must still ask for as many concurrent
# trials as the cluster can grow to; Ray has no API for what the autoscaler may still add. Tune
# itself detects an autoscaling cluster by the file `ray up` leaves on the head node
# (ray.tune.execution.cluster_info; upstream: ray-project/ray#18608, #43451), and so does this:
# its node types and max_workers, as the cluster launcher writes them.

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


def autoscaler_nodes(config_path: str | Path = BOOTSTRAP_CONFIG) -> list[Resources] | None:
    """Every worker node the autoscaler may run at most, one resources dict per node, read
    from the `ray up` config on the head node; None when there is no such file (a local Ray,
    `ray start` by hand, or a driver not on the head)."""
    path = Path(config_path).expanduser()
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text()) or {}
    head_type = config.get("head_node_type")
    budget = int(config.get("max_workers", 0))
    nodes: list[Resources] = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        if name == head_type:
            continue
        count = min(int(node_type.get("max_workers", budget)), budget - len(nodes))
        res = {k: float(v) for k, v in (node_type.get("resources") or {}).items()}
        nodes.extend(dict(res) for _ in range(max(0, count)))
    return nodes


# ---------------------------------------------------------------------------------------------
# The dashboard's URL (ray._private.worker)
# ---------------------------------------------------------------------------------------------
# Ray prints it only in its start-up banner (off in the quiet console) and has no public
# accessor (upstream: ray-project/ray#52629, open).


def dashboard_url() -> str | None:
    """The connected cluster's dashboard URL, or None where Ray cannot say."""
    try:
        from ray._private.worker import get_dashboard_url

        return get_dashboard_url() or None
    except Exception:  # noqa: BLE001 - never fail a run over a log line
        return None


# ---------------------------------------------------------------------------------------------
# A local Ray's start-up window (ray._private.node.Node.__init__)
# ---------------------------------------------------------------------------------------------
# `ray.init()` starting a local node waits a fixed 30 s (`raylet_start_wait_time_s`, a local
# variable, not a setting) for its raylet to register with the GCS, then raises a bare
# `Exception` with this text. On a machine whose CPUs are busy with other work the processes can
# start slower than that; a second try usually fits (upstream: ray-project/ray#47087 raised the
# window from 10 s, closed; #62883, the same failure, open).

LOCAL_START_WINDOW_S = 30
LOCAL_START_TIMEOUT_TEXT = "The current node timed out during startup"


def local_start_timed_out(err: BaseException) -> bool:
    """True when `err` is ray.init's failure to see a local node register within its window."""
    return type(err) is Exception and LOCAL_START_TIMEOUT_TEXT in str(err)


# ---------------------------------------------------------------------------------------------
# Ray's console: Train V2's per-report log, Tune's console engine
# ---------------------------------------------------------------------------------------------
# Train V2 logs every rank's whole metrics dict at INFO on each report, under a logger named
# after its source file, which `LoggingConfig(log_level)` does not reach (no upstream issue asks
# for exactly this; closest: ray-project/ray#21988). Tune's newer console engine prints its
# experiment box even at verbose=0; the classic reporter, silent at 0, is selected by
# RAY_AIR_NEW_OUTPUT=0 (ray.tune.experimental.output.get_air_verbosity; upstream:
# ray-project/ray#35129, the engine made the default).

TUNE_CONSOLE_ENV = "RAY_AIR_NEW_OUTPUT"


def quiet_train_report_log() -> None:
    """Train V2's per-report INFO lines off (rank 0's progress line says the same in one line)."""
    try:
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except (ImportError, AttributeError):  # internal layout changed: keep Ray's logging
        pass


def classic_tune_console() -> None:
    """Tune's classic console reporter (silent at verbose=0) for this process and its workers."""
    os.environ[TUNE_CONSOLE_ENV] = "0"


# ---------------------------------------------------------------------------------------------
# Tune's SIGINT / SIGUSR1 handlers (ray.tune.tune._setup_signal_catching)
# ---------------------------------------------------------------------------------------------
# Tune catches the first SIGINT, stops every trial and returns normally from `Tuner.fit()`, so a
# caller cannot tell an interrupted sweep from a finished one. TUNE_DISABLE_SIGINT_HANDLER=1
# leaves SIGINT to the caller (upstream: ray-project/ray#50358), and Tune's SIGUSR1 handler,
# installed on every run for remote drivers (ray-project/ray#24015), still stops it gracefully:
# `unigrf.interrupts` forwards a SIGINT to it. Tune leaves that handler installed after the run
# (ray-project/ray#37737), so it is reset before each run.

TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


def tune_stop_handler() -> Callable[[int, Any], None] | None:
    """The handler a running Tune installed for SIGUSR1 (its graceful stop), None when none is."""
    handler = signal.getsignal(signal.SIGUSR1)
    return handler if callable(handler) else None


# ---------------------------------------------------------------------------------------------
# OptunaSearch's trial table (ray.tune.search.optuna.OptunaSearch private attributes)
# ---------------------------------------------------------------------------------------------
# Tune's OptunaSearch keeps its Optuna trials in `_ot_trials` (Tune trial id -> optuna Trial)
# and the ones it told the study in `_completed_trials`, with no public accessor; a trial's
# stored state is read through the study's private `_storage` (optuna has no public lookup by
# trial id: optuna/optuna#6365). Used to tag each Optuna trial with its Tune trial id, and to
# skip a result Tune re-sends for a trial the study already closed (a driver killed between a
# trial's end and Tune's next snapshot; no upstream issue found).


def optuna_trial(searcher: Any, tune_trial_id: str) -> Any | None:
    """The Optuna trial an OptunaSearch asked for Tune trial `tune_trial_id`, None if none."""
    return searcher._ot_trials.get(tune_trial_id)


def optuna_trial_finished(searcher: Any, tune_trial_id: str) -> bool:
    """Whether the study already closed the Optuna trial of `tune_trial_id` (its stored state
    is finished) although the searcher has not marked it completed."""
    ot_trial = optuna_trial(searcher, tune_trial_id)
    if ot_trial is None or tune_trial_id in searcher._completed_trials:
        return False
    return searcher._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()


def mark_completed(searcher: Any, tune_trial_id: str) -> None:
    """Tell the searcher `tune_trial_id` is done (so it sends the study nothing more for it)."""
    searcher._completed_trials.add(tune_trial_id)


# ---------------------------------------------------------------------------------------------
# Samplers holding a threading.Lock (optuna.samplers._ga._base)
# ---------------------------------------------------------------------------------------------
# Since Optuna 5.1 the genetic samplers (NSGA-II) hold a `threading.Lock` (`_thread_lock`),
# which pickle cannot copy, and Tune pickles the searcher with its sampler when the Tuner starts
# and with every experiment snapshot (no upstream issue found; the same failure for another
# sampler: optuna/optunahub#76). The lock guards a per-process cache, so a copy gets a new one.

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class PicklableLocks:
    """A mixin: an object whose `threading.Lock`/`RLock` attributes are dropped when pickled and
    made anew (of the same kind) when unpickled."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        locks = {
            k: isinstance(v, type(threading.RLock())) for k, v in state.items() if isinstance(v, _LOCK_TYPES)
        }
        for k in locks:
            del state[k]
        state["_unpickled_locks"] = locks  # name -> whether it was re-entrant
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for k, reentrant in state.pop("_unpickled_locks", {}).items():
            state[k] = threading.RLock() if reentrant else threading.Lock()
        self.__dict__.update(state)
