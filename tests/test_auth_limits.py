"""Issue #14, the verifier's part: time claims that overflow, the policy size limit, and the JWKS cache's
TTL (keys removed upstream stop being trusted) against a real local JWKS endpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from outboxhub.auth.jwks import cache_max_age
from outboxhub.auth.jwt import MAX_TIME_CLAIM, AuthConfig, TokenVerifier
from outboxhub.errors import AuthError

SECRET = "0123456789abcdef" * 4


def raw_token(payload_json: str, secret: str = SECRET) -> str:
    """An HS256 token over a payload written as raw JSON (so it may hold numbers no encoder would)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(payload_json.encode())
    sig = b64(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + sig).decode()


@pytest.mark.parametrize(
    ("claims", "claim"),
    [
        ('{"exp": 1' + "0" * 400 + "}", "exp"),
        ('{"exp": 9223372036854775808}', "exp"),
        ('{"exp": 2000000000, "iat": 1' + "0" * 30 + "}", "iat"),
    ],
)
async def test_time_claims_out_of_range_are_refused_naming_the_claim(claims: str, claim: str) -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET)) as verifier:
        with pytest.raises(AuthError) as info:
            await verifier.verify(raw_token(claims))
    assert info.value.code == "jwt_invalid"
    assert claim in info.value.msg


async def test_a_huge_nbf_is_refused_with_a_clear_message() -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET)) as verifier:
        with pytest.raises(AuthError, match="not valid before"):
            await verifier.verify(raw_token('{"exp": 2000000000, "nbf": 1' + "0" * 400 + "}"))


async def test_the_last_accepted_time_is_year_9999() -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET)) as verifier:
        principal = await verifier.verify(raw_token(json.dumps({"exp": MAX_TIME_CLAIM, "scopes": []})))
    assert principal.exp == MAX_TIME_CLAIM


def _policy_token(n: int) -> str:
    rules = [{"effect": "allow", "action": "subscribe", "topics": [f"t{i}.**"]} for i in range(n)]
    return jwt.encode({"exp": int(time.time()) + 60, "policy": {"rules": rules}}, SECRET, algorithm="HS256")


async def test_policies_over_the_limit_are_refused_naming_it() -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET, max_policy_rules=10)) as verifier:
        assert len((await verifier.verify(_policy_token(10))).policy.rules) == 10
        with pytest.raises(AuthError, match=r"11 rules .* the limit is 10 \(max_policy_rules\)"):
            await verifier.verify(_policy_token(11))
        many_scopes = jwt.encode(
            {"exp": int(time.time()) + 60, "scopes": [f"publish:s{i}" for i in range(11)]}, SECRET
        )
        with pytest.raises(AuthError, match="max_policy_rules"):
            await verifier.verify(many_scopes)


# ---------------------------------------------------------------- the JWKS cache's TTL


class Jwks:
    """A real JWKS endpoint on 127.0.0.1 whose keys, status and Cache-Control the test changes."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.requests = 0
        self.status = 200
        self.cache_control: str | None = None
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status)
        doc = {
            "keys": [
                {**RSAAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": kid}
                for kid, k in self.keys.items()
            ]
        }
        headers = {"Cache-Control": self.cache_control} if self.cache_control else None
        return web.json_response(doc, headers=headers)

    def token(self, kid: str) -> str:
        claims = {"exp": int(time.time()) + 60, "iss": "idp", "scopes": ["publish:a"]}
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


@pytest.fixture
async def jwks(rsa_keys: list[rsa.RSAPrivateKey]) -> AsyncIterator[Jwks]:
    server = Jwks()
    server.keys = {"old": rsa_keys[0], "new": rsa_keys[1]}
    app = web.Application()
    app.router.add_get("/jwks.json", server.handle)
    server.runner = web.AppRunner(app, shutdown_timeout=1.0)
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0)
    await site.start()
    host, port = server.runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/jwks.json?token=hunter2&tenant=x"
    yield server
    await server.runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _settle(verifier: TokenVerifier) -> None:
    """Let a background JWKS refetch finish."""
    jwks = verifier._jwks
    assert jwks is not None
    for _ in range(200):
        if jwks._inflight is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background JWKS fetch did not finish")


async def test_a_key_removed_upstream_stops_being_trusted_after_the_ttl(jwks: Jwks) -> None:
    clock = Clock()
    cfg = AuthConfig(jwks_url=jwks.url, jwks_ttl_s=60, jwks_cooldown_s=0, issuer="idp")
    async with TokenVerifier(cfg, clock=clock) as verifier:
        old = jwks.token("old")
        await verifier.verify(old)
        assert jwks.requests == 1
        del jwks.keys["old"]  # rotated out upstream
        clock.now += 30
        await verifier.verify(old)  # within the TTL: cached, no fetch
        assert jwks.requests == 1
        clock.now += 31
        await verifier.verify(old)  # stale: answered from the cache at once, refetched in the background
        await _settle(verifier)
        assert jwks.requests == 2
        with pytest.raises(AuthError, match="unknown key id 'old'"):
            await verifier.verify(old)
        await verifier.verify(jwks.token("new"))


async def test_a_down_endpoint_never_blocks_a_cached_kid(jwks: Jwks) -> None:
    clock = Clock()
    cfg = AuthConfig(jwks_url=jwks.url, jwks_ttl_s=10, jwks_cooldown_s=0, issuer="idp")
    async with TokenVerifier(cfg, clock=clock) as verifier:
        token = jwks.token("new")
        await verifier.verify(token)
        jwks.status = 503
        clock.now += 11
        for _ in range(3):
            await verifier.verify(token)  # stale, endpoint down: the last keys stay in use
            await _settle(verifier)
        assert jwks.requests >= 2


async def test_cache_control_max_age_shortens_the_ttl(jwks: Jwks) -> None:
    clock = Clock()
    jwks.cache_control = "public, max-age=5"
    cfg = AuthConfig(jwks_url=jwks.url, jwks_ttl_s=600, jwks_cooldown_s=0, issuer="idp")
    async with TokenVerifier(cfg, clock=clock) as verifier:
        token = jwks.token("new")
        await verifier.verify(token)
        clock.now += 4
        await verifier.verify(token)
        assert jwks.requests == 1
        clock.now += 2
        await verifier.verify(token)
        await _settle(verifier)
        assert jwks.requests == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("max-age=30", 30.0),
        ('public, MAX-AGE="7"', 7.0),
        ("no-store", 0.0),
        ("max-age=x", None),
    ],
)
def test_cache_max_age(header: str | None, seconds: float | None) -> None:
    assert cache_max_age(header) == seconds


async def test_a_jwks_fetch_error_never_shows_the_url_query(jwks: Jwks) -> None:
    jwks.status = 500
    cfg = AuthConfig(jwks_url=jwks.url, jwks_cooldown_s=0, issuer="idp")
    async with TokenVerifier(cfg) as verifier:
        with pytest.raises(AuthError) as info:
            await verifier.verify(jwks.token("new"))
    assert "HTTP 500" in info.value.msg
    assert "hunter2" not in info.value.msg and "token=***" in info.value.msg
