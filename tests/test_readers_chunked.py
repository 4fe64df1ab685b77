"""The delimited readers read in chunks (`readers.CHUNK_ROWS` rows at a time) and code ids as
they go: whatever the chunk size, the result — codes, distinct ids, ratings, timestamps, the
bad-row count, the first bad row, the error — is the one of a read in a single chunk (a
whole-file read), and prepare writes the same cache.

Chunk sizes of 1 to 4 rows put every kind of row (bad, blank, too long, quoted across lines,
a huge time) on and across chunk boundaries; a hypothesis property repeats the check on the
fuzz tests' generated files.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_fixtures import fixtures_dir
from test_readers_fuzz import (
    DELIMITED,
    POSITIONS,
    TABLE_COLUMNS,
    chaos_bytes,
    delimited_files,
    write_delimited,
)

from unigrf.config import ColumnsConfig, DataConfig
from unigrf.data import readers
from unigrf.data.prepare import prepare_dataset
from unigrf.data.readers import (
    DataError,
    IdCoder,
    Interactions,
    read_coded,
    read_interactions,
)

WHOLE = 1 << 20  # one chunk for every file here: the whole-file read
SMALL = (1, 2, 3, 4)
CSV_COLUMNS = ColumnsConfig(user="uid", item="iid", rating="stars", timestamp="ts", sep=",", header=True)

pytestmark = pytest.mark.timeout(300)


def outcome(cfg: DataConfig, chunk_rows: int, monkeypatch) -> tuple:
    """What `read_coded` gives at `chunk_rows` rows a chunk: every array and id, or the error."""
    monkeypatch.setattr(readers, "CHUNK_ROWS", chunk_rows)
    try:
        data, _ = read_coded(cfg)
    except DataError as err:
        return ("error", str(err))
    return (
        data.user.tolist(),
        data.item.tolist(),
        data.rating.tobytes(),  # bit for bit
        data.timestamp.tolist(),
        data.user_ids.tolist(),
        data.item_ids.tolist(),
        data.bad_rows,
        data.first_bad_row,
    )


def assert_chunk_size_free(cfg: DataConfig, monkeypatch, sizes=SMALL) -> tuple:
    whole = outcome(cfg, WHOLE, monkeypatch)
    for size in sizes:
        assert outcome(cfg, size, monkeypatch) == whole, size
    return whole


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def config(dataset: str, path: Path, mode: str = "skip", **kw) -> DataConfig:
    return DataConfig(dataset=dataset, path=str(path), on_bad_rows=mode, **kw)


# --------------------------------------------------------------------------------------------
# The parts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [[], [1], [2, 5], [1, 2, 3, 4, 5, 6, 7], [0, 0, 3]])
def test_id_coder_codes_equal_factorize_of_the_whole_column(cut):
    ids = pd.Series(["b", "a", "b", "0012", "c", "a", "12", "0012"], dtype=str)
    coder = IdCoder()
    codes = np.concatenate([coder.encode(part) for part in np.split(ids, cut)])
    expected, uniques = pd.factorize(ids, sort=False)
    assert codes.dtype == np.int64 and codes.tolist() == expected.tolist()
    assert coder.ids().tolist() == uniques.tolist() and coder.ids().dtype == uniques.dtype


def test_id_coder_starts_empty_and_takes_empty_chunks():
    coder = IdCoder()
    assert coder.ids().tolist() == [] and coder.encode(pd.Series([], dtype=str)).tolist() == []
    assert coder.encode(pd.Series(["x", "y"], dtype=str)).tolist() == [0, 1]
    assert coder.encode(pd.Series([], dtype=str)).tolist() == []
    assert coder.encode(pd.Series(["y", "z", "x"], dtype=str)).tolist() == [1, 2, 0]


def test_interactions_frame_round_trip():
    df = pd.DataFrame(
        {
            "user": pd.Series(["u2", "u1", "u2"], dtype=str),
            "item": pd.Series(["i1", "i1", "i9"], dtype=str),
            "rating": [4.0, 3.5, 1.0],
            "timestamp": np.array([5, 3, 2**62], dtype=np.int64),
        }
    )
    df.attrs.update(bad_rows=2, first_bad_row="f:3: bad")
    data = Interactions.from_frame(df)
    assert data.user.tolist() == [0, 1, 0] and data.item.tolist() == [0, 0, 1] and len(data) == 3
    assert data.user_ids.tolist() == ["u2", "u1"] and data.bad_rows == 2
    back = data.to_frame()
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs == df.attrs


def test_line_numbers_skip_dropped_lines_wherever_pandas_reports_them():
    lines = readers._LineNumbers(offset=2)
    none = np.zeros(2, dtype=np.int64)
    assert lines.place(2, [], none).tolist() == [2, 3]
    assert lines.place(2, [4, 7], none).tolist() == [5, 6]  # 7: after the chunk's last row
    assert lines.place(0, [9], np.zeros(0, dtype=np.int64)).tolist() == []  # a chunk of bad lines only
    assert lines.place(2, [], none).tolist() == [8, 10]  # 7 and 9 reported earlier


def test_line_numbers_move_rows_below_a_field_spanning_lines():
    lines = readers._LineNumbers(offset=1)
    assert lines.place(3, [], np.array([0, 2, 0])).tolist() == [1, 2, 5]
    assert lines.place(2, [], np.array([1, 0])).tolist() == [6, 8]
    assert lines.place(1, [], np.array([0])).tolist() == [9]


def test_spanning_note_goes_on_the_field_count_message_only():
    field_error = "expected 4 fields separated by ',' (wrong separator or missing field?)"
    assert readers._note_spanning((3, field_error), field_error) == (3, field_error + readers._SPANNING)
    assert (
        readers._note_spanning((3, "rating 'x' is not a number"), field_error)[1]
        == "rating 'x' is not a number"
    )
    assert readers._note_spanning(None, field_error) is None


def test_rounded_huge_times_reads_the_text_only_for_huge_times():
    def no_text():
        raise AssertionError("small times need no text")

    assert not readers._rounded_huge_times(pd.Series([1, -5, 2**52]), no_text)
    exact = pd.Series([2**60, 3])
    assert not readers._rounded_huge_times(exact, lambda: pd.Series([str(2**60), "3"], dtype=str))
    assert readers._rounded_huge_times(exact, lambda: pd.Series([f"{2**60}.7", "3"], dtype=str))


def test_kept_fails_only_at_the_end_and_keeps_the_earliest_bad_row():
    frame = pd.DataFrame(
        {
            "user": pd.Series(["a"], dtype=str),
            "item": pd.Series(["i"], dtype=str),
            "rating": [1.0],
            "timestamp": [7],
        }
    )

    def kept() -> readers._Kept:  # a result is taken once: its parts are freed as it is built
        kept = readers._Kept()
        kept.add(readers._Checked(frame, 1, (9, "late")))  # no error yet
        kept.add(readers._Checked(frame.iloc[:0], 2, (4, "early")))
        return kept

    data = kept().result(Path("f"), "skip")
    assert data.first_bad_row == "f:4: early" and data.bad_rows == 3 and data.user.tolist() == [0]
    with pytest.raises(DataError, match="^f:4: early$"):
        kept().result(Path("f"), "error")


def test_chunks_of_keeps_the_warnings_pandas_gives_when_it_finds_no_further_chunk(tmp_path):
    # two good rows, then two too-long rows: with 2-row chunks, the C engine reports the long
    # rows while finding there is no third chunk
    path = write(tmp_path, "f.csv", "a,b\nc,d\ne,f,g,h,i\nj,k,l,m,n\n")

    def open_reader():
        kw = dict(header=None, names=["x", "y", "s"], dtype=str, quoting=csv.QUOTE_NONE, index_col=False)
        return pd.read_csv(path, on_bad_lines="warn", chunksize=2, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = list(readers._chunks_of(open_reader, lambda: warnings.catch_warnings()))
    assert [len(c) if c is not None else None for c, _ in got] == [2, None]
    assert readers._SKIP_RE.findall("".join(got[1][1])) == ["3", "4"]


# --------------------------------------------------------------------------------------------
# Any chunk size reads what one chunk reads
# --------------------------------------------------------------------------------------------


def ml100k_lines() -> str:
    rows = [
        f"{u}\t{10 + (j * 7) % 5}\t{1 + j % 5}\t{100 + j}" for j, u in enumerate([1, 2, 1, 3, 2, 1, 4, 3, 1])
    ]
    rows[2] = "1\t10\tx\t102"  # a non-numeric rating, line 3
    rows[4] = "2,20,3,104"  # a wrong separator, line 5
    rows.insert(6, "")  # a blank line (line 7)
    rows[8] = "3\t11\t9\t107"  # out of scale, line 9
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("mode", ["skip", "error"])
def test_ml100k_bad_rows_on_chunk_boundaries(tmp_path, monkeypatch, mode):
    path = write(tmp_path, "u.data", ml100k_lines())
    whole = assert_chunk_size_free(config("ml-100k", path, mode), monkeypatch)
    if mode == "error":
        assert whole == ("error", f"{path}:3: rating 'x' is not a number")
    else:
        assert whole[6] == 3 and whole[7] == f"{path}:3: rating 'x' is not a number"
        assert whole[4] == ["1", "2", "3", "4"]  # users by first appearance


def test_error_in_a_later_chunk_names_its_line(tmp_path, monkeypatch):
    rows = [f"u{j % 3},i{j % 4},{1 + j % 5},{1000 + j}" for j in range(11)]
    rows[9] = "u1,i2,4,yesterday"
    path = write(tmp_path, "ratings_Books.csv", "\n".join(rows) + "\n")
    whole = assert_chunk_size_free(config("amazon-books", path, "error"), monkeypatch)
    assert whole == (
        "error",
        f"{path}:10: timestamp 'yesterday' is not a number or an ISO 8601 date/datetime",
    )


def test_ml20m_header_duplicates_and_half_stars(tmp_path, monkeypatch):
    rows = ["userId,movieId,rating,timestamp"] + [
        f"{u},{m},{r},{t}"
        for u, m, r, t in [(7, 3, 0.5, 1), (7, 3, 4.5, 1), (2, 9, 5.0, 0), (2, 3, 3.5, 2), (7, 9, 1.0, 5)]
    ]
    path = write(tmp_path, "ratings.csv", "\n".join(rows) + "\n")
    whole = assert_chunk_size_free(config("ml-20m", path, "error"), monkeypatch)
    assert whole[0] == [0, 0, 1, 1, 0] and whole[1] == [0, 0, 1, 0, 1] and whole[6] == 0


def test_ml20m_huge_time_rounded_in_a_later_chunk_is_read_from_its_text(tmp_path, monkeypatch):
    rows = ["userId,movieId,rating,timestamp", "1,1,4,1", "1,2,4,2.0", "1,3,4,3", "2,1,4,5"]
    rows += ["2,2,4,1700000000123456789.7", "2,3,4,1700000000123456789", "3,1,4,9"]
    path = write(tmp_path, "ratings.csv", "\n".join(rows) + "\n")
    whole = assert_chunk_size_free(config("ml-20m", path, "error"), monkeypatch)
    assert whole[3] == [1, 2, 3, 5, 1700000000123456789, 1700000000123456789, 9]


@pytest.mark.parametrize("mode", ["skip", "error"])
def test_ml1m_double_colon_and_its_fallback_for_a_bad_row_late(tmp_path, monkeypatch, mode):
    rows = [f"{j % 4}::{j % 3}::{1 + j % 5}::{900 + j}" for j in range(9)]
    path = write(tmp_path, "ratings.dat", "\n".join(rows) + "\n")
    clean = assert_chunk_size_free(config("ml-1m", path, mode), monkeypatch)
    assert clean[3] == [900 + j for j in range(9)]
    rows[7] = "3:1::2::907"  # a single colon: the `::` reader's (Python engine) fallback
    rows[2] = "2::2::3::2000-07-12T10:20:30"  # colons in a time: fine for the fallback
    path.write_text("\n".join(rows) + "\n")
    whole = assert_chunk_size_free(config("ml-1m", path, mode), monkeypatch)
    if mode == "error":
        assert whole[0] == "error" and whole[1].startswith(f"{path}:8: ")
    else:
        assert whole[6] == 1 and whole[3][2] == 963397230


def test_movietweetings_too_long_rows_in_every_position(tmp_path, monkeypatch):
    rows = [f"{j % 4}::{j}::{j % 11}::{10 * j}" for j in range(12)]
    for j in (0, 3, 4, 5, 11):  # the first row, a run across boundaries, the last
        rows[j] += "::x" * (1 + j % 6)
    path = write(tmp_path, "ratings.dat", "\n".join(rows) + "\n")
    whole = assert_chunk_size_free(config("movietweetings", path, "skip"), monkeypatch)
    assert whole[6] == 5 and whole[7].startswith(f"{path}:1: too many fields")


def test_csv_rows_longer_than_the_spare_columns_at_chunk_ends(tmp_path, monkeypatch):
    rows = [f"u{j % 3},i{j},{1 + j % 5},{j}" for j in range(10)]
    for j in (2, 3, 6, 7, 8, 9):
        rows[j] += ",x,y,z,w"
    path = write(tmp_path, "ratings_Books.csv", "\n".join(rows) + "\n")
    whole = assert_chunk_size_free(config("amazon-books", path, "skip"), monkeypatch)
    assert whole[6] == 6 and whole[7].startswith(f"{path}:3: too many fields") and whole[3] == [0, 1, 4, 5]


def generic_csv() -> str:
    return (
        "ts,uid,extra,iid,stars\n"
        '1,"u,1",x,i1,4\n'
        '2,"u2",x,"i ""2""",3\n'
        "3,u3,x,i3,4\n"
        '4,"u\n4",x,i4,5\n'  # an id spanning lines 5-6: a bad row; every later line moves down
        '5,u1,"a\nb\nc",i1,4\n'  # an unused field spanning lines 7-9
        "6,u2,x\n"  # a missing field, line 10
        "7,u3,x,i9,2\n"
        "8,u1,x,i1,4,9\n"  # a field too many, line 12
        "9,u1,x,i2,1\n"
    )


