"""Failures to bring up a local dependency; the CLI prints them as one sentence, no traceback."""

from __future__ import annotations


class StartupError(RuntimeError):
    """Raised when the service cannot start; its message is shown to the operator verbatim."""
