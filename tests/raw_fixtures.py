"""Tiny hand-made raw files in each supported format, written to a temporary directory.

They are kept here as strings rather than as files under tests/ because their names are the real
datasets' (`u.data`, `ratings.dat`, ...), which the readers look for and which must never be
committed as files. No real data: 12 interactions of 4 users, invented.

Tiny hand-made files in each supported raw format (a few lines each; no real data):

- `ml-100k/u.data`, `ml-1m/ratings.dat`, `ml-20m/ratings.csv`: the same 12 interactions of 4
  users (TAB, `::`, and CSV with header and half stars). User 1 has a tie (items 10 then 30 at
  t=100); users 2 and 3 have ties too, user 3's three items share one timestamp and appear in
  the file as 30, 10, 20 (an order no sort by item would give); user 4 has only 2
  interactions (dropped by prepare: leave-one-out needs 3).
- `amazon-books/ratings_Books.csv`: SNAP ratings-only CSV; item `0001234567` checks that ids
  stay strings (leading zeros kept).
- `amazon-reviews/reviews_Tiny_5.json`: Amazon 2014 review JSON lines (same interactions).
- `generic/log.csv`: `;`-separated with a header naming the columns in another order.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

FILES: dict[str, str] = {
    "amazon-books/ratings_Books.csv": (
        "AUSER1,0001234567,4.0,1393545600\n"
        "AUSER2,B00002,3.0,1363392000\n"
        "AUSER1,B00003,5.0,1393545600\n"
        "AUSER1,B00004,2.0,1377648000\n"
        "AUSER2,B00005,1.0,1363392000\n"
        "AUSER1,B00006,4.0,1400000000\n"
        "AUSER2,B00007,5.0,1364000000\n"
    ),
    "amazon-reviews/reviews_Tiny_5.json": (
        '{"reviewerID": "AUSER1", "asin": "0001234567", "reviewerName": "ann", "helpful": [0, 0], "reviewText": "fine", "overall": 4.0, "summary": "ok", "unixReviewTime": 1393545600, "reviewTime": "02 28, 2014"}\n'
        '{"reviewerID": "AUSER2", "asin": "B00002", "reviewerName": "bob", "helpful": [1, 2], "reviewText": "meh", "overall": 3.0, "summary": "meh", "unixReviewTime": 1363392000, "reviewTime": "03 16, 2013"}\n'
        '{"reviewerID": "AUSER1", "asin": "B00003", "helpful": [0, 0], "reviewText": "great", "overall": 5.0, "summary": "great", "unixReviewTime": 1393545600, "reviewTime": "02 28, 2014"}\n'
        '{"reviewerID": "AUSER1", "asin": "B00004", "reviewerName": "ann", "helpful": [0, 0], "reviewText": "bad", "overall": 2.0, "summary": "bad", "unixReviewTime": 1377648000, "reviewTime": "08 28, 2013"}\n'
        '{"reviewerID": "AUSER2", "asin": "B00005", "reviewerName": "bob", "helpful": [0, 0], "reviewText": "awful", "overall": 1.0, "summary": "no", "unixReviewTime": 1363392000, "reviewTime": "03 16, 2013"}\n'
        '{"reviewerID": "AUSER1", "asin": "B00006", "reviewerName": "ann", "helpful": [0, 0], "reviewText": "nice", "overall": 4.0, "summary": "nice", "unixReviewTime": 1400000000, "reviewTime": "05 13, 2014"}\n'
        '{"reviewerID": "AUSER2", "asin": "B00007", "reviewerName": "bob", "helpful": [3, 3], "reviewText": "best", "overall": 5.0, "summary": "best", "unixReviewTime": 1364000000, "reviewTime": "03 23, 2013"}\n'
    ),
    "generic/log.csv": ("ts;uid;iid;stars;extra\n100;u1;i10;4;x\n50;u2;i20;3;y\n100;u1;i30;5;z\n"),
    "ml-100k/u.data": (
        "1\t10\t4\t100\n"
        "2\t20\t3\t50\n"
        "1\t30\t5\t100\n"
        "1\t5\t2\t90\n"
        "2\t21\t1\t50\n"
        "1\t40\t4\t200\n"
        "2\t22\t5\t60\n"
        "3\t30\t4\t10\n"
        "3\t10\t5\t10\n"
        "4\t10\t3\t70\n"
        "3\t20\t2\t10\n"
        "4\t20\t4\t80\n"
    ),
    "ml-1m/ratings.dat": (
        "1::10::4::100\n"
        "2::20::3::50\n"
        "1::30::5::100\n"
        "1::5::2::90\n"
        "2::21::1::50\n"
        "1::40::4::200\n"
        "2::22::5::60\n"
        "3::30::4::10\n"
        "3::10::5::10\n"
        "4::10::3::70\n"
        "3::20::2::10\n"
        "4::20::4::80\n"
    ),
    "ml-20m/ratings.csv": (
        "userId,movieId,rating,timestamp\n"
        "1,10,4.0,100\n"
        "2,20,3.5,50\n"
        "1,30,5.0,100\n"
        "1,5,0.5,90\n"
        "2,21,1.0,50\n"
        "1,40,4.5,200\n"
        "2,22,5.0,60\n"
        "3,30,4.0,10\n"
        "3,10,5.0,10\n"
        "4,10,3.0,70\n"
        "3,20,2.5,10\n"
        "4,20,4.0,80\n"
    ),
}


def write_fixtures(root: Path) -> Path:
    """Write every file of `FILES` under `root` (created) and return `root`."""
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@cache
def fixtures_dir() -> Path:
    """One temporary copy per test process, removed when the process exits."""
    root = Path(tempfile.mkdtemp(prefix="unigrf-fixtures-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_fixtures(root)


def write_random_ratings(
    folder: Path, seed: int = 0, users: int = 60, items: int = 30, per_user: int = 12
) -> Path:
    """A small random MovieTweetings-format file (`user::item::rating::timestamp`, ratings 0-10)
    in `folder` (created): each user rates `per_user` distinct items, one every 100 s. The grid
    tests' data: another `seed` is other data under the same name."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = []
    for user in range(users):
        for t, item in enumerate(rng.choice(items, size=per_user, replace=False)):
            lines.append(f"{user}::{item:07d}::{rng.integers(0, 11)}::{1_600_000_000 + 100 * t}")
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    return folder
