"""Linear time, proved without a wall-clock threshold.

``assert_linear`` runs the same work at size n and at 4n and bounds the ratio of the CPU time
(``time.process_time``: every thread of this process, none of the other processes competing for
the machine). Linear code takes about 4 times as long at 4n; a quadratic regression 16 times, a
catastrophic backtrack far more. The bound (8) sits between the two, far enough from 4 for a
busy machine's cache and scheduler noise, which a ratio of the minimum of a few runs mostly
cancels anyway. A run too short to time precisely is repeated until the smaller size costs a few
milliseconds of CPU, and the larger size is repeated as often.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

FACTOR = 4
MAX_RATIO = 8.0
_MEASURABLE_S = 0.005  # CPU time of the smaller size, summed over its repetitions
_ROUNDS = 3


def _cpu_seconds(call: Callable[[], object], times: int) -> float:
    started = time.process_time()
    for _ in range(times):
        call()
    return time.process_time() - started


def cpu_ratio(run: Callable[[int], object], n: int, *, factor: int = FACTOR) -> float:
    """CPU time of ``run(factor * n)`` over that of ``run(n)``, the best of a few rounds each."""
    small, large = (lambda: run(n)), (lambda: run(factor * n))
    once = max(_cpu_seconds(small, 1), 1e-6)
    times = max(1, math.ceil(_MEASURABLE_S / once))
    best_small = best_large = math.inf
    for _ in range(_ROUNDS):
        best_small = min(best_small, _cpu_seconds(small, times))
        best_large = min(best_large, _cpu_seconds(large, times))
    return best_large / max(best_small, 1e-9)


def assert_linear(run: Callable[[int], object], n: int, *, max_ratio: float = MAX_RATIO) -> None:
    """``run(size)`` does the work on an input of that size; n is the smaller size."""
    ratio = cpu_ratio(run, n)
    assert ratio < max_ratio, f"{FACTOR}x the input took {ratio:.1f}x the CPU time (linear: ~{FACTOR}x)"
