"""The failover matrix's outcome rule (scripts/failover_matrix.py): what a client saw of one
streamed completion becomes pass, partial, safe or fail."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.failover_matrix import ANSWER, Reply, Scenario, grade, no_prefill_reason, not_routed_around

GROQ = "rag/groq/llama-3.3-70b-versatile"


def reply(**seen: Any) -> Reply:
    values: dict[str, Any] = {"started": 0.0, "elapsed_s": 2.0, "status": 200, **seen}
    return Reply(**values)


WHOLE = {"text": ANSWER, "models": [GROQ], "finish": "stop", "done": True, "rag": {"provider": "groq"}}


@pytest.mark.parametrize(
    ("scenario", "seen", "attempts", "outcome"),
    [
        (Scenario("s"), WHOLE, {"groq": 1}, "pass"),
        (Scenario("s", bound_s=1.0), WHOLE, {"groq": 1}, "partial"),  # whole, but late
        # a truncated answer presented as complete
        (Scenario("s"), {**WHOLE, "text": ANSWER[:40]}, {"groq": 1}, "fail"),
        # an answer whose model hides who answered
        (Scenario("s"), {**WHOLE, "models": ["rag"]}, {"groq": 1}, "fail"),
        (
            Scenario("s"),
            {"text": ANSWER[:40], "models": [GROQ], "error": {"code": "server_error"}},
            {},
            "safe",
        ),
        (Scenario("s"), {"status": 503, "error": {"code": "x"}}, {}, "safe"),
        (
            Scenario("s"),
            {**WHOLE, "text": "quotes [1]", "models": ["rag/extractive/extractive-v1"]},
            {},
            "safe",
        ),
        (Scenario("s"), {"timed_out": True}, {}, "fail"),
        (Scenario("s"), {"text": ANSWER, "models": [GROQ]}, {}, "fail"),  # neither [DONE] nor an error
        # content policy: propagated is a pass, routed around a partial
        (
            Scenario("c", check=not_routed_around, best="error"),
            {"status": 400, "error": {"code": "content_filtered", "message": "content policy"}},
            {"openai": 1, "groq": 0},
            "pass",
        ),
        (Scenario("c", check=not_routed_around, best="error"), WHOLE, {"openai": 1, "groq": 1}, "partial"),
        # a refused prefill given as the reason is partial; the break's own error is safe
        (
            Scenario("p", check=no_prefill_reason, best="safe"),
            {"error": {"code": "bad_request", "message": "prefill is not supported"}},
            {},
            "partial",
        ),
        (
            Scenario("p", check=no_prefill_reason, best="safe"),
            {"error": {"code": "server_error"}},
            {},
            "safe",
        ),
    ],
)
def test_outcome(scenario: Scenario, seen: dict[str, Any], attempts: dict[str, int], outcome: str) -> None:
    assert grade(scenario, reply(**seen), attempts)[0] == outcome
