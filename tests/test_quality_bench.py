"""benchmarks/quality_bench.py on fake report directories with tiny per-user outcomes (no
training): the CSV update and its protocol column, a report's runs as CSV rows, the
backbone-matched pairs, the headline chosen on validation and Bonferroni-corrected, the
same-user-set recomputation for an anchor that evaluates fewer users, and the summary."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml


@pytest.fixture(scope="module")
def bench(benchmark_module):
    return benchmark_module("quality_bench")


def rows(*entries):
    return pd.DataFrame([{"dataset": d, "system": s, "seed": k, "test/ndcg@10": v} for d, s, k, v in entries])


# --------------------------------------------------------------------------------------------
# the CSV
# --------------------------------------------------------------------------------------------


def test_a_run_replaces_only_what_it_measured(bench):
    old = rows(
        ("amazon-mi", "UniGRF-HSTU", 0, 0.05),
        ("amazon-mi", "UniGRF-HSTU", 1, 0.06),
        ("amazon-mi", "SASRec.pytorch", 0, 0.04),
        ("ml-100k", "UniGRF-HSTU", 0, 0.10),
    )
    new = rows(("amazon-mi", "UniGRF-HSTU", 1, 0.07), ("amazon-mi", "item-only SASRec (CE)", 0, 0.08))
    merged = bench.merge_rows(old, new).set_index(["dataset", "system", "seed"])["test/ndcg@10"]
    assert merged.to_dict() == {
        ("amazon-mi", "UniGRF-HSTU", 0): 0.05,  # a seed the run did not measure
        ("amazon-mi", "UniGRF-HSTU", 1): 0.07,  # replaced
        ("amazon-mi", "SASRec.pytorch", 0): 0.04,  # another system of the dataset
        ("ml-100k", "UniGRF-HSTU", 0): 0.10,  # another dataset
        ("amazon-mi", "item-only SASRec (CE)", 0): 0.08,  # new
    }
    assert bench.merge_rows(old, new.iloc[0:0]) is old


def test_rows_from_before_the_protocol_column_are_marked_and_kept(bench, tmp_path):
    path = tmp_path / "quality.csv"
    rows(
        ("ml-100k", "UniGRF-HSTU", 0, 0.10),
        ("ml-100k", "SASRec.pytorch", 0, 0.09),
        ("ml-100k", "popularity", 0, 0.05),
    ).to_csv(path, index=False)
    old = bench.read_table(path)
    assert dict(zip(old["system"], old["protocol"])) == {
        "UniGRF-HSTU": bench.EARLIER,
        "SASRec.pytorch": bench.EARLIER_BESIDE,
        "popularity": bench.EARLIER_BESIDE,
    }
    new = pd.DataFrame([bench._row("ml-100k", "UniGRF-HSTU", 1, "cmd", **{"test/ndcg@10": 0.11})])
    bench.write_table(bench.merge_rows(old, new), path)
    back = bench.read_table(path).set_index(["system", "seed"])
    assert back.loc[("UniGRF-HSTU", 0), "protocol"] == bench.EARLIER  # kept, still marked
    assert back.loc[("UniGRF-HSTU", 1), "protocol"] == bench.CURRENT
    assert list(pd.read_csv(path).columns[:4]) == ["dataset", "system", "seed", "protocol"]


def fake_report(tmp_path, cells):
    """A report directory as the runner writes it: results.csv, configs.yaml, grid.yaml."""
    from unigrf.config import config_to_dict, load_config

    report = tmp_path / "ablations" / "quality-toy"
    report.mkdir(parents=True)
    pd.DataFrame(cells).to_csv(report / "results.csv", index=False)
    cfg = config_to_dict(load_config(None))
    (report / "configs.yaml").write_text(yaml.safe_dump({c["cell"]: cfg for c in cells}))
    (report / "grid.yaml").write_text(yaml.safe_dump({"name": "quality-toy"}))
    return report


def test_a_reports_runs_become_rows_with_validation_selection_and_lambda(bench, tmp_path):
    base = {"dataset": "toy", "backbone": "hstu", "status": "ok", "epochs_run": 20, "best_epoch": 4,
            "time_s": 12.0, "val/ndcg@10": 0.1, "val/auc": 0.7, "test/ndcg@10": 0.09, "test/auc": 0.68,
            "test/cascade_ndcg@10": 0.05, "test/cascade0_ndcg@10": 0.04, "test/num_users": 50}  # fmt: skip
    curve = {"val/cascade_ndcg@10/lambda_0": 0.02, "val/cascade_ndcg@10/lambda_1": 0.03,
             "val/cascade_ndcg@10/lambda_2": 0.03, "val/cascade_ndcg@10/lambda_inf": 0.01}  # fmt: skip
    cells = [
        {**base, **curve, "cell": "hstu/unigrf/toy/seed0", "row": "hstu/unigrf", "variant": "unigrf",
         "seed": 0, "selection": "joint"},
        {**base, "cell": "hstu/item_only/toy/seed0", "row": "hstu/item_only", "variant": "item_only",
         "seed": 0, "selection": "joint"},
        {**base, **curve, "cell": "hstu/unigrf/toy/seed1", "row": "hstu/unigrf", "variant": "unigrf",
         "seed": 1, "selection": "per_stage"},
    ]  # fmt: skip
    report = fake_report(tmp_path, cells)
    # a run directory's metrics.json, where it exists, is the record of the λ
    run_dir = report / "runs" / "hstu__unigrf__toy__seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text('{"cascade_lambda": 0.5}')
    got = bench.report_rows(report, None, "python benchmarks/quality_bench.py --x").set_index(["row", "seed"])
    unified = got.loc[("hstu/unigrf", 0)]
    assert unified["system"] == "UniGRF-HSTU" and unified["protocol"] == bench.CURRENT
    assert unified["selection"] == "joint" and unified["users"] == 50 and unified["epochs"] == 20
    assert unified["val/ndcg@10"] == 0.1 and unified["test/cascade0_ndcg@10"] == 0.04
    assert unified["cascade_lambda"] == 1.0  # the val curve's best; the tie with 2 goes to the smaller
    assert "(grid quality-toy, cell hstu/unigrf/toy/seed0)" in unified["command"]
    assert got.loc[("hstu/unigrf", 1), "cascade_lambda"] == 0.5
    item = got.loc[("hstu/item_only", 0)]
    assert item["system"] == "item-only HSTU (CE)"
    # an untrained head's numbers are not results
    assert math.isnan(item["val/auc"]) and math.isnan(item["test/auc"]) and math.isnan(item["cascade_lambda"])
    assert math.isnan(item["test/cascade0_ndcg@10"])
    assert set(bench.report_rows(report, [1], "c")["seed"]) == {1}


# --------------------------------------------------------------------------------------------
# a fake dataset: rows of two backbones, their outcomes, an anchor, the count model
# --------------------------------------------------------------------------------------------

N_USERS = 60


def outcomes(rng, shift: float, users: np.ndarray | None = None, rank: int | None = None):
    """One run's outcomes: ranks better and like logits higher with `shift`; `rank`: every
    user's target at that rank (a validation NDCG@10 of exactly 1/log2(rank + 2))."""
    from unigrf.evaluation.outcomes import outcomes_frame

    users = np.arange(N_USERS) if users is None else users
    labels = (users % 3 != 0).astype(int)
    logits = rng.normal(size=len(users)) + labels * (1.0 + shift)
    ranks = np.maximum(rng.integers(0, 40, len(users)) - int(20 * shift), 0) if rank is None else rank
    return outcomes_frame(users, np.broadcast_to(ranks, len(users)), labels, logits)


