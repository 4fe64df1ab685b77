"""A run is tied to its config: a resume under a different config is refused, not mixed.

A run directory records the config it was started with (`run.json`: the config and the hash
of its *identity*, every key but `SAFE_TO_CHANGE`). Running the same `name=` again resumes
from the last checkpoint, which is only meaningful under the same config: resumed with other
data (`data.synthetic.num_users`), another model or another learning rate, the checkpoint's
weights would silently continue under the new config (results of two datasets mixed, and
`config.yaml` rewritten to say only the new one), or fail with a `size mismatch` traceback.
`check_resume` compares the two and raises `RunConfigChanged`:

    run 'r' was started with another config (train.lr 0.001 -> 0.01; data.synthetic.num_users
    200 -> 250): resume it with the same config, start it over with --restart, or give this
    config a new name=...

`SAFE_TO_CHANGE` is the one list of keys that may differ on a resume: they decide how long a
run goes on or where its files are, not what it computes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from unigrf.atomic import write_text_atomic
from unigrf.config import (
    VARIANTS,
    ConfigError,
    ExperimentConfig,
    config_to_dict,
    hashed_unless_default,
    unhashed_keys,
)

IDENTITY_FILE = "run.json"
# Keys a resumed run may change (documented in docs/reliability.md):
SAFE_TO_CHANGE = (
    "results_dir",  # the results directory moved (or is reached by another path)
    "train.epochs",  # train longer (or stop earlier)
    "train.patience",  # wait longer before early stopping
    "train.log_every",  # per-step TensorBoard logging interval
    "train.keep_checkpoints",  # how many checkpoints pruning keeps
    "train.checkpoint_every_steps",  # how often an epoch in progress is saved (resumes exactly)
    "eval.batch_size",  # users per evaluation batch: memory, not the metrics' definition
    "eval.checkpoint_every_batches",  # how often an evaluation in progress is saved
)


# how often a long run saves its progress: in no hash (`config.UNHASHED`)
UNHASHED_KEYS = unhashed_keys()
# keys added after runs were made: in the hashes only away from their defaults
# (`config.HASHED_UNLESS_DEFAULT`), so a run recorded before them keeps its identity
DEFAULT_OMITTED = hashed_unless_default()

# Keys that say where files are, not what they hold: a finished result is the same result when
# the results directory or the raw data moved (another clone, another machine), provided the
# data's content is the same (`unigrf.data.prepare.data_fingerprint` checks that).
LOCATION_KEYS = ("results_dir", "data.data_dir", "data.path")


class RunConfigChanged(ConfigError):
    """A run holding checkpoints was started again under another config."""


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1}}` -> `{"train.lr": 1}` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def _keys_but(config: ExperimentConfig | Mapping[str, Any], left_out: tuple[str, ...]) -> dict[str, Any]:
    """The flattened config without `left_out`, nor the keys no hash reads (`config.UNHASHED`,
    and `config.HASHED_UNLESS_DEFAULT` keys at their defaults)."""
    data = config_to_dict(config) if isinstance(config, ExperimentConfig) else config
    flat = flatten(data)
    skip = set(left_out) | set(UNHASHED_KEYS)
    unread = unread_sections(flat)
    return {
        k: v
        for k, v in flat.items()
        if k not in skip
        and k.split(".", 1)[0] not in unread
        and not (k in DEFAULT_OMITTED and _normal(v) == _normal(DEFAULT_OMITTED[k]))
    }


def unread_sections(flat: Mapping[str, Any]) -> set[str]:
    """Config sections the run's variant never reads: `weighter` for a variant without adaptive
    weights (its tasks weigh 1, `config.effective_weighter_kind`). What they say cannot change
    what such a run computes, so it is no part of its identity: a single-task or w/o-weighter
    cell is the same cell whichever weighter the defaults name."""
    spec = VARIANTS.get(flat.get("train.variant", "unigrf"))
    return {"weighter"} if spec is not None and not spec.weighter else set()


def _hash(keys: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def identity(config: ExperimentConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The dotted keys that define what a run computes: all but `SAFE_TO_CHANGE`."""
    return _keys_but(config, SAFE_TO_CHANGE)


def identity_hash(config: ExperimentConfig | Mapping[str, Any]) -> str:
    return _hash(identity(config))


def portable_hash(config: ExperimentConfig | Mapping[str, Any]) -> str:
    """The hash of everything a finished run computed from — every key but `LOCATION_KEYS`
    (unlike `identity_hash`, train.epochs and the like count: they change the result)."""
    return _hash(_keys_but(config, LOCATION_KEYS))


# Keys that name a run rather than shape it: two grids holding the same cell give it different
# names (`ablate-<grid>-<cell>`), and the name only decides where its files go.
NAME_KEYS = ("name",)


def computation_hash(config: ExperimentConfig | Mapping[str, Any]) -> str:
    """The hash of what a run computes, wherever it ran and whatever it is called: every key but
    `LOCATION_KEYS` and `NAME_KEYS` (`unigrf.ablation.reuse` finds a grid's cells in another's)."""
    return _hash(_keys_but(config, LOCATION_KEYS + NAME_KEYS))


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key old -> new` for every identity key that differs (new or gone keys included)."""
    a, b = identity(old), identity(new)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if _normal(va) != _normal(vb):
            shown = [
                "(none)" if v is missing else repr(v) if isinstance(v, str) else str(v) for v in (va, vb)
            ]
            out.append(f"{key} {shown[0]} -> {shown[1]}")
    return out


def _normal(value: Any) -> Any:
    """Tuples and lists compare equal (YAML and JSON store both as lists)."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def stored_config(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """(the config the run was started with, the file it came from): `run.json`, else — a run
    from before it existed — `config.yaml`; (None, None) for a new run. A file that exists but
    cannot be read is a `RunConfigChanged` naming it (never a traceback, never ignored)."""
    for name in (IDENTITY_FILE, "config.yaml"):
        file = run_dir / name
        if not file.exists():
            continue
        try:
            text = file.read_text()
            data = json.loads(text)["config"] if name == IDENTITY_FILE else yaml.safe_load(text)
            if not isinstance(data, Mapping):
                raise ValueError(f"expected a mapping, got {type(data).__name__}")
            return dict(data), file
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
            reason = getattr(err, "strerror", None) or str(err).splitlines()[0] or type(err).__name__
            raise RunConfigChanged(
                f"{file}: cannot read the config this run was started with ({reason}); start the run "
                "over with --restart, or give this config a new name="
            ) from None
    return None, None


def check_resume(run_dir: Path, cfg: ExperimentConfig, has_progress: bool) -> None:
    """Refuse to resume the run in `run_dir` under `cfg` when it has trained (`has_progress`:
    it holds a checkpoint or results) under a config whose identity differs."""
    if not has_progress:
        return
    old, file = stored_config(run_dir)
    if old is None:
        return
    diff = differences(old, config_to_dict(cfg))
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise RunConfigChanged(
            f"run {cfg.name!r} ({run_dir}) was started with another config ({shown}): resume it "
            "with the same config (only " + ", ".join(SAFE_TO_CHANGE) + " may change), start it "
            "over with --restart, or give this config a new name="
        )


def record(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Write `run.json`: the config and its identity hash (rewritten on every start: the safe
    keys keep their latest values)."""
    payload = {
        "name": cfg.name,
        "config_hash": identity_hash(cfg),
        "safe_to_change": list(SAFE_TO_CHANGE),
        "config": config_to_dict(cfg),
    }
    write_text_atomic(run_dir / IDENTITY_FILE, json.dumps(payload, indent=2) + "\n")
