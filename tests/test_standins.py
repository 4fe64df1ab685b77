"""Stand-ins have the shape they claim, are read by the dataset's own reader, and prepare."""

from __future__ import annotations

import numpy as np
import pytest

from unigrf.config import DataConfig
from unigrf.data.prepare import load_meta, prepare_dataset
from unigrf.data.readers import read_interactions
from unigrf.data.standins import STANDINS, deal, generate_rows, item_counts, user_lengths, write_standin


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(STANDINS))
def test_marginals_meet_the_published_shape_exactly_where_promised(name):
    spec = STANDINS[name].scaled(60_000)
    rng = np.random.default_rng(0)
    counts = item_counts(spec, rng)
    lengths = user_lengths(spec, rng)
    assert counts.sum() == lengths.sum() == spec.ratings
    assert len(counts) == spec.items and len(lengths) == spec.users
    assert counts.min() >= spec.item_min and lengths.min() >= spec.user_min
    assert lengths.max() <= min(spec.user_max, spec.items)
    assert abs(int(counts.max()) - spec.item_max) <= max(2, 0.02 * spec.item_max)


@pytest.mark.timeout(60)
def test_the_full_size_marginals_of_ml_20m():
    spec = STANDINS["ml-20m"]
    rng = np.random.default_rng(0)
    lengths = user_lengths(spec, rng)
    counts = item_counts(spec, rng)
    assert lengths.sum() == counts.sum() == 20_000_263
    assert lengths.min() == 20 and lengths.max() == 9_254
    assert abs(np.median(lengths) - 68) <= 8  # the log-normal's median, after the exact rescale
    assert abs(int(counts.max()) - 67_310) <= 700


@pytest.mark.timeout(60)
def test_dealing_keeps_both_marginals_and_leaves_no_repeated_pair():
    rng = np.random.default_rng(1)
    lengths = np.array([30, 12, 12, 20, 50, 8, 8])
    counts = np.array([6, 6, 5, 5, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2] + [1] * 86)
    items, left = deal(lengths, counts, rng)
    assert left == 0
    owner = np.repeat(np.arange(len(lengths)), lengths)
    assert np.array_equal(np.bincount(items, minlength=len(counts)), counts)
    assert len({(u, i) for u, i in zip(owner, items)}) == len(items)


@pytest.mark.timeout(60)
def test_scaled_shapes_keep_the_floors_and_refuse_what_cannot_hold_them():
    spec = STANDINS["amazon-books"].scaled(100_000)
    assert spec.user_min == spec.item_min == 5
    assert spec.users * 5 <= 100_000 and spec.items * 5 <= 100_000
    with pytest.raises(ValueError, match="no stand-in"):
        write_standin("netflix", "/nonexistent")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(STANDINS))
def test_written_file_is_read_by_the_datasets_reader_and_prepares_to_its_shape(name, tmp_path):
    standin = write_standin(name, tmp_path / "raw", ratings=20_000, seed=3)
    cfg = DataConfig(dataset=name, data_dir=str(tmp_path / "raw"))
    df, _ = read_interactions(cfg)
    assert len(df) == standin.stats["ratings"] == 20_000
    assert df["user"].nunique() == standin.spec.users
    assert set(df["rating"].unique()) <= set(standin.spec.rating_values)
    prepared = prepare_dataset(cfg, tmp_path / "results", verbose=False)
    meta = load_meta(prepared)
    # already a k-core with every user above the floor: preparing removes nothing
    assert meta["num_interactions"] == 20_000
    assert meta["num_users"] == standin.spec.users
    assert meta["num_items"] == standin.stats["items"]


@pytest.mark.timeout(60)
def test_rows_are_deterministic_per_seed():
    spec = STANDINS["ml-1m"].scaled(5_000)
    a, _ = generate_rows(spec, seed=4)
    b, _ = generate_rows(spec, seed=4)
    c, _ = generate_rows(spec, seed=5)
    assert a.equals(b) and not a.equals(c)
