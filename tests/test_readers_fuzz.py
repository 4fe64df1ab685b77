"""Property-based fuzzing of every raw-file reader (hypothesis).

Two properties per reader, each over many generated files:

- *structured*: files built line by line from good rows (known values; duplicates and blank
  lines included; timestamps written as integers, integral floats, fractions, ISO 8601 dates
  and datetimes with and without a zone, each with its expected int64 by the documented rule)
  and bad rows of a known kind (wrong separator, missing or extra field, non-numeric or
  out-of-scale rating, a timestamp that is no number nor date or is out of range, bytes that
  are not UTF-8, a line that is not a JSON object, a null or wrongly typed field). With
  `on_bad_rows="error"` the reader must raise `DataError("<file>:<line>: <what>")` naming the
  first bad line and its field, or return exactly the good rows; with `"skip"` it must return
  exactly the good rows, in file order, and count every bad one.
- *chaos*: arbitrary bytes (random lines, separators, quotes, control characters, huge
  numbers, empty files). The reader must either return a frame that honours the reader
  contract (columns, dtypes, ratings in scale, non-empty ids) or raise a `DataError` that
  names the file (and a line within it); any other exception — a traceback from inside
  pandas, pyarrow or numpy — fails the test.

A sample of failing files also goes through `prepare_dataset`, which must raise the same
`DataError` and leave no cache entry under `<results>/data/`.

Example counts: `FUZZ_PROFILE=ci` (the default, deterministic) runs 500 structured + 500
chaos examples per reader (>= 1,000 each); `FUZZ_PROFILE=deep` runs 10x as many, randomised;
`FUZZ_PROFILE=smoke FUZZ_EXAMPLES=N` runs N of each, randomised and unshrunk (a quick local look).
docs/reliability.md lists the numbers.
"""

from __future__ import annotations

import datetime
import gzip
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from unigrf.config import ColumnsConfig, DataConfig
from unigrf.data.readers import (
    DataError,
    read_amazon_ratings,
    read_amazon_reviews,
    read_ml1m,
    read_ml20m,
    read_ml100k,
    read_table,
)

# examples per reader and property; the two properties together give >= 1,000 per reader
EXAMPLES = {"ci": 500, "deep": 5000, "smoke": int(os.environ.get("FUZZ_EXAMPLES", 50))}
PROFILE = os.environ.get("FUZZ_PROFILE", "ci")
for _name, _n in EXAMPLES.items():
    settings.register_profile(
        f"fuzz-{_name}",
        max_examples=_n,
        deadline=None,
        derandomize=_name == "ci",  # CI: the same examples every run (no flaky failures)
        database=None,  # write nothing into the repository
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        phases=[Phase.explicit, Phase.generate] if _name == "smoke" else list(Phase),
    )
FUZZ = settings.get_profile(f"fuzz-{PROFILE}")

INT64 = (-(2**63), 2**63 - 1)
ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


# --------------------------------------------------------------------------------------------
# Good rows: known values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    user: str
    item: str
    rating: float
    timestamp: int  # what the reader must return
    rating_text: str
    timestamp_text: str  # how the file writes it

    @property
    def plain_time(self) -> bool:
        """Written as the integer itself (JSON and Parquet then store an integer)."""
        return self.timestamp_text == str(self.timestamp)


def ids() -> st.SearchStrategy[str]:
    """Ids are opaque strings: digits, huge digit strings, letters, dots (never parsed)."""
    return st.one_of(
        st.integers(0, 10**6).map(str),
        st.integers(10**20, 10**30).map(str),  # beyond int64: kept exactly as text
        st.text(ID_CHARS, min_size=1, max_size=10),
    )


def ratings(scale: tuple[float, float]) -> st.SearchStrategy[tuple[float, str]]:
    lo, hi = scale
    halves = [x / 2 for x in range(int(lo * 2), int(hi * 2) + 1)]
    return st.one_of(
        st.sampled_from(halves).map(lambda r: (r, f"{r:g}")),
        st.sampled_from(halves).map(lambda r: (r, f"{r:.1f}")),
        st.integers(int(np.ceil(lo)), int(hi)).map(lambda r: (float(r), f"{r}e0")),
    )


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def integer_times() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 2_000_000_000), st.integers(*INT64), st.sampled_from(list(INT64)))


