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
from typing import Any, Literal

from unigrf.yaml_input import check_keys, load_yaml_mapping

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

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 8.0


@dataclass(frozen=True)
class ServeSettings:
    """Everything `unigrf serve` decides besides the run (defaults: one CPU replica on
    127.0.0.1:8000, batches of up to 8 requests gathered for at most 5 ms)."""

    host: str = "127.0.0.1"  # 0.0.0.0 on a cluster's head node to accept outside requests
    port: int = 8000
    app_name: str = "unigrf"
    replicas: int = 1  # fixed replica count, unless `autoscaling` is set
    autoscaling: AutoscalingSettings | None = None
    num_cpus: float = 1.0  # per replica; torch uses ceil(num_cpus) threads
    num_gpus: float | None = None  # per replica; None: 1 where the cluster has a GPU (device auto)
    device: Device = "auto"  # auto: cuda where the replica holds a GPU, else cpu
    max_batch_size: int = 8  # requests one forward pass answers together (Serve's @serve.batch)
    batch_wait_timeout_s: float = 0.005  # how long a batch waits to fill
    max_ongoing_requests: int = 32  # per replica; beyond it requests queue in the proxy
    max_history: int = 10_000  # interactions a request may carry (the model reads max_len of them)
    mode: Mode = "cached"  # no_cache: recompute the history for every candidate (benchmark)

    def validate(self) -> ServeSettings:
        checks = [
            (1 <= self.port <= 65535, f"port must be in 1..65535, got {self.port}"),
            (self.replicas >= 1, f"replicas must be >= 1, got {self.replicas}"),
            (self.num_cpus > 0, f"num_cpus must be > 0, got {self.num_cpus}"),
            (self.num_gpus is None or self.num_gpus >= 0, f"num_gpus must be >= 0, got {self.num_gpus}"),
            (self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}"),
            (
                not (self.device == "cuda" and self.num_gpus == 0),
                "device cuda needs num_gpus > 0 (a replica holds only the GPUs it asks for)",
            ),
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (self.max_batch_size >= 1, f"max_batch_size must be >= 1, got {self.max_batch_size}"),
            (self.batch_wait_timeout_s >= 0, "batch_wait_timeout_s must be >= 0"),
            (
                self.max_ongoing_requests >= self.max_batch_size,
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                f"({self.max_batch_size}): a replica could never fill a batch",
            ),
            (self.max_history >= 1, f"max_history must be >= 1, got {self.max_history}"),
        ]
        if self.autoscaling is not None:
            a = self.autoscaling
            checks += [
                (a.min_replicas >= 0, "autoscaling.min_replicas must be >= 0"),
                (
                    a.max_replicas >= max(a.min_replicas, 1),
                    "autoscaling.max_replicas must be >= min_replicas and >= 1",
                ),
                (a.target_ongoing_requests > 0, "autoscaling.target_ongoing_requests must be > 0"),
            ]
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


_FIELDS = [f.name for f in dataclasses.fields(ServeSettings)]
_AUTOSCALING_FIELDS = [f.name for f in dataclasses.fields(AutoscalingSettings)]


def load_settings(path: str | Path | None) -> ServeSettings:
    """The settings of a YAML file (top-level keys as `ServeSettings`' fields, `autoscaling`
    a mapping of `AutoscalingSettings`' fields), or the defaults when `path` is None."""
    if path is None:
        return ServeSettings().validate()
    data = load_yaml_mapping(path, "serving config", ServeSettingsError, empty_ok=True)
    check_keys(data, _FIELDS, ServeSettingsError, file=path)
    values = dict(data)
    if values.get("autoscaling") is not None:
        scaling = values["autoscaling"]
        if not isinstance(scaling, dict):
            raise ServeSettingsError(
                f"{path}: autoscaling must be a mapping of {', '.join(_AUTOSCALING_FIELDS)}"
            )
        check_keys(scaling, _AUTOSCALING_FIELDS, ServeSettingsError, file=path, section="autoscaling")
        values["autoscaling"] = AutoscalingSettings(**scaling)
    types = {
        "port": int,
        "replicas": int,
        "max_batch_size": int,
        "max_ongoing_requests": int,
        "max_history": int,
    }
    for key, kind in types.items():
        if key in values and not (isinstance(values[key], kind) and not isinstance(values[key], bool)):
            raise ServeSettingsError(f"{path}: {key} must be an integer, got {values[key]!r}")
    try:
        return ServeSettings(**values).validate()
    except ServeSettingsError as err:
        raise ServeSettingsError(f"{path}: {err}") from None
