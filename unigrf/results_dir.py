"""The results directory: checked writable before any work starts.

Every command writes under `results_dir` (prepared data, checkpoints, Tune state, reports).
A directory that cannot be written would otherwise fail late — after Ray started, after the
data was read, or when the first checkpoint is due — so `train`, `tune`, `ablate` and
`data prepare` call `check_writable` first: it creates the directory if needed and writes
(and removes) one small file in it, and turns any failure into a `ResultsDirError` that names
the directory, the reason and the option that sets it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from unigrf.config import ConfigError


class ResultsDirError(ConfigError):
    """The results directory cannot be created or written; the message says which and why."""


def check_writable(results_dir: str | Path) -> Path:
    """`results_dir` (created if missing), absolute, after proving a file can be written in it."""
    path = Path(results_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".unigrf-write-check-", dir=path)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise ResultsDirError(
            f"results_dir {path}: not writable ({err.strerror or err}); pass --results-dir DIR "
            "(or set results_dir in the config) to a directory you can write"
        ) from None
    return path.resolve()