@st.composite
def fraction_times(draw) -> tuple[int, str]:
    """A number with a non-zero fraction, and its floor (computed on integers, exactly): up to
    15 significant digits (what a float64 holds; the rule's stated precision), or any fraction of
    a number beyond 2**53 (floored from its text)."""
    if draw(st.booleans()):
        whole = draw(st.integers(0, 2_000_000_000))
        digits = draw(st.text("0123456789", min_size=1, max_size=15 - len(str(whole))))
    else:
        whole = draw(st.integers(2**53, 2**63 - 2))
        digits = draw(st.one_of(st.text("0123456789", min_size=1, max_size=22), st.just("9" * 20)))
    assume(digits.strip("0"))
    negative = draw(st.booleans())
    return (-whole - 1 if negative else whole), f"{'-' if negative else ''}{whole}.{digits}"


@st.composite
def iso_times(draw) -> tuple[int, str]:
    """An ISO 8601 date or datetime (a zone or none: UTC), and its seconds since the epoch."""
    moment = draw(
        st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2100, 12, 31), allow_imaginary=False)
    )
    form = draw(st.sampled_from(["date", "minutes", "seconds", "fraction"]))
    if form == "date":
        moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return (moment.replace(tzinfo=datetime.UTC) - EPOCH) // datetime.timedelta(
            seconds=1
        ), moment.strftime("%Y-%m-%d")
    moment = moment.replace(second=0 if form == "minutes" else moment.second)
    moment = moment.replace(microsecond=moment.microsecond if form == "fraction" else 0)
    minutes = draw(st.integers(-14 * 60, 14 * 60))  # the zone's offset
    zone = datetime.timezone(datetime.timedelta(minutes=minutes))
    text = moment.strftime("%Y-%m-%d") + draw(st.sampled_from(["T", " "])) + moment.strftime("%H:%M")
    if form != "minutes":
        text += moment.strftime(":%S") + (f".{moment.microsecond:06d}" if form == "fraction" else "")
    written = draw(st.sampled_from(["", "Z", "colon", "compact"]))
    if written in ("", "Z"):
        zone = datetime.UTC
    else:
        sign, offset = ("-" if minutes < 0 else "+"), abs(minutes)
        text += f"{sign}{offset // 60:02d}" + (":" if written == "colon" else "") + f"{offset % 60:02d}"
    if written == "Z":
        text += "Z"
    seconds = (moment.replace(tzinfo=zone) - EPOCH) // datetime.timedelta(seconds=1)
    return seconds, text


def timestamps() -> st.SearchStrategy[tuple[int, str]]:
    """(the int64 a reader must return, the text a file holds): the documented rule
    (docs/reliability.md) — integers exactly (also as `x.0`), other numbers floored, ISO 8601
    dates and datetimes as seconds since 1970-01-01 UTC."""
    return st.one_of(
        integer_times().map(lambda t: (t, str(t))),
        integer_times().map(lambda t: (t, f"{t}.0")),
        fraction_times(),
        iso_times(),
    )


def good_rows(scale: tuple[float, float]) -> st.SearchStrategy[Row]:
    return st.builds(
        lambda u, i, r, t: Row(u, i, r[0], t[0], r[1], t[1]), ids(), ids(), ratings(scale), timestamps()
    )


# --------------------------------------------------------------------------------------------
# Bad rows: what is wrong and which field the error must name
# --------------------------------------------------------------------------------------------

NON_NUMERIC = ["five", "x", "4..5", "--1", "1.2.3", "0x5", "4-", "nan", "NaN"]
OUT_OF_SCALE = ["0", "-1", "6", "5.5", "1e300", "-1e300", "inf", "-inf", "1e400"]
BAD_TIMESTAMPS = [
    "abc",
    "12:30",
    str(2**63),
    str(-(2**63) - 1),
    str(10**30),
    f"{2**63}.5",
    f"-{2**63}.5",
    "inf",
    "nan",
    "1e400",
    "2000-13-01",  # no such month
    "2000-02-30",
    "2000-07-12T25:00",
    "2000-07-12T10:20:60",
    "2000-07",  # not a whole date
    "12/07/2000",
    "2000-07-12T10:20:30+25:00",
    "2000-07-12Z",  # a zone needs a time
]


