"""A seeded synthetic rating log with planted structure, and its oracle (the exact truth).

What is planted (every knob is a `SyntheticConfig` field), and why:
- **drifting topic tastes** — each item belongs to one of `num_topics` topics; each user has
  topic logits (std `taste_scale`: a few favourite topics) taking a Gaussian random-walk step
  (`taste_drift`) per interaction. What a user consumed lately says which topics come next:
  structure a sequence model reads from the history and a popularity list cannot.
- **item-to-item successors** — each topic's items form a random cycle (a "series"); with
  probability s / (1 + s) the next item is drawn from the previous item's next
  `num_successors` items along it (weights halving). s is `transition_strength` after a
  liked previous item (rating >= 4) and `transition_strength_disliked` after a disliked one:
  the order of the sequence and the feedback on its last item both predict the next item.
- **a long tail of popularity** — within its topic an item is drawn in proportion to a Zipf
  law over a random ranking (`popularity_exponent`): popularity is a real but beatable
  baseline.
- **ratings 1..5 that depend on the user and the item** — a latent rating
  `rating_base + rating_affinity * (the user's current taste for the item's topic,
  standardised over topics) + item quality (std quality_std) + user bias (std user_bias_std)
  + N(0, rating_noise^2)`, rounded and clipped to 1..5. Whether the next item is liked is
  predictable from the item and the user's past feedback: the ranking head has something
  to learn.
- **timestamps with ties** — per-user start times over two years, exponential gaps (mean one
  day), and with probability `tie_probability` an interaction shares the previous time.

The next item's distribution is computed explicitly at every step — taste x popularity mixed
with the successors, the user's seen items set to 0 (no user sees an item twice), renormalised
— and the item is drawn from it by inverse CDF: no rejection loop, so the truth is exact.
`synthetic_oracle(cfg)` re-runs the same draws and records, for each user's two held-out
events (leave-one-out: validation = the second-to-last interaction, test = the last), that
distribution over the catalogue and the latent rating's mean for every item, so that
P(like) = P(latent >= k - 1/2) has a closed form (`like_probability`).

What the oracle is for: `unigrf.evaluation.oracle` scores it under the evaluation protocol.
Ranking by the true probabilities maximises the expected HR/NDCG/MRR, and the true
like-probability is the Bayes-optimal ranking score: the oracle row is the ceiling no model
can beat in expectation (it even knows the latent taste, which a model can only infer), and
together with the popularity row (the floor) it says how much of the learnable structure a
model has learned. The calibration tests (tests/test_synthetic.py) check the oracle against
what the generator actually draws.

The defaults are the quick grid's data (600 users x 200 items x ~30 interactions): small
enough to train a tiny HSTU in seconds, with structure enough that it lands between popularity
and the oracle (benchmarks/RESULTS.md, "Quick grid").

Output: rows like an event log, ordered by timestamp, then user, then the user's step, so ties
within a user are in generation order and a stable (timestamp, file row) sort recovers each
sequence exactly; raw ids are `str(index)`. `df.attrs["item_topic"]` (topic of item `i` at
index `i`) is kept for diagnostics and tests. Generation is vectorised across users (one
numpy step per sequence position over [active users, num_items] matrices); memory: a
[num_users, num_items] bool "seen" matrix, and for the oracle two float32 [num_users,
num_items] matrices per split. Pure numpy (no Ray).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from unigrf.config import ConfigError, SyntheticConfig

RATING_MIN, RATING_MAX = 1.0, 5.0  # ratings are the integers 1..5
LIKED_RATING = 4.0  # the generator's own notion of a liked item (selects the transition strength)
START_TIME = 1_000_000_000  # 2001-09-09, seconds
START_SPAN = 2 * 365 * 86_400  # users start within two years
MEAN_GAP = 86_400  # mean seconds between two interactions that are not tied
HELD_OUT = {"val": 2, "test": 1}  # leave-one-out: position from the end of each user's sequence


# --------------------------------------------------------------------------------------------
# The oracle's record of the held-out events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutEvents:
    """One split's held-out events, one per user (row e), and the truth each was drawn from.

    Columns of the [E, N] matrices are the catalogue's raw item ids `SyntheticOracle.items`.
    """

    users: np.ndarray  # [E] raw user ids (str)
    positions: np.ndarray  # [E] int64 0-based position of the event in the user's sequence
    targets: np.ndarray  # [E] raw item id drawn (str)
    ratings: np.ndarray  # [E] float64 rating drawn
    item_probs: np.ndarray  # [E, N] float32 P(next item = n | state): 0 on the seen history
    rating_means: np.ndarray  # [E, N] float32 mean of the latent rating if item n were next

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class SyntheticOracle:
    """What `generate_synthetic(cfg)` drew each held-out event from (see the module docstring).

    `splits["val"]` / `splits["test"]`: the users' second-to-last / last interactions, the
    leave-one-out targets of `SequenceData.eval_batch` after `prepare_dataset`.
    """

    items: np.ndarray  # [N] raw item ids (str), the columns of every [E, N] matrix
    rating_noise: float  # std of the Gaussian noise on the latent rating
    splits: dict[str, HeldOutEvents]

    def like_probabilities(self, split: str, threshold: float) -> np.ndarray:
        """[E, N] float64 P(rating >= threshold) of every item as `split`'s next item."""
        return like_probability(
            self.splits[split].rating_means.astype(np.float64), self.rating_noise, threshold
        )

    def target_like_probabilities(self, split: str, threshold: float) -> np.ndarray:
        """[E] float64 P(rating >= threshold) of the item actually drawn."""
        events = self.splits[split]
        column = pd.Index(self.items).get_indexer(events.targets)
        means = events.rating_means[np.arange(len(events)), column].astype(np.float64)
        return like_probability(means, self.rating_noise, threshold)


