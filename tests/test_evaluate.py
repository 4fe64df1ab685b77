"""evaluate() and popularity_baseline() with fake models whose scores are known."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from unigrf.config import EvalConfig, ModelConfig
from unigrf.data.sequences import SequenceData
from unigrf.evaluation import evaluate, format_metrics_table, popularity_baseline
from unigrf.evaluation.cascade_score import DEFAULT_LAMBDAS, format_lambda
from unigrf.evaluation.metrics import target_ranks

pytestmark = [
    pytest.mark.timeout(60),
    # tiny cases where every target is liked: AUC is NaN by design and says so
    pytest.mark.filterwarnings("ignore:AUC is undefined:RuntimeWarning"),
]


# The cascade's former rule (the ranking head's order alone): λ = inf of the combined score.
RANKING_ALONE = math.inf


class TableModel(nn.Module):
    """A fake with the UniGRF evaluation API: retrieval scores from a per-user table, the
    target's ranking logit per user, and each candidate's ranking logit per item."""

    def __init__(
        self,
        scores: torch.Tensor,
        rank_logits: torch.Tensor,
        item_logits: torch.Tensor,
        retrieval_temperature: float = 0.5,
    ):
        super().__init__()
        self.retrieval_temperature = retrieval_temperature
        self.register_buffer("scores", scores.float())  # [U, I + 1]
        self.register_buffer("rank_logits", rank_logits.float())  # [U]
        self.register_buffer("item_logits", item_logits.float())  # [I + 1]
        self.candidate_calls: list[dict[str, torch.Tensor]] = []

    def score_eval(self, batch):
        assert not self.training and not torch.is_grad_enabled()
        users = batch["users"]
        return self.scores[users], self.rank_logits[users]

    def score_candidates(self, items, feedback, timestamps, lengths, candidates):
        assert not self.training and not torch.is_grad_enabled()
        self.candidate_calls.append({"items": items, "lengths": lengths, "candidates": candidates})
        return self.item_logits[candidates]


def make_data(
    sequences: list[list[int]], ratings: list[list[float]] | None = None, num_items=None
) -> SequenceData:
    ratings = ratings or [[5.0] * len(s) for s in sequences]
    return SequenceData.from_arrays(
        [np.array(s) for s in sequences], [np.array(r, dtype=float) for r in ratings], num_items=num_items
    )


def random_data(num_users: int, num_items: int, seed: int) -> SequenceData:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 25, num_users)
    return SequenceData.from_arrays(
        [rng.integers(1, num_items + 1, n) for n in lengths],
        [rng.integers(1, 6, n).astype(float) for n in lengths],
        num_items=num_items,
    )


def test_one_hot_scores_give_perfect_retrieval():
    data = random_data(12, 40, seed=0)
    targets = data.eval_batch(np.arange(12), "test")["targets"]
    scores = torch.zeros(12, 41)
    scores[torch.arange(12), targets] = 1.0
    out = evaluate(
        TableModel(scores, torch.zeros(12), torch.zeros(41)), data, "test", EvalConfig(), cascade_lambda=1.0
    )
    assert out["hr@10"] == 1.0 and out["ndcg@10"] == 1.0 and out["mrr"] == 1.0
    assert out["num_users"] == 12


def test_history_masking_recovers_a_target_buried_under_history_items():
    # user 0's test history is items 1..12 (with a repeat), the target is 13
    data = make_data([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 2, 12, 13], [20, 21, 22, 23]], num_items=30)
    scores = torch.zeros(2, 31)
    scores[0, 1:13] = 10.0  # all 12 history items outscore the target
    scores[0, 13] = 5.0
    scores[1, 23] = 1.0
    out = evaluate(
        TableModel(scores, torch.zeros(2), torch.zeros(31)),
        data,
        "test",
        EvalConfig(ks=(1, 10)),
        cascade=False,
    )
    assert out["hr@1"] == 1.0 and out["ndcg@10"] == 1.0
    # the same scores without the history mask would miss the top 10: masking really matters
    batch = data.eval_batch(np.arange(2), "test")
    assert target_ranks(scores, batch["targets"]).tolist() == [12, 0]


def test_a_target_already_in_the_history_stays_rankable():
    data = make_data([[4, 7, 9, 7], [1, 2, 3]], num_items=10)  # user 0's test target 7 is re-consumed
    scores = torch.zeros(2, 11)
    scores[0, 7] = 3.0
    scores[0, 9] = 4.0  # a history item above it: masked
    scores[1, 3] = 1.0
    out = evaluate(
        TableModel(scores, torch.zeros(2), torch.zeros(11)), data, "test", EvalConfig(ks=(1,)), cascade=False
    )
    assert out["hr@1"] == 1.0


def cascade_case() -> tuple[SequenceData, TableModel]:
    """Four users, test split, cascade_top_c = 4, cascade_k = 2 (see the expected values)."""
    data = make_data(
        [[1, 2, 3, 4, 10], [5, 6, 7, 8, 20], [1, 5, 9, 14, 30], [2, 6, 15, 16, 24]],
        [[5, 5, 5, 5, 5], [5, 5, 5, 5, 5], [5, 5, 5, 5, 4], [5, 5, 5, 5, 1]],  # user 3 dislikes 24
        num_items=40,
    )
    scores = torch.zeros(4, 41)
    items = torch.zeros(41)
    # user 0: retrieval ranks the target 10 third (history items 1..4 masked); ranking lifts it to 2nd
    scores[0, 1:5] = 1.0
    scores[0, [11, 12, 10, 13]] = torch.tensor([0.9, 0.8, 0.7, 0.6])
    items[[11, 10, 12, 13]] = torch.tensor([1.0, 0.5, -1.0, -2.0])
    # user 1: retrieval ranks the target 20 first; ranking pushes it to 4th of 4 (out of the top 2)
    scores[1, [20, 21, 22, 23]] = torch.tensor([0.9, 0.8, 0.7, 0.6])
    items[[20, 21, 22, 23]] = torch.tensor([-3.0, 0.1, 0.2, 0.3])
    # user 2: retrieval ranks the target 30 tenth, outside the top 4; ranking would love it: still a
    # miss, whatever the ranking thinks of the candidates that did make it (31 ranks first there)
    scores[2, 31:40] = torch.linspace(0.9, 0.5, 9)
    scores[2, 30] = 0.1
    items[30] = 10.0
    items[31] = 3.0
    # user 3: disliked target, first everywhere, but not in the cascade's denominator
    scores[3, 24] = 1.0
    items[24] = 5.0
    return data, TableModel(scores, torch.tensor([2.0, 1.0, 0.5, -1.0]), items)


CASCADE_CFG = EvalConfig(ks=(1, 10), cascade_top_c=4, cascade_k=2)


def test_cascade_hand_made_case():
    data, model = cascade_case()
    out = evaluate(model, data, "test", CASCADE_CFG, cascade_lambda=RANKING_ALONE)
    assert out["hr@1"] == 0.5  # users 1 and 3
    assert out["hr@10"] == 1.0  # user 2 at rank 9
    # only user 0 of the three liked targets survives the cascade, at rank 1
    assert out["cascade_num_users"] == 3
    assert out["cascade_hr@2"] == pytest.approx(1 / 3)
    assert out["cascade_ndcg@2"] == pytest.approx(1 / math.log2(3) / 3)
    # ranking on the targets: every liked logit above the disliked one
    assert out["auc"] == 1.0
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  -log(sigmoid(-x))
    assert out["logloss"] == pytest.approx((softplus(-2) + softplus(-1) + softplus(-0.5) + softplus(-1)) / 4)
    # the prefix handed to score_candidates is the eval batch's rows as they are (the target sits
    # at `lengths`), and only of the users whose cascade rank the ranking decides: user 2's target
    # is not in retrieval's top 4 and user 3's is not liked, so their candidates are not scored
    (call,) = model.candidate_calls
    rows = torch.arange(len(call["lengths"]))
    assert call["candidates"].shape == (2, 4)
    assert set(call["items"][rows, call["lengths"]].tolist()) == {10, 20}
    # λ = 0 keeps retrieval's order: user 0's target stays third (a miss at 2), user 1's first
    assert out["cascade0_hr@2"] == pytest.approx(1 / 3) and out["cascade0_ndcg@2"] == pytest.approx(1 / 3)
    assert out["cascade_lambda"] == math.inf


def test_cascade_denominator_counts_liked_targets_only():
    data, model = cascade_case()
    data.ratings[data.offsets[4] - 1] = 5.0  # user 3 now likes its target: a fourth cascade user, a hit
    out = evaluate(model, data, "test", CASCADE_CFG, cascade_lambda=RANKING_ALONE)
    assert out["cascade_num_users"] == 4
    assert out["cascade_hr@2"] == pytest.approx(2 / 4)


def test_two_stage_takes_all_ranking_from_the_ranking_model():
    data, unified = cascade_case()
    retrieval = TableModel(unified.scores, -unified.rank_logits, torch.zeros(41))  # inverted ranking
    for lam in CASCADE_CFG.cascade_lambdas:
        out = evaluate(retrieval, data, "test", CASCADE_CFG, ranking_model=unified, cascade_lambda=lam)
        assert out == evaluate(unified, data, "test", CASCADE_CFG, cascade_lambda=lam)
    assert retrieval.candidate_calls == []
    # and with the roles swapped, the inverted ranking logits show up in AUC
    swapped = evaluate(unified, data, "test", CASCADE_CFG, ranking_model=retrieval, cascade_lambda=1.0)
    assert swapped["auc"] == 0.0


def test_batch_size_invariance_and_training_mode_restored():
    data = random_data(37, 60, seed=3)
    gen = torch.Generator().manual_seed(0)
    model = TableModel(
        torch.randn(37, 61, generator=gen), torch.randn(37, generator=gen), torch.randn(61, generator=gen)
    )
    model.train()
    small = evaluate(model, data, "val", EvalConfig(batch_size=1, cascade_top_c=20))
    assert model.training
    large = evaluate(model, data, "val", EvalConfig(batch_size=512, cascade_top_c=20))
    assert small == large
    assert small["num_users"] == 37 and 0.0 <= small["cascade_hr@10"] <= 1.0


def test_users_subset_and_errors():
    data = random_data(10, 30, seed=4)
    model = TableModel(torch.randn(10, 31), torch.zeros(10), torch.zeros(31))
    assert evaluate(model, data, "val", EvalConfig(), users=np.array([1, 3]))["num_users"] == 2
    with pytest.raises(ValueError, match="split"):
        evaluate(model, data, "train", EvalConfig())
    wrong = TableModel(torch.randn(10, 30), torch.zeros(10), torch.zeros(31))  # one column short
    with pytest.raises(ValueError, match=r"expected \(10, 31\)"):
        evaluate(wrong, data, "val", EvalConfig())
    short = make_data([[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="fewer than 3 interactions"):
        popularity_baseline(short, "test", EvalConfig())


def test_popularity_baseline_hand_computed():
    # counts visible before test (all but each user's last item): item 1: 3, 2: 2, 3: 2, 5: 1, 4: 0
    data = make_data([[1, 2, 5, 3], [1, 2, 3, 4], [1, 3, 1]], num_items=5)
    out = popularity_baseline(data, "test", EvalConfig(ks=(1, 2)))
    # user 0: target 3, history {1, 2, 5} masked -> only item 4 competes -> rank 0 (unmasked: rank 2)
    # user 1: target 4 (count 0) below item 5 (count 1) -> rank 1
    # user 2: target 1 is re-consumed, stays rankable, most popular -> rank 0
    assert out["hr@1"] == pytest.approx(2 / 3)
    assert out["hr@2"] == 1.0
    assert out["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3) + 1) / 3)
    assert out["mrr"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert set(out) == {"hr@1", "hr@2", "ndcg@1", "ndcg@2", "mrr", "num_users"}


def ml100k_sequences(path: Path) -> SequenceData:
    frame = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "timestamp"])
    # two stable sorts: per user, by timestamp, ties kept in file order [SPEC §2]
    frame = frame.sort_values("timestamp", kind="stable").sort_values("user", kind="stable")
    codes, uniques = pd.factorize(frame["item"], sort=True)
    cuts = np.flatnonzero(np.diff(frame["user"].to_numpy())) + 1
    return SequenceData.from_arrays(
        np.split(codes + 1, cuts),
        np.split(frame["rating"].to_numpy(float), cuts),
        np.split(frame["timestamp"].to_numpy(), cuts),
        num_items=len(uniques),
        max_len=200,
    )


def test_popularity_on_ml100k_matches_the_spec_reference(ml100k_dir):
    data = ml100k_sequences(ml100k_dir / "u.data")
    # SPEC §3: popularity test HR@10 0.086, NDCG@10 0.045, HR@50 0.199 — reproduced to the last
    # digit with strict-greater ties; the default pessimistic rule costs NDCG@10 0.001.
    optimistic = popularity_baseline(data, "test", EvalConfig(ties="optimistic"))
    assert round(optimistic["hr@10"], 3) == 0.086
    assert round(optimistic["ndcg@10"], 3) == 0.045
    assert round(optimistic["hr@50"], 3) == 0.199
    pessimistic = popularity_baseline(data, "test", EvalConfig())
    assert pessimistic["hr@10"] == pytest.approx(0.086, abs=0.0015)
    assert pessimistic["ndcg@10"] == pytest.approx(0.045, abs=0.0015)
    assert pessimistic["num_users"] == 943


def test_format_metrics_table():
    table = format_metrics_table(
        {"popularity": {"hr@10": 0.0859, "num_users": 943}, "unigrf": {"hr@10": 0.2, "auc": 0.75}}
    )
    assert table.splitlines() == [
        "| system     |  hr@10 | num_users |    auc |",
        "|------------|-------:|----------:|-------:|",
        "| popularity | 0.0859 |       943 |      — |",
        "| unigrf     | 0.2000 |         — | 0.7500 |",
    ]


@pytest.mark.parametrize("backbone", ["hstu", "llama", "sasrec"])
def test_real_unigrf_through_evaluate(backbone):
    from unigrf.model.unified import UniGRF

    torch.manual_seed(0)
    data = random_data(9, 25, seed=5)
    model = UniGRF(ModelConfig(backbone=backbone, size="tiny"), data.num_items, data.num_levels, data.max_len)
    cfg = EvalConfig(ks=(5, 10), cascade_top_c=8, cascade_k=5)
    one = evaluate(
        model,
        data,
        "test",
        EvalConfig(ks=(5, 10), cascade_top_c=8, cascade_k=5, batch_size=1),
        cascade_lambda=1.0,
    )
    full = evaluate(model, data, "test", cfg, cascade_lambda=1.0)
    lambda_keys = {f"cascade_ndcg@5/lambda_{format_lambda(lam)}" for lam in DEFAULT_LAMBDAS}
    assert set(full) == {
        "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr", "auc", "logloss",
        "cascade_hr@5", "cascade_ndcg@5", "cascade_num_users", "cascade_lambda",
        "cascade0_hr@5", "cascade0_ndcg@5", *lambda_keys, "num_users",
    }  # fmt: skip
    assert full["cascade_lambda"] == 1.0
    assert full["num_users"] == 9 and 0.0 <= full["hr@10"] <= 1.0 and full["logloss"] > 0
    # per-user results do not depend on the batch's padding width (float noise aside)
    assert one == pytest.approx(full, nan_ok=True)


class TwoPass(nn.Module):
    """Hides `eval_prefix`, so `evaluate` takes the two-pass path (score_eval, then
    score_candidates re-encoding the prefix)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.retrieval_temperature = model.retrieval_temperature

    def score_eval(self, batch):
        return self.model.score_eval(batch)

    def score_candidates(self, *args):
        return self.model.score_candidates(*args)


