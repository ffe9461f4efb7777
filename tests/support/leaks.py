"""Fails a test whose threads or OpenTelemetry providers outlive it.

A thread, exporter or server left running by one test logs into, slows down or races the tests
after it (an exporter thread retrying a dead endpoint wrote "Failed to export spans batch" into a
later test's captured stderr). After every test, once its own fixtures are torn down:

- every thread it started must have ended (a short grace period lets stopping threads finish);
- every ``TracerProvider`` / ``MeterProvider`` it built must have been shut down.

Threads started while a session-, package- or module-scoped fixture was being set up belong to
that fixture, which outlives the test on purpose; they are exempt.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

GRACE_S = 5.0


@dataclass
class _Providers:
    """Every OpenTelemetry SDK provider built in this process, and whether it was shut down."""

    live: weakref.WeakKeyDictionary[Any, bool] = field(default_factory=weakref.WeakKeyDictionary)

    def open_ones(self, among: set[int]) -> list[str]:
        return [type(p).__name__ for p, closed in list(self.live.items()) if id(p) in among and not closed]


_providers = _Providers()
_long_lived_threads: set[threading.Thread] = set()


def _track(cls: type[Any]) -> None:
    original_init = cls.__init__
    original_shutdown = cls.shutdown

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _providers.live[self] = False

    def shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
        _providers.live[self] = True
        return original_shutdown(self, *args, **kwargs)

    cls.__init__ = __init__
    cls.shutdown = shutdown


_track(TracerProvider)
_track(MeterProvider)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Generator[None, Any, Any]:
    if fixturedef.scope == "function":
        return (yield)
    before = set(threading.enumerate())
    try:
        return (yield)
    finally:
        _long_lived_threads.update(set(threading.enumerate()) - before)


def _wait_for_threads(started: set[threading.Thread], grace_s: float) -> list[threading.Thread]:
    deadline = time.monotonic() + grace_s
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t for t in started if t.is_alive()]


def _describe(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    runs = target if target is not None else type(thread)
    where = f" running {getattr(runs, '__module__', '?')}.{getattr(runs, '__qualname__', runs)!s}"
    return f"thread {thread.name!r} ({'daemon' if thread.daemon else 'non-daemon'}){where}"


@pytest.fixture(autouse=True)
def no_leaked_threads_or_providers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Autouse and defined first, so it is set up before and torn down after every other
    function-scoped fixture of the test."""
    threads_before = set(threading.enumerate())
    providers_before = {id(p) for p in list(_providers.live.keys())}
    yield
    started = set(threading.enumerate()) - threads_before - _long_lived_threads
    leaked = _wait_for_threads(started, GRACE_S)
    providers_now = {id(p) for p in list(_providers.live.keys())}
    open_providers = _providers.open_ones(providers_now - providers_before)
    problems = [_describe(t) for t in leaked]
    problems += [f"{name} never shut down" for name in open_providers]
    if problems:
        pytest.fail(f"{request.node.nodeid} left running after it ended: " + "; ".join(problems))
