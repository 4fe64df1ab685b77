"""Writes that either complete or leave nothing: a temporary file (or directory) in the
target's directory, renamed over the target only once fully written — every file and directory
the program writes for keeps goes through `write_atomic` / `write_dir_atomic`.

A full disk, a read-only or vanished directory, a file-size limit: every such failure while
writing ends in one `WriteError` naming the file and the cause (`<file>: cannot write (No
space left on device)`), the temporary file removed, the previous version of the target (if
any) untouched. `torch.save` reports a failed write of its zip container as a `RuntimeError`
("[enforce fail at inline_container.cc:...]"), which does not say why: `write_atomic` hands
the writer a file object that records the `OSError` (ENOSPC, EFBIG, ...) its `write` raised, so
the message names the real cause.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class WriteError(RuntimeError):
    """A file could not be written; the message names it and the cause. Nothing partial stays."""

    def __init__(self, message: str, path: Path | None = None, cause: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.cause = cause


def failure_reason(err: BaseException) -> str:
    """The cause of a failed write in words: the OS's (`No space left on device`), or torch's
    zip writer's, which does not say why (a full disk, a size limit, a vanished file)."""
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "inline_container" in text or "PytorchStreamWriter" in text:
        return f"the write stopped short, e.g. a full disk or a file-size limit: {text}"
    return text


def is_write_failure(err: BaseException) -> bool:
    """An error that a failed write raises: any OSError, or torch's RuntimeError for its zip
    container (`[enforce fail at inline_container.cc...]`, `PytorchStreamWriter failed ...`)."""
    if isinstance(err, OSError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text)


def temporary_name(path: Path) -> Path:
    """`<dir>/.<name>.tmp-<pid>`: hidden, in the same directory (so the rename is atomic), and
    per process (two writers never share one)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(
    path: str | Path, write: Callable[[IO[bytes]], Any], *, fsync: bool = False, hint: str = ""
) -> Path:
    """Call `write(f)` on a binary file object of a temporary file beside `path`, then rename
    it to `path`. Any failure removes the temporary file and raises `WriteError` (`hint`, if
    given, is appended: what the user can do); an interrupt removes it and goes on."""
    path = Path(path)
    tmp = temporary_name(path)
    recorder = None
    try:
        with open(tmp, "wb") as fh:
            recorder = _RecordingFile(fh)
            write(recorder)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        _remove_quietly(tmp)
        if isinstance(err, Exception) and is_write_failure(err):
            cause = recorder.error if recorder is not None and recorder.error is not None else err
            raise write_error(path, cause, hint) from err
        raise
    return path


class _RecordingFile:
    """A binary file's `write`/`flush`, keeping the first OSError they raise: torch's zip writer
    turns it into a RuntimeError without the reason."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as err:
            self.error = self.error or err
            raise

    def fileno(self) -> int:
        return self._fh.fileno()


def write_error(path: Path, err: BaseException, hint: str = "") -> WriteError:
    cause = failure_reason(err)
    return WriteError(f"{path}: cannot write ({cause})" + (f"; {hint}" if hint else ""), path, cause)


def write_dir_atomic(
    path: str | Path,
    fill: Callable[[Path], Any],
    *,
    inside: str | Path,
    keep_existing: bool = False,
) -> Path:
    """A directory that appears whole or not at all: `fill(tmp)` writes its files into a
    temporary directory beside `path` (`temporary_name`), which is then renamed to `path`. An
    existing `path` is replaced — removed first, strictly inside `inside`
    (`unigrf.names.remove_tree`) — or, with `keep_existing`, kept (another writer finished the
    same directory first: its copy stands). Any failure, or an interrupt, removes the temporary
    directory and is raised as it came (`fill`'s own errors name what failed)."""
    from unigrf.names import remove_tree  # here: unigrf.names imports the config, which is heavier

    path = Path(path)
    tmp = temporary_name(path)
    try:
        remove_tree(tmp, inside, ignore_errors=True)  # this process's leftover
        tmp.mkdir()
        fill(tmp)
        if path.exists() and not keep_existing:
            remove_tree(path, inside)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (keep_existing and path.is_dir()):
                raise
    except BaseException:
        remove_tree(tmp, inside, ignore_errors=True)
        raise
    remove_tree(tmp, inside, ignore_errors=True)  # kept: the other writer's copy won
    return path


def write_bytes_atomic(path: str | Path, data: bytes, **kwargs: Any) -> Path:
    return write_atomic(path, lambda fh: fh.write(data), **kwargs)


def write_text_atomic(path: str | Path, text: str, **kwargs: Any) -> Path:
    return write_atomic(path, lambda fh: fh.write(text.encode()), **kwargs)


def make_dirs(path: str | Path, hint: str = "") -> Path:
    """`mkdir -p path`, a failure (read-only, a file in the way, a full disk) a `WriteError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno == errno.EEXIST or isinstance(err, FileExistsError):
            err = NotADirectoryError(errno.ENOTDIR, "exists and is not a directory")
        raise write_error(path, err, hint) from err
    return path


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