@pytest.mark.parametrize("backbone", ["hstu", "llama", "sasrec"])
def test_prefix_reuse_gives_the_two_pass_numbers(backbone):
    from unigrf.model.two_stage import TwoStage
    from unigrf.model.unified import UniGRF

    torch.manual_seed(1)
    data = random_data(40, 60, seed=7)
    cfg = EvalConfig(ks=(5, 10, 50), cascade_top_c=20, cascade_k=10, batch_size=16)
    args = (ModelConfig(backbone=backbone, size="tiny"), data.num_items, data.num_levels, data.max_len)
    for model in (UniGRF(*args), TwoStage(*args)):
        assert hasattr(model, "eval_prefix")
        # train the ranking head a little off zero so the like logits differ across items
        for p in model.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        # the λ chosen on validation, the same by either path (ties in the curve aside)
        lam = evaluate(model, data, "val", cfg)["cascade_lambda"]
        assert lam == evaluate(TwoPass(model), data, "val", cfg)["cascade_lambda"]
        fast = evaluate(model, data, "test", cfg, cascade_lambda=lam)
        slow = evaluate(TwoPass(model), data, "test", cfg, cascade_lambda=lam)
        assert fast.keys() == slow.keys()
        assert fast == pytest.approx(slow, rel=1e-5, abs=1e-6, nan_ok=True)
        # without the cascade: the same retrieval and ranking numbers, the cascade's NaN (no
        # cascade user counted)
        no_cascade = evaluate(model, data, "test", cfg, cascade=False)
        slow_no_cascade = evaluate(TwoPass(model), data, "test", cfg, cascade=False)
        assert no_cascade.keys() == fast.keys()
        for key, value in fast.items():
            if key == "cascade_num_users":
                assert no_cascade[key] == slow_no_cascade[key] == 0 < value
            elif key.startswith("cascade"):
                assert np.isnan(no_cascade[key]) and np.isnan(slow_no_cascade[key])
            else:
                assert no_cascade[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key
                assert slow_no_cascade[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), key


@pytest.mark.parametrize("backbone", ["hstu", "sasrec"])
def test_cascade_scores_only_the_rows_whose_rank_it_decides(backbone):
    """Scoring the candidates of liked, retrieved targets only (`cascade_rows`) gives the cascade
    metrics of scoring every user's candidates; the others' candidates are never scored."""
    from unigrf.evaluation.evaluate import cascade_candidates, cascade_ranks_from_logits
    from unigrf.evaluation.metrics import history_mask, hit_rate, ndcg
    from unigrf.model.unified import UniGRF

    torch.manual_seed(2)
    data = random_data(48, 60, seed=11)
    cfg = EvalConfig(ks=(5, 10), cascade_top_c=20, cascade_k=10, batch_size=16)
    model = UniGRF(ModelConfig(backbone=backbone, size="tiny"), data.num_items, data.num_levels, data.max_len)
    for p in model.parameters():  # off the init, so logits differ across items and users
        p.data.add_(0.05 * torch.randn_like(p))
    scored_rows = []
    score_candidates = model.score_candidates

    def spy(*args, **kwargs):
        out = score_candidates(*args, **kwargs)
        if out.shape[1] > 1:  # the cascade's continuation (the target alone has 1 column)
            scored_rows.append(out.shape[0])
        return out

    model.score_candidates = spy
    fast = evaluate(model, data, "test", cfg, cascade_lambda=RANKING_ALONE)

    # reference: every user's top-20 scored, in one batch, through the two-pass API
    model.eval()
    with torch.no_grad():
        batch = data.eval_batch(np.arange(data.num_users), "test")
        scores, _ = model.score_eval(batch)
        mask = history_mask(batch["history"], data.num_items, batch["targets"])
        ranks = target_ranks(scores, batch["targets"], mask, ties=cfg.ties)
        candidates = cascade_candidates(scores, mask, cfg.cascade_top_c)
        logits = score_candidates(
            batch["items"], batch["feedback"], batch["timestamps"], batch["lengths"], candidates
        )
        cascade = cascade_ranks_from_logits(logits, candidates, mask, batch["targets"], ranks, cfg.ties)
    liked = batch["target_likes"] > 0.5
    needed = int((liked & (ranks < cfg.cascade_top_c)).sum())
    assert 0 < needed < data.num_users / 2  # the case exercises the selection
    assert sum(scored_rows) == needed
    assert 0 < fast["cascade_hr@10"] < 1
    assert fast["cascade_hr@10"] == pytest.approx(hit_rate(cascade[liked], 10))
    assert fast["cascade_ndcg@10"] == pytest.approx(ndcg(cascade[liked], 10), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# The cascade's combined score: log P(next) + λ·log σ(like logit), λ chosen on validation
# ---------------------------------------------------------------------------------------------

LAMBDA_CFG = EvalConfig(ks=(5, 10), cascade_top_c=20, cascade_k=10, batch_size=16)


def perturbed_unigrf(data: SequenceData, backbone: str = "hstu", seed: int = 2) -> nn.Module:
    """A tiny UniGRF moved off its init, so logits differ across items and users."""
    from unigrf.model.unified import UniGRF

    torch.manual_seed(seed)
    model = UniGRF(ModelConfig(backbone=backbone, size="tiny"), data.num_items, data.num_levels, data.max_len)
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return model.eval()


def ranking_head_rule(model: nn.Module, data: SequenceData, split: str, cfg: EvalConfig):
    """The cascade as it was before the combined score, written out on every user at once:
    retrieval's top C re-ranked by the like logit alone, ties pessimistic (the target's rank
    among the candidates by `target_ranks`), C when retrieval missed it.
    -> (retrieval ranks [U], cascade ranks [U], liked [U])."""
    from unigrf.evaluation.metrics import history_mask

    with torch.no_grad():
        batch = data.eval_batch(np.arange(data.num_users), split)
        scores, _ = model.score_eval(batch)
        mask = history_mask(batch["history"], data.num_items, batch["targets"])
        ranks = target_ranks(scores, batch["targets"], mask)
        candidates = scores.masked_fill(mask, -math.inf).topk(cfg.cascade_top_c, dim=1).indices
        logits = model.score_candidates(
            batch["items"], batch["feedback"], batch["timestamps"], batch["lengths"], candidates
        )
        logits = logits.float().masked_fill(mask.gather(1, candidates), -math.inf)
        is_target = candidates == batch["targets"][:, None]
        within = target_ranks(logits, is_target.int().argmax(dim=1))
        cascade = torch.where(is_target.any(dim=1) & (ranks < cfg.cascade_top_c), within, cfg.cascade_top_c)
    return ranks, cascade, batch["target_likes"] > 0.5


@pytest.mark.parametrize("backbone", ["hstu", "llama"])
def test_lambda_inf_reproduces_the_ranking_head_rule_exactly(backbone):
    from unigrf.evaluation.metrics import hit_rate, ndcg

    data = random_data(48, 60, seed=11)
    model = perturbed_unigrf(data, backbone)
    _, old, liked = ranking_head_rule(model, data, "test", LAMBDA_CFG)
    out, frame = evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=math.inf, outcomes=True)
    counted = frame["cascade_rank"].to_numpy() != -1
    np.testing.assert_array_equal(counted, liked.numpy())
    np.testing.assert_array_equal(frame["cascade_rank"].to_numpy()[counted], old[liked].numpy())
    assert 0 < out["cascade_hr@10"] < 1  # the case is not degenerate
    assert out["cascade_hr@10"] == pytest.approx(hit_rate(old[liked], 10), rel=1e-12)
    assert out["cascade_ndcg@10"] == pytest.approx(ndcg(old[liked], 10), rel=1e-12)
    assert out["cascade_ndcg@10"] == out["cascade_ndcg@10/lambda_inf"]


def test_lambda_zero_is_retrieval_over_the_liked_users_capped_at_c():
    data = random_data(48, 60, seed=11)
    model = perturbed_unigrf(data)
    out, frame = evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=0.0, outcomes=True)
    liked = frame["like_label"].to_numpy() == 1
    capped = np.minimum(frame["rank"].to_numpy()[liked], LAMBDA_CFG.cascade_top_c)
    np.testing.assert_array_equal(frame["cascade_rank"].to_numpy()[liked], capped)
    gain = np.where(capped < 10, 1 / np.log2(capped + 2.0), 0.0)
    assert out["cascade_ndcg@10"] == pytest.approx(gain.mean(), rel=1e-12)
    assert out["cascade_hr@10"] == pytest.approx((capped < 10).mean(), rel=1e-12)
    # reported beside any λ's cascade as cascade0_*
    other = evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=2.0)
    assert (other["cascade0_hr@10"], other["cascade0_ndcg@10"]) == (
        out["cascade_hr@10"],
        out["cascade_ndcg@10"],
    )