def like_probability(mean: np.ndarray, noise: float, threshold: float) -> np.ndarray:
    """P(clip(rint(latent), 1, 5) >= threshold) for latent ~ N(mean, noise^2), elementwise.

    The rating reaches `threshold` iff it reaches the smallest integer k >= threshold, iff the
    latent is >= k - 1/2 (rounding; the boundary has probability 0). Exact for noise = 0 too.
    """
    k = math.ceil(threshold)
    if k <= RATING_MIN:
        return np.ones_like(mean, dtype=np.float64)
    if k > RATING_MAX:
        return np.zeros_like(mean, dtype=np.float64)
    if noise == 0.0:
        return (np.clip(np.rint(mean), RATING_MIN, RATING_MAX) >= threshold).astype(np.float64)
    return ndtr((mean - (k - 0.5)) / noise)


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


class _Catalogue:
    """Items: topic, popularity within the topic, quality, and successors along topic chains."""

    def __init__(self, rng: np.random.Generator, cfg: SyntheticConfig):
        n, k = cfg.num_items, cfg.num_topics
        self.topic = rng.permutation(np.arange(n) % k)  # [N]; every topic has items
        rank = rng.permutation(n)  # popularity rank 0 = head of the long tail
        popularity = (rank + 1.0) ** -cfg.popularity_exponent
        topic_total = np.bincount(self.topic, weights=popularity, minlength=k)
        self.in_topic = popularity / topic_total[self.topic]  # [N] P(item | its topic)
        self.quality = rng.normal(0.0, cfg.quality_std, n)  # [N]
        # each topic's items in a random cycle (a "series"); item j's successors are the next
        # `num_successors` items along it (a short cycle repeats some: their weights add up)
        self.successors = np.empty((n, cfg.num_successors), dtype=np.int64)  # [N, S]
        for t in range(k):
            cycle = rng.permutation(np.flatnonzero(self.topic == t))
            ahead = (np.arange(len(cycle))[:, None] + np.arange(1, cfg.num_successors + 1)) % len(cycle)
            self.successors[cycle] = cycle[ahead]
        weights = 0.5 ** np.arange(cfg.num_successors)
        self.successor_weights = weights / weights.sum()  # [S]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sequence_lengths(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    extra_mean = cfg.mean_seq_len - cfg.min_seq_len
    extra = rng.geometric(1.0 / (extra_mean + 1.0), cfg.num_users) - 1  # mean = extra_mean
    cap = min(cfg.num_items - 1, 10 * cfg.mean_seq_len)
    return np.minimum(cfg.min_seq_len + extra, cap).astype(np.int64)


@dataclass
class _Record:
    """The held-out events of one split, collected step by step."""

    users: list[np.ndarray]
    positions: list[np.ndarray]
    items: list[np.ndarray]
    ratings: list[np.ndarray]
    probs: list[np.ndarray]
    rating_means: list[np.ndarray]


