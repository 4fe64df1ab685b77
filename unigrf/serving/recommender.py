"""Recommendations from one trained run: raw ids in, ranked raw ids out (pure torch, no Ray).

A query is a user's history — (item, rating, timestamp) in the dataset's raw ids — and k. The
answer is the cascade the evaluation measures (unigrf/evaluation/evaluate.py, SPEC §2.3), with
the combined score of unigrf/evaluation/cascade_score.py:

1. the history is sorted by timestamp (stable: ties keep the request's order, as
   `unigrf.data.prepare` keeps file order), unknown items are dropped and listed, and the
   model reads the most recent `max_len` interactions — every known one is masked from the
   answer, as evaluation masks the whole history;
2. one forward over the history fills the backbone's key/value cache (`model.eval_prefix`)
   and gives the retrieval query, scored against every item;
3. retrieval's top C (`cascade_candidates`, C = the run's `eval.cascade_top_c`) are scored by
   the ranking head as C one-token continuations of that cache (`score_candidates(prefix=)`):
   one model, one pass over the history. A two-model run (the two_stage variant, or a run
   selected per stage) encodes the history twice, once per model: `eval_prefix` of a
   `TwoStage` — the same code path, and the cost difference the benchmark measures;
4. the C candidates are ordered by log P(next) + λ·log σ(like logit) (`combined_scores`, λ from
   the run's metrics.json `cascade_lambda`, chosen on validation; absent: λ = inf, the
   like-probability alone) and the top k returned.

`mode="no_cache"` answers the same queries without the cache: the history is encoded again
with each candidate appended (`eval_states` over C sequences): what serving a generative
ranker costs without the key/value-cache contract (the benchmark's third column).

A query whose history has no known item gets the most popular items (interaction counts of
the prepared dataset), marked `source="popularity"`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor, nn

from unigrf.config import ExperimentConfig, config_to_dict, load_config, resolve_model_size
from unigrf.data.sequences import SequenceData
from unigrf.evaluation.cascade_score import combined_scores, retrieval_log_probs
from unigrf.evaluation.evaluate import cascade_candidates
from unigrf.evaluation.metrics import history_mask
from unigrf.model import TwoStage, build_model
from unigrf.model.ranking_prior import PriorStats

Mode = Literal["cached", "no_cache"]
# Attention scores held at once when the history is recomputed per candidate (no_cache):
# rows per chunk = this / tokens², about 64 MiB per head in float32.
_RECOMPUTE_SCORES = 2**24
_INT64_LIMIT = 2**62  # timestamps beyond this would overflow the model's time differences


class ServingError(RuntimeError):
    """A run cannot be served (files missing, checkpoint and data disagree); the message
    names the file and what to do."""


class InputError(ValueError):
    """A query the run cannot answer; `field` is where in the request (e.g. history[3].rating)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Interaction:
    item: str  # the dataset's raw item id (item_map.parquet `raw`)
    rating: float  # one of the dataset's rating values (meta.json `rating_values`)
    timestamp: int


@dataclass(frozen=True)
class Query:
    history: tuple[Interaction, ...]
    k: int
    time: int | None = None  # when the recommendation is for; default: the latest history time


@dataclass(frozen=True)
class Scored:
    item: str
    retrieval_score: float  # log P(next = item | history); popularity: log share of interactions
    like_probability: float | None  # σ(like logit); None for popularity or a retrieval-only run
    score: float  # what the answer is ordered by (the combined score)


@dataclass(frozen=True)
class Answer:
    items: list[Scored]
    source: Literal["model", "popularity"]
    unknown_items: list[str]  # raw ids not in the run's catalogue, ignored (first-seen order)
    history_used: int  # interactions the model read (at most max_len; 0 for popularity)
    history_truncated: bool  # more known interactions than max_len: the most recent were read