def brute_force_cascade(
    scores: torch.Tensor,
    item_logits: torch.Tensor,
    data: SequenceData,
    split: str,
    lam: float,
    temperature: float,
    c: int,
) -> np.ndarray:
    """Each user's cascade rank (-1 when the target is not liked) by the definition, one user
    at a time in numpy: the C eligible items with the highest scores, ordered by
    scores/T - logsumexp(eligible scores/T) + λ·log σ(logit), pessimistic ties."""
    batch = data.eval_batch(np.arange(data.num_users), split)
    out = np.full(data.num_users, -1)
    for u in range(data.num_users):
        if batch["target_likes"][u] < 0.5:
            continue
        target = int(batch["targets"][u])
        history = set(batch["history"][u].tolist()) - {0, target}
        eligible = np.array([i for i in range(1, data.num_items + 1) if i not in history])
        s = scores[u, eligible].double().numpy()
        logp = s / temperature - np.log(np.exp(s / temperature).sum())
        order = np.argsort(-s, kind="stable")
        cands = eligible[order[:c]]
        rank_t = int((s > s[eligible == target][0]).sum() + (s == s[eligible == target][0]).sum() - 1)
        if rank_t >= c or target not in cands:
            out[u] = c
            continue
        like = item_logits[cands].double().numpy()
        combined = logp[order[:c]] + lam * -np.log1p(np.exp(-like))
        t = combined[cands == target][0]
        out[u] = int((combined >= t).sum() - 1)
    return out


