"""The prepare and evaluation estimates: rows counted from a file, refusals that name the file or
key before any work, and the chunked evaluation bounded whatever the catalogue."""

from __future__ import annotations

import pytest

from unigrf.config import DataConfig, load_config
from unigrf.data.prepare import prepare_dataset
from unigrf.footprint import (
    GIB,
    ResourceError,
    check_evaluation,
    check_prepare,
    estimate_rows,
    evaluation_bytes,
)


@pytest.mark.timeout(30)
def test_rows_are_estimated_from_size_and_the_first_lines(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("".join(f"{u}::{u % 7 + 1}::4::97830{u:04d}\n" for u in range(1, 5001)))
    assert estimate_rows(path) == pytest.approx(5000, rel=0.05)
    assert estimate_rows(path, sample=200) == pytest.approx(5000, rel=0.1)


@pytest.mark.timeout(30)
def test_prepare_refuses_before_reading_naming_the_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ratings.dat").write_text("1::1::4::978300760\n" * 1000)
    cfg = DataConfig(dataset="ml-1m", data_dir=str(raw))
    assert check_prepare(cfg, available=64 * GIB) > 0
    with pytest.raises(ResourceError, match=r"ratings\.dat: preparing about 1,000 rows needs about"):
        check_prepare(cfg, available=GIB)
    # prepare_dataset asks first: nothing is read, nothing written under data/
    with pytest.raises(ResourceError):
        prepare_dataset(cfg, tmp_path / "results", verbose=False, available=GIB)
    assert not (tmp_path / "results" / "data").exists() or not any((tmp_path / "results" / "data").iterdir())


@pytest.mark.timeout(30)
def test_chunked_evaluation_memory_does_not_grow_with_the_catalogue_past_a_chunk():
    small = evaluation_bytes(64, 100_000, 64, chunked=True) - 100_001 * 64 * 4
    large = evaluation_bytes(64, 10_000_000, 64, chunked=True) - 10_000_001 * 64 * 4
    assert small == large
    unchunked = evaluation_bytes(64, 10_000_000, 64, chunked=False) - 10_000_001 * 64 * 4
    assert unchunked > 50 * large


@pytest.mark.timeout(30)
def test_evaluation_refusal_names_the_key():
    cfg = load_config(None, ["model.size=small"])
    check_evaluation(cfg, 138_493, 26_744, 20_000_263, available=8 * GIB)
    with pytest.raises(ResourceError, match="eval.batch_size: evaluating 138,493 users"):
        check_evaluation(cfg, 138_493, 26_744, 20_000_263, available=GIB // 4)
