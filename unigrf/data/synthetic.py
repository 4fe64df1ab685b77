"""A seeded synthetic rating log with the structure a sequential recommender can learn.

What is planted (every knob is a `SyntheticConfig` field):
- **topics and drifting tastes**: each item belongs to one of `num_topics` topics; each user has
  latent topic logits that take a Gaussian random-walk step (`taste_drift`) per interaction, so
  what a user consumes early differs from what they consume late;
- **long-tail popularity**: within a topic items are drawn by a Zipf law over a random ranking
  (`popularity_exponent`);
- **sequential dependence**: every item has a few fixed successors (mostly in its own topic);
  with probability `transition_strength / (1 + transition_strength)` the next item is one of the
  previous item's successors, so the previous item predicts the next one;
- **explicit ratings** 1..5: the user's current affinity for the item's topic (standardised over
  the user's topics) plus an item quality bias, a user bias and Gaussian noise
  (`rating_noise`), rounded;
- **timestamps with ties**: per-user start times over two years, then exponential gaps (mean one
  day) except that with probability `tie_probability` an interaction shares the previous time.

No user sees an item twice (as in MovieLens). The rows come out like an event log: ordered by
timestamp, then user, then the user's step, so ties within a user are in generation order and
a stable (timestamp, file row) sort recovers each sequence exactly. The ground truth
`df.attrs["item_topic"]` (topic of item id `i` at index `i`) is kept for diagnostics and tests.

Generation is vectorised across users (one numpy step per sequence position), e.g. 1M
interactions (25,000 users x 40) in a few seconds. Memory: a [num_users, num_items] bool
"seen" matrix (allocated lazily by the OS, touched rows only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unigrf.config import ConfigError, SyntheticConfig

NUM_SUCCESSORS = 4
SUCCESSOR_WEIGHTS = np.array([0.4, 0.3, 0.2, 0.1])  # the first successor is the likeliest
CROSS_TOPIC_SUCCESSOR = 3  # the last successor slot is drawn from the whole catalogue
START_TIME = 1_000_000_000  # 2001-09-09, seconds
START_SPAN = 2 * 365 * 86_400  # users start within two years
MEAN_GAP = 86_400  # mean seconds between two interactions that are not tied
TASTE_SCALE = 1.5  # std of the initial topic logits: a few favourite topics per user
RATING_BASE = 3.0  # latent rating at average affinity (consumed items skew higher)
RATING_AFFINITY = 0.8  # latent rating per standard deviation of topic affinity
QUALITY_STD = 0.4  # std of the per-item quality bias on the rating
USER_BIAS_STD = 0.3  # std of the per-user rating bias (some users rate higher)
MAX_RETRIES = 8  # redraws from the taste before falling back to any unseen item


class _Catalogue:
    """Items grouped by topic with cumulative popularity, for vectorised topic-then-item draws."""

    def __init__(self, rng: np.random.Generator, cfg: SyntheticConfig):
        n, k = cfg.num_items, cfg.num_topics
        self.topic = rng.permutation(np.arange(n) % k)  # every topic has items
        rank = rng.permutation(n)  # popularity rank 0 = head of the long tail
        self.popularity = (rank + 1.0) ** -cfg.popularity_exponent
        self.quality = rng.normal(0.0, QUALITY_STD, n)
        self.order = np.argsort(self.topic, kind="stable")  # items grouped by topic
        self.cum = np.cumsum(self.popularity[self.order])
        ends = np.searchsorted(self.topic[self.order], np.arange(k), side="right")
        self.topic_hi = self.cum[ends - 1]
        self.topic_lo = np.concatenate([[0.0], self.topic_hi[:-1]])
        self.global_cum = np.cumsum(self.popularity)
        # successors [num_items, S]: popular items of the same topic (+ one from anywhere)
        self.successors = self.draw_in_topic(rng, np.repeat(self.topic, NUM_SUCCESSORS)).reshape(
            n, NUM_SUCCESSORS
        )
        self.successors[:, CROSS_TOPIC_SUCCESSOR] = self.draw_global(rng, n)

    def draw_in_topic(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        """One item per entry of `topics` [M], by popularity within the topic -> [M]."""
        lo, hi = self.topic_lo[topics], self.topic_hi[topics]
        target = lo + rng.random(len(topics)) * (hi - lo)
        idx = np.searchsorted(self.cum, target, side="right")
        return self.order[np.minimum(idx, len(self.order) - 1)]

    def draw_global(self, rng: np.random.Generator, m: int) -> np.ndarray:
        target = rng.random(m) * self.global_cum[-1]
        return np.minimum(np.searchsorted(self.global_cum, target, side="right"), len(self.global_cum) - 1)


def _draw_topics(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One topic per row of `logits` [M, K] from softmax(logits) -> [M]."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    u = rng.random(len(logits))[:, None] * cum[:, -1:]
    return np.minimum((cum < u).sum(axis=1), logits.shape[1] - 1)


def _sequence_lengths(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    extra_mean = cfg.mean_seq_len - cfg.min_seq_len
    extra = rng.geometric(1.0 / (extra_mean + 1.0), cfg.num_users) - 1  # mean = extra_mean
    cap = min(cfg.num_items - 1, 10 * cfg.mean_seq_len)
    return np.minimum(cfg.min_seq_len + extra, cap).astype(np.int64)


def _check(cfg: SyntheticConfig) -> None:
    problems = [
        (cfg.num_users >= 1, "num_users must be >= 1"),
        (cfg.num_topics >= 1, "num_topics must be >= 1"),
        (cfg.num_items > cfg.num_topics, "num_items must exceed num_topics"),
        (cfg.min_seq_len >= 3, "min_seq_len must be >= 3 (leave-one-out needs train, val and test)"),
        (cfg.mean_seq_len >= cfg.min_seq_len, "mean_seq_len must be >= min_seq_len"),
        (cfg.min_seq_len < cfg.num_items, "min_seq_len must be < num_items (no repeated items)"),
        (0.0 <= cfg.tie_probability < 1.0, "tie_probability must be in [0, 1)"),
        (cfg.transition_strength >= 0.0, "transition_strength must be >= 0"),
        (cfg.rating_noise >= 0.0 and cfg.taste_drift >= 0.0, "rating_noise and taste_drift must be >= 0"),
    ]
    for ok, message in problems:
        if not ok:
            raise ConfigError(f"data.synthetic: {message}")


def generate_synthetic(cfg: SyntheticConfig) -> pd.DataFrame:
    """The synthetic log: columns user (str), item (str), rating (float64), timestamp (int64)."""
    _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    cat = _Catalogue(rng, cfg)
    n_users, n_items = cfg.num_users, cfg.num_items
    lengths = _sequence_lengths(rng, cfg)
    taste = rng.normal(0.0, TASTE_SCALE, (n_users, cfg.num_topics))
    user_bias = rng.normal(0.0, USER_BIAS_STD, n_users)
    p_follow = cfg.transition_strength / (1.0 + cfg.transition_strength)
    seen = np.zeros((n_users, n_items), dtype=bool)
    prev = np.full(n_users, -1, dtype=np.int64)
    clock = START_TIME + rng.integers(0, START_SPAN, n_users)

    out_user, out_item, out_rating, out_time, out_step = [], [], [], [], []
    for step in range(int(lengths.max())):
        users = np.flatnonzero(lengths > step)  # [A] users still active at this position
        a = len(users)
        if step > 0:
            taste[users] += rng.normal(0.0, cfg.taste_drift, (a, cfg.num_topics))
        logits = taste[users]
        # the next item: a successor of the previous one, or topic-then-popularity
        follow = (prev[users] >= 0) & (rng.random(a) < p_follow)
        slot = rng.choice(NUM_SUCCESSORS, size=a, p=SUCCESSOR_WEIGHTS)
        item = cat.draw_in_topic(rng, _draw_topics(rng, logits))
        item[follow] = cat.successors[prev[users[follow]], slot[follow]]
        # no repeats: redraw collisions from the taste, finally any unseen item
        for _ in range(MAX_RETRIES):
            hit = np.flatnonzero(seen[users, item])
            if len(hit) == 0:
                break
            item[hit] = cat.draw_in_topic(rng, _draw_topics(rng, logits[hit]))
        hit = np.flatnonzero(seen[users, item])
        if len(hit):
            noise = rng.random((len(hit), n_items))
            item[hit] = np.argmax(np.where(seen[users[hit]], -1.0, noise), axis=1)
        seen[users, item] = True
        prev[users] = item

        # rating: standardised affinity of the user for the item's topic + quality + noise
        affinity = (logits[np.arange(a), cat.topic[item]] - logits.mean(axis=1)) / (logits.std(axis=1) + 1e-9)
        latent = RATING_BASE + RATING_AFFINITY * affinity + cat.quality[item] + user_bias[users]
        latent += rng.normal(0.0, cfg.rating_noise, a)
        rating = np.clip(np.rint(latent), 1.0, 5.0)

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
    return df
