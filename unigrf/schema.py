"""The one schema layer: types, ranges and error messages of every structured input.

The config tree (`unigrf.config`), search-space files (`unigrf.sweep.space`), grid files
(`unigrf.ablation.grid`) and serving settings (`unigrf.serving.settings`) are frozen
dataclasses whose field annotations say everything a value must be: the scalar types below
(strict: no `true` for a number, no `"4"` for an integer), `Literal` choices, tuples, nested
dataclasses, and `Range` / `Check` for what a type alone cannot say. pydantic validates them
(`parse`); this module turns pydantic's errors into one message shape, naming the dotted key and,
for a YAML file, the file and line of the key (`unigrf.yaml_input.LineMapping`):

    <file>:<line>: unknown key model.sizee (valid keys under model: ...)
    <file>:<line>: train.lr: expected a number, got 'fast'
    <file>:<line>: data.max_len must be >= 2 (a training window needs ...), got 0

Cross-field rules (one field against another: `enhancer.m <= enhancer.top_k`) are not types: each
input's module keeps them in one function of its own (`ExperimentConfig.validate`, ...), run
after the fields are valid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Strict, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from unigrf.yaml_input import check_keys, key_line

# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------

_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _yaml_number(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as a string: the number it means."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Number = Annotated[float, BeforeValidator(_yaml_number), Strict()]  # an int or a float, as a float


def _format_bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def Range(  # noqa: N802 - used as a type marker: Annotated[Int, Range(ge=1)]
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    why: str = "",
    says: str | None = None,
) -> AfterValidator:
    """A value's bounds. The message is `<key> must be >= 1<why>, got <value>` (an interval:
    `must be in [0, 1)`), or `says` with `{key}` and `{value}` filled in. NaN is out of every
    range."""
    low = f"[{_format_bound(ge)}" if ge is not None else f"({_format_bound(gt)}" if gt is not None else None
    high = f"{_format_bound(le)}]" if le is not None else f"{_format_bound(lt)})" if lt is not None else None
    if low and high:
        rule = f"must be in {low}, {high}"
    elif low:
        rule = f"must be {'>=' if ge is not None else '>'} {low[1:]}"
    else:
        rule = f"must be {'<=' if le is not None else '<'} {high[:-1]}"
    template = says or "{key} " + rule + why + ", got {value!r}"

    def check(value: Any) -> Any:
        inside = not (isinstance(value, float) and math.isnan(value))
        inside = inside and (ge is None or value >= ge) and (gt is None or value > gt)
        inside = inside and (le is None or value <= le) and (lt is None or value < lt)
        if not inside:
            raise PydanticCustomError("unigrf", "{template}", {"template": template})
        return value

    return AfterValidator(check)


def Check(test: Callable[[Any], bool], says: str) -> AfterValidator:  # noqa: N802 - a type marker
    """A value that must pass `test`; else `says` (with `{key}` and `{value}` filled in)."""

    def check(value: Any) -> Any:
        if not test(value):
            raise PydanticCustomError("unigrf", "{template}", {"template": says})
        return value

    return AfterValidator(check)


# the ranges many fields share
Positive = Annotated[Int, Range(ge=1)]
NonNegative = Annotated[Number, Range(ge=0)]
Probability = Annotated[Number, Range(ge=0, lt=1)]  # dropout, Adam's betas
PositiveInt = Annotated[Int, Range(ge=1, says="{key}: expected a positive integer, got {value!r}")]
NonEmpty = Check(lambda v: len(v) > 0, "{key}: expected a non-empty list, got {value!r}")


def Matches(pattern: str, what: str) -> AfterValidator:  # noqa: N802 - a type marker
    """A string matching `pattern` entirely; else `<key>: expected <what>, got <value>`."""
    regex = re.compile(pattern)
    return Check(lambda v: regex.fullmatch(v) is not None, "{key}: expected " + what + ", got {value!r}")


Label = Annotated[Str, Matches(r"[A-Za-z0-9_.-]+", "letters, digits, '_', '-', '.'")]


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def parse(
    cls: type,
    data: Any,
    error: type[Exception],
    *,
    file: Any = None,
    section: str = "",
) -> Any:
    """`data` (a mapping, e.g. from `load_yaml_mapping`) as an instance of the dataclass `cls`:
    unknown keys anywhere in the tree, then every field's type and range; the first problem
    raises `error` naming the dotted key (under `section`) and, with `file`, the file and the
    key's line."""
    if not isinstance(data, Mapping):
        where = f"{section}: " if section else ""
        raise error(_located(file, None, f"{where}expected a mapping, got {data!r}"))
    check_tree_keys(cls, data, error, file=file, section=section)
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as err:
        raise error(_message(cls, data, err, file, section)) from None


