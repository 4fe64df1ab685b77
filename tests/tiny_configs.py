"""Config overrides shared by the tests that run sweeps: a model and data small enough for an
epoch in about a second. `enhancer.top_k` is below the default m, so a test that trains the
enhancer sets `enhancer.m` itself (or searches it)."""

TINY_SWEEP = {
    "data.dataset": "synthetic",
    "data.synthetic.num_users": 120,
    "data.synthetic.num_items": 60,
    "data.synthetic.mean_seq_len": 12,
    "data.synthetic.min_seq_len": 6,
    "model.size": "tiny",
    "loss.num_negatives": 16,
    "enhancer.top_k": 16,
    "enhancer.warmup_epochs": 0,
    "eval.ks": [10],
    "eval.cascade_top_c": 20,
    "train.batch_size": 32,
}


# Grid overrides for the tests that run `unigrf ablate` end to end (archive, reuse): one epoch of a
# small model on `raw_fixtures.write_random_ratings` data.
TINY_GRID = {
    "loss.num_negatives": 8,
    "train.epochs": 1,
    "train.batch_size": 32,
    "enhancer.top_k": 10,
    "enhancer.m": 2,
    "enhancer.warmup_epochs": 0,
    "eval.ks": [5, 10],
    "eval.cascade_top_c": 20,
}