def test_finite_lambda_ranks_by_the_combined_score_at_the_models_temperature():
    data = random_data(37, 60, seed=3)
    gen = torch.Generator().manual_seed(0)
    scores, item_logits = torch.randn(37, 61, generator=gen), 2 * torch.randn(61, generator=gen)
    cfg = EvalConfig(ks=(10,), cascade_top_c=15, cascade_lambdas=(0.0, 0.5, 1.0, 4.0, math.inf))
    by_temperature = {}
    for temperature in (0.05, 1.0):
        model = TableModel(scores, torch.zeros(37), item_logits, retrieval_temperature=temperature)
        for lam in (0.5, 1.0, 4.0):
            _, frame = evaluate(model, data, "test", cfg, cascade_lambda=lam, outcomes=True)
            expected = brute_force_cascade(scores, item_logits, data, "test", lam, temperature, 15)
            np.testing.assert_array_equal(frame["cascade_rank"].to_numpy(), expected)
            by_temperature[temperature, lam] = expected
    # the temperature matters: it sets how far a like-probability moves an item
    assert (by_temperature[0.05, 1.0] != by_temperature[1.0, 1.0]).any()


def test_two_stage_cascade_takes_p_next_from_the_retriever_and_like_from_the_ranker():
    data = random_data(37, 60, seed=3)
    gen = torch.Generator().manual_seed(1)
    scores, item_logits = torch.randn(37, 61, generator=gen), 2 * torch.randn(61, generator=gen)
    cfg = EvalConfig(ks=(10,), cascade_top_c=15)
    retriever = TableModel(scores, torch.zeros(37), -item_logits, retrieval_temperature=0.2)
    ranker = TableModel(
        torch.randn(37, 61, generator=gen), torch.zeros(37), item_logits, retrieval_temperature=9.0
    )
    _, frame = evaluate(retriever, data, "test", cfg, ranking_model=ranker, cascade_lambda=1.0, outcomes=True)
    expected = brute_force_cascade(scores, item_logits, data, "test", 1.0, 0.2, 15)
    np.testing.assert_array_equal(frame["cascade_rank"].to_numpy(), expected)
    # the real pipeline exposes its retriever's temperature
    from unigrf.config import LossConfig
    from unigrf.model.two_stage import TwoStage

    pipeline = TwoStage(ModelConfig(size="tiny"), 20, 5, 10, LossConfig(temperature=0.07))
    assert pipeline.retrieval_temperature == pipeline.retriever.retrieval_temperature == pytest.approx(0.07)


