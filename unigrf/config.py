"""The typed config tree of one experiment.

One `ExperimentConfig` (frozen dataclasses) describes everything a run does: data, model,
training, enhancer, weighter and evaluation. It loads from YAML (`load_config`), takes dotted
overrides (`model.num_layers=4`, values parsed as YAML scalars), and is what a Tune search space
maps onto (`apply_overrides(cfg, {"enhancer.m": 8})`). Each field's annotation is its whole
schema — type, choices, range (`unigrf.schema`, which checks them and words the errors: the key,
and the file and line when loaded from one); `ExperimentConfig.validate` holds the rules between
fields, checked once on a composed config. There are no hidden defaults: every default lives in
the dataclasses below; the per-dataset defaults (`k_core`, `rating_scale`) and those derived by
a documented rule (`like_threshold` from the rating scale, `max_len` from the data's history
lengths: `derive_max_len`) are resolved by `DataConfig.resolved_*`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from unigrf import schema
from unigrf.schema import Bool, Check, Int, NonNegative, Number, Positive, Probability, Range, Str
from unigrf.yaml_input import load_yaml_mapping


class ConfigError(ValueError):
    """A config file, field or override is invalid; the message names it."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

DatasetName = Literal[
    "synthetic",
    "ml-100k",
    "ml-1m",
    "ml-20m",
    "amazon-books",
    "amazon-reviews",
    "movietweetings",
    "csv",
    "parquet",
]

# Per-dataset defaults [SPEC §2]: Amazon is 5-core filtered, the others are not.
_DATASET_K_CORE = {"amazon-books": 5, "amazon-reviews": 5}
# rating scales other than 1-5 stars: half stars from 0.5 (ML-20M), 0-10 (MovieTweetings)
_DATASET_RATING_SCALE = {"ml-20m": (0.5, 5.0), "movietweetings": (0.0, 10.0)}

# `data.like_threshold: null`: the same position on the rating scale as 4 on 1-5 stars, the
# threshold the paper and SPEC use on MovieLens and Amazon. Ratings come in steps, so any
# threshold between two steps labels them the same: 0-10 -> 7.5 is "rating >= 8" on integer
# ratings (MovieTweetings: 48 % likes, where 4.0 gave 96 %; ML-100K at 4: 55 %), half stars
# (0.5-5) -> 3.875 is "rating >= 4", as before.
LIKE_THRESHOLD_POSITION = 0.75
# `data.max_len: null`: the 95th percentile of the users' training lengths (everything before
# the validation item), rounded up to a multiple of 10 and clipped to [50, 200]: the window
# holds the whole history of 19 users in 20. The floor: a window longer than a user's history
# costs nothing (a batch is padded to its longest window), and 50 is where the recipe was
# chosen on short histories (Amazon MI); the cap: attention cost grows with the square of the
# window, and 200 is MovieLens' (SPEC §2). It gives ML-100K 200, Amazon MI 50 (the values the
# recipe was chosen at) and MovieTweetings 50.
MAX_LEN_QUANTILE = 0.95
MAX_LEN_BOUNDS = (50, 200)
MAX_LEN_STEP = 10


def length_quantile(lengths: Sequence[int], q: float = MAX_LEN_QUANTILE) -> int:
    """The empirical q-quantile of `lengths`: the smallest length that at least a share q of
    them do not exceed (0 for none)."""
    ordered = sorted(int(n) for n in lengths)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)] if ordered else 0


def derive_max_len(train_lengths: Sequence[int]) -> int:
    """The `data.max_len: null` rule (MAX_LEN_QUANTILE above) on the users' training lengths."""
    rounded = math.ceil(length_quantile(train_lengths) / MAX_LEN_STEP) * MAX_LEN_STEP
    return int(min(max(rounded, MAX_LEN_BOUNDS[0]), MAX_LEN_BOUNDS[1]))


# The metadata of a field that says only how often a long run saves its progress
# (`train.checkpoint_every_steps`, `eval.checkpoint_every_batches`): it is left out of
# `config_hash` and of the run identities (`unigrf.run_identity`), so a run, a cache or a grid
# cell keyed before the field existed keeps its key, and one resumed at another interval is the
# same run.
UNHASHED = {"hashed": False}

