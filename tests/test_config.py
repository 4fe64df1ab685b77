import pytest
import yaml

from unigrf.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_hash,
    config_to_yaml,
    effective_m,
    effective_weighter_kind,
    load_config,
    parse_override,
    unread_reason,
)


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.size == "auto"
    # max_len and like_threshold follow the data unless set (test_defaults_that_follow_the_data)
    assert cfg.data.max_len is None and cfg.data.like_threshold is None
    assert cfg.data.resolved_max_len(derived=70) == 70 and cfg.data.resolved_like_threshold() == 4.0
    with pytest.raises(ValueError, match="data.max_len is null: it is derived from the data"):
        cfg.data.resolved_max_len()


def test_auto_size_follows_the_datas_scale():
    """`model.size: auto` is tiny below the threshold of training interactions, small from it
    on; a preset is left alone; an unresolved auto shape is a clear error."""
    from unigrf.config import AUTO_SIZE_TINY_BELOW, resolve_model_size

    cfg = load_config()
    small_data = resolve_model_size(cfg, AUTO_SIZE_TINY_BELOW - 1)
    assert small_data.model.size == "tiny" and small_data.model.resolved_shape() == (1, 1, 32)
    assert resolve_model_size(cfg, AUTO_SIZE_TINY_BELOW).model.resolved_shape() == (2, 2, 64)
    base = load_config(overrides=["model.size=base"])
    assert resolve_model_size(base, 10).model.size == "base"
    with pytest.raises(ValueError, match="model.size is auto"):
        cfg.model.resolved_shape()
    # direct overrides must suit every preset auto may pick: 3 heads divide neither 32 nor 64
    with pytest.raises(
        ConfigError,
        match=r"must be divisible by model.num_heads \(3\) \(at size (small|tiny), which model.size auto",
    ):
        load_config(overrides=["model.num_heads=3"])


def test_dataset_defaults():
    cfg = load_config(overrides=["data.dataset=ml-100k"])
    assert cfg.data.resolved_k_core() == 0 and cfg.data.resolved_rating_scale() == (1.0, 5.0)
    cfg = load_config(overrides=["data.dataset=amazon-books"])
    assert cfg.data.resolved_k_core() == 5
    cfg = load_config(overrides=["data.dataset=movietweetings"])
    assert cfg.data.resolved_k_core() == 0 and cfg.data.resolved_rating_scale() == (0.0, 10.0)
    # an explicit max_len wins over the data's
    assert load_config(overrides=["data.max_len=120"]).data.resolved_max_len(derived=50) == 120


def test_like_threshold_follows_the_rating_scale():
    """null: the place of 4 on 1-5 stars, 0.75 of the way up the scale; ratings come in steps,
    so 7.5 on 0-10 and 3.875 on half stars label exactly as rating >= 8 and >= 4. An explicit
    threshold wins and is still checked against the scale."""

    def like(*overrides: str) -> float:
        return load_config(overrides=list(overrides)).data.resolved_like_threshold()

    assert like() == like("data.dataset=ml-100k") == 4.0
    assert like("data.dataset=ml-20m") == 3.875
    assert like("data.dataset=movietweetings") == like("data.rating_scale=[0, 10]") == 7.5
    assert like("data.rating_scale=[0, 100]") == 75.0
    assert like("data.dataset=movietweetings", "data.like_threshold=7") == 7.0
    with pytest.raises(ConfigError, match=r"data\.like_threshold \(11\) must be in \(0, 10\]"):
        load_config(overrides=["data.dataset=movietweetings", "data.like_threshold=11"])


def test_max_len_follows_the_training_lengths():
    """null: the 95th percentile of the users' training lengths, rounded up to a multiple of 10,
    within [50, 200] (the values the recipe's datasets were tuned at: ML-100K 200, Amazon MI 50)."""
    from unigrf.config import MAX_LEN_BOUNDS, derive_max_len, length_quantile

    assert length_quantile(range(1, 101)) == 95 and length_quantile([7]) == 7 and length_quantile([]) == 0
    assert derive_max_len(range(1, 101)) == 100  # 95 -> 100
    assert derive_max_len([61] * 95 + [1000] * 5) == 70  # the top 5 % do not count
    assert derive_max_len([61] * 94 + [1000] * 6) == 200  # capped
    assert derive_max_len([3, 4, 12, 40]) == MAX_LEN_BOUNDS[0] == 50
    assert derive_max_len([]) == 50


