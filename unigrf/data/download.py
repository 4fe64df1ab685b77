"""Download the public datasets from their official URLs, verified, extracted, moved atomically.

`download(name, data_dir)` fetches into a temporary file beside `data_dir`, checks the archive's
checksum, extracts, checks the key file's checksum, and only then moves the files into
`data_dir` (`os.replace`, same filesystem), so an interrupted download never leaves a file that
looks complete. With no network it fails at once (short timeout) and says which URL to fetch
by hand, where to put the file and how to point `--data-dir` at it.

Checksums. Verified here against a real copy: the md5 of ml-100k `u.data`. The zip md5s are the
values GroupLens publishes beside each archive (`<zip>.md5`), as reproduced by several public
loaders; they were not re-verified on this (offline) machine. The ml-1m `ratings.dat` git blob
id comes from the project's shared/data/SOURCES.md (unverified here: the file is not present).
ml-20m `ratings.csv` and SNAP `ratings_Books.csv` have no published checksum we know of:
those are UNVERIFIED (the download only checks that the key file exists and is not empty).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unigrf.data.readers import DataError

DEFAULT_TIMEOUT_S = 10.0
_CHUNK = 1 << 20


class DownloadError(DataError):
    """A download failed (network, checksum, archive); the message says how to fetch by hand."""


@dataclass(frozen=True)
class DownloadSpec:
    name: str
    url: str
    key_file: str  # the file the reader needs, relative to data_dir
    archive_md5: str | None = None  # md5 of the downloaded file (zip or plain)
    archive_dir: str | None = None  # folder inside the zip holding the files (None: not a zip)
    key_md5: str | None = None  # md5 of the extracted key file
    key_git_blob: str | None = None  # git blob sha1 of the extracted key file


REGISTRY: dict[str, DownloadSpec] = {
    "ml-100k": DownloadSpec(
        name="ml-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        key_file="u.data",
        archive_md5="0e33842e24a9c977be4e0107933c0723",  # GroupLens ml-100k.zip.md5
        archive_dir="ml-100k",
        key_md5="6e47046882bad158b0efbb84cd5cb987",  # verified on shared/data/ml-100k/u.data
    ),
    "ml-1m": DownloadSpec(
        name="ml-1m",
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        key_file="ratings.dat",
        archive_md5="c4d9eecfca2ab87c1945afe126590906",  # GroupLens ml-1m.zip.md5
        archive_dir="ml-1m",
        key_git_blob="77a7c4b150f588c23bb9e1f068aa996c0b413695",  # shared/data/SOURCES.md
    ),
    "ml-20m": DownloadSpec(
        name="ml-20m",
        url="https://files.grouplens.org/datasets/movielens/ml-20m.zip",
        key_file="ratings.csv",
        archive_md5="cd245b17a1ae2cc31bb14903e1204af3",  # GroupLens ml-20m.zip.md5
        archive_dir="ml-20m",
    ),
    "amazon-books": DownloadSpec(
        name="amazon-books",
        url="http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/ratings_Books.csv",
        key_file="ratings_Books.csv",  # no published checksum: UNVERIFIED
    ),
}


def default_data_dir(results_dir: str | Path, name: str) -> Path:
    """Where `unigrf data download NAME` puts a dataset when no --data-dir is given."""
    return Path(results_dir) / "raw" / name


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: str | Path) -> str:
    """The id `git hash-object` gives a file: sha1 of `blob <size>\\0<bytes>`."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _by_hand(spec: DownloadSpec, data_dir: Path) -> str:
    what = f"extract its {spec.archive_dir}/ folder's files" if spec.archive_dir else "save it"
    return (
        f"download {spec.url} by hand, {what} into {data_dir} (so that {data_dir / spec.key_file} "
        f"exists), then run `unigrf data prepare --dataset {spec.name} --data-dir {data_dir}`"
    )


def key_file_ok(spec: DownloadSpec, path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    if spec.key_md5 is not None and file_md5(path) != spec.key_md5:
        return False
    return spec.key_git_blob is None or git_blob_sha1(path) == spec.key_git_blob


def _fetch(
    spec: DownloadSpec, dest: Path, opener: Callable[..., Any] | None, timeout: float, data_dir: Path
) -> None:
    """Stream `spec.url` into `dest`, failing fast when the network is unreachable."""
    opener = opener or urllib.request.urlopen  # looked up per call: tests patch it
    try:
        response = opener(spec.url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {spec.url} ({reason}); {_by_hand(spec, data_dir)}") from None
    from tqdm import tqdm

    total = int(response.headers.get("Content-Length") or 0) if hasattr(response, "headers") else 0
    try:
        with (
            response,
            open(dest, "wb") as out,
            tqdm(total=total or None, unit="B", unit_scale=True, desc=spec.name, disable=None) as bar,
        ):
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"download of {spec.url} failed ({err}); {_by_hand(spec, data_dir)}") from None


def download_spec(
    spec: DownloadSpec,
    data_dir: str | Path,
    *,
    opener: Callable[..., Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch `spec` into `data_dir` (verified); returns the key file's path."""
    data_dir = Path(data_dir)
    key = data_dir / spec.key_file
    if key_file_ok(spec, key):
        log(f"{spec.name}: {key} already present and verified")
        return key
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.download-", dir=data_dir.parent))
    try:
        fetched = work / (Path(spec.url).name or "download")
        log(f"{spec.name}: downloading {spec.url}")
        _fetch(spec, fetched, opener, timeout, data_dir)
        if spec.archive_md5 is not None:
            got = file_md5(fetched)
            if got != spec.archive_md5:
                raise DownloadError(
                    f"{spec.url}: checksum mismatch (md5 {got}, expected {spec.archive_md5}); "
                    f"the download is corrupt or the file changed upstream. {_by_hand(spec, data_dir)}"
                )
        if spec.archive_dir is not None:
            extracted = work / "extracted"
            try:
                with zipfile.ZipFile(fetched) as zf:
                    zf.extractall(extracted)
            except zipfile.BadZipFile as err:
                raise DownloadError(
                    f"{spec.url}: not a valid zip ({err}); {_by_hand(spec, data_dir)}"
                ) from None
            source = extracted / spec.archive_dir
            if not (source / spec.key_file).is_file():
                raise DownloadError(f"{spec.url}: the archive lacks {spec.archive_dir}/{spec.key_file}")
        else:
            source = work / "extracted"
            source.mkdir()
            os.replace(fetched, source / spec.key_file)
        if not key_file_ok(spec, source / spec.key_file):
            raise DownloadError(f"{spec.url}: {spec.key_file} failed its checksum after extraction")
        _move_into(source, data_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{spec.name}: {key} ({key.stat().st_size:,} bytes) verified and in place")
    return key


def _move_into(source: Path, data_dir: Path) -> None:
    """Move the extracted files into `data_dir` with renames (atomic per file, same filesystem)."""
    if not data_dir.exists():
        os.replace(source, data_dir)  # one rename: the directory appears complete or not at all
        return
    for entry in source.iterdir():
        target = data_dir / entry.name
        if target.is_dir() and entry.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)


def download(
    name: str,
    data_dir: str | Path,
    *,
    opener: Callable[..., Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    log: Callable[[str], None] = print,
) -> Path:
    """Download the registered dataset `name` into `data_dir`; returns the key file's path."""
    if name not in REGISTRY:
        raise DownloadError(f"unknown dataset {name!r}; downloadable: {', '.join(REGISTRY)}")
    return download_spec(REGISTRY[name], data_dir, opener=opener, timeout=timeout, log=log)
