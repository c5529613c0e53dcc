"""Shared benchmark helpers: a result record, a wall-clock ops/s measurement and the
``--dir`` argument of the host benchmarks."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


def work_dir(text: str) -> Path:
    """``--dir DIR`` (an argparse type): the directory a benchmark works in, made when
    missing; a path that cannot be one is a usage error, not a traceback an hour in."""
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot use {text!r} as the work directory: {exc.strerror}") from None
    return path


@dataclass(frozen=True)
class BenchResult:
    """One measured operation.

    ``ops`` calls ran in ``seconds`` of wall time; ``best_us`` is the mean time
    per call of the fastest batch (the batch least disturbed by other processes
    on a shared machine), and ``ops_per_s`` is derived from it.
    """

    name: str
    ops: int
    seconds: float
    best_us: float

    @property
    def ops_per_s(self) -> float:
        """Calls per second in the fastest batch."""
        return 1e6 / self.best_us if self.best_us > 0 else 0.0

    @property
    def mean_ops_per_s(self) -> float:
        """Calls per second over the whole run."""
        return self.ops / self.seconds if self.seconds > 0 else 0.0


def measure(name: str, fn: Callable[[], object], seconds: float = 1.0) -> BenchResult:
    """Call ``fn`` repeatedly for about ``seconds`` (with time.perf_counter) and time it.

    Calls run in batches sized so that one batch takes about 10 ms.
    """
    fn()  # warm caches before timing
    batch = 1
    total_ops = 0
    total_s = 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        took = time.perf_counter() - t0
        total_ops += batch
        total_s += took
        if took >= 0.01 or batch >= 1 << 24:
            break
        batch *= 2
    best = took / batch
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        took = time.perf_counter() - t0
        best = min(best, took / batch)
        total_ops += batch
        total_s += took
    return BenchResult(name=name, ops=total_ops, seconds=total_s, best_us=best * 1e6)


def measure_interleaved(
    cases: Sequence[tuple[str, Callable[[], object]]], seconds: float = 1.0, rounds: int = 5
) -> list[BenchResult]:
    """Measure several operations in alternating rounds, ``seconds`` of work each in total.

    On a shared machine a burst of load then hits every case alike instead of
    only whichever ran at the time; each case keeps its fastest batch.
    """
    merged: dict[str, BenchResult] = {}
    for _ in range(rounds):
        for name, fn in cases:
            res = measure(name, fn, seconds / rounds)
            prev = merged.get(name)
            if prev is not None:
                res = BenchResult(name, prev.ops + res.ops, prev.seconds + res.seconds,
                                  min(prev.best_us, res.best_us))
            merged[name] = res
    return [merged[name] for name, _ in cases]


def ratio(ours: BenchResult, anchor: BenchResult) -> float:
    """How many times faster ``ours`` is than ``anchor`` (ops/s over ops/s)."""
    return ours.ops_per_s / anchor.ops_per_s if anchor.ops_per_s else float("inf")
