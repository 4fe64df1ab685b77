"""unigrf/schema.py: one message shape for every structured input — the key, the file and line."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest

from unigrf.config import BackboneName, ConfigError, load_config
from unigrf.schema import (
    Int,
    Number,
    PositiveInt,
    Range,
    Str,
    accepts_str,
    check_value,
    field_annotation,
    parse,
)
from unigrf.yaml_input import load_yaml_mapping


@dataclass(frozen=True)
class Inner:
    rate: Annotated[Number, Range(ge=0, lt=1)] = 0.5
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    count: PositiveInt = 1
    size: Annotated[Int, Range(ge=2, why=" (two at least)")] | None = None
    column: Str | Int = "x"
    pair: tuple[Number, Number] = (0.0, 1.0)
    inner: Inner = field(default_factory=Inner)
    rows: list[Inner] = field(default_factory=list)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"count": 0}, "count: expected a positive integer, got 0"),
        ({"count": True}, "count: expected an integer, got True"),
        ({"size": 1}, "size must be >= 2 (two at least), got 1"),
        ({"column": 1.5}, "column: expected str | int, got 1.5"),
        ({"pair": [1]}, "pair: expected 2 values, got 1"),
        ({"pair": [1, "x"]}, "pair[1]: expected a number, got 'x'"),
        ({"inner": {"rate": 1.0}}, "inner.rate must be in [0, 1), got 1.0"),
        ({"inner": {"rate": math.nan}}, "inner.rate must be in [0, 1), got nan"),
        ({"inner": {"kind": "c"}}, "inner.kind: 'c' is not one of 'a', 'b'"),
        ({"inner": 3}, "inner: expected a mapping, got 3"),
        ({"rows": [{"rate": 0.1}, {"rate": -1}]}, "rows[1].rate must be in [0, 1), got -1"),
        ({"rows": [{"colour": 1}]}, "unknown key rows[0].colour (valid keys under rows[0]: kind, rate)"),
    ],
)
def test_errors_name_the_dotted_key_and_what_is_wrong(data, message):
    with pytest.raises(ValueError) as err:
        parse(Outer, data, ValueError)
    assert str(err.value) == message


def test_a_files_errors_name_the_file_and_the_keys_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("count: 3\ninner:\n  kind: a\n  rate: 2\n")
    with pytest.raises(ValueError, match=rf"^{path}:4: inner\.rate must be in \[0, 1\), got 2$"):
        parse(Outer, load_yaml_mapping(path, "test", ValueError), ValueError, file=path)
    path.write_text("count: 3\nsize: 1\n")
    with pytest.raises(ConfigError, match=r"x\.yaml:2: size must be >= 2"):
        parse(Outer, load_yaml_mapping(path, "test", ConfigError), ConfigError, file=path)


def test_numbers_accept_ints_and_yaml_11_numeric_text_and_nothing_else():
    assert parse(Outer, {"pair": [1, "1e-3"]}, ValueError).pair == (1.0, 0.001)
    for bad in (True, "fast", None):
        with pytest.raises(ValueError, match="expected a number"):
            check_value(Number, bad, "k", ValueError)


def test_config_files_name_the_line_of_a_bad_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\n  lr: fast\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: train\.lr: expected a number, got 'fast'$"):
        load_config(path)
    path.write_text("enhancer:\n  m: 60\n")
    with pytest.raises(ConfigError, match=r"enhancer\.m \(60\) must be <= enhancer\.top_k \(50\)"):
        load_config(path)
    assert load_config(path, ["enhancer.top_k=60"]).enhancer.m == 60  # the rules: once, on the result


def test_field_annotations_and_the_text_rule_of_overrides():
    from unigrf.config import ExperimentConfig

    assert accepts_str(field_annotation(ExperimentConfig, "data.columns.sep"))
    assert accepts_str(field_annotation(ExperimentConfig, "data.columns.user"))
    assert not accepts_str(field_annotation(ExperimentConfig, "train.lr"))
    assert field_annotation(ExperimentConfig, "train.nope") is None
    assert load_config(None, ["data.columns.sep=::", "data.columns.user=0"]).data.columns.user == 0


def test_one_backbone_registry():
    from unigrf.ablation.grid import BACKBONES as GRID_BACKBONES
    from unigrf.model.backbones import BACKBONES

    assert set(BACKBONES) == set(typing.get_args(BackboneName)) == set(GRID_BACKBONES)
