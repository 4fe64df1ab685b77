"""Raw rating files -> one interactions DataFrame (pandas only, no Ray).

Every reader returns columns `user` (str), `item` (str), `rating` (float64) and `timestamp`
(int64, exact: never a float32, which merges nearby times into new ties), with the rows in
**file order** (the tie-break of the chronological sort downstream).

Parsing uses pandas' C engine. A file is first parsed with typed columns (the fast path); when
that fails, it is re-parsed as strings and validated vectorised, so a bad row is located
without a Python loop over rows. A bad row raises `DataError("<file>:<line>: <what>")` (line
1-based, header included) or, with `on_bad_rows="skip"`, is dropped and counted in
`df.attrs["bad_rows"]` (`df.attrs["first_bad_row"]` keeps the first message). Blank lines are
ignored. Bad rows are: a wrong separator or a missing/extra field, a non-numeric rating, a
non-integer timestamp, a rating outside `rating_scale`. An empty file is always an error.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from unigrf.config import ColumnsConfig, DataConfig

COLUMNS = ("user", "item", "rating", "timestamp")
OnBadRows = Literal["error", "skip"]

# The raw file each named dataset reads inside its data_dir.
DATASET_FILES = {
    "ml-100k": "u.data",
    "ml-1m": "ratings.dat",
    "ml-20m": "ratings.csv",
    "amazon-books": "ratings_Books.csv",
}
ML20M_HEADER = ("userId", "movieId", "rating", "timestamp")
JSON_FIELDS = {"user": "reviewerID", "item": "asin", "rating": "overall", "timestamp": "unixReviewTime"}
_JSON_CHUNK_LINES = 200_000


class DataError(ValueError):
    """A raw data file is missing or invalid; the message names the file and the 1-based line."""


# --------------------------------------------------------------------------------------------
# Validation shared by every format
# --------------------------------------------------------------------------------------------


def _validate(
    path: Path,
    raw: pd.DataFrame,
    lines: np.ndarray,
    rating_scale: tuple[float, float],
    on_bad_rows: OnBadRows,
    field_error: str,
    extra_bad: np.ndarray | None = None,
    parser_skipped: list[int] | None = None,
) -> pd.DataFrame:
    """Check the four columns of `raw` (strings or numbers) and build the typed frame.

    `lines[i]` is the file line of row i. `extra_bad` flags rows with a format error found by
    the caller (e.g. a wrong separator), reported as `field_error`. `parser_skipped` are lines
    the CSV parser already dropped (too many fields) in skip mode.
    """
    parser_skipped = parser_skipped or []
    present = raw[list(COLUMNS)].notna().to_numpy()
    for j, col in enumerate(("user", "item")):  # an empty id is a missing field (JSON, Parquet)
        if not pd.api.types.is_numeric_dtype(raw[col].dtype):
            present[:, j] &= ~raw[col].eq("").fillna(False).to_numpy(dtype=bool)
    blank = ~present.any(axis=1)
    if extra_bad is not None:
        blank &= ~extra_bad
    fields_ok = present.all(axis=1)
    if extra_bad is not None:
        fields_ok &= ~extra_bad

    rating = pd.to_numeric(raw["rating"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    ts_num = pd.to_numeric(raw["timestamp"], errors="coerce")
    if pd.api.types.is_integer_dtype(ts_num.dtype):
        ts_ok = np.ones(len(raw), dtype=bool)
        timestamp = ts_num.to_numpy(dtype=np.int64)
    else:
        ts_float = ts_num.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            ts_ok = np.isfinite(ts_float) & (np.floor(ts_float) == ts_float)
        timestamp = np.zeros(len(raw), dtype=np.int64)
        good = ts_ok & fields_ok
        if good.any():
            if np.abs(ts_float[good]).max() < 2**53:  # exactly representable: lossless cast
                timestamp[good] = ts_float[good].astype(np.int64)
            else:  # huge values (e.g. ns): re-parse the original text, never through a float
                timestamp[good] = raw["timestamp"][good].astype(str).astype(np.int64).to_numpy()

    lo, hi = rating_scale
    rating_num = ~np.isnan(rating)
    with np.errstate(invalid="ignore"):
        in_scale = (rating >= lo) & (rating <= hi)

    # one reason per row, in priority order (the first failing check names the problem)
    checks = [
        (~fields_ok, lambda i: field_error),
        (~rating_num, lambda i: f"rating {raw['rating'].iloc[i]!r} is not a number"),
        (~ts_ok, lambda i: f"timestamp {raw['timestamp'].iloc[i]!r} is not an integer"),
        (~in_scale, lambda i: f"rating {rating[i]:g} is outside rating_scale [{lo:g}, {hi:g}]"),
    ]
    bad = np.zeros(len(raw), dtype=bool)
    first: tuple[int, str] | None = None  # (line, message) of the first bad row in the file
    for mask, describe in checks:
        mask = mask & ~bad & ~blank
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            if first is None or lines[i] < first[0]:
                first = (int(lines[i]), describe(i))
            bad |= mask
    if parser_skipped and (first is None or parser_skipped[0] < first[0]):
        first = (parser_skipped[0], _too_many(field_error))

    n_bad = int(bad.sum()) + len(parser_skipped)
    if first is not None and on_bad_rows == "error":
        raise DataError(f"{path}:{first[0]}: {first[1]}")
    keep = ~bad & ~blank
    if not keep.any():
        if first is not None:
            raise DataError(f"{path}:{first[0]}: {first[1]} (and no valid row in the file)")
        raise DataError(f"{path}:1: empty file: no interactions")
    df = pd.DataFrame(
        {
            "user": _as_str(raw["user"][keep]),
            "item": _as_str(raw["item"][keep]),
            "rating": rating[keep],
            "timestamp": timestamp[keep],
        }
    )
    df.attrs["bad_rows"] = n_bad
    df.attrs["first_bad_row"] = f"{path}:{first[0]}: {first[1]}" if first is not None else None
    return df


def _as_str(s: pd.Series) -> pd.Series:
    """Ids as strings (JSON may give numbers; `str(12)` keeps the id readable)."""
    s = s.reset_index(drop=True)
    return s if pd.api.types.is_string_dtype(s.dtype) else s.astype(str)


def _too_many(field_error: str) -> str:
    return "too many fields: " + field_error.split(" (")[0]


def _empty_error(path: Path) -> DataError:
    return DataError(f"{path}:1: empty file: no interactions")


def _check_exists(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise _empty_error(path)
    return path


# --------------------------------------------------------------------------------------------
# Delimited text
# --------------------------------------------------------------------------------------------

_SKIP_RE = re.compile(r"Skipping line (\d+)")


def _read_delimited(
    path: Path,
    sep: str,
    names: list[str],
    fields: dict[str, str],
    header: bool,
    rating_scale: tuple[float, float],
    on_bad_rows: OnBadRows,
    quoting: int = csv.QUOTE_NONE,
    usecols: list[Any] | None = None,
    must_be_empty: tuple[str, ...] = (),
    sep_name: str | None = None,
) -> pd.DataFrame:
    """Parse a delimited file whose columns are `names` (`fields` maps user/item/... to them).

    `must_be_empty` columns exist only because a two-character separator was read as two
    one-character ones (`::` -> `:` + empty field + `:`); anything in them is a wrong separator.
    """
    _check_exists(path)
    sep_name = sep_name or {"\t": "TAB"}.get(sep, repr(sep))
    field_error = f"expected {len(fields)} fields separated by {sep_name} (wrong separator or missing field?)"
    kwargs: dict[str, Any] = dict(
        sep=sep,
        header=0 if header else None,
        names=None if header else names,
        usecols=usecols,
        engine="c" if len(sep) == 1 else "python",
        index_col=False,
        skip_blank_lines=False,  # keeps row i <-> line i (+ header): blank rows are dropped later
        keep_default_na=False,
        na_values=[""],
        quoting=quoting,
    )
    offset = 2 if header else 1  # row 0 is on line `offset`
    if header:  # check the header first: pandas' own usecols error names neither file nor line
        try:
            found = pd.read_csv(path, sep=sep, nrows=0, engine=kwargs["engine"], quoting=quoting).columns
        except pd.errors.EmptyDataError:
            raise _empty_error(path) from None
        missing = [c for c in fields.values() if c not in found]
        if missing:
            raise DataError(
                f"{path}:1: header lacks column(s) {', '.join(map(repr, missing))} "
                f"(found {', '.join(map(repr, map(str, found)))})"
            )
    typed = {names_: str for names_ in (fields["user"], fields["item"], *must_be_empty)}
    typed.update({fields["rating"]: np.float64, fields["timestamp"]: np.int64})
    raw: pd.DataFrame | None = None
    try:  # fast path: a clean file parses straight into the final dtypes
        raw = pd.read_csv(path, dtype=typed, **kwargs)
    except pd.errors.EmptyDataError:
        raise _empty_error(path) from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    except (ValueError, TypeError, OverflowError):
        raw = None
    skipped: list[int] = []
    if raw is None:  # slow path: strings, then locate the bad rows vectorised
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                raw = pd.read_csv(
                    path,
                    dtype=str,
                    on_bad_lines="warn" if on_bad_rows == "skip" else "error",
                    **kwargs,
                )
        except pd.errors.EmptyDataError:
            raise _empty_error(path) from None
        except pd.errors.ParserError as err:
            match = re.search(r"line (\d+)", str(err))
            line = match.group(1) if match else "?"
            raise DataError(f"{path}:{line}: {_too_many(field_error)}") from None
        for w in caught:
            skipped.extend(int(x) for x in _SKIP_RE.findall(str(w.message)))
        skipped.sort()
    n_total = len(raw) + len(skipped)
    lines = np.arange(offset, offset + n_total, dtype=np.int64)
    if skipped:
        lines = np.setdiff1d(lines, np.asarray(skipped, dtype=np.int64), assume_unique=True)
    extra_bad = None
    if must_be_empty:
        extra_bad = raw[list(must_be_empty)].notna().to_numpy().any(axis=1)
    frame = pd.DataFrame({col: raw[name] for col, name in fields.items()})
    return _validate(path, frame, lines, rating_scale, on_bad_rows, field_error, extra_bad, skipped)


def read_ml100k(
    path: str | Path, rating_scale: tuple[float, float] = (1.0, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """MovieLens-100K `u.data`: `user TAB item TAB rating TAB timestamp`, no header."""
    names = list(COLUMNS)
    return _read_delimited(
        Path(path), "\t", names, dict(zip(COLUMNS, names)), False, rating_scale, on_bad_rows
    )


def read_ml1m(
    path: str | Path, rating_scale: tuple[float, float] = (1.0, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """MovieLens-1M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header.

    pandas' C engine takes one-character separators only, so `::` is read as `:` and the
    empty fields between the two colons are checked to be empty.
    """
    names = ["user", "_s1", "item", "_s2", "rating", "_s3", "timestamp"]
    return _read_delimited(
        Path(path),
        ":",
        names,
        dict(zip(COLUMNS, ["user", "item", "rating", "timestamp"])),
        False,
        rating_scale,
        on_bad_rows,
        must_be_empty=("_s1", "_s2", "_s3"),
        sep_name="'::'",
    )


def read_ml20m(
    path: str | Path, rating_scale: tuple[float, float] = (0.5, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """MovieLens-20M / latest `ratings.csv`: header `userId,movieId,rating,timestamp`, half stars."""
    path = Path(path)
    _check_exists(path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip()
    if tuple(first.split(",")) != ML20M_HEADER:
        raise DataError(f"{path}:1: expected the header {','.join(ML20M_HEADER)!r}, found {first!r}")
    return _read_delimited(
        path,
        ",",
        list(ML20M_HEADER),
        dict(zip(COLUMNS, ML20M_HEADER)),
        True,
        rating_scale,
        on_bad_rows,
    )


def read_amazon_ratings(
    path: str | Path, rating_scale: tuple[float, float] = (1.0, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """Amazon ratings-only CSV (e.g. SNAP `ratings_Books.csv`): `user,item,rating,timestamp`, no header."""
    names = list(COLUMNS)
    return _read_delimited(
        Path(path), ",", names, dict(zip(COLUMNS, names)), False, rating_scale, on_bad_rows
    )


def read_table(
    path: str | Path,
    columns: ColumnsConfig = ColumnsConfig(),  # noqa: B008 - frozen dataclass, safe default
    rating_scale: tuple[float, float] = (1.0, 5.0),
    on_bad_rows: OnBadRows = "error",
    fmt: Literal["csv", "parquet"] | None = None,
) -> pd.DataFrame:
    """Any CSV or Parquet file (`fmt`; default: Parquet for a `.parquet`/`.pq` suffix) with a
    column mapping.

    CSV with `columns.header` true: the mapping names header columns (others are ignored).
    Without a header the mapping values are 0-based column positions (`"0"`, `"2"`, ...), or,
    when they are not all digits, the first four columns are user, item, rating, timestamp.
    Parquet rows are numbered from 1 in error messages.
    """
    path = Path(path)
    mapping = {c: getattr(columns, c) for c in COLUMNS}
    if fmt == "parquet" or (fmt is None and path.suffix.lower() in (".parquet", ".pq")):
        return _read_parquet(path, mapping, rating_scale, on_bad_rows)
    if columns.header:
        fields = mapping
        usecols = list(dict.fromkeys(mapping.values()))
        names = usecols
    elif all(v.isdigit() for v in mapping.values()):
        positions = {c: int(v) for c, v in mapping.items()}
        width = max(positions.values()) + 1
        names = [f"_c{j}" for j in range(width)]
        fields = {c: f"_c{p}" for c, p in positions.items()}
        usecols = None
    else:
        names = list(COLUMNS)
        fields = dict(zip(COLUMNS, names))
        usecols = None
    quoting = csv.QUOTE_MINIMAL  # generic CSVs may quote ids
    return _read_delimited(
        path, columns.sep, names, fields, columns.header, rating_scale, on_bad_rows, quoting, usecols
    )


def _read_parquet(
    path: Path, mapping: dict[str, str], rating_scale: tuple[float, float], on_bad_rows: OnBadRows
) -> pd.DataFrame:
    _check_exists(path)
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise DataError(f"{path}:1: not a Parquet file ({err})") from None
    missing = [c for c in mapping.values() if c not in schema.names]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(map(repr, missing))} (found {schema.names})")
    raw = pd.read_parquet(path, columns=list(dict.fromkeys(mapping.values())))
    if len(raw) == 0:
        raise _empty_error(path)
    frame = pd.DataFrame({col: raw[name] for col, name in mapping.items()})
    lines = np.arange(1, len(frame) + 1, dtype=np.int64)
    return _validate(path, frame, lines, rating_scale, on_bad_rows, "missing field (null value)")


# --------------------------------------------------------------------------------------------
# Amazon 2014 review JSON lines
# --------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _json_chunks(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) in chunks, so a 10 GB file never sits in memory as text."""
    with _open_text(path) as fh:
        start = 1
        while True:
            chunk = list(itertools.islice(fh, _JSON_CHUNK_LINES))
            if not chunk:
                return
            yield start, chunk
            start += len(chunk)