def fake_table(bench, val: dict[str, int], shift: dict[str, float], seeds=(0, 1, 2), dataset="toy"):
    """quality.csv rows of grid rows `val` (row -> its validation rank: lower is a better val
    NDCG@10) whose test outcomes improve with `shift[row]`, and their outcomes (cell -> split ->
    frame); every number is its outcomes' metric."""
    from unigrf.evaluation.outcomes import metrics_from_outcomes

    rng = np.random.default_rng(5)
    out, stored = [], {}
    for row, rank in val.items():
        backbone, variant = row.split("/")
        for seed in seeds:
            frames = {"val": outcomes(rng, 0.0, rank=rank), "test": outcomes(rng, shift[row])}
            stored[f"{row}/{dataset}/seed{seed}"] = frames
            m = {s: metrics_from_outcomes(f, (10,), 10) for s, f in frames.items()}
            values = {f"{s}/{k}": m[s][k] for s in m for k in ("hr@10", "ndcg@10", "mrr", "auc")}
            values = {k: x for k, x in values.items() if bench.defined(variant, k)}
            out.append(bench._row(dataset, bench.system_name(backbone, variant, "full_softmax"), seed, "cmd",
                                  row=row, selection="joint", **values))  # fmt: skip
    return pd.DataFrame(out), stored


