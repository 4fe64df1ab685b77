"""The oracle under the evaluation protocol: it describes exactly the prepared held-out events,
it is far above popularity, and a small trained model lands between the two."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from unigrf.config import DataConfig, EvalConfig, SyntheticConfig, load_config
from unigrf.data.prepare import prepare_dataset
from unigrf.data.sequences import SequenceData
from unigrf.data.synthetic import synthetic_oracle
from unigrf.evaluation.cascade_score import choose_lambda, format_lambda
from unigrf.evaluation.evaluate import cascade_candidates, cascade_ranks_from_logits, popularity_baseline
from unigrf.evaluation.metrics import history_mask, hit_rate, ndcg, target_ranks
from unigrf.evaluation.oracle import load_id_maps, oracle_metrics, synthetic_oracle_metrics
from unigrf.training.loop import TrainContext, fit

# the quick grid's size: 600 users x 200 items x ~30 interactions
DATA = DataConfig(synthetic=SyntheticConfig(num_users=600, num_items=200, mean_seq_len=30))
EVAL = EvalConfig(ks=(10,), cascade_top_c=20)
# a recipe that learns in a few seconds on this data (full softmax over the 200 items)
RECIPE = [
    "model.size=tiny",
    "loss.retrieval=full_softmax",
    "loss.temperature=0.2",
    "train.lr=0.005",
    "train.batch_size=32",
    "train.epochs=8",
    "train.objective=0.5*val/ndcg@10 + 0.5*val/auc",
    "eval.ks=[10]",
    "eval.cascade_top_c=20",
]

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def prepared(ray_cluster, tmp_path_factory):
    return prepare_dataset(DATA, tmp_path_factory.mktemp("oracle"), verbose=False)


@pytest.fixture(scope="module")
def data(prepared) -> SequenceData:
    return SequenceData.load(prepared)


@pytest.fixture(scope="module")
def oracle_test(prepared) -> dict[str, float]:
    return synthetic_oracle_metrics(DATA, prepared, "test", EVAL)


def test_held_out_events_are_the_prepared_eval_targets(prepared, data):
    """Every user's val / test event in the oracle is the target `eval_batch` produces after
    `prepare_dataset` (same user, item, like label and history length)."""
    oracle = synthetic_oracle(DATA.synthetic)
    user_ids, item_ids = load_id_maps(prepared)
    users = np.arange(data.num_users)
    for split, back in (("val", 2), ("test", 1)):
        events = oracle.splits[split]
        row = {u: e for e, u in enumerate(events.users)}
        batch = data.eval_batch(users, split)
        assert len(events) == data.num_users
        picked = np.array([row[u] for u in user_ids])
        assert (item_ids[batch["targets"].numpy()] == events.targets[picked]).all()
        liked = (events.ratings[picked] >= data.like_threshold).astype(np.float32)
        np.testing.assert_array_equal(batch["target_likes"].numpy(), liked)
        assert ((batch["history"].numpy() > 0).sum(axis=1) == events.positions[picked]).all()
        assert (data.lengths - back == events.positions[picked]).all()


def test_oracle_is_far_above_popularity(data, oracle_test):
    """The Bayes ceiling clears the popularity floor on retrieval and ranks likes well."""
    pop = popularity_baseline(data, "test", EVAL)
    assert oracle_test["ndcg@10"] > 5 * pop["ndcg@10"], (oracle_test, pop)
    assert oracle_test["hr@10"] > 3 * pop["hr@10"]
    assert oracle_test["auc"] > 0.85
    base_rate = float(data.eval_batch(np.arange(data.num_users), "test")["target_likes"].mean())
    constant = -(base_rate * np.log(base_rate) + (1 - base_rate) * np.log(1 - base_rate))
    assert oracle_test["logloss"] < 0.8 * constant
    assert oracle_test["cascade_ndcg@10"] > 5 * pop["ndcg@10"]
    assert oracle_test["num_users"] == data.num_users


def joint_probability_cascade(prepared, data: SequenceData, split: str) -> torch.Tensor:
    """The liked users' cascade ranks [U_liked] under P(next) · P(like), written out directly
    (retrieval's top C by the true probability, re-ranked by the probability of being next and
    liked): the oracle's cascade rule before the λ family, of which it is λ = 1."""
    oracle = synthetic_oracle(DATA.synthetic)
    user_ids, item_ids = load_id_maps(prepared)
    events = oracle.splits[split]
    row = {u: e for e, u in enumerate(events.users)}
    picked = np.array([row[u] for u in user_ids])
    column = np.array([list(oracle.items).index(i) for i in item_ids[1:]])
    batch = data.eval_batch(np.arange(data.num_users), split)
    p_next = torch.zeros(data.num_users, data.num_items + 1)
    p_next[:, 1:] = torch.from_numpy(events.item_probs[picked][:, column])
    p_like = torch.zeros(data.num_users, data.num_items + 1, dtype=torch.float64)
    p_like[:, 1:] = torch.from_numpy(oracle.like_probabilities(split, data.like_threshold)[picked][:, column])
    mask = history_mask(batch["history"], data.num_items, batch["targets"])
    ranks = target_ranks(p_next, batch["targets"], mask)
    candidates = cascade_candidates(p_next, mask, EVAL.cascade_top_c)
    joint = p_next.double().gather(1, candidates) * p_like.gather(1, candidates)
    cascade = cascade_ranks_from_logits(joint, candidates, mask, batch["targets"], ranks)
    return cascade[batch["target_likes"] > 0.5]


