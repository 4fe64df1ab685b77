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
timestamp that is neither a number nor an ISO 8601 date/datetime (`_timestamps` says how each
becomes an int64), a rating outside `rating_scale`. An empty file is always an error.

`read_coded` gives the same interactions with the ids as integer codes (`Interactions`, what
prepare uses): the delimited text formats are then read `CHUNK_ROWS` rows at a time, each chunk
checked and its ids coded as it comes, so the raw rows are never all in memory; the codes, the
bad-row count, the first bad row and every error are those of a whole-file read.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import decimal
import gzip
import io
import itertools
import json
import math
import re
import warnings
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from unigrf.config import ColumnsConfig, DataConfig

COLUMNS = ("user", "item", "rating", "timestamp")
OnBadRows = Literal["error", "skip"]

# The raw file each named dataset reads inside its data_dir.
DATASET_FILES = {
    "ml-100k": "u.data",
    "ml-1m": "ratings.dat",
    "ml-20m": "ratings.csv",
    "amazon-books": "ratings_Books.csv",
    "movietweetings": "ratings.dat",  # MovieTweetings: ML-1M's format, ratings 0-10
}
ML20M_HEADER = ("userId", "movieId", "rating", "timestamp")
JSON_FIELDS = {"user": "reviewerID", "item": "asin", "rating": "overall", "timestamp": "unixReviewTime"}
_JSON_CHUNK_LINES = 200_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NOT_UTF8 = re.compile("[\ufffd\ud800-\udfff]")  # replaced bytes, lone surrogates


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
    dropped: list[tuple[int, str]] | None = None,
    blank_lines: bool = True,
) -> pd.DataFrame:
    """`_check` on a whole file's rows, then its verdict (`_raise_if_fatal`): the typed frame
    with `attrs` bad_rows and first_bad_row. The readers that hold the whole file use it."""
    checked = _check(path, raw, lines, rating_scale, field_error, dropped=dropped, blank_lines=blank_lines)
    _raise_if_fatal(path, checked.first, len(checked.frame) > 0, on_bad_rows)
    df = checked.frame
    df.attrs["bad_rows"] = checked.bad_rows
    df.attrs["first_bad_row"] = _where(path, checked.first)
    return df


@dataclass
class _Checked:
    """Rows checked by `_check`: the good ones typed, the bad ones counted."""

    frame: pd.DataFrame  # user, item (str), rating (float64), timestamp (int64): the good rows
    bad_rows: int
    first: tuple[int, str] | None  # (line, message) of the first bad row


