from __future__ import annotations

from app.errors import NotFoundError, ServiceUnavailableError

RETRY_AFTER_S = 1


class TraceNotFoundError(NotFoundError):
    """No answer under this trace id for the caller: never recorded, expired, another principal's
    or another tenant's. One answer for all of them, so nothing is revealed about the others."""

    code = "trace_not_found"
    title = "Trace not found"

    def __init__(self) -> None:
        super().__init__("No answer you received has this trace id, or it is older than the feedback window.")


class FeedbackUnavailableError(ServiceUnavailableError):
    """Redis, where answered turns are recorded, cannot be read."""

    code = "feedback_unavailable"
    title = "Feedback unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The record of answered questions is unreachable; retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