# The metadata of a field added after runs were made whose default reproduces them (a new
# weighter's knobs, read only when that weighter is chosen): it is left out of `config_hash` and
# of the run identities while it holds its default, so every run, cache and grid cell keyed
# before it existed keeps its key; set to anything else, it is hashed like every field.
HASHED_UNLESS_DEFAULT = {"hashed": "unless default"}


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in generator (`unigrf.data.synthetic`, which also computes its oracle).

    Sizes, then what is planted: topic tastes (which topics a user draws from, drifting),
    item-to-item successors (the sequential dependence, weaker after a disliked item), a long
    tail of popularity, and a latent Gaussian rating (taste, item quality, user bias, noise).
    The defaults are the quick grid's data: small enough that a tiny HSTU learns it in
    seconds (benchmarks/RESULTS.md, "Quick grid").
    """

    num_users: Annotated[Int, Range(ge=1)] = 600
    num_items: Int = 200
    mean_seq_len: Int = 30
    min_seq_len: Annotated[Int, Range(ge=3, why=" (leave-one-out needs train, val and test)")] = 8
    num_topics: Annotated[Int, Range(ge=1)] = 15
    taste_scale: NonNegative = 2.5  # std of the initial topic logits: a few favourite topics per user
    taste_drift: NonNegative = 0.1  # per-step random-walk scale of the user's topic logits
    popularity_exponent: Number = 0.8  # Zipf exponent of the item popularity long tail
    # the next item is one of the previous item's successors (the next items along its topic's
    # chain) with probability s / (1 + s): s = transition_strength after a liked previous item
    # (rating >= 4), transition_strength_disliked after a disliked one
    transition_strength: Annotated[Number, Range(ge=0, lt=math.inf)] = 1.0
    transition_strength_disliked: Annotated[Number, Range(ge=0, lt=math.inf)] = 0.3
    num_successors: Annotated[Int, Range(ge=1)] = 3  # successors per item, weights halving along the chain
    rating_base: Number = 3.0  # latent rating at average taste, quality and user bias
    rating_affinity: Number = 0.8  # latent rating per std of the user's taste for the topic
    quality_std: NonNegative = 0.8  # std of the per-item quality term of the latent rating
    user_bias_std: NonNegative = 0.5  # std of the per-user term of the latent rating
    rating_noise: NonNegative = 0.6  # std of the Gaussian noise on the latent rating
    # chance an interaction shares the previous timestamp
    tie_probability: Annotated[Number, Range(ge=0, lt=1)] = 0.2
    seed: Int = 0

    def check(self) -> SyntheticConfig:
        """This config's fields checked as parsing checks them (it may have been built directly),
        then the rules between them; a ConfigError naming the key. Returns self."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        schema.parse(SyntheticConfig, values, ConfigError, section="data.synthetic")
        rules = [
            (self.num_items > self.num_topics, "num_items must exceed num_topics"),
            (self.mean_seq_len >= self.min_seq_len, "mean_seq_len must be >= min_seq_len"),
            (self.min_seq_len < self.num_items, "min_seq_len must be < num_items (no repeated items)"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(f"data.synthetic: {message}")
        return self


@dataclass(frozen=True)
class ColumnsConfig:
    """Column mapping for generic `csv` / `parquet` sources: a header name, or a 0-based column
    position (an integer, or digits without a header). Without a header a field left at its
    name here takes its place in the order user, item, rating, timestamp (0-3).
    `sep` may be several characters (`::`); on the command line it needs no quoting."""

    user: Str | Int = "user"
    item: Str | Int = "item"
    rating: Str | Int = "rating"
    timestamp: Str | Int = "timestamp"
    sep: Annotated[Str, Check(lambda sep: len(sep) >= 1, "{key} must not be empty")] = ","
    header: Bool = True


_WINDOW = " (a training window needs an item and the next one)"


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetName = "synthetic"
    data_dir: Str | None = None  # directory holding the raw files of `dataset`
    path: Str | None = None  # an explicit raw file (required for csv / parquet)
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    # None: the dataset's default (5 for Amazon, 0 otherwise)
    k_core: Annotated[Int, Range(ge=0)] | None = None
    # items per training window and per evaluation history; None: derived from the data when
    # it is prepared (`derive_max_len`: the 95th percentile of the training lengths, rounded up
    # to a multiple of 10, within [50, 200]), recorded in meta.json and the prepare table
    max_len: Annotated[Int, Range(ge=2, why=_WINDOW)] | None = None
    # like = rating >= like_threshold; None: 0.75 of the way up the rating scale, the place of
    # 4 on 1-5 (`resolved_like_threshold`)
    like_threshold: Number | None = None
    # ratings outside are bad rows; None: the dataset's scale ((0.5, 5) for ml-20m, (0, 10) for
    # movietweetings, (1, 5) otherwise)
    rating_scale: tuple[Number, Number] | None = None
    on_bad_rows: Literal["error", "skip"] = "error"
    # Which windows of each user's training part an epoch trains on (unigrf.data.sequences):
    # "all" = every window, ending at the training part's end and every max_len - 1 items before
    # it, so every training interaction (but a user's first) is a retrieval target once per
    # epoch; "last" = the last max_len items only (the rest of a longer history is never
    # trained on); "sample" = as many windows per epoch as there are users, drawn uniformly
    # from all windows (every target equally likely, epochs as short as "last").
    # "all" was chosen on validation (benchmarks/RESULTS.md, "Quality", "Training windows").
    # Where every history fits one window (Amazon MI) all = last.
    train_windows: Literal["all", "last", "sample"] = "all"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def resolved_max_len(self, derived: int | None = None) -> int:
        """`max_len`, or where it is None the value `derived` from the data (a prepared
        dataset's meta.json `max_len`, `derive_max_len`)."""
        if self.max_len is not None:
            return self.max_len
        if derived is None:
            raise ValueError(
                "data.max_len is null: it is derived from the data when it is prepared (meta.json "
                "max_len); pass that value, or set data.max_len"
            )
        return int(derived)

    def resolved_like_threshold(self) -> float:
        """`like_threshold`, or where it is None the rating scale's point at
        LIKE_THRESHOLD_POSITION (1-5 -> 4.0, 0.5-5 -> 3.875, 0-10 -> 7.5)."""
        if self.like_threshold is not None:
            return self.like_threshold
        lo, hi = self.resolved_rating_scale()
        return lo + LIKE_THRESHOLD_POSITION * (hi - lo)

    def resolved_k_core(self) -> int:
        return self.k_core if self.k_core is not None else _DATASET_K_CORE.get(self.dataset, 0)

    def resolved_rating_scale(self) -> tuple[float, float]:
        if self.rating_scale is not None:
            return self.rating_scale
        return _DATASET_RATING_SCALE.get(self.dataset, (1.0, 5.0))


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

# name -> (num_layers, num_heads, dim)
SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (1, 1, 32),
    "small": (2, 2, 64),
    "base": (4, 4, 128),
    "large": (8, 8, 256),
}
# `model.size: auto` (the default): the preset is chosen from the training interactions, because
# the two datasets the recipe was searched on disagree on size and the disagreement follows
# their scale (reports/recipe/README.md): Amazon MI (7.4k training interactions) validates best
# at `tiny` (`small` overfits within 5 epochs), ML-100K (98k) at `small` (reports/ml-100k/scaling:
# small > tiny > base). The threshold sits between the two, at their geometric mean; above
# ML-100K's scale nothing was measured, so `auto` stays at `small` there: sweep model.size.
AUTO_SIZE_TINY_BELOW = 30_000  # training interactions


def auto_size(train_interactions: int) -> str:
    """The preset `model.size: auto` resolves to for data with `train_interactions`."""
    return "tiny" if train_interactions < AUTO_SIZE_TINY_BELOW else "small"


# The backbones (unigrf.model.backbones.BACKBONES maps each name to its module).
BackboneName = Literal["hstu", "llama", "sasrec"]


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneName = "hstu"
    size: Literal["auto", "tiny", "small", "base", "large"] = "auto"  # auto: `auto_size` above
    num_layers: Positive | None = None  # set to override the preset
    num_heads: Positive | None = None
    dim: Positive | None = None
    # The defaults below and in LossConfig / TrainConfig / EnhancerConfig / WeighterConfig are
    # the training recipe chosen by the project's own search (reports/recipe/README.md): a user
    # who sets only data.* keys trains with it.
    dropout: Probability = 0.4
    # dropout on softmax attention probabilities (sasrec, llama). SASRec's paper uses `dropout`
    # here too; off by default: it sends SDPA from its fused kernel to the unfused math path
    # (several times slower on CPU, benchmarks/RESULTS.md "Throughput").
    attention_dropout: Probability = 0.0
    ranking_hidden: Positive = 64  # hidden width of the ranking MLP head f_phi
    # The ranking logit starts from the count model's form — the user's and the item's smoothed
    # like rates on the training part, the global rate — and the head f_phi adds to it
    # (unigrf/model/ranking_prior.py says why; reports/recipe/README.md "Ranking prior" the
    # decision, on validation over the three datasets).
    ranking_prior: Bool = True
    # Retrieval score of item i for query h: "cosine" = <h/|h|, e_i/|e_i|> (then divided by
    # loss.temperature in training), "dot" = <h, e_i>. The item table is shared with the input.
    similarity: Literal["cosine", "dot"] = "dot"
    # What a feedback token b_k embeds: "rating" = its rating level only (SPEC §1); "item_rating"
    # = the rating level plus the item it rates, so the query token that predicts i_{k+1} holds
    # i_k itself instead of having to fetch it from the previous token by attention.
    feedback_token: Literal["rating", "item_rating"] = "item_rating"
    # N(0, std) init of the item / feedback embedding tables
    embedding_init_std: Annotated[Number, Range(gt=0)] = 0.015
    time_bias: Bool = False  # HSTU: add a bucketed time-difference bias
    sasrec_norm: Literal["pre", "post"] = "pre"

    def resolved_shape(self, size: str | None = None) -> tuple[int, int, int]:
        """(num_layers, num_heads, dim) after applying the preset (`size`, default `self.size`)
        and direct overrides. `auto` is resolved from the data first (`resolve_model_size`)."""
        size = size or self.size
        if size == "auto":
            raise ValueError(
                "model.size is auto: resolve it from the data first (config.resolve_model_size), "
                "or set a preset (tiny, small, base, large)"
            )
        layers, heads, dim = SIZE_PRESETS[size]
        layers = self.num_layers if self.num_layers is not None else layers
        heads = self.num_heads if self.num_heads is not None else heads
        dim = self.dim if self.dim is not None else dim
        return layers, heads, dim


@dataclass(frozen=True)
class LossConfig:
    """The retrieval loss (`unigrf.model.retrieval_losses`); ranking is always BCE on likes.

    - `full_softmax`: cross-entropy over the whole catalogue (exact; computed in item chunks of
      with a custom backward past `chunk_logits` logits per step, so memory stays bounded);
    - `sampled_softmax`: the positive against `num_negatives` negatives drawn by `sampler`:
      `uniform`; `popularity` (proportional to training counts, log-Q corrected when
      `logq_correction`); `in_batch` (the batch's other targets, log-Q corrected, mixed with
      `num_negatives` uniform ones);
    - `bce`: binary cross-entropy with `num_negatives` uniform negatives per position
      (SASRec.pytorch uses 1);
    - `gbce`: gSASRec's generalised BCE (positive probability raised to beta, calibrated by `gbce_t`).
    Every logit is the model's similarity (model.similarity) divided by `temperature`.
    """

    retrieval: Literal["full_softmax", "sampled_softmax", "bce", "gbce"] = "full_softmax"
    sampler: Literal["uniform", "popularity", "in_batch"] = "uniform"
    num_negatives: Positive = 128
    logq_correction: Bool = True
    temperature: Annotated[Number, Range(gt=0)] = 0.2
    gbce_t: Annotated[Number, Range(gt=0, le=1)] = 0.75
    chunk_logits: Positive = 1 << 24  # full softmax: most [positions x items] logits held at once


# --------------------------------------------------------------------------------------------
# Training, enhancer, weighter, evaluation
# --------------------------------------------------------------------------------------------

# λ values of the cascade's combined score evaluated on validation (`EvalConfig.cascade_lambdas`;
# `unigrf.evaluation.cascade_score.DEFAULT_LAMBDAS` is this tuple): 0 = retrieval's order,
# inf = the ranking head's order.
CASCADE_LAMBDAS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, math.inf)