def _check(
    path: Path,
    raw: pd.DataFrame,
    lines: np.ndarray,
    rating_scale: tuple[float, float],
    field_error: str,
    extra_bad: np.ndarray | None = None,
    dropped: list[tuple[int, str]] | None = None,
    blank_lines: bool = True,
    too_long: np.ndarray | None = None,
) -> _Checked:
    """Check the four columns of `raw` (strings, numbers or, from JSON, any Python objects) and
    type the good rows. Raises nothing: whether a bad row is fatal is decided once the whole
    file is read (`_raise_if_fatal`), so a file read in chunks fails as one read whole does.

    `lines[i]` is the file line of row i. `extra_bad` flags rows with a format error found by
    the caller (e.g. a wrong separator), reported as `field_error`. `dropped` are (line,
    message) of bad lines that never became rows (not a JSON object): counted and reported like
    the others. `too_long` flags rows with more fields than columns. `blank_lines`: a row with
    all four fields empty is a blank line, ignored (text formats); otherwise it is a row with
    missing fields (a JSON `{}`, a Parquet row of nulls).
    """
    dropped = sorted(dropped or [])
    too_long = np.zeros(len(raw), dtype=bool) if too_long is None else too_long
    present = np.column_stack([_present(raw[col]) for col in COLUMNS])
    blank = ~present.any(axis=1) & ~too_long if blank_lines else np.zeros(len(raw), dtype=bool)
    if extra_bad is not None:
        blank &= ~extra_bad
    fields_ok = present.all(axis=1)
    if extra_bad is not None:
        fields_ok &= ~extra_bad

    # undecodable bytes became U+FFFD when the file was read (never silently part of an id)
    not_utf8 = np.column_stack([_not_utf8(raw[col]) for col in COLUMNS])
    utf8_ok = ~not_utf8.any(axis=1)
    users, user_ok = _ids(raw["user"])
    items, item_ok = _ids(raw["item"])
    rating, rating_num = _numbers(raw["rating"])
    timestamp, ts_ok, ts_in_range = _timestamps(raw["timestamp"], fields_ok)

    lo, hi = rating_scale
    with np.errstate(invalid="ignore"):
        in_scale = (rating >= lo) & (rating <= hi)

    def bad_utf8(i: int) -> str:
        col = COLUMNS[int(np.flatnonzero(not_utf8[i])[0])]
        return f"{col} field is not valid UTF-8 ({_shown(raw[col].iloc[i])})"

    # one reason per row, in priority order (the first failing check names the problem)
    checks = [
        (too_long, lambda i: _too_many(field_error)),
        (~fields_ok, lambda i: field_error),
        (~utf8_ok, bad_utf8),
        (~user_ok, lambda i: f"user {_shown(raw['user'].iloc[i])} is not a string or an integer id"),
        (~item_ok, lambda i: f"item {_shown(raw['item'].iloc[i])} is not a string or an integer id"),
        (~rating_num, lambda i: f"rating {_shown(raw['rating'].iloc[i])} is not a number"),
        (
            ~ts_ok,
            lambda i: (
                f"timestamp {_shown(raw['timestamp'].iloc[i])} is not a number or an ISO 8601 date/datetime"
            ),
        ),
        (
            ~ts_in_range,
            lambda i: f"timestamp {_shown(raw['timestamp'].iloc[i])} is outside the int64 range",
        ),
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
    if dropped and (first is None or dropped[0][0] < first[0]):
        first = dropped[0]

    keep = ~bad & ~blank
    frame = pd.DataFrame(
        {
            "user": users[keep].reset_index(drop=True),
            "item": items[keep].reset_index(drop=True),
            "rating": rating[keep],
            "timestamp": timestamp[keep],
        }
    )
    return _Checked(frame, int(bad.sum()) + len(dropped), first)


def _raise_if_fatal(
    path: Path, first: tuple[int, str] | None, any_kept: bool, on_bad_rows: OnBadRows
) -> None:
    """The verdict on a whole file: its first bad row (`first`: line, message) is fatal with
    `on_bad_rows="error"`; a file without a good row is fatal either way."""
    if first is not None and on_bad_rows == "error":
        raise DataError(f"{path}:{first[0]}: {first[1]}")
    if not any_kept:
        if first is not None:
            raise DataError(f"{path}:{first[0]}: {first[1]} (and no valid row in the file)")
        raise _empty_error(path)


def _where(path: Path, first: tuple[int, str] | None) -> str | None:
    """`first_bad_row`: `<file>:<line>: <what>`, or None."""
    return f"{path}:{first[0]}: {first[1]}" if first is not None else None


def _shown(value: Any) -> str:
    """A field's value for an error message: repr, cut to 40 characters."""
    if isinstance(value, np.generic):  # np.float64(4.0) -> 4.0
        value = value.item()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_text(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.StringDtype) or s.dtype == object


def _present(s: pd.Series) -> np.ndarray:
    """Not null, and not an empty string (an empty id is a missing field: JSON, Parquet)."""
    if isinstance(s.dtype, pd.StringDtype):  # one vectorised pass: null and "" have length 0
        return s.str.len().to_numpy(dtype=np.int64, na_value=0) > 0
    present = s.notna().to_numpy(dtype=bool, copy=True)
    if s.dtype == object:  # any Python objects (JSON): compare only the strings
        present &= ~s.map(lambda v: isinstance(v, str) and v == "").to_numpy(dtype=bool)
    return present


def _not_utf8(s: pd.Series) -> np.ndarray:
    """Fields holding U+FFFD (what undecodable bytes are read as) or a lone surrogate (a JSON
    `\\udXXX` escape): text that is not valid UTF-8."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if not _is_text(s):
        return np.zeros(len(s), dtype=bool)
    if isinstance(s.dtype, pd.StringDtype):  # stored as UTF-8: no surrogate can be in it
        return s.str.contains("\ufffd", regex=False).to_numpy(dtype=bool, na_value=False)
    return s.map(lambda v: isinstance(v, str) and _NOT_UTF8.search(v) is not None).to_numpy(dtype=bool)


def _ids(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(ids as strings, ok [n]): strings are kept as they are, integers written out exactly,
    integral floats as integers (a Parquet id column with nulls is float); anything else (a
    fraction, a boolean, a list, bytes) is not an id. Null entries are left to `_present`."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    ok = np.ones(len(s), dtype=bool)
    if isinstance(s.dtype, pd.StringDtype):
        return s, ok
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype(str), ~s.notna().to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.astype(str), ok
    if pd.api.types.is_float_dtype(s.dtype):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < 2**63)
        text = np.where(integral, np.where(integral, values, 0).astype(np.int64).astype(str), "")
        return pd.Series(text, index=s.index, dtype=str), integral | np.isnan(values)
    if s.dtype != object:  # datetimes, durations, ...: not ids
        return s.astype(str), ~s.notna().to_numpy(dtype=bool)
    values, ok = [], np.zeros(len(s), dtype=bool)
    for j, v in enumerate(s.tolist()):
        exact = _exact_int(v) if not isinstance(v, str) else None
        if isinstance(v, str):
            values.append(v)
            ok[j] = True
        elif exact is not None:
            values.append(str(exact))
            ok[j] = True
        else:
            values.append("")
            ok[j] = v is None or (isinstance(v, float) and math.isnan(v))
    # lone surrogates cannot be stored as pandas strings; such rows are flagged by _not_utf8
    clean = [v.encode("utf-8", "replace").decode("utf-8") for v in values]
    return pd.Series(clean, index=s.index, dtype=str), ok


def _exact_int(v: Any) -> int | None:
    """`v` as an exact Python int (integers, integral floats, integer text such as "17" or
    "1e3"), else None. Booleans are not integers."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if math.isfinite(v) and float(v).is_integer() else None
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
        try:
            d = decimal.Decimal(v.strip())
        except decimal.InvalidOperation:
            return None
        return int(d) if d.is_finite() and d == d.to_integral_value() else None
    return None


def _numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values [n], is a number [n]). Numeric text is parsed; booleans, lists and
    other objects are not numbers."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if pd.api.types.is_bool_dtype(s.dtype) or not (pd.api.types.is_numeric_dtype(s.dtype) or _is_text(s)):
        return np.full(len(s), np.nan), np.zeros(len(s), dtype=bool)
    if s.dtype == object:
        scalar = s.map(lambda v: isinstance(v, (str, int, float, np.number)) and not isinstance(v, bool))
        s = s.where(scalar.to_numpy(dtype=bool), None)
    values = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, ~np.isnan(values)


# ISO 8601 dates and datetimes a timestamp may be written as: 2000-07-12, 2000-07-12T10:20,
# 2000-07-12T10:20:30(.5), a space for the T, and an optional zone (Z, +02:00, +0200, +02)
_ISO_DATETIME = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"


