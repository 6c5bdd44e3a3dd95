"""Timing helpers for the benchmarks: warm up, then the best of several runs (these machines are noisy)."""

from __future__ import annotations

import time

import torch


def best_time(fn, repeats=5, budget_s=20.0, warmup=1):
    """Seconds of the fastest of up to ``repeats`` calls after ``warmup`` calls, within about ``budget_s``."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def print_table(header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))


def times_interleaved(fns, rounds):
    """{name: [seconds per round]} for several callables, run in turn round after round after one warm-up call
    each, so that a slow spell of the machine hits every contender alike instead of whichever happened to run."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return times


def best_times_interleaved(fns, rounds=3):
    """{name: the best of :func:`times_interleaved`'s rounds}."""
    return {name: min(times) for name, times in times_interleaved(fns, rounds).items()}
