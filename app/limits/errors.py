from __future__ import annotations

from app.errors import AppError


class RateLimitedError(AppError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class RateLimitUnavailableError(AppError):
    """Redis is unreachable and ``RATE_LIMIT_FAIL_OPEN`` is false."""

    status = 503
    code = "rate_limit_unavailable"
    title = "Rate limiting unavailable"


class TooManyStreamsError(AppError):
    """The principal already has ``MAX_STREAMS_PER_PRINCIPAL`` answers streaming."""

    status = 429
    code = "too_many_streams"
    title = "Too many concurrent streams"