@dataclass
class ServedRun:
    """A trained run, loaded for serving (`load_run`)."""

    name: str
    run_dir: Path
    prepared_dir: Path
    cfg: ExperimentConfig  # model.size resolved
    model: nn.Module  # UniGRF, or TwoStage (two models: two passes over the history)
    item_index: dict[str, int]  # raw item id -> 1..num_items
    item_raw: np.ndarray  # [num_items + 1] object: index -> raw id ("" for padding 0)
    rating_values: np.ndarray  # [L] sorted; feedback level = index + 1
    max_len: int
    popularity: np.ndarray  # [num_items + 1] int64 interaction counts (prepared dataset)
    cascade_lambda: float
    lambda_source: str
    temperature: float  # retrieval logits are similarity / temperature
    top_c: int  # retrieval candidates re-ranked (the run's eval.cascade_top_c, <= num_items)
    metrics: dict[str, Any]
    provenance: dict[str, Any]

    @property
    def num_items(self) -> int:
        return len(self.item_raw) - 1

    @property
    def passes(self) -> int:
        """Forward passes over a history per query: 1 for one model, 2 for two."""
        return 2 if isinstance(self.model, TwoStage) else 1

    @property
    def has_ranking(self) -> bool:
        return bool(getattr(self.model, "has_ranking", True))

    def info(self) -> dict[str, Any]:
        """What `GET /info` reports (JSON-safe: non-finite floats become null or "inf")."""
        return json_safe(
            {
                "run": self.name,
                "run_dir": str(self.run_dir),
                "prepared_dir": str(self.prepared_dir),
                "model": type(self.model).__name__,
                "passes_over_history": self.passes,
                "ranking": self.has_ranking,
                "num_items": self.num_items,
                "max_len": self.max_len,
                "rating_values": [float(v) for v in self.rating_values],
                "cascade_top_c": self.top_c,
                "cascade_lambda": self.cascade_lambda,
                "lambda_source": self.lambda_source,
                "retrieval_temperature": self.temperature,
                "commit": self.provenance.get("git_commit", "unknown"),
                "provenance": self.provenance,
                "metrics": self.metrics,
                "config": config_to_dict(self.cfg),
            }
        )


# ---------------------------------------------------------------------------------------------
# loading a run
# ---------------------------------------------------------------------------------------------


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ServingError(f"{path}: missing ({what}); serve a finished `unigrf train` run directory")
    return path


def run_config(run_dir: str | Path) -> ExperimentConfig:
    """The run's config.yaml (model.size as trained: possibly `auto`)."""
    return load_config(_require(Path(run_dir) / "config.yaml", "the run's config"))


def find_prepared_dir(run_dir: str | Path) -> Path:
    """The prepared dataset the run was trained on: the results directory's cache entry for
    the run's data config (`<results>/data/<dataset>-<key>/`, results = the run directory's
    grandparent for `<results>/runs/<name>`). On a cache miss it is prepared (the raw files must
    be where the config says, relative to the working directory). Where neither works, the
    caller passes the directory itself (`unigrf serve --prepared DIR`)."""
    from unigrf.data.readers import DataError
    from unigrf.training.prepared import load_data_dir

    run_dir = Path(run_dir).resolve()
    cfg = run_config(run_dir)
    results = run_dir.parent.parent if run_dir.parent.name == "runs" else Path(cfg.results_dir)
    try:
        return load_data_dir(dataclasses.replace(cfg, results_dir=str(results)), verbose=False)
    except (DataError, OSError, ValueError) as err:
        raise ServingError(
            f"{run_dir}: cannot find the run's prepared dataset under {results}/data ({err}); "
            "pass its directory with --prepared DIR"
        ) from err


def cascade_lambda(metrics: dict[str, Any]) -> tuple[float, str]:
    """(λ, where it came from): metrics.json's `cascade_lambda` (chosen on validation), else
    inf — the rule before the combined score: the like-probability alone orders the C."""
    value = metrics.get("cascade_lambda")
    if value is None:
        return math.inf, "default inf: metrics.json has no cascade_lambda (like-probability alone)"
    lam = float(value)
    if math.isnan(lam):  # no λ was chosen: a run without a ranking stage (or no liked target)
        return 0.0, "0: metrics.json's cascade_lambda is NaN (no ranking stage): retrieval order"
    if lam < 0:
        raise ServingError(f"metrics.json: cascade_lambda must be >= 0, got {value!r}")
    return lam, "metrics.json cascade_lambda (chosen on validation)"


