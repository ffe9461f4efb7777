from __future__ import annotations

from app.errors import AppError


class AuthenticationError(AppError):
    """Missing or invalid credentials. The detail never says which part was wrong."""

    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str = "valid credentials are required", *, code: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="ragchat"'})
        if code is not None:
            self.code = code  # type: ignore[misc]


class PermissionDeniedError(AppError):
    status = 403
    code = "forbidden"
    title = "Forbidden"