def _timestamps(s: pd.Series, fields_ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int64 values [n], is a timestamp [n], within int64 [n]) of a timestamp column.

    The rule (docs/reliability.md): an integer is itself, exactly (never through a float:
    nanosecond times exceed float precision; `100.0` and `1e3` are integers); another finite
    number is floored to the integer below (`1.5` -> 1, `-1.5` -> -2; times within one unit
    become ties, kept in file order); an ISO 8601 date or datetime (`_ISO_DATETIME`), or a
    date/datetime value (a Parquet timestamp column), is seconds since 1970-01-01 UTC, floored,
    and one without a zone is taken as UTC. Anything else is not a timestamp."""
    n = len(s)
    timestamp = np.zeros(n, dtype=np.int64)
    in_range = np.ones(n, dtype=bool)
    if pd.api.types.is_integer_dtype(s.dtype) and pd.api.types.is_signed_integer_dtype(s.dtype):
        if s.notna().all():
            return s.to_numpy(dtype=np.int64), np.ones(n, dtype=bool), in_range
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ok = s.notna().to_numpy(dtype=bool) & fields_ok
        timestamp[ok] = _epoch_seconds(s[ok])
        return timestamp, ok, in_range
    values, is_number = _numbers(s)
    ok = is_number & np.isfinite(values)
    good = ok & fields_ok
    small = good & (np.abs(values) < 2**53)  # exactly representable: a lossless cast
    timestamp[small] = np.floor(values[small]).astype(np.int64)
    # from the original, exactly: huge values (e.g. ns), and text whose float rounded up to an
    # integer (`4503599627370495.9` -> ...496.0; a float never rounds down across an integer)
    from_text = good & ~small
    with np.errstate(invalid="ignore"):
        rounded_up = small & (np.floor(values) == values)
    if rounded_up.any() and (_is_text(s) or isinstance(s.dtype, pd.CategoricalDtype)):
        rows = np.flatnonzero(rounded_up)
        from_text[rows] = _fraction_text(s.iloc[rows])
    originals = s.to_numpy(dtype=object)
    for j in np.flatnonzero(from_text):
        exact = _exact_floor(originals[j])
        if exact is None:
            ok[j] = False
        elif INT64_MIN <= exact <= INT64_MAX:
            timestamp[j] = exact
        else:
            in_range[j] = False
    dates = fields_ok & ~is_number & _dates(s)
    if dates.any():
        parsed = pd.to_datetime(s[dates], format="ISO8601", utc=True, errors="coerce")
        if s.dtype == object:  # date/datetime objects (JSON has none; Parquet dates may be)
            parsed = parsed.fillna(pd.to_datetime(s[dates], format="mixed", utc=True, errors="coerce"))
        valid = parsed.notna().to_numpy(dtype=bool)
        rows = np.flatnonzero(dates)[valid]
        timestamp[rows] = _epoch_seconds(parsed[valid])
        ok[rows] = True
    return timestamp, ok, in_range


_FRACTION = re.compile(r"\.\d*[1-9]|[eE]")  # a non-zero fraction, or an exponent


def _fraction_text(s: pd.Series) -> np.ndarray:
    """[n] entries that are text with a non-zero fraction or an exponent (`1.5`, `2e-1`)."""
    if isinstance(s.dtype, pd.StringDtype):
        return s.str.contains(_FRACTION, regex=True).to_numpy(dtype=bool, na_value=False)
    return s.map(lambda v: isinstance(v, str) and _FRACTION.search(v) is not None).to_numpy(dtype=bool)


def _dates(s: pd.Series) -> np.ndarray:
    """[n] entries that look like an ISO 8601 date/datetime, or are date/datetime objects."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if isinstance(s.dtype, pd.StringDtype):
        return s.str.fullmatch(_ISO_DATETIME).to_numpy(dtype=bool, na_value=False)
    if s.dtype != object:
        return np.zeros(len(s), dtype=bool)
    pattern = re.compile(_ISO_DATETIME)
    return s.map(
        lambda v: (
            (isinstance(v, str) and pattern.fullmatch(v) is not None)
            or isinstance(v, (datetime.date, np.datetime64))
        )
    ).to_numpy(dtype=bool)


def _epoch_seconds(times: pd.Series) -> np.ndarray:
    """Datetimes (naive = UTC, or zoned) -> int64 seconds since 1970-01-01 UTC, floored."""
    times = pd.to_datetime(times, utc=True).dt.floor("s").dt.tz_convert(None)
    return times.to_numpy().astype("datetime64[s]").astype(np.int64)


def _exact_floor(v: Any) -> int | None:
    """The integer at or below the number `v` (an int, a float or numeric text), exactly (from
    the text, never through a float); None if it is not a finite number."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return math.floor(v) if math.isfinite(v) else None
    if not isinstance(v, str):
        return None
    try:
        d = decimal.Decimal(v.strip())
    except decimal.InvalidOperation:
        return None
    return int(d.to_integral_value(rounding=decimal.ROUND_FLOOR)) if d.is_finite() else None


def _too_many(field_error: str) -> str:
    return "too many fields: " + field_error.split(" (")[0]


def _empty_error(path: Path) -> DataError:
    return DataError(f"{path}:1: empty file: no interactions")


def _check_exists(path: Path) -> Path:
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file (data.path / --path names the file itself)")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise _empty_error(path)
    return path


# --------------------------------------------------------------------------------------------
# Interactions with integer ids
# --------------------------------------------------------------------------------------------


@dataclass
class Interactions:
    """Interactions in file order with their ids as integer codes: `user_ids[user[i]]` is row
    i's raw user id. Codes number the distinct ids by first appearance, exactly as
    `pd.factorize(ids, sort=False)` numbers them; prepare filters and remaps these codes, so
    it never needs the raw ids of every row — only the distinct ones, for its id maps."""

    user: np.ndarray  # int64 [n]: codes into user_ids
    item: np.ndarray  # int64 [n]: codes into item_ids
    rating: np.ndarray  # float64 [n]
    timestamp: np.ndarray  # int64 [n]
    user_ids: pd.Index  # the distinct raw user ids, by first appearance
    item_ids: pd.Index
    bad_rows: int = 0
    first_bad_row: str | None = None  # `<file>:<line>: <what>` of the first bad row

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Interactions:
        """Code a reader's frame (user, item, rating, timestamp; attrs bad_rows, first_bad_row)."""
        user, user_ids = pd.factorize(df["user"], sort=False)
        item, item_ids = pd.factorize(df["item"], sort=False)
        return cls(
            user.astype(np.int64),
            item.astype(np.int64),
            df["rating"].to_numpy(np.float64),
            df["timestamp"].to_numpy(np.int64),
            user_ids,
            item_ids,
            int(df.attrs.get("bad_rows", 0)),
            df.attrs.get("first_bad_row"),
        )

    def to_frame(self) -> pd.DataFrame:
        """The readers' frame: raw ids, rows in file order, attrs bad_rows and first_bad_row."""
        df = pd.DataFrame(
            {
                "user": self.user_ids.take(self.user),
                "item": self.item_ids.take(self.item),
                "rating": self.rating,
                "timestamp": self.timestamp,
            }
        )
        df.attrs.update(bad_rows=self.bad_rows, first_bad_row=self.first_bad_row)
        return df


