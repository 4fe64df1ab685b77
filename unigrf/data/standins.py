"""Shape-matched stand-ins for the paper's datasets, written in their own file formats.

The real ML-1M, ML-20M and Amazon-Books files are not always at hand; their shape is. A
stand-in has the published number of users, items and ratings, a history-length distribution
with the published floor, median and maximum, an item-popularity long tail with the published
floor and most-rated count, and the published rating histogram, and it is written as the file
the dataset's reader expects (`ratings.dat`, `ratings.csv`, `ratings_Books.csv`) with ids of the
real files' width. So `unigrf train configs/ml-20m.yaml data.data_dir=<stand-in dir>` runs the
real reader, prepare, training and evaluation at the real size with nothing else changed.

What a stand-in is not: a sample of the data. Items are dealt to users by popularity alone
(no sequential or taste structure) and ratings are drawn from the histogram independently of
user and item, so a model learns nothing beyond popularity from it: it is for time and memory,
never for quality numbers.

How the shape is met, exactly where it can be:
- item counts and history lengths alike: the floor (`item_min`, `user_min`) plus a log-normal
  whose median and mean give the published median and mean, the largest set to the published
  maximum (`item_max`, `user_max`), then scaled so they sum to `ratings` exactly;
- the pairing: one token per rating of each item, most-rated items first, dealt to the users
  column by column (every user's first slot, in a random user order, then every second slot...);
  a user dealt an item twice swaps the repeat with a random other token, round after round, until
  no user holds an item twice (both marginals are unchanged by a swap). `max_rounds` bounds it; what
  is left is counted in the stats (`repeated_pairs`).
- timestamps: each user starts at a uniform time in the dataset's collection period and rates at
  exponential gaps, a share `tie_share` of them in the same second as the previous one; rows are
  written in timestamp order per user (MovieLens' files are sorted by user, Amazon's by item:
  ours are shuffled for Amazon, so the reader's file-order tie rule is exercised).

Memory: a few int64 arrays of `ratings` entries (about 50 bytes per rating at the peak), and the
file is written in chunks of `WRITE_CHUNK` rows. Pure numpy/pandas (no Ray, no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

WRITE_CHUNK = 1_000_000  # rows formatted and written at a time


@dataclass(frozen=True)
class StandinSpec:
    """The published shape of one dataset (docs: `STANDINS`' comments give each source)."""

    name: str  # the `data.dataset` whose reader reads the file
    file: str  # the file name inside the data dir
    users: int
    items: int
    ratings: int
    user_min: int  # fewest ratings of a user
    user_median: float
    user_max: int
    item_min: int  # fewest ratings of an item
    item_median: float
    item_max: int  # ratings of the most-rated item
    rating_values: tuple[float, ...]
    rating_shares: tuple[float, ...]  # share of each rating value (sums to 1)
    period: tuple[int, int]  # first and last timestamp, seconds since 1970
    tie_share: float = 0.3  # share of a user's ratings in the same second as the previous one
    sources: dict[str, str] = field(default_factory=dict)  # statistic -> where it is published

    @property
    def user_mean(self) -> float:
        return self.ratings / self.users

    def scaled(self, ratings: int) -> StandinSpec:
        """The same shape at `ratings` ratings: the users in proportion (the history-length
        distribution kept), the catalogue kept as long as its floors take at most half the ratings
        (else cut to that), the most-rated item's count in proportion."""
        if ratings < 1:
            raise ValueError(f"ratings must be >= 1, got {ratings}")
        f = ratings / self.ratings
        users = max(int(round(self.users * f)), 1)
        # the catalogue's floors take at most half the ratings: the rest makes the long tail
        items = max(min(self.items, ratings // (2 * self.item_min)), 1)
        user_max = min(self.user_max, items)
        if users * self.user_min > ratings or users * user_max < ratings or items < 1:
            raise ValueError(
                f"{self.name}: {ratings:,} ratings cannot give {users:,} users {self.user_min}.."
                f"{user_max} ratings each and every item {self.item_min}"
            )
        return _replace(
            self,
            users=users,
            items=items,
            ratings=ratings,
            user_max=user_max,
            user_median=min(self.user_median, user_max),
            item_median=min(self.item_median, max(self.item_max * f, self.item_min + 1)),
            item_max=int(min(max(self.item_max * f, self.item_min + 1), users)),
        )


def _replace(spec: StandinSpec, **changes: object) -> StandinSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


# The published statistics. Users, items and ratings: the GroupLens READMEs (ML-1M, ML-20M:
# "each user has rated at least 20 movies") and the HSTU paper's Table 2 (Amazon-Books 5-core,
# the file `configs/amazon-books.yaml` reads, as HSTU's preprocessing filters it). Medians, maxima
# and rating histograms of MovieLens: counted from the files in many public analyses (not
# re-counted here: the files are not on this machine). Amazon-Books' median and maxima are not
# published that we know of: assumed values, marked "assumed" in `sources`.
STANDINS: dict[str, StandinSpec] = {
    "ml-1m": StandinSpec(
        name="ml-1m",
        file="ratings.dat",
        users=6_040,
        items=3_706,
        ratings=1_000_209,
        user_min=20,
        user_median=96,
        user_max=2_314,
        item_min=1,
        item_median=123.5,
        item_max=3_428,
        rating_values=(1.0, 2.0, 3.0, 4.0, 5.0),
        rating_shares=(0.0562, 0.1075, 0.2611, 0.3489, 0.2263),
        period=(956_703_932, 1_046_454_590),  # 2000-04-25 .. 2003-02-28
        tie_share=0.4,
        sources={
            "users, items, ratings, user_min": "GroupLens ml-1m README",
            "user_median, user_max, item_median, item_max, rating_shares": "counted from ratings.dat (public analyses)",
        },
    ),
    "ml-20m": StandinSpec(
        name="ml-20m",
        file="ratings.csv",
        users=138_493,
        items=26_744,
        ratings=20_000_263,
        user_min=20,
        user_median=68,
        user_max=9_254,
        item_min=1,
        item_median=18,
        item_max=67_310,
        rating_values=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
        rating_shares=(0.0120, 0.0340, 0.0140, 0.0716, 0.0441, 0.2140, 0.1103, 0.2775, 0.0770, 0.1455),
        period=(789_652_009, 1_427_784_002),  # 1995-01-09 .. 2015-03-31
        tie_share=0.3,
        sources={
            "users, items, ratings, user_min, period": "GroupLens ml-20m README",
            "user_median, user_max, item_median, item_max, rating_shares": "counted from ratings.csv (public analyses)",
        },
    ),
    "amazon-books": StandinSpec(
        name="amazon-books",
        file="ratings_Books.csv",
        users=694_897,
        items=686_624,
        ratings=10_053_086,
        user_min=5,
        user_median=8,
        user_max=5_000,
        item_min=5,
        item_median=8,
        item_max=8_000,
        rating_values=(1.0, 2.0, 3.0, 4.0, 5.0),
        rating_shares=(0.04, 0.05, 0.10, 0.23, 0.58),
        period=(832_550_400, 1_406_073_600),  # 1996-05 .. 2014-07 (the 2014 dump)
        tie_share=0.2,
        sources={
            "users, items, ratings": "HSTU paper (Zhai et al., ICML 2024), Table 2: the 5-core of ratings_Books.csv",
            "user_min, item_min": "the 5-core filter",
            "user_median, user_max, item_median, item_max, rating_shares": "assumed (not published that we know of)",
        },
    ),
}


# --------------------------------------------------------------------------------------------
# The marginals
# --------------------------------------------------------------------------------------------


def item_counts(spec: StandinSpec, rng: np.random.Generator) -> np.ndarray:
    """[items] int64 ratings per item (item i is raw id i): the floor plus a log-normal with the
    published median and mean, the most-rated item at `item_max`; sums to `spec.ratings`."""
    return _long_tail(
        spec.items, spec.ratings, spec.item_min, spec.item_median, spec.item_max, rng, spec.name
    )


def user_lengths(spec: StandinSpec, rng: np.random.Generator) -> np.ndarray:
    """[users] int64 ratings per user: the floor plus a log-normal with the published median and
    mean, the longest history at `user_max` (at most the catalogue: no repeats); sums to
    `spec.ratings`."""
    cap = min(spec.user_max, spec.items)
    return _long_tail(spec.users, spec.ratings, spec.user_min, spec.user_median, cap, rng, spec.name)


def _long_tail(
    n: int, total: int, floor: int, median: float, cap: int, rng: np.random.Generator, name: str
) -> np.ndarray:
    """[n] int64 counts in floor..cap summing to `total` exactly: floor + a log-normal whose
    median is `median - floor` and whose mean makes the total, the largest set to `cap`; the
    part above the floor is scaled to the exact total (re-capping until it holds)."""
    if n * floor > total or n * cap < total:
        raise ValueError(f"{name}: {total:,} ratings cannot be shared by {n:,} holding {floor}..{cap} each")
    need = total - n * floor
    width = cap - floor
    mid = max(median - floor, 0.5)
    mean = max(need / n, mid)
    sigma = math.sqrt(2 * math.log(mean / mid)) if mean > mid else 0.0
    above = rng.lognormal(math.log(mid), sigma, n) if sigma else np.full(n, mid)
    above[np.argmax(above)] = width  # the published maximum
    above = np.minimum(above, width)
    free = np.ones(n, dtype=bool)
    free[np.argmax(above)] = False  # the maximum stays where it is
    for _ in range(50):
        fixed = float(above[~free].sum())
        factor = (need - fixed) / max(float(above[free].sum()), 1e-12)
        scaled = np.where(free, above * factor, above)
        over = free & (scaled > width)
        above = np.minimum(scaled, width)
        if not over.any():
            break
        free &= ~over
    return _share_exactly(need, above / max(above.sum(), 1e-12), cap=width) + floor


def _share_exactly(total: int, shares: np.ndarray, cap: int | None = None) -> np.ndarray:
    """Integers proportional to `shares` [n] that sum to `total` exactly (largest remainders),
    none above `cap`."""
    raw = shares * total
    out = np.floor(raw).astype(np.int64)
    if cap is not None:
        out = np.minimum(out, cap)
    short = int(total - out.sum())
    if short > 0:
        room = np.ones(len(out), dtype=bool) if cap is None else out < cap
        order = np.argsort(-(raw - out) * room, kind="stable")
        take = order[:short]
        out[take] += 1
    return out


# --------------------------------------------------------------------------------------------
# The pairing
# --------------------------------------------------------------------------------------------


def deal(
    lengths: np.ndarray, counts: np.ndarray, rng: np.random.Generator, max_rounds: int = 200
) -> tuple[np.ndarray, int]:
    """Items dealt to users with the given marginals: -> (items [sum(lengths)] int64, user u's at
    positions [offsets[u], offsets[u + 1]); repeated (user, item) pairs left). A user dealt an
    item twice swaps the repeat with a random token whose user lacks that item (and holds not the
    token's), until none is left or `max_rounds`."""
    if int(lengths.sum()) != int(counts.sum()):
        raise ValueError(f"{int(lengths.sum()):,} user slots for {int(counts.sum()):,} item ratings")
    # Deal column by column: the first slot of every user (in a random user order), then the
    # second slot of every user that has one, ...; an item's tokens, laid out one after another,
    # then land on distinct users except where they cross from one column into the next. Laid out
    # most-rated first, the long runs fill the wide first columns (every user has them) and only
    # short runs reach the narrow last ones (the longest histories): few repeats are left for the
    # swaps (a plain shuffle leaves about 6 % of the ratings: dozens of rounds over all of them).
    n_items = len(counts)
    order = np.lexsort((rng.random(n_items), -counts))
    laid = np.repeat(order.astype(np.int64), counts[order])
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    column = np.arange(len(owner)) - np.repeat(offsets, lengths)
    user_order = rng.permutation(len(lengths))[owner]
    slots = np.lexsort((user_order, column))  # slots in dealing order
    tokens = np.empty_like(laid)
    tokens[slots] = laid
    del laid, column, user_order, slots
    repeats = _repeats(owner, tokens, n_items)
    keys = owner * n_items + tokens  # (user, item) of every position
    held = np.sort(keys)  # their multiset, kept sorted across rounds (O(n) updates, no re-sort)
    for _ in range(max_rounds):
        if len(repeats) == 0:
            break
        partners = rng.integers(0, len(tokens), len(repeats))
        # a position swapped twice in one round would undo itself: keep the first swap of each
        both = np.concatenate([repeats, partners])
        _, first = np.unique(both, return_index=True)
        once = np.zeros(len(both), dtype=bool)
        once[first] = True
        ok = once[: len(repeats)] & once[len(repeats) :]
        # and a swap must not give either user an item it already holds
        ok &= ~_holds(held, owner[partners] * n_items + tokens[repeats])
        ok &= ~_holds(held, owner[repeats] * n_items + tokens[partners])
        a, b = repeats[ok], partners[ok]
        moved = np.concatenate([a, b])
        old = keys[moved]
        tokens[a], tokens[b] = tokens[b], tokens[a].copy()
        keys[moved] = owner[moved] * n_items + tokens[moved]
        held = _replace_sorted(held, old, keys[moved])
        # what can repeat now: the repeats not moved, and the moved positions (two swaps of one
        # round may give one user the same item); every copy listed here moves next round, which
        # may move one more than needed and never breaks a pair that was fine
        maybe = np.concatenate([repeats[~ok], moved])
        count = np.searchsorted(held, keys[maybe], "right") - np.searchsorted(held, keys[maybe], "left")
        repeats = np.unique(maybe[count > 1])
    return tokens, len(repeats)


def _replace_sorted(held: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The sorted multiset `held` with one occurrence of each of `old` removed and `new` added."""
    olds = np.sort(old)
    rank = np.arange(len(olds)) - np.searchsorted(olds, olds, "left")  # occurrence among equals
    keep = np.ones(len(held), dtype=bool)
    keep[np.searchsorted(held, olds, "left") + rank] = False
    rest = held[keep]
    news = np.sort(new)
    return np.insert(rest, np.searchsorted(rest, news), news)


def _holds(held: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """[K] bool: whether each (user * n_items + item) key is among the sorted `held` keys."""
    at = np.minimum(np.searchsorted(held, keys), len(held) - 1)
    return held[at] == keys


def _repeats(owner: np.ndarray, tokens: np.ndarray, n_items: int) -> np.ndarray:
    """Positions [R] holding an item its user already holds at an earlier sorted position."""
    key = owner * n_items + tokens
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(key[order][1:] == key[order][:-1]) + 1
    return order[dup]


# --------------------------------------------------------------------------------------------
# The rows and the file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standin:
    """A generated stand-in: the file it was written to and what it holds."""

    path: Path
    spec: StandinSpec
    stats: dict[str, float | int]


def generate_rows(spec: StandinSpec, seed: int = 0) -> tuple[pd.DataFrame, dict[str, float | int]]:
    """The stand-in's rows in file order (columns user, item: int64 0-based; rating float64;
    timestamp int64) and the statistics it achieved."""
    rng = np.random.default_rng(seed)
    counts = item_counts(spec, rng)
    lengths = user_lengths(spec, rng)
    items, repeated = deal(lengths, counts, rng)
    n = len(items)
    user = np.repeat(np.arange(spec.users, dtype=np.int64), lengths)
    first, last = spec.period
    starts = rng.integers(first, max(first + 1, (first + last) // 2), spec.users)
    gaps = rng.exponential(max((last - first) / 2 / max(spec.user_mean, 1), 1.0), n)
    gaps[rng.random(n) < spec.tie_share] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gaps[offsets] = 0  # each user's first rating at its start
    ts = np.cumsum(gaps)
    ts = ts - np.repeat(ts[offsets], lengths) + np.repeat(starts, lengths)
    ts = np.minimum(ts.astype(np.int64), last)
    rating = np.asarray(spec.rating_values)[
        rng.choice(len(spec.rating_values), n, p=np.asarray(spec.rating_shares) / sum(spec.rating_shares))
    ]
    frame = pd.DataFrame({"user": user, "item": items, "rating": rating, "timestamp": ts})
    if spec.name.startswith("amazon"):
        frame = frame.iloc[rng.permutation(n)].reset_index(drop=True)  # not grouped by user
    item_totals = np.bincount(items, minlength=spec.items)
    stats = {
        "users": int(spec.users),
        "items": int(np.count_nonzero(item_totals)),
        "ratings": int(n),
        "user_min": int(lengths.min()),
        "user_median": float(np.median(lengths)),
        "user_mean": round(float(lengths.mean()), 2),
        "user_max": int(lengths.max()),
        "item_min": int(item_totals.min()),
        "item_median": float(np.median(item_totals)),
        "item_max": int(item_totals.max()),
        "top1pct_item_share": round(
            float(np.sort(item_totals)[::-1][: max(spec.items // 100, 1)].sum() / n), 4
        ),
        "repeated_pairs": int(repeated),
    }
    return frame, stats


def _raw_ids(name: str, kind: str, codes: np.ndarray) -> pd.Series:
    """Ids as the real files write them: MovieLens integers from 1; Amazon reviewer ids
    (14 characters, 'A' + base 36) and ASINs (10 digits)."""
    if not name.startswith("amazon"):
        return pd.Series(codes + 1)
    if kind == "item":
        return pd.Series(codes).map("{:010d}".format)
    return pd.Series(codes).map(lambda c: "A" + np.base_repr(int(c) * 7919 + 10**12, 36).rjust(13, "0"))


def _format(spec: StandinSpec, chunk: pd.DataFrame) -> str:
    user = _raw_ids(spec.name, "user", chunk["user"].to_numpy())
    item = _raw_ids(spec.name, "item", chunk["item"].to_numpy())
    ts = chunk["timestamp"].astype(str).to_numpy()
    if spec.name == "ml-1m":  # UserID::MovieID::Rating::Timestamp, integer ratings
        rating = chunk["rating"].astype(np.int64).astype(str).to_numpy()
        cols = [user.astype(str).to_numpy(), item.astype(str).to_numpy(), rating, ts]
        sep = "::"
    else:  # ml-20m: 4.0 / 3.5; amazon: 5.0
        rating = chunk["rating"].map("{:.1f}".format).to_numpy()
        cols = [user.astype(str).to_numpy(), item.astype(str).to_numpy(), rating, ts]
        sep = ","
    lines = cols[0].astype(object)
    for col in cols[1:]:
        lines = lines + sep + col.astype(object)
    return "\n".join(lines) + "\n"


def write_standin(name: str, data_dir: str | Path, ratings: int | None = None, seed: int = 0) -> Standin:
    """Write the stand-in of `name` (a key of STANDINS), optionally scaled to `ratings` ratings,
    as `<data_dir>/<the dataset's file>`; returns its path, spec and achieved statistics.
    The file is written whole or not at all (a temporary name, then a rename)."""
    if name not in STANDINS:
        raise ValueError(f"no stand-in for {name!r}; choose one of {sorted(STANDINS)}")
    spec = STANDINS[name] if ratings is None else STANDINS[name].scaled(ratings)
    frame, stats = generate_rows(spec, seed)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / spec.file
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        if name == "ml-20m":
            fh.write("userId,movieId,rating,timestamp\n")
        for start in range(0, len(frame), WRITE_CHUNK):
            fh.write(_format(spec, frame.iloc[start : start + WRITE_CHUNK]))
    tmp.replace(path)
    return Standin(path, spec, stats)