def count_floor(bench):
    from unigrf.ablation.aggregate import Floor
    from unigrf.evaluation.outcomes import metrics_from_outcomes

    frame = outcomes(np.random.default_rng(77), -0.3)
    return Floor(
        bench.COUNT_MODEL, {"test/auc": metrics_from_outcomes(frame, (10,), 10)["auc"]}, {"test": frame}
    )


VAL = {  # validation (ranks: lower is better) picks hstu/unigrf and hstu/item_only ...
    "hstu/item_only": 2, "hstu/retrieval_only": 3, "hstu/ranking_only": 8, "hstu/two_stage": 4,
    "hstu/unigrf": 1, "sasrec/item_only": 5, "sasrec/retrieval_only": 6, "sasrec/ranking_only": 8,
    "sasrec/two_stage": 7, "sasrec/unigrf": 3,
}  # fmt: skip
SHIFT = {  # ... while on test sasrec/unigrf and sasrec/item_only are far ahead
    "hstu/item_only": 0.0, "hstu/retrieval_only": 0.0, "hstu/ranking_only": 0.0, "hstu/two_stage": 0.0,
    "hstu/unigrf": 0.2, "sasrec/item_only": 0.8, "sasrec/retrieval_only": 0.0, "sasrec/ranking_only": 0.0,
    "sasrec/two_stage": 0.0, "sasrec/unigrf": 1.0,
}  # fmt: skip


def sasrec_anchor(bench, val: float, test: float, seeds=(0, 1, 2), dataset="toy"):
    return pd.DataFrame(
        [
            bench._row(
                dataset,
                bench.SASREC,
                s,
                "cmd",
                **{"val/ndcg@10": val + 0.001 * s, "test/ndcg@10": test + 0.002 * s, "users": 40},
            )  # fmt: skip
            for s in seeds
        ]
    )


def test_backbone_matched_pairs(bench):
    rows_ = ["hstu/unigrf", "hstu/item_only", "llama/item_only", "sasrec/unigrf"]
    pairs = bench.matched_pairs(rows_)
    for b in ("hstu", "sasrec"):
        mine = [(x, m) for a, x, m in pairs if a == f"{b}/unigrf"]
        assert mine == [
            (f"{b}/item_only", "test/ndcg@10"),
            (f"{b}/retrieval_only", "test/ndcg@10"),
            (f"{b}/two_stage", "test/ndcg@10"),
            (f"{b}/ranking_only", "test/auc"),
            (f"{b}/two_stage", "test/auc"),
        ]
    assert all(a.split("/")[0] == x.split("/")[0] for a, x, _ in pairs)  # never across backbones
    assert not any(a.startswith("llama") for a, _, _ in pairs)  # no UniGRF-Llama row: no comparison