Variant = Literal[
    "unigrf",
    "wo_enhancer",
    "wo_weighter",
    "wo_both",
    "retrieval_only",
    "ranking_only",
    "two_stage",
    "item_only",
]


@dataclass(frozen=True)
class TrainConfig:
    variant: Variant = "unigrf"
    epochs: Positive = 200  # an upper bound: early stopping (patience) ends a run when it has converged
    batch_size: Positive = 32
    lr: Annotated[Number, Range(gt=0)] = 2e-3
    # AdamW; the learning rate warms up linearly over `warmup_steps`, then follows `lr_schedule`
    # ("constant", or "cosine" / "linear" decay to lr * min_lr_ratio at the last epoch's end).
    # Decoupled weight decay on every parameter, strong by design: the main regulariser of the
    # recipe on sparse data (reports/recipe/README.md, "Regularisation": 1e-5 -> 1.0 lifted
    # validation NDCG@10 on Amazon MI and ML-100K alike).
    weight_decay: NonNegative = 1.0
    adam_betas: tuple[Probability, Probability] = (0.9, 0.999)
    warmup_steps: Annotated[Int, Range(ge=0)] = 0
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: Annotated[Number, Range(ge=0, le=1)] = 0.0
    grad_clip: Annotated[Number, Range(gt=0, why=" (or null: no clipping)")] | None = 1.0
    # >= 1: patience 0 would stop before the first epoch (and Ray keeps at least one checkpoint)
    patience: Positive = 15  # epochs without validation improvement before early stopping
    # The validation objective (maximised): a metric name, or a weighted sum such as
    # "0.5*val/ndcg@10 + 0.5*val/auc"; "auto" = what judges the variant's model(s)
    # (`resolved_objective`). Model selection never reads test metrics.
    objective: Str = "auto"
    # Which epoch(s) a model serving both stages is tested at. "joint" = one checkpoint, the
    # objective's best epoch, serving both stages: the unified model the paper describes (one
    # model, no extra serving cost). "per_stage" = two snapshots of the one run: retrieval at its
    # best epoch on the objective's retrieval terms, ranking at its best on the ranking terms,
    # training until both are stale; its results record `selection: per_stage` and tables label
    # them as two snapshots. "auto" (the default) = joint for one model, per stage for the
    # two_stage variant (two separately trained models, each selected on its own terms)
    # (unigrf.training.loop.resolved_selection; docs/ARCHITECTURE.md "Training").
    selection: Literal["auto", "joint", "per_stage"] = "auto"
    seed: Int = 0
    device: Str = "auto"  # auto | cpu | cuda
    # "auto": bf16 autocast where the hardware computes bf16 natively (CUDA with bf16, CPUs with
    # AMX or AVX-512-BF16), else fp32; "fp32" / "bf16" force it (`unigrf.training.precision`).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_workers: Positive = 1  # Ray Train workers (1 and no Ray address: plain loop)
    use_gpu: Bool = False
    keep_checkpoints: Positive = 2  # best-k checkpoints kept by the objective
    log_every: Positive = 50  # steps between the per-step TensorBoard scalars (and loss checks)
    # > 0: also a checkpoint every this many steps inside an epoch, so an hours-long epoch (the
    # paper's datasets on a CPU) resumes where it stopped; the plain loop only
    # (`unigrf.training.in_epoch`). 0: at epoch ends only.
    checkpoint_every_steps: Annotated[Int, Range(ge=0)] = field(default=0, metadata=UNHASHED)


