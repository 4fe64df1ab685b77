"""One writer per run: an inter-process lock held for the whole of a command on a run.

Two `unigrf train` of one run at once would both train to the end, write into the same
checkpoints and TensorBoard directory (two event files: every curve doubled) and race on
`metrics.json`. So `unigrf train` holds `<results_dir>/.locks/run-<name>.lock` (`filelock`, as
the data cache's locks beside it) from before it reads the run directory until it exits, and
`unigrf tune` / `unigrf ablate` hold `sweep-<name>.lock` / `grid-<name>.lock` the same way.

The second command does not wait (it would only repeat the first's work, or continue a run
whose config it has not checked): it exits at once with `RunInUseError` naming the holder,
whose process id, host and start time sit in a sidecar file (`<lock>.json`) written when the
lock was taken. The lock is the operating system's (`flock`), so a holder that dies — even by
SIGKILL — releases it; the sidecar then describes nobody and the next command overwrites it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from unigrf.atomic import make_dirs, write_text_atomic
from unigrf.names import check_name, remove_file

LOCK_DIR = ".locks"  # shared with the data cache's locks (unigrf.data.prepare.LOCK_DIR)


class RunInUseError(RuntimeError):
    """Another process holds the run's lock; the message names it."""


def lock_path(results_dir: str | Path, kind: str, name: str) -> Path:
    """`<results_dir>/.locks/<kind>-<name>.lock` (`name` checked to be a name)."""
    check_name(name, "name")
    return Path(results_dir) / LOCK_DIR / f"{kind}-{name}.lock"


def holder(lock_file: Path) -> str:
    """Who holds `lock_file`, from its sidecar: `pid 123 on host x since 2026-01-01 10:00:00
    (unigrf train ...)`, or `an unknown process` when the sidecar is missing or unreadable."""
    try:
        info = json.loads(sidecar(lock_file).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        text = f"pid {int(info['pid'])} on host {info['host']} since {since}"
        command = str(info.get("command", "")).strip()
        return text + (f" ({command[:160]})" if command else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


def sidecar(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".json")


@contextmanager
def hold(results_dir: str | Path, kind: str, name: str, what: str) -> Iterator[Path]:
    """Hold the lock of run/sweep/grid `name` for the `with` block, or raise `RunInUseError`
    at once when another process holds it. `what` names the thing in the message ("run",
    "sweep", "grid"); `kind` is the lock file's prefix."""
    from filelock import FileLock, Timeout

    file = lock_path(results_dir, kind, name)
    make_dirs(file.parent)
    lock = FileLock(file)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise RunInUseError(
            f"{what} {name!r} is in use by {holder(file)}, which holds {file}: wait for it to end, "
            f"or use another name"
        ) from None
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "command": " ".join(["unigrf", *sys.argv[1:]]) if sys.argv else "",
        }
        write_text_atomic(sidecar(file), json.dumps(info))
        yield file
    finally:
        try:
            remove_file(sidecar(file), Path(results_dir))
        except OSError:
            pass  # a sidecar that stays describes nobody once the lock is free
        lock.release()