@dataclass(frozen=True)
class Bad:
    fields: list[str] | None  # the row's fields (delimited formats), or
    raw: bytes | None = None  # the whole line as bytes
    what: str = ""  # a fragment the error message must hold (the field or the problem)


# --------------------------------------------------------------------------------------------
# The formats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delimited:
    """A delimited text format: how a row is written and what the reader needs."""

    name: str
    filename: str
    sep: str
    scale: tuple[float, float]
    read: Callable[[Path, str], pd.DataFrame]
    header: str | None = None
    # field order: a permutation of user/item/rating/timestamp plus unused columns ("extra")
    order: tuple[str, ...] = ("user", "item", "rating", "timestamp")
    wrong_seps: tuple[str, ...] = (",", ";", " ", "|", "\t", "::")

    def fields(self, row: Row) -> list[str]:
        values = {
            "user": row.user,
            "item": row.item,
            "rating": row.rating_text,
            "timestamp": row.timestamp_text,
            "extra": "x",
        }
        return [values[c] for c in self.order]

    def line(self, fields: list[str]) -> bytes:
        return self.sep.join(fields).encode()


def _ml(name, filename, sep, read, **kw) -> Delimited:
    return Delimited(name, filename, sep, (1.0, 5.0), read, **kw)


TABLE_COLUMNS = ColumnsConfig(user="uid", item="iid", rating="stars", timestamp="ts", sep=";", header=True)
POSITIONS = ColumnsConfig(user="1", item="3", rating="4", timestamp="0", sep="|", header=False)

DELIMITED = [
    _ml("ml-100k", "u.data", "\t", lambda p, m: read_ml100k(p, on_bad_rows=m)),
    _ml("ml-1m", "ratings.dat", "::", lambda p, m: read_ml1m(p, on_bad_rows=m)),
    Delimited(
        "ml-20m",
        "ratings.csv",
        ",",
        (0.5, 5.0),
        lambda p, m: read_ml20m(p, on_bad_rows=m),
        header="userId,movieId,rating,timestamp",
    ),
    _ml("amazon-books", "ratings_Books.csv", ",", lambda p, m: read_amazon_ratings(p, on_bad_rows=m)),
    _ml(
        "csv-header",
        "log.csv",
        ";",
        lambda p, m: read_table(p, TABLE_COLUMNS, on_bad_rows=m),
        header="ts;uid;extra;iid;stars",
        order=("timestamp", "user", "extra", "item", "rating"),
    ),
    _ml(
        "csv-positions",
        "log.txt",
        "|",
        lambda p, m: read_table(p, POSITIONS, on_bad_rows=m),
        order=("timestamp", "user", "extra", "item", "rating"),
    ),
]


BadMaker = Callable[[Callable, Row], Bad]  # (draw, a good row) -> a bad row made from it


def mutations(options: list[tuple[list, Callable[[Row, object], Bad]]]) -> BadMaker:
    """A BadMaker choosing one of `options` ([(values, make(row, value))]) and one of its
    values; the strategies are built once, not per example (hypothesis is faster so)."""
    which = st.integers(0, len(options) - 1)
    values = [st.sampled_from(v) for v, _ in options]

    def make(draw, row: Row) -> Bad:
        j = draw(which)
        return options[j][1](row, draw(values[j]))

    return make


@cache
def bad_delimited(fmt: Delimited) -> BadMaker:
    pos = {c: i for i, c in enumerate(fmt.order)}

    def replace(row: Row, col: str, value: str) -> list[str]:
        out = fmt.fields(row)
        out[pos[col]] = value
        return out

    wrong = [s for s in fmt.wrong_seps if s != fmt.sep and not (fmt.sep == "::" and s == ":")]

    def plain(values: list[str]) -> list[str]:  # a token holding the separator splits the row
        return [v for v in values if fmt.sep[0] not in v]

    return mutations(
        [
            (wrong, lambda r, s: Bad(None, s.join(fmt.fields(r)).encode(), "fields")),
            ([None], lambda r, _: Bad(fmt.fields(r)[:-1], what="fields")),  # the last field missing
            ([None], lambda r, _: Bad([*fmt.fields(r), "7"], what="fields")),  # one field too many
            (plain(NON_NUMERIC), lambda r, v: Bad(replace(r, "rating", v), what="rating")),
            ([""], lambda r, v: Bad(replace(r, "rating", v), what="field")),  # an empty field
            (OUT_OF_SCALE, lambda r, v: Bad(replace(r, "rating", v), what="rating")),
            (plain(BAD_TIMESTAMPS), lambda r, v: Bad(replace(r, "timestamp", v), what="timestamp")),
            (
                ["user", "item", "rating"],
                lambda r, c: Bad(None, fmt.line(replace(r, c, "@@")).replace(b"@@", b"\xff\xfe"), "UTF-8"),
            ),
        ]
    )


