"""Credential → principal: an API key (``rk_…``) or, when ``AUTH_JWKS_URL`` is set, a JWT."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from cachetools import TTLCache
from redis.asyncio import Redis

from app.auth.api_keys import hash_key, verify_key
from app.auth.errors import AuthenticationError
from app.auth.jwt import JwtVerifier, looks_like_jwt, principal_for_claims
from app.auth.principal import Principal
from app.auth.repository import ApiKeyRepository
from app.db.redis import KeySpace
from app.db.unit_of_work import UnitOfWork, end_read

LAST_USED_RESOLUTION_S = 300
# How long this process trusts an API key it has verified: a revoked key stops working on every
# worker within this time, and a client sending many requests costs one lookup per key per second.
VERIFIED_KEY_TTL_S = 1.0


class Authenticator:
    """One database session per credential checked: the key lookup and, at most once per key and
    ``LAST_USED_RESOLUTION_S``, its ``last_used_at`` update share it. A verified API key is then
    trusted for ``VERIFIED_KEY_TTL_S`` (remembered by its SHA-256, never by the key itself);
    unknown and revoked keys are never remembered."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        redis: Redis,
        keys: KeySpace,
        jwt_verifier: JwtVerifier | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._redis = redis
        self._keys = keys
        self._jwt_verifier = jwt_verifier
        self.clock = clock  # replaceable, like ``RequestLimiter.clock``: tests jump it
        self._verified: TTLCache[str, Principal] = TTLCache(
            maxsize=10_000, ttl=VERIFIED_KEY_TTL_S, timer=lambda: self.clock()
        )

    async def principal_for(self, credential: str) -> Principal:
        if looks_like_jwt(credential):
            return await self._principal_for_jwt(credential)
        digest = hash_key(credential)
        trusted = self._verified.get(digest)
        if trusted is not None:
            return trusted
        principal = await self._verify_key(credential)
        self._verified[digest] = principal
        return principal

    def trusted(self, credential: str) -> Principal | None:
        """The principal of an API key this process verified within ``VERIFIED_KEY_TTL_S``, found
        without any I/O; None for any other credential (unknown, a JWT, or no longer trusted)."""
        if looks_like_jwt(credential):
            return None
        return self._verified.get(hash_key(credential))

    def forget_key(self, key_id: uuid.UUID) -> None:
        """Stop trusting a key in this process now (it was just revoked here); other processes
        stop within ``VERIFIED_KEY_TTL_S``."""
        principal_id = f"key:{key_id}"
        for digest, principal in list(self._verified.items()):
            if principal.id == principal_id:
                self._verified.pop(digest, None)

    async def _verify_key(self, credential: str) -> Principal:
        async with self._unit_of_work() as db:
            principal = await verify_key(db, credential)
            if principal is None:
                raise AuthenticationError(code="invalid_credentials")
            key_id = principal.id.removeprefix("key:")
            if await self._first_use_in_window(key_id):
                await ApiKeyRepository(db).mark_used(uuid.UUID(key_id), datetime.now(UTC))
            await db.commit()  # a lookup alone too (``app.db.unit_of_work.end_read``)
        return principal

    async def _first_use_in_window(self, key_id: str) -> bool:
        try:
            first = await self._redis.set(
                self._keys.key("auth", "used", key_id), 1, nx=True, ex=LAST_USED_RESOLUTION_S
            )
        except Exception:
            return False  # bookkeeping never fails a request
        return bool(first)

    async def _principal_for_jwt(self, token: str) -> Principal:
        if self._jwt_verifier is None:  # JWTs are not accepted unless AUTH_JWKS_URL is set
            raise AuthenticationError(code="invalid_credentials")
        claims = await self._jwt_verifier.verify(token)
        async with self._unit_of_work() as db:
            principal = await principal_for_claims(db, claims)
            await end_read(db)
            return principal
