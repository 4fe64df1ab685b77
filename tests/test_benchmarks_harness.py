"""The benchmark harness: one training step (the library's), and RESULTS.md's generated tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from unigrf.data.sequences import SequenceData
from unigrf.training.batches import to_device
from unigrf.training.step import build_trainer, train_step

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def tiny_data() -> SequenceData:
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 12, size=12)
    return SequenceData.from_arrays(
        [rng.integers(1, 30, size=n) for n in lengths],
        [rng.integers(1, 6, size=n).astype(float) for n in lengths],
        [np.arange(n) for n in lengths],
        num_items=29,
        max_len=10,
    )


# benchmarks that fit a model of their own, not the project's: no training step to copy
OWN_MODELS = {"ranking_headroom.py": "the logistic MF yardstick, fitted with Adam"}


def test_no_benchmark_copies_the_training_step():
    """A benchmark that times a step imports `train_step`: no optimizer, backward or clip of
    its own (the copies drifted: AdamW without the recipe's weight decay, Adam)."""
    for path in BENCHMARKS.glob("*.py"):
        if path.name in OWN_MODELS:
            assert "train_step" not in path.read_text()  # it times no step of the project's
            continue
        text = path.read_text()
        for pattern in (r"torch\.optim\.", r"\.backward\(", r"clip_grad_norm_"):
            assert not re.search(pattern, text), (
                f"{path.name}: {pattern} (time unigrf.training.step.train_step)"
            )


def test_stepper_is_the_librarys_step(benchmark_module):
    """`Stepper` steps the trainer `fit` builds with `train_step`: the same parameters after
    two steps as calling them directly."""
    common = benchmark_module("common")
    data = tiny_data()
    cfg = common.bench_config(data, ["model.size=tiny", "enhancer.warmup_epochs=0", "enhancer.m=2",
                                     "enhancer.top_k=5", "train.batch_size=4"])  # fmt: skip
    step = common.Stepper(cfg, data)
    assert step.mine and step.trainer.optimizer.param_groups[0]["weight_decay"] == cfg.train.weight_decay
    trainer = build_trainer(cfg, data, torch.device("cpu"))
    trainer.forward.train()
    for users in common.first_epoch_batches(data, 4)[:2]:
        torch.manual_seed(1)
        step(data.train_batch(users))
        torch.manual_seed(1)
        train_step(trainer, to_device(data.train_batch(users), torch.device("cpu")), cfg.train.lr, True)
    for a, b in zip(step.model.parameters(), trainer.model.parameters()):
        assert torch.equal(a, b)


def test_tables_render_between_markers(benchmark_module, tmp_path):
    tables = benchmark_module("tables")
    (tmp_path / "t.json").write_text(json.dumps(
        {"name": "t", "title": "x", "columns": ["a", "b"], "rows": [["1", "2.50"]], "align": ["", "r"]}
    ))  # fmt: skip
    text = "intro\n<!-- table: t -->\nold\n<!-- /table: t -->\nafter | a |\n"
    out = tables.generate(text, tmp_path)
    assert (
        out
        == "intro\n<!-- table: t -->\n| a | b |\n|---|---:|\n| 1 | 2.50 |\n<!-- /table: t -->\nafter | a |\n"
    )
    assert tables.generate(out, tmp_path) == out


def test_results_md_is_what_its_json_gives(benchmark_module):
    tables = benchmark_module("tables")
    text = (BENCHMARKS / "RESULTS.md").read_text()
    assert tables.names(text), "RESULTS.md has no generated table"
    assert tables.generate(text) == text, "run python benchmarks/tables.py"
