"""Latency that means what it says: per-call spread, distinct inputs, rows taking turns."""

from __future__ import annotations

import time
from itertools import pairwise

import torch

from quantization.measure.latency import distinct_inputs, time_interleaved, time_runners


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class SlowEveryFifth:
    """A runner whose every fifth call takes 2 ms longer (a GC pause, a cache refill)."""

    sparse_input = False

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[float] = []

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def run(self, x: torch.Tensor) -> None:
        self.calls += 1
        self.seen.append(float(x[0, 0]))
        if self.calls % 5 == 0:
            _busy(0.002)


def test_a_runner_slow_on_one_call_in_five_gets_a_p90_that_says_so():
    runner = SlowEveryFifth()
    inputs = {"slow": distinct_inputs([(torch.arange(64.0).view(32, 2), torch.zeros(32))], [1])}
    figures = time_runners({"slow": runner}, inputs, num_threads=1, budget_s=0.05)["slow"]["1"]
    # Per-call p90 sees the 2 ms calls (a fifth of them); block means would average them away (p90 = median).
    assert figures["p90"] >= 2.0
    assert figures["median"] < 1.0
    assert figures["calls"] == runner.calls - 3  # every call after the warm-up is a sample


def test_calls_cycle_through_distinct_inputs():
    runner = SlowEveryFifth()
    inputs = {"r": distinct_inputs([(torch.arange(64.0).view(32, 2), torch.zeros(32))], [1])}
    time_runners({"r": runner}, inputs, num_threads=1, budget_s=0.01)
    assert len(set(runner.seen)) == 32  # every test example, not the first one over and over


def test_rows_take_turns():
    order: list[str] = []
    runs = {name: (lambda x, name=name: order.append(name), [0]) for name in ("a", "b")}
    time_interleaved(runs, num_threads=1, budget_s=0.01)  # several ~1 ms turns each
    timed = order[6:]  # after each row's 3 warm-up calls
    first_b, last_a = timed.index("b"), len(timed) - 1 - timed[::-1].index("a")
    assert first_b < last_a  # b ran before a was done: drift lands on both rows
    switches = sum(1 for x, y in pairwise(timed) if x != y)
    assert switches >= 2


def test_distinct_inputs_cover_the_split_once_per_batch_size():
    x = torch.arange(20.0).view(10, 2)
    sets = distinct_inputs([(x[:6], torch.zeros(6)), (x[6:], torch.zeros(4))], [1, 4], count=512)
    assert [t[0, 0].item() for t in sets[1]] == [float(2 * i) for i in range(10)]
    expected = [[0.0, 2.0, 4.0, 6.0], [8.0, 10.0, 12.0, 14.0], [16.0, 18.0, 0.0, 2.0]]
    assert [t[:, 0].tolist() for t in sets[4]] == expected
    sparse = distinct_inputs([(x.to_sparse(), torch.zeros(10))], [4], count=8)[4]
    assert all(t.layout == torch.sparse_coo for t in sparse) and len(sparse) == 2