def test_the_headline_is_chosen_on_validation_and_corrected_for_the_choice(bench):
    table, stored = fake_table(bench, VAL, SHIFT)
    table = pd.concat([table, sasrec_anchor(bench, 0.2, 0.3)], ignore_index=True)
    views = bench.build_views("toy", table, stored, count_floor(bench), n_replicates=400)
    comp = views.full
    # test would pick sasrec/unigrf and sasrec/item_only
    assert (
        comp.per_seed("toy", "sasrec/unigrf", "test/ndcg@10").mean()
        > comp.per_seed("toy", "hstu/unigrf", "test/ndcg@10").mean()
    )
    _, chosen = bench.headline(comp, "toy", views.names)
    assert chosen.row.chosen == "hstu/unigrf" and chosen.baseline.chosen == "hstu/item_only"
    # 2 UniGRF rows × (2 backbones × 3 single-task rows + SASRec.pytorch)
    assert chosen.k == 2 * 7 and chosen.level == pytest.approx(1 - 0.05 / 14)
    direct = comp.test("toy", "hstu/unigrf", "hstu/item_only", "test/ndcg@10", 1 - 0.05 / 14)
    assert chosen.p_raw == direct.p_value and chosen.p_value == pytest.approx(min(1.0, 14 * direct.p_value))
    assert (chosen.low, chosen.high) == (direct.low, direct.high)
    assert chosen.test == "bootstrap" and chosen.n_users == N_USERS
    # issue 35's ratios: the validation-chosen rows against the anchor, corrected for the choice
    # among the 2 UniGRF (and 2 item-only) rows: the anchor kept no outcomes, so over seeds
    lines = bench.acceptance(comp, "toy", views.names, chosen.row, None, [], 0)
    line = next(x for x in lines if x.startswith(f"- UniGRF-HSTU / {bench.SASREC}"))
    t = comp.test("toy", "hstu/unigrf", bench.SASREC, "test/ndcg@10", 1 - 0.05 / 2)
    mean_a = comp.per_seed("toy", "hstu/unigrf", "test/ndcg@10").mean()
    mean_b = comp.per_seed("toy", bench.SASREC, "test/ndcg@10").mean()
    assert t.test == "paired"
    assert (
        f"{mean_a / mean_b:.2f}× [{1 + t.low / mean_b:.2f}, {1 + t.high / mean_b:.2f}]‡ at 97.5% (k = 2)"
        in line
    )
    assert f"p × k = {min(1.0, 2 * t.p_value):.3f}" in line
    assert any(x.startswith(f"- item-only HSTU (CE) / {bench.SASREC}") and "(k = 2)" in x for x in lines)
    # a per-stage UniGRF row (two snapshots) is not a candidate of the headline
    table.loc[table["row"] == "hstu/unigrf", "selection"] = "per_stage"
    views = bench.build_views("toy", table, stored, None, n_replicates=200)
    _, chosen = bench.headline(views.full, "toy", views.names)
    assert chosen.row.chosen == "sasrec/unigrf" and chosen.k == 1 * 7
    assert views.names["hstu/unigrf"] == "UniGRF-HSTU (two snapshots)"


def test_an_anchor_on_fewer_users_is_compared_on_those_users(bench):
    """MovieTweetings: SASRec.pytorch evaluates the users with >= 4 interactions; the project's
    rows are recomputed on them from their outcomes, equal to a direct computation there."""
    table, stored = fake_table(bench, VAL, SHIFT)
    table = pd.concat([table, sasrec_anchor(bench, 0.9, 0.3)], ignore_index=True)
    users = np.arange(0, N_USERS, 2)
    views = bench.build_views(
        "toy", table, stored, count_floor(bench), {bench.SASREC: users}, n_replicates=200, ks=(10,)
    )
    assert views.subset_anchors == [bench.SASREC]
    assert bench.SASREC not in set(views.full.ok["row"])  # never compared on the other users
    for seed in range(3):
        sub = stored[f"hstu/unigrf/toy/seed{seed}"]["test"].set_index("user").loc[users]
        rank = sub["rank"].to_numpy()
        direct = np.mean(np.where(rank < 10, 1 / np.log2(rank + 2), 0))
        got = views.subset.per_seed("toy", "hstu/unigrf", "test/ndcg@10")[seed]
        assert got == pytest.approx(direct)
        assert views.full.per_seed("toy", "hstu/unigrf", "test/ndcg@10")[seed] != pytest.approx(direct)
    t = views.subset.test("toy", "hstu/unigrf", "hstu/item_only", "test/ndcg@10")
    assert t.test == "bootstrap" and t.n_users == len(users)
    # the anchor's validation (on its users) beats the best project baseline's on the same users:
    # it is the chosen baseline, and the test comparison is on its users
    _, chosen = bench.headline(views.full, "toy", views.names, views.subset, views.subset_anchors)
    assert chosen.baseline.chosen == bench.SASREC and chosen.k == 2 * 7
    assert chosen.mean_row == pytest.approx(
        views.subset.per_seed("toy", "hstu/unigrf", "test/ndcg@10").mean()
    )
    text = bench.dataset_summary(
        "toy",
        table,
        stored,
        count_floor(bench),
        subset_users={bench.SASREC: users},
        n_replicates=200,
        ks=(10,),
    )
    assert f"The same users as {bench.SASREC} (30 users" in text
    assert f"UniGRF-HSTU / {bench.SASREC}, test NDCG@10 on its 30 users" in text


