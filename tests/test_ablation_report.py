"""Report rendering on hand-made stored results: tables (mean ± std, bold best, reference,
change and p-value), provenance lines, LaTeX, figures, and `unigrf report DIR` rebuilding the
same report from the stored files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from unigrf.ablation.grid import parse_grid
from unigrf.ablation.report import ReportError, load_inputs, store_inputs, write_report
from unigrf.cli import main

NDCG = {
    "hstu/unigrf": [0.30, 0.32, 0.31],
    "hstu/wo_both": [0.26, 0.29, 0.25],
    "hstu/retrieval_only": [0.33, 0.34, 0.35],
}
AUC = {
    "hstu/unigrf": [0.71, 0.72, 0.70],
    "hstu/wo_both": [0.69, 0.70, 0.68],
    "hstu/retrieval_only": [0.9, 0.9, 0.9],
}


def make_report_dir(tmp_path, with_history=True):
    spec = parse_grid(
        {
            "name": "hand",
            "description": "hand-made",
            "variants": ["unigrf", "wo_both", "retrieval_only"],
            "seeds": 3,
            "reference": "hstu/unigrf",
            "metrics": ["test/ndcg@10", "test/hr@10", "test/auc"],
            "peaks": {"retrieval": "val/ndcg@10", "ranking": "val/auc"},
            "figures": [{"kind": "curves", "metrics": ["val/ndcg@10", "val/auc"]}],
        }
    )
    results, hist = [], []
    for cell in spec.expand():
        ndcg, auc = NDCG[cell.row][cell.seed], AUC[cell.row][cell.seed]
        results.append(
            {
                **cell.identity(),
                "status": "ok",
                "time_s": 10.0,
                "epoch_time_s": 8.0 + cell.seed,
                "epochs_run": 4,
                "test/ndcg@10": ndcg,
                "test/hr@10": 2 * ndcg,
                "test/auc": auc,
            }
        )
        for epoch in range(4):
            # retrieval peaks at epoch 3 (1-based), ranking at 2
            hist.append(
                {
                    "cell": cell.name,
                    "epoch": epoch,
                    "val/ndcg@10": ndcg - abs(epoch - 2) * 0.01,
                    "val/auc": auc - abs(epoch - 1) * 0.01,
                    # the weighter's weights: two tasks except for the retrieval-only row
                    **(
                        {"weights/retrieval": 1.0}
                        if cell.variant == "retrieval_only"
                        else {
                            "weights/retrieval": 1.0 + 0.1 * epoch,
                            "weights/retrieval_min": 0.9 + 0.1 * epoch,
                            "weights/retrieval_max": 1.05 + 0.1 * epoch,
                            "weights/ranking": 1.0 - 0.1 * epoch,
                        }
                    ),
                }
            )
    meta = {
        "command": "unigrf ablate hand.yaml --seeds 3",
        "git_commit": "0123abc",
        "wall_s": 75.0,
        "budget": {"train.epochs": [4], "model.size": ["tiny"]},
    }
    datasets = {
        "synthetic": {
            "num_users": 100,
            "num_items": 40,
            "num_interactions": 2000,
            "popularity": {"ndcg@10": 0.05, "hr@10": 0.1, "mrr": 0.04},
            "oracle": {"ndcg@10": 0.5, "hr@10": 0.7, "mrr": 0.45, "auc": 0.9},
        }
    }
    out = tmp_path / "ablations" / "hand"
    store_inputs(out, spec, pd.DataFrame(results), pd.DataFrame(hist if with_history else []), meta, datasets)
    return out


def test_report_tables_provenance_and_figures(tmp_path):
    out = make_report_dir(tmp_path)
    rendered = write_report(out)
    md = (out / "report.md").read_text()
    assert md == rendered.markdown
    # provenance
    for text in (
        "synthetic (100 users, 40 items, 2,000 interactions)",
        "leave-one-out",
        "full ranking",
        "history masked",
        "0, 1, 2 (3 per row)",
        "train.epochs = 4",
        "0123abc",
        "`unigrf ablate hand.yaml --seeds 3`",
    ):
        assert text in md, text
    # main table: mean ± std, best bold, reference marked, untrained ranking head blanked
    assert "| hstu/unigrf † | 3 | 0.3100 ± 0.0100 |" in md
    assert f"**{np.mean(NDCG['hstu/retrieval_only']):.4f} ± 0.0100**" in md
    ro_line = next(line for line in md.splitlines() if line.startswith("| hstu/retrieval_only | 3"))
    # AUC of a retrieval-only model is not a result; seconds per epoch (8, 9, 10 s over 4 epochs)
    assert ro_line.rstrip().endswith("| — | 2.25 ± 0.25 |")
    assert "**0.7100 ± 0.0100**" in md  # best AUC is unigrf's, not the untrained head's 0.9
    # popularity row beside the retrieval metrics
    assert "| popularity (train counts) | — | 0.0500 | 0.1000 | — |" in md
    # and the synthetic generator's oracle (the ceiling) under it, ranking included, never bold
    assert "| oracle (true distribution) | — | 0.5000 | 0.7000 | 0.9000 |" in md
    # change against the reference: the paired t-test's interval on the % scale, and its p-value
    # Holm-corrected over the column's two comparisons (wo_both, retrieval_only)
    test = stats.ttest_rel(NDCG["hstu/wo_both"], NDCG["hstu/unigrf"])
    other = stats.ttest_rel(NDCG["hstu/retrieval_only"], NDCG["hstu/unigrf"]).pvalue
    low, high = (100 * v / 0.31 for v in test.confidence_interval(0.95))
    p_holm = min(1.0, 2 * test.pvalue) if test.pvalue <= other else min(1.0, max(2 * other, test.pvalue))
    rel = (np.mean(NDCG["hstu/wo_both"]) - 0.31) / 0.31 * 100
    # ‡: these runs kept no per-user outcomes, so the interval covers the seeds only
    assert f"| hstu/wo_both | {rel:+.1f}% [{low:+.1f}, {high:+.1f}]‡ (p = {p_holm:.3f})" in md
    assert p_holm > test.pvalue  # the correction changed it
    summary = pd.read_csv(out / "summary.csv")
    line = summary[(summary["row"] == "hstu/wo_both") & (summary["metric"] == "test/ndcg@10")].iloc[0]
    assert line["p_value"] == pytest.approx(test.pvalue) and line["p_adjusted"] == pytest.approx(p_holm)
    # the weights table: each task's per-run lowest / mean of epoch ends / highest, mean over
    # seeds (the ranking weight has no per-step range here: its epoch ends); no line for a
    # single-task row
    assert "| hstu/unigrf | 3 | 0.900 | 1.150 | 1.350 | 0.700 | 0.850 | 1.000 |" in md
    assert "| hstu/retrieval_only | 3 | 0.900" not in md
    assert "‡ where the runs kept no per-user outcomes: a t-test over seeds only" in md
    assert "declared seeds not recorded" in md  # meta.json without the `declared` record
    # peak table: retrieval peak 3, ranking peak 2, gap 1 for every seed
    assert "| hstu/unigrf | 3 | 3.0 ± 0.0 | 2.0 ± 0.0 | 1.0 ± 0.0 | 4.0 ± 0.0 |" in md
    # figure written and linked
    assert rendered.figures == [out / "figures" / "curves_synthetic.png"]
    assert (out / "figures" / "curves_synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](figures/curves_synthetic.png)" in md
    # LaTeX: booktabs table, bold best, escaped names
    tex = (out / "report.tex").read_text()
    assert "\\toprule" in tex and "hstu/wo\\_both" in tex
    assert "\\textbf{0.7100 $\\pm$ 0.0100}" in tex
    assert "oracle (true distribution) & -- & 0.5000 & 0.7000 & 0.9000" in tex


def test_report_command_rebuilds_the_same_report(tmp_path, capsys):
    out = make_report_dir(tmp_path)
    first = write_report(out).markdown
    tex = (out / "report.tex").read_text()
    (out / "report.md").unlink()
    (out / "report.tex").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == first
    assert (out / "report.tex").read_text() == tex
    assert "| hstu/unigrf † | 3 |" in capsys.readouterr().out


def test_report_without_histories_skips_curves(tmp_path):
    out = make_report_dir(tmp_path, with_history=False)
    rendered = write_report(out)
    assert rendered.figures == [] and "peak epochs" not in rendered.markdown


def test_report_errors_name_the_file(tmp_path, capsys):
    with pytest.raises(ReportError, match="not a directory"):
        load_inputs(tmp_path / "nope")
    out = make_report_dir(tmp_path)
    (out / "results.csv").unlink()
    with pytest.raises(ReportError, match="results.csv: missing"):
        load_inputs(out)
    assert main(["report", str(out)]) == 2
    assert "results.csv" in capsys.readouterr().err


def test_a_failed_run_is_listed_with_its_reason(tmp_path):
    out = make_report_dir(tmp_path)
    results = pd.read_csv(out / "results.csv")
    failed = results.index[(results["row"] == "hstu/wo_both") & (results["seed"] == 1)]
    results.loc[failed, "status"] = "error: non-finite training loss at epoch 0, step 3 (retrieval nan)"
    results.loc[failed, "test/ndcg@10"] = float("nan")
    results.to_csv(out / "results.csv", index=False)
    md = write_report(out).markdown
    assert "## Failed runs" in md
    assert "`hstu/wo_both/synthetic/seed1`: error: non-finite training loss at epoch 0, step 3" in md
    assert "| hstu/wo_both | 2 |" in md  # the row aggregates the seeds that finished


def test_curves_keep_each_rows_colour_in_every_panel(tmp_path, monkeypatch):
    """A retrieval-only row has no AUC curve: the ranking panel skips it, and the rows after it
    keep the colour they have in the retrieval panel; the legend lists every drawn row."""
    from unigrf.ablation import figures

    rows = ["hstu/retrieval_only", "hstu/unigrf"]
    results = pd.DataFrame(
        {"cell": [f"{r}/synthetic/seed0" for r in rows], "row": rows, "variant": ["retrieval_only", "unigrf"]}
    )
    histories = pd.DataFrame(
        [
            {"cell": f"{r}/synthetic/seed0", "epoch": e, "val/ndcg@10": 0.1 * e, "val/auc": 0.6 + 0.01 * e}
            for r in rows
            for e in range(3)
        ]
    )
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    figures.curves_figure(results, histories, ["val/ndcg@10", "val/auc"], tmp_path / "c.png", rows)
    ndcg_ax, auc_ax = drawn["fig"].axes[:2]
    colour = {
        ax: {ln.get_label(): ln.get_color() for ax_ in [ax] for ln in ax_.get_lines()}
        for ax in (ndcg_ax, auc_ax)
    }
    assert "hstu/retrieval_only" not in colour[auc_ax]
    assert (
        colour[auc_ax]["hstu/unigrf"]
        == colour[ndcg_ax]["hstu/unigrf"]
        != colour[ndcg_ax]["hstu/retrieval_only"]
    )
    assert [t.get_text() for t in ndcg_ax.get_legend().get_texts()] == rows


def test_curves_of_a_grid_with_more_rows_than_the_colour_cycle_stay_distinct(tmp_path, monkeypatch):
    """The paper grid has 11 rows: the default cycle's 10 colours would give two rows one colour."""
    from unigrf.ablation import figures

    rows = [f"hstu/row{i}" for i in range(11)]
    results = pd.DataFrame({"cell": [f"{r}/s/seed0" for r in rows], "row": rows, "variant": ["unigrf"] * 11})
    histories = pd.DataFrame(
        [{"cell": f"{r}/s/seed0", "epoch": e, "val/ndcg@10": 0.1 * e} for r in rows for e in range(2)]
    )
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    figures.curves_figure(results, histories, ["val/ndcg@10"], tmp_path / "c.png", rows)
    lines = [ln for ln in drawn["fig"].axes[0].get_lines() if ln.get_label() in rows]
    assert len({tuple(np.round(matplotlib_rgba(ln.get_color()), 6)) for ln in lines}) == 11