def _simulate(cfg: SyntheticConfig, record: bool) -> tuple[pd.DataFrame, dict[str, _Record]]:
    """Run the generator: (the log, and with `record` the held-out events' truth per split).

    One vectorised numpy step per sequence position over the users still active. Every item
    is drawn by inverse CDF from its explicitly computed distribution [A, N]; recording only
    copies rows of it, so the log is the same with and without `record`.
    """
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    cat = _Catalogue(rng, cfg)
    n_users, n_items = cfg.num_users, cfg.num_items
    lengths = _sequence_lengths(rng, cfg)
    taste = rng.normal(0.0, cfg.taste_scale, (n_users, cfg.num_topics))  # [U, K] topic logits
    user_bias = rng.normal(0.0, cfg.user_bias_std, n_users)
    follow = np.array([cfg.transition_strength_disliked, cfg.transition_strength])
    follow = follow / (1.0 + follow)  # P(successor) after a disliked / liked previous item
    seen = np.zeros((n_users, n_items), dtype=bool)
    prev = np.full(n_users, -1, dtype=np.int64)
    prev_liked = np.zeros(n_users, dtype=np.int64)
    clock = START_TIME + rng.integers(0, START_SPAN, n_users)
    records = {s: _Record([], [], [], [], [], []) for s in HELD_OUT} if record else {}

    out_user, out_item, out_rating, out_time, out_step = [], [], [], [], []
    for step in range(int(lengths.max())):
        users = np.flatnonzero(lengths > step)  # [A] users still active at this position
        a, rows = len(users), np.arange(len(users))
        if step > 0:
            taste[users] += rng.normal(0.0, cfg.taste_drift, (a, cfg.num_topics))
        logits = taste[users]  # [A, K]

        # the next item's distribution [A, N]: topic taste x popularity, mixed with the
        # previous item's successors, the seen history removed, renormalised
        probs = _softmax(logits)[:, cat.topic] * cat.in_topic
        if step > 0:
            p_follow = follow[prev_liked[users]][:, None]  # [A, 1]
            successor = np.zeros((a, n_items))
            for s, w in enumerate(cat.successor_weights):  # one column per row and slot: no clashes
                successor[rows, cat.successors[prev[users], s]] += w
            probs = (1.0 - p_follow) * probs + p_follow * successor
        probs[seen[users]] = 0.0
        cum = np.cumsum(probs, axis=1)
        total = cum[:, -1]
        if not np.all(total > 0.0):
            raise ConfigError("data.synthetic: an item distribution underflowed to 0 (taste_scale too large)")
        probs /= total[:, None]
        u = (1.0 - rng.random(a)) * total  # in (0, total]: never an item of probability 0
        item = np.minimum((cum < u[:, None]).sum(axis=1), n_items - 1)
        seen[users, item] = True

        # the rating: latent N(mean, rating_noise^2), mean from the standardised taste for the
        # item's topic, the item's quality and the user's bias; rounded and clipped to 1..5
        affinity = (logits - logits.mean(axis=1, keepdims=True)) / (logits.std(axis=1, keepdims=True) + 1e-9)
        topic_mean = cfg.rating_base + cfg.rating_affinity * affinity + user_bias[users, None]  # [A, K]
        mean = topic_mean[rows, cat.topic[item]] + cat.quality[item]
        latent = mean + rng.normal(0.0, cfg.rating_noise, a)
        rating = np.clip(np.rint(latent), RATING_MIN, RATING_MAX)

        for split, back in HELD_OUT.items() if record else ():
            at = np.flatnonzero(lengths[users] - back == step)
            rec = records[split]
            rec.users.append(users[at])
            rec.positions.append(np.full(len(at), step, dtype=np.int64))
            rec.items.append(item[at])
            rec.ratings.append(rating[at])
            rec.probs.append(probs[at].astype(np.float32))
            rec.rating_means.append((topic_mean[at][:, cat.topic] + cat.quality).astype(np.float32))

        prev[users] = item
        prev_liked[users] = (rating >= LIKED_RATING).astype(np.int64)
        if step > 0:
            gap = np.maximum(1, np.rint(rng.exponential(MEAN_GAP, a))).astype(np.int64)
            gap[rng.random(a) < cfg.tie_probability] = 0
            clock[users] += gap
        out_user.append(users)
        out_item.append(item)
        out_rating.append(rating)
        out_time.append(clock[users].copy())
        out_step.append(np.full(a, step, dtype=np.int64))

    user = np.concatenate(out_user)
    time = np.concatenate(out_time)
    step_of = np.concatenate(out_step)
    order = np.lexsort((step_of, user, time))  # event-log order; ties within a user by step
    df = pd.DataFrame(
        {
            "user": pd.Series(user[order]).astype(str),
            "item": pd.Series(np.concatenate(out_item)[order]).astype(str),
            "rating": np.concatenate(out_rating)[order].astype(np.float64),
            "timestamp": time[order].astype(np.int64),
        }
    )
    df.attrs["item_topic"] = cat.topic.tolist()  # a list: attrs are compared when frames combine
    return df, records


def generate_synthetic(cfg: SyntheticConfig) -> pd.DataFrame:
    """The synthetic log: columns user (str), item (str), rating (float64), timestamp (int64)."""
    return _simulate(cfg, record=False)[0]


def synthetic_oracle(cfg: SyntheticConfig) -> SyntheticOracle:
    """The truth behind `generate_synthetic(cfg)`'s held-out events (same seed, same draws).

    Memory: two [num_users, num_items] float32 matrices per split.
    """
    _, records = _simulate(cfg, record=True)
    splits = {}
    for split, rec in records.items():
        users = np.concatenate(rec.users)
        order = np.argsort(users, kind="stable")  # one event per user: by user id
        splits[split] = HeldOutEvents(
            users=users[order].astype(str),
            positions=np.concatenate(rec.positions)[order],
            targets=np.concatenate(rec.items)[order].astype(str),
            ratings=np.concatenate(rec.ratings)[order].astype(np.float64),
            item_probs=np.concatenate(rec.probs)[order],
            rating_means=np.concatenate(rec.rating_means)[order],
        )
    return SyntheticOracle(
        items=np.arange(cfg.num_items).astype(str), rating_noise=cfg.rating_noise, splits=splits
    )
