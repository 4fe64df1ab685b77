"""benchmarks/scale_bench.py's JSON -> the Markdown of benchmarks/RESULTS.md "Scale".

.venv/bin/python benchmarks/scale_bench.py report benchmarks/scale.json
"""

from __future__ import annotations

from typing import Any

GIB = 1024**3


def _gib(record: dict[str, Any]) -> str:
    return f"{record['tree_peak_bytes'] / GIB:.2f}" if "tree_peak_bytes" in record else "—"


def _ok(record: dict[str, Any] | None) -> bool:
    return bool(record) and "result" in record


def _cell(record: dict[str, Any] | None, fmt) -> str:
    if record is None:
        return "—"
    if "refused" in record:
        return f"refused: {record['refused'][:90]}"
    if "failed" in record:
        return "failed"
    return fmt(record)


def _find(records: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for r in records:
        task = r["task"]
        if all(task.get(k) == v for k, v in match.items()):
            return r
    return None


def _backbone(record: dict[str, Any]) -> str:
    for o in record["task"].get("overrides", []):
        if o.startswith("model.backbone="):
            return o.split("=", 1)[1]
    return "hstu"


def _share(flops: float, seconds: float, gflops: float) -> str:
    return f"{flops / seconds / 1e9 / gflops:.0%}" if seconds and gflops else "—"


def rows_section(records: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in records if r["task"].get("plan") == "rows"]
    targets = sorted({r["task"]["rows_target"] for r in rows if "rows_target" in r["task"]})
    out = [
        "### Rows: the ML-20M stand-in at 1M, 5M and 20M ratings (26,744 items)",
        "",
        "Prepare (cold cache; peak = the process and its Ray processes), a training epoch of "
        "`configs/ml-20m.yaml` per backbone (model `small` from `size: auto`, batch 32, windows of "
        "200, `train_windows: all`): steps timed, **the epoch extrapolated** by padded tokens; "
        "evaluation (random-init model, all metrics and the cascade) of a user sample, "
        "**extrapolated** to all users. GEMM = the 2048² fp32 anchor timed in the same process; "
        "% GEMM = the step's FLOPs (flop_counter, padding included) per second over it.",
        "",
        "| ratings | users | prepare s | prepare peak GiB | backbone | steps/epoch | epoch TFLOP | s/step "
        "| epoch h (extrap.) | % GEMM | train peak GiB | eval s, all users (extrap.) | eval peak GiB | GEMM GFLOP/s |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        prep = _find(rows, kind="prepare", rows_target=target)
        ev = _find(rows, kind="eval", rows_target=target)
        users = prep["result"]["users"] if _ok(prep) else "—"
        for t in [r for r in rows if r["task"].get("rows_target") == target and r["task"]["kind"] == "train"]:
            res = t.get("result", {})
            out.append(
                "| "
                + " | ".join(
                    [
                        f"{target:,}",
                        f"{users:,}" if isinstance(users, int) else users,
                        _cell(prep, lambda r: f"{r['result']['seconds']:.0f}"),
                        _cell(prep, _gib),
                        _backbone(t),
                        str(res.get("steps_per_epoch", "—")),
                        _cell(t, lambda r: f"{r['result']['epoch_flops_extrapolated'] / 1e12:.0f}"),
                        _cell(t, lambda r: f"{r['result']['step_s_median']:.2f}"),
                        _cell(t, lambda r: f"{r['result']['epoch_s_extrapolated'] / 3600:.2f}"),
                        _cell(
                            t,
                            lambda r: _share(
                                r["result"]["flops_per_padded_token"] * r["result"]["epoch_padded_tokens"],
                                r["result"]["epoch_s_extrapolated"],
                                r["gemm_gflops"],
                            ),
                        ),
                        _cell(t, _gib),
                        _cell(ev, lambda r: f"{r['result']['seconds_all_users']:.0f}"),
                        _cell(ev, _gib),
                        f"{t.get('gemm_gflops', 0):.0f}",
                    ]
                )
                + " |"
            )
    return out


def linearity_section(records: list[dict[str, Any]]) -> list[str]:
    """Peak memory against rows (prepare) and against users x chunk (evaluation): the increments."""
    rows = [
        r for r in records if r["task"].get("plan") == "rows" and r["task"]["kind"] == "prepare" and _ok(r)
    ]
    rows.sort(key=lambda r: r["result"]["rows"])
    out = [
        "",
        "Prepare peak memory against rows (increments between sizes: linear when the per-row cost holds):",
        "",
    ]
    out += ["| rows | peak GiB | bytes per added row |", "|---:|---:|---:|"]
    prev = None
    for r in rows:
        n, peak = r["result"]["rows"], r["tree_peak_bytes"]
        slope = f"{(peak - prev[1]) / (n - prev[0]):.0f}" if prev else "—"
        out.append(f"| {n:,} | {peak / GIB:.2f} | {slope} |")
        prev = (n, peak)
    return out


def catalogue_section(records: list[dict[str, Any]]) -> list[str]:
    cat = [r for r in records if r["task"].get("plan") == "catalogue"]
    items = sorted({r["task"]["items"] for r in cat})
    losses = list(dict.fromkeys(r["task"]["loss"] for r in cat if r["task"]["kind"] == "loss"))
    out = [
        "",
        "### Catalogue: 3.7k, 27k, 200k and 700k items",
        "",
        "Training steps (model `small`, 64 windows of 50 items, UniGRF with the enhancer) per "
        "retrieval-loss option: median of 2 timed steps after a warm-up, peak of the whole process, "
        "% GEMM as above. The estimate is `unigrf.training.memory.estimate_bytes`' (the part that "
        "grows with the catalogue and the loss).",
        "",
        "| items | loss | s/step | % GEMM | peak GiB | estimate GiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in items:
        for loss in losses:
            r = _find(cat, kind="loss", items=n, loss=loss)
            out.append(
                f"| {n:,} | {loss} | "
                + _cell(r, lambda r: f"{r['result']['step_s_median']:.2f}")
                + " | "
                + _cell(
                    r, lambda r: _share(r["result"]["flops"], r["result"]["step_s_median"], r["gemm_gflops"])
                )
                + f" | {_cell(r, _gib)} | "
                + _cell(r, lambda r: f"{r['result']['estimate_bytes'] / GIB:.2f}")
                + " |"
            )
    out += [
        "",
        "Evaluation of the synthetic users (50 items each, `small`, random init; full ranking, AUC, "
        "cascade top-100; batches of 64 users): chunked = `unigrf.evaluation.topk` (chunks of 65,536 "
        "items, taken past one chunk), unchunked = [64, items] score matrices. s × GEMM: the seconds "
        "times the anchor's GFLOP/s, the work in anchor units (comparable across loads):",
        "",
        "| items | path | users | s | ms/user | s × GEMM (anchor GFLOP) | peak GiB | estimate GiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in items:
        for chunked in (True, False):
            r = _find(cat, kind="evalcat", items=n, chunked=chunked)
            if r is None:
                continue
            users = r["task"]["users"]
            out.append(
                f"| {n:,} | {'chunked' if chunked and n + 1 > 65_536 else 'one piece' if chunked else 'unchunked'} "
                f"| {users:,} | "
                + _cell(r, lambda r: f"{r['result']['seconds']:.1f}")
                + " | "
                + _cell(r, lambda r: f"{1000 * r['result']['seconds'] / r['result']['users']:.2f}")
                + " | "
                + _cell(r, lambda r: f"{r['result']['seconds'] * r['gemm_gflops']:.0f}")
                + f" | {_cell(r, _gib)} | "
                + _cell(r, lambda r: f"{r['result']['estimate_bytes'] / GIB:.2f}")
                + " |"
            )
    out += mining_rows(cat, items)
    return out


def mining_rows(cat: list[dict[str, Any]], items: list[int]) -> list[str]:
    """The enhancer's candidate pass, chunked and in one piece (`scale_bench.py`'s `mine`)."""
    runs = [r for r in cat if r["task"]["kind"] == "mine"]
    if not runs:
        return []
    out = [
        "",
        "The ranking-driven enhancer's candidate pass (`RankingDrivenEnhancer.mine`: the anchor "
        "prefix encoded, retrieval's top 50 unseen items, the ranking head on them; model `small`, "
        f"{runs[0]['task']['batch']} windows of 50, random init), past one chunk through "
        "`topk.unseen_topk`, and as one [batch, items] score matrix. Same negatives: the sum of "
        "their ids on both paths.",
        "",
        "| items | path | s | s × GEMM (anchor GFLOP) | peak GiB | negatives' id sum |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in items:
        for chunked in (True, False):
            r = _find(runs, items=n, chunked=chunked)
            if r is None:
                continue
            out.append(
                f"| {n:,} | {'chunked' if chunked else 'one piece'} | "
                + _cell(r, lambda r: f"{r['result']['seconds']:.1f}")
                + " | "
                + _cell(r, lambda r: f"{r['result']['seconds'] * r['gemm_gflops']:.0f}")
                + f" | {_cell(r, _gib)} | "
                + _cell(r, lambda r: f"{r['result']['negatives_sum']:,}")
                + " |"
            )
    return out


def configs_section(records: list[dict[str, Any]]) -> list[str]:
    cfgs = [r for r in records if r["task"].get("plan") == "configs"]
    out = [
        "",
        "### The three configs on their full-size stand-ins",
        "",
        "Each config unchanged but `data.data_dir` (and `results_dir`): prepare, training steps "
        "(the epoch **extrapolated** by padded tokens), evaluation (all users for ML-1M; a sample, "
        "**extrapolated**, otherwise). Random-init models: the cascade's work depends on the hits.",
        "",
        "| config | rows | users | items | max_len | prepare s | prepare peak GiB | size | steps/epoch | s/step "
        "| epoch h (extrap.) | epoch TFLOP | train peak GiB | eval users | eval s | eval s, all users | eval peak GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    full_20m = [
        r for r in records if r["task"].get("plan") == "rows" and r["task"].get("rows_target") == 20_000_263
    ]
    for name in ("ml-1m", "ml-20m", "amazon-books"):
        if name == "ml-20m":  # the rows plan's 20M point: this config, its backbone HSTU
            prep = _find(full_20m, kind="prepare")
            train = next(
                (r for r in full_20m if r["task"]["kind"] == "train" and _backbone(r) == "hstu"), None
            )
            ev = _find(full_20m, kind="eval")
        else:
            prep = _find(cfgs, kind="prepare", standin=name)
            train = _find(cfgs, kind="train", standin=name)
            ev = _find(cfgs, kind="eval", standin=name)
        p = prep.get("result", {}) if prep else {}
        t = train.get("result", {}) if train else {}
        e = ev.get("result", {}) if ev else {}
        out.append(
            "| "
            + " | ".join(
                [
                    f"`configs/{name}.yaml`",
                    f"{p.get('rows', 0):,}",
                    f"{p.get('users', 0):,}",
                    f"{p.get('items', 0):,}",
                    str(p.get("max_len", "—")),
                    _cell(prep, lambda r: f"{r['result']['seconds']:.0f}"),
                    _cell(prep, _gib),
                    str(t.get("size", "—")),
                    str(t.get("steps_per_epoch", "—")),
                    _cell(train, lambda r: f"{r['result']['step_s_median']:.2f}"),
                    _cell(train, lambda r: f"{r['result']['epoch_s_extrapolated'] / 3600:.2f}"),
                    _cell(train, lambda r: f"{r['result']['epoch_flops_extrapolated'] / 1e12:.0f}"),
                    _cell(train, _gib),
                    f"{e.get('users', 0):,}",
                    _cell(ev, lambda r: f"{r['result']['seconds']:.0f}"),
                    _cell(ev, lambda r: f"{r['result']['seconds_all_users']:.0f}"),
                    _cell(ev, _gib),
                ]
            )
            + " |"
        )
    return out


def report(records: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    if any(r["task"].get("plan") == "configs" for r in records):
        parts += configs_section(records)
    if any(r["task"].get("plan") == "rows" for r in records):
        parts += ["", *rows_section(records), *linearity_section(records)]
    if any(r["task"].get("plan") == "catalogue" for r in records):
        parts += catalogue_section(records)
    return "\n".join(parts).strip() + "\n"


# The cluster extrapolation (docs/CLUSTER.md): assumptions, each a number to replace when measured.
A10G_EFFECTIVE_TFLOPS = (2.5, 5.0, 10.0)  # sustained by these small models: low, middle, high guess
STEP_FLOOR_S = (0.06, 0.03, 0.015)  # a GPU step's launch-bound minimum (small model): slow, mid, fast
DDP_EFFICIENCY = 0.85  # per-worker throughput kept with several workers (gradient all-reduce)
PRICES = {"g5.xlarge spot": 0.40, "g5.xlarge on-demand": 1.006, "m5.2xlarge on-demand": 0.384}  # $/h


def gpu_epoch_minutes(flops: float, steps: int, workers: int, guess: int) -> float:
    """Minutes per epoch on `workers` A10Gs under guess 0 (slow), 1 (mid) or 2 (fast): the larger
    of the FLOPs at the sustained rate and the steps at the launch-bound floor."""
    eff = DDP_EFFICIENCY if workers > 1 else 1.0
    compute = flops / (A10G_EFFECTIVE_TFLOPS[guess] * 1e12 * workers * eff)
    floor = steps / workers * STEP_FLOOR_S[guess]
    return max(compute, floor) / 60


def cluster_section(records: list[dict[str, Any]]) -> list[str]:
    """Minutes and dollars per epoch on cluster.yaml's GPU workers, from the measured epoch FLOPs
    and step counts."""
    cfgs = [r for r in records if r["task"].get("plan") == "configs"]
    full_20m = [
        r for r in records if r["task"].get("plan") == "rows" and r["task"].get("rows_target") == 20_000_263
    ]
    trains = {
        "ml-1m": _find(cfgs, kind="train", standin="ml-1m"),
        "ml-20m": next(
            (r for r in full_20m if r["task"]["kind"] == "train" and _backbone(r) == "hstu"), None
        ),
        "amazon-books": _find(cfgs, kind="train", standin="amazon-books"),
    }
    hourly = 4 * PRICES["g5.xlarge spot"] + PRICES["m5.2xlarge on-demand"]
    out = [
        "| config | steps/epoch | epoch TFLOP (measured) | train peak GiB (CPU) | 1 × A10G: min/epoch "
        "| 4 × A10G: min/epoch | 4 × A10G: $/epoch (spot + head) | this CPU: h/epoch (measured steps, extrap.) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in trains.items():
        if not _ok(t):
            out.append(f"| `configs/{name}.yaml` | — | — | — | — | — | — | — |")
            continue
        flops, steps = t["result"]["epoch_flops_extrapolated"], t["result"]["steps_per_epoch"]
        one = [gpu_epoch_minutes(flops, steps, 1, g) for g in (2, 1, 0)]
        four = [gpu_epoch_minutes(flops, steps, 4, g) for g in (2, 1, 0)]
        out.append(
            f"| `configs/{name}.yaml` | {steps:,} | {flops / 1e12:,.0f} | {t['tree_peak_bytes'] / GIB:.1f} | "
            f"{one[0]:.1f}–{one[2]:.1f} (mid {one[1]:.1f}) | {four[0]:.1f}–{four[2]:.1f} (mid {four[1]:.1f}) | "
            f"{four[0] / 60 * hourly:.2f}–{four[2] / 60 * hourly:.2f} | "
            f"{t['result']['epoch_s_extrapolated'] / 3600:.1f} |"
        )
    return out