def matplotlib_rgba(colour):
    from matplotlib.colors import to_rgba

    return to_rgba(colour)


def test_the_ablation_driver_imports_matplotlib_only_to_draw_a_figure():
    """A grid without figures (the README's quick grid) never pays for matplotlib's import."""
    import subprocess
    import sys

    code = "import sys, unigrf.ablation.runner, unigrf.ablation.report; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False", out.stderr


def add_outcomes_and_count_model(out):
    """Give the hand-made report per-user outcomes for every run and a count model, as the
    runner stores them; results.csv's test metrics become the outcomes' own."""
    import json

    from unigrf.ablation.outcome_store import OUTCOMES_DIR, run_name, write_count_model_outcomes
    from unigrf.evaluation.outcomes import metrics_from_outcomes, outcomes_frame, write_outcomes

    rng = np.random.default_rng(0)
    n = 100
    labels = (np.arange(n) % 3 != 0).astype(int)
    quality = {"hstu/unigrf": 1.0, "hstu/wo_both": 0.6, "hstu/retrieval_only": 1.1}
    results = pd.read_csv(out / "results.csv")
    for i, r in results.iterrows():
        q = quality[r["row"]]
        frame = outcomes_frame(
            np.arange(n),
            np.maximum(rng.integers(0, 30, n) - int(10 * q), 0),
            labels,
            rng.normal(size=n) + q * labels,
        )
        write_outcomes(frame, out / OUTCOMES_DIR / run_name(r["cell"]) / "test.parquet")
        m = metrics_from_outcomes(frame, (10,), 10)
        for metric in ("ndcg@10", "hr@10", "auc"):
            results.loc[i, f"test/{metric}"] = m[metric]
    results.to_csv(out / "results.csv", index=False)
    floor = outcomes_frame(np.arange(n), np.full(n, 40), labels, rng.normal(size=n) + 0.5 * labels)
    write_count_model_outcomes(out, "synthetic", {"test": floor})
    datasets = json.loads((out / "datasets.json").read_text())
    datasets["synthetic"]["count_model"] = {"test": {"auc": metrics_from_outcomes(floor, (10,), 10)["auc"]}}
    (out / "datasets.json").write_text(json.dumps(datasets))
    return results


