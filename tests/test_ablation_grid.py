"""Grid files: expansion into named cells with the right configs, and bad files rejected with
messages that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unigrf.ablation.grid import GridError, load_grid, parse_grid
from unigrf.config import SyntheticConfig

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: object, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_product_grid_expands_to_named_cells_with_their_configs(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 7\nmodel:\n  size: tiny\n")
    path = write(
        tmp_path,
        {
            "base_config": "base.yaml",  # relative to the grid file
            "overrides": {"train.batch_size": 16, "train.epochs": 2},
            "seeds": 2,
            "datasets": [
                "synthetic",
                {
                    "name": "small-synth",
                    "overrides": {"data.dataset": "synthetic", "data.synthetic.num_users": 50},
                },
            ],
            "backbones": ["hstu", "llama"],
            "variants": ["unigrf", "wo_both"],
            "reference": "hstu/wo_both",
        },
    )
    spec = load_grid(path)
    assert spec.name == "g" and spec.seeds == (0, 1) and spec.reference == "hstu/wo_both"
    cells = spec.expand()
    assert len(cells) == 2 * 2 * 2 * 2
    assert cells[0].name == "hstu/unigrf/synthetic/seed0"
    assert cells[1].name == "hstu/unigrf/synthetic/seed1"
    assert cells[2].name == "hstu/unigrf/small-synth/seed0"
    assert len({c.name for c in cells}) == len(cells)
    by_name = {c.name: c for c in cells}
    cfg = by_name["llama/wo_both/small-synth/seed1"].config
    assert cfg.model.backbone == "llama" and cfg.train.variant == "wo_both" and cfg.train.seed == 1
    assert (
        cfg.train.epochs == 2 and cfg.train.batch_size == 16 and cfg.model.size == "tiny"
    )  # base + overrides
    assert cfg.data.synthetic.num_users == 50
    assert (
        by_name["hstu/unigrf/synthetic/seed0"].config.data.synthetic.num_users == SyntheticConfig().num_users
    )
    assert len({c.config.name for c in cells}) == len(cells)  # distinct run directories


def test_rows_axis_and_command_line_overrides(tmp_path):
    spec = parse_grid(
        {
            "name": "msweep",
            "rows": [
                {"backbone": "hstu", "variant": "unigrf"},
                {
                    "backbone": "hstu",
                    "variant": "unigrf",
                    "label": "gradnorm",
                    "overrides": {"weighter.kind": "grad_norm"},
                },
            ],
            "axis": {"key": "enhancer.m", "values": [0, 4], "label": "m"},
            "seeds": [3],
            "reference": "hstu/unigrf/m=0",
            "figures": [{"kind": "axis", "metrics": ["test/ndcg@10"]}],
        }
    )
    assert spec.row_names() == [
        "hstu/unigrf/m=0",
        "hstu/unigrf/m=4",
        "hstu/gradnorm/m=0",
        "hstu/gradnorm/m=4",
    ]
    cells = spec.expand({"train.epochs": 1})
    names = [c.name for c in cells]
    assert names[1] == "hstu/unigrf/m=4/synthetic/seed3"
    c = cells[3]
    assert c.row == "hstu/gradnorm/m=4" and c.group == "hstu/gradnorm" and c.axis_value == 4
    assert c.config.enhancer.m == 4 and c.config.weighter.kind == "grad_norm" and c.config.train.epochs == 1
    assert spec.with_seeds(2).seeds == (0, 1)
    with pytest.raises(GridError, match="enhancer.m would collapse"):
        spec.expand({"enhancer.m": 8})
    with pytest.raises(GridError, match="train.seed would collapse"):
        spec.expand({"train.seed": 8})


@pytest.mark.parametrize(
    "data, key_in_message",
    [
        ({"variants": ["unigrf", "wo_magic"]}, "variants[1]"),
        ({"variants": ["unigrf"], "backbones": ["gpt"]}, "backbones[0]"),
        ({"variants": ["unigrf"], "overrides": {"model.no_such_field": 1}}, "model.no_such_field"),
        ({"variants": ["unigrf"], "overrides": {"train.epochs": "many"}}, "train.epochs"),
        ({"variants": ["unigrf"], "seeds": 0}, "seeds"),
        ({"variants": ["unigrf"], "reference": "hstu/nope"}, "reference"),
        ({"variants": ["unigrf"], "metrics": ["test/accuracy"]}, "metrics[0]"),
        ({"variants": ["unigrf"], "metrics": ["test/hr@7"]}, "metrics"),
        ({"variants": ["unigrf"], "figures": [{"kind": "axis", "metrics": ["test/auc"]}]}, "figures[0].kind"),
        (
            {"variants": ["unigrf"], "figures": [{"kind": "curves", "metrics": ["test/auc"]}]},
            "figures[0].metrics",
        ),
        ({"variants": ["unigrf"], "peaks": {"retrieval": "val/ndcg@10"}}, "peaks"),
        (
            {"variants": ["unigrf"], "equivalence_margin_epochs": 5},
            "equivalence_margin_epochs: needs `peaks`",
        ),
        (
            {
                "variants": ["unigrf"],
                "peaks": {"retrieval": "val/ndcg@10", "ranking": "val/auc"},
                "equivalence_margin_epochs": 0,
            },
            "equivalence_margin_epochs",
        ),
        (
            {
                "variants": ["unigrf"],
                "peaks": {"retrieval": "val/ndcg@10", "ranking": "val/auc"},
                "equivalence_margin_epochs": "ten",
            },
            "equivalence_margin_epochs",
        ),
        ({"variants": ["unigrf"], "colour": "red"}, "colour"),
        ({"rows": [{"backbone": "hstu", "variant": "unigrf", "size": 3}]}, "rows[0].size"),
        ({"rows": [{"variant": "unigrf"}, {"variant": "unigrf"}]}, "duplicate row"),
        ({"rows": [{"variant": "unigrf", "overrides": {"train.variant": "wo_both"}}]}, "rows[0].overrides"),
        ({"variants": ["unigrf"], "axis": {"key": "enhancer.m", "values": []}}, "axis.values"),
        ({"variants": ["unigrf"], "axis": {"key": "enhancer.mm", "values": [1]}}, "enhancer.mm"),
        ({"variants": ["unigrf"], "axis": {"key": "enhancer.m", "values": [-1]}}, "enhancer.m"),
        (
            {"variants": ["unigrf"], "datasets": [{"name": "x", "overrides": {"data.dataset": "mnist"}}]},
            "data.dataset",
        ),
        ({"variants": ["unigrf"], "base_config": "nowhere.yaml"}, "base_config"),
        ({"rows": []}, "rows"),
        (
            {"variants": ["unigrf"], "metrics": ["test/auc", "test/hr@10", "test/auc"]},
            "metrics: test/auc is listed more",
        ),
    ],
)
def test_bad_grid_files_name_file_and_key(tmp_path, data, key_in_message):
    path = write(tmp_path, data, name="bad.yaml")
    with pytest.raises(GridError) as err:
        load_grid(path)
    message = str(err.value)
    assert str(path) in message
    assert key_in_message in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "variants: [unigrf\nseeds: 2\n", name="broken.yaml")
    with pytest.raises(GridError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_grid(path)


@pytest.mark.parametrize("name", ["paper", "m_sweep", "sync", "scaling", "quick", "quality", "objective-ami"])
def test_shipped_grids_are_valid(name):
    spec = load_grid(REPO / "ablations" / f"{name}.yaml")
    cells = spec.expand()
    assert cells and spec.reference in spec.row_names()
    assert all(c.name.endswith(f"/seed{c.seed}") for c in cells)


def test_the_sync_grid_declares_its_equivalence_margin_and_grids_their_commitments():
    sync = load_grid(REPO / "ablations" / "sync.yaml")
    assert sync.equivalence_margin_epochs == 15.0 and sync.peaks is not None
    assert sync.subset(datasets=["amazon-mi"]).equivalence_margin_epochs == 15.0  # kept by a subset
    quick = load_grid(REPO / "ablations" / "quick.yaml")
    assert quick.equivalence_margin_epochs is None
    assert quick.declaration() == {
        "seeds": [0, 1],
        "rows": ["hstu/unigrf", "hstu/wo_both", "hstu/two_stage"],
        "datasets": ["synthetic"],
    }
    assert quick.with_seeds(4).declaration()["seeds"] == [0, 1, 2, 3]


def test_cross_field_checks_see_each_cells_axis_value(tmp_path):
    """The grid fixes enhancer.top_k below the default m and sweeps m on the axis: each cell is
    checked with its own m, and an axis value above top_k names the axis value."""
    grid = {
        "overrides": {"enhancer.top_k": 10},
        "rows": [{"backbone": "hstu", "variant": "unigrf"}],
        "axis": {"key": "enhancer.m", "values": [0, 4]},
        "seeds": 1,
    }
    cells = load_grid(write(tmp_path, grid)).expand()
    assert [(c.config.enhancer.m, c.config.enhancer.top_k) for c in cells] == [(0, 10), (4, 10)]
    grid["axis"]["values"] = [0, 20]
    with pytest.raises(
        GridError, match=r"at axis enhancer.m=20.*enhancer.m \(20\) must be <= enhancer.top_k \(10\)"
    ):
        load_grid(write(tmp_path, grid, "bad.yaml"))


def test_the_whole_grid_is_its_own_subset():
    grid = load_grid(REPO / "ablations" / "quality.yaml")
    assert grid.subset(["ml-100k", "amazon-mi", "movietweetings"], None) is grid
    assert grid.subset(None, None) is grid


def test_a_subset_keeps_the_asked_rows_and_datasets_under_its_own_name():
    grid = load_grid(REPO / "ablations" / "quality.yaml")
    sub = grid.subset(["ml-100k"], ["sasrec/item_only", "hstu/unigrf"])
    assert [d.name for d in sub.datasets] == ["ml-100k"]
    assert [r.base_name for r in sub.rows] == ["sasrec/item_only", "hstu/unigrf"]
    assert sub.reference == "hstu/unigrf"
    assert sub.name == "quality-ml-100k-sasrec_item_only-hstu_unigrf"
    cells = sub.expand()
    assert len(cells) == 2 * len(grid.seeds)
    assert {c.config.data.dataset for c in cells} == {"ml-100k"}
    # a dataset subset alone is named by its datasets; without the reference row, the first kept
    # row is the reference
    assert grid.subset(["amazon-mi"]).name == "quality-amazon-mi"
    assert grid.subset(["amazon-mi"], ["sasrec/item_only"]).reference == "sasrec/item_only"


def test_a_subset_of_an_axis_grid_keeps_the_axis_reference(tmp_path):
    path = write(
        tmp_path,
        {
            "datasets": [{"name": n, "overrides": {"data.dataset": "synthetic"}} for n in ("a", "b")],
            "rows": [{"backbone": "hstu", "variant": "unigrf"}, {"backbone": "llama", "variant": "unigrf"}],
            "axis": {"key": "enhancer.m", "values": [0, 2], "label": "m"},
            "reference": "llama/unigrf/m=2",
        },
    )
    grid = load_grid(path)
    assert grid.subset(["b"]).reference == "llama/unigrf/m=2"
    assert grid.subset(None, ["hstu/unigrf"]).reference == "hstu/unigrf/m=0"


@pytest.mark.parametrize(
    ("datasets", "rows", "message"),
    [
        (["ml-100k"], ["hstu/bogus"], r"--rows: unknown \['hstu/bogus'\].*sasrec/item_only"),
        (["ml-1m"], None, r"--datasets: unknown \['ml-1m'\].*amazon-mi"),
    ],
)
def test_an_unknown_subset_names_what_the_grid_has(datasets, rows, message):
    grid = load_grid(REPO / "ablations" / "quality.yaml")
    with pytest.raises(GridError, match=message):
        grid.subset(datasets, rows)


def test_the_ablate_command_line_records_the_subset():
    import argparse

    from unigrf.commands import ablate

    parser = argparse.ArgumentParser()
    ablate.add_arguments(parser)
    args = parser.parse_args(["ablations/paper.yaml", "--datasets", "amazon-mi", "--rows", "hstu/unigrf"])
    assert (
        ablate.command_line(args)
        == "unigrf ablate ablations/paper.yaml --datasets amazon-mi --rows hstu/unigrf"
    )


def test_a_row_setting_a_key_its_weighter_never_reads_is_an_error(tmp_path):
    """A temperature row under the default weighter (grad_share reads no temperature) would train
    the default again under another label; pinning the loss-ratio weighter makes it a row."""
    row = {
        "backbone": "hstu",
        "variant": "unigrf",
        "label": "T0.2",
        "overrides": {"weighter.temperature": 0.2},
    }
    grid = {"rows": [{"backbone": "hstu", "variant": "unigrf"}, row], "seeds": 1}
    with pytest.raises(
        GridError, match=r"rows\[hstu/T0.2\].overrides: weighter.temperature is never read.*grad_share"
    ):
        load_grid(write(tmp_path, grid))
    row["overrides"]["weighter.kind"] = "loss_ratio"
    cells = load_grid(write(tmp_path, grid, "pinned.yaml")).expand()
    assert [(c.config.weighter.kind, c.config.weighter.temperature) for c in cells] == [
        ("grad_share", 1.4),
        ("loss_ratio", 0.2),
    ]
    # a variant without adaptive weights reads no weighter key, on a row or on the axis
    single = {"rows": [{"backbone": "hstu", "variant": "wo_weighter"}], "seeds": 1}
    with pytest.raises(
        GridError, match=r"axis: weighter.share is never read.*wo_weighter has no adaptive weights"
    ):
        load_grid(
            write(tmp_path, {**single, "axis": {"key": "weighter.share", "values": [0.25, 0.5]}}, "axis.yaml")
        )
    # the grid-wide overrides may reach rows that ignore them
    load_grid(write(tmp_path, {**single, "overrides": {"weighter.share": 0.25}}, "wide.yaml")).expand()


def test_the_budget_names_each_cells_weighter_and_only_the_keys_it_reads():
    """The report's "budget per run" lists the weighter each cell trains with and only the
    weighter keys some cell reads: the sync grid's temperatures belong to its loss-ratio rows,
    and m_sweep (every cell grad_share) shows no temperature at all."""
    from unigrf.ablation.runner import budget

    def of(name: str, datasets: list[str]) -> dict:
        cells = load_grid(REPO / "ablations" / f"{name}.yaml").subset(datasets=datasets).expand()
        return budget(cells, {d: {"max_len": 50} for d in datasets})

    sync = of("sync", ["amazon-mi"])
    assert sync["weighter.kind"] == ["grad_share", "loss_ratio", "grad_norm", "fixed"]
    assert sync["weighter.temperature"] == [1.4, 0.2, 20.0]  # the loss-ratio rows' only
    assert sync["weighter.share"] == [0.5] and sync["weighter.max_weight"] == [100.0]
    m_sweep = of("m_sweep", ["amazon-mi"])
    assert m_sweep["weighter.kind"] == ["grad_share"] and "weighter.temperature" not in m_sweep