@pytest.mark.parametrize("mode", ["skip", "error"])
def test_generic_csv_quoted_fields_and_lines_across_chunks(tmp_path, monkeypatch, mode):
    path = write(tmp_path, "log.csv", generic_csv())
    whole = assert_chunk_size_free(config("csv", path, mode, columns=CSV_COLUMNS), monkeypatch)
    message = "expected 4 fields separated by ',' (wrong separator or missing field?)" + readers._SPANNING
    if mode == "error":
        assert whole == ("error", f"{path}:5: {message}")
    else:
        assert whole[4] == ["u,1", "u2", "u3", "u1"] and whole[5][1] == 'i "2"'
        assert whole[6] == 4 and whole[7] == f"{path}:5: {message}"


def test_spanning_note_reaches_a_field_error_before_the_spanning_row(tmp_path, monkeypatch):
    text = 'ts,uid,iid,stars\n1,u1,i1\n2,u2,i2,3\n3,"u\n3",i3,4\n4,u4,i4,5\n'
    path = write(tmp_path, "log.csv", text)
    cols = ColumnsConfig(user="uid", item="iid", rating="stars", timestamp="ts", sep=",", header=True)
    whole = assert_chunk_size_free(config("csv", path, "skip", columns=cols), monkeypatch)
    assert whole[7] == f"{path}:2: expected 4 fields separated by ',' (wrong separator or missing field?)" + (
        readers._SPANNING
    )