# --------------------------------------------------------------------------------------------
# File builder and checks shared by all formats
# --------------------------------------------------------------------------------------------


LINE_KINDS = st.sampled_from(["good", "good", "good", "dup", "bad", "blank"])


@st.composite
def structured_lines(draw, good: st.SearchStrategy[Row], bad: BadMaker):
    """[(kind, payload)] with kind "good" (a Row), "bad" (a Bad) or "blank"; duplicates of
    earlier good rows appear as good rows again."""
    n = draw(st.integers(1, 12))
    lines: list[tuple[str, object]] = []
    for _ in range(n):
        kind = draw(LINE_KINDS)
        goods = [p for k, p in lines if k == "good"]
        if kind == "dup" and goods:
            lines.append(("good", goods[draw(st.integers(0, len(goods) - 1))]))
        elif kind == "blank":
            lines.append(("blank", None))
        elif kind == "bad":
            lines.append(("bad", bad(draw, draw(good))))
        else:
            lines.append(("good", draw(good)))
    return lines


@cache
def delimited_files(fmt: Delimited) -> st.SearchStrategy:
    return structured_lines(good_rows(fmt.scale), bad_delimited(fmt))


def check_error_names_file_and_line(err: DataError, path: Path, n_lines: int) -> int | None:
    """The message starts with `<path>: ` or `<path>:<line>: ` (1 <= line <= n_lines + 1)."""
    message = str(err)
    match = re.match(rf"^{re.escape(str(path))}(?::(\d+))?: \S", message)
    assert match, message
    if match.group(1) is None:
        return None
    line = int(match.group(1))
    assert 1 <= line <= max(n_lines, 1) + 1, message
    return line


def check_contract(df: pd.DataFrame, scale: tuple[float, float]) -> None:
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert pd.api.types.is_string_dtype(df["user"]) and pd.api.types.is_string_dtype(df["item"])
    assert df["rating"].dtype == np.float64 and df["timestamp"].dtype == np.int64
    assert len(df) >= 1
    assert df["rating"].between(*scale).all()
    for col in ("user", "item"):
        values = df[col].tolist()
        assert all(isinstance(v, str) and v != "" and "\ufffd" not in v for v in values), values
    assert isinstance(df.attrs["bad_rows"], int) and df.attrs["bad_rows"] >= 0


def check_structured(
    read: Callable[[Path, str], pd.DataFrame],
    path: Path,
    lines: list[tuple[str, object]],
    first_line: int,
    scale: tuple[float, float],
) -> None:
    """Error mode names the first bad line; skip mode returns exactly the good rows."""
    goods = [p for k, p in lines if k == "good"]
    bad_lines = [first_line + j for j, (k, _) in enumerate(lines) if k == "bad"]
    n_lines = first_line + len(lines) - 1
    # without bad lines both modes must return the same rows: one read checks both
    for mode in ("error", "skip") if bad_lines or not goods else ("error",):
        if not goods or (mode == "error" and bad_lines):
            with pytest.raises(DataError) as err:
                read(path, mode)
            line = check_error_names_file_and_line(err.value, path, n_lines)
            if bad_lines:
                assert line == bad_lines[0], (str(err.value), lines)
                what = lines[bad_lines[0] - first_line][1].what
                assert what in str(err.value), (str(err.value), what)
            else:
                assert "empty file" in str(err.value) or "no valid row" in str(err.value), str(err.value)
            continue
        df = read(path, mode)
        check_contract(df, scale)
        assert df["user"].tolist() == [r.user for r in goods]
        assert df["item"].tolist() == [r.item for r in goods]
        assert df["timestamp"].tolist() == [r.timestamp for r in goods]
        np.testing.assert_allclose(df["rating"].to_numpy(), [r.rating for r in goods], rtol=1e-12)
        assert df.attrs["bad_rows"] == len(bad_lines)
        if bad_lines:
            assert df.attrs["first_bad_row"].startswith(f"{path}:{bad_lines[0]}: ")


