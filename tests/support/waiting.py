"""Wait for a condition, not for a guessed amount of time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "") -> None:
    """Poll ``predicate`` until it is truthy; fail loudly (naming ``what``) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not reached in {timeout} s" + (f": {what}" if what else ""))


async def wait_for_async(
    predicate: Callable[[], Awaitable[object]], timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    """``wait_for`` for an async predicate, sleeping on the event loop between polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not reached in {timeout} s" + (f": {what}" if what else ""))