def test_unterminated_quote_late_wins_over_an_earlier_bad_row(tmp_path, monkeypatch):
    text = (
        "ts,uid,iid,stars\n1,u1,i1,x\n" + "".join(f"{j},u{j},i{j},3\n" for j in range(2, 9)) + '9,"u9,i9,4\n'
    )
    path = write(tmp_path, "log.csv", text)
    cols = ColumnsConfig(user="uid", item="iid", rating="stars", timestamp="ts", sep=",", header=True)
    for mode in ("error", "skip"):
        whole = assert_chunk_size_free(config("csv", path, mode, columns=cols), monkeypatch)
        assert whole[0] == "error" and "unterminated quote" in whole[1]


@pytest.mark.parametrize("text", ["a\tb\n\n", "\n\n\n", "1\t2\tx\t4\n1\t2\t3\n"])
def test_files_without_a_good_row(tmp_path, monkeypatch, text):
    path = write(tmp_path, "u.data", text)
    whole = assert_chunk_size_free(config("ml-100k", path, "skip"), monkeypatch)
    assert whole[0] == "error" and ("no valid row" in whole[1] or "empty file" in whole[1])


def test_bad_bytes_and_blank_lines_across_chunks(tmp_path, monkeypatch):
    text = b"1\t1\t4\t1\r\n\r\n2\t\xff\t3\t2\r\n1\t2\t5\t3\r\n\r\n\r\n3\t1\t1\t4\r\n"
    path = write(tmp_path, "u.data", text)
    whole = assert_chunk_size_free(config("ml-100k", path, "skip"), monkeypatch)
    assert whole[6] == 1 and "UTF-8" in whole[7] and whole[7].startswith(f"{path}:3: ")


