"""Every metric the service declares (``app/observability/metrics/domain.py``, on a backend that
leaves HTTP metrics to it) is a row of the README's metrics table, with each of its labels."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.observability.metrics.domain import DomainMetrics

pytestmark = [pytest.mark.unit, pytest.mark.metrics]

ROOT = Path(__file__).resolve().parents[3]


class Declared:
    """A backend that only remembers what was declared on it: name → label names."""

    name = "declared"

    def __init__(self) -> None:
        self.metrics: dict[str, tuple[str, ...]] = {}

    def _declare(self, name: str, labelnames: Sequence[str]) -> Any:
        self.metrics[name] = tuple(labelnames)
        return self

    def counter(self, name: str, description: str, labelnames: Sequence[str] = (), *_: Any, **__: Any) -> Any:
        return self._declare(name, labelnames)

    def histogram(
        self, name: str, description: str, labelnames: Sequence[str] = (), *_: Any, **__: Any
    ) -> Any:
        return self._declare(name, labelnames)

    def gauge(self, name: str, description: str, labelnames: Sequence[str] = (), *_: Any, **__: Any) -> Any:
        return self._declare(name, labelnames)


def metrics_table() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| metric | labels | what |")
    return [line for line in readme[start:].split("\n\n")[0].splitlines()[2:] if line.startswith("|")]


def test_every_declared_metric_is_in_the_readme_table_with_its_labels() -> None:
    backend = Declared()
    DomainMetrics(backend)  # type: ignore[arg-type]
    rows = metrics_table()
    missing: list[str] = []
    unlabelled: list[str] = []
    for name, labels in sorted(backend.metrics.items()):
        row = next((row for row in rows if f"`{name}`" in row.split("|")[1]), None)
        if row is None:
            missing.append(name)
            continue
        documented = set(re.findall(r"`([a-z_]+)`", row.split("|")[2]))
        unlabelled += [f"{name}: {label}" for label in labels if label not in documented]
    assert backend.metrics, "no metric was declared: the check would pass on anything"
    assert not missing, f"metrics missing from the README's metrics table: {missing}"
    assert not unlabelled, f"labels missing from their metric's row of the README table: {unlabelled}"
