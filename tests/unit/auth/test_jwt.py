from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from app.auth.errors import AuthenticationError, PermissionDeniedError
from app.auth.jwt import JwksCache, JwksUnavailableError, JwtVerifier, key_fits_algorithm, looks_like_jwt
from app.auth.principal import Role
from app.settings import Settings
from tests.support.jwks import AUDIENCE, ISSUER, Issuer, ec_key, rsa_key, serve_issuer, unsigned_token

pytestmark = pytest.mark.unit

RS = rsa_key("RS256", kid="rs-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer(RS) as served:
        yield served


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_verifier(issuer: Issuer, client: httpx.AsyncClient, clock: Clock, **options: object) -> JwtVerifier:
    jwks = JwksCache(issuer.jwks_url, client, max_age_s=3600, min_refresh_s=30, clock=clock)
    return JwtVerifier(
        jwks,
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["RS256", "PS256", "ES256"],
        leeway_s=30,
        **options,  # type: ignore[arg-type]
    )


async def rejected(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(token)
    assert caught.value.status == 401
    return caught.value.code


async def test_valid_token_yields_subject_tenant_and_role(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    claims = await make_verifier(issuer, client, clock).verify(issuer.token(sub="u-1", roles=["editor"]))
    assert (claims.subject, claims.tenant, claims.role) == ("u-1", "acme", Role.editor)


async def test_ec_and_pss_keys_verify_with_their_algorithms(client, clock) -> None:  # type: ignore[no-untyped-def]
    es, ps = ec_key("ES256", kid="ec-1"), rsa_key("PS256", kid="ps-1")
    with serve_issuer(es, ps) as issuer:
        verifier = make_verifier(issuer, client, clock)
        assert (await verifier.verify(issuer.token(es))).subject == "alice"
        assert (await verifier.verify(issuer.token(ps))).subject == "alice"


async def test_expired_token_is_rejected_but_leeway_tolerates_skew(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    verifier = make_verifier(issuer, client, clock)
    assert await rejected(verifier, issuer.token(lifetime_s=-120)) == "token_expired"
    assert (await verifier.verify(issuer.token(lifetime_s=-10))).subject == "alice"


async def test_not_yet_valid_token_is_rejected_beyond_leeway(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    verifier = make_verifier(issuer, client, clock)
    now = int(time.time())
    assert await rejected(verifier, issuer.token(nbf=now + 600, lifetime_s=900)) == "invalid_token"
    assert (await verifier.verify(issuer.token(nbf=now + 10))).subject == "alice"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"iss": "https://evil.test/"},
        {"exp": None},
        {"sub": None},
        {"aud": None},
    ],
    ids=["wrong-audience", "wrong-issuer", "no-exp", "no-sub", "no-aud"],
)
async def test_wrong_or_missing_registered_claims_are_rejected(  # type: ignore[no-untyped-def]
    issuer: Issuer, client, clock, claims: dict[str, object]
) -> None:
    assert await rejected(make_verifier(issuer, client, clock), issuer.token(**claims)) == "invalid_token"


async def test_alg_none_is_rejected_without_fetching_keys(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    token = unsigned_token(iss=ISSUER, aud=AUDIENCE, sub="mallory", tenant="acme", roles=["admin"], exp=2**31)
    assert looks_like_jwt(token)
    assert await rejected(make_verifier(issuer, client, clock), token) == "invalid_token"
    assert issuer.fetches == 0


async def test_hs256_signed_with_the_public_key_is_rejected(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    public_pem = RS.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "tenant": "acme", "roles": ["admin"]}
    payload["exp"] = int(time.time()) + 300
    # PyJWT itself refuses to HMAC with a PEM key, so forge the HS256 signature by hand.
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "kid": RS.kid}).encode()) + "." + b64(json.dumps(payload).encode())
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert (
        await rejected(make_verifier(issuer, client, clock), f"{signing_input}.{b64(signature)}")
        == "invalid_token"
    )