def check_chaos(
    read: Callable[[Path, str], pd.DataFrame],
    path: Path,
    scale: tuple[float, float],
    mode: str,
    n_records: int | None = None,
    content: bytes | None = None,
) -> None:
    """A chaotic file read in `mode` ends in a DataError naming the file (and a line up to
    `n_records`), or in a frame that keeps the contract and accounts for its records: exactly
    `n_records` when given (Parquet's row count), at most the file's lines otherwise — counted
    in `content`, the text before compression, when the file is compressed."""
    exact = n_records is not None
    if not exact:
        text = path.read_bytes() if content is None else content
        n_records = len(re.split(rb"\r\n|\r|\n", text))
    try:
        df = read(path, mode)
    except DataError as err:
        check_error_names_file_and_line(err, path, n_records)
        return
    check_contract(df, scale)
    kept = len(df) + df.attrs["bad_rows"]
    assert kept == n_records if exact else kept <= n_records


# --------------------------------------------------------------------------------------------
# Delimited readers
# --------------------------------------------------------------------------------------------


def write_delimited(fmt: Delimited, path: Path, lines: list[tuple[str, object]]) -> None:
    out = []
    if fmt.header is not None:
        out.append(fmt.header.encode())
    for kind, payload in lines:
        if kind == "good":
            out.append(fmt.line(fmt.fields(payload)))
        elif kind == "blank":
            out.append(b"")
        else:
            out.append(payload.raw if payload.raw is not None else fmt.line(payload.fields))
    path.write_bytes(b"\n".join(out) + b"\n")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", DELIMITED, ids=lambda f: f.name)
@FUZZ
@given(data=st.data())
def test_delimited_structured(fmt: Delimited, data, tmp_path):
    path = tmp_path / fmt.filename
    lines = data.draw(delimited_files(fmt))
    write_delimited(fmt, path, lines)
    check_structured(fmt.read, path, lines, 2 if fmt.header else 1, fmt.scale)


def chaos_field() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["1", "5", "3.5", "", " ", "NA", "nan", '"', '""', '"a,b"', "1e400", "\\"]),
        st.integers(-(2**80), 2**80).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(st.characters(codec="utf-8"), max_size=6),
    )


@st.composite
def chaos_bytes(draw, seps: list[str], header: str | None) -> bytes:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.binary(max_size=64))
    n = draw(st.integers(0, 8))
    lines = [header] if header is not None and draw(st.booleans()) else []
    for _ in range(n):
        sep = draw(st.sampled_from(seps))
        width = draw(st.integers(0, 7))
        lines.append(sep.join(draw(st.lists(chaos_field(), min_size=width, max_size=width))))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        data += b"\n"
    if data and draw(st.integers(0, 5)) == 0:  # a byte that is not UTF-8 somewhere
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\x00", b"\xef\xbb\xbf"]))
            + data[at:]
        )
    return data


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", DELIMITED, ids=lambda f: f.name)
@FUZZ
@given(data=st.data(), mode=st.sampled_from(["error", "skip"]))
def test_delimited_chaos(fmt: Delimited, data, mode, tmp_path):
    path = tmp_path / fmt.filename
    seps = [fmt.sep, fmt.sep, fmt.sep, ",", "\t", ":", ";", "|", " "]
    path.write_bytes(data.draw(chaos_bytes(seps, fmt.header)))
    check_chaos(fmt.read, path, fmt.scale, mode)


# --------------------------------------------------------------------------------------------
# Amazon review JSON lines (.json and .json.gz)
# --------------------------------------------------------------------------------------------

JSON_SCALE = (1.0, 5.0)
JSON_KEYS = {"user": "reviewerID", "item": "asin", "rating": "overall", "timestamp": "unixReviewTime"}


def json_object(row: Row) -> dict:
    return {
        "reviewerID": row.user,
        "asin": row.item,
        "overall": row.rating,
        "unixReviewTime": row.timestamp if row.plain_time else row.timestamp_text,
        "summary": "ok",
        "helpful": [0, 1],
    }


