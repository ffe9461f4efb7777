"""Typed provider errors. Adapters translate every SDK and transport failure into one of these;
the policy decides from the class whether to retry, and from its ``cause`` whether the chain
benches the provider (``ProviderPolicy.cooldown_for``).

They are ``AppError``s like every other error of the service, but the chain catches each one and
falls back to the next provider, so none reaches a client: ``code`` names the failure in metrics,
logs and a stream's ``StreamFailed``. The provider's own HTTP status is ``upstream_status``
(``status`` is the one a client would get, as for any ``AppError``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from app.errors import AppError
from app.observability.masking import mask_text

# What a failure is evidence against:
#   "provider": the provider's health (5xx, 429, timeouts, broken or truncated answers);
#   "account":  the operator's key or account (401/403): every request would fail alike;
#   "request":  this request alone (its body, its prompt, what the model made of it);
#   "capacity": this worker's own concurrency limit, not the provider.
Cause = Literal["provider", "account", "request", "capacity"]


def provider_key_header(provider: str) -> str:
    """The request header carrying a caller's own key for ``provider``: ``X-Provider-Key-Openai``."""
    return "X-Provider-Key-" + provider.capitalize()


class ProviderError(AppError):
    status = 502
    code = "provider_error"
    title = "Language model provider failed"
    retryable: ClassVar[bool] = False
    cause: ClassVar[Cause] = "provider"

    def __init__(
        self, message: str, *, upstream_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.upstream_status = upstream_status
        self.retry_after = retry_after

    def describe(self) -> str:
        status = f" (HTTP {self.upstream_status})" if self.upstream_status else ""
        return f"{self.code}{status}: {self.message}"[:300]


class ProviderTimeout(ProviderError):
    """No answer in time: the connection, the first token, a stalled stream or the budget. Not
    retried on the same provider: it already had its chance, and the next one answers sooner."""

    status = 504
    code = "timeout"


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True


class AuthFailed(ProviderError):
    code = "auth_failed"
    cause = "account"


class BadRequest(ProviderError):
    """4xx the request's body caused (400/404/413/422)."""

    code = "bad_request"
    cause = "request"


class ContextTooLong(BadRequest):
    code = "context_too_long"


class ContentFiltered(BadRequest):
    """The provider's content policy refused the request or its answer (OpenAI/Groq
    ``content_policy_violation`` / ``content_filter``, Gemini's safety block). The chain neither
    retries it nor falls back (unless ``ROUTER_FAILOVER_ON_CONTENT_FILTER``): the client gets
    ``AnswerRefused`` with the provider's reason."""

    code = "content_filtered"


class ServerError(ProviderError):
    """5xx answers and broken connections."""

    code = "server_error"
    retryable = True


class MalformedResponse(ProviderError):
    code = "malformed_response"


class TruncatedStream(MalformedResponse):
    """The stream ended without the provider's end-of-answer marker."""

    code = "truncated_stream"


class EmptyResponse(MalformedResponse):
    """The provider finished without any text (or only whitespace): not an answer, so the next
    provider gets the request. Not the provider's fault as far as anyone can tell: a model's output
    follows the prompt, and any caller can ask for nothing or trip a content filter."""

    code = "empty_response"
    cause = "request"


class ProviderBusy(ProviderError):
    """Every concurrency slot of this provider stayed taken; try the next one, no cooldown."""

    status = 503
    code = "busy"
    cause = "capacity"


class NothingToAnswer(BadRequest):
    """The extractive answerer has no passages to quote."""

    code = "nothing_to_answer"


class UnknownModelError(AppError):
    status = 422
    code = "unknown_model"
    title = "Unknown model"


class ProviderKeyRejected(AppError):
    """The provider refused the key the caller sent for this request (``X-Provider-Key-*``, a
    401/403 upstream). Not a ``ProviderError``: the chain does not fall back to the operator's
    providers, because the caller asked for their own key and must learn that it does not work.
    The detail names the provider and the header, never the key or the provider's text."""

    status = 422
    code = "provider_key_rejected"
    title = "Provider key rejected"

    @classmethod
    def by(cls, provider: str, upstream_status: int | None) -> ProviderKeyRejected:
        status = f" (HTTP {upstream_status})" if upstream_status else ""
        return cls(
            f"{provider} refused the key sent in {provider_key_header(provider)}{status}; check the "
            "key, or leave the header out to use this service's own providers"
        )


class AnswerRefused(AppError):
    """A provider's content policy refused to answer (``ContentFiltered``), told to the client:
    422 ``content_filtered`` naming the provider and quoting its reason, masked of secrets."""

    status = 422
    code = "content_filtered"
    title = "Refused by the provider's content policy"

    @classmethod
    def by(cls, provider: str, error: ProviderError) -> AnswerRefused:
        reason = mask_text(error.message)[:500]
        return cls(
            f"{provider} refused to answer under its content policy: {reason}",
            extra={"provider": provider},
        )


class InvalidProviderKey(AppError):
    """An ``X-Provider-Key-*`` header this service cannot use: malformed, or for a provider it
    does not route to (not in ``LLM_PROVIDERS``)."""

    status = 422
    code = "invalid_provider_key"
    title = "Invalid provider key"