@dataclass(frozen=True)
class EnhancerConfig:
    """Ranking-driven enhancer [SPEC §1.2]; m = 0 disables it."""

    m: Annotated[Int, Range(ge=0)] = 26
    top_k: Positive = 50
    warmup_epochs: Annotated[Int, Range(ge=0)] = 1
    scope: Literal["all", "anchor"] = "all"
    alpha: (
        Annotated[
            Number, Range(ge=0, le=1, says="{key} must be a probability in [0, 1] (or null), got {value!r}")
        ]
        | None
    ) = None  # candidates with like-probability > alpha are not negatives


@dataclass(frozen=True)
class WeighterConfig:
    """Gradient-guided adaptive weighter [SPEC §1.3]."""

    # grad_share: chosen over the loss-ratio weighter (SPEC §1.3's) on pooled validation across
    # three datasets, reports/recipe/README.md "Gradient share"; temperature is loss_ratio's
    kind: Literal["loss_ratio", "fixed", "grad_norm", "grad_share"] = "grad_share"
    temperature: Annotated[Number, Range(gt=0)] = 1.4
    interval: Positive = 20  # steps per averaging window
    # grad_share: every task's weighted gradient on the shared block is raised to at least
    # `share` x the largest task's, its weight at most `max_weight` (unigrf/model/weighter.py)
    share: Annotated[Number, Range(gt=0, le=1)] = field(default=0.5, metadata=HASHED_UNLESS_DEFAULT)
    max_weight: Annotated[Number, Range(ge=1)] = field(default=100.0, metadata=HASHED_UNLESS_DEFAULT)


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[Positive, ...] = (10, 50, 200)
    cascade_top_c: Positive = 100  # retrieval candidates re-ranked in the cascade metric
    cascade_k: Positive = 10
    # > 0: the plain loop keeps an evaluation's finished batches every this many batches, so a
    # pass of hours (the paper's datasets on a CPU) resumes where it stopped
    # (`unigrf.training.eval_progress`). 0: an evaluation runs in one go.
    checkpoint_every_batches: Annotated[Int, Range(ge=0)] = field(default=0, metadata=UNHASHED)
    # users per evaluation batch: a padded batch costs as much as its longest user, so smaller
    # batches waste less (benchmarks/RESULTS.md "Evaluation")
    batch_size: Positive = 64
    # How items scoring exactly equal to the target count (unigrf/evaluation/metrics.py):
    # "pessimistic" ranks them above it (a constant scorer gets 0, not 1); "optimistic" below.
    ties: Literal["pessimistic", "optimistic"] = "pessimistic"
    # The cascade re-ranks retrieval's top C by log P(next) + λ·log P(like)
    # (unigrf.evaluation.cascade_score); every λ here is evaluated in one pass, λ is chosen on
    # validation (cascade NDCG@cascade_k, ties to the smaller λ) and applied to test. 0 = retrieval
    # alone, .inf = the ranking head alone (the cascade's former rule), 1 = the joint probability.
    cascade_lambdas: Annotated[
        tuple[
            Annotated[Number, Range(ge=0, why=" (0 = retrieval alone, .inf = the ranking head alone)")], ...
        ],
        Check(lambda lambdas: len(lambdas) >= 1, "{key} must hold at least one λ, got {value!r}"),
    ] = CASCADE_LAMBDAS


