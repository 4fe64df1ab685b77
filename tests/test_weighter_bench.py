"""benchmarks/weighter_bench.py: whole weighter intervals are timed, and the measuring steps
(every `interval`-th, where grad_norm / grad_share measure) are told apart from the others."""

from __future__ import annotations

import argparse
import time

import pytest


def burner(every: int, heavy_s: float, light_s: float):
    """A stepper whose every `every`-th call (from the first) burns `heavy_s` of CPU, the others
    `light_s`."""
    calls = [0]

    def step() -> None:
        end = time.process_time() + (heavy_s if calls[0] % every == 0 else light_s)
        while time.process_time() < end:
            pass
        calls[0] += 1

    return step


def test_measuring_steps_are_the_interval_multiples(benchmark_module):
    bench = benchmark_module("weighter_bench")
    flat, spiky = burner(1, 0.004, 0.004), burner(3, 0.03, 0.004)
    timed = bench.time_intervals([flat, spiky], warmup=1, intervals=2, interval=3)
    assert timed[1]["measuring"] > 4 * timed[1]["other"]  # the burst lands on the measuring steps
    assert timed[1]["mean"] == pytest.approx((timed[1]["measuring"] + 2 * timed[1]["other"]) / 3, rel=1e-9)
    assert timed[0]["measuring"] == pytest.approx(timed[0]["other"], rel=0.5)


@pytest.mark.timeout(300)
def test_every_weighter_gets_a_row_against_fixed(benchmark_module):
    bench = benchmark_module("weighter_bench")
    args = argparse.Namespace(data_root=None, backbones=["hstu"], size="tiny", batch_size=8, max_len=20,
                              warmup=1, intervals=1, threads=1, seed=0)  # fmt: skip
    table = bench.run(args)
    assert [r[1] for r in table.rows] == list(bench.KINDS)
    assert table.rows[0][3] == "1.000×" and table.rows[0][4] == "—"
    assert all(r[4] != "—" for r in table.rows if r[1] in bench.MEASURING)
    assert "weighter.interval=20" in table.title