def test_read_interactions_is_the_coded_read_decoded(tmp_path, monkeypatch):
    path = write(tmp_path, "u.data", ml100k_lines())
    monkeypatch.setattr(readers, "CHUNK_ROWS", 2)
    df, sources = read_interactions(config("ml-100k", path))
    data, _ = read_coded(config("ml-100k", path))
    assert sources == [path]
    pd.testing.assert_frame_equal(df, data.to_frame())
    assert df.attrs == {"bad_rows": 3, "first_bad_row": data.first_bad_row}


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.parametrize("fmt", DELIMITED, ids=lambda f: f.name)
@given(data=st.data(), mode=st.sampled_from(["error", "skip"]), size=st.sampled_from(SMALL))
def test_generated_files_read_the_same_in_any_chunk_size(fmt, data, mode, size, tmp_path, monkeypatch):
    path = tmp_path / fmt.filename
    if data.draw(st.booleans()):
        write_delimited(fmt, path, data.draw(delimited_files(fmt)))
    else:
        seps = [fmt.sep, fmt.sep, fmt.sep, ",", "\t", ":", ";", "|", " "]
        path.write_bytes(data.draw(chaos_bytes(seps, fmt.header)))
    if not path.stat().st_size:
        return
    columns = {"csv-header": TABLE_COLUMNS, "csv-positions": POSITIONS}
    dataset = "csv" if fmt.name in columns else fmt.name
    cfg = config(dataset, path, mode, columns=columns.get(fmt.name, ColumnsConfig()), rating_scale=fmt.scale)
    assert outcome(cfg, size, monkeypatch) == outcome(cfg, WHOLE, monkeypatch)


