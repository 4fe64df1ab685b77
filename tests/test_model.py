"""UniGRF and TwoStage: shapes, padding invariance, packed candidate scoring, the model's use
of its retrieval loss (collisions, hard and in-batch negatives; the losses themselves are
tested in test_retrieval_losses.py), the item-only retriever, over-fitting a tiny dataset,
state dicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unigrf.config import ExperimentConfig, LossConfig, ModelConfig, TrainConfig
from unigrf.data.sequences import SequenceData
from unigrf.model import TwoStage, UniGRF, build_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and kind to a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


pytestmark = pytest.mark.timeout(120)

BACKBONES = {
    "hstu": dict(backbone="hstu"),
    "hstu_time": dict(backbone="hstu", time_bias=True),
    "llama": dict(backbone="llama"),
    "sasrec": dict(backbone="sasrec"),
}
NUM_ITEMS, MAX_LEN = 40, 10


def tiny_cfg(name: str = "hstu", **overrides: object) -> ModelConfig:
    # the head alone (`rank_logits(h)`): the ranking prior's paths are tests/test_ranking_prior.py's
    base = dict(size="tiny", num_layers=2, num_heads=2, dim=16, dropout=0.0, similarity="cosine", ranking_prior=False)
    return ModelConfig(**{**base, **BACKBONES[name], **overrides})


SAMPLED = LossConfig(retrieval="sampled_softmax", num_negatives=16)


@pytest.fixture(scope="module")
def data() -> SequenceData:
    rng = np.random.default_rng(0)
    lengths = [3, 4, 7, 12, 15, 9]
    items = [rng.choice(np.arange(1, NUM_ITEMS + 1), size=n, replace=False) for n in lengths]
    ratings = [rng.integers(1, 6, size=n).astype(float) for n in lengths]
    times = [np.cumsum(rng.integers(1, 10**5, size=n)) for n in lengths]
    return SequenceData.from_arrays(items, ratings, times, num_items=NUM_ITEMS, max_len=MAX_LEN)


def model_for(
    name: str, data: SequenceData, seed: int = 0, loss: LossConfig = SAMPLED, feedback_tokens: bool = True
) -> UniGRF:
    torch.manual_seed(seed)
    cfg = tiny_cfg(name)
    return UniGRF(cfg, data.num_items, data.num_levels, data.max_len, loss, None, feedback_tokens).eval()


def pad_right(batch: dict[str, torch.Tensor], extra: int) -> dict[str, torch.Tensor]:
    """The same batch with `extra` more padding columns on every [B, N] tensor."""
    out = {}
    for key, value in batch.items():
        if value.dim() == 2:
            value = F.pad(value, (0, extra))
        out[key] = value
    return out


def select(batch: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """Rows of a batch, trimmed to their own longest row (as if batched alone)."""
    out = {k: v[rows] for k, v in batch.items()}
    width = int((out["items"] != 0).sum(1).max())
    return {k: (v[:, :width] if v.dim() == 2 and k != "history" else v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------
# shapes and heads
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_shapes(name: str, data: SequenceData) -> None:
    model = model_for(name, data)
    users = np.arange(data.num_users)
    train = data.train_batch(users)
    h = model.encode(train["items"], train["feedback"], train["timestamps"])
    b, n = train["items"].shape
    assert h.shape == (b, 2 * n, 16)
    assert model.rank_logits(h).shape == (b, 2 * n)
    q = model.queries(h)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(b, 2 * n))
    table = model.item_table()
    assert table.shape == (NUM_ITEMS + 1, 16)
    assert torch.all(table[0] == 0) and torch.allclose(table[1:].norm(dim=-1), torch.ones(NUM_ITEMS))
    losses = model.losses(train)
    assert set(losses) == {"retrieval", "ranking"} and all(v.dim() == 0 for v in losses.values())
    assert set(model.losses(train, retrieval=False)) == {"ranking"}
    assert set(model.losses(train, ranking=False)) == {"retrieval"}
    scores, rank = model.score_eval(data.eval_batch(users, "test"))
    assert scores.shape == (b, NUM_ITEMS + 1) and rank.shape == (b,)
    assert model.max_positions == 2 * MAX_LEN + 2


def test_dot_similarity_scores_raw_vectors(data: SequenceData) -> None:
    torch.manual_seed(0)
    model = UniGRF(
        ModelConfig(size="tiny", similarity="dot"), data.num_items, data.num_levels, data.max_len
    ).eval()
    h = torch.randn(3, model.cfg.resolved_shape()[2])
    torch.testing.assert_close(model.queries(h), h)
    torch.testing.assert_close(model.item_table(), model.item_embedding.weight)


def test_input_embedding_is_the_retrieval_table(data: SequenceData) -> None:
    model = model_for("hstu", data)
    assert model.item_embedding.padding_idx == 0 and model.feedback_embedding.padding_idx == 0
    assert model.feedback_embedding.num_embeddings == data.num_levels + 1
    with torch.no_grad():
        model.item_embedding.weight[3] *= 5.0
    torch.testing.assert_close(model.item_table()[3], F.normalize(model.item_embedding.weight[3], dim=0))


def test_sasrec_positions_count_back_from_the_item_slot(data: SequenceData) -> None:
    """SASRec's absolute positions are aligned on the row's last item slot (the window's last
    item, the eval target, the candidates' slot) whatever the user's length; HSTU and Llama,
    position-relative, get the plain token indices."""
    sasrec, hstu = model_for("sasrec", data), model_for("hstu", data)
    users = np.arange(data.num_users)
    slot = sasrec.max_positions - 2
    ev = data.eval_batch(users, "test")
    rows, lengths = torch.arange(len(users)), ev["lengths"]
    index = torch.arange(ev["items"].shape[1] * 2).expand(len(users), -1)
    pos = sasrec._positions(index, 2 * lengths)
    assert (pos[rows, 2 * lengths] == slot).all() and (pos[rows, 2 * lengths - 1] == slot - 1).all()
    assert (pos[rows, 0] == slot - 2 * lengths).all()  # the first token: 2·length back
    assert torch.equal(hstu._positions(index, 2 * lengths), index)
    prefix = sasrec.encode_prefix(ev["items"], ev["feedback"], ev["timestamps"], lengths)
    assert (prefix.next_position == slot).all()
    assert torch.equal(
        hstu.encode_prefix(ev["items"], ev["feedback"], ev["timestamps"], lengths).next_position, 2 * lengths
    )
    # a training window's last item takes the slot: the last training step looks like evaluation
    tr = data.train_batch(users)
    window_index = torch.arange(tr["items"].shape[1] * 2).expand(len(users), -1)
    window = sasrec._positions(window_index, 2 * (tr["lengths"] - 1))
    assert (window[rows, 2 * (tr["lengths"] - 1)] == slot).all()
    assert int(window.max()) == slot + 1 and int(window.min()) >= 0  # padding shares slot + 1


def test_sasrec_positions_start_below_the_token_signal(data: SequenceData) -> None:
    """SASRec adds learned positions to the (scaled) token embeddings: at initialisation they
    must not drown the items (torch's default N(0, 1) rows did, 12x at D = 16, 6x at D = 64,
    and cost a third of SASRec's NDCG@10 on ML-100K)."""
    model = model_for("sasrec", data)
    token_rms = float(model.item_embedding.weight[1:].detach().std()) * model.embed_scale
    position_rms = float(model.backbone.position_embedding.weight.detach().std())
    assert 0.0 < 2 * position_rms < token_rms


# ------------------------------------------------------------------------------------------
# padding and causality
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_padding_never_changes_results(name: str, data: SequenceData) -> None:
    """A row alone, with extra right padding, or in a batch with longer rows: identical
    hidden states at its real tokens, identical eval scores, identical losses."""
    model = model_for(name, data)
    users = np.arange(data.num_users)
    full = data.train_batch(users)
    row = 1  # a short row: padded inside the full batch
    alone = select(full, [row])
    n = int(alone["lengths"][0])
    assert full["items"].shape[1] > n
    h_alone = model.encode(alone["items"], alone["feedback"], alone["timestamps"])
    h_full = model.encode(full["items"], full["feedback"], full["timestamps"])[row : row + 1, : 2 * n]
    padded = pad_right(alone, 5)
    h_pad = model.encode(padded["items"], padded["feedback"], padded["timestamps"])[:, : 2 * n]
    torch.testing.assert_close(h_full, h_alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_pad, h_alone, rtol=1e-5, atol=1e-5)

    torch.manual_seed(3)
    loss_alone = model.losses(alone)
    torch.manual_seed(3)
    loss_pad = model.losses(padded)
    for key in loss_alone:
        torch.testing.assert_close(loss_pad[key], loss_alone[key])

    ev = data.eval_batch(users, "val")
    s_full, r_full = model.score_eval(ev)
    ev_row = {k: v[row : row + 1] for k, v in ev.items()}
    width = int(ev_row["lengths"][0]) + 1
    ev_row = {k: (v[:, :width] if v.dim() == 2 and k != "history" else v) for k, v in ev_row.items()}
    s_row, r_row = model.score_eval(ev_row)
    torch.testing.assert_close(s_full[row : row + 1], s_row, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r_full[row : row + 1], r_row, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKBONES)
def test_encode_is_causal_and_eval_query_ignores_target(name: str, data: SequenceData) -> None:
    model = model_for(name, data)
    ev = data.eval_batch(np.arange(data.num_users), "test")
    h = model.encode(ev["items"], ev["feedback"], ev["timestamps"])
    changed = {k: v.clone() for k, v in ev.items()}
    changed["items"][:, 3:] = torch.where(ev["items"][:, 3:] > 0, (ev["items"][:, 3:] % NUM_ITEMS) + 1, 0)
    h2 = model.encode(changed["items"], changed["feedback"], changed["timestamps"])
    torch.testing.assert_close(h2[:, :6], h[:, :6], rtol=1e-5, atol=1e-5)
    # a different target: the same retrieval scores (the query precedes it), another rank logit
    rows = torch.arange(len(ev["lengths"]))
    other = {k: v.clone() for k, v in ev.items()}
    other["items"][rows, ev["lengths"]] = ev["targets"] % NUM_ITEMS + 1
    s1, r1 = model.score_eval(ev)
    s2, r2 = model.score_eval(other)
    torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-5)
    assert (r2 - r1).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------
# packed candidate scoring
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES)
def test_packed_candidates_equal_appending_each(name: str, data: SequenceData) -> None:
    """score_candidates == appending each candidate alone after the prefix (score_eval)."""
    model = model_for(name, data)
    ev = data.eval_batch(np.arange(data.num_users), "test")
    b, k = len(ev["lengths"]), 6
    candidates = torch.randint(1, NUM_ITEMS + 1, (b, k), generator=torch.Generator().manual_seed(0))
    packed = model.score_candidates(ev["items"], ev["feedback"], ev["timestamps"], ev["lengths"], candidates)
    rows = torch.arange(b)
    alone = torch.empty(b, k)
    for j in range(k):
        batch = {key: v.clone() for key, v in ev.items()}
        batch["items"][rows, ev["lengths"]] = candidates[:, j]
        alone[:, j] = model.score_eval(batch)[1]
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKBONES)
def test_candidates_after_a_shorter_prefix(name: str, data: SequenceData) -> None:
    """A prefix shorter than the batch (items after `lengths` are ignored), checked against
    encode() of prefix + candidate; a reused prefix gives the same logits."""
    model = model_for(name, data)
    train = data.train_batch(np.arange(data.num_users))
    lengths = (train["lengths"] - 1).clamp(min=1)
    b, k = len(lengths), 3
    candidates = torch.randint(1, NUM_ITEMS + 1, (b, k), generator=torch.Generator().manual_seed(1))
    args = (train["items"], train["feedback"], train["timestamps"], lengths)
    packed = model.score_candidates(*args, candidates)
    prefix = model.encode_prefix(*args)
    torch.testing.assert_close(model.score_candidates(*args, candidates, prefix=prefix), packed)
    for r in range(b):
        n = int(lengths[r])
        for j in range(k):
            items = torch.cat([train["items"][r, :n], candidates[r, j : j + 1]])[None]
            feedback = torch.cat([train["feedback"][r, :n], torch.zeros(1, dtype=torch.long)])[None]
            # the candidate takes the time of the interaction that follows the prefix
            times = train["timestamps"][r, : n + 1][None]
            h = model.encode(items, feedback, times)
            torch.testing.assert_close(packed[r, j], model.rank_logits(h[0, 2 * n]), rtol=1e-5, atol=1e-5)
            # the prefix query is encode()'s query at the last feedback token, the next item's
            # slot filled as in an eval batch (SASRec counts positions back from that slot)
            torch.testing.assert_close(prefix.query[r], model.queries(h[0, 2 * n - 1]), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# the retrieval softmax
# ------------------------------------------------------------------------------------------


def test_model_retrieval_loss_matches_manual_with_collisions(data: SequenceData) -> None:
    """With 3 items most sampled negatives collide with the positive; the model's loss equals
    the softmax over the non-colliding negatives only."""
    items = [np.array([1, 2, 3, 1, 2, 3, 1]), np.array([3, 1, 2, 3, 2])]
    ratings = [np.full(7, 5.0), np.array([1.0, 5.0, 1.0, 5.0, 1.0])]
    small = SequenceData.from_arrays(items, ratings, num_items=3, max_len=10)
    torch.manual_seed(0)
    loss_cfg = LossConfig(retrieval="sampled_softmax", num_negatives=8)
    model = UniGRF(tiny_cfg("llama"), 3, small.num_levels, 10, loss_cfg).eval()
    batch = small.train_batch(np.arange(2))
    torch.manual_seed(11)
    loss = model.losses(batch, ranking=False)["retrieval"]
    torch.manual_seed(11)
    negatives = torch.randint(1, 4, (8,))  # the draw losses() makes
    h = model.encode(batch["items"], batch["feedback"], batch["timestamps"])
    table = model.item_table()
    tau = loss_cfg.temperature
    terms, collisions = [], 0
    for r in range(2):
        for k in range(batch["items"].shape[1]):
            target = int(batch["next_items"][r, k])
            if target == 0:
                continue
            logits = model.queries(h[r, 2 * k + 1]) @ table.T / tau
            negs = [int(n) for n in negatives if int(n) != target]
            collisions += len(negatives) - len(negs)
            terms.append(-(logits[target] - torch.logsumexp(logits[[target, *negs]], dim=0)))
    assert collisions > 0
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-5)


