"""How a run is served: replicas, autoscaling, request batching, device (no Ray, no torch).

`ServeSettings` comes from an optional YAML file (`unigrf serve RUN --config serve.yaml`, keys
below, unknown keys an error naming file and line) with the command's options on top
(`with_overrides`). What each replica needs to load and answer (`replica_config`) travels as
Ray Serve's `user_config`, so a new run or new batching settings reach running replicas in
place (`reconfigure`), without a restart and without dropping requests.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from unigrf import schema
from unigrf.schema import Int, NonNegative, Number, Positive, Range, Str
from unigrf.yaml_input import load_yaml_mapping

Mode = Literal["cached", "no_cache"]
Device = Literal["auto", "cpu", "cuda"]
MODES: tuple[str, ...] = ("cached", "no_cache")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class ServeSettingsError(ValueError):
    """A serving setting is invalid; the message names it (and the file and line)."""


@dataclass(frozen=True)
class AutoscalingSettings:
    """Ray Serve autoscaling: between `min_replicas` and `max_replicas`, aiming at
    `target_ongoing_requests` requests in flight per replica."""

    min_replicas: Annotated[Int, Range(ge=0)] = 1
    max_replicas: Int = 2
    target_ongoing_requests: Annotated[Number, Range(gt=0)] = 8.0


@dataclass(frozen=True)
class ServeSettings:
    """Everything `unigrf serve` decides besides the run (defaults: one CPU replica on
    127.0.0.1:8000, batches of up to 8 requests gathered for at most 5 ms). Each field's type
    and range is its annotation (`unigrf.schema`); `validate` adds the rules between fields."""

    host: Str = "127.0.0.1"  # 0.0.0.0 on a cluster's head node to accept outside requests
    port: Annotated[Int, Range(ge=1, le=65535)] = 8000
    app_name: Str = "unigrf"
    replicas: Positive = 1  # fixed replica count, unless `autoscaling` is set
    autoscaling: AutoscalingSettings | None = None
    num_cpus: Annotated[Number, Range(gt=0)] = 1.0  # per replica; torch uses ceil(num_cpus) threads
    # per replica; None: 1 where the cluster has a GPU (device auto)
    num_gpus: NonNegative | None = None
    device: Device = "auto"  # auto: cuda where the replica holds a GPU, else cpu
    max_batch_size: Positive = 8  # requests one forward pass answers together (Serve's @serve.batch)
    batch_wait_timeout_s: NonNegative = 0.005  # how long a batch waits to fill
    max_ongoing_requests: Positive = 32  # per replica; beyond it requests queue in the proxy
    max_history: Positive = 10_000  # interactions a request may carry (the model reads max_len of them)
    mode: Mode = "cached"  # no_cache: recompute the history for every candidate (benchmark)

    def validate(self) -> ServeSettings:
        """The fields checked as parsing checks them (the settings may have been built or
        replaced directly), then the rules between them. Returns self."""
        schema.parse(ServeSettings, dataclasses.asdict(self), ServeSettingsError)
        checks = [
            (
                not (self.device == "cuda" and self.num_gpus == 0),
                "device cuda needs num_gpus > 0 (a replica holds only the GPUs it asks for)",
            ),
            (
                self.max_ongoing_requests >= self.max_batch_size,
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                f"({self.max_batch_size}): a replica could never fill a batch",
            ),
        ]
        if self.autoscaling is not None:
            a = self.autoscaling
            checks.append(
                (
                    a.max_replicas >= max(a.min_replicas, 1),
                    "autoscaling.max_replicas must be >= min_replicas and >= 1",
                )
            )
        for ok, message in checks:
            if not ok:
                raise ServeSettingsError(message)
        return self

    def with_overrides(self, **values: Any) -> ServeSettings:
        """A copy with every non-None value set (the command's options over the file)."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None}).validate()

    @property
    def torch_threads(self) -> int:
        return max(1, math.ceil(self.num_cpus))

    def replica_config(
        self, run_dir: str | Path, prepared_dir: str | Path, num_gpus: float
    ) -> dict[str, Any]:
        """The replicas' `user_config`: plain JSON values (Ray Serve compares and ships them)."""
        return {
            "run_dir": str(Path(run_dir).resolve()),
            "prepared_dir": str(Path(prepared_dir).resolve()),
            "mode": self.mode,
            "device": _replica_device(self.device, num_gpus),
            "torch_threads": self.torch_threads,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "max_history": self.max_history,
        }


def _replica_device(device: str, num_gpus: float) -> str:
    if device == "auto":
        return "cuda" if num_gpus > 0 else "cpu"
    return device


def load_settings(path: str | Path | None) -> ServeSettings:
    """The settings of a YAML file (top-level keys as `ServeSettings`' fields, `autoscaling`
    a mapping of `AutoscalingSettings`' fields), or the defaults when `path` is None."""
    if path is None:
        return ServeSettings().validate()
    data = load_yaml_mapping(path, "serving config", ServeSettingsError, empty_ok=True)
    settings = schema.parse(ServeSettings, data, ServeSettingsError, file=path)
    try:
        return settings.validate()
    except ServeSettingsError as err:
        raise ServeSettingsError(f"{path}: {err}") from None
