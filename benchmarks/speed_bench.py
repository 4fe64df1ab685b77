"""Throughput, side by side in one run (issue "Throughput"): everything below is measured in
this one process (or its children) on the same machine, so ratios between its numbers hold
even where the machine changes between sessions.

Sections (each printed as Markdown, paste into benchmarks/RESULTS.md "Throughput"):
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
from step_time_bench import DEFAULT_DATA, load_ml100k  # noqa: E402

from unigrf.config import ExperimentConfig, load_config  # noqa: E402
from unigrf.data.sequences import SequenceData  # noqa: E402
from unigrf.evaluation import evaluate  # noqa: E402
from unigrf.kernels import keep_freed_memory  # noqa: E402
from unigrf.model import RankingDrivenEnhancer, UniGRF, build_model, build_weighter  # noqa: E402
from unigrf.training.loop import epoch_batches, epoch_users  # noqa: E402
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


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


class Step:
    """One training step of `cfg` as `fit` takes it (mining, losses, weighter, backward, clip,
    AdamW), without the loop around it, on `device`; `compile`: the loss computation (mining
    included) through `torch.compile`."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: SequenceData,
        device: torch.device | None = None,
        compile: bool = False,
    ) -> None:
        from unigrf.config import effective_m, effective_weighter_kind, variant_spec

        keep_freed_memory()  # as `fit` does
        torch.manual_seed(0)
        self.cfg, self.spec = cfg, variant_spec(cfg)
        counts = torch.as_tensor(data.item_counts("val"))
        self.device = device or torch.device("cpu")
        self.model = (
            build_model(cfg, data.num_items, data.num_levels, data.max_len, counts).to(self.device).train()
        )
        tasks = [t for t, on in (("retrieval", self.spec.retrieval), ("ranking", self.spec.ranking)) if on]
        self.weighter = build_weighter(effective_weighter_kind(cfg), cfg.weighter, tasks)
        self.enhancer = RankingDrivenEnhancer(cfg.enhancer, effective_m(cfg))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, betas=cfg.train.adam_betas)
        # the precision training would use here (`train.precision: auto`: bf16 only where native)
        self.dtype = autocast_dtype(cfg.train.precision, self.device)
        self.losses = torch.compile(self._losses, dynamic=True) if compile else self._losses

    def _losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hard = self.enhancer.mine(self.model, batch) if self.enhancer.m else None
        return self.model.losses(batch, hard, self.spec.retrieval, self.spec.ranking)

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with autocast(self.device, self.dtype):
            losses = self.losses(batch)
        total = self.weighter.combine(losses, self.model.shared_parameters())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()


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
        step = Step(cfg, data)
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
    users = epoch_users(data.num_users, 0, 0, 0, 1)
    batches = epoch_batches(users, data.train_lengths, 128, 0, 0, 0)
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
                step = Step(cfg, data, args.device, args.compile)
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
    step = Step(cfg, data)
    out = []
    for epoch in range(epochs + 1):
        users = epoch_users(data.num_users, 0, epoch, 0, 1)
        start = time.perf_counter()
        for batch_users in epoch_batches(users, data.train_lengths, cfg.train.batch_size, 0, epoch, 0):
            step(data.train_batch(batch_users))
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
    step = Step(cfg, data)
    for epoch in range(epochs):
        users = epoch_users(data.num_users, 0, epoch, 0, 1)
        for batch_users in epoch_batches(users, data.train_lengths, cfg.train.batch_size, 0, epoch, 0):
            step(data.train_batch(batch_users))
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


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
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
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the GEMM peaks, steps and evaluation run",
    )
    parser.add_argument("--compile", action="store_true", help="the step's losses through torch.compile")
    args = parser.parse_args()
    args.device = device = torch.device(args.device)  # the sections read it from args
    only = set(args.only.split(","))
    if device.type == "cuda" and only & {"epoch", "trial"}:
        parser.error(
            "--device cuda: the epoch (SASRec.pytorch) and trial sections run on the CPU; use --only peak,step,eval"
        )
    torch.set_num_threads(args.threads)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    data = load_ml100k(args.data, 200)
    out = [
        f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        + (f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else "")
        + f"device {device}{', compiled losses' if args.compile else ''}, "
        f"{args.threads} thread(s); command: `python benchmarks/speed_bench.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    peaks = {"fp32": gemm_gflops(torch.float32, device), "bf16": gemm_gflops(torch.bfloat16, device)}
    if "step" in only:
        rows = bench_steps(args, data, peaks)
    if "epoch" in only:
        epoch_rows = bench_epoch(args, data)
    if "trial" in only:
        trial_rows, ray_s, grid_s = bench_trials(args)
    if "eval" in only:
        eval_rows = bench_eval(args, data, peaks)
    after = {"fp32": gemm_gflops(torch.float32, device), "bf16": gemm_gflops(torch.bfloat16, device)}
    out.append(
        f"GEMM peak ({'8192² on the GPU' if device.type == 'cuda' else f'2048², {args.threads} threads'}), before / after: fp32 {peaks['fp32']:.0f} / {after['fp32']:.0f} "
        f"GFLOP/s, bf16 {peaks['bf16']:.1f} / {after['bf16']:.1f} GFLOP/s (shares below use the run's best). "
        + (
            "bf16 is native here (AMX / AVX-512-BF16): the steps run under bf16 autocast (`train.precision: auto`)."
            if native_bf16(device)
            else "This CPU has no native bf16 (no AMX / AVX-512-BF16): bf16 matmuls are emulated, so the steps "
            "run in fp32 (`train.precision: auto`) and a share of the bf16 peak means nothing."
        )
    )
    peaks = {k: max(peaks[k], after[k]) for k in peaks}
    if "step" in only:
        out += [
            "",
            "Training step, ML-100K batches as `epoch_batches` cuts them (128 users, last 200 items):",
            "",
            table(
                ["backbone", "size", "model", "ms/step", "real tokens/s", "real/padded tokens", "useful GFLOP/step",
                 "useful GFLOP/s", "% fp32 peak", "% bf16 peak"],
                rows,
            ),
        ]  # fmt: skip
    if "epoch" in only:
        out += [
            "",
            "Epoch training time at SASRec.pytorch's ML-100K settings (median of the timed epochs):",
            "",
            table(["system", "s/epoch", "steps/epoch", "s/step", "× SASRec.pytorch epoch"], epoch_rows),
        ]
    if "trial" in only:
        out += [
            "",
            f"Sweep trials (`run_fixed_configs`, {args.trials} tiny synthetic configs, 3 epochs each): Ray start "
            f"{ray_s:.1f} s, grid wall time {grid_s:.1f} s",
            "",
            table(["trial", "trial s", "epochs s", "overhead s"], trial_rows),
        ]
    if "eval" in only:
        out += [
            "",
            f"Evaluation of all {data.num_users} ML-100K users (test; 200 items; full ranking, AUC, cascade top-100; "
            f'model `small` after {args.eval_train_epochs} training epochs of the default recipe; "cascade '
            "users\": the share of users whose top-100 candidates are scored — liked target in retrieval's top 100; "
            "test ndcg@10 and GFLOP of the fp32 evaluation):",
            "",
            table(
                [
                    "backbone",
                    "model",
                    "precision",
                    "test ndcg@10",
                    "cascade users",
                    "min s",
                    "median s",
                    "GFLOP",
                    "GFLOP/s (min)",
                    "% fp32 peak",
                ],
                eval_rows,
            ),  # fmt: skip
        ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