def retrieval_temperature(model: nn.Module, cfg: ExperimentConfig) -> float:
    """The model's `retrieval_temperature` (the retriever's, for two models) when it has one,
    else the config's `loss.temperature`: the training logits are similarity / temperature."""
    for holder in (model, getattr(model, "retriever", None)):
        value = getattr(holder, "retrieval_temperature", None)
        if value is not None:
            return float(value)
    return float(cfg.loss.temperature)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ServingError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def load_run(
    run_dir: str | Path, prepared_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> ServedRun:
    """Load a run directory (config.yaml, best_model.pt, metrics.json, provenance.json) and its
    prepared dataset (`find_prepared_dir` when not given) onto `device`, in eval mode."""
    from unigrf.training.selection import load_selected_model

    run_dir = Path(run_dir).resolve()
    cfg = run_config(run_dir)
    checkpoint = _require(run_dir / "best_model.pt", "the selected weights")
    prepared = Path(prepared_dir).resolve() if prepared_dir is not None else find_prepared_dir(run_dir)
    for name in ("meta.json", "sequences.parquet", "item_map.parquet"):
        _require(prepared / name, "a prepared dataset file")
    data = SequenceData.load(prepared, max_len=cfg.data.max_len)  # None: the prepared data's own
    cfg = resolve_model_size(cfg, data.num_train_interactions)
    counts = torch.as_tensor(data.item_counts("val"))  # as training built it (loss buffers)
    model = build_model(
        cfg, data.num_items, data.num_levels, data.max_len, counts, PriorStats.of(data.like_statistics())
    )
    try:
        model = load_selected_model(model, checkpoint)
    except RuntimeError as err:  # shapes: another dataset, or another config
        raise ServingError(
            f"{checkpoint}: does not fit the model of {run_dir / 'config.yaml'} on {prepared} "
            f"({str(err).splitlines()[0]}); pass the run's own prepared dataset"
        ) from err
    model.to(device).eval()

    items = pq.read_table(prepared / "item_map.parquet")
    raw = items.column("raw").to_pylist()
    index = items.column("index").to_numpy()
    item_raw = np.empty(data.num_items + 1, dtype=object)
    item_raw[0] = ""
    item_raw[index] = raw
    metrics = _read_json(run_dir / "metrics.json")
    lam, source = cascade_lambda(metrics)
    return ServedRun(
        name=run_dir.name,
        run_dir=run_dir,
        prepared_dir=prepared,
        cfg=cfg,
        model=model,
        item_index={str(r): int(i) for r, i in zip(raw, index)},
        item_raw=item_raw,
        rating_values=data.rating_values,
        max_len=data.max_len,
        popularity=np.bincount(data.items, minlength=data.num_items + 1).astype(np.int64),
        cascade_lambda=lam,
        lambda_source=source,
        temperature=retrieval_temperature(model, cfg),
        top_c=min(cfg.eval.cascade_top_c, data.num_items),
        metrics=metrics,
        provenance=_read_json(run_dir / "provenance.json"),
    )


# ---------------------------------------------------------------------------------------------
# answering queries
# ---------------------------------------------------------------------------------------------


@dataclass
class _Encoded:
    """One query's history in model ids: the model's window and the whole (for masking)."""

    items: np.ndarray  # [n] int64, chronological, every known interaction
    levels: np.ndarray  # [n] int64 feedback tokens 1..L
    timestamps: np.ndarray  # [n] int64
    unknown: list[str]
    time: int | None


class Recommender:
    """Answers `Query`s for one `ServedRun` (`recommend` takes a batch: one forward for all)."""

    def __init__(
        self,
        run: ServedRun,
        mode: Mode = "cached",
        device: str | torch.device = "cpu",
        max_history: int = 10_000,
    ) -> None:
        if mode not in ("cached", "no_cache"):
            raise ValueError(f"mode must be 'cached' or 'no_cache', got {mode!r}")
        self.run, self.mode, self.device, self.max_history = run, mode, torch.device(device), max_history
        counts = run.popularity.astype(np.float64)
        counts[0] = 0
        order = np.argsort(-counts, kind="stable")
        self._popular = order[counts[order] > 0]  # most interactions first, ties by item id
        self._popular_logp = np.log(
            counts / counts.sum(), where=counts > 0, out=np.full_like(counts, -np.inf)
        )

    # -- validation --------------------------------------------------------------------------

    def check(self, query: Query) -> None:
        """Raise InputError for a query this run cannot answer: k outside 1..C (C = the run's
        cascade_top_c), a history over `max_history`, a rating not among the dataset's values,
        a timestamp beyond ±2^62. Unknown items are no error (`recommend` lists them)."""
        if not 1 <= query.k <= self.run.top_c:
            raise InputError("k", f"must be in 1..{self.run.top_c} (the candidates re-ranked), got {query.k}")
        if len(query.history) > self.max_history:
            raise InputError(
                "history", f"{len(query.history)} interactions, at most {self.max_history} are accepted"
            )
        values = self.run.rating_values
        ratings = np.fromiter((e.rating for e in query.history), np.float64, len(query.history))
        bad = np.flatnonzero(~np.isin(ratings, values))
        if len(bad):
            i = int(bad[0])
            shown = ", ".join(f"{v:g}" for v in values)
            raise InputError(
                f"history[{i}].rating", f"{ratings[i]:g} is not one of the dataset's ratings ({shown})"
            )
        for i, event in enumerate(query.history):
            if abs(event.timestamp) >= _INT64_LIMIT:
                raise InputError(f"history[{i}].timestamp", f"{event.timestamp} is out of range (|t| < 2^62)")
        if query.time is not None and abs(query.time) >= _INT64_LIMIT:
            raise InputError("time", f"{query.time} is out of range (|t| < 2^62)")

    def _encode(self, query: Query) -> _Encoded:
        known, unknown = [], {}
        for event in query.history:
            index = self.run.item_index.get(str(event.item))
            if index is None:
                unknown.setdefault(str(event.item), None)
            else:
                known.append((index, event.rating, event.timestamp))
        arr = np.array(known, dtype=object).reshape(-1, 3)
        times = arr[:, 2].astype(np.int64)
        order = np.argsort(times, kind="stable")  # ties keep the request's order
        levels = np.searchsorted(self.run.rating_values, arr[:, 1].astype(np.float64)) + 1
        return _Encoded(
            arr[order, 0].astype(np.int64),
            levels[order].astype(np.int64),
            times[order],
            list(unknown),
            query.time,
        )

    # -- the model ---------------------------------------------------------------------------

    def recommend(self, queries: Sequence[Query]) -> list[Answer]:
        """Answers in the order of `queries` (each `check`ed first: an invalid one raises).
        The queries with a known history share one batch: one forward pass (two for two models)."""
        for query in queries:
            self.check(query)
        encoded = [self._encode(q) for q in queries]
        answers: list[Answer | None] = [None] * len(queries)
        rows = [i for i, e in enumerate(encoded) if len(e.items)]
        for i, e in enumerate(encoded):
            if not len(e.items):
                answers[i] = self._popularity_answer(queries[i].k, e.unknown)
        if rows:
            ranked = self.rank([encoded[i] for i in rows])
            for row, i in enumerate(rows):
                answers[i] = self._answer(
                    queries[i].k, encoded[i], *(None if t is None else t[row] for t in ranked)
                )
        return answers  # type: ignore[return-value]

    def batch(self, encoded: Sequence[_Encoded]) -> dict[str, Tensor]:
        """Right-padded model inputs of encoded histories (the recent `max_len` of each):
        items, feedback, timestamps [B, W]; lengths [B]; history [B, H] (every known item, for
        masking); time [B] (the query's time, else its latest interaction's)."""
        windows = [slice(max(0, len(e.items) - self.run.max_len), len(e.items)) for e in encoded]
        width = max(w.stop - w.start for w in windows)
        full = max(len(e.items) for e in encoded)
        b = len(encoded)
        items, feedback, times = (np.zeros((b, width), np.int64) for _ in range(3))
        history = np.zeros((b, full), np.int64)
        lengths, time = np.zeros(b, np.int64), np.zeros(b, np.int64)
        for row, (e, w) in enumerate(zip(encoded, windows)):
            n = w.stop - w.start
            items[row, :n], feedback[row, :n], times[row, :n] = e.items[w], e.levels[w], e.timestamps[w]
            history[row, : len(e.items)] = e.items
            lengths[row] = n
            time[row] = e.time if e.time is not None else e.timestamps[-1]
        arrays = {
            "items": items,
            "feedback": feedback,
            "timestamps": times,
            "lengths": lengths,
            "history": history,
            "time": time,
        }
        return {key: torch.from_numpy(value).to(self.device) for key, value in arrays.items()}

    @torch.inference_mode()
    def rank(self, encoded: Sequence[_Encoded]) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """The C candidates of each history in answer order: (items [B, C], log P(next) [B, C],
        like logits [B, C] or None without a ranking head, combined scores [B, C], eligible
        [B, C] bool — False where fewer than C items were left to recommend), on the CPU."""
        run, model = self.run, self.run.model
        batch = self.batch(encoded)
        scores, prefix = model.eval_prefix(batch)  # the history's forward (per model)
        scores = scores.float()
        mask = history_mask(batch["history"], run.num_items)  # [B, I + 1], True = excluded
        candidates = cascade_candidates(scores, mask, run.top_c)  # [B, C]
        eligible = ~mask.gather(1, candidates)
        logp = retrieval_log_probs(scores, mask, run.temperature).gather(1, candidates)
        logits = None
        if run.has_ranking:
            if self.mode == "cached":
                prefix = prefix._replace(next_time=batch["time"])  # candidates sit at the query's time
                logits = model.score_candidates(None, None, None, batch["lengths"], candidates, prefix=prefix)
            else:
                logits = self._recomputed_logits(batch, candidates)
            logits = logits.float()
            combined = combined_scores(logp, logits, run.cascade_lambda)
        else:
            combined = logp
        combined = combined.masked_fill(~eligible, -math.inf)
        order = combined.argsort(dim=1, descending=True, stable=True)
        out = [candidates, logp, logits, combined, eligible]
        return tuple(None if t is None else t.gather(1, order).cpu() for t in out)  # type: ignore[return-value]

    def _recomputed_logits(self, batch: dict[str, Tensor], candidates: Tensor) -> Tensor:
        """Like logits [B, C] without the cache: each candidate appended to its own copy of the
        history (at index length, the query's time, feedback unknown) and the whole sequence
        encoded again — what `score_candidates` computes from the cache, C times the work."""
        model = self.run.model
        ranker = model.ranker if isinstance(model, TwoStage) else model
        b, c = candidates.shape
        lengths = batch["lengths"]

        def extended(t: Tensor) -> Tensor:  # [B, W] -> [B·C, W + 1]
            return torch.cat([t, t.new_zeros(b, 1)], dim=1).repeat_interleave(c, dim=0)

        items, feedback, times = (extended(batch[key]) for key in ("items", "feedback", "timestamps"))
        slot = lengths.repeat_interleave(c)
        rows = torch.arange(b * c, device=items.device)
        items[rows, slot] = candidates.reshape(-1)
        times[rows, slot] = batch["time"].repeat_interleave(c)
        tokens = ranker.stride * items.shape[1]
        chunk = max(1, _RECOMPUTE_SCORES // tokens**2)
        logits = []
        for start in range(0, b * c, chunk):
            part = slice(start, start + chunk)
            sub = {
                "items": items[part],
                "feedback": feedback[part],
                "timestamps": times[part],
                "lengths": slot[part],
            }
            _, h_candidate = ranker.eval_states(sub)
            logits.append(ranker.target_logit(h_candidate, sub))
        return torch.cat(logits).view(b, c)

    # -- answers -----------------------------------------------------------------------------

    def _answer(
        self,
        k: int,
        encoded: _Encoded,
        items: Tensor,
        logp: Tensor,
        logits: Tensor | None,
        combined: Tensor,
        eligible: Tensor,
    ) -> Answer:
        n = int(eligible[:k].sum())  # eligible candidates come first (the rest score -inf)
        ids = items[:n].tolist()
        logps = logp[:n].tolist()
        probs = torch.sigmoid(logits[:n].double()).tolist() if logits is not None else [None] * n
        scores = combined[:n].tolist()
        scored = [
            Scored(str(self.run.item_raw[i]), lp, p, s) for i, lp, p, s in zip(ids, logps, probs, scores)
        ]
        return Answer(
            scored,
            "model",
            encoded.unknown,
            min(len(encoded.items), self.run.max_len),
            len(encoded.items) > self.run.max_len,
        )

    def _popularity_answer(self, k: int, unknown: list[str]) -> Answer:
        top = self._popular[:k]
        scored = [
            Scored(
                str(self.run.item_raw[i]), float(self._popular_logp[i]), None, float(self._popular_logp[i])
            )
            for i in top
        ]
        return Answer(scored, "popularity", unknown, 0, False)


def json_safe(value: Any) -> Any:
    """`value` with NaN as None and ±inf as "inf"/"-inf" (strict JSON has neither)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def answer_to_json(answer: Answer, run: str) -> dict[str, Any]:
    """The response body of one answer (docs/serving.md)."""
    return json_safe(
        {
            "run": run,
            "source": answer.source,
            "items": [dataclasses.asdict(s) for s in answer.items],
            "unknown_items": answer.unknown_items,
            "history_used": answer.history_used,
            "history_truncated": answer.history_truncated,
        }
    )
