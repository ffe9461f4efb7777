"""Langfuse tracing behind a small facade that is a no-op when Langfuse is not configured.

    async with tracer.trace("chat", input={"question": q}, user_id=principal.id, session_id=cid):
        async with tracer.span("retrieval", kind="retriever", input={"query": q}) as span:
            chunks = await retrieve(...)
            span.update(output={"chunks": len(chunks)})
        async with tracer.generation("generation", model=model, input=messages) as gen:
            ...
            gen.update(output=text, usage={"input": 120, "output": 80})

Guarantees:

* The Langfuse trace id is the request's ``trace_id`` (the ``X-Trace-ID`` header and every log
  line): a span opened with no active parent joins the trace of the current correlation id.
* Inputs, outputs, metadata and status messages are masked (``masking.py``) before they are
  attached to a span, so nothing unmasked leaves the process.
* Spans are exported by a background batch processor: a slow or failing Langfuse never delays a
  request. ``aclose`` (app shutdown) waits at most ``LANGFUSE_FLUSH_TIMEOUT_S`` for the last
  batch. Any error inside the tracing code is logged and swallowed, never raised.
* ``LANGFUSE_SAMPLE_RATE`` samples whole traces by trace id (all spans of a request or none).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import structlog
from opentelemetry import trace as otel_trace

from app.observability.context import current_trace_id, is_valid_trace_id
from app.observability.masking import mask_for_export, mask_text
from app.settings import Settings

if TYPE_CHECKING:
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

logger = structlog.get_logger(__name__)

SpanKind = Literal["span", "chain", "retriever", "embedding", "tool", "agent", "guardrail", "evaluator"]
Level = Literal["DEBUG", "DEFAULT", "WARNING", "ERROR"]
_GENERATION_LIKE = frozenset({"generation", "embedding"})


class SpanHandle:
    """What a ``span``/``generation`` block yields. Disabled tracing yields this no-op base."""

    trace_id: str | None = None

    def update(
        self,
        *,
        output: Any = None,
        metadata: Mapping[str, Any] | None = None,
        level: Level | None = None,
        status_message: str | None = None,
        model: str | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> None:
        return None


NOOP_SPAN = SpanHandle()


class _LangfuseSpanHandle(SpanHandle):
    def __init__(self, observation: Any, *, generation_like: bool) -> None:
        self._observation = observation
        self._generation_like = generation_like
        self.trace_id = getattr(observation, "trace_id", None)

    def update(
        self,
        *,
        output: Any = None,
        metadata: Mapping[str, Any] | None = None,
        level: Level | None = None,
        status_message: str | None = None,
        model: str | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "output": output,
            "metadata": dict(metadata) if metadata is not None else None,
            "level": level,
            "status_message": mask_text(status_message) if status_message else None,
        }
        if self._generation_like:
            fields["model"] = model
            fields["usage_details"] = dict(usage) if usage is not None else None
        try:
            self._observation.update(**{key: value for key, value in fields.items() if value is not None})
        except Exception as exc:
            logger.warning("tracing_update_failed", error_type=type(exc).__name__)


class SpanScope:
    """``with`` / ``async with``: opens an observation, makes it current, ends it on exit. An
    exception leaving the block marks the observation ERROR (masked message) and propagates."""

    def __init__(
        self,
        client: Langfuse | None,
        name: str,
        *,
        kind: str,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        model: str | None = None,
        model_parameters: Mapping[str, Any] | None = None,
        trace_attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._name = name
        self._kind = kind
        self._input = input
        self._metadata = dict(metadata) if metadata is not None else None
        self._model = model
        self._model_parameters = dict(model_parameters) if model_parameters is not None else None
        self._trace_attributes = trace_attributes
        self._scopes: list[Any] = []
        self._handle: SpanHandle = NOOP_SPAN

    def __enter__(self) -> SpanHandle:
        if self._client is None:
            return NOOP_SPAN
        try:
            self._open(self._client)
        except Exception as exc:
            logger.warning("tracing_span_failed", span=self._name, error_type=type(exc).__name__)
            self._close()
            self._handle = NOOP_SPAN
        return self._handle

    def _open(self, client: Langfuse) -> None:
        options: dict[str, Any] = {"name": self._name, "as_type": self._kind}
        if self._input is not None:
            options["input"] = self._input
        if self._metadata is not None:
            options["metadata"] = self._metadata
        if self._kind in _GENERATION_LIKE:
            options["model"] = self._model
            options["model_parameters"] = self._model_parameters
        request_trace_id = current_trace_id()
        if not otel_trace.get_current_span().get_span_context().is_valid and is_valid_trace_id(
            request_trace_id
        ):
            options["trace_context"] = {"trace_id": request_trace_id}
        scope = client.start_as_current_observation(**options)
        observation = scope.__enter__()
        self._scopes.append(scope)
        self._handle = _LangfuseSpanHandle(observation, generation_like=self._kind in _GENERATION_LIKE)
        if self._trace_attributes:
            from langfuse import propagate_attributes

            attributes = propagate_attributes(**self._trace_attributes)
            attributes.__enter__()
            self._scopes.append(attributes)

    def _close(self) -> None:
        while self._scopes:
            scope = self._scopes.pop()
            try:
                scope.__exit__(None, None, None)
            except Exception as exc:
                logger.warning("tracing_span_close_failed", span=self._name, error_type=type(exc).__name__)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self._handle is not NOOP_SPAN:
            level: Level = "WARNING" if isinstance(exc, asyncio.CancelledError) else "ERROR"
            self._handle.update(level=level, status_message=f"{type(exc).__name__}: {exc}")
        # The raw exception is not handed to OpenTelemetry: its message and traceback would be
        # exported unmasked. The masked status message above carries what is needed.
        self._close()

    async def __aenter__(self) -> SpanHandle:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Tracer:
    """The tracing facade on ``resources.telemetry.tracer``."""

    def __init__(
        self,
        client: Langfuse | None = None,
        *,
        provider: TracerProvider | None = None,
        public_key: str | None = None,
        flush_timeout_s: float = 3.0,
    ) -> None:
        self._client = client
        self._provider = provider
        self._public_key = public_key
        self.flush_timeout_s = flush_timeout_s

    @classmethod
    def disabled(cls) -> Tracer:
        return cls()

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def trace(
        self,
        name: str,
        *,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> SpanScope:
        """The root observation of a request (one trace per chat request); ``user_id`` and
        ``session_id`` (conversation id) are set on the trace and on every span inside it."""
        attributes: dict[str, Any] = {"trace_name": name}
        if user_id:
            attributes["user_id"] = mask_text(user_id)
        if session_id:
            attributes["session_id"] = session_id
        if tags:
            attributes["tags"] = list(tags)
        return SpanScope(
            self._client, name, kind="chain", input=input, metadata=metadata, trace_attributes=attributes
        )

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = "span",
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SpanScope:
        """A step: ``cache_lookup``, ``memory``, ``embedding`` (kind="embedding"), ``retrieval``
        (kind="retriever") … nested under the current observation."""
        return SpanScope(self._client, name, kind=kind, input=input, metadata=metadata)

    def generation(
        self,
        name: str,
        *,
        model: str | None = None,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        model_parameters: Mapping[str, Any] | None = None,
    ) -> SpanScope:
        """An LLM call (one per provider attempt, or the final answer)."""
        return SpanScope(
            self._client,
            name,
            kind="generation",
            input=input,
            metadata=metadata,
            model=model,
            model_parameters=model_parameters,
        )

    def record_generation(
        self,
        name: str,
        *,
        model: str | None,
        input: Any = None,
        output: Any = None,
        metadata: Mapping[str, Any] | None = None,
        usage: Mapping[str, int] | None = None,
        level: Level | None = None,
        status_message: str | None = None,
    ) -> None:
        """A generation that already happened (router observer hooks): opened and ended at once,
        with the measured latency expected in ``metadata``."""
        with self.generation(name, model=model, input=input, metadata=metadata) as generation:
            generation.update(output=output, usage=usage, level=level, status_message=status_message)

    def score(self, trace_id: str, name: str, value: float, *, comment: str | None = None) -> None:
        """A numeric score on the trace ``trace_id`` (user feedback on an answer), queued and sent
        in the background like spans. Nothing is sent when tracing is off; the comment is masked
        like span inputs; an error is logged and swallowed. A trace that ``LANGFUSE_SAMPLE_RATE``
        sampled out gets no score either (Langfuse's client decides by the same trace id)."""
        client = self._client
        if client is None or not is_valid_trace_id(trace_id):
            return
        try:
            client.create_score(
                trace_id=trace_id,
                name=name,
                value=value,
                data_type="NUMERIC",
                comment=mask_text(comment) if comment else None,
            )
        except Exception as exc:
            logger.warning("tracing_score_failed", score=name, error_type=type(exc).__name__)

    def flush_blocking(self) -> None:
        """Blocks until pending spans are exported (tests, scripts); not for request paths."""
        if self._provider is not None:
            self._provider.force_flush(timeout_millis=int(self.flush_timeout_s * 1000))

    async def aclose(self) -> None:
        """Flush and stop, waiting at most ``flush_timeout_s``: an unreachable or hanging
        Langfuse delays shutdown by that bound, never more."""
        client, provider = self._client, self._provider
        if client is None:
            return
        self._client = None
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def shut_down() -> None:
            try:
                client.shutdown()
                _stop_prompt_cache(client)
                if provider is not None:
                    provider.shutdown()
            except Exception as exc:
                logger.warning("tracing_shutdown_failed", error_type=type(exc).__name__)
            finally:
                _forget_langfuse_client(self._public_key)
                # After the bound expired the loop may be gone; then nobody is waiting.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(done.set)

        # A daemon thread, not the default executor: asyncio waits for executor threads when the
        # loop closes, which would turn the bound into a hang.
        threading.Thread(target=shut_down, name="langfuse-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(done.wait(), timeout=self.flush_timeout_s)
        except TimeoutError:
            logger.warning("tracing_flush_timed_out", bound_s=self.flush_timeout_s)


def _stop_prompt_cache(client: Langfuse) -> None:
    # Langfuse's shutdown() stops its span, score and media threads but not the prompt cache's
    # refresh thread; each app built in a process (tests, reloads) would leave one behind.
    resources = getattr(client, "_resources", None)
    task_manager = getattr(getattr(resources, "prompt_cache", None), "_task_manager", None)
    if task_manager is not None:
        task_manager.shutdown()


def _forget_langfuse_client(public_key: str | None) -> None:
    # Langfuse keeps one resource manager per public key for the process's lifetime; after our
    # shutdown it would hand the stopped one to the next app built in this process (tests,
    # reloads), silently dropping its spans.
    from langfuse._client.resource_manager import LangfuseResourceManager

    instances = getattr(LangfuseResourceManager, "_instances", None)
    if public_key is not None and isinstance(instances, dict):
        instances.pop(public_key, None)


def create_tracer(settings: Settings) -> Tracer:
    """Langfuse when both keys are set, else the no-op tracer. Builds a private OpenTelemetry
    ``TracerProvider`` (never the global one) whose sampler applies ``LANGFUSE_SAMPLE_RATE``."""
    public_key = settings.langfuse_public_key
    secret = settings.langfuse_secret_key
    if not public_key or secret is None or not secret.get_secret_value():
        return Tracer.disabled()
    from langfuse import Langfuse
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased

    rate = settings.langfuse_sample_rate
    provider = TracerProvider(
        # Not parent-based: the request's trace id alone decides, for every span of the trace.
        sampler=ALWAYS_ON if rate >= 1 else TraceIdRatioBased(rate),
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name}),
        shutdown_on_exit=False,
    )
    client = Langfuse(
        public_key=public_key,
        secret_key=secret.get_secret_value(),
        base_url=settings.langfuse_host or "https://cloud.langfuse.com",
        timeout=settings.langfuse_timeout_s,
        sample_rate=rate,
        mask=mask_for_export,
        tracer_provider=provider,
    )
    return Tracer(
        client, provider=provider, public_key=public_key, flush_timeout_s=settings.langfuse_flush_timeout_s
    )


__all__ = ["NOOP_SPAN", "SpanHandle", "SpanScope", "Tracer", "create_tracer"]
