"""Throughput, side by side in one run (issue "Throughput"): everything below is measured in
this one process (or its children) on the same machine, so ratios between its numbers hold
even where the machine changes between sessions.

Sections (each printed as Markdown, JSON with --out: benchmarks/tables.py --take DIR):
1. **GEMM peaks**: a 2048 x 2048 fp32 (and bf16) matmul at `--threads`, before and after the
   other measurements (the best of the two is the peak).
2. **Training step** per backbone x size, UniGRF (interleaved items + feedback, enhancer m = 8
   after warm-up, loss-ratio weighter) and the item-only retriever, on ML-100K batches exactly
   as the training loop cuts them (`epoch_batches`: 128 users of similar length, last 200
   items): median step time, real tokens/s, and **useful FLOP/s** — FLOPs of the work on real
   tokens only (padding excluded), counted by `torch.utils.flop_counter` on the dense
   computation of each user alone (matmuls, attention over every (query, key) pair as the
   counter counts it, the retrieval loss's logits, the enhancer's passes) — as a share of the
   fp32 and bf16 GEMM peaks.
3. **Epoch time against SASRec.pytorch** at its ML-100K settings (hidden 50, 2 blocks, 1
   head, dropout 0.2, batch 128, 200 items, BCE with one negative, Adam, `--threads`): the
   anchor run from a temporary copy of ../shared/anchors/sasrec_pytorch (benchmarks/anchor.py),
   then the project's item-only SASRec and UniGRF-SASRec with the same settings, training time
   per epoch (each user once; the anchor's epoch is its 943 // 128 = 7 random batches, so the
   table also gives time per step).
4. **Per-trial overhead of a sweep**: `run_fixed_configs` on `--trials` tiny synthetic configs
   (a local Ray started here): each trial's wall time in Tune minus its epochs, and the grid's
   wall time.
5. **Evaluation**: `evaluate` of all 943 ML-100K users (full ranking, AUC, cascade top-100),
   200 items, per backbone, wall seconds at `--threads`, and the work it is: FLOPs of one
   evaluation as run (padding included; flop_counter, SDPA's CPU kernel counted as dense
   attention) and the share of the fp32 GEMM peak the fastest repeat reached — of a model
   trained `--eval-train-epochs` epochs first, since the cascade's work depends on how often
   retrieval's top 100 holds a liked target (the share of such users is printed).

Every step is the library's `train_step` on the trainer `fit` builds (benchmarks/common.py:
`Stepper`), on ML-100K as `unigrf train` prepares it (`load_dataset`). The same sections run
from the one entry point, `python -m benchmarks peak step epoch trial eval [--out DIR]`
(`--out`: each table as DIR/<name>.json, what benchmarks/tables.py renders into RESULTS.md).

    .venv/bin/python benchmarks/speed_bench.py --threads 2            # all sections (~10 min)
    .venv/bin/python benchmarks/speed_bench.py --threads 2 --only step,eval
    python benchmarks/speed_bench.py --device cuda --only step,eval [--compile]   # on a GPU

`--device cuda` runs the GEMM peaks (8192², where 2048² would not fill a GPU), the steps (bf16
autocast where `train.precision: auto` picks it) and the evaluation on the GPU, timed after a
`torch.cuda.synchronize()`; the FLOP counts stay the CPU's (they do not depend on the device).
`--compile` passes the step's losses (mining included) through `torch.compile`; its first,
compiling step is the untimed warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchor import run_anchor  # noqa: E402
from common import Stepper, Table, first_epoch_batches, load_dataset, machine, sync, write_json  # noqa: E402

from unigrf.config import ExperimentConfig, load_config  # noqa: E402
from unigrf.data.sequences import SequenceData  # noqa: E402
from unigrf.evaluation import evaluate  # noqa: E402
from unigrf.model import UniGRF  # noqa: E402
from unigrf.training.precision import autocast, autocast_dtype, native_bf16  # noqa: E402

SECTIONS = ("peak", "step", "epoch", "trial", "eval")


# torch's flop counter knows SDPA's CUDA kernels but not the CPU flash kernel (it counts 0):
# register formulas for it so softmax attention counts as the dense (query, key) work — the
# forward's two matmuls and the backward's four gradient matmuls (torch's own backward formula
# also counts the kernel's recomputation of QKᵀ, an implementation choice, not useful work).
@flop_counter.register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


@flop_counter.register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _cpu_sdpa_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return 2 * flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


# ------------------------------------------------------------------------------------------
# 1. GEMM peaks
# ------------------------------------------------------------------------------------------


def gemm_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048, seconds: float = 2.0) -> float:
    if device.type == "cuda":
        n = 8192  # a 2048² GEMM is too small to fill a GPU
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


# ------------------------------------------------------------------------------------------
# 2. training step
# ------------------------------------------------------------------------------------------


def flops_per_user(cfg: ExperimentConfig, data: SequenceData, lengths: list[int]) -> np.poly1d:
    """Useful FLOPs of one training step for one user with a training window of L items, as a
    quadratic in L fitted exactly through flop_counter counts at three lengths (linear layers
    and the loss grow with L, attention with L²); checked at a fourth length."""
    donor = int(np.argmax(data.lengths))  # the longest user: windows of any length up to max_len

    def count(length: int) -> float:
        one = SequenceData.from_arrays(
            [data.items[data.offsets[donor] : data.offsets[donor + 1]][: length + 2]],
            [data.ratings[data.offsets[donor] : data.offsets[donor + 1]][: length + 2]],
            [data.timestamps[data.offsets[donor] : data.offsets[donor + 1]][: length + 2]],
            num_items=data.num_items,
            max_len=data.max_len,
        )
        step = Stepper(cfg, data)
        backbones = [m for m in step.model.modules() if hasattr(m, "prefill_chunks")]
        for b in backbones:  # count the dense computation, not the chunked causal shortcut
            b.prefill_chunks = 1
        batch = one.train_batch(np.array([0]))
        with FlopCounterMode(display=False) as counter:
            step(batch)
        return float(counter.get_total_flops())

    xs = [lengths[0], lengths[len(lengths) // 2], lengths[-1]]
    fit = np.poly1d(np.polyfit(xs, [count(x) for x in xs], 2))
    probe = (xs[0] + xs[1]) // 2
    measured = count(probe)
    if abs(fit(probe) - measured) > 0.02 * measured:
        raise RuntimeError(f"FLOPs are not quadratic in the length ({fit(probe):.3g} vs {measured:.3g})")
    return fit


def bench_steps(args: argparse.Namespace, data: SequenceData, peaks: dict[str, float]) -> list[list[str]]:
    rows = []
    batches = first_epoch_batches(data, 128)
    for backbone in args.backbones:
        for size in args.sizes:
            for variant in ("unigrf", "item_only"):
                cfg = load_config(
                    None,
                    [
                        f"model.backbone={backbone}",
                        f"model.size={size}",
                        f"train.variant={variant}",
                        "enhancer.warmup_epochs=0",
                        f"data.max_len={data.max_len}",
                    ],
                )
                step = Stepper(cfg, data, args.device, args.compile)
                timed = batches[: args.steps + 1]
                times = []
                for i, users_b in enumerate(timed):
                    batch = data.train_batch(users_b)
                    sync(args.device)
                    start = time.perf_counter()
                    step(batch)
                    sync(args.device)
                    if i:  # the first step warms up (and compiles, with --compile)
                        times.append(time.perf_counter() - start)
                lengths = np.concatenate([data.train_lengths[u] for u in timed[1:]])
                per_user = flops_per_user(cfg, data, [8, 64, int(min(data.max_len, lengths.max()))])
                useful = float(sum(per_user(length) for length in lengths))
                total_s = sum(times)
                stride = 2 if variant == "unigrf" else 1
                tokens = stride * int(lengths.sum())
                slots = stride * sum(len(u) * int(data.train_lengths[u].max()) for u in timed[1:])
                gflops = useful / total_s / 1e9
                rows.append(
                    [
                        backbone,
                        size,
                        "UniGRF" if variant == "unigrf" else "item-only",
                        f"{statistics.median(times) * 1000:.0f}",
                        f"{tokens / total_s:,.0f}",
                        f"{tokens / slots:.0%}",
                        f"{useful / len(times) / 1e9:.1f}",
                        f"{gflops:.1f}",
                        f"{gflops / peaks['fp32']:.0%}",
                        f"{gflops / peaks['bf16']:.1%}" if native_bf16(args.device) else "— (emulated)",
                    ]
                )
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# 3. epoch time against SASRec.pytorch
# ------------------------------------------------------------------------------------------

ANCHOR_SETTINGS = [
    "model.backbone=sasrec",
    "model.size=small",  # a preset (the size default is auto); the three keys below set the shape
    "model.dim=50",
    "model.num_layers=2",
    "model.num_heads=1",
    "model.dropout=0.2",
    "model.similarity=dot",
    "loss.retrieval=bce",
    "loss.num_negatives=1",
    "loss.temperature=1.0",
    "train.batch_size=128",
    "train.lr=0.001",
    "train.adam_betas=[0.9, 0.98]",
    "enhancer.warmup_epochs=0",
    "data.max_len=200",
]


def our_epoch_s(cfg: ExperimentConfig, data: SequenceData, epochs: int) -> list[float]:
    """Training time of `epochs` epochs (each user once, the loop's batches), as `fit` trains."""
    step = Stepper(cfg, data)
    out = []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        step.epoch(epoch)
        if epoch:  # epoch 0 warms up
            out.append(time.perf_counter() - start)
    return out


def bench_epoch(args: argparse.Namespace, data: SequenceData) -> list[list[str]]:
    anchor = run_anchor("ml100k", epochs=args.epochs + 1, maxlen=200, threads=args.threads)
    anchor_s = statistics.median(anchor.epoch_train_s[1:])
    anchor_steps = data.num_users // 128
    rows = [
        [
            "SASRec.pytorch (its own code)",
            f"{anchor_s:.2f}",
            str(anchor_steps),
            f"{anchor_s / anchor_steps:.3f}",
            "1.00",
        ]
    ]
    steps = -(-data.num_users // 128)
    for label, variant in (
        ("item-only SASRec (project)", "item_only"),
        ("UniGRF-SASRec (project)", "unigrf"),
    ):
        cfg = load_config(None, [*ANCHOR_SETTINGS, f"train.variant={variant}"])
        s = statistics.median(our_epoch_s(cfg, data, args.epochs))
        rows.append([label, f"{s:.2f}", str(steps), f"{s / steps:.3f}", f"{s / anchor_s:.2f}"])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# 4. per-trial overhead of a sweep
# ------------------------------------------------------------------------------------------


def bench_trials(args: argparse.Namespace) -> tuple[list[list[str]], float, float]:
    import ray

    from unigrf.ablation.cells import run_fixed_configs
    from unigrf.ray_utils import init_ray

    with tempfile.TemporaryDirectory(prefix="speed-trials-") as tmp:
        base = [
            f"results_dir={tmp}",
            "model.size=tiny",
            "train.epochs=3",
            "train.patience=10",
            "data.synthetic.num_users=300",
            "data.synthetic.num_items=100",
        ]
        configs = [(f"t{i}", load_config(None, [*base, f"train.seed={i}"])) for i in range(args.trials)]
        t0 = time.perf_counter()
        init_ray(num_cpus=args.threads, quiet=True)
        ray_s = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            frame = run_fixed_configs(configs, Path(tmp) / "grid", None, resume=False, verbose=0)
            grid_s = time.perf_counter() - t1
        finally:
            ray.shutdown()
        rows = []
        for rec in frame.to_dict("records"):
            epochs_s = sum(h["time/epoch_s"] for h in rec["history"])
            rows.append(
                [rec["name"], f"{rec['time_s']:.2f}", f"{epochs_s:.2f}", f"{rec['time_s'] - epochs_s:.2f}"]
            )
        return rows, ray_s, grid_s


# ------------------------------------------------------------------------------------------
# 5. evaluation
# ------------------------------------------------------------------------------------------


def trained_for_eval(cfg: ExperimentConfig, data: SequenceData, epochs: int) -> UniGRF:
    """`cfg`'s model after `epochs` epochs of training as `fit` takes them (each user once per
    epoch, the loop's batches). The evaluation scores the cascade's candidates only for the
    users whose target is liked and in retrieval's top C (`cascade_rows`), so its cost depends on
    how good retrieval is: a random-init model (target in the top 100 for ~6 % of users) would
    flatter it."""
    step = Stepper(cfg, data)
    for epoch in range(epochs):
        step.epoch(epoch)
    return step.model.eval()


class CountContinued:
    """Wraps a model's `score_candidates` to count the rows of the cascade's continuations (those
    scoring more than the target alone)."""

    def __init__(self, model: UniGRF) -> None:
        self.rows, self.inner = 0, model.score_candidates
        model.score_candidates = self

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        out = self.inner(*args, **kwargs)
        self.rows += out.shape[0] if out.shape[1] > 1 else 0
        return out


def time_eval(
    model: UniGRF,
    data: SequenceData,
    cfg: ExperimentConfig,
    device: torch.device,
    amp: torch.dtype | None,
    repeats: int,
) -> list[float]:
    """Wall seconds of `repeats` test evaluations of all users under autocast `amp`, as `fit`
    evaluates (after a warm-up on 64 users)."""
    times = []
    with autocast(device, amp):
        evaluate(model, data, "val", cfg.eval, users=np.arange(64), device=device)
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            # every λ of eval.cascade_lambdas is ranked whichever one is reported (timing only)
            evaluate(model, data, "test", cfg.eval, device=device, cascade_lambda=1.0)
            sync(device)
            times.append(time.perf_counter() - start)
    return times


def bench_eval(args: argparse.Namespace, data: SequenceData, peaks: dict[str, float]) -> list[list[str]]:
    rows = []
    for backbone in args.backbones:
        for variant in ("unigrf", "item_only"):
            cfg = load_config(
                None, [f"model.backbone={backbone}", "model.size=small", f"train.variant={variant}"]
            )
            model = trained_for_eval(cfg, data, args.eval_train_epochs)
            evaluate(model, data, "val", cfg.eval, users=np.arange(64))  # warm-up
            counted = CountContinued(model)
            with FlopCounterMode(display=False) as counter:  # the work as run (padding included)
                metrics = evaluate(model, data, "test", cfg.eval, cascade_lambda=1.0)
            gflop = counter.get_total_flops() / 1e9
            cascade_share = counted.rows / metrics["num_users"]
            model.to(args.device)
            # fp32, and the precision `fit` evaluates in where it differs (`train.precision: auto`)
            amp = autocast_dtype(cfg.train.precision, args.device)
            for precision in [None] + ([amp] if amp is not None else []):
                times = time_eval(model, data, cfg, args.device, precision, args.repeats)
                rows.append(
                    [
                        backbone,
                        "UniGRF" if variant == "unigrf" else "item-only",
                        "bf16 autocast" if precision is not None else "fp32",
                        f"{metrics['ndcg@10']:.4f}",
                        f"{cascade_share:.0%}",
                        f"{min(times):.3f}",
                        f"{statistics.median(times):.3f}",
                        f"{gflop:.1f}",
                        f"{gflop / min(times):.1f}",
                        f"{gflop / min(times) / peaks['fp32']:.0%}",
                    ]
                )
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------------


STEP_COLUMNS = ["backbone", "size", "model", "ms/step", "real tokens/s", "real/padded tokens",
                "useful GFLOP/step", "useful GFLOP/s", "% fp32 peak", "% bf16 peak"]  # fmt: skip
EVAL_COLUMNS = ["backbone", "model", "precision", "test ndcg@10", "cascade users", "min s", "median s",
                "GFLOP", "GFLOP/s (min)", "% fp32 peak"]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (also `python -m benchmarks`'s)."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", default=["hstu", "llama", "sasrec"])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument(
        "--steps", type=int, default=4, help="timed training steps per row (after one warm-up)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs against SASRec.pytorch")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--eval-train-epochs", type=int, default=10, help="training epochs before the evaluation is timed"
    )
    parser.add_argument("--data-root", type=Path, default=None, help="default: ../shared/data")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the GEMM peaks, steps and evaluation run",
    )
    parser.add_argument("--compile", action="store_true", help="the step's losses through torch.compile")
    parser.add_argument("--out", type=Path, default=None, help="write each table as DIR/<name>.json")