def test_oracle_cascade_uses_the_models_rule_family_with_lambda_chosen_on_validation(
    prepared, data, oracle_test
):
    """The oracle's cascade is log P(next) + λ·log P(like) with the true probabilities, λ
    chosen on validation and applied to test — the rule a model's cascade follows, so the
    oracle row is its ceiling; at λ = 1 it is the joint probability, the Bayes order."""
    oracle = synthetic_oracle(DATA.synthetic)
    user_ids, item_ids = load_id_maps(prepared)
    val = oracle_metrics(oracle, data, user_ids, item_ids, "val", EVAL)
    curve = {lam: val[f"cascade_ndcg@10/lambda_{format_lambda(lam)}"] for lam in EVAL.cascade_lambdas}
    assert val["cascade_lambda"] == choose_lambda(curve)
    assert oracle_test["cascade_lambda"] == val["cascade_lambda"]  # test applies validation's λ
    chosen = format_lambda(oracle_test["cascade_lambda"])
    assert oracle_test["cascade_ndcg@10"] == oracle_test[f"cascade_ndcg@10/lambda_{chosen}"]
    # the joint probability is the Bayes order of the liked targets: close to the curve's top,
    # far above retrieval alone (λ = 0) and the like-probability alone (λ = inf)
    assert curve[1.0] >= 0.97 * max(curve.values()), curve
    assert curve[1.0] > curve[0.0] and curve[1.0] > curve[math.inf], curve
    # λ = 1 reproduces the former oracle rule, P(next) · P(like), on test
    at_one = oracle_metrics(oracle, data, user_ids, item_ids, "test", EVAL, cascade_lambda=1.0)
    old = joint_probability_cascade(prepared, data, "test")
    assert at_one["cascade_ndcg@10"] == pytest.approx(ndcg(old, 10), rel=1e-9)
    assert at_one["cascade_hr@10"] == pytest.approx(hit_rate(old, 10), rel=1e-9)


def test_oracle_refuses_data_it_does_not_describe(ray_cluster, prepared, data, tmp_path):
    user_ids, item_ids = load_id_maps(prepared)
    other = synthetic_oracle(dataclasses.replace(DATA.synthetic, seed=DATA.synthetic.seed + 1))
    with pytest.raises(ValueError, match="full sequences"):
        oracle_metrics(other, data, user_ids, item_ids, "test", EVAL)
    # a k-core filter removes interactions: the histories are no longer the generator's
    small = DataConfig(
        k_core=5, synthetic=SyntheticConfig(num_users=200, num_items=300, mean_seq_len=12, min_seq_len=3)
    )
    filtered = prepare_dataset(small, tmp_path, verbose=False)
    with pytest.raises(ValueError, match="full sequences"):
        synthetic_oracle_metrics(small, filtered, "test", EVAL)
    with pytest.raises(ValueError, match="synthetic dataset only"):
        synthetic_oracle_metrics(dataclasses.replace(DATA, dataset="ml-100k"), prepared, "test", EVAL)


@pytest.mark.timeout(180)
def test_a_small_model_lands_between_popularity_and_the_oracle(data, oracle_test, tmp_path):
    """A tiny HSTU trained for a few seconds with the plain loop beats popularity on retrieval
    and learns the ranking, and stays below the oracle on both."""
    torch.set_num_threads(1)
    result = fit(load_config(None, RECIPE), data, TrainContext(tmp_path, verbose=False))
    model = {k.removeprefix("test/"): v for k, v in result["test"].items()}
    pop = popularity_baseline(data, "test", EVAL)
    assert 1.3 * pop["ndcg@10"] < model["ndcg@10"] < oracle_test["ndcg@10"], (pop, model, oracle_test)
    assert 0.7 < model["auc"] < oracle_test["auc"], (model, oracle_test)
