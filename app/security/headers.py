"""Security headers on every response; a strict CSP except on the interactive API docs, whose
pages need the Swagger UI / ReDoc scripts and styles from their CDN. Added by the edge layer
(``app.api.middleware``) to every ``http.response.start``; a header the endpoint set itself is kept."""

from __future__ import annotations

HSTS = "max-age=63072000; includeSubDomains"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

RawHeaders = tuple[tuple[bytes, bytes], ...]


def _raw(headers: dict[str, str]) -> RawHeaders:
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())


# Encoded once: (docs page?, https?) → the headers to add.
_SETS: dict[tuple[bool, bool], RawHeaders] = {
    (docs, https): _raw(
        {
            **_ALWAYS,
            "Content-Security-Policy": DOCS_CSP if docs else API_CSP,
            **({"Strict-Transport-Security": HSTS} if https else {}),
        }
    )
    for docs in (False, True)
    for https in (False, True)
}


def is_docs_page(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in DOCS_PATHS)


def security_headers(path: str, *, https: bool) -> RawHeaders:
    """The security headers for a response to ``path`` (lower-case names, as ASGI sends them);
    HSTS only over HTTPS (``TrustedProxies.is_https``)."""
    return _SETS[(is_docs_page(path), https)]
