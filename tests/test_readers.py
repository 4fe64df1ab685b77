"""Readers: every format on tiny fixtures, exact int64 timestamps, bad input named by file:line."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest
from raw_fixtures import fixtures_dir

from unigrf.config import ColumnsConfig, DataConfig
from unigrf.data.readers import (
    DataError,
    read_amazon_ratings,
    read_amazon_reviews,
    read_interactions,
    read_ml1m,
    read_ml20m,
    read_ml100k,
    read_table,
)

FIXTURES = fixtures_dir()

# the 12 interactions of the MovieLens fixtures, in file order
ML_USERS = ["1", "2", "1", "1", "2", "1", "2", "3", "3", "4", "3", "4"]
ML_ITEMS = ["10", "20", "30", "5", "21", "40", "22", "30", "10", "10", "20", "20"]
ML_RATINGS = [4, 3, 5, 2, 1, 4, 5, 4, 5, 3, 2, 4]
ML_TIMES = [100, 50, 100, 90, 50, 200, 60, 10, 10, 70, 10, 80]


def check_frame(df: pd.DataFrame, users, items, ratings, times) -> None:
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert pd.api.types.is_string_dtype(df["user"]) and pd.api.types.is_string_dtype(df["item"])
    assert df["rating"].dtype == np.float64 and df["timestamp"].dtype == np.int64
    assert df["user"].tolist() == users and df["item"].tolist() == items
    assert df["rating"].tolist() == [float(r) for r in ratings]
    assert df["timestamp"].tolist() == times
    assert df.attrs["bad_rows"] == 0


@pytest.mark.parametrize(
    "reader, path",
    [(read_ml100k, "ml-100k/u.data"), (read_ml1m, "ml-1m/ratings.dat")],
)
def test_movielens_readers_keep_file_order(reader, path):
    check_frame(reader(FIXTURES / path), ML_USERS, ML_ITEMS, ML_RATINGS, ML_TIMES)


def test_ml20m_half_stars():
    ratings = [4, 3.5, 5, 0.5, 1, 4.5, 5, 4, 5, 3, 2.5, 4]
    check_frame(read_ml20m(FIXTURES / "ml-20m/ratings.csv"), ML_USERS, ML_ITEMS, ratings, ML_TIMES)


AMAZON_USERS = ["AUSER1", "AUSER2", "AUSER1", "AUSER1", "AUSER2", "AUSER1", "AUSER2"]
AMAZON_ITEMS = ["0001234567", "B00002", "B00003", "B00004", "B00005", "B00006", "B00007"]
AMAZON_RATINGS = [4, 3, 5, 2, 1, 4, 5]
AMAZON_TIMES = [1393545600, 1363392000, 1393545600, 1377648000, 1363392000, 1400000000, 1364000000]


def test_amazon_ratings_csv_keeps_ids_as_strings():
    df = read_amazon_ratings(FIXTURES / "amazon-books/ratings_Books.csv")
    check_frame(df, AMAZON_USERS, AMAZON_ITEMS, AMAZON_RATINGS, AMAZON_TIMES)


def test_amazon_review_json_and_gz(tmp_path):
    plain = FIXTURES / "amazon-reviews/reviews_Tiny_5.json"
    check_frame(read_amazon_reviews(plain), AMAZON_USERS, AMAZON_ITEMS, AMAZON_RATINGS, AMAZON_TIMES)
    gz = tmp_path / "reviews_Tiny_5.json.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    check_frame(read_amazon_reviews(gz), AMAZON_USERS, AMAZON_ITEMS, AMAZON_RATINGS, AMAZON_TIMES)


def test_generic_csv_with_column_mapping():
    cols = ColumnsConfig(user="uid", item="iid", rating="stars", timestamp="ts", sep=";", header=True)
    df = read_table(FIXTURES / "generic/log.csv", cols)
    check_frame(df, ["u1", "u2", "u1"], ["i10", "i20", "i30"], [4, 3, 5], [100, 50, 100])


def test_generic_csv_without_header_by_position(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("100\tu1\ti10\t4\n50\tu2\ti20\t3\n")
    cols = ColumnsConfig(user="1", item="2", rating="3", timestamp="0", sep="\t", header=False)
    check_frame(read_table(path, cols), ["u1", "u2"], ["i10", "i20"], [4, 3], [100, 50])


@pytest.mark.parametrize(
    "written, seconds",
    [
        ("963397230", 963397230),  # an integer is itself
        ("963397230.0", 963397230),
        ("9.6339723e8", 963397230),
        ("963397230.9", 963397230),  # another number: floored
        ("-1.5", -2),
        ("2000-07-12", 963360000),  # a date: its midnight, UTC
        ("2000-07-12T10:20:30", 963397230),  # no zone: UTC
        ("2000-07-12 10:20:30", 963397230),
        ("2000-07-12T10:20", 963397200),
        ("2000-07-12T10:20:30Z", 963397230),
        ("2000-07-12T12:20:30+02:00", 963397230),  # a zone: converted to UTC
        ("2000-07-12T05:20:30-0500", 963397230),
        ("2000-07-12T10:20:30.999", 963397230),  # fractions of a second: floored
        ("1969-12-31T23:59:59.5", -1),
    ],
)
def test_timestamps_as_numbers_dates_and_datetimes(tmp_path, written, seconds):
    """The documented rule (docs/reliability.md): integers exactly, other numbers floored,
    ISO 8601 dates and datetimes as seconds since 1970-01-01 UTC (UTC when no zone), in every
    text reader and in JSON."""
    path = tmp_path / "log.csv"
    path.write_text(f"user,item,rating,timestamp\nu1,i1,4,{written}\nu1,i2,5,{written}\n")
    assert read_table(path).timestamp.tolist() == [seconds, seconds]
    dat = tmp_path / "ratings.dat"
    dat.write_text(f"1::10::4::{written}\n")
    assert read_ml1m(dat).timestamp.tolist() == [seconds]
    reviews = tmp_path / "reviews_X_5.json"
    reviews.write_text(f'{{"reviewerID": "u", "asin": "i", "overall": 5.0, "unixReviewTime": "{written}"}}\n')
    assert read_amazon_reviews(reviews).timestamp.tolist() == [seconds]


def test_a_date_column_sorts_as_time_with_integers_beside_it(tmp_path):
    """A file mixing dates and integer seconds reads both on one clock; a date that does not
    exist fails with its file and line, and is skipped (counted) in skip mode."""
    path = tmp_path / "log.csv"
    path.write_text("user,item,rating,timestamp\nu,a,4,2000-07-12\nu,b,4,963360001\nu,c,4,2000-13-01\n")
    with pytest.raises(DataError, match=rf"^{path}:4: timestamp '2000-13-01' is not a number or an ISO 8601"):
        read_table(path)
    df = read_table(path, on_bad_rows="skip")
    assert df.timestamp.tolist() == [963360000, 963360001] and df.attrs["bad_rows"] == 1


def test_huge_fractional_timestamps_are_floored_exactly(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,rating,timestamp\nu,a,4,1700000000123456789.7\nu,b,4,-1700000000123456789.2\n")
    assert read_table(path).timestamp.tolist() == [1700000000123456789, -1700000000123456790]


def test_parquet_datetime_columns_are_seconds(tmp_path):
    path = tmp_path / "log.parquet"
    times = pd.to_datetime(["2000-07-12T10:20:30.7", "1969-12-31T23:59:59.5"])
    frame = pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "rating": [4.0, 5.0], "timestamp": times})
    frame.to_parquet(path)
    assert read_table(path).timestamp.tolist() == [963397230, -1]
    frame["timestamp"] = times.tz_localize("Europe/Berlin")  # zoned: converted to UTC
    frame.to_parquet(path)
    assert read_table(path).timestamp.tolist() == [963397230 - 7200, -1 - 3600]
    frame["timestamp"] = [pd.Timestamp("2000-07-12").date(), pd.Timestamp("2000-07-13").date()]
    frame.to_parquet(path)  # a date32 column
    assert read_table(path).timestamp.tolist() == [963360000, 963446400]


def test_int_column_positions_with_and_without_a_header(tmp_path):
    """An integer is a column position (the header's j-th column, or the file's); without a
    header a field left at its name takes its default place; a name there, a position past the
    header or two fields on one column are errors naming the key."""
    path = tmp_path / "log.tsv"
    path.write_text("100\tu1\ti10\t4\n50\tu2\ti20\t3\n")
    cols = ColumnsConfig(user=1, item=2, rating=3, timestamp=0, sep="\t", header=False)
    check_frame(read_table(path, cols), ["u1", "u2"], ["i10", "i20"], [4, 3], [100, 50])
    plain = tmp_path / "plain.csv"
    plain.write_text("u1,i10,4,100\nu2,i20,3,50\n")
    cols = ColumnsConfig(timestamp=3, header=False)  # the others at their default places
    check_frame(read_table(plain, cols), ["u1", "u2"], ["i10", "i20"], [4, 3], [100, 50])
    with pytest.raises(DataError, match=r"data\.columns\.user is the name 'uid', but the file has no header"):
        read_table(plain, ColumnsConfig(user="uid", header=False))
    with pytest.raises(
        DataError, match=r"data\.columns\.user and data\.columns\.rating read the same column"
    ):
        read_table(plain, ColumnsConfig(user=2, header=False))
    headed = tmp_path / "headed.csv"
    headed.write_text("when;who;what;stars\n100;u1;i10;4\n50;u2;i20;3\n")
    cols = ColumnsConfig(user=1, item="what", rating=3, timestamp=0, sep=";")
    check_frame(read_table(headed, cols), ["u1", "u2"], ["i10", "i20"], [4, 3], [100, 50])
    with pytest.raises(
        DataError, match=rf"^{headed}:1: data\.columns\.rating is column 7, but the header has 4"
    ):
        read_table(headed, ColumnsConfig(user=1, item=2, rating=7, timestamp=0, sep=";"))
    parquet = tmp_path / "log.parquet"
    pd.DataFrame({"t": [100, 50], "u": ["u1", "u2"], "i": ["i10", "i20"], "r": [4.0, 3.0]}).to_parquet(
        parquet
    )
    cols = ColumnsConfig(user=1, item=2, rating="r", timestamp=0)
    check_frame(read_table(parquet, cols), ["u1", "u2"], ["i10", "i20"], [4, 3], [100, 50])


def test_a_two_character_separator_in_a_generic_file(tmp_path):
    """`data.columns.sep=::` (given on the command line, no quoting) reads an ML-1M-format file
    through the generic reader, by positions."""
    from unigrf.config import load_config

    path = tmp_path / "ratings.dat"
    path.write_text("1::10::4::2000-07-12\n2::20::3::963360001\n")
    cfg = load_config(
        overrides=[
            f"data.path={path}",
            "data.dataset=csv",
            "data.columns.sep=::",
            "data.columns.header=false",
        ]
    )
    df, _ = read_interactions(cfg.data)
    check_frame(df, ["1", "2"], ["10", "20"], [4, 3], [963360000, 963360001])
    path.write_text("1::10::4::100\n1:11:4:101\n")
    with pytest.raises(DataError, match=rf"^{path}:2: expected 4 fields separated by '::'"):
        read_interactions(cfg.data)


def test_movietweetings_reads_ml1m_format_on_a_0_to_10_scale(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::0114508::8::1381006850\n2::0208092::0::1586466072\n")
    df, sources = read_interactions(DataConfig(dataset="movietweetings", data_dir=str(tmp_path)))
    check_frame(df, ["1", "2"], ["0114508", "0208092"], [8, 0], [1381006850, 1586466072])
    assert sources == [tmp_path / "ratings.dat"]
    (tmp_path / "ratings.dat").write_text("1::0114508::11::1381006850\n")
    with pytest.raises(DataError, match=r":1: rating 11 is outside rating_scale \[0, 10\]"):
        read_interactions(DataConfig(dataset="movietweetings", data_dir=str(tmp_path)))


def test_parquet_with_column_mapping_and_bad_row(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {"u": ["a", "b", "c"], "i": ["x", "y", "z"], "r": [1.0, 5.0, 9.0], "t": [3, 2, 1]}
    ).to_parquet(path)
    cols = ColumnsConfig(user="u", item="i", rating="r", timestamp="t")
    with pytest.raises(DataError, match=rf"^{path}:3: rating 9 is outside rating_scale \[1, 5\]"):
        read_table(path, cols)
    df = read_table(path, cols, on_bad_rows="skip")
    assert df["user"].tolist() == ["a", "b"] and df.attrs["bad_rows"] == 1


@pytest.mark.parametrize(
    "dataset, folder",
    [
        ("ml-100k", "ml-100k"),
        ("ml-1m", "ml-1m"),
        ("ml-20m", "ml-20m"),
        ("amazon-books", "amazon-books"),
        ("amazon-reviews", "amazon-reviews"),
    ],
)
def test_read_interactions_dispatches_on_dataset(dataset, folder):
    df, sources = read_interactions(DataConfig(dataset=dataset, data_dir=str(FIXTURES / folder)))
    assert len(sources) == 1 and sources[0].parent == FIXTURES / folder
    assert len(df) in (12, 7) and df["timestamp"].dtype == np.int64


def test_read_interactions_errors_name_what_to_do(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        read_interactions(DataConfig(dataset="ml-1m"))
    with pytest.raises(DataError, match=r"u\.data: file not found"):
        read_interactions(DataConfig(dataset="ml-100k", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="no reviews_"):
        read_interactions(DataConfig(dataset="amazon-reviews", data_dir=str(tmp_path)))
    for name in ("reviews_A_5.json", "reviews_B_5.json.gz"):
        (tmp_path / name).write_text("{}\n")
    with pytest.raises(DataError, match="2 review files"):
        read_interactions(DataConfig(dataset="amazon-reviews", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="needs data.path"):
        read_interactions(DataConfig(dataset="csv"))


def test_synthetic_dispatch():
    from unigrf.config import SyntheticConfig

    df, sources = read_interactions(DataConfig(synthetic=SyntheticConfig(num_users=20, num_items=50)))
    assert sources == [] and len(df) >= 20 * 8


# --------------------------------------------------------------------------------------------
# Timestamps are exact int64
# --------------------------------------------------------------------------------------------


def test_timestamps_are_exact_int64_even_beyond_float_precision(tmp_path):
    path = tmp_path / "u.data"
    big = 1_700_000_000_123_456_789  # ns since epoch: not representable in a float64
    path.write_text(f"1\t1\t5\t{big}\n1\t2\t5\t{big + 1}\n")
    df = read_ml100k(path)
    assert df["timestamp"].dtype == np.int64 and df["timestamp"].tolist() == [big, big + 1]
    # also on the slow (validating) path, taken when any row is bad
    path.write_text(f"1\t1\t5\t{big}\n1\t2\t5\t{big + 1}\n1\t3\t5\tnot-a-time\n")
    df = read_ml100k(path, on_bad_rows="skip")
    assert df["timestamp"].tolist() == [big, big + 1] and df.attrs["bad_rows"] == 1


def test_float32_timestamps_would_merge_ties(ml100k_dir):
    """The pitfall the int64 contract prevents: float32 keeps 24 bits, so 1998-era seconds are
    rounded to multiples of 64 s and distinct times become ties, changing test targets."""
    df = read_ml100k(ml100k_dir / "u.data")
    ts = df["timestamp"].to_numpy()
    assert ts.dtype == np.int64 and ts.min() == 874724710 and ts.max() == 893286638
    as_f32 = ts.astype(np.float32)
    assert len(np.unique(as_f32)) < 0.6 * len(np.unique(ts))  # 49,282 distinct times -> 27,431

    users = pd.factorize(df["user"])[0]
    rows = np.arange(len(df))

    def last_items(times: np.ndarray) -> np.ndarray:
        order = np.lexsort((rows, times, users))
        last = np.r_[np.flatnonzero(np.diff(users[order])), len(order) - 1]
        return df["item"].to_numpy()[order][last]

    changed = np.mean(last_items(ts) != last_items(as_f32.astype(np.float64)))
    assert changed > 0.10, changed  # measured 15.8 % (SPEC §3: up to 16 %)


# --------------------------------------------------------------------------------------------
# Bad input: DataError naming file and line; skip mode drops and counts
# --------------------------------------------------------------------------------------------

GOOD = "1\t10\t4\t100\n"


@pytest.mark.parametrize(
    "content, line, what",
    [
        (GOOD + "1,11,4,101\n", 2, "expected 4 fields separated by TAB"),  # wrong separator
        (GOOD + GOOD + "1\t11\t4\n", 3, "expected 4 fields separated by TAB"),  # missing field
        (GOOD + "1\t11\t4\t101\t7\n", 2, "too many fields"),
        (GOOD + "1\t11\tfive\t101\n", 2, "rating 'five' is not a number"),
        (GOOD + "1\t11\t4\tyesterday\n", 2, "timestamp 'yesterday' is not a number or an ISO 8601 date"),
        (GOOD + "1\t11\t4\t12:30\n", 2, "timestamp '12:30' is not a number or an ISO 8601 date"),
        (GOOD + "1\t11\t4\t2000-02-30\n", 2, "timestamp '2000-02-30' is not a number or an ISO 8601"),
        (GOOD + "1\t11\t4\t2000-07-12T25:00\n", 2, "timestamp '2000-07-12T25:00' is not a number"),
        (GOOD + "1\t11\t4\t2000-07\n", 2, "timestamp '2000-07' is not a number or an ISO 8601 date"),
        (GOOD + "1\t11\t4\tinf\n", 2, "timestamp 'inf' is not a number or an ISO 8601 date"),
        (GOOD + "\n" + "1\t11\t7\t101\n", 3, "rating 7 is outside rating_scale [1, 5]"),  # blank line counted
        (GOOD + "1\t11\t0\t101\n", 2, "rating 0 is outside rating_scale [1, 5]"),
        ("", 1, "empty file"),
        ("\n\n", 1, "empty file"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, content, line, what):
    path = tmp_path / "u.data"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_ml100k(path)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert what in str(err.value)
    assert isinstance(err.value, ValueError)


def test_skip_mode_drops_and_counts_bad_rows(tmp_path):
    path = tmp_path / "u.data"
    path.write_text(
        "1\t10\t4\t100\n"  # line 1 ok
        "1\t11\t4\t101\t9\n"  # line 2 too many fields (dropped by the parser itself)
        "1\t12\tx\t102\n"  # line 3 bad rating
        "\n"  # line 4 blank: ignored, not counted
        "2\t13\t5\t103\n"  # line 5 ok
        "2\t14\t9\t104\n"  # line 6 out of scale
        "2,15,3,105\n"  # line 7 wrong separator
        "2\t16\t3\t106\n"  # line 8 ok
    )
    df = read_ml100k(path, on_bad_rows="skip")
    assert df["item"].tolist() == ["10", "13", "16"]
    assert df["timestamp"].tolist() == [100, 103, 106]
    assert df.attrs["bad_rows"] == 4
    assert df.attrs["first_bad_row"].startswith(f"{path}:2: too many fields")
    with pytest.raises(DataError, match=rf"^{path}:2: too many fields"):
        read_ml100k(path)


def test_skip_mode_with_nothing_valid_is_an_error(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("a,b,c,d\n")
    with pytest.raises(DataError, match=rf"^{path}:1: .*no valid row"):
        read_ml100k(path, on_bad_rows="skip")


@pytest.mark.parametrize(
    "content, line, what",
    [
        ("1::10::4::100\n1:11:4:101\n", 2, "separated by '::'"),
        ("1::10::4::100\n1\t11\t4\t101\n", 2, "separated by '::'"),
        ("1::10::4::100\n1::11::4\n", 2, "separated by '::'"),
        ("1::10::4::100\n1::11::4::101::3\n", 2, "too many fields"),
        ("1::10::4::100\n1::11::4.5x::101\n", 2, "is not a number"),
    ],
)
def test_ml1m_separator_errors(tmp_path, content, line, what):
    path = tmp_path / "ratings.dat"
    path.write_text(content)
    with pytest.raises(DataError, match=rf"^{path}:{line}: .*{what}"):
        read_ml1m(path)


def test_ml20m_header_and_half_star_scale(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match=rf"^{path}:1: expected the header"):
        read_ml20m(path)
    path.write_text("userId,movieId,rating,timestamp\n1,2,3.5,4\n1,3,6.0,5\n")
    with pytest.raises(DataError, match=rf"^{path}:3: rating 6 is outside rating_scale \[0.5, 5\]"):
        read_ml20m(path)


def test_rating_scale_comes_from_the_config(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,2,0.5,4\n")
    df, _ = read_interactions(DataConfig(dataset="ml-20m", path=str(path)))
    assert df["rating"].tolist() == [0.5]  # ml-20m resolves to (0.5, 5)
    with pytest.raises(DataError, match=rf"^{path}:2: rating 0.5 is outside"):
        read_interactions(DataConfig(dataset="ml-20m", path=str(path), rating_scale=(1.0, 5.0)))


def test_json_bad_lines(tmp_path):
    path = tmp_path / "reviews_X_5.json"
    good = '{"reviewerID": "u", "asin": "i", "overall": 5.0, "unixReviewTime": 10}\n'
    path.write_text(good + "{not json\n" + good)
    with pytest.raises(DataError, match=rf"^{path}:2: not a JSON object"):
        read_amazon_reviews(path)
    df = read_amazon_reviews(path, on_bad_rows="skip")
    assert len(df) == 2 and df.attrs["bad_rows"] == 1
    path.write_text(good + '{"reviewerID": "u", "asin": "j", "unixReviewTime": 11}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: missing field"):
        read_amazon_reviews(path)
    path.write_text(good + "\n" + '{"reviewerID": "u", "asin": "j", "overall": 8, "unixReviewTime": 11}\n')
    with pytest.raises(DataError, match=rf"^{path}:3: rating 8 is outside"):
        read_amazon_reviews(path)
    path.write_text("")
    with pytest.raises(DataError, match=rf"^{path}:1: empty file"):
        read_amazon_reviews(path)


def test_generic_csv_header_must_name_the_mapped_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,score,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match=rf"^{path}:1: header lacks column\(s\) 'rating'"):
        read_table(path, ColumnsConfig())


def test_dataset_parquet_reads_parquet_whatever_the_suffix(tmp_path):
    path = tmp_path / "log.data"
    pd.DataFrame(
        {"user": ["a", ""], "item": ["x", "y"], "rating": [1.0, 2.0], "timestamp": [1, 2]}
    ).to_parquet(path)
    with pytest.raises(DataError, match=rf"^{path}:2: missing field"):  # an empty id
        read_interactions(DataConfig(dataset="parquet", path=str(path)))
    df, _ = read_interactions(DataConfig(dataset="parquet", path=str(path), on_bad_rows="skip"))
    assert df["user"].tolist() == ["a"] and df.attrs["bad_rows"] == 1