async def test_algorithm_must_fit_the_key_the_kid_names(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    impostor = ec_key("ES256", kid=RS.kid)  # claims the RSA key's kid
    assert await rejected(make_verifier(issuer, client, clock), issuer.token(impostor)) == "invalid_token"


async def test_token_signed_by_an_unpublished_key_is_rejected(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    forged = rsa_key("RS256", kid=RS.kid)
    assert await rejected(make_verifier(issuer, client, clock), issuer.token(forged)) == "invalid_token"


async def test_tampered_payload_is_rejected(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    header, _, signature = issuer.token(roles=["reader"]).split(".")
    other_payload = issuer.token(roles=["admin"]).split(".")[1]
    assert (
        await rejected(make_verifier(issuer, client, clock), f"{header}.{other_payload}.{signature}")
        == "invalid_token"
    )


@pytest.mark.parametrize("garbage", ["a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", "x" * 10 + ".y.z"])
async def test_malformed_tokens_are_rejected(issuer: Issuer, client, clock, garbage: str) -> None:  # type: ignore[no-untyped-def]
    assert await rejected(make_verifier(issuer, client, clock), garbage) == "invalid_token"


async def test_rotated_key_is_fetched_when_an_unknown_kid_appears(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    verifier = make_verifier(issuer, client, clock)
    await verifier.verify(issuer.token())
    assert issuer.fetches == 1
    rotated = rsa_key("RS256", kid="rs-2")
    issuer.publish(RS, rotated)
    clock.now += 31
    assert (await verifier.verify(issuer.token(rotated))).subject == "alice"
    assert issuer.fetches == 2
    assert (await verifier.verify(issuer.token())).subject == "alice"  # cached, no fetch
    assert issuer.fetches == 2


async def test_unknown_kids_refetch_at_most_once_per_interval(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    verifier = make_verifier(issuer, client, clock)
    await verifier.verify(issuer.token())
    clock.now += 31
    for _ in range(5):
        await rejected(verifier, issuer.token(rsa_key("RS256", kid="never-published")))
        clock.now += 1
    assert issuer.fetches == 2
    rotated = rsa_key("RS256", kid="rs-3")
    issuer.publish(rotated)
    assert await rejected(verifier, issuer.token(rotated)) == "invalid_token"  # still throttled
    clock.now += 30
    assert (await verifier.verify(issuer.token(rotated))).subject == "alice"


async def test_stale_jwks_is_refreshed(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    verifier = make_verifier(issuer, client, clock)
    await verifier.verify(issuer.token())
    clock.now += 3601
    await verifier.verify(issuer.token())
    assert issuer.fetches == 2


async def test_unreachable_jwks_is_a_503_not_a_401(client, clock) -> None:  # type: ignore[no-untyped-def]
    with serve_issuer(RS) as issuer:
        url = issuer.jwks_url
        token = issuer.token()
    jwks = JwksCache(url, client, clock=clock)
    verifier = JwtVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"])
    with pytest.raises(JwksUnavailableError):
        await verifier.verify(token)


async def test_roles_and_tenant_come_from_configurable_claims(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    verifier = make_verifier(
        issuer, client, clock, tenant_claim="https://ragchat.dev/tenant", roles_claim="realm_access.roles"
    )
    token = issuer.token(
        tenant=None,
        roles=None,
        **{"https://ragchat.dev/tenant": "globex", "realm_access": {"roles": ["offline", "reader", "admin"]}},
    )
    claims = await verifier.verify(token)
    assert (claims.tenant, claims.role) == ("globex", Role.admin)


async def test_space_separated_roles_string_is_accepted(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    claims = await make_verifier(issuer, client, clock).verify(issuer.token(roles="reader editor"))
    assert claims.role == Role.editor


async def test_token_without_a_known_role_is_forbidden(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PermissionDeniedError):
        await make_verifier(issuer, client, clock).verify(issuer.token(roles=["superuser"]))


async def test_token_without_tenant_is_rejected(issuer: Issuer, client, clock) -> None:  # type: ignore[no-untyped-def]
    assert await rejected(make_verifier(issuer, client, clock), issuer.token(tenant=None)) == "invalid_token"


def test_key_fits_algorithm_refuses_confusion() -> None:
    rsa_jwk = RS.jwk()
    assert key_fits_algorithm(rsa_jwk, "RS256")
    assert key_fits_algorithm(rsa_jwk, "PS256")
    assert not key_fits_algorithm(rsa_jwk, "ES256")
    assert not key_fits_algorithm(rsa_jwk, "HS256")
    assert not key_fits_algorithm({**rsa_jwk, "alg": "RS512"}, "RS256")
    assert not key_fits_algorithm({**rsa_jwk, "use": "enc"}, "RS256")
    assert not key_fits_algorithm({"kty": "oct", "k": "c2VjcmV0"}, "HS256")


@pytest.mark.parametrize("algorithms", ["HS256", "none", "RS256,HS512", ""])
def test_settings_refuse_symmetric_or_none_algorithms(algorithms: str) -> None:
    with pytest.raises(ValidationError):
        Settings(auth_jwt_algorithms=algorithms, _env_file=None)  # type: ignore[call-arg]


def test_settings_need_issuer_and_audience_with_a_jwks_url() -> None:
    with pytest.raises(ValidationError):
        Settings(auth_jwks_url="https://issuer.test/jwks", _env_file=None)  # type: ignore[call-arg]


def test_pyjwt_never_accepts_none_even_when_asked_loosely() -> None:
    token = unsigned_token(sub="x")
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, key="", algorithms=["RS256"])
