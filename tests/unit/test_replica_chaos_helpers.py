"""The pure parts of the issue-33 chaos rows and the replica benchmark: when limits count as
resumed after a Redis failover, and how the service's per-target query counts are read."""

from __future__ import annotations

import pytest

from scripts.benchmark_replica import parse_db_queries, share
from scripts.chaos import Sample
from scripts.chaos_ha import limits_resumed

pytestmark = pytest.mark.unit


def sample(at: float, limited: bool, status: int = 200) -> Sample:
    return Sample(at, "chat", status, limited)


def test_limits_resume_at_the_first_limited_answer_after_the_fail_open_gap() -> None:
    samples = [
        sample(1.0, True),
        sample(2.0, True),  # answered by the old master just before the kill at 2.5
        sample(3.0, True),  # in flight when it died: still carried the headers
        sample(4.0, False),  # failing open
        sample(5.0, False),
        sample(6.0, True),  # the promoted replica counts again
        sample(7.0, True),
    ]
    resumed = limits_resumed(samples, since=2.5)
    assert resumed is not None
    assert resumed.at == 6.0


def test_limits_have_not_resumed_while_answers_still_fail_open_or_before_any_gap() -> None:
    assert limits_resumed([sample(3.0, True), sample(4.0, False)], since=2.5) is None
    # no fail-open answer seen yet: a limited answer is not a resumption
    assert limits_resumed([sample(3.0, True), sample(4.0, True)], since=2.5) is None
    # a connection error (no response) is not the limiter failing open
    assert limits_resumed([sample(3.0, False, status=0), sample(4.0, True)], since=2.5) is None


def test_db_queries_are_read_per_target_from_the_exposition() -> None:
    exposition = (
        "# HELP db_queries_total SQL statements run, by target\n"
        "# TYPE db_queries_total counter\n"
        'db_queries_total{target="primary"} 59.0\n'
        'db_queries_total{target="replica-1@/tmp/sock"} 258.0\n'
        'db_replica_lag_seconds{target="replica-1@/tmp/sock"} 0.0\n'
        'http_requests_total{method="GET",handler="/metrics",status="200"} 3.0\n'
    )
    assert parse_db_queries(exposition) == {"primary": 59.0, "replica-1@/tmp/sock": 258.0}
    assert parse_db_queries("") == {}


def test_share_is_a_percentage_or_a_dash_when_nothing_ran() -> None:
    assert share(258, 258) == "100 %"
    assert share(1, 3) == "33 %"
    assert share(0, 0) == "-"