# --------------------------------------------------------------------------------------------
# Prepare writes the same cache
# --------------------------------------------------------------------------------------------


def cache_files(prepared: Path) -> dict[str, object]:
    """The cache entry's files, meta.json without its timings."""
    files: dict[str, object] = {
        name: pq.read_table(prepared / name)
        for name in ("sequences.parquet", "user_map.parquet", "item_map.parquet")
    }
    parsed = json.loads((prepared / "meta.json").read_text())
    for key in ("seconds", "ray_stage_seconds"):
        parsed["stats"].pop(key)
    files["meta.json"] = parsed
    return files


@pytest.mark.parametrize(
    "dataset, rel, sep, extra",
    [
        ("ml-100k", "ml-100k/u.data", "\t", {}),
        ("ml-1m", "ml-1m/ratings.dat", "::", {}),
        ("ml-20m", "ml-20m/ratings.csv", ",", {}),
        ("amazon-books", "amazon-books/ratings_Books.csv", ",", {"k_core": 1}),
        (
            "csv",
            "ml-20m/ratings.csv",
            ",",
            {"columns": ColumnsConfig("userId", "movieId", "rating", "timestamp")},
        ),
    ],
)
def test_prepare_writes_the_same_cache_in_any_chunk_size(dataset, rel, sep, extra, tmp_path, monkeypatch):
    source = fixtures_dir() / rel
    # among the fixture's rows: a blank line, a row with a field too many, a repeated row
    lines = source.read_text().splitlines()
    at = 2 if dataset in ("ml-20m", "csv") else 1
    lines[at:at] = ["", lines[at] + sep + "9", lines[at]]
    if dataset == "csv":  # quoted ids
        lines[1:] = [f'"{line.split(",")[0]}",{line.split(",", 1)[1]}' if line else "" for line in lines[1:]]
    raw = write(tmp_path, Path(rel).name, "\n".join(lines) + "\n")
    cfg = DataConfig(dataset=dataset, path=str(raw), on_bad_rows="skip", **extra)
    entries = {}
    for size in (WHOLE, 2, 3):
        monkeypatch.setattr(readers, "CHUNK_ROWS", size)
        prepared = prepare_dataset(cfg, tmp_path / f"results-{size}", verbose=False)
        entries[size] = cache_files(prepared)
    assert entries[WHOLE]["meta.json"]["stats"]["bad_rows_skipped"] >= 1
    for size in (2, 3):
        for name, content in entries[WHOLE].items():
            got = entries[size][name]
            assert got.equals(content) if hasattr(content, "equals") else got == content, (size, name)