class IdCoder:
    """Integer codes for string ids that arrive chunk by chunk: each distinct id gets the next
    code at its first appearance, so the codes of all chunks together equal
    `pd.factorize(all ids, sort=False)`'s. Only the distinct ids are kept (as one Arrow string
    array); each chunk is looked up against them in Arrow's C++ hash lookup."""

    def __init__(self) -> None:
        self._known = pa.array([], pa.large_string())

    def encode(self, ids: pd.Series) -> np.ndarray:
        """int64 codes [n] of `ids` (strings, no nulls), numbering the new ones as they come."""
        codes, uniques = pd.factorize(ids, sort=False)
        distinct = pa.array(uniques, pa.large_string())
        found = pc.fill_null(pc.index_in(distinct, value_set=self._known), -1).to_numpy()
        found = found.astype(np.int64)
        new = found < 0
        found[new] = len(self._known) + np.arange(np.count_nonzero(new))
        if new.any():
            self._known = pa.concat_arrays([self._known, distinct.filter(pa.array(new))])
        return found[codes]

    def ids(self) -> pd.Index:
        """The distinct ids, by code (str dtype, as `pd.factorize` returns them)."""
        return pd.Index(pd.array(self._known, dtype="str"))


class _Kept:
    """What a streamed read holds between chunks: the good rows' codes, ratings and timestamps,
    the distinct ids, the count of bad rows and the first of them."""

    def __init__(self) -> None:
        self.users, self.items = IdCoder(), IdCoder()
        self.parts: dict[str, list[np.ndarray]] = {col: [] for col in COLUMNS}
        self.bad_rows = 0
        self.first: tuple[int, str] | None = None

    def add(self, checked: _Checked) -> None:
        frame = checked.frame
        self.parts["user"].append(self.users.encode(frame["user"]))
        self.parts["item"].append(self.items.encode(frame["item"]))
        self.parts["rating"].append(frame["rating"].to_numpy(np.float64))
        self.parts["timestamp"].append(frame["timestamp"].to_numpy(np.int64))
        self.bad_rows += checked.bad_rows
        if checked.first is not None and (self.first is None or checked.first[0] < self.first[0]):
            self.first = checked.first

    def result(self, path: Path, on_bad_rows: OnBadRows) -> Interactions:
        """The whole file's verdict (`_raise_if_fatal`), then its interactions."""
        rows = sum(len(part) for part in self.parts["user"])
        _raise_if_fatal(path, self.first, rows > 0, on_bad_rows)
        dtypes = {"user": np.int64, "item": np.int64, "rating": np.float64, "timestamp": np.int64}
        columns = {}
        for col, dtype in dtypes.items():  # one column at a time: its parts go as it is joined
            columns[col] = np.concatenate(self.parts.pop(col)).astype(dtype, copy=False)
        return Interactions(
            **columns,
            user_ids=self.users.ids(),
            item_ids=self.items.ids(),
            bad_rows=self.bad_rows,
            first_bad_row=_where(path, self.first),
        )


# --------------------------------------------------------------------------------------------
# Delimited text, read in chunks
# --------------------------------------------------------------------------------------------

# Rows parsed, checked and coded at a time: bounds the raw text held to one chunk's. A multiple
# of the C parser's own batch (a power of two, at most 2**18 rows for two columns or more), so
# its batches fall where they fall in a whole-file read.
CHUNK_ROWS = 1 << 20
_LINE_BREAK = r"\r\n|\r|\n"
_SPARE = "_unigrf_spare_"  # columns past the last, to hold a too-long row's extra fields
_SKIP_RE = re.compile(r"Skipping line (\d+)")
_SPANNING = "; or a quoted field spanning lines"


class _NotTyped(Exception):
    """The typed parse (the fast path) failed on a chunk: the file is read again as text."""


@dataclass(frozen=True)
class _Layout:
    """How the columns of a delimited file's chunks become rows (`_collect`)."""

    fields: dict[str, str]  # user/item/rating/timestamp -> the column holding it
    offset: int  # the line of the first row (2 after a header)
    quoted: bool  # the file may hold quoted fields spanning lines
    must_be_empty: tuple[str, ...]  # columns a one-character split of `::` leaves empty
    field_error: str  # the message of a row with a wrong separator or a missing field


def _read_delimited(
    path: Path,
    sep: str,
    names: list[str],
    fields: dict[str, str],
    header: bool,
    rating_scale: tuple[float, float],
    on_bad_rows: OnBadRows,
    quoting: int = csv.QUOTE_NONE,
    must_be_empty: tuple[str, ...] = (),
    sep_name: str | None = None,
) -> Interactions:
    """Parse a delimited file whose columns are `names` (`fields` maps user/item/... to them),
    `CHUNK_ROWS` rows at a time: each chunk is checked and its ids coded (`_Kept`), so what is
    held between chunks is four numeric columns and the distinct ids, not the raw text.

    The result is the one a whole-file read gives, number for number: every chunk is first
    parsed typed (the fast path); if any chunk fails so, the whole file is read again as text
    (the slow path), as a whole-file read would; line numbers and the first bad row are counted
    across chunks (`_LineNumbers`), and a bad row is fatal only once the whole file was read.

    `must_be_empty` columns exist only because a two-character separator was read as two
    one-character ones (`::` -> `:` + empty field + `:`); anything in them is a wrong separator.

    Rows with too many fields: pandas fails on them (fast path), except when the *first* row
    is the long one — then it silently cuts that row and every later one to the column count.
    The slow path therefore reads spare columns past the last (at least as many as the first
    rows need): a value in one marks a row with too many fields, and rows longer still are
    reported by pandas' skip warnings. Bytes that are not UTF-8 are read as U+FFFD, so the row
    holding them is a bad row (not an exception from the decoder). With quoting, a quoted field
    may hold a line break: such a row is a bad row, and the lines after it are counted right.
    """
    _check_exists(path)
    sep_name = sep_name or {"\t": "TAB"}.get(sep, repr(sep))
    field_error = f"expected {len(fields)} fields separated by {sep_name} (wrong separator or missing field?)"
    kwargs: dict[str, Any] = dict(
        # pandas reads a longer separator as a regular expression: keep it literal
        sep=sep if len(sep) == 1 else re.escape(sep),
        engine="c" if len(sep) == 1 else "python",
        index_col=False,
        skip_blank_lines=False,  # keeps row i <-> line i (+ header): blank rows are dropped later
        keep_default_na=False,
        na_values=[""],
        quoting=quoting,
        encoding="utf-8",
        encoding_errors="replace",
    )
    offset = 2 if header else 1  # row 0 is on line `offset`
    if header:  # check the header first: pandas' own errors name neither file nor line
        names = _header(path, fields, field_error, kwargs)
    # the header (already read) is skipped, not parsed: pandas refuses more names than it has
    kwargs.update(header=None, skiprows=[0] if header else None, names=names)
    quoted = quoting != csv.QUOTE_NONE and _has_quote(path)  # only a quoted field can span lines
    layout = _Layout(fields, offset, quoted, must_be_empty, field_error)
    try:
        return _collect(path, _typed_chunks(path, kwargs, fields, quoted), layout, rating_scale, on_bad_rows)
    except _NotTyped:
        pass
    widest = _widest_first_rows(path, sep, quoting, 2 if header else 1)
    spare = [f"{_SPARE}{j}" for j in range(max(2, widest - len(names)))]
    kwargs["names"] = [*names, *spare]
    chunks = _text_chunks(path, kwargs, spare, offset, field_error)
    return _collect(path, chunks, layout, rating_scale, on_bad_rows)