def test_the_summary_renders_every_part_and_never_compares_earlier_rows(bench):
    table, stored = fake_table(bench, VAL, SHIFT)
    earlier = pd.DataFrame(
        [
            {
                "dataset": "toy",
                "system": "UniGRF-Llama",
                "seed": s,
                "protocol": bench.EARLIER,
                "status": "ok",
                "val/ndcg@10": 0.9,
                "test/ndcg@10": 0.9,
            }
            for s in range(3)
        ]  # fmt: skip
    )
    failed = pd.DataFrame(
        [bench._row("toy", "ranking-only HSTU", 7, "c", row="hstu/ranking_only", status="error: x")]
    )
    table = pd.concat([table, earlier, failed], ignore_index=True)
    text = bench.dataset_summary(
        "toy", table, stored, count_floor(bench), context=["Tokens per epoch: x"], n_replicates=200
    )
    for part in ("## Mean ± std over seeds", "Tokens per epoch: x", "## Backbone-matched comparisons",
                 "## Headline", "## Acceptance (issue 35)", "Bonferroni"):  # fmt: skip
        assert part in text
    line = next(x for x in text.splitlines() if x.startswith("| UniGRF-Llama |"))
    assert line.startswith("| UniGRF-Llama | earlier | 3 |")
    assert "Llama" not in text.split("## Backbone-matched comparisons")[1]  # shown, never compared/chosen
    assert "**UniGRF-HSTU**" in text and "**item-only HSTU (CE)**" in text
    assert "SASRec.pytorch: not run on this dataset (n/a)" in text
    assert (
        "UniGRF-HSTU test AUC − count model:" in text
        and "ranking-only SASRec test AUC − count model:" in text
    )
    # the failed run is not a seed of the table
    ranking = next(x for x in text.splitlines() if x.startswith("| ranking-only HSTU |"))
    assert ranking.startswith("| ranking-only HSTU | current | 3 |")


def test_a_failed_run_is_not_a_seed_of_the_table(bench):
    frame = pd.DataFrame(
        [
            bench._row(
                "ml-100k",
                "ranking-only HSTU",
                s,
                "c",
                row="hstu/ranking_only",
                status=st,
                epochs=e,
                wall_s=w,
                **{"test/auc": a},
            )
            for s, st, e, w, a in (
                (0, "ok", 10, 100.0, 0.8),
                (1, "failed", 1, 5.0, math.nan),
                (2, "ok", 30, 300.0, 0.82),
            )
        ]  # fmt: skip
    )
    text = bench.dataset_summary("ml-100k", frame, n_replicates=200)
    line = next(x for x in text.splitlines() if x.startswith("| ranking-only HSTU"))
    assert line.startswith("| ranking-only HSTU | current | 2 | ")
    assert line.endswith("| 20 ± 14 | — | 200 ± 141 |") and "0.8100 ± 0.0141" in line


# --------------------------------------------------------------------------------------------
# SASRec.pytorch fed the project's sequences
# --------------------------------------------------------------------------------------------


def sequences(max_len: int = 50):
    """3 users of 3, 5 and 4 interactions (items 1..9)."""
    from unigrf.data.sequences import SequenceData

    items = [np.array([5, 2, 4]), np.array([1, 1, 7, 3, 2]), np.array([9, 8, 7, 6])]
    return SequenceData.from_arrays(items, [np.full(len(x), 4.0) for x in items], max_len=max_len)