def test_lambda_is_the_validation_argmax_and_test_only_applies_it():
    from unigrf.evaluation.cascade_score import choose_lambda

    data = random_data(60, 60, seed=5)
    model = perturbed_unigrf(data, seed=4)
    val = evaluate(model, data, "val", LAMBDA_CFG)
    curve = {lam: val[f"cascade_ndcg@10/lambda_{format_lambda(lam)}"] for lam in LAMBDA_CFG.cascade_lambdas}
    assert len(set(curve.values())) > 1  # the λs rank differently here
    best = max(curve.values())
    assert val["cascade_lambda"] == min(lam for lam, v in curve.items() if v == best) == choose_lambda(curve)
    assert val["cascade_ndcg@10"] == curve[val["cascade_lambda"]]
    # test never chooses: without validation's λ it is refused; with one, that λ is reported
    with pytest.raises(ValueError, match="chosen on validation"):
        evaluate(model, data, "test", LAMBDA_CFG)
    for lam in (0.0, 1.0, math.inf):
        test = evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=lam)
        assert test["cascade_lambda"] == lam
        assert test["cascade_ndcg@10"] == test[f"cascade_ndcg@10/lambda_{format_lambda(lam)}"]
    # a λ outside the configured list is evaluated too
    assert evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=3.0)["cascade_lambda"] == 3.0
    with pytest.raises(ValueError, match=">= 0"):
        evaluate(model, data, "test", LAMBDA_CFG, cascade_lambda=-1.0)


