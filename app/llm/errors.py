"""Typed provider errors. Adapters translate every SDK and transport failure into one of these;
the policy decides from the class whether to retry, and the chain whether to cool down."""

from __future__ import annotations

from typing import ClassVar

from app.errors import AppError


class ProviderError(Exception):
    code: ClassVar[str] = "provider_error"
    retryable: ClassVar[bool] = False
    # A request-specific failure (a prompt too long) says nothing about the provider's health.
    cools_down: ClassVar[bool] = True

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def describe(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.code}{status}: {self.message}"[:300]


class ProviderTimeout(ProviderError):
    code = "timeout"
    retryable = True


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True


class AuthFailed(ProviderError):
    code = "auth_failed"


class BadRequest(ProviderError):
    code = "bad_request"
    cools_down = False


class ContextTooLong(BadRequest):
    code = "context_too_long"


class ServerError(ProviderError):
    """5xx answers and broken connections."""

    code = "server_error"
    retryable = True


class MalformedResponse(ProviderError):
    code = "malformed_response"


class TruncatedStream(MalformedResponse):
    """The stream ended without the provider's end-of-answer marker."""

    code = "truncated_stream"


class ProviderBusy(ProviderError):
    """Every concurrency slot of this provider stayed taken; try the next one, no cooldown."""

    code = "busy"
    cools_down = False


class NothingToAnswer(BadRequest):
    """The extractive answerer has no passages to quote."""

    code = "nothing_to_answer"


class UnknownModelError(AppError):
    status = 422
    code = "unknown_model"
    title = "Unknown model"
