"""A clock the test can move forward, for code that takes ``clock: Callable[[], float]``.

Time flows as usual (``base``), and ``advance`` jumps it ahead: a test waits out a cooldown or a
retry window by jumping, not by sleeping, and everything else stays on real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SteppedClock:
    def __init__(self, base: Callable[[], float] = time.monotonic) -> None:
        self._base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return self._base() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