def test_the_anchor_reads_the_projects_sequences_in_their_order(bench, tmp_path):
    data = sequences()
    path = bench.write_sequences_csv(data, tmp_path / "mt.csv")
    assert list(bench.anchor_users(data)) == [1, 2]  # >= 4 interactions
    prep = bench.anchor.ANCHOR_DIR / "prep.py"
    if not prep.exists():
        pytest.skip("SASRec.pytorch anchor not found beside the repository")
    subprocess.run(
        [sys.executable, str(prep), str(path), "mt"], cwd=tmp_path, check=True, capture_output=True
    )
    lines = (tmp_path / "data" / "mt.txt").read_text().split()
    pairs = list(zip(map(int, lines[::2]), map(int, lines[1::2])))
    # the anchor's user k + 1 is the project's user k, each user's items in the project's order
    # (prep.py maps items to 1..N in sorted order: here the project's own 1..9)
    got = {u: [i for uu, i in pairs if uu == u] for u in (1, 2, 3)}
    assert got == {u + 1: list(data.items[data.offsets[u] : data.offsets[u + 1]]) for u in range(3)}


def test_the_tokens_line_reads_the_window_schemes(bench):
    import window_tokens

    data = sequences(max_len=2)  # histories longer than max_len: the last window drops some
    line = bench.tokens_line(data, "all")
    by = {r["scheme"]: r for r in window_tokens.rows(data)}
    before, after = by["last"]["retrieval targets / epoch"], by["all"]["retrieval targets / epoch"]
    # every training item but each user's first is a retrieval target once per epoch after
    assert before < after == data.num_train_interactions - data.num_users
    assert f"retrieval targets {before:,} → {after:,} (67% → 100%)" in line
    assert f"ranking targets {by['last']['ranking targets / epoch']:,} → " in line
    assert "max_len 2" in line and f"{data.num_train_interactions:,} training interactions" in line
    assert "3 users" in bench.data_line(data) and "like threshold 4" in bench.data_line(data)


def test_the_anchor_source_is_registered_for_the_block_only(bench, tmp_path):
    assert "mt" not in bench.anchor.DATASETS
    with bench.anchor_source("mt", tmp_path / "x.csv"):
        assert bench.anchor.DATASETS["mt"] == tmp_path / "x.csv"
    assert "mt" not in bench.anchor.DATASETS
    with pytest.raises(RuntimeError), bench.anchor_source("ami", tmp_path / "y.csv"):
        raise RuntimeError
    assert bench.anchor.DATASETS["ami"].name.startswith("reviews_")  # restored


def test_the_grid_is_backbone_matched_with_declared_seeds(bench):
    from unigrf.ablation.grid import load_grid

    spec = load_grid(bench.GRID)
    assert spec.seeds == (0, 1, 2)
    assert [d.name for d in spec.datasets] == list(bench.DATASETS)
    assert {(r.backbone, r.variant) for r in spec.rows} == {
        (b, v) for b in ("hstu", "llama", "sasrec") for v in bench.VARIANT_ORDER
    }
    assert {"val/ndcg@10", "val/auc"} <= set(spec.metrics)
    for d in spec.datasets:  # data keys only
        assert all(k.startswith("data.") for k in d.overrides)
    assert not spec.overrides


def test_stored_outcomes_of_another_run_are_left_out(bench):
    """A comparison never mixes the CSV's numbers with another run's users: outcomes whose
    NDCG@10 is not the CSV's are named and not used (the test falls back to seeds only)."""
    table, stored = fake_table(
        bench, {"hstu/unigrf": 1, "hstu/item_only": 2}, {"hstu/unigrf": 0.5, "hstu/item_only": 0.0}
    )
    table.loc[(table["row"] == "hstu/item_only") & (table["seed"] == 1), "test/ndcg@10"] += 0.01
    views = bench.build_views("toy", table, stored, None, n_replicates=200)
    assert views.dropped == ["hstu/item_only/toy/seed1"]
    assert views.full.test("toy", "hstu/unigrf", "hstu/item_only", "test/ndcg@10").test == "paired"
    text = bench.dataset_summary("toy", table, stored, n_replicates=200)
    assert "stored outcomes left out (they do not give the CSV's numbers): hstu/item_only/toy/seed1" in text