def _header(path: Path, fields: dict[str, str], field_error: str, kwargs: dict[str, Any]) -> list[str]:
    """The header's column names, checked to hold every field once."""
    try:
        names = [str(c) for c in pd.read_csv(path, nrows=0, header=0, **kwargs).columns]
    except pd.errors.EmptyDataError:
        raise _empty_error(path) from None
    except pd.errors.ParserError as err:
        raise _parser_error(path, err, 1, field_error) from None
    missing = [c for c in fields.values() if c not in names]
    if missing:
        raise DataError(
            f"{path}:1: header lacks column(s) {', '.join(map(repr, missing))} "
            f"(found {', '.join(map(repr, names))})"
        )
    if len(set(names)) != len(names):
        twice = sorted({c for c in names if names.count(c) > 1})
        raise DataError(f"{path}:1: header names column(s) {', '.join(map(repr, twice))} twice")
    return names


def _collect(
    path: Path,
    chunks: Iterator[tuple[pd.DataFrame, list[int], np.ndarray]],
    layout: _Layout,
    rating_scale: tuple[float, float],
    on_bad_rows: OnBadRows,
) -> Interactions:
    """Check and code `chunks` ((columns as parsed, lines pandas dropped, too-long flags) each)
    into the file's interactions, numbering their lines as one whole-file read would."""
    lines = _LineNumbers(layout.offset)
    kept = _Kept()
    spanning = False  # a quoted field spans lines somewhere in the file
    for raw, skipped, too_long in chunks:
        breaks = _breaks_in(raw, list(raw.columns)) if layout.quoted else np.zeros(len(raw), dtype=np.int64)
        row_lines = lines.place(len(raw), skipped, breaks)
        # a wrong separator: a value where `::` read as `:` leaves an empty field, or a row
        # holding a line break (a quoted field spanning lines)
        extra_bad = raw[list(layout.must_be_empty)].notna().to_numpy().any(axis=1) | (breaks > 0)
        spanning |= bool(breaks.any())
        frame = pd.DataFrame({col: raw[name] for col, name in layout.fields.items()})
        dropped = [(line, _too_many(layout.field_error)) for line in skipped]
        field_error = layout.field_error
        kept.add(
            _check(path, frame, row_lines, rating_scale, field_error, extra_bad, dropped, too_long=too_long)
        )
    if spanning:
        kept.first = _note_spanning(kept.first, layout.field_error)
    return kept.result(path, on_bad_rows)


def _note_spanning(first: tuple[int, str] | None, field_error: str) -> tuple[int, str] | None:
    """A file with a quoted field spanning lines adds that cause to its field-count message
    (wherever in the file the first such row is): the first bad row's, if it has that one."""
    if first is not None and first[1] == field_error:
        return first[0], field_error + _SPANNING
    return first


class _LineNumbers:
    """The file lines of the rows of consecutive chunks, numbered as a whole-file read numbers
    them: rows take the lines from the first data line on, less those pandas dropped (too many
    fields: `skipped`, reported with the chunk whose read met them, never behind a row already
    placed); a quoted field spanning k lines moves every later row down by k."""

    def __init__(self, offset: int) -> None:
        self._next = offset  # the next line a row may take
        self._skipped = np.empty(0, dtype=np.int64)  # dropped lines at or past `_next`
        self._shift = 0  # line breaks inside the quoted fields of the rows placed so far

    def place(self, n: int, skipped: list[int], breaks: np.ndarray) -> np.ndarray:
        """The lines [n] of the chunk's `n` rows; `breaks` [n]: line breaks inside each row."""
        pending = np.union1d(self._skipped, np.asarray(skipped, dtype=np.int64))
        free = np.arange(self._next, self._next + n + len(pending), dtype=np.int64)
        rows = np.setdiff1d(free, pending, assume_unique=True)[:n]
        if n:
            self._next = int(rows[-1]) + 1
        self._skipped = pending[pending >= self._next]
        if not breaks.any():
            return rows + self._shift
        lines = rows + self._shift + np.concatenate([[0], np.cumsum(breaks)[:-1]])
        self._shift += int(breaks.sum())
        return lines


