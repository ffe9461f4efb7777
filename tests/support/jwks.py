"""A local OIDC issuer for tests: keys generated here, a JWKS served over real HTTP from a thread,
and tokens signed with those keys (or deliberately wrong ones)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.test/"
AUDIENCE = "ragchat-api"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SigningKey:
    kid: str
    private: PrivateKey
    algorithm: str

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = json.loads(RSAAlgorithm.to_jwk(public))
        else:
            data = json.loads(ECAlgorithm.to_jwk(public))
        return {**data, "kid": self.kid, "use": "sig"}


def rsa_key(algorithm: str = "RS256", kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid or uuid.uuid4().hex[:12], private, algorithm)


def ec_key(algorithm: str = "ES256", kid: str | None = None) -> SigningKey:
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[algorithm]
    return SigningKey(kid or uuid.uuid4().hex[:12], ec.generate_private_key(curve), algorithm)


@dataclass
class Issuer:
    """Serves ``{"keys": [...]}`` of ``published`` at ``jwks_url`` and counts the fetches."""

    published: list[SigningKey] = field(default_factory=list)
    fetches: int = 0
    jwks_url: str = ""

    def publish(self, *keys: SigningKey) -> None:
        self.published = list(keys)

    def token(
        self,
        key: SigningKey | None = None,
        *,
        sub: str = "alice",
        tenant: str | None = "acme",
        roles: Any = ("reader",),
        lifetime_s: int = 300,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        key = key or self.published[0]
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + lifetime_s,
            "roles": list(roles) if isinstance(roles, tuple) else roles,
        }
        if tenant is not None:
            payload["tenant"] = tenant
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(
            payload, key.private, algorithm=key.algorithm, headers={"kid": key.kid, **(headers or {})}
        )


@contextmanager
def serve_issuer(*keys: SigningKey) -> Iterator[Issuer]:
    issuer = Issuer(list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.fetches += 1
            body = json.dumps({"keys": [key.jwk() for key in issuer.published]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.jwks_url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def unsigned_token(**payload: Any) -> str:
    """An ``alg: none`` token, as an attacker would craft it."""
    import base64

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."