def test_outcomes_recompute_every_metric_exactly():
    from unigrf.evaluation.outcomes import metrics_from_outcomes

    data = random_data(48, 60, seed=11)
    model = perturbed_unigrf(data)
    val, val_frame = evaluate(model, data, "val", LAMBDA_CFG, outcomes=True)
    test, test_frame = evaluate(
        model, data, "test", LAMBDA_CFG, cascade_lambda=val["cascade_lambda"], outcomes=True
    )
    for out, frame in ((val, val_frame), (test, test_frame)):
        again = metrics_from_outcomes(frame, LAMBDA_CFG.ks, LAMBDA_CFG.cascade_k)
        assert again == {k: out[k] for k in again}
        assert list(frame["user"]) == list(range(data.num_users))
    assert val == evaluate(model, data, "val", LAMBDA_CFG)  # outcomes=True changes no number


def test_a_model_without_a_temperature_evaluates_the_two_ends_only():
    data, model = cascade_case()
    del model.retrieval_temperature
    with pytest.raises(ValueError, match="retrieval_temperature"):
        evaluate(model, data, "test", CASCADE_CFG, cascade_lambda=1.0)
    ends = dataclasses.replace(CASCADE_CFG, cascade_lambdas=(0.0, math.inf))
    out = evaluate(model, data, "val", ends)
    assert out["cascade_lambda"] in (0.0, math.inf)