def anchor_neighbours(model: UniGRF, batch: dict[str, torch.Tensor], nearest: bool, m: int) -> torch.Tensor:
    """Per row, the m items closest to (or farthest from) the anchor query, never the positive."""
    h = model.encode(batch["items"], batch["feedback"], batch["timestamps"])
    rows = torch.arange(len(batch["lengths"]))
    anchor = batch["lengths"] - 2
    q = model.queries(h[rows, 2 * anchor + 1])
    scores = q @ model.item_table().T
    scores[:, 0] = float("nan")
    scores[rows, batch["next_items"][rows, anchor]] = float("nan")
    order = scores.nan_to_num(float("-inf") if nearest else float("inf")).argsort(dim=1, descending=nearest)
    return order[:, :m]


def test_hard_negatives_raise_the_loss_when_near_the_query(data: SequenceData) -> None:
    model = model_for("hstu", data)
    batch = data.train_batch(np.arange(2, data.num_users))  # rows with an anchor

    def retrieval(hard: torch.Tensor | None, scope: str = "all") -> float:
        torch.manual_seed(7)
        with torch.no_grad():
            return float(model.losses(batch, hard, ranking=False, hard_negative_scope=scope)["retrieval"])

    base = retrieval(None)
    near, far = anchor_neighbours(model, batch, True, 3), anchor_neighbours(model, batch, False, 3)
    assert retrieval(near) > base + 0.05
    assert retrieval(far) < retrieval(near)
    assert retrieval(near, "all") > retrieval(near, "anchor") > base  # anchor: one position per row
    assert retrieval(torch.zeros_like(near)) == pytest.approx(base)  # id 0 = no negative
    rows = torch.arange(len(batch["lengths"]))
    positives = batch["next_items"][rows, batch["lengths"] - 2][:, None].expand(-1, 3)
    assert retrieval(positives, "anchor") == pytest.approx(base)  # collisions with the positive