def run(args: argparse.Namespace, only: set[str]) -> list[Table]:
    """The sections in `only` (of SECTIONS) -> their tables (printed by the caller)."""
    device = args.device = torch.device(args.device)  # the sections read it from args
    if device.type == "cuda" and only & {"epoch", "trial"}:
        raise SystemExit(
            "--device cuda: the epoch (SASRec.pytorch) and trial sections run on the CPU; use peak,step,eval"
        )
    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    data = load_dataset("ml-100k", 200, args.data_root)
    where = machine(device, args.threads) + (", compiled losses" if args.compile else "")
    peaks = {"fp32": gemm_gflops(torch.float32, device), "bf16": gemm_gflops(torch.bfloat16, device)}
    tables: list[Table] = []
    if "step" in only:
        rows = bench_steps(args, data, peaks)
        tables.append(Table(
            "throughput-step",
            "Training step, ML-100K batches as `epoch_batches` cuts them (128 users, last 200 items)",
            STEP_COLUMNS, rows, machine=where,
        ))  # fmt: skip
    if "epoch" in only:
        tables.append(Table(
            "throughput-epoch",
            "Epoch training time at SASRec.pytorch's ML-100K settings (median of the timed epochs)",
            ["system", "s/epoch", "steps/epoch", "s/step", "× SASRec.pytorch epoch"],
            bench_epoch(args, data), machine=where,
        ))  # fmt: skip
    if "trial" in only:
        trial_rows, ray_s, grid_s = bench_trials(args)
        tables.append(Table(
            "ray-trials",
            f"Sweep trials (`run_fixed_configs`, {args.trials} tiny synthetic configs, 3 epochs each): "
            f"Ray start {ray_s:.1f} s, grid wall time {grid_s:.1f} s",
            ["trial", "trial s", "epochs s", "overhead s"], trial_rows, machine=where,
        ))  # fmt: skip
    if "eval" in only:
        tables.append(Table(
            "evaluation-time",
            f"Evaluation of all {data.num_users} ML-100K users (test; 200 items; full ranking, AUC, cascade "
            f"top-100; model `small` after {args.eval_train_epochs} training epochs of the default recipe; "
            '"cascade users": the share of users whose top-100 candidates are scored — liked target in '
            "retrieval's top 100; test ndcg@10 and GFLOP of the fp32 evaluation)",
            EVAL_COLUMNS, bench_eval(args, data, peaks), machine=where,
        ))  # fmt: skip
    after = {"fp32": gemm_gflops(torch.float32, device), "bf16": gemm_gflops(torch.bfloat16, device)}
    size = "8192² on the GPU" if device.type == "cuda" else f"2048², {args.threads} threads"
    tables.insert(0, Table(
        "throughput-peak",
        f"GEMM peak ({size}), GFLOP/s before / after the other sections (shares use the run's best). "
        + ("bf16 is native here: the steps run under bf16 autocast (`train.precision: auto`)."
           if native_bf16(device) else
           "No native bf16 here: the steps run in fp32 (`train.precision: auto`); a share of the bf16 "
           "peak means nothing."),
        ["dtype", "before", "after"],
        [[k, f"{peaks[k]:.1f}", f"{after[k]:.1f}"] for k in ("fp32", "bf16")], machine=where,
    ))  # fmt: skip
    return tables


def report(tables: list[Table], out: Path | None) -> None:
    """Print `tables` as Markdown; with `out`, write each as JSON there too."""
    for t in tables:
        print(f"{t.title}:\n\n{t.markdown()}\n", flush=True)
        if out is not None:
            print(f"(written: {write_json(t, out)})\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    add_arguments(parser)
    args = parser.parse_args(argv)
    tables = run(args, set(args.only.split(",")))
    print(
        f"Machine: {tables[0].machine}; command: `python benchmarks/speed_bench.py {' '.join(sys.argv[1:])}`\n"
    )
    report(tables, args.out)


if __name__ == "__main__":
    main()