@dataclass(frozen=True)
class ExperimentConfig:
    name: Str = "default"
    results_dir: Str = "results"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)
    weighter: WeighterConfig = field(default_factory=WeighterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> ExperimentConfig:
        """The cross-field rules (one field against another; each field's own type and range is
        its annotation, checked when the config is built: `unigrf.schema`). Returns self."""
        checks = [
            (
                self.enhancer.top_k >= self.enhancer.m,
                f"enhancer.m ({self.enhancer.m}) must be <= enhancer.top_k ({self.enhancer.top_k}): "
                "the m hard negatives are drawn from the top-k retrieved items",
            ),
            (self.eval.cascade_top_c >= self.eval.cascade_k, "eval.cascade_top_c must be >= eval.cascade_k"),
        ]
        # every preset `auto` may resolve to must give a valid shape with the direct overrides
        sizes = (
            sorted({auto_size(0), auto_size(AUTO_SIZE_TINY_BELOW)}) if self.model.size == "auto" else [None]
        )
        for size in sizes:
            _, heads, dim = self.model.resolved_shape(size)
            at = f" (at size {size}, which model.size auto may resolve to)" if size else ""
            checks.append(
                (dim % heads == 0, f"model.dim ({dim}) must be divisible by model.num_heads ({heads}){at}")
            )
        lo, hi = self.data.resolved_rating_scale()
        checks.append((lo < hi, "data.rating_scale must be (low, high) with low < high"))
        like = self.data.resolved_like_threshold()
        checks.append(
            (
                lo < like <= hi,
                f"data.like_threshold ({like:g}) must be in ({lo:g}, {hi:g}] "
                "(data.rating_scale): otherwise every rating, or none, is a like",
            )
        )
        checks.extend(_columns_checks(self.data.columns))
        from unigrf.names import run_name_problem  # here: unigrf.names imports this module

        problem = run_name_problem(self.name)  # a run's directories are named after it
        checks.insert(0, (problem is None, f"name: {problem}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


def load_base_config(path: str | Path | None, where: str, error: type[ConfigError]) -> ExperimentConfig:
    """The `base_config` a search-space or grid file names (None: the defaults); a problem in it
    is `error` naming `where` (the file that names it) and `base_config`."""
    try:
        return load_config(path)
    except ConfigError as err:
        raise error(f"{where}: base_config: {err}") from None


def _columns_checks(columns: ColumnsConfig) -> list[tuple[bool, str]]:
    """Column positions are >= 0, and no two fields read the same column."""
    fields = {name: getattr(columns, name) for name in ("user", "item", "rating", "timestamp")}
    checks = [
        (
            not isinstance(v, int) or v >= 0,
            f"data.columns.{k} must be a column name or a position >= 0, got {v}",
        )
        for k, v in fields.items()
    ]
    seen: dict[Any, str] = {}
    for name, value in fields.items():
        key = int(value) if isinstance(value, int) or (not columns.header and value.isdigit()) else value
        twice = seen.setdefault(key, name)
        checks.append(
            (twice == name, f"data.columns.{twice} and data.columns.{name} both read column {value!r}")
        )
    return checks


# --------------------------------------------------------------------------------------------
# Variants [SPEC §1.4]: a name resolves to which losses are trained and how.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantSpec:
    retrieval: bool  # train the retrieval loss
    ranking: bool  # train the ranking loss
    enhancer: bool  # the enhancer may run (still off when enhancer.m == 0)
    weighter: bool  # adaptive weights (False: fixed equal weights)
    feedback_tokens: bool = True  # False: the sequence is items only (i_1, ..., i_N), as SASRec's


VARIANTS: dict[str, VariantSpec] = {
    "unigrf": VariantSpec(True, True, True, True),
    "wo_enhancer": VariantSpec(True, True, False, True),
    "wo_weighter": VariantSpec(True, True, True, False),
    "wo_both": VariantSpec(True, True, False, False),
    "retrieval_only": VariantSpec(True, False, False, False),
    "ranking_only": VariantSpec(False, True, False, False),
    # two separately trained models (retrieval_only + ranking_only) evaluated together
    "two_stage": VariantSpec(True, True, False, False),
    # the published single-task retriever: items only, no feedback tokens (SASRec / HSTU as in
    # their papers' sequential-recommendation benchmarks)
    "item_only": VariantSpec(True, False, False, False, feedback_tokens=False),
}


def variant_spec(cfg: ExperimentConfig) -> VariantSpec:
    return VARIANTS[cfg.train.variant]


def effective_m(cfg: ExperimentConfig) -> int:
    """The enhancer's m in force for this config (0 when the variant disables it)."""
    return cfg.enhancer.m if variant_spec(cfg).enhancer else 0


# `train.objective: auto`: retrieval-only models are selected on retrieval, ranking-only on
# ranking, and anything serving both stages on both (the two-stage pipeline selects each stage
# on its own term: unigrf.training.loop.selections).
AUTO_OBJECTIVES = {
    (True, False): "val/ndcg@10",
    (False, True): "val/auc",
    (True, True): "0.5*val/ndcg@10 + 0.5*val/auc",
}


def resolve_model_size(cfg: ExperimentConfig, train_interactions: int) -> ExperimentConfig:
    """`cfg` with `model.size: auto` replaced by the preset for data with `train_interactions`
    (unchanged when a preset is set)."""
    if cfg.model.size != "auto":
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, size=auto_size(train_interactions)))


def resolved_objective(cfg: ExperimentConfig) -> str:
    """`train.objective`, with "auto" resolved by the variant (AUTO_OBJECTIVES)."""
    if cfg.train.objective != "auto":
        return cfg.train.objective
    spec = variant_spec(cfg)
    return AUTO_OBJECTIVES[(spec.retrieval, spec.ranking)]


def effective_weighter_kind(cfg: ExperimentConfig) -> str:
    return cfg.weighter.kind if variant_spec(cfg).weighter else "fixed"


# The weighter kinds that read each weighter key (unigrf/model/weighter.py); every other kind
# ignores it. A sweep that searches, or a grid row that sets, a key its weighter never reads
# trains one model many times under different names.
WEIGHTER_KEY_READERS: dict[str, tuple[str, ...]] = {
    "weighter.temperature": ("loss_ratio",),
    "weighter.interval": ("loss_ratio", "grad_norm", "grad_share"),
    "weighter.share": ("grad_share",),
    "weighter.max_weight": ("grad_share",),
}


def unread_reason(cfg: ExperimentConfig, key: str) -> str | None:
    """Why `cfg` never reads the dotted `key`, or None when it does (or the key is not one whose
    readers are known: WEIGHTER_KEY_READERS)."""
    readers = WEIGHTER_KEY_READERS.get(key)
    kind = effective_weighter_kind(cfg)
    if readers is None or kind in readers:
        return None
    if kind != cfg.weighter.kind:
        return f"train.variant {cfg.train.variant} has no adaptive weights"
    return f"weighter.kind is {kind}; only {', '.join(readers)} read it"


# --------------------------------------------------------------------------------------------
# Construction from mappings / YAML / overrides
# --------------------------------------------------------------------------------------------


def config_from_dict(
    data: Mapping[str, Any], *, file: str | Path | None = None, validate: bool = True
) -> ExperimentConfig:
    """The config of a plain nested mapping (a YAML file's, `config_to_dict`'s): every key,
    type and range checked (`unigrf.schema`; errors name the key, and with `file` the file and
    line), then, with `validate`, the cross-field rules (`ExperimentConfig.validate`)."""
    cfg = schema.parse(ExperimentConfig, data, ConfigError, file=file)
    return cfg.validate() if validate else cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML/JSON."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [convert(x) for x in v]
        return v

    return convert(cfg)


def config_to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_hash(cfg: Any) -> str:
    """Stable short hash of a (sub-)config, for cache keys: its `config_to_dict` without the
    fields marked `UNHASHED`, nor the `HASHED_UNLESS_DEFAULT` ones at their default."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v) if _hashed(v, f)}
        if isinstance(v, tuple):
            return [convert(x) for x in v]
        return v

    blob = json.dumps(convert(cfg), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _hashed(cfg: Any, f: dataclasses.Field) -> bool:
    """Whether field `f` of `cfg` enters the hashes: not `UNHASHED`, and a
    `HASHED_UNLESS_DEFAULT` field only away from its default."""
    hashed = f.metadata.get("hashed", True)
    if hashed == HASHED_UNLESS_DEFAULT["hashed"]:
        return getattr(cfg, f.name) != f.default
    return bool(hashed)


def _marked_fields(mark: Any, cfg: Any = None, prefix: str = "") -> dict[str, dataclasses.Field]:
    """{dotted key: field} of the fields whose `hashed` metadata is `mark` (default: of
    `ExperimentConfig`)."""
    cfg = ExperimentConfig() if cfg is None else cfg
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("hashed", True) == mark:
            out[prefix + f.name] = f
        elif dataclasses.is_dataclass(value):
            out.update(_marked_fields(mark, value, f"{prefix}{f.name}."))
    return out


def hashed_unless_default() -> dict[str, Any]:
    """{dotted key: default} of the `HASHED_UNLESS_DEFAULT` fields."""
    return {key: f.default for key, f in _marked_fields(HASHED_UNLESS_DEFAULT["hashed"]).items()}


def unhashed_keys() -> tuple[str, ...]:
    """The dotted keys of the fields marked `UNHASHED`."""
    return tuple(_marked_fields(UNHASHED["hashed"]))


def parse_override(text: str) -> tuple[str, Any]:
    """`"model.num_layers=4"` -> `("model.num_layers", 4)`; the value is a YAML scalar/list.

    A field that takes text gets the text as written unless it is quoted, `null` for a field
    that may be None, or a value of the field's other types (`data.columns.user=0` is the
    position 0): `data.columns.sep=::` is the separator `::`, `data.columns.sep=|` is `|`, and
    `name=1` is the name "1", where YAML would read a mapping, a block scalar and a number.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. model.num_layers=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    annotation = schema.field_annotation(ExperimentConfig, key)
    takes_text = annotation is not None and schema.accepts_str(annotation)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        if takes_text:
            return key, _raw_text(raw)
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    if takes_text and not _keeps_yaml_value(raw, value, annotation):
        return key, _raw_text(raw)
    return key, value


