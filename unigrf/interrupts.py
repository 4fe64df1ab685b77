"""Ctrl-C: stop cleanly, say so, exit 130.

`unigrf.cli.main` turns any `KeyboardInterrupt` into one line and exit status 130 (the shell's
convention for SIGINT), no traceback. Two places need more, because Ray installs its own SIGINT
handlers and then returns (or dies) as if nothing had happened:

- Ray Tune (`tune`, `ablate`) catches the first SIGINT, stops every trial and returns normally
  from `Tuner.fit()` — unfinished trials would look finished or just resultless.
  `tune_interrupts()` wraps `Tuner.fit()`: it keeps Tune's graceful stop (forwarded through
  Tune's SIGUSR1 handler, which Tune installs for exactly this; `unigrf.compat` names the Tune
  behaviour this relies on) but remembers that it happened (`state.interrupted`), so the caller can mark
  the unfinished runs "interrupted" and end with `Interrupted`. A second Ctrl-C stops at once.
- Ray Train (`train --workers N`) aborts its controller on SIGINT, and `fit()` then fails with
  the controller's death. `call_interruptibly(fn)` runs `fn` in a helper thread (where Train
  installs no handler, as inside Tune), so the SIGINT is a plain `KeyboardInterrupt` in the
  main thread; ending the driver ends the run's Ray job, whose checkpoints stay for a resume.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from unigrf.compat import TUNE_SIGINT_ENV, tune_stop_handler

T = TypeVar("T")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended the command after it wrote what it could; the message says what is left."""


@dataclass
class InterruptState:
    interrupted: bool = False


@contextmanager
def tune_interrupts() -> Iterator[InterruptState]:
    """Around `Tuner.fit()` (main thread): the first SIGINT asks Tune to stop (its SIGUSR1
    handler: trials stopped, experiment state saved) and sets `state.interrupted`; a second one
    raises KeyboardInterrupt. Elsewhere (another thread) it only yields the state."""
    state = InterruptState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous_env = os.environ.get(TUNE_SIGINT_ENV)
    previous = signal.getsignal(signal.SIGINT)
    previous_usr1 = signal.getsignal(signal.SIGUSR1)
    # until this Tune run installs its own SIGUSR1 handler, a SIGINT is a plain interrupt (an
    # earlier run's handler, left installed by Tune, would swallow it)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    def on_sigint(signum: int, frame: Any) -> None:
        tune_stop = tune_stop_handler()
        if state.interrupted or tune_stop is None:  # again, or Tune not running yet
            raise KeyboardInterrupt
        state.interrupted = True
        tune_stop(signal.SIGUSR1, frame)

    os.environ[TUNE_SIGINT_ENV] = "1"  # Tune leaves SIGINT to us
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGUSR1, previous_usr1)
        if previous_env is None:
            os.environ.pop(TUNE_SIGINT_ENV, None)
        else:
            os.environ[TUNE_SIGINT_ENV] = previous_env


def call_interruptibly(fn: Callable[[], T]) -> T:
    """`fn()` in a helper thread, the main thread waiting: a SIGINT is a KeyboardInterrupt here
    (the helper, a daemon, is abandoned: the process is about to end). Returns `fn`'s result,
    or raises its exception."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            box["error"] = err

    thread = threading.Thread(target=target, name="unigrf-interruptible", daemon=True)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever was left set
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    if "error" in box:
        raise box["error"]
    return box["result"]
