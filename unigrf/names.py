"""Names are names, not paths: the one check for every run, sweep and grid name, and the one
way anything under a results directory is deleted.

A run's `name`, a sweep's `--name` / `name:` and a grid's `name:` become directory names
(`<results_dir>/runs/<name>/`, `<results_dir>/tune/<name>/`, `<storage>/<name>/`, ...), and
`--restart` deletes those directories. A name holding a separator, `..`, an absolute path or
nothing at all would point the delete somewhere else (`name=` is the whole `runs/` directory,
`--name ..` the whole results directory). So:

- `check_name(value, key, error)` accepts only `NAME_RULE`: letters, digits, `_`, `-`, `.`,
  `=`, `+`, starting with a letter, digit or `_` (so never `.`, `..`, a hidden file or an
  option), at most `MAX_NAME_LENGTH` characters; anything else raises `error` naming the key;
- `remove_tree(path, root)` / `remove_file(path, root)` delete only what provably lies strictly
  inside `root` (both resolved: symlinks followed, `..` collapsed); anything else raises
  `UnsafePathError` and deletes nothing. `root` is the results directory, or a run's own Ray
  storage root; a URI (`s3://...`) is checked on its normalised path.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from pathlib import Path

from unigrf.config import ConfigError

# What a name may hold. `=` and `+` appear in ablation cell names (`hstu__unigrf__m=8__...`).
NAME_RULE = "letters, digits, '_', '-', '.', '=', '+', starting with a letter, digit or '_'"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")
# A file name may hold 255 bytes, and a name is joined with a short one in places (a sweep's
# Train runs are `<sweep>-<trial id>`, an ablation's `<grid>-<cell>`).
MAX_NAME_LENGTH = 200


# Directories of a Ray storage root that are not training runs: a run (`unigrf train`, whose
# Ray Train storage is `<storage>/<name>`) named like one would write into, and `--restart`
# delete, every sweep's state (unigrf.sweep.tuner.TUNE_SUBDIR, unigrf.ablation.cells.FIXED_SUBDIR,
# unigrf.sweep.trainable.TRAIN_STORAGE_SUBDIR).
RESERVED_RUN_NAMES = ("tune", "fixed", "tune-train")


class UnsafePathError(ConfigError):
    """A delete (or write) would reach outside the directory it is confined to."""


def name_problem(value: object) -> str | None:
    """Why `value` is not a valid name, or None when it is one."""
    if not isinstance(value, str):
        return f"expected a name ({NAME_RULE}), got {type(value).__name__} {value!r}"
    if not value:
        return f"must not be empty (a name is a directory: {NAME_RULE})"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long, at most {MAX_NAME_LENGTH} allowed"
    if not _NAME.fullmatch(value):
        return f"{value!r} is not a name: it may hold only {NAME_RULE} (no path separator, not '.' or '..')"
    return None


def run_name_problem(value: object) -> str | None:
    """`name_problem`, and a run may not take a name Ray storage uses for sweeps."""
    problem = name_problem(value)
    if problem is None and value in RESERVED_RUN_NAMES:
        return f"{value!r} is reserved (Ray storage keeps {', '.join(RESERVED_RUN_NAMES)}/ for sweeps): choose another name"
    return problem


def check_name(value: object, key: str, error: type[Exception] = ConfigError) -> str:
    """`value` if it is a valid name, else `error("<key>: <why>")`."""
    problem = name_problem(value)
    if problem is not None:
        raise error(f"{key}: {problem}")
    return value  # type: ignore[return-value]


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def inside(path: str | Path, root: str | Path, *, follow_links: bool = True) -> bool:
    """Whether `path` lies strictly inside `root` (not `root` itself), both resolved. With
    `follow_links=False` a symlink named `path` is judged by where it lies, not where it points."""
    if is_uri(path) or is_uri(root):
        p_scheme, p_rest = str(path).split("://", 1) if is_uri(path) else ("", str(path))
        r_scheme, r_rest = str(root).split("://", 1) if is_uri(root) else ("", str(root))
        if p_scheme != r_scheme:
            return False
        p, r = posixpath.normpath("/" + p_rest), posixpath.normpath("/" + r_rest)
        return p != r and p.startswith(r.rstrip("/") + "/")
    p = Path(path).expanduser()
    if not follow_links and p.is_symlink():
        p = p.parent.resolve() / p.name
    else:
        p = p.resolve()
    r = Path(root).expanduser().resolve()
    return p != r and r in p.parents


def confine(path: str | Path, root: str | Path, action: str = "delete", *, follow_links: bool = True) -> None:
    """Raise `UnsafePathError` unless `path` lies strictly inside `root`."""
    if not inside(path, root, follow_links=follow_links):
        raise UnsafePathError(
            f"refusing to {action} {path}: it is not inside {root} (a name must be a name, not a path)"
        )


def remove_tree(path: str | Path, root: str | Path, *, ignore_errors: bool = False) -> bool:
    """Delete the directory (or file) `path`, local or URI, if it exists and lies strictly inside
    `root`; True if something was deleted. Refuses (`UnsafePathError`) before touching anything
    when it does not. A symlink named `path` is removed itself, never followed. With
    `ignore_errors`, a failure to delete (not a refusal) is ignored: for cleanup after an error."""
    if is_uri(path):
        confine(path, root)
        import pyarrow.fs

        fs, target = pyarrow.fs.FileSystem.from_uri(str(path))
        if fs.get_file_info(target).type == pyarrow.fs.FileType.NotFound:
            return False
        fs.delete_dir(target)
        return True
    path = Path(path).expanduser()
    confine(path, root, follow_links=False)
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            return False
    except OSError:
        if not ignore_errors:
            raise
    return True


def remove_file(path: str | Path, root: str | Path) -> bool:
    """Delete the file (or symlink) `path` if it exists and lies strictly inside `root`; True if
    deleted."""
    path = Path(path).expanduser()
    confine(path, root, follow_links=False)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