def test_yaml_roundtrip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: llama\n  size: base\ntrain:\n  lr: 0.01\n")
    cfg = load_config(path, ["model.num_layers=3", "train.epochs=2", "eval.ks=[5, 10]"])
    assert cfg.model.backbone == "llama" and cfg.model.resolved_shape() == (3, 4, 128)
    assert cfg.train.epochs == 2 and cfg.eval.ks == (5, 10)
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(cfg))
    assert load_config(again) == cfg
    assert config_hash(load_config(again)) == config_hash(cfg)


def test_int_promoted_to_float():
    cfg = load_config(overrides=["train.lr=1"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.num_layerz=4", "model.num_layerz"),
        ("modle.size=tiny", "modle"),
        ("model.num_layers=four", "model.num_layers"),
        ("model.backbone=gpt", "model.backbone"),
        ("train.epochs=true", "train.epochs"),
        ("enhancer.m=-1", "enhancer.m"),
        ("model.dim=33", "model.dim"),
        ("novalue", "KEY=VALUE"),
        ("eval.cascade_lambdas=[0, -1]", "eval.cascade_lambdas"),
        ("eval.cascade_lambdas=[.nan]", "eval.cascade_lambdas"),
        ("eval.cascade_lambdas=[]", "eval.cascade_lambdas"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(overrides=[override])


def test_bad_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbone: hstu\n  size: [tiny\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:4: invalid YAML: expected ',' or ']'"):
        load_config(path)
    path.write_text("model:\n  sizee: tiny\n")
    with pytest.raises(
        ConfigError,
        match=r"bad\.yaml:2: unknown key model\.sizee \(valid keys under model: attention_dropout, backbone, ",
    ):
        load_config(path)


def test_parse_override_values():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a.b=hello") == ("a.b", "hello")


@pytest.mark.parametrize(
    "override, value",
    [
        # text fields take the text as written, where YAML would read a mapping, fail, or
        # read a block scalar
        ("data.columns.sep=::", "::"),
        ("data.columns.sep=,", ","),
        ("data.columns.sep=|", "|"),
        ("data.columns.sep=;", ";"),
        ("data.columns.sep=\t", "\t"),  # a TAB (the shell's $'\t'): blanks only, kept
        ("data.columns.sep= ", " "),
        ("data.columns.sep='::'", "::"),  # quoted: YAML's reading
        ("name=1", "1"),
        ("name=2024-01-01", "2024-01-01"),
        ("data.path=null", None),  # null for a field that may be None
        ("data.path=~/ratings.csv", "~/ratings.csv"),
        ("data.columns.user=0", 0),  # a column position: the field's int
        ("data.columns.user=uid", "uid"),
        ("data.columns.user=true", "true"),  # not an int: the text
        ("model.num_layers=4", 4),  # not a text field: YAML as before
        ("unknown.key=::", {":": None}),  # unknown keys are left to apply_overrides to refuse
    ],
)
def test_text_fields_take_the_override_as_written(override, value):
    assert parse_override(override) == (override.split("=", 1)[0], value)


def test_column_positions_and_a_two_character_separator_from_the_command_line():
    cfg = load_config(
        overrides=[
            "data.dataset=csv",
            "data.columns.header=false",
            "data.columns.sep=::",
            "data.columns.user=0",
            "data.columns.item=1",
            "data.columns.rating=2",
            "data.columns.timestamp=3",
        ]
    )
    assert (cfg.data.columns.sep, cfg.data.columns.user, cfg.data.columns.timestamp) == ("::", 0, 3)
    with pytest.raises(ConfigError, match=r"data\.columns\.user must be a column name or a position >= 0"):
        load_config(overrides=["data.columns.user=-1"])
    with pytest.raises(ConfigError, match=r"data\.columns\.user and data\.columns\.item both read column 1"):
        load_config(overrides=["data.columns.user=1", "data.columns.item=1"])
    with pytest.raises(ConfigError, match=r"data\.columns\.header: expected true/false"):
        load_config(overrides=["data.columns.header=no way"])


def test_train_windows_is_a_choice():
    assert load_config().data.train_windows == "all"
    assert load_config(overrides=["data.train_windows=last"]).data.train_windows == "last"
    with pytest.raises(ConfigError, match=r"data\.train_windows: 'every' is not one of"):
        load_config(overrides=["data.train_windows=every"])


def test_variants_resolve():
    cfg = load_config(overrides=["enhancer.m=8"])
    assert effective_m(cfg) == 8 and effective_weighter_kind(cfg) == "grad_share"
    cfg = apply_overrides(cfg, {"train.variant": "wo_both"})
    assert effective_m(cfg) == 0 and effective_weighter_kind(cfg) == "fixed"
    cfg = apply_overrides(cfg, {"train.variant": "wo_weighter"})
    assert effective_m(cfg) == 8 and effective_weighter_kind(cfg) == "fixed"


def test_every_weighter_key_has_its_readers_named():
    """A key added to WeighterConfig must say which kinds read it (config.WEIGHTER_KEY_READERS),
    and only kinds that exist may be named."""
    import dataclasses
    import typing

    from unigrf.config import WEIGHTER_KEY_READERS, WeighterConfig

    keys = {f"weighter.{f.name}" for f in dataclasses.fields(WeighterConfig) if f.name != "kind"}
    assert set(WEIGHTER_KEY_READERS) == keys
    kinds = set(typing.get_args(typing.get_type_hints(WeighterConfig)["kind"]))
    assert all(set(readers) <= kinds for readers in WEIGHTER_KEY_READERS.values())


def test_which_weighter_keys_a_config_reads():
    """The default weighter (grad_share) reads share and max_weight, not the loss-ratio
    temperature; a variant without adaptive weights reads none; an unknown key is not judged."""
    cfg = load_config()
    assert cfg.weighter.kind == "grad_share"
    assert unread_reason(cfg, "weighter.share") is None and unread_reason(cfg, "weighter.interval") is None
    assert (
        unread_reason(cfg, "weighter.temperature") == "weighter.kind is grad_share; only loss_ratio read it"
    )
    assert unread_reason(cfg, "model.dropout") is None
    lr = apply_overrides(cfg, {"weighter.kind": "loss_ratio"})
    assert unread_reason(lr, "weighter.temperature") is None
    assert unread_reason(lr, "weighter.max_weight") == "weighter.kind is loss_ratio; only grad_share read it"
    fixed = apply_overrides(cfg, {"weighter.kind": "fixed"})
    assert (
        unread_reason(fixed, "weighter.interval")
        == "weighter.kind is fixed; only loss_ratio, grad_norm, grad_share read it"
    )
    single = apply_overrides(cfg, {"train.variant": "retrieval_only"})
    assert unread_reason(single, "weighter.share") == "train.variant retrieval_only has no adaptive weights"


def test_exponent_floats_without_a_dot_are_numbers():
    """YAML 1.1 reads `1e-3` as a string; a float field takes it as the number it means."""
    cfg = load_config(None, ["train.lr=1e-3", "loss.temperature=5E-2"])
    assert cfg.train.lr == 0.001 and cfg.loss.temperature == 0.05
    with pytest.raises(ConfigError, match="train.lr: expected a number, got 'fast'"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(None, ["train.epochs=1e3"])


def test_auto_objective_judges_what_the_variant_trains():
    from unigrf.config import resolved_objective

    def objective(variant: str, value: str = "auto") -> str:
        return resolved_objective(load_config(None, [f"train.variant={variant}", f"train.objective={value}"]))

    assert objective("item_only") == objective("retrieval_only") == "val/ndcg@10"
    assert objective("ranking_only") == "val/auc"
    for variant in ("unigrf", "wo_both", "two_stage"):
        assert objective(variant) == "0.5*val/ndcg@10 + 0.5*val/auc"
    assert objective("unigrf", "val/mrr") == "val/mrr"  # an explicit objective is kept


def test_cascade_lambdas_default_and_infinity_round_trip(tmp_path):
    import math

    from unigrf.evaluation.cascade_score import DEFAULT_LAMBDAS

    cfg = load_config()
    assert (
        cfg.eval.cascade_lambdas == DEFAULT_LAMBDAS
        and DEFAULT_LAMBDAS[0] == 0
        and DEFAULT_LAMBDAS[-1] == math.inf
    )
    cfg = load_config(overrides=["eval.cascade_lambdas=[0, 1, .inf]"])
    assert cfg.eval.cascade_lambdas == (0.0, 1.0, math.inf)
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(cfg))  # YAML writes inf as .inf
    assert load_config(path).eval.cascade_lambdas == (0.0, 1.0, math.inf)
    assert config_hash(load_config(path)) == config_hash(cfg)


def test_config_hashes_are_the_ones_the_runs_and_caches_were_keyed_by():
    """Run identities and the prepared-data cache key are `config_hash`es: the schema layer must
    build the same values (ints as ints, numbers as floats, lists as tuples), so the same
    config hashes as it did when those runs and caches were written. Every field of these
    sections is set, so a changed default cannot move them; the literals are the hashes the
    previous parser (config._coerce) gave."""
    cfg = load_config(
        None,
        [
            "enhancer.m=8", "enhancer.top_k=20", "enhancer.warmup_epochs=2", "enhancer.scope=anchor",
            "enhancer.alpha=0.5", "weighter.kind=grad_norm", "weighter.temperature=2", "weighter.interval=5",
            "loss.retrieval=sampled_softmax", "loss.sampler=in_batch", "loss.num_negatives=64",
            "loss.logq_correction=false", "loss.temperature=1", "loss.gbce_t=0.5", "loss.chunk_logits=1000",
            "eval.ks=[5, 20]", "eval.cascade_top_c=50", "eval.cascade_k=5", "eval.batch_size=16",
            "eval.ties=optimistic", "eval.cascade_lambdas=[0, 1, .inf]", "data.columns.user=0",
            "data.columns.item=item_id", "data.columns.rating=2", "data.columns.timestamp=ts",
            "data.columns.sep=::", "data.columns.header=false",
        ],
    )  # fmt: skip
    assert config_hash(cfg.enhancer) == "195274636431c3ab"
    assert config_hash(cfg.weighter) == "93459c80dcf3dbca"
    assert config_hash(cfg.loss) == "3e0abdbaa7ed6526"
    assert config_hash(cfg.eval) == "c0a7768b4febad73"
    assert config_hash(cfg.data.columns) == "156883162c61128b"
    assert isinstance(cfg.loss.temperature, float) and isinstance(cfg.eval.ks, tuple)
    assert cfg.data.columns.user == 0 and cfg.data.columns.rating == 2  # positions stay ints


def test_progress_saving_keys_enter_no_hash():
    """`train.checkpoint_every_steps` and `eval.checkpoint_every_batches` say only how often a
    long run saves its progress: every hash a run, a cache or a grid cell is keyed by is the one
    it had before they existed (the literals: this config's hashes at e848af7), whatever they are."""
    from unigrf.run_identity import UNHASHED_KEYS, computation_hash, identity_hash, portable_hash

    assert set(UNHASHED_KEYS) == {"train.checkpoint_every_steps", "eval.checkpoint_every_batches"}
    # the weighter named: these hashes are the loss-ratio weighter's, whatever the default
    base = [
        "data.dataset=ml-100k",
        "data.data_dir=../shared/data/ml-100k",
        "train.variant=unigrf",
        "weighter.kind=loss_ratio",
    ]
    for extra in ([], ["train.checkpoint_every_steps=7", "eval.checkpoint_every_batches=3"]):
        cfg = load_config(None, [*base, *extra])
        hashes = (config_hash(cfg), portable_hash(cfg), computation_hash(cfg), identity_hash(cfg))
        assert hashes == ("f5445dc7e5419ab6", "a2646be4cc6acb59", "850ac918a41be774", "53aad818f907daca")
        assert (config_hash(cfg.train), config_hash(cfg.eval)) == ("487c43cddf72acc1", "69663d019f88cccb")
    assert "checkpoint_every_steps" in config_to_yaml(cfg)  # written with the run, only not hashed


def test_keys_added_with_a_default_that_reproduces_old_runs_are_hashed_only_when_set():
    """`weighter.share` and `weighter.max_weight` (the grad_share weighter's knobs) came after
    runs, caches and grid cells were keyed: at their defaults every hash is the one it was
    (the literals: this config's hashes at e848af7), and a stored config without them has the
    same identity; set to another value, they are hashed like any key."""
    from unigrf.config import hashed_unless_default
    from unigrf.run_identity import computation_hash, identity, identity_hash, portable_hash

    assert hashed_unless_default() == {"weighter.share": 0.5, "weighter.max_weight": 100.0}
    # the weighter named: these hashes are the loss-ratio weighter's, whatever the default
    base = [
        "data.dataset=ml-100k",
        "data.data_dir=../shared/data/ml-100k",
        "train.variant=unigrf",
        "weighter.kind=loss_ratio",
    ]
    cfg = load_config(None, base)
    hashes = (config_hash(cfg), portable_hash(cfg), computation_hash(cfg), identity_hash(cfg))
    assert hashes == ("f5445dc7e5419ab6", "a2646be4cc6acb59", "850ac918a41be774", "53aad818f907daca")
    assert (
        config_hash(load_config(None, [*base, "weighter.share=0.5", "weighter.max_weight=100"])) == hashes[0]
    )
    stored = yaml.safe_load(config_to_yaml(cfg))
    del stored["weighter"]["share"], stored["weighter"]["max_weight"]  # a run from before the keys
    assert identity(stored) == identity(cfg) and computation_hash(stored) == hashes[2]
    for extra in ("weighter.share=0.25", "weighter.max_weight=10"):
        other = load_config(None, [*base, extra])
        assert config_hash(other) != hashes[0] and identity_hash(other) != hashes[3]
        assert computation_hash(other) != hashes[2]


@pytest.mark.parametrize(("override", "message"), [("weighter.share=0", "share"), ("weighter.share=1.5", "share"),
                                                   ("weighter.max_weight=0.5", "max_weight")])  # fmt: skip
def test_grad_share_knobs_are_range_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