@pytest.mark.parametrize("loss", [SAMPLED, LossConfig(retrieval="full_softmax"), LossConfig(retrieval="bce")])
@pytest.mark.parametrize("scope", ["all", "anchor"])
def test_hard_negatives_scored_per_row_equal_the_per_position_gather(data, loss, scope) -> None:
    """The model scores a row's hard negatives once per row ([B, N, D] x [B, D, m]); the loss
    and its gradients equal the loss module's own per-position gather of their vectors."""
    model = model_for("sasrec", data, loss=loss)
    batch = data.train_batch(np.arange(data.num_users))
    hard = torch.randint(
        0, data.num_items + 1, (data.num_users, 5), generator=torch.Generator().manual_seed(3)
    )

    def loss_and_grads(per_row: bool) -> list[torch.Tensor]:
        torch.manual_seed(7)  # the same sampled negatives on both paths
        if per_row:
            value = model.losses(batch, hard, ranking=False, hard_negative_scope=scope)["retrieval"]
        else:
            h = model.encode(batch["items"], batch["feedback"], batch["timestamps"])
            rows, cols = (batch["next_items"] > 0).nonzero(as_tuple=True)
            per_position = hard[rows]
            if scope == "anchor":
                anchors = batch["lengths"] - 2  # the last position with a target
                per_position = torch.where((cols == anchors[rows])[:, None], per_position, 0)
            value = model.retrieval_loss(
                model.queries(h[:, 1::2][rows, cols]),
                batch["next_items"][rows, cols],
                model.item_table(),
                hard=per_position,
            )
        return [
            value,
            *torch.autograd.grad(
                value,
                [p for p in model.parameters() if p.requires_grad],
                allow_unused=True,
                materialize_grads=True,
            ),
        ]

    for got, want in zip(loss_and_grads(True), loss_and_grads(False), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_in_batch_negatives(data: SequenceData) -> None:
    batch = data.train_batch(np.arange(2, data.num_users))
    losses = {}
    for flag in (False, True):
        sampler = "in_batch" if flag else "uniform"
        loss = LossConfig(retrieval="sampled_softmax", sampler=sampler, logq_correction=False)
        model = model_for("sasrec", data, loss=loss)
        torch.manual_seed(5)
        losses[flag] = model.losses(batch, ranking=False)["retrieval"].item()
    assert losses[True] > losses[False]  # more negatives in every softmax
    one = {k: v[:1] for k, v in batch.items()}  # a batch of one row has no other rows
    model = model_for(
        "sasrec",
        data,
        loss=LossConfig(retrieval="sampled_softmax", sampler="in_batch", logq_correction=False),
    )
    plain = model_for("sasrec", data, loss=LossConfig(retrieval="sampled_softmax"))
    torch.manual_seed(5)
    a = model.losses(one, ranking=False)["retrieval"]
    torch.manual_seed(5)
    torch.testing.assert_close(a, plain.losses(one, ranking=False)["retrieval"])


def test_ranking_loss_is_bce_over_item_positions(data: SequenceData) -> None:
    model = model_for("llama", data)
    batch = data.train_batch(np.arange(data.num_users))
    h = model.encode(batch["items"], batch["feedback"], batch["timestamps"])
    valid = batch["items"] != 0
    expected = F.binary_cross_entropy_with_logits(model.rank_logits(h[:, 0::2])[valid], batch["likes"][valid])
    torch.testing.assert_close(model.losses(batch, retrieval=False)["ranking"], expected)


# ------------------------------------------------------------------------------------------
# learning, state, two-stage, factory
# ------------------------------------------------------------------------------------------


def cyclic_data() -> SequenceData:
    """Next item = current + 3 (mod 12); liked iff the item is even."""
    items, ratings = [], []
    for u in range(6):
        seq = (u + 3 * np.arange(12)) % 12 + 1
        items.append(seq)
        ratings.append(np.where(seq % 2 == 0, 5.0, 1.0))
    return SequenceData.from_arrays(items, ratings, num_items=12, max_len=10)


@pytest.mark.parametrize("name", ["hstu", "llama", "sasrec"])
def test_tiny_model_overfits(name: str) -> None:
    data = cyclic_data()
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", dropout=0.0, ranking_prior=False, **BACKBONES[name])  # the head alone
    model = UniGRF(
        cfg,
        data.num_items,
        data.num_levels,
        data.max_len,
        LossConfig(retrieval="sampled_softmax", num_negatives=32),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = data.train_batch(np.arange(data.num_users))
    for _ in range(300):
        losses = model.losses(batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        losses = model.losses(batch)
        h = model.encode(batch["items"], batch["feedback"], batch["timestamps"])
    valid = batch["items"] != 0
    accuracy = ((model.rank_logits(h[:, 0::2])[valid] > 0).float() == batch["likes"][valid]).float().mean()
    assert losses["retrieval"] < 0.1, losses
    assert accuracy == 1.0 and losses["ranking"] < 0.1, losses


def test_state_dict_round_trip(data: SequenceData) -> None:
    model = model_for("hstu_time", data, seed=1)
    clone = model_for("hstu_time", data, seed=2)
    ev = data.eval_batch(np.arange(data.num_users), "val")
    assert not torch.allclose(model.score_eval(ev)[0], clone.score_eval(ev)[0])
    clone.load_state_dict(model.state_dict())
    for a, b in zip(model.score_eval(ev), clone.score_eval(ev)):
        torch.testing.assert_close(a, b)


def test_two_stage_trains_disjoint_models(data: SequenceData) -> None:
    torch.manual_seed(0)
    model = TwoStage(tiny_cfg("sasrec"), data.num_items, data.num_levels, data.max_len).eval()
    retriever_ids = {id(p) for p in model.retriever.parameters()}
    assert retriever_ids.isdisjoint(id(p) for p in model.ranker.parameters())
    batch = data.train_batch(np.arange(data.num_users))
    losses = model.losses(batch)
    assert set(losses) == {"retrieval", "ranking"}
    losses["retrieval"].backward()
    assert all(p.grad is None for p in model.ranker.parameters())
    assert any(p.grad is not None for p in model.retriever.parameters())
    torch.manual_seed(1)
    expected_ret = model.retriever.losses(batch, ranking=False)["retrieval"]
    torch.manual_seed(1)
    torch.testing.assert_close(model.losses(batch, ranking=False)["retrieval"], expected_ret)
    ev = data.eval_batch(np.arange(data.num_users), "test")
    scores, rank = model.score_eval(ev)
    torch.testing.assert_close(scores, model.retriever.score_eval(ev)[0])
    torch.testing.assert_close(rank, model.ranker.score_eval(ev)[1])
    cands = ev["targets"][:, None]
    logits = model.score_candidates(ev["items"], ev["feedback"], ev["timestamps"], ev["lengths"], cands)
    torch.testing.assert_close(logits[:, 0], rank, rtol=1e-5, atol=1e-5)


def test_build_model_by_variant() -> None:
    cfg = ExperimentConfig(model=tiny_cfg("llama"))
    assert type(build_model(cfg, 20, 5, 10)) is UniGRF
    anchor = dataclasses.replace(cfg, enhancer=dataclasses.replace(cfg.enhancer, scope="anchor"))
    assert build_model(anchor, 20, 5, 10).hard_negative_scope == "anchor"
    two = dataclasses.replace(cfg, train=TrainConfig(variant="two_stage"))
    assert type(build_model(two, 20, 5, 10)) is TwoStage


# ------------------------------------------------------------------------------------------
# the item-only retriever (SASRec / HSTU as published: no feedback tokens)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hstu", "llama", "sasrec"])
def test_item_only_model_reads_items_alone(name: str, data: SequenceData) -> None:
    model = model_for(
        name, data, loss=LossConfig(retrieval="full_softmax", temperature=1.0), feedback_tokens=False
    )
    assert not model.has_ranking and model.feedback_embedding is None
    assert model.max_positions == MAX_LEN + 2
    batch = data.train_batch(np.arange(data.num_users))
    h = model.encode(batch["items"], batch["feedback"], batch["timestamps"])
    assert h.shape == (*batch["items"].shape, 16)
    other = model.encode(batch["items"], torch.randint_like(batch["feedback"], 1, 3), batch["timestamps"])
    torch.testing.assert_close(h, other)  # ratings are never read
    losses = model.losses(batch)
    assert set(losses) == {"retrieval"}
    # item token k is the query for item k + 1: full softmax over the catalogue, by hand
    terms = []
    for r in range(batch["items"].shape[0]):
        for k in range(batch["items"].shape[1]):
            target = int(batch["next_items"][r, k])
            if target:
                logits = model.queries(h[r, k]) @ model.item_table()[1:].T
                terms.append(torch.logsumexp(logits, 0) - logits[target - 1])
    torch.testing.assert_close(losses["retrieval"], torch.stack(terms).mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["hstu", "sasrec"])
def test_item_only_eval_query_is_the_last_history_item(name: str, data: SequenceData) -> None:
    model = model_for(name, data, feedback_tokens=False)
    users = np.arange(data.num_users)
    ev = data.eval_batch(users, "test")
    scores, logit = model.score_eval(ev)
    prefix_scores, _ = model.eval_prefix(ev)
    torch.testing.assert_close(prefix_scores, scores, rtol=1e-5, atol=1e-5)
    assert torch.all(logit == 0)
    for r in range(len(users)):  # the query does not depend on the item the eval batch appends
        n = int(ev["lengths"][r])
        items = ev["items"][r : r + 1, : n + 1].clone()
        items[0, n] = 1 + int(items[0, n]) % data.num_items
        h = model.encode(items, None, ev["timestamps"][r : r + 1, : n + 1])
        torch.testing.assert_close(
            scores[r], model.queries(h[0, n - 1]) @ model.item_table().T, rtol=1e-5, atol=1e-5
        )


def test_item_only_variant_builds_the_item_model_and_evaluates_without_ranking(data: SequenceData) -> None:
    from unigrf.config import EvalConfig
    from unigrf.evaluation.evaluate import evaluate

    cfg = ExperimentConfig(model=tiny_cfg("sasrec"), train=TrainConfig(variant="item_only"))
    model = build_model(cfg, data.num_items, data.num_levels, data.max_len)
    assert isinstance(model, UniGRF) and not model.has_ranking
    out = evaluate(model, data, "test", EvalConfig(ks=(10,)))
    assert 0.0 <= out["ndcg@10"] <= 1.0
    assert all(np.isnan(out[k]) for k in ("auc", "logloss", "cascade_ndcg@10", "cascade_hr@10"))
