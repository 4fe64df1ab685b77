"""Search-space files and sweep result tables: no Ray needed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from unigrf.config import config_to_yaml, load_config
from unigrf.sweep.results import markdown_table, pareto_mask, trial_row, trials_table
from unigrf.sweep.space import SpaceError, clean_value, load_space, resolve, trial_config

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "name": "tiny",
    "fixed": {"train.epochs": 3, "enhancer.top_k": 20},
    "objective": "val/ndcg@10",
    "num_samples": 6,
    "scheduler": {"kind": "asha", "grace_period": 1},
    "space": {
        "enhancer.m": {"int": [0, 16]},
        "weighter.share": {"loguniform": [0.05, 1]},
        "model.size": {"choice": ["tiny", "small"]},
        "train.lr": {"loguniform": ["1e-4", "1e-2"]},  # how YAML reads 1e-4: a string
        "model.dropout": {"float": [0.0, 0.4], "step": 0.1},
    },
}


def write_space(tmp_path: Path, data: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def with_space(**space) -> dict:
    return {**GOOD, "space": space}


def test_good_space_parses_to_optuna_distributions(tmp_path):
    spec, base = resolve(write_space(tmp_path, GOOD))
    dists = spec.optuna_space()
    assert dists["enhancer.m"] == IntDistribution(0, 16)  # inclusive upper bound
    assert dists["weighter.share"] == FloatDistribution(0.05, 1.0, log=True)
    assert dists["train.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["model.size"] == CategoricalDistribution(["tiny", "small"])
    assert dists["model.dropout"] == FloatDistribution(0.0, 0.4, step=0.1)
    assert base.train.epochs == 3 and base.enhancer.top_k == 20
    assert base.train.objective == "val/ndcg@10"
    assert spec.num_samples == 6 and spec.name == "tiny"


def test_command_line_overrides_and_max_epochs_reach_the_base(tmp_path):
    data = {**GOOD, "fixed": {"enhancer.top_k": 20}, "scheduler": {"max_epochs": 5, "grace_period": 2}}
    spec, base = resolve(write_space(tmp_path, data), ["train.batch_size=32"])
    assert base.train.batch_size == 32
    assert base.train.epochs == 5  # scheduler.max_epochs is every trial's train.epochs


@pytest.mark.parametrize("path", sorted((REPO / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path):
    spec, base = resolve(path)
    assert spec.params and base.train.objective == spec.objective


BAD = [
    # (space entry or top-level change, words the message must contain)
    ({"space": {"model.nonexistent": {"int": [0, 3]}}}, ["space.model.nonexistent", "unknown key"]),
    ({"space": {"enhancer.m": {"int": [4, 4]}}}, ["space.enhancer.m", "empty range"]),
    ({"space": {"enhancer.m": {"int": [8, 2]}}}, ["space.enhancer.m", "low 8 > high 2"]),
    ({"space": {"train.lr": {"loguniform": [0, 0.1]}}}, ["space.train.lr", "loguniform bounds must be > 0"]),
    ({"space": {"train.lr": {"loguniform": [-1.0, 0.1]}}}, ["space.train.lr", "> 0"]),
    ({"space": {"enhancer.m": {"float": [0.0, 4.0]}}}, ["space.enhancer.m", "expected an integer"]),
    ({"space": {"model.size": {"int": [0, 3]}}}, ["space.model.size", "is not one of"]),
    ({"space": {"model.size": {"choice": ["tiny", "huge"]}}}, ["space.model.size", "'huge'"]),
    (
        {"space": {"enhancer.m": {"normal": [0, 1]}}},
        ["space.enhancer.m", "unknown or ambiguous distribution 'normal'"],
    ),
    ({"space": {"enhancer.m": {"int": [0, 10], "float": [0, 1]}}}, ["space.enhancer.m", "ambiguous"]),
    ({"space": {"enhancer.m": {"int": [0, 10], "step": 3}}}, ["space.enhancer.m", "whole number of steps"]),
    ({"space": {"enhancer.m": {"int": [0.5, 10]}}}, ["space.enhancer.m.int[0]", "must be integers"]),
    ({"space": {"enhancer.m": {"int": [0]}}}, ["space.enhancer.m", "needs [low, high]"]),
    ({"space": {"enhancer.m": [0, 10]}}, ["space.enhancer.m", "expected a distribution mapping"]),
    ({"space": {"enhancer.m": {"choice": []}}}, ["space.enhancer.m", "non-empty list"]),
    ({"space": {"eval.ks": {"choice": [[10], [20]]}}}, ["space.eval.ks", "scalars"]),
    # cross-field check of the config: top_k is fixed at 20 above, m may not exceed it
    (
        {"space": {"enhancer.m": {"int": [0, 64]}}},
        ["space.enhancer.m", "value 64", "enhancer.m (64) must be <= enhancer.top_k"],
    ),
    ({"space": {}}, ["`space` is empty"]),
    ({"fixed": {"enhancer.m": 4}}, ["space.enhancer.m is searched but also fixed"]),
    ({"fixed": {"model.bogus": 1}}, ["fixed", "unknown key model.bogus"]),
    ({"objective": "test/ndcg@10"}, ["objective", "val/"]),
    ({"objective": "val/ndcg@10 +"}, ["objective", "cannot parse"]),
    ({"multi_objective": {"metrics": ["val/ndcg@10", "test/auc"]}}, ["multi_objective.metrics[1]", "val/"]),
    (
        {"multi_objective": {"metrics": ["val/ndcg@10"], "modes": ["max"]}},
        ["multi_objective needs >= 2 metrics"],
    ),
    ({"multi_objective": {"modes": ["max", "up"]}}, ["multi_objective.modes[1]", "'up'"]),
    ({"sampler": {"kind": "grid"}}, ["sampler.kind", "'grid'"]),
    (
        {"sampler": {"kind": "tpe", "sed": 1}},
        ["unknown key sampler.sed (valid keys under sampler: kind, n_startup_trials, seed)"],
    ),
    ({"scheduler": {"grace_period": 2}}, ["scheduler.grace_period (2)", "epochs (3) - 2"]),
    ({"scheduler": {"reduction_factor": 1}}, ["reduction_factor must be >= 2"]),
    ({"num_samples": 0}, ["num_samples", "positive integer"]),
    ({"bogus": 1}, ["unknown key bogus (valid keys at the top level: base_config, "]),
    ({"base_config": "missing.yaml"}, ["base_config missing.yaml not found"]),
]


@pytest.mark.parametrize("change,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_spaces_are_rejected_naming_file_and_entry(tmp_path, change, words):
    data = {**GOOD, **change}
    if "space" in change and change["space"]:  # a bad entry beside the good ones
        data["space"] = {
            **{k: v for k, v in GOOD["space"].items() if k not in change["space"]},
            **change["space"],
        }
    path = write_space(tmp_path, data)
    with pytest.raises(SpaceError) as err:
        resolve(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("space:\n  enhancer.m: {int: [0, 3]\n")
    with pytest.raises(SpaceError, match=r"broken.yaml:\d+: invalid YAML"):
        load_space(path)


def test_base_config_is_relative_to_the_space_file(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text("model:\n  backbone: sasrec\n")
    sub = tmp_path / "tune"
    sub.mkdir()
    spec, base = resolve(write_space(sub, {**GOOD, "base_config": "../configs/base.yaml"}))
    assert base.model.backbone == "sasrec"


def test_trial_config_applies_samples_and_round_trips_through_yaml(tmp_path):
    spec, base = resolve(write_space(tmp_path, GOOD))
    params = {"enhancer.m": np.int64(7), "model.dropout": 0.30000000000000004, "model.size": "tiny"}
    cfg = trial_config(base, params, "best")
    assert cfg.enhancer.m == 7 and isinstance(cfg.enhancer.m, int)
    assert cfg.model.dropout == 0.3 and cfg.name == "best"
    path = tmp_path / "best.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg  # what `unigrf train best.yaml` runs is exactly the trial
    assert clean_value(0.1 + 0.2) == 0.3 and clean_value("x") == "x"


# --------------------------------------------------------------------------------------------
# results tables
# --------------------------------------------------------------------------------------------


def test_pareto_mask_hand_computed():
    values = np.array(
        [
            [0.10, 0.70],  # front
            [0.20, 0.60],  # front
            [0.15, 0.55],  # dominated by row 1
            [0.05, 0.80],  # front
            [0.10, 0.70],  # equal to row 0: neither dominates, both on the front
            [np.nan, 0.90],  # incomplete: never on the front
            [0.20, 0.50],  # dominated by row 1 (equal first, worse second)
        ]
    )
    mask = pareto_mask(values, ["max", "max"])
    assert mask.tolist() == [True, True, False, True, True, False, False]
    # minimising the second objective instead: (0.20, 0.50) is best on both, so alone
    mask_min = pareto_mask(values, ["max", "min"])
    assert mask_min.tolist() == [False, False, False, False, False, False, True]


def test_trial_rows_for_completed_and_stopped_trials():
    history = pd.DataFrame(
        [
            {"epoch": 0.0, "objective": 0.10, "val/ndcg@10": 0.10, "val/auc": 0.6},
            {"epoch": 1.0, "objective": 0.30, "val/ndcg@10": 0.30, "val/auc": 0.7},
            {"epoch": 2.0, "objective": 0.20, "val/ndcg@10": 0.20, "val/auc": 0.8},
        ]
    )
    final = {
        "final": 1,
        "epochs_run": 3.0,
        "best_epoch": 1.0,
        "objective": 0.35,
        "val/ndcg@10": 0.35,
        "test/ndcg@10": 0.25,
    }
    done = trial_row("a", {"enhancer.m": 4}, final, history, error=False)
    assert done["status"] == "completed" and done["test/ndcg@10"] == 0.25 and done["best_epoch"] == 1
    stopped = trial_row("b", {"enhancer.m": 8}, history.iloc[-1].to_dict(), history.iloc[:2], error=False)
    assert stopped["status"] == "stopped" and stopped["epochs_run"] == 2
    assert stopped["objective"] == 0.30 and stopped["best_epoch"] == 1 and "test/ndcg@10" not in stopped
    failed = trial_row("c", {"enhancer.m": 1}, {}, None, error=True)
    assert failed["status"] == "error" and math.isnan(failed["objective"])

    table = trials_table([stopped, failed, done])
    assert list(table["trial_id"]) == ["a", "b", "c"]  # by objective, NaN last
    assert list(table.columns[:2]) == ["trial_id", "enhancer.m"]
    md = markdown_table(table, ["trial_id", "status", "objective", "test/ndcg@10"])
    lines = md.strip().splitlines()
    assert lines[0] == "| trial_id | status | objective | test/ndcg@10 |"
    assert lines[2] == "| a | completed | 0.3500 | 0.2500 |"
    assert lines[4] == "| c | error | — | — |"


def test_fixed_keys_are_checked_against_the_searched_values_not_the_defaults(tmp_path):
    """top_k fixed below the default m while m is searched: the base holds a value from m's
    range; a fixed key that contradicts every searched value is still the fixed key's error."""
    data = {**GOOD, "fixed": {"enhancer.top_k": 12}, "space": {"enhancer.m": {"int": [2, 12]}}}
    _, base = resolve(write_space(tmp_path, data))
    assert base.enhancer.top_k == 12 and base.enhancer.m == 2
    data["fixed"] = {"enhancer.top_k": 1}
    with pytest.raises(SpaceError, match=r"fixed: enhancer.m \(2\) must be <= enhancer.top_k \(1\)"):
        resolve(write_space(tmp_path, data))


