"""The memory check refuses, naming the key, what cannot fit, and accepts what can."""

from __future__ import annotations

import pytest

from unigrf.config import ConfigError, load_config
from unigrf.training.memory import check_memory, estimate_bytes, physical_memory_bytes

GIB = 1024**3


def test_default_recipe_on_a_movielens_sized_catalogue_fits_in_a_laptop():
    # on ML-100K's 98k training interactions `model.size: auto` is small (fit resolves it first)
    check_memory(
        load_config(None, ["data.dataset=ml-100k", "model.size=small"]), 1682, 200, available=8 * GIB
    )


def test_bce_with_many_negatives_on_a_big_batch_is_refused_naming_the_key():
    cfg = load_config(
        None, ["loss.retrieval=bce", "loss.num_negatives=4096", "model.size=base", "train.batch_size=128"]
    )
    with pytest.raises(ConfigError, match=r"^loss\.num_negatives: this configuration needs about .* GiB"):
        check_memory(cfg, 10_000, 50, available=8 * GIB)
    cheap = load_config(None, ["loss.retrieval=bce", "loss.num_negatives=1", "model.size=small"])
    check_memory(cheap, 10_000, 50, available=8 * GIB)


def test_a_huge_catalogue_is_refused_by_its_item_table():
    cfg = load_config(None, ["model.size=large", "loss.retrieval=full_softmax"])
    with pytest.raises(ConfigError, match=r"item table, its gradient and AdamW state"):
        check_memory(cfg, 50_000_000, 50, available=16 * GIB)


def test_the_full_softmax_is_bounded_by_its_chunk():
    cfg = load_config(None, ["loss.retrieval=full_softmax", "model.size=small"])
    small, big, huge = (
        estimate_bytes(cfg, n, 50)["full-softmax logits"][0] for n in (1_000, 1_000_000, 10**8)
    )
    assert small < big == huge == cfg.loss.chunk_logits * 4 * 3
    assert physical_memory_bytes() is None or physical_memory_bytes() > GIB


def test_the_estimate_follows_the_windows_max_len():
    """HSTU's saved attention scores grow with the square of the window: the data's max_len
    (explicit or derived), not a per-dataset constant."""
    cfg = load_config(None, ["model.size=small"])
    short, long = (estimate_bytes(cfg, 1_000, n)["HSTU attention scores"][0] for n in (50, 200))
    assert long == 16 * short


def test_the_enhancer_candidate_pass_is_bounded_by_the_item_chunk():
    """The candidate pass walks the catalogue in chunks past ITEM_CHUNK items (unigrf.model.enhancer)."""
    from unigrf.evaluation.topk import ITEM_CHUNK

    key = "enhancer candidate scores [train.batch_size, items]"
    cfg = load_config(None, ["model.size=small"])
    small, big, huge = (estimate_bytes(cfg, n, 50)[key][0] for n in (1_000, 1_000_000, 10**8))
    assert small < big == huge == cfg.train.batch_size * ITEM_CHUNK * 4 * 2
    off = load_config(None, ["model.size=small", "train.variant=item_only"])
    assert key not in estimate_bytes(off, 1_000, 50)