def read_amazon_reviews(
    path: str | Path, rating_scale: tuple[float, float] = (1.0, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """Amazon 2014 review JSON lines (`.json` or `.json.gz`): reviewerID, asin, overall,
    unixReviewTime (other fields are ignored)."""
    path = Path(path)
    _check_exists(path)
    frames: list[pd.DataFrame] = []
    line_arrays: list[np.ndarray] = []
    skipped: list[int] = []  # lines that are not a JSON object
    try:
        for start, chunk in _json_chunks(path):
            nonblank = [j for j, text in enumerate(chunk) if text.strip()]
            if not nonblank:
                continue
            texts = [chunk[j] for j in nonblank]
            numbers = start + np.asarray(nonblank, dtype=np.int64)
            try:  # fast path: ujson in C over the whole chunk
                raw = pd.read_json(io.StringIO("".join(texts)), lines=True, dtype=False)
                if len(raw) != len(texts):
                    raise ValueError("row count mismatch")
            except ValueError:  # locate the malformed lines one by one (only for a bad chunk)
                records, ok = [], []
                for text, line in zip(texts, numbers):
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        obj = None
                    if not isinstance(obj, dict):
                        if on_bad_rows == "error":
                            raise DataError(f"{path}:{line}: not a JSON object") from None
                        skipped.append(int(line))
                        continue
                    records.append(obj)
                    ok.append(line)
                raw = pd.DataFrame.from_records(records)
                numbers = np.asarray(ok, dtype=np.int64)
            frame = pd.DataFrame(
                {
                    col: raw[name] if name in raw.columns else pd.Series(np.nan, index=raw.index)
                    for col, name in JSON_FIELDS.items()
                }
            )
            frames.append(frame)
            line_arrays.append(numbers)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if not frames:
        if skipped:
            raise DataError(f"{path}:{skipped[0]}: not a JSON object (and no valid row in the file)")
        raise _empty_error(path)
    raw = pd.concat(frames, ignore_index=True)
    lines = np.concatenate(line_arrays)
    field_error = "missing field (expected reviewerID, asin, overall, unixReviewTime)"
    df = _validate(path, raw, lines, rating_scale, on_bad_rows, field_error)
    if skipped:
        df.attrs["bad_rows"] += len(skipped)
        df.attrs["first_bad_row"] = f"{path}:{skipped[0]}: not a JSON object"
    return df


# --------------------------------------------------------------------------------------------
# Dispatch on the config
# --------------------------------------------------------------------------------------------


def source_files(cfg: DataConfig) -> list[Path]:
    """The raw file(s) `cfg` reads, resolved without parsing them (for cache keys).

    Raises DataError (naming where it looked and how to fix it) when a file is missing.
    """
    if cfg.dataset == "synthetic":
        return []
    if cfg.path is not None:
        return [_check_exists(Path(cfg.path))]
    if cfg.dataset in ("csv", "parquet"):
        raise DataError(f"dataset {cfg.dataset!r} needs data.path (--path FILE)")
    if cfg.data_dir is None:
        wanted = DATASET_FILES.get(cfg.dataset, "reviews_*.json(.gz)")
        raise DataError(
            f"dataset {cfg.dataset!r}: no data directory given; pass --data-dir DIR (the folder "
            f"holding {wanted}) or --path FILE, or fetch it with `unigrf data download`"
        )
    data_dir = Path(cfg.data_dir)
    if cfg.dataset == "amazon-reviews":
        found = sorted(p for p in data_dir.glob("reviews_*.json*") if p.name.endswith((".json", ".json.gz")))
        if len(found) != 1:
            what = "no reviews_*.json(.gz) file" if not found else f"{len(found)} review files"
            raise DataError(f"{data_dir}: {what} found; pass the one to read with --path FILE")
        return [_check_exists(found[0])]
    file = data_dir / DATASET_FILES[cfg.dataset]
    if not file.is_file():
        raise DataError(
            f"{file}: file not found (dataset {cfg.dataset!r} reads {DATASET_FILES[cfg.dataset]} "
            f"inside --data-dir; download it with `unigrf data download {cfg.dataset}`)"
        )
    return [_check_exists(file)]


def read_interactions(cfg: DataConfig) -> tuple[pd.DataFrame, list[Path]]:
    """Read the dataset `cfg` names: (interactions in file order, source files)."""
    if cfg.dataset == "synthetic":
        from unigrf.data.synthetic import generate_synthetic

        df = generate_synthetic(cfg.synthetic)
        df.attrs.update(bad_rows=0, first_bad_row=None)
        return df, []
    sources = source_files(cfg)
    path = sources[0]
    scale = cfg.resolved_rating_scale()
    readers = {
        "ml-100k": read_ml100k,
        "ml-1m": read_ml1m,
        "ml-20m": read_ml20m,
        "amazon-books": read_amazon_ratings,
        "amazon-reviews": read_amazon_reviews,
    }
    if cfg.dataset in readers:
        df = readers[cfg.dataset](path, rating_scale=scale, on_bad_rows=cfg.on_bad_rows)
    else:
        df = read_table(path, cfg.columns, rating_scale=scale, on_bad_rows=cfg.on_bad_rows, fmt=cfg.dataset)
    return df, sources
