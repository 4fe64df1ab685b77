"""The ranking-driven enhancer: mined items are the ranking head's lowest among retrieval's
top-K, never history items or the target, and mining leaves the model as it found it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unigrf.config import EnhancerConfig, ModelConfig
from unigrf.data.sequences import SequenceData
from unigrf.evaluation import topk as topk_module
from unigrf.model import RankingDrivenEnhancer, TwoStage, UniGRF


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


pytestmark = pytest.mark.timeout(120)
NUM_ITEMS = 30


@pytest.fixture(scope="module")
def data() -> SequenceData:
    rng = np.random.default_rng(3)
    lengths = [3, 5, 8, 12, 16, 20]  # training windows 1 (no anchor), 3, 6, 10, 10, 10
    items = [rng.choice(np.arange(1, NUM_ITEMS + 1), size=n, replace=False) for n in lengths]
    ratings = [rng.integers(1, 6, size=n).astype(float) for n in lengths]
    times = [np.cumsum(rng.integers(1, 10**4, size=n)) for n in lengths]
    return SequenceData.from_arrays(items, ratings, times, num_items=NUM_ITEMS, max_len=10)


def model_for(data: SequenceData, backbone: str = "hstu", seed: int = 0) -> UniGRF:
    torch.manual_seed(seed)
    # the brute force scores with the head alone (`rank_logits(h)`); with the ranking prior the
    # packed pass and the per-candidate pass agree in tests/test_ranking_prior.py
    cfg = ModelConfig(
        backbone=backbone, size="tiny", num_layers=2, num_heads=2, dim=16, time_bias=True, ranking_prior=False
    )
    return UniGRF(cfg, data.num_items, data.num_levels, data.max_len)  # dropout 0.2: eval matters


def brute_force(model: UniGRF, batch: dict[str, torch.Tensor], top_k: int, m: int) -> list[set[int]]:
    """Per row: encode the prefix up to the anchor, take the top-K unseen items by retrieval
    score, score each by appending it alone, keep the m lowest like-logits."""
    model.eval()
    out = []
    with torch.no_grad():
        table = model.item_table()
        for r in range(len(batch["lengths"])):
            n = int(batch["lengths"][r])
            if n < 2:
                out.append(set())
                continue
            items, fb, ts = (batch[k][r, :n] for k in ("items", "feedback", "timestamps"))
            # the anchor query as the training forward pass computes it (the window's own pass)
            h = model.encode(items[None], fb[None], ts[None, :n])
            scores = model.queries(h[0, 2 * (n - 1) - 1]) @ table.T
            scores[0] = float("-inf")
            scores[batch["history"][r]] = float("-inf")  # the whole training history, not the window only
            candidates = scores.topk(top_k).indices
            logits = []
            for c in candidates:
                seq = torch.cat([items[: n - 1], c[None]])
                fbs = torch.cat([fb[: n - 1], torch.zeros(1, dtype=torch.long)])
                hc = model.encode(seq[None], fbs[None], ts[None, :n])  # the candidate at i_n's time
                logits.append(model.rank_logits(hc[0, 2 * (n - 1)]))
            lowest = torch.stack(logits).argsort()[:m]
            out.append({int(candidates[i]) for i in lowest})
    return out


@pytest.mark.parametrize("backbone", ["hstu", "llama", "sasrec"])
def test_mine_matches_brute_force(data: SequenceData, backbone: str) -> None:
    model = model_for(data, backbone)
    batch = data.train_batch(np.arange(data.num_users))
    enhancer = RankingDrivenEnhancer(EnhancerConfig(m=3, top_k=8), 3)
    hard = enhancer.mine(model.train(), batch)
    assert hard.shape == (data.num_users, 3) and hard.dtype == torch.long
    expected = brute_force(model, batch, top_k=8, m=3)
    for r, exp in enumerate(expected):
        got = {int(i) for i in hard[r] if i > 0}
        assert got == exp, f"row {r}"
        window = set(batch["items"][r].tolist())
        assert not got & window  # never history, never the target (the window's last item)
    assert hard[0].eq(0).all()  # a window of one item has no anchor


@pytest.mark.parametrize("chunk", [4, 7, NUM_ITEMS + 1])
def test_mining_through_catalogue_chunks_equals_one_piece(data: SequenceData, monkeypatch, chunk: int) -> None:
    """Past `topk.ITEM_CHUNK` items the candidate pass walks the catalogue in chunks: the same
    negatives (chunks of a few items stand in for 64k-item ones; NUM_ITEMS + 1 is one piece)."""
    model = model_for(data)
    batch = data.train_batch(np.arange(data.num_users))
    enhancer = RankingDrivenEnhancer(EnhancerConfig(m=3, top_k=8), 3)
    one_piece = enhancer.mine(model, batch)
    walked = []
    monkeypatch.setattr(topk_module, "ITEM_CHUNK", chunk)
    monkeypatch.setattr(topk_module, "unseen_topk", _recording(topk_module.unseen_topk, walked))
    assert torch.equal(enhancer.mine(model, batch), one_piece)
    assert bool(walked) == (chunk < NUM_ITEMS + 1)  # the chunked path ran where the catalogue is larger


def _recording(fn, calls: list):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapped


def test_mode_restored_and_no_gradients(data: SequenceData) -> None:
    model = model_for(data)
    batch = data.train_batch(np.arange(data.num_users))
    enhancer = RankingDrivenEnhancer(EnhancerConfig(m=2, top_k=5), 2)
    model.train()
    hard_train_mode = enhancer.mine(model, batch)
    assert model.training and all(mod.training for mod in model.modules())
    assert not hard_train_mode.requires_grad
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    hard_eval_mode = enhancer.mine(model, batch)
    assert not model.training
    assert torch.equal(hard_train_mode, hard_eval_mode)  # mining always runs with dropout off


def test_alpha_filters_likely_liked_candidates(data: SequenceData) -> None:
    model = model_for(data).eval()
    batch = data.train_batch(np.arange(data.num_users))
    plain = RankingDrivenEnhancer(EnhancerConfig(m=4, top_k=10), 4).mine(model, batch)
    assert torch.equal(
        RankingDrivenEnhancer(EnhancerConfig(m=4, top_k=10, alpha=1.0), 4).mine(model, batch), plain
    )
    assert RankingDrivenEnhancer(EnhancerConfig(m=4, top_k=10, alpha=0.0), 4).mine(model, batch).eq(0).all()
    # a threshold inside the range keeps exactly the candidates at or below it
    items, lengths = batch["items"], batch["lengths"]
    with torch.no_grad():
        prefix = model.encode_prefix(items, batch["feedback"], batch["timestamps"], lengths - 1)
    rows = [r for r in range(len(lengths)) if lengths[r] >= 2]
    with torch.no_grad():
        probs = torch.sigmoid(model.score_candidates(None, None, None, lengths - 1, plain, prefix=prefix))
    alpha = float(probs[rows].median())
    filtered = RankingDrivenEnhancer(EnhancerConfig(m=4, top_k=10, alpha=alpha), 4).mine(model, batch)
    for r in rows:
        keep = probs[r] <= alpha
        assert torch.equal(filtered[r], torch.where(keep, plain[r], 0))
    assert filtered.ne(0).sum() < plain.ne(0).sum()


def test_more_candidates_than_unseen_items(data: SequenceData) -> None:
    """top_k beyond the unseen items: the excluded items — the user's whole training history,
    including what came before a window truncated to max_len — are never returned."""
    model = model_for(data)
    batch = data.train_batch(np.arange(data.num_users))
    assert (batch["history"] != 0).sum(1).max() > batch["lengths"].max()  # some history precedes the window
    hard = RankingDrivenEnhancer(EnhancerConfig(m=25, top_k=NUM_ITEMS), 25).mine(model, batch)
    for r in range(len(batch["lengths"])):
        history = set(batch["history"][r].tolist()) - {0}
        got = [int(i) for i in hard[r] if i > 0]
        assert len(got) == len(set(got)) and not set(got) & history
        if batch["lengths"][r] >= 2:
            assert len(got) == min(25, NUM_ITEMS - len(history))


def test_active_and_off() -> None:
    cfg = EnhancerConfig(m=8, warmup_epochs=2)
    on = RankingDrivenEnhancer(cfg, 8)
    assert [on.active(e) for e in range(4)] == [False, False, True, True]
    off = RankingDrivenEnhancer(cfg, 0)  # effective_m = 0 for variants without the enhancer
    assert not any(off.active(e) for e in range(4))


def test_needs_a_unified_model(data: SequenceData) -> None:
    cfg = ModelConfig(size="tiny")
    two = TwoStage(cfg, data.num_items, data.num_levels, data.max_len)
    with pytest.raises(TypeError, match="encode_prefix"):
        RankingDrivenEnhancer(EnhancerConfig(), 8).mine(two, data.train_batch(np.arange(2)))