def check_tree_keys(
    cls: type, data: Mapping[str, Any], error: type[Exception], *, file: Any = None, section: str = ""
) -> None:
    """Unknown keys anywhere in the dataclass tree of `cls`, named with the file and line."""
    check_keys(data, [f.name for f in dataclasses.fields(cls)], error, file=file, section=section)
    hints = typing.get_type_hints(cls, include_extras=True)
    for name, value in data.items():
        inner = _dataclass_in(hints[name])
        if inner is not None and isinstance(value, Mapping):
            check_tree_keys(inner, value, error, file=file, section=f"{section}.{name}" if section else name)
        elif isinstance(value, list) and (item := _dataclass_in(_list_item(hints[name]))) is not None:
            for i, entry in enumerate(value):
                if isinstance(entry, Mapping):
                    key = f"{section}.{name}[{i}]" if section else f"{name}[{i}]"
                    check_tree_keys(item, entry, error, file=file, section=key)


def fits(annotation: Any, value: Any) -> bool:
    """Whether `value` is a valid value of a field annotated `annotation`."""
    try:
        _adapter(annotation).validate_python(value)
        return True
    except ValidationError:
        return False


def check_value(
    annotation: Any, value: Any, key: str, error: type[Exception], *, says: str | None = None
) -> Any:
    """`value` validated as a field annotated `annotation` (converted: an int to a float, a
    list to a tuple); `error` naming `key` otherwise (`says`: the message for any problem, with
    `{key}` and `{value}` filled in)."""
    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError as err:
        if says is not None:
            raise error(says.format(key=key, value=value)) from None
        raise error(_describe(err.errors()[0], key, annotation, ())) from None


def field_annotation(cls: type, key: str) -> Any:
    """The annotation (with its constraints) of the dotted `key` in the dataclass tree of
    `cls`; None if there is no such field."""
    node: Any = cls
    for part in key.split("."):
        node = _dataclass_in(node)
        if node is None:
            return None
        hints = typing.get_type_hints(node, include_extras=True)
        if part not in hints:
            return None
        node = hints[part]
    return node


def accepts_str(annotation: Any) -> bool:
    """Whether a field annotated `annotation` takes text."""
    annotation = strip(annotation)
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(strip(a) is str for a in typing.get_args(annotation))
    return False


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

_PHRASES = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true/false",
    "string_type": "expected a string",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
}


def _message(cls: type, data: Any, err: ValidationError, file: Any, section: str) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    path, annotation, container, rest = _walk(cls, data, loc)
    key = ".".join(p for p in [section, _dotted(path)] if p)
    return _located(file, container, _describe(first, key, annotation, rest), last=_last_key(path))