def test_outcomes_give_intervals_over_users_and_seeds_and_the_count_model_row(tmp_path):
    from unigrf.ablation.report import COUNT_MODEL_ROW, console_summary

    out = make_report_dir(tmp_path)
    add_outcomes_and_count_model(out)
    rendered = write_report(out)
    md = rendered.markdown
    summary = rendered.summary
    compared = summary[~summary["is_reference"] & summary["applicable"]]
    assert set(compared["test"]) == {"bootstrap"} and (compared["n_users"] == 100).all()
    assert "‡" not in md.split("## Figures")[0].split("### synthetic: change")[1].split("Significance")[0]
    assert "paired two-level bootstrap over test users and seeds" in md
    # the count model: beside popularity in the main table (AUC only), compared in the change table
    floor_line = next(line for line in md.splitlines() if line.startswith(f"| {COUNT_MODEL_ROW} | — |"))
    auc = summary[summary["is_floor"]].iloc[0]
    assert floor_line == f"| {COUNT_MODEL_ROW} | — | — | — | {auc['mean']:.4f} | — |"
    lines = md.splitlines()
    assert (
        lines.index(floor_line)
        == lines.index("| popularity (train counts) | — | 0.0500 | 0.1000 | — | — |") + 1
    )
    change = [line for line in lines if line.startswith(f"| {COUNT_MODEL_ROW} |") and line != floor_line]
    assert len(change) == 1 and change[0].startswith(
        f"| {COUNT_MODEL_ROW} | — | — | {auc['rel_change']:+.1f}% ["
    )
    # the console: the same tables, the legend names the interval's sources
    console = console_summary(out)
    assert "over test users and seeds (paired bootstrap)" in console and COUNT_MODEL_ROW in console
    assert len(console.splitlines()) <= 20


