"""The project's YAML inputs (configs, search spaces, ablation grids): loaded and key-checked
in one place, so their errors have one shape and name the file, the line and the key.

    <file>: cannot read <what> (<reason>)
    <file>:<line>: invalid YAML: <problem>      (also a key written twice in one mapping)
    <file>: <what> must be a YAML mapping, got <type>
    <file>:<line>: unknown key <dotted.key> (valid keys under <section>: a, b, c)

`load_yaml_mapping` parses with PyYAML's safe loader, except that every mapping it builds is a
`LineMapping`: a plain `dict` that also remembers the line of each key, so a key found unknown
later — after the mapping went through other code — still points at its line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class LineMapping(dict):
    """A dict from YAML that knows the 1-based line of each of its keys (`lines`)."""

    lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building `LineMapping`s (same types otherwise: no arbitrary objects)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineMapping:
    _refuse_duplicate_keys(loader, node)
    loader.flatten_mapping(node)  # merge keys (<<) as SafeLoader resolves them
    mapping = LineMapping()
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


def _refuse_duplicate_keys(loader: _LineLoader, node: yaml.MappingNode) -> None:
    """A key written twice in one mapping is an error at its second line (PyYAML would keep
    the last silently: `epochs: 5` early in a file, `epochs: 50` lower down). Keys a merge
    (`<<: *base`) brings in may be overridden: that is what merging is for."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable: reported by _construct_mapping
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# ... and written back as the plain mappings they are (a grid's file is stored with its report)
for _dumper in (yaml.SafeDumper, yaml.Dumper):
    _dumper.add_representer(LineMapping, yaml.representer.SafeRepresenter.represent_dict)


def load_yaml_mapping(
    path: str | Path, what: str, error: type[Exception], *, empty_ok: bool = False
) -> dict[str, Any]:
    """The mapping at the top of the YAML file `path` (a `LineMapping`); `what` names the kind
    of file in messages ("config", "search space", "grid"). An empty file is `{}` when
    `empty_ok`, else an error like any non-mapping. Every failure raises `error`."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise error(f"{path}: cannot read {what} ({reason})") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise error(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None and empty_ok:
        return LineMapping()
    if not isinstance(data, Mapping):
        raise error(f"{path}: {article(what)} {what} must be a YAML mapping, got {type(data).__name__}")
    return data


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def key_line(mapping: Any, key: Any) -> int | None:
    """The line of `key` in `mapping` when it came from `load_yaml_mapping`, else None."""
    lines = getattr(mapping, "lines", None)
    return lines.get(key) if lines else None


def location(file: str | Path | None, mapping: Any = None, key: Any = None) -> str:
    """`<file>:<line>` (or `<file>` when the line is unknown) for messages; "" without a file."""
    if file is None:
        return ""
    line = key_line(mapping, key) if mapping is not None else None
    return f"{file}:{line}" if line else str(file)


def check_keys(
    data: Mapping[Any, Any],
    valid: Iterable[str],
    error: type[Exception],
    *,
    file: str | Path | None = None,
    section: str = "",
) -> None:
    """Raise `error` on the first key of `data` (in file order) that is not in `valid`:
    `<file>:<line>: unknown key <section>.<key> (valid keys under <section>: ...)`.
    `section` is the dotted path of `data` in its file ("" at the top level)."""
    valid = list(valid)
    unknown = [k for k in data if k not in valid]
    if not unknown:
        return
    key = unknown[0]
    dotted = f"{section}.{key}" if section else str(key)
    scope = f"under {section}" if section else "at the top level"
    where = location(file, data, key)
    message = f"unknown key {dotted} (valid keys {scope}: {', '.join(sorted(valid))})"
    raise error(f"{where}: {message}" if where else message)
