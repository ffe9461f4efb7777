"""One exception tree: every exception class defined in ``app`` descends from ``AppError``, so each
has a stable ``code`` and a status, and one handler renders it (see ``app/errors.py``)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest

import app
from app.errors import AppError

pytestmark = pytest.mark.unit

# Modules that do something when imported: the launcher runs the CLI, the ASGI module builds the app.
NOT_IMPORTED = frozenset({"app.__main__", "app.asgi"})

# Internal control flow: raised and caught inside one module, never seen outside it.
CONTROL_FLOW = frozenset(
    {
        "app.documents.parsing.pdf._ParserTimeout",  # the PDF parser child missed its deadline
        "app.documents.parsing.pdf._ParserExited",  # the PDF parser child is gone
    }
)


def _subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def exception_classes_of_app() -> dict[str, type[BaseException]]:
    for module in pkgutil.walk_packages(app.__path__, prefix="app."):
        if module.name not in NOT_IMPORTED:
            importlib.import_module(module.name)
    return {
        f"{cls.__module__}.{cls.__qualname__}": cls
        for cls in _subclasses(BaseException)
        if cls.__module__ == "app" or cls.__module__.startswith("app.")
    }


def test_every_exception_the_service_defines_descends_from_app_error() -> None:
    outside = sorted(
        name
        for name, cls in exception_classes_of_app().items()
        if not issubclass(cls, AppError) and name not in CONTROL_FLOW
    )
    assert outside == [], "make these AppError subclasses (with a status and a stable code)"


def test_every_error_has_its_own_code_title_and_an_http_status() -> None:
    for name, cls in exception_classes_of_app().items():
        if issubclass(cls, AppError):
            assert 400 <= cls.status <= 599, name
            assert cls.code and cls.code == cls.code.lower() and " " not in cls.code, name
            assert cls.title, name


def test_the_walk_sees_the_errors_this_pass_moved_into_the_tree() -> None:
    """Guards the walk itself: were a module not imported, its errors would pass unseen."""
    found = exception_classes_of_app()
    for name in (
        "app.llm.errors.ProviderError",
        "app.llm.errors.TruncatedStream",
        "app.rag.embeddings.base.EmbeddingError",
        "app.rag.prompt.PromptTooLargeError",
        "app.embedded.errors.StartupError",
    ):
        assert name in found and issubclass(found[name], AppError), name