def test_a_searched_key_no_trial_reads_is_an_error(tmp_path):
    """Searching the loss-ratio temperature under the default grad_share weighter would spend the
    budget on one model; fixing the kind, or searching it, makes the key read."""
    temperature = {"weighter.temperature": {"loguniform": [0.05, 20]}}
    data = {**GOOD, "fixed": {"train.epochs": 3}, "space": temperature}
    with pytest.raises(
        SpaceError, match=r"space.weighter.temperature is never read \(weighter.kind is grad_share"
    ):
        resolve(write_space(tmp_path, data))
    pinned = {**data, "fixed": {"train.epochs": 3, "weighter.kind": "loss_ratio"}}
    _, base = resolve(write_space(tmp_path, pinned, "pinned.yaml"))
    assert base.weighter.kind == "loss_ratio" and base.weighter.temperature == 0.05
    both = {**data, "space": {**temperature, "weighter.kind": {"choice": ["grad_share", "loss_ratio"]}}}
    resolve(write_space(tmp_path, both, "both.yaml"))
    share = {"weighter.share": {"float": [0.1, 1.0]}}
    single = {**GOOD, "fixed": {"train.epochs": 3, "train.variant": "item_only"}, "space": share}
    with pytest.raises(
        SpaceError, match=r"weighter.share is never read \(train.variant item_only has no adaptive"
    ):
        resolve(write_space(tmp_path, single, "single.yaml"))
