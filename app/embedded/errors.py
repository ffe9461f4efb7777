"""Failures to bring up a local dependency; the CLI prints them as one sentence, no traceback."""

from __future__ import annotations

from app.errors import InternalError


class StartupError(InternalError):
    """Raised when the service cannot start; its message (``str()``) is shown to the operator
    verbatim. Raised before any request is served, so no client ever sees it."""

    code = "startup_failed"
