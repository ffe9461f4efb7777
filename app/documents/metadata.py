"""A document's client-given metadata: title, tags, author, path and access list, and the checks
every write of it passes (422 ``invalid_metadata``, ``invalid_access``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.auth.access import AccessList
from app.documents.errors import InvalidMetadataError

MAX_TAGS = 50
MAX_TAG_CHARS = 64
MAX_URL_CHARS = 2048  # documents.source_url


@dataclass(frozen=True)
class DocumentMetadata:
    title: str | None = None
    tags: list[str] | None = None
    author: str | None = None
    path: str | None = None
    access: AccessList | None = None  # None: unchanged (a new document: the whole tenant)


def normalise_tags(tags: Sequence[str] | None) -> list[str] | None:
    """Tags may arrive as repeated fields or comma-separated; trimmed, de-duplicated, in order."""
    if tags is None:
        return None
    seen: dict[str, None] = {}
    for raw in tags:
        for tag in raw.split(","):
            tag = tag.strip()
            if not tag:
                continue
            if len(tag) > MAX_TAG_CHARS:
                raise InvalidMetadataError(f"tag {tag[:20]!r}… is longer than {MAX_TAG_CHARS} characters")
            seen.setdefault(tag, None)
    if len(seen) > MAX_TAGS:
        raise InvalidMetadataError(f"at most {MAX_TAGS} tags")
    return list(seen)


def title_of_url(url: str) -> str:
    """A URL document's default title: its host and path, as a person would write it."""
    without_scheme = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return without_scheme[:500] or "Untitled"


def check_lengths(meta: DocumentMetadata) -> None:
    limits = {"title": (meta.title, 500), "author": (meta.author, 200), "path": (meta.path, 1000)}
    for name, (value, limit) in limits.items():
        if value is not None and len(value) > limit:
            raise InvalidMetadataError(f"{name} is longer than {limit} characters")