def _json_with(key: str, value) -> Callable[[Row], Bad]:
    def make(row: Row) -> Bad:
        what = {"overall": "rating", "unixReviewTime": "timestamp"}.get(key, "field")
        if key in ("reviewerID", "asin"):
            what = "user" if key == "reviewerID" else "item"
        if value is None or (isinstance(value, str) and value == ""):
            what = "missing field"
        return Bad(None, json.dumps({**json_object(row), key: value}).encode(), what)

    return make


def _json_without(row: Row, key: str) -> Bad:
    obj = {k: v for k, v in json_object(row).items() if k != key}
    return Bad(None, json.dumps(obj).encode(), "missing field")


def _json_bad_bytes(row: Row, key: str) -> Bad:
    return Bad(None, json.dumps({**json_object(row), key: "@@"}).encode().replace(b"@@", b"\xff"), "UTF-8")


BAD_JSON = mutations(
    [
        (
            [b"{not json", b"[1, 2]", b"5", b"null", b'"text"', b"{"],
            lambda r, raw: Bad(None, raw, "not a JSON object"),
        ),
        (list(JSON_KEYS.values()), _json_without),
        (
            [
                *[(k, None) for k in JSON_KEYS.values()],
                *[("overall", v) for v in ("five", "", [5], {"x": 1}, True, 0, 6, -1, 1e300)],
                *[
                    ("unixReviewTime", v)
                    for v in ("abc", "12:30", "2000-02-30", 2**63, -(2**63) - 1, 10**30, 1e300, [1], True)
                ],
                *[(k, v) for k in ("reviewerID", "asin") for v in (1.5, [1], {"a": 1}, True, "")],
            ],
            lambda r, kv: _json_with(*kv)(r),
        ),
        (["reviewerID", "asin"], _json_bad_bytes),
    ]
)


JSON_FILES = structured_lines(good_rows(JSON_SCALE), BAD_JSON)


def write_json(path: Path, lines: list[tuple[str, object]]) -> None:
    out = []
    for kind, payload in lines:
        if kind == "good":
            out.append(json.dumps(json_object(payload)).encode())
        elif kind == "blank":
            out.append(b"")
        else:
            out.append(payload.raw)
    data = b"\n".join(out) + b"\n"
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def read_json(path: Path, mode: str) -> pd.DataFrame:
    return read_amazon_reviews(path, on_bad_rows=mode)


@pytest.mark.timeout(300)
@FUZZ
@given(data=st.data(), gz=st.booleans())
def test_json_structured(data, gz, tmp_path):
    path = tmp_path / ("reviews_X_5.json" + (".gz" if gz else ""))
    lines = data.draw(JSON_FILES)
    write_json(path, lines)
    check_structured(read_json, path, lines, 1, JSON_SCALE)


def json_value() -> st.SearchStrategy:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**80), 2**80),
        st.floats(allow_nan=False),
        st.text(st.characters(codec="utf-8"), max_size=5),
        st.sampled_from(["5", "1e3", "nan", ""]),
    )
    return st.recursive(
        scalars,
        lambda c: st.lists(c, max_size=2) | st.dictionaries(st.text(max_size=3), c, max_size=2),
        max_leaves=4,
    )


@st.composite
def chaos_json(draw) -> bytes:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.binary(max_size=64))
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.text(max_size=12)).encode("utf-8", errors="surrogatepass"))
            continue
        keys = draw(st.lists(st.sampled_from([*JSON_KEYS.values(), "x"]), max_size=5))
        obj = {k: draw(json_value()) for k in keys}
        text = json.dumps(obj)
        if draw(st.integers(0, 6)) == 0:
            text = text[: draw(st.integers(0, len(text)))]  # truncated
        lines.append(text.encode())
    data = b"\n".join(lines)
    if data and draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\x00", b"\\ud800", b"\xef\xbb\xbf"])) + data[at:]
    return data