def _describe(error: Mapping[str, Any], key: str, annotation: Any, rest: tuple) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "unigrf":
        return error["ctx"]["template"].format(key=key, value=value)
    if rest and annotation is not None and _is_union(annotation):  # one error per union member
        return f"{key}: expected {_type_name(annotation)}, got {value!r}"
    if kind == "literal_error":
        choices = ", ".join(repr(a) for a in typing.get_args(_unwrap(annotation))) if annotation else ""
        return f"{key}: {value!r} is not one of {choices or error['ctx']['expected']}"
    if kind == "missing" and rest and isinstance(rest[0], int):  # a tuple of fixed length
        length = len(typing.get_args(_unwrap(annotation)))
        return f"{key}: expected {length} values, got {len(value) if isinstance(value, (list, tuple)) else value!r}"
    if kind == "too_long":
        return f"{key}: expected {error['ctx']['max_length']} values, got {error['ctx']['actual_length']}"
    if kind == "missing":
        return f"{key}: required"
    phrase = _PHRASES.get(kind, error["msg"][:1].lower() + error["msg"][1:])
    return f"{key}: {phrase}, got {value!r}"


def _walk(cls: Any, data: Any, loc: tuple) -> tuple[list, Any, Any, tuple]:
    """Follow pydantic's error location `loc` through the annotations of `cls` and the input
    `data` -> (the path of field names and list indices, the annotation at its end, the mapping
    holding its last key, what of `loc` is left: a union member's tag)."""
    path: list = []
    annotation, node, container = cls, data, None
    for i, part in enumerate(loc):
        bare = _unwrap(annotation)
        if dataclasses.is_dataclass(bare) and isinstance(part, str):
            hints = typing.get_type_hints(bare, include_extras=True)
            if part not in hints:
                return path, None, container, loc[i:]
            container = node if isinstance(node, Mapping) else None
            node = node.get(part) if isinstance(node, Mapping) else None
            annotation = hints[part]
            path.append(part)
        elif isinstance(part, int) and typing.get_origin(bare) in (tuple, list):
            if isinstance(node, (list, tuple)) and part >= len(node):  # a value missing
                return path, annotation, container, loc[i:]
            args = [a for a in typing.get_args(bare) if a is not Ellipsis]
            annotation = args[0] if len(args) == 1 else (args[part] if part < len(args) else None)
            node = node[part] if isinstance(node, (list, tuple)) and part < len(node) else None
            path.append(part)
        elif isinstance(part, str) and typing.get_origin(bare) is dict:
            annotation = typing.get_args(bare)[1]
            container = node if isinstance(node, Mapping) else None
            node = node.get(part) if isinstance(node, Mapping) else None
            path.append(part)
        else:
            return path, annotation, container, loc[i:]
    return path, annotation, container, ()


def _dotted(path: list) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _last_key(path: list) -> Any:
    keys = [p for p in path if isinstance(p, str)]
    return keys[-1] if keys else None


def _located(file: Any, container: Any, message: str, last: Any = None) -> str:
    if file is None:
        return message
    line = key_line(container, last) if container is not None else None
    return f"{file}:{line}: {message}" if line else f"{file}: {message}"


def strip(annotation: Any) -> Any:
    """`Annotated[T, ...]` -> T."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _unwrap(annotation: Any) -> Any:
    """`Annotated[T, ...]`, `T | None` (pydantic reports no member tag for these) -> T."""
    annotation = strip(annotation)
    while _is_union(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            break
        annotation = strip(members[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(strip(annotation)) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    annotation = strip(annotation)
    if _is_union(annotation):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _dataclass_in(annotation: Any) -> type | None:
    """The dataclass an annotation holds (`D`, `D | None`), else None."""
    annotation = strip(annotation)
    if dataclasses.is_dataclass(annotation):
        return annotation
    if _is_union(annotation):
        found = [a for a in map(strip, typing.get_args(annotation)) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _list_item(annotation: Any) -> Any:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return args[0] if len(args) == 1 else None
    return None


__all__ = [
    "Bool",
    "Check",
    "Int",
    "Label",
    "Literal",
    "Matches",
    "NonEmpty",
    "NonNegative",
    "Number",
    "Positive",
    "PositiveInt",
    "Probability",
    "Range",
    "Str",
    "accepts_str",
    "check_tree_keys",
    "check_value",
    "field_annotation",
    "fits",
    "parse",
    "strip",
]