def _chunks_of(
    open_reader: Callable[[], Any], errors: Callable[[], contextlib.AbstractContextManager]
) -> Iterator[tuple[pd.DataFrame | None, list[str]]]:
    """(chunk, warning messages) from the pandas chunked reader `open_reader()` opens; pandas
    may warn of skipped lines while finding there is no further chunk: those come last, with
    None. Exceptions of opening or reading pass through `errors()` (a context manager)."""
    with errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        reader = open_reader()
    messages = [str(w.message) for w in caught]
    with reader:
        while True:
            with errors(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                chunk = next(reader, None)
            messages += [str(w.message) for w in caught]
            if chunk is None:
                if messages:
                    yield None, messages
                return
            yield chunk, messages
            messages = []


def _typed_chunks(
    path: Path, kwargs: dict[str, Any], fields: dict[str, str], quoted: bool
) -> Iterator[tuple[pd.DataFrame, list[int], np.ndarray]]:
    """The fast path: chunks parsed straight into the final dtypes. Raises `_NotTyped` at the
    first chunk that does not parse so (a bad value, a pandas warning, a rounded huge time, a
    quoted id spanning lines): the file then goes the slow way whole, as a whole-file read does."""
    typed: dict[Any, Any] = defaultdict(lambda: str)  # ids, unused columns: strings
    # timestamps: int64 from the C engine, which refuses (slow path) or exactly casts what is
    # not an integer; the Python engine (a longer separator) would truncate `1.5` to 1 silently,
    # so there they are read as text and converted by `_timestamps`
    c_engine = kwargs["engine"] == "c"
    typed.update({fields["rating"]: np.float64, fields["timestamp"]: np.int64 if c_engine else str})

    @contextlib.contextmanager
    def errors() -> Iterator[None]:
        try:
            yield
        except pd.errors.EmptyDataError:
            raise _empty_error(path) from None
        except OSError as err:
            raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
        except (ValueError, TypeError, OverflowError):  # ParserError is a ValueError too
            raise _NotTyped from None

    def open_reader():
        return pd.read_csv(path, dtype=typed, chunksize=CHUNK_ROWS, **kwargs)

    texts = _TimeTexts(path, fields["timestamp"], kwargs)
    with contextlib.closing(texts):
        for k, (raw, messages) in enumerate(_chunks_of(open_reader, errors)):
            if messages:  # e.g. the first row cut to the column count: the slow path looks closer
                raise _NotTyped
            with errors():
                if c_engine and _rounded_huge_times(raw[fields["timestamp"]], lambda k=k: texts.chunk(k)):
                    raise _NotTyped  # the slow path floors them from their text, exactly
            if quoted and _breaks_in(raw, [fields["user"], fields["item"]]).any():
                raise _NotTyped  # a quoted id spans lines: the slow path counts the lines right
            yield raw, [], np.zeros(len(raw), dtype=bool)


def _text_chunks(
    path: Path, kwargs: dict[str, Any], spare: list[str], offset: int, field_error: str
) -> Iterator[tuple[pd.DataFrame, list[int], np.ndarray]]:
    """The slow path: chunks with every column as strings, bad rows to be located vectorised
    (`_check`). A row with a value in a `spare` column has too many fields; pandas drops rows
    longer still and names their lines in its warnings."""

    @contextlib.contextmanager
    def errors() -> Iterator[None]:
        try:
            yield
        except pd.errors.EmptyDataError:
            raise _empty_error(path) from None
        except pd.errors.ParserError as err:
            raise _parser_error(path, err, offset, field_error) from None

    def open_reader():
        return pd.read_csv(path, dtype=str, on_bad_lines="warn", chunksize=CHUNK_ROWS, **kwargs)

    empty = pd.DataFrame({name: pd.Series(dtype=str) for name in kwargs["names"]})
    for raw, messages in _chunks_of(open_reader, errors):
        raw = empty if raw is None else raw
        skipped = sorted(int(x) for message in messages for x in _SKIP_RE.findall(message))
        yield raw, skipped, raw[spare].notna().to_numpy(dtype=bool).any(axis=1)


class _TimeTexts:
    """The timestamp column of the fast path's chunks as text, for `_rounded_huge_times`: read
    by a second chunked reader of the same file, opened only when a chunk holds a huge time."""

    def __init__(self, path: Path, column: str, kwargs: dict[str, Any]) -> None:
        self._path, self._column, self._kwargs = path, column, kwargs
        self._reader: Any = None
        self._read = 0  # chunks read so far

    def chunk(self, k: int) -> pd.Series:
        """Chunk `k`'s timestamps as text (`k` never below a chunk already asked for)."""
        if self._reader is None:
            self._reader = pd.read_csv(
                self._path, usecols=[self._column], dtype=str, chunksize=CHUNK_ROWS, **self._kwargs
            )
        while True:
            text = next(self._reader)[self._column]
            self._read += 1
            if self._read > k:
                return text

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def _rounded_huge_times(times: pd.Series, text: Callable[[], pd.Series]) -> bool:
    """Whether pandas' typed parse may have rounded a timestamp: a number it cannot read as an
    int64 (written with a point or an exponent, or just past int64) becomes a float64, cast to
    int64 whenever the float is integral — which every float beyond 2**53 is
    (`1700000000123456789.7` -> ...768, `-9223372036854775809` -> -2**63). Only chunks holding
    such large times pay for the check: their timestamps as text (`text()`) compared."""
    values = times.to_numpy(dtype=np.int64)
    big = (values >= 2**53) | (values <= -(2**53))
    if not big.any():
        return False
    written = text()
    return bool(
        (written[big].str.strip().to_numpy(dtype=object) != values[big].astype(str).astype(object)).any()
    )


def _widest_first_rows(path: Path, sep: str, quoting: int, n: int) -> int:
    """The most fields in the first `n` lines (as pandas will split them)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        first = [line.rstrip("\r\n") for line in itertools.islice(fh, n)]
    if quoting == csv.QUOTE_NONE or len(sep) > 1:
        return max((len(line.split(sep)) for line in first), default=0)
    return max((len(next(csv.reader([line], delimiter=sep), [])) for line in first), default=0)


def _has_quote(path: Path, chunk: int = 1 << 20) -> bool:
    """Whether the file holds a `"` at all (read in 1 MiB chunks; stops at the first)."""
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if b'"' in block:
                return True
    return False


def _breaks_in(raw: pd.DataFrame, columns: list[Any]) -> np.ndarray:
    """Line breaks inside the fields of each row [n] (only quoted fields can hold them)."""
    counts = np.zeros(len(raw), dtype=np.int64)
    for col in columns:
        if isinstance(raw[col].dtype, pd.StringDtype):  # the slow path reads strings only
            counts += raw[col].str.count(_LINE_BREAK).to_numpy(dtype=np.int64, na_value=0)
    return counts


def _parser_error(path: Path, err: Exception, offset: int, field_error: str) -> DataError:
    """pandas' tokenizer errors as `DataError`s naming the line."""
    text = str(err)
    quote = re.search(r"EOF inside string starting at row (\d+)", text)
    if quote:
        return DataError(
            f'{path}:{int(quote.group(1)) + offset}: unterminated quote (a field opened with " never closes)'
        )
    match = re.search(r"line (\d+)", text)
    if match and "fields" in text:
        return DataError(f"{path}:{match.group(1)}: {_too_many(field_error)}")
    line = f":{match.group(1)}" if match else ""
    return DataError(f"{path}{line}: cannot parse ({text.splitlines()[-1].strip()})")


def read_ml100k(
    path: str | Path, rating_scale: tuple[float, float] = (1.0, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """MovieLens-100K `u.data`: `user TAB item TAB rating TAB timestamp`, no header."""
    return _ml100k(Path(path), rating_scale, on_bad_rows).to_frame()


def _ml100k(path: Path, rating_scale: tuple[float, float], on_bad_rows: OnBadRows) -> Interactions:
    names = list(COLUMNS)
    return _read_delimited(path, "\t", names, dict(zip(COLUMNS, names)), False, rating_scale, on_bad_rows)


def read_ml1m(
    path: str | Path, rating_scale: tuple[float, float] = (1.0, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """MovieLens-1M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header.

    pandas' C engine takes one-character separators only, so `::` is read as `:` and the
    empty fields between the two colons are checked to be empty. A file that does not read so
    (a bad row, or a timestamp holding colons: `2000-07-12T10:20:30`) is read again with `::`
    itself as the separator (pandas' Python engine, slower), which also names its bad rows.
    """
    return _ml1m(Path(path), rating_scale, on_bad_rows).to_frame()


def _ml1m(path: Path, rating_scale: tuple[float, float], on_bad_rows: OnBadRows) -> Interactions:
    fields = dict(zip(COLUMNS, COLUMNS))
    try:
        return _read_delimited(
            path,
            ":",
            ["user", "_s1", "item", "_s2", "rating", "_s3", "timestamp"],
            fields,
            False,
            rating_scale,
            "error",
            must_be_empty=("_s1", "_s2", "_s3"),
            sep_name="'::'",
        )
    except DataError:
        return _read_delimited(path, "::", list(COLUMNS), fields, False, rating_scale, on_bad_rows)


def read_ml20m(
    path: str | Path, rating_scale: tuple[float, float] = (0.5, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """MovieLens-20M / latest `ratings.csv`: header `userId,movieId,rating,timestamp`, half stars."""
    return _ml20m(Path(path), rating_scale, on_bad_rows).to_frame()


def _ml20m(path: Path, rating_scale: tuple[float, float], on_bad_rows: OnBadRows) -> Interactions:
    _check_exists(path)
    with open(path, encoding="utf-8-sig", errors="replace") as fh:  # pandas skips a BOM too
        first = fh.readline().strip()
    if tuple(first.split(",")) != ML20M_HEADER:
        raise DataError(f"{path}:1: expected the header {','.join(ML20M_HEADER)!r}, found {first!r}")
    fields = dict(zip(COLUMNS, ML20M_HEADER))
    return _read_delimited(path, ",", list(ML20M_HEADER), fields, True, rating_scale, on_bad_rows)


def read_amazon_ratings(
    path: str | Path, rating_scale: tuple[float, float] = (1.0, 5.0), on_bad_rows: OnBadRows = "error"
) -> pd.DataFrame:
    """Amazon ratings-only CSV (e.g. SNAP `ratings_Books.csv`): `user,item,rating,timestamp`, no header."""
    return _amazon_ratings(Path(path), rating_scale, on_bad_rows).to_frame()


def _amazon_ratings(path: Path, rating_scale: tuple[float, float], on_bad_rows: OnBadRows) -> Interactions:
    names = list(COLUMNS)
    return _read_delimited(path, ",", names, dict(zip(COLUMNS, names)), False, rating_scale, on_bad_rows)


def read_table(
    path: str | Path,
    columns: ColumnsConfig = ColumnsConfig(),  # noqa: B008 - frozen dataclass, safe default
    rating_scale: tuple[float, float] = (1.0, 5.0),
    on_bad_rows: OnBadRows = "error",
    fmt: Literal["csv", "parquet"] | None = None,
) -> pd.DataFrame:
    """Any CSV or Parquet file (`fmt`; default: Parquet for a `.parquet`/`.pq` suffix) with a
    column mapping.

    The mapping (`ColumnsConfig`) holds header names or 0-based column positions: an integer
    is a position in every case (the header's or the Parquet schema's j-th column); without a
    header, text of digits (`"2"`) is a position too, and a field left at its default name
    takes its default place (user 0, item 1, rating 2, timestamp 3). Without a header any other
    name is an error, as is a position past the header's or the schema's columns.
    Parquet rows are numbered from 1 in error messages.
    """
    path = Path(path)
    if _is_parquet(path, fmt):
        mapping = {c: getattr(columns, c) for c in COLUMNS}
        return _read_parquet(path, mapping, rating_scale, on_bad_rows)
    return _csv_table(path, columns, rating_scale, on_bad_rows).to_frame()


def _is_parquet(path: Path, fmt: str | None) -> bool:
    return fmt == "parquet" or (fmt is None and path.suffix.lower() in (".parquet", ".pq"))


def _csv_table(
    path: Path, columns: ColumnsConfig, rating_scale: tuple[float, float], on_bad_rows: OnBadRows
) -> Interactions:
    """`read_table` of a delimited text file."""
    mapping = {c: getattr(columns, c) for c in COLUMNS}
    if columns.header:
        header = (
            _header_names(path, columns.sep) if any(isinstance(v, int) for v in mapping.values()) else None
        )
        fields = {c: _named(path, c, v, header) for c, v in mapping.items()}
        names = list(dict.fromkeys(fields.values()))
    else:
        positions = {c: _position(path, c, v) for c, v in mapping.items()}
        names = [f"_c{j}" for j in range(max(positions.values()) + 1)]
        fields = {c: f"_c{p}" for c, p in positions.items()}
    shared = [c for c in COLUMNS if list(fields.values()).count(fields[c]) > 1]
    if shared:
        raise DataError(
            f"{path}: data.columns.{shared[0]} and data.columns.{shared[1]} read the same column "
            f"({mapping[shared[0]]!r} and {mapping[shared[1]]!r})"
        )
    quoting = csv.QUOTE_MINIMAL  # generic CSVs may quote ids
    return _read_delimited(
        path, columns.sep, names, fields, columns.header, rating_scale, on_bad_rows, quoting
    )


def _position(path: Path, field: str, value: str | int) -> int:
    """A headerless file's column of `field`: an integer or digits, or its default place."""
    if isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    if value == field:  # left at its default name
        return COLUMNS.index(field)
    raise DataError(
        f"{path}: data.columns.{field} is the name {value!r}, but the file has no header "
        f"(data.columns.header false): give its 0-based position, e.g. data.columns.{field}=2"
    )


def _header_names(path: Path, sep: str) -> list[str] | None:
    """The header's column names (as `_read_delimited` splits them), or None if unreadable
    (`_read_delimited` then says why)."""
    _check_exists(path)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        first = fh.readline().rstrip("\r\n")
    if len(sep) > 1:
        return first.split(sep)
    return next(csv.reader([first], delimiter=sep), [])


def _named(path: Path, field: str, value: str | int, names: list[str] | None) -> str:
    """The header column `field` reads: `value` itself, or the name at position `value`."""
    if not isinstance(value, int):
        return value
    if names is None or value >= len(names):
        width = 0 if names is None else len(names)
        raise DataError(
            f"{path}:1: data.columns.{field} is column {value}, but the header has {width} column(s)"
        )
    return names[value]


def _read_parquet(
    path: Path, mapping: dict[str, str | int], rating_scale: tuple[float, float], on_bad_rows: OnBadRows
) -> pd.DataFrame:
    _check_exists(path)
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise DataError(f"{path}:1: not a Parquet file ({err})") from None
    mapping = {c: _named(path, c, v, schema.names) for c, v in mapping.items()}
    missing = [c for c in mapping.values() if c not in schema.names]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(map(repr, missing))} (found {schema.names})")
    try:  # nullable dtypes: an integer column with nulls stays exact (not float64)
        raw = pd.read_parquet(
            path, columns=list(dict.fromkeys(mapping.values())), dtype_backend="numpy_nullable"
        )
    except Exception as err:  # noqa: BLE001 - a damaged data page: pyarrow's OSError / ArrowInvalid
        raise DataError(f"{path}: cannot read ({err})") from None
    if len(raw) == 0:
        raise _empty_error(path)
    frame = pd.DataFrame({col: raw[name] for col, name in mapping.items()})
    lines = np.arange(1, len(frame) + 1, dtype=np.int64)
    return _validate(
        path, frame, lines, rating_scale, on_bad_rows, "missing field (null value)", blank_lines=False
    )


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
                with warnings.catch_warnings():  # e.g. `[1, 2]` lines: pandas warns, the slow path says why
                    warnings.simplefilter("ignore")
                    raw = pd.read_json(
                        io.StringIO("".join(texts)),
                        lines=True,
                        dtype=False,
                        precise_float=True,  # the same floats as json.loads on the slow path
                    )
                if len(raw) != len(texts):
                    raise ValueError("row count mismatch")
                if not all(text.lstrip().startswith("{") for text in texts):  # e.g. `null`, `5`
                    raise ValueError("a line that is not a JSON object")
                times = raw.get(JSON_FIELDS["timestamp"])
                if (
                    times is not None
                    and pd.api.types.is_float_dtype(times.dtype)
                    and (times.abs() >= 2**53).any()
                ):
                    raise ValueError("huge integers read as floats: json.loads keeps them exact")
            except (ValueError, TypeError, OverflowError):  # locate the malformed lines one by one
                records, ok = [], []
                for text, line in zip(texts, numbers):
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        obj = None
                    if not isinstance(obj, dict):
                        skipped.append(int(line))
                        continue
                    records.append({name: obj.get(name) for name in JSON_FIELDS.values()})
                    ok.append(line)
                # object columns: Python's exact ints stay exact (an int column with a null
                # would become float64)
                raw = pd.DataFrame(
                    {
                        name: pd.Series([r[name] for r in records], dtype=object)
                        for name in JSON_FIELDS.values()
                    }
                )
                numbers = np.asarray(ok, dtype=np.int64)
            frame = pd.DataFrame(
                {
                    col: raw[name] if name in raw.columns else pd.Series(np.nan, index=raw.index)
                    for col, name in JSON_FIELDS.items()
                }
            )
            frames.append(frame)
            line_arrays.append(numbers)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if not frames:
        if skipped:
            raise DataError(f"{path}:{skipped[0]}: not a JSON object (and no valid row in the file)")
        raise _empty_error(path)
    raw = pd.concat(frames, ignore_index=True)
    lines = np.concatenate(line_arrays)
    field_error = "missing field (expected reviewerID, asin, overall, unixReviewTime)"
    dropped = [(line, "not a JSON object") for line in skipped]
    return _validate(
        path, raw, lines, rating_scale, on_bad_rows, field_error, dropped=dropped, blank_lines=False
    )


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
    if _streamed(cfg, path):
        return read_coded(cfg)[0].to_frame(), sources
    if cfg.dataset == "amazon-reviews":
        df = read_amazon_reviews(path, rating_scale=scale, on_bad_rows=cfg.on_bad_rows)
    else:
        df = read_table(path, cfg.columns, rating_scale=scale, on_bad_rows=cfg.on_bad_rows, fmt=cfg.dataset)
    return df, sources


# the delimited text formats, read in chunks with their ids coded (`read_coded`)
_CODED_READERS = {
    "ml-100k": _ml100k,
    "ml-1m": _ml1m,
    "movietweetings": _ml1m,  # `user::item::rating::timestamp`, the scale set by the config
    "ml-20m": _ml20m,
    "amazon-books": _amazon_ratings,
}


def _streamed(cfg: DataConfig, path: Path) -> bool:
    """Whether `cfg`'s dataset is delimited text, which `read_coded` reads in chunks."""
    return cfg.dataset in _CODED_READERS or (cfg.dataset == "csv" and not _is_parquet(path, cfg.dataset))


def read_coded(cfg: DataConfig) -> tuple[Interactions, list[Path]]:
    """Read the dataset `cfg` names with its ids as integer codes: (interactions in file
    order, source files). Delimited text is read `CHUNK_ROWS` rows at a time, so the raw rows
    are never all held at once; JSON, Parquet and the generator are read whole, then coded."""
    if cfg.dataset == "synthetic" or not _streamed(cfg, source_files(cfg)[0]):
        df, sources = read_interactions(cfg)
        return Interactions.from_frame(df), sources
    sources = source_files(cfg)
    scale = cfg.resolved_rating_scale()
    if cfg.dataset in _CODED_READERS:
        return _CODED_READERS[cfg.dataset](sources[0], scale, cfg.on_bad_rows), sources
    return _csv_table(sources[0], cfg.columns, scale, cfg.on_bad_rows), sources