@pytest.mark.timeout(300)
@FUZZ
@given(
    data=chaos_json(),
    gz=st.sampled_from(["plain", "gz", "broken-gz"]),
    mode=st.sampled_from(["error", "skip"]),
)
def test_json_chaos(data, gz, mode, tmp_path):
    path = tmp_path / ("reviews_X_5.json" + (".gz" if gz != "plain" else ""))
    text = data  # lines are counted before compression (the gzip bytes hold arbitrary newlines)
    if gz == "gz":
        data = gzip.compress(data)
    elif gz == "broken-gz":
        packed = gzip.compress(data)
        data = packed[: max(1, len(packed) // 2)] + packed[len(packed) // 2 :][::-1]
    path.write_bytes(data)
    check_chaos(read_json, path, JSON_SCALE, mode, content=text)


# --------------------------------------------------------------------------------------------
# Parquet through read_table
# --------------------------------------------------------------------------------------------

PARQUET_COLUMNS = ColumnsConfig(user="u", item="i", rating="r", timestamp="t")
PARQUET_SCALE = (1.0, 5.0)


def read_parquet(path: Path, mode: str) -> pd.DataFrame:
    return read_table(path, PARQUET_COLUMNS, rating_scale=PARQUET_SCALE, on_bad_rows=mode)


def _parquet_cell(key: str, value, what: str) -> Callable[[Row, object], Bad]:
    def make(row: Row, _) -> Bad:
        values = {"u": row.user, "i": row.item, "r": row.rating, "t": row.timestamp}
        return Bad([{**values, key: value}], what=what)  # type: ignore[list-item]

    return make


# a null, an empty id, a rating out of scale or NaN (a null, or the string 'nan': not a number)
BAD_PARQUET = mutations(
    [
        *[([None], _parquet_cell(k, None, "missing field")) for k in ("u", "i", "r", "t")],
        *[([None], _parquet_cell(k, "", "missing field")) for k in ("u", "i")],
        *[([None], _parquet_cell("r", v, "rating")) for v in (0.0, 6.0, -1.0, 1e300, float("inf"))],
        ([None], _parquet_cell("r", float("nan"), "")),
    ]
)
PARQUET_FILES = structured_lines(good_rows(PARQUET_SCALE), BAD_PARQUET)


PARQUET_TIME_TYPES = ["int64", "string", "timestamp"]


def write_parquet(
    path: Path, lines: list[tuple[str, object]], string_ratings: bool, times: str = "int64"
) -> None:
    """`times`: the timestamp column's type: int64 (the expected values), string (the rows'
    text: numbers, dates, datetimes) or a Parquet timestamp in seconds (the expected values as
    instants; int64 where one is beyond year 5000)."""
    records = []
    for kind, payload in lines:
        if kind == "good":
            t = payload.timestamp_text if times == "string" else payload.timestamp
            records.append({"u": payload.user, "i": payload.item, "r": payload.rating, "t": t})
        elif kind == "bad":
            records.append(payload.fields[0])
    import pyarrow as pa
    import pyarrow.parquet as pq

    if times == "string":  # a bad row's integer (if any) as text too
        time_type = pa.string()
        for r in records:
            r["t"] = None if r["t"] is None else str(r["t"])
    elif times == "timestamp" and all(r["t"] is None or abs(r["t"]) < 10**11 for r in records):
        time_type = pa.timestamp("s")
    else:
        time_type = pa.int64()

    table = pa.table(
        {
            "u": pa.array([r["u"] for r in records], pa.string()),
            "i": pa.array([r["i"] for r in records], pa.string()),
            "r": pa.array(
                [None if r["r"] is None else (repr(r["r"]) if string_ratings else r["r"]) for r in records],
                pa.string() if string_ratings else pa.float64(),
            ),
            "t": pa.array([r["t"] for r in records], time_type),
            "extra": pa.array([1] * len(records), pa.int8()),
        }
    )
    pq.write_table(table, path)


@pytest.mark.timeout(300)
@FUZZ
@given(data=st.data(), string_ratings=st.booleans(), times=st.sampled_from(PARQUET_TIME_TYPES))
def test_parquet_structured(data, string_ratings, times, tmp_path):
    path = tmp_path / "log.parquet"
    lines = data.draw(PARQUET_FILES)
    lines = [(k, p) for k, p in lines if k != "blank"]  # Parquet has no blank lines
    assume(lines)
    write_parquet(path, lines, string_ratings, times)
    check_structured(read_parquet, path, lines, 1, PARQUET_SCALE)


PA_TYPES = [
    "int64",
    "int32",
    "uint64",
    "float64",
    "float32",
    "string",
    "bool",
    "binary",
    "timestamp",
    "list",
    "dict",
]


@st.composite
def chaos_parquet(draw, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if draw(st.integers(0, 15)) == 0:  # not Parquet at all, or a truncated file
        if draw(st.booleans()):
            path.write_bytes(draw(st.binary(max_size=64)))
        else:
            buf = io.BytesIO()
            pq.write_table(pa.table({"u": ["a"], "i": ["b"], "r": [1.0], "t": [1]}), buf)
            raw = buf.getvalue()
            path.write_bytes(raw[: draw(st.integers(0, len(raw) - 1))])
        return
    n = draw(st.integers(0, 6))
    columns = {}
    for name in draw(
        st.lists(st.sampled_from(["u", "i", "r", "t", "x"]), min_size=2, max_size=5, unique=True)
    ):
        kind = draw(st.sampled_from(PA_TYPES))

        def values(strategy):
            return [None if draw(st.integers(0, 3)) == 0 else draw(strategy) for _ in range(n)]

        if kind in ("int64", "int32", "uint64"):
            bits = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1), "uint64": (0, 2**64 - 1)}[
                kind
            ]
            arr = pa.array(values(st.integers(*bits)), getattr(pa, kind)())
        elif kind in ("float64", "float32"):
            arr = pa.array(values(st.floats(width=64 if kind == "float64" else 32)), getattr(pa, kind)())
        elif kind == "string":
            arr = pa.array(values(st.text(max_size=5)), pa.string())
        elif kind == "bool":
            arr = pa.array(values(st.booleans()), pa.bool_())
        elif kind == "binary":
            arr = pa.array(values(st.binary(max_size=4)), pa.binary())
        elif kind == "timestamp":
            arr = pa.array(values(st.integers(0, 2**40)), pa.timestamp("s"))
        elif kind == "list":
            arr = pa.array(values(st.lists(st.integers(0, 9), max_size=2)), pa.list_(pa.int64()))
        else:
            arr = pa.array(values(st.sampled_from(["a", "b", "5"])), pa.string()).dictionary_encode()
        columns[name] = arr
    pq.write_table(pa.table(columns), path)


@pytest.mark.timeout(300)
@FUZZ
@given(data=st.data(), mode=st.sampled_from(["error", "skip"]))
def test_parquet_chaos(data, mode, tmp_path):
    path = tmp_path / "log.parquet"
    data.draw(chaos_parquet(path))
    n_rows = 0
    try:
        import pyarrow.parquet as pq

        n_rows = pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - not a readable Parquet file: any line is fine
        pass
    check_chaos(read_parquet, path, PARQUET_SCALE, mode, n_records=n_rows)


# --------------------------------------------------------------------------------------------
# prepare_dataset on failing files: the same DataError, no cache entry
# --------------------------------------------------------------------------------------------

PREPARE_FORMATS = [
    ("ml-100k", DELIMITED[0], {}),
    ("ml-1m", DELIMITED[1], {}),
    ("ml-20m", DELIMITED[2], {}),
    ("amazon-books", DELIMITED[3], {"k_core": 0}),
    ("csv", DELIMITED[4], {"columns": TABLE_COLUMNS}),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dataset, fmt, extra", PREPARE_FORMATS, ids=[p[0] for p in PREPARE_FORMATS])
@settings(FUZZ, max_examples=10)
@given(data=st.data())
def test_prepare_leaves_no_cache_entry(dataset, fmt, extra, data, tmp_path_factory, monkeypatch):
    import unigrf.ray_utils
    from unigrf.data.prepare import prepare_dataset

    def no_ray(*args, **kwargs):  # a bad file must fail before Ray (and any write) is reached
        raise AssertionError("prepare_dataset reached Ray on a bad file")

    monkeypatch.setattr(unigrf.ray_utils, "init_ray", no_ray)

    root = tmp_path_factory.mktemp(f"prepare-{dataset}")
    path = root / fmt.filename
    lines = data.draw(delimited_files(fmt))
    assume(any(k == "bad" for k, _ in lines))
    write_delimited(fmt, path, lines)
    results = root / "results"
    cfg = DataConfig(dataset=dataset, path=str(path), **extra)
    with pytest.raises(DataError) as err:
        fmt.read(path, "error")
    with pytest.raises(DataError) as prepared_err:
        prepare_dataset(cfg, results, verbose=False)
    assert str(prepared_err.value) == str(err.value)
    assert not (results / "data").exists() or list((results / "data").iterdir()) == []
