"""The synthetic generator and its oracle: the log's format, the planted structure (measured),
and the oracle's distributions — valid, and calibrated against what the generator draws."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from unigrf.config import ConfigError, SyntheticConfig
from unigrf.data.synthetic import (
    HELD_OUT,
    SyntheticOracle,
    generate_synthetic,
    like_probability,
    synthetic_oracle,
)

SMALL = SyntheticConfig(num_users=600, num_items=400, mean_seq_len=30, seed=3)
# many short sequences over a small catalogue: 8,000 held-out events with sizeable
# probabilities, so binned calibration has power (each bin holds hundreds of expected hits)
MANY = SyntheticConfig(num_users=4000, num_items=60, num_topics=6, mean_seq_len=6, min_seq_len=3, seed=5)


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return generate_synthetic(SMALL)


@pytest.fixture(scope="module")
def many() -> tuple[pd.DataFrame, SyntheticOracle]:
    return generate_synthetic(MANY), synthetic_oracle(MANY)


def user_sequences(df: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """raw user -> (raw items, ratings) in chronological order, ties in file order (as prepare)."""
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), df["user"].to_numpy()))
    ordered = df.iloc[order]
    return {u: (g["item"].to_numpy(), g["rating"].to_numpy()) for u, g in ordered.groupby("user", sort=False)}


def sequences(df: pd.DataFrame) -> list[np.ndarray]:
    """Per-user item codes in chronological order, ties in file order (as prepare sorts)."""
    users = pd.factorize(df["user"])[0]
    items = pd.factorize(df["item"])[0]
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), users))
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    return np.split(items[order], bounds)


def bigram_hr_at_10(seqs: list[np.ndarray], num_items: int) -> float:
    """Fit next-item counts on the first 80 % of every sequence; HR@10 on the remaining steps
    (fallback: overall popularity when the previous item was never seen as a predecessor)."""
    counts = np.zeros((num_items, num_items))
    popularity = np.zeros(num_items)
    tests = []
    for s in seqs:
        cut = int(0.8 * len(s))
        np.add.at(counts, (s[: cut - 1], s[1:cut]), 1)
        np.add.at(popularity, s[:cut], 1)
        tests.append(np.stack([s[cut - 1 : -1], s[cut:]], axis=1))
    prev, nxt = np.concatenate(tests).T
    scores = counts[prev] + 1e-6 * popularity[None, :]  # popularity breaks ties / fills gaps
    top10 = np.argsort(-scores, axis=1)[:, :10]
    return float(np.mean((top10 == nxt[:, None]).any(axis=1)))


def calibration_z(predicted: np.ndarray, observed: np.ndarray, bins: int = 10) -> np.ndarray:
    """Binned calibration of probabilities `predicted` [M] against 0/1 outcomes `observed` [M]:
    per quantile bin of the prediction, (observed count - expected count) / its standard
    deviation under the prediction. |z| stays below ~4 when the predictions are the truth."""
    edges = np.quantile(predicted, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, predicted, side="right")
    expected = np.bincount(which, weights=predicted, minlength=bins)
    variance = np.bincount(which, weights=predicted * (1 - predicted), minlength=bins)
    hits = np.bincount(which, weights=observed.astype(np.float64), minlength=bins)
    return (hits - expected) / np.sqrt(variance)


def item_pairs(oracle: SyntheticOracle, probs_of: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every (held-out event, item) pair with positive probability: (P(item), item drawn?)."""
    predicted, observed = [], []
    for split, events in oracle.splits.items():
        probs = probs_of[split]
        drawn = pd.Index(oracle.items).get_indexer(events.targets)
        hit = np.zeros(probs.shape, dtype=bool)
        hit[np.arange(len(events)), drawn] = True
        keep = probs > 0
        predicted.append(probs[keep])
        observed.append(hit[keep])
    return np.concatenate(predicted).astype(np.float64), np.concatenate(observed)


# ---------------------------------------------------------------------------------------------
# the log
# ---------------------------------------------------------------------------------------------


