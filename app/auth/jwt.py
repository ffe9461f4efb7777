"""OAuth 2.1 / OIDC resource server: verify bearer JWTs against the issuer's JWKS.

Only asymmetric algorithms from ``AUTH_JWT_ALGORITHMS`` are accepted, and each token's algorithm
must fit the key its ``kid`` names (an RSA key never verifies an ``ES256`` or ``HS256`` token), so
neither ``alg: none`` nor HS/RS confusion can get through. The JWKS is cached; an unknown ``kid``
triggers one refetch (key rotation), at most once per ``AUTH_JWKS_MIN_REFRESH_S``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.access import groups_of_claim
from app.auth.errors import AuthenticationError, PermissionDeniedError
from app.auth.principal import Principal, Role
from app.auth.repository import TenantRepository
from app.errors import AppError
from app.settings import Settings

logger = structlog.get_logger(__name__)

JWKS_TIMEOUT_S = 5.0
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class JwksUnavailableError(AppError):
    """The issuer's JWKS cannot be fetched and no cached key fits: the service's problem, not the
    client's."""

    status = 503
    code = "jwks_unavailable"
    title = "Token verification unavailable"


def looks_like_jwt(credential: str) -> bool:
    return bool(_JWT_SHAPE.match(credential))


def key_fits_algorithm(jwk: Mapping[str, Any], algorithm: str) -> bool:
    """Whether ``jwk`` may verify a token signed with ``algorithm``."""
    if jwk.get("use", "sig") != "sig":
        return False
    if "alg" in jwk and jwk["alg"] != algorithm:
        return False
    kty = jwk.get("kty")
    if algorithm[:2] in ("RS", "PS"):
        return kty == "RSA"
    if algorithm in _EC_CURVES:
        return kty == "EC" and jwk.get("crv") == _EC_CURVES[algorithm]
    if algorithm == "EdDSA":
        return kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448")
    return False


class JwksCache:
    """The issuer's public keys by ``kid``, fetched with httpx and refreshed when stale."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        max_age_s: float = 3600.0,
        min_refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._http = http
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: list[dict[str, Any]] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def candidates(self, kid: str | None) -> list[dict[str, Any]]:
        """Keys that may have signed a token with this ``kid`` (all keys when it has none)."""
        if self._stale() and self._may_refetch():
            await self._fetch()
        found = self._matching(kid)
        if not found and self._fetched_at is not None and self._may_refetch():
            await self._fetch()  # an unknown kid: the issuer may have rotated its keys
            found = self._matching(kid)
        if self._fetched_at is None:
            raise JwksUnavailableError("the token issuer's keys cannot be fetched")
        return found

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > self._max_age_s

    def _matching(self, kid: str | None) -> list[dict[str, Any]]:
        if kid is None:
            return list(self._keys)
        return [key for key in self._keys if key.get("kid") == kid]

    def _may_refetch(self) -> bool:
        """At most one fetch per ``min_refresh_s``: unknown kids cannot make us hammer the issuer."""
        return self._attempted_at is None or self._clock() - self._attempted_at >= self._min_refresh_s

    async def _fetch(self) -> None:
        requested_at = self._clock()
        async with self._lock:
            if self._attempted_at is not None and self._attempted_at >= requested_at:
                return  # another request fetched while this one waited for the lock
            self._attempted_at = self._clock()
            self.fetches += 1
            try:
                response = await self._http.get(self.url, timeout=JWKS_TIMEOUT_S)
                response.raise_for_status()
                keys = response.json()["keys"]
                if not isinstance(keys, list):
                    raise TypeError("keys is not a list")
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                # Keep serving the keys we have; without any, candidates() answers 503.
                logger.warning("jwks_fetch_failed", error_type=type(exc).__name__)
                return
            self._keys = [key for key in keys if isinstance(key, dict)]
            self._fetched_at = self._clock()
            logger.info("jwks_fetched", keys=len(self._keys))


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    tenant: str
    role: Role
    groups: tuple[str, ...] = ()


def _claim(payload: Mapping[str, Any], name: str) -> Any:
    """``name`` as a top-level claim (URL-style names contain dots), else as a dotted path
    (``realm_access.roles``)."""
    if name in payload:
        return payload[name]
    value: Any = payload
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _highest_role(raw: Any) -> Role | None:
    names = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    if not isinstance(names, list):
        return None
    roles = [Role(name) for name in names if isinstance(name, str) and name in Role.__members__]
    return max(roles, key=lambda role: role.rank, default=None)


def _invalid(code: str = "invalid_token") -> AuthenticationError:
    return AuthenticationError(code=code)


class JwtVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway_s: float = 30.0,
        tenant_claim: str = "tenant",
        roles_claim: str = "roles",
        groups_claim: str = "groups",
    ) -> None:
        self.jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._algorithms = frozenset(algorithms)
        self._leeway_s = leeway_s
        self._tenant_claim = tenant_claim
        self._roles_claim = roles_claim
        self._groups_claim = groups_claim

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> JwtVerifier | None:
        if settings.auth_jwks_url is None:
            return None
        assert settings.auth_jwt_issuer is not None  # the settings validator insists on both
        assert settings.auth_jwt_audience is not None
        jwks = JwksCache(
            settings.auth_jwks_url,
            http,
            max_age_s=settings.auth_jwks_cache_s,
            min_refresh_s=settings.auth_jwks_min_refresh_s,
        )
        return cls(
            jwks,
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            algorithms=settings.auth_jwt_algorithms,
            leeway_s=settings.auth_jwt_leeway_s,
            tenant_claim=settings.auth_tenant_claim,
            roles_claim=settings.auth_roles_claim,
            groups_claim=settings.auth_groups_claim,
        )

    async def verify(self, token: str) -> TokenClaims:
        """The token's subject, tenant slug and role; ``AuthenticationError`` for any token that
        is not signed by the issuer, expired, not yet valid, or meant for someone else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _invalid() from exc
        algorithm = header.get("alg")
        kid = header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise _invalid()
        if kid is not None and not isinstance(kid, str):
            raise _invalid()
        keys = [key for key in await self.jwks.candidates(kid) if key_fits_algorithm(key, algorithm)]
        if len(keys) != 1:  # unknown kid, or an ambiguous kid-less token
            raise _invalid()
        try:
            payload = jwt.decode(
                token,
                key=jwt.PyJWK(keys[0], algorithm=algorithm),
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("token_expired") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKError) as exc:
            raise _invalid() from exc
        return self._claims(payload)

    def _claims(self, payload: Mapping[str, Any]) -> TokenClaims:
        subject = payload.get("sub")
        tenant = _claim(payload, self._tenant_claim)
        if not isinstance(subject, str) or not subject or not isinstance(tenant, str) or not tenant:
            raise _invalid()
        role = _highest_role(_claim(payload, self._roles_claim))
        if role is None:
            raise PermissionDeniedError("the token grants no role of this service")
        groups = groups_of_claim(_claim(payload, self._groups_claim))
        return TokenClaims(subject=subject, tenant=tenant, role=role, groups=groups)


async def principal_for_claims(session: AsyncSession, claims: TokenClaims) -> Principal:
    """The principal of a verified token; a token naming an unknown tenant is not a credential."""
    tenant_id = await TenantRepository(session).id_by_slug(claims.tenant)
    if tenant_id is None:
        raise _invalid()
    return Principal(
        id=f"user:{claims.subject}", tenant_id=tenant_id, role=claims.role, kind="jwt", groups=claims.groups
    )
