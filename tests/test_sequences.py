"""Training windows (`SequenceData.train_examples`, `data.train_windows`): which items of each
user's training part an epoch trains on, and what a window's batch holds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unigrf.data.sequences import TRAIN_WINDOWS, SequenceData


def unique_items(lengths: list[int], max_len: int) -> SequenceData:
    """Users with the given sequence lengths; every interaction its own item id (its flat index
    + 1), so an item id says exactly which interaction it is."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = [np.arange(offsets[u], offsets[u + 1]) + 1 for u in range(len(lengths))]
    ratings = [np.where(x % 3 == 0, 5.0, 2.0) for x in items]
    return SequenceData.from_arrays(items, ratings, max_len=max_len, num_items=int(offsets[-1]))


def targets(data: SequenceData, scheme: str) -> tuple[np.ndarray, np.ndarray, SequenceData]:
    """(ranking targets, retrieval targets) of one pass over every window of `scheme`, as the
    interactions' flat indices (item id - 1), with repeats."""
    ex = data.train_examples(scheme)
    batch = data.train_batch(ex.users, ex.ends)
    items, nxt = batch["items"].numpy(), batch["next_items"].numpy()
    return items[items > 0] - 1, nxt[nxt > 0] - 1, ex


def training_part(data: SequenceData) -> np.ndarray:
    """Flat indices of every interaction before the users' validation items."""
    return np.concatenate(
        [np.arange(data.offsets[u], data.offsets[u + 1] - 2) for u in range(data.num_users)]
    )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(3, 60), min_size=1, max_size=12), max_len=st.integers(2, 25))
def test_all_windows_make_every_training_interaction_a_target_once(lengths, max_len):
    """Every training interaction but a user's first is a retrieval target exactly once; every
    one is a ranking target, and only the item two consecutive windows share is one twice;
    nothing after the training part (validation, test) is ever a target; windows hold at most
    max_len items and each user's first window starts at its first item."""
    data = unique_items(lengths, max_len)
    ranking, retrieval, ex = targets(data, "all")
    part = training_part(data)
    firsts = data.offsets[:-1]
    assert sorted(retrieval) == sorted(set(part) - set(firsts))  # each once, the firsts never
    counts = np.bincount(ranking, minlength=len(data.items))
    assert set(np.flatnonzero(counts)) == set(part)
    windows = np.bincount(ex.users, minlength=data.num_users)
    assert (counts[part] <= 2).all() and int((counts == 2).sum()) == int((windows - 1).sum())
    assert (ex.lengths <= max_len).all() and (ex.lengths >= 1).all()
    assert ex.per_epoch == len(ex)
    n_train = data.lengths - 2
    expected = 1 + np.ceil(np.maximum(n_train - max_len, 0) / (max_len - 1)).astype(int)
    assert windows.tolist() == expected.tolist()
    starts = ex.ends - ex.lengths
    assert all(starts[ex.users == u].min() == 0 for u in range(data.num_users))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(lengths=st.lists(st.integers(3, 60), min_size=1, max_size=12), max_len=st.integers(2, 25))
def test_last_windows_are_the_last_max_len_items(lengths, max_len):
    """`last`: one window per user (example u is user u), its training part's last max_len items
    — the longer histories' earlier items never train."""
    data = unique_items(lengths, max_len)
    ranking, _, ex = targets(data, "last")
    assert ex.users.tolist() == list(range(data.num_users)) and ex.per_epoch == data.num_users
    assert ex.lengths.tolist() == data.train_lengths.tolist()
    kept = np.concatenate(
        [
            np.arange(data.offsets[u] + n - k, data.offsets[u] + n)
            for u, (n, k) in enumerate(zip(data.lengths - 2, ex.lengths))
        ]
    )
    assert sorted(ranking) == sorted(kept)


def test_last_batches_are_todays_batches_bit_for_bit():
    """A `last` example batch equals the user batch of before (`train_batch(users)`)."""
    data = unique_items([3, 9, 30, 61, 4], 8)
    ex = data.train_examples("last")
    ids = np.array([3, 0, 2, 4, 1])
    by_user, by_example = data.train_batch(ids), data.train_batch(ex.users[ids], ex.ends[ids])
    assert by_user.keys() == by_example.keys()
    for key in by_user:
        assert torch.equal(by_user[key], by_example[key]), key


def test_a_window_batch_keeps_the_conventions_of_the_last_window():
    """An earlier window: right-padded items/feedback/likes/timestamps, next_items shifted by
    one inside the window (its last position has none: the next window's first retrieval
    target is that item), history = every item of the user before the window's end."""
    data = unique_items([25], 10)  # training part: items 1..23 (flat 0..22)
    ex = data.train_examples("all")
    assert ex.ends.tolist() == [5, 14, 23] and ex.lengths.tolist() == [5, 10, 10]
    batch = data.train_batch(ex.users, ex.ends)
    assert batch["items"][0].tolist() == [1, 2, 3, 4, 5, 0, 0, 0, 0, 0]
    assert batch["next_items"][0].tolist() == [2, 3, 4, 5, 0, 0, 0, 0, 0, 0]
    assert batch["items"][1].tolist() == list(range(5, 15))  # shares item 5 with the first
    assert batch["next_items"][1].tolist() == [*range(6, 15), 0]
    assert batch["lengths"].tolist() == [5, 10, 10]
    assert batch["history"][0].tolist()[:5] == [1, 2, 3, 4, 5] and (batch["history"][0][5:] == 0).all()
    assert batch["history"][1].tolist()[:14] == list(range(1, 15))
    assert batch["history"][2].tolist() == list(range(1, 24))  # the whole training part
    likes = (data.ratings[np.arange(5, 15) - 1] >= data.like_threshold).astype(np.float32)
    assert batch["likes"][1].tolist() == likes.tolist()
    assert (batch["feedback"][0, 5:] == 0).all() and (batch["feedback"][0, :5] > 0).all()
    with pytest.raises(ValueError, match="beyond the user's training part"):
        data.train_batch(np.array([0]), np.array([24]))


def test_sample_draws_as_many_windows_as_users_from_all():
    data = unique_items([3, 9, 30, 61, 4], 8)
    all_, sample = data.train_examples("all"), data.train_examples("sample")
    assert np.array_equal(all_.users, sample.users) and np.array_equal(all_.ends, sample.ends)
    assert sample.per_epoch == data.num_users < len(sample)
    expected = all_.targets_per_epoch()
    share = data.num_users / len(all_)
    assert sample.targets_per_epoch()["ranking"] == pytest.approx(expected["ranking"] * share)


def test_targets_per_epoch_counts_tokens():
    data = unique_items([3, 9, 30, 61, 4], 8)  # training parts 1, 7, 28, 59, 2: 97 items
    assert data.train_examples("all").targets_per_epoch() == {
        "examples": 1 + 1 + 4 + 9 + 1,
        "ranking": 97 + 3 + 8,  # the shared items count twice
        "retrieval": 97 - 5,  # all but each user's first
    }
    last = data.train_examples("last").targets_per_epoch()
    assert last == {"examples": 5, "ranking": 1 + 7 + 8 + 8 + 2, "retrieval": 0 + 6 + 7 + 7 + 1}


def test_bad_scheme_and_max_len_are_refused():
    data = unique_items([5], 4)
    with pytest.raises(ValueError, match="train windows must be one of"):
        data.train_examples("every")
    with pytest.raises(ValueError, match="need max_len >= 2"):
        dataclasses.replace(data, max_len=1).train_examples("all")
    assert set(TRAIN_WINDOWS) == {"all", "last", "sample"}