def test_columns_and_dtypes(log):
    assert list(log.columns) == ["user", "item", "rating", "timestamp"]
    assert pd.api.types.is_string_dtype(log["user"]) and pd.api.types.is_string_dtype(log["item"])
    assert log["rating"].dtype == np.float64 and log["timestamp"].dtype == np.int64
    lengths = log.groupby("user").size()
    assert len(lengths) == SMALL.num_users and lengths.min() >= SMALL.min_seq_len
    assert abs(lengths.mean() - SMALL.mean_seq_len) < 0.1 * SMALL.mean_seq_len
    assert not log.duplicated(["user", "item"]).any()  # no user sees an item twice
    assert set(log["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 0.3 < (log["rating"] >= 4).mean() < 0.8


def test_deterministic_per_seed(log):
    pd.testing.assert_frame_equal(log, generate_synthetic(SMALL))
    other = generate_synthetic(dataclasses.replace(SMALL, seed=4))
    assert not log.equals(other)
    assert log["item"].head(200).tolist() != other["item"].head(200).tolist()


def test_rows_are_an_event_log_with_ties(log):
    """Rows are in timestamp order (like a log file); within a user a tie keeps generation order,
    and about `tie_probability` of consecutive interactions share their timestamp."""
    assert np.all(np.diff(log["timestamp"].to_numpy()) >= 0)
    users = pd.factorize(log["user"])[0]
    order = np.lexsort((np.arange(len(log)), log["timestamp"].to_numpy(), users))
    ts, us = log["timestamp"].to_numpy()[order], users[order]
    same = us[1:] == us[:-1]
    tied = np.mean(ts[1:][same] == ts[:-1][same])
    assert abs(tied - SMALL.tie_probability) < 0.03, tied
    no_ties = generate_synthetic(dataclasses.replace(SMALL, tie_probability=0.0, num_users=50))
    assert not no_ties.duplicated(["user", "timestamp"]).any()


def test_long_tail_popularity(log):
    """The most popular tenth of the items takes a clearly larger share than without the Zipf
    law (topic tastes alone already make some items more common)."""

    def head_share(df: pd.DataFrame) -> float:
        counts = np.sort(df["item"].value_counts().to_numpy())[::-1]
        return counts[: len(counts) // 10].sum() / counts.sum()

    flat = generate_synthetic(dataclasses.replace(SMALL, popularity_exponent=0.0))
    assert head_share(log) > head_share(flat) + 0.04, (head_share(log), head_share(flat))


def test_sequential_structure_is_learnable(log):
    """A first-order Markov (bigram) predictor fitted on each user's first 80 % predicts the rest
    far better on the real order than on a shuffled copy of the same sequences."""
    seqs = sequences(log)
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(s) for s in seqs]
    hr = bigram_hr_at_10(seqs, SMALL.num_items)
    hr_shuffled = bigram_hr_at_10(shuffled, SMALL.num_items)
    assert hr > hr_shuffled + 0.15 and hr > 2 * hr_shuffled, (hr, hr_shuffled)
    # and the dependence is the transition knobs' doing
    no_transitions = generate_synthetic(
        dataclasses.replace(SMALL, transition_strength=0.0, transition_strength_disliked=0.0)
    )
    assert bigram_hr_at_10(sequences(no_transitions), SMALL.num_items) < hr - 0.1


def test_a_disliked_item_is_followed_less(log):
    """After a disliked item the user follows its successors less (the feedback carries retrieval
    signal): the next item stays in the same topic less often, by more than in a log where both
    transition strengths are equal (dislikes fall on less-liked topics there too)."""
    topic = np.asarray(log.attrs["item_topic"])

    def same_topic_gap(df: pd.DataFrame) -> float:
        same, after_like = [], []
        for items, ratings in user_sequences(df).values():
            codes = items.astype(int)
            same.append(topic[codes[1:]] == topic[codes[:-1]])
            after_like.append(ratings[:-1] >= 4)
        same, after_like = np.concatenate(same), np.concatenate(after_like)
        return same[after_like].mean() - same[~after_like].mean()

    equal = dataclasses.replace(SMALL, transition_strength_disliked=SMALL.transition_strength)
    assert SMALL.transition_strength_disliked < SMALL.transition_strength
    assert same_topic_gap(log) > same_topic_gap(generate_synthetic(equal)) + 0.05


def test_ratings_follow_user_taste(log):
    """Ratings carry a user x topic signal that history reveals: adding the user's mean residual
    (rating - item mean) on the same topic in the first half of their sequence, shrunk towards 0,
    predicts second-half ratings clearly better than the item's mean alone."""
    topic = np.asarray(log.attrs["item_topic"])[log["item"].astype(int).to_numpy()]
    df = log.assign(topic=topic)
    users = pd.factorize(df["user"])[0]
    early = (df.groupby(users).cumcount() < df.groupby(users)["item"].transform("size") // 2).to_numpy()
    first, second = df[early], df[~early]
    item_mean = first.groupby("item")["rating"].mean()
    first = first.assign(residual=first["rating"] - first["item"].map(item_mean))
    agg = first.groupby(["user", "topic"])["residual"].agg(["sum", "count"])
    taste = (agg["sum"] / (agg["count"] + 1)).rename("taste")  # shrunk per user-topic mean
    base = second["item"].map(item_mean).fillna(first["rating"].mean()).to_numpy()
    adjust = second.join(taste, on=["user", "topic"])["taste"].fillna(0.0).to_numpy()
    target = second["rating"].to_numpy()
    err_item = np.mean((target - base) ** 2)
    err_taste = np.mean((target - base - adjust) ** 2)
    assert err_taste < 0.92 * err_item, (err_taste, err_item)


def test_invalid_config_is_a_config_error():
    with pytest.raises(ConfigError, match="mean_seq_len"):
        generate_synthetic(SyntheticConfig(mean_seq_len=5, min_seq_len=8))
    with pytest.raises(ConfigError, match="min_seq_len must be >= 3"):
        generate_synthetic(SyntheticConfig(min_seq_len=2, mean_seq_len=4))
    with pytest.raises(ConfigError, match="transition_strength"):
        generate_synthetic(SyntheticConfig(transition_strength_disliked=-1.0))
    with pytest.raises(ConfigError, match="num_successors"):
        synthetic_oracle(SyntheticConfig(num_successors=0))


# ---------------------------------------------------------------------------------------------
# the oracle
# ---------------------------------------------------------------------------------------------


def test_oracle_describes_the_logs_held_out_events(many):
    """Recording the truth changes no draw: the oracle's events are the log's last two
    interactions of every user (position, item, rating)."""
    log, oracle = many
    seqs = user_sequences(log)
    for split, back in HELD_OUT.items():
        events = oracle.splits[split]
        assert sorted(events.users) == sorted(seqs)
        for e in range(0, len(events), 97):
            items, ratings = seqs[events.users[e]]
            assert events.positions[e] == len(items) - back
            assert events.targets[e] == items[-back] and events.ratings[e] == ratings[-back]


def test_oracle_distributions_are_valid(many):
    """Each event's next-item distribution sums to 1, is 0 on the user's seen history and
    positive on the item drawn; like-probabilities lie in [0, 1]."""
    log, oracle = many
    seqs = user_sequences(log)
    for split, events in oracle.splits.items():
        probs = events.item_probs
        assert probs.dtype == np.float32 and probs.shape == (MANY.num_users, MANY.num_items)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert (probs >= 0).all()
        drawn = pd.Index(oracle.items).get_indexer(events.targets)
        assert (probs[np.arange(len(events)), drawn] > 0).all()
        for e in range(len(events)):
            history = seqs[events.users[e]][0][: events.positions[e]].astype(int)
            assert not probs[e, history].any()
        like = oracle.like_probabilities(split, 4.0)
        assert like.shape == probs.shape and (like >= 0).all() and (like <= 1).all()


def test_item_probabilities_are_calibrated(many):
    """Over all 8,000 held-out events, items predicted with probability p are drawn a fraction
    p of the time, in every probability bin; a mildly tempered oracle (p^0.8, renormalised)
    fails the same check, so the check would catch a wrong oracle."""
    _, oracle = many
    truth = {s: e.item_probs for s, e in oracle.splits.items()}
    z = calibration_z(*item_pairs(oracle, truth))
    assert np.abs(z).max() < 4.0, z
    tempered = {s: p**0.8 / (p**0.8).sum(axis=1, keepdims=True) for s, p in truth.items()}
    z_wrong = calibration_z(*item_pairs(oracle, tempered))
    assert np.abs(z_wrong).max() > 8.0, z_wrong


def test_like_probabilities_are_calibrated(many):
    """The true like-probability of the drawn item matches the realised like rate per bin; the
    same means with twice the rating noise (a wrong closed form) do not."""
    _, oracle = many
    predicted = np.concatenate([oracle.target_like_probabilities(s, 4.0) for s in oracle.splits])
    liked = np.concatenate([e.ratings >= 4.0 for e in oracle.splits.values()])
    z = calibration_z(predicted, liked)
    assert np.abs(z).max() < 4.0, z
    column = {s: pd.Index(oracle.items).get_indexer(e.targets) for s, e in oracle.splits.items()}
    means = np.concatenate(
        [e.rating_means[np.arange(len(e)), column[s]] for s, e in oracle.splits.items()]
    ).astype(np.float64)
    z_wrong = calibration_z(like_probability(means, 2 * oracle.rating_noise, 4.0), liked)
    assert np.abs(z_wrong).max() > 8.0, z_wrong


@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.5, 3.0, 4.0, 4.5, 5.0, 5.5])
def test_like_probability_closed_form_matches_rounding(threshold):
    """P(clip(rint(N(mean, s^2)), 1, 5) >= threshold) against a Monte Carlo of the same rule."""
    rng = np.random.default_rng(0)
    means = np.linspace(0.0, 6.0, 13)
    draws = np.clip(np.rint(means[:, None] + 0.7 * rng.standard_normal((13, 200_000))), 1, 5)
    empirical = (draws >= threshold).mean(axis=1)
    np.testing.assert_allclose(like_probability(means, 0.7, threshold), empirical, atol=0.005)
    exact = (np.clip(np.rint(means), 1, 5) >= threshold).astype(float)
    np.testing.assert_array_equal(like_probability(means, 0.0, threshold), exact)