def test_two_snapshot_rows_and_late_seeds_are_labelled(tmp_path):
    import json

    out = make_report_dir(tmp_path)
    results = pd.read_csv(out / "results.csv")
    # the eval branch's per-stage selection for unigrf; the two-stage pipeline is two models anyway
    results["selection"] = np.where(results["row"] == "hstu/unigrf", "per_stage", "joint")
    results.to_csv(out / "results.csv", index=False)
    meta = json.loads((out / "meta.json").read_text())
    meta["declared"] = {
        "at": "2026-12-01T10:00:00+00:00",
        "seeds": [0, 1],
        "rows": ["hstu/unigrf", "hstu/wo_both"],
        "datasets": ["synthetic"],
    }
    (out / "meta.json").write_text(json.dumps(meta))
    md = write_report(out).markdown
    assert "| hstu/unigrf (two snapshots) † | 3 |" in md
    assert "| hstu/wo_both | 3 |" in md
    assert (
        "0, 1, 2 (3 per row); seeds 2; rows hstu/retrieval_only added after the first run on 2026-12-01" in md
    )
    meta["declared"]["seeds"] = [0, 1, 2]
    meta["declared"]["rows"].append("hstu/retrieval_only")
    (out / "meta.json").write_text(json.dumps(meta))
    assert "0, 1, 2 (3 per row); declared before the first run" in write_report(out).markdown


def test_a_broken_outcomes_file_is_named(tmp_path):
    from unigrf.ablation.outcome_store import OUTCOMES_DIR

    out = make_report_dir(tmp_path)
    bad = out / OUTCOMES_DIR / "hstu__unigrf__synthetic__seed0" / "test.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_text("not parquet")
    with pytest.raises(ReportError, match="hstu__unigrf__synthetic__seed0/test.parquet"):
        load_inputs(out)