def _keeps_yaml_value(raw: str, value: Any, annotation: Any) -> bool:
    """For a field that takes text: whether YAML's reading of `raw` is what was meant (a quoted
    text, null for an optional field, or a value of one of the field's other types)."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return True
    if value is None:
        return type(None) in typing.get_args(schema.strip(annotation))
    if isinstance(value, str):
        return False  # the raw text itself (YAML may have changed it: `|` reads as "")
    others = [
        a for a in typing.get_args(schema.strip(annotation)) if schema.strip(a) not in (str, type(None))
    ]
    return any(schema.fits(other, value) for other in others)


def _raw_text(raw: str) -> str:
    """The override's text without surrounding blanks, unless it is only blanks (a separator)."""
    return raw.strip() or raw


def apply_overrides(
    cfg: ExperimentConfig, overrides: Mapping[str, Any], *, validate: bool = True
) -> ExperimentConfig:
    """Return a new config with dotted keys replaced, checked like YAML input; `validate=False`
    leaves the cross-field rules to whoever composes several layers of overrides."""
    data = config_to_dict(cfg)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown key {'.'.join(parts[: i + 1])} (in override {key}={value!r})")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown key {key} (in override {key}={value!r})")
        node[parts[-1]] = value
    return config_from_dict(data, validate=validate)


def load_config(
    path: str | Path | None = None, overrides: list[str] | Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply overrides; the
    cross-field rules are checked once, on the result.

    Errors name the file; a key's error in the file names its line.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = load_yaml_mapping(path, "config", ConfigError, empty_ok=True)
    cfg = config_from_dict(data, file=path, validate=False)
    try:
        if overrides:
            pairs = dict(parse_override(o) for o in overrides) if isinstance(overrides, list) else overrides
            cfg = apply_overrides(cfg, pairs, validate=False)
        return cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None
