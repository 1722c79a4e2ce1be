"""AUTH at the gateway: the attack corpus ends in the right ERR and close code; token expiry while
connected; re-AUTH in time keeps the connection. (Token verification itself: test_auth.py.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from outboxhub.app import Hub

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

AUD = "outboxhub-test"
ISS = "https://issuer.test"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """The JWKS key (kid "k1") and a key the JWKS does not know."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture
async def jwks_url(rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> AsyncIterator[str]:
    """A real JWKS endpoint on loopback publishing k1."""
    jwk = {**RSAAlgorithm.to_jwk(rsa_keys[0].public_key(), as_dict=True), "kid": "k1", "use": "sig"}

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/jwks.json", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site.port}/jwks.json"
    await runner.cleanup()


@pytest.fixture
async def strict_hub(hub_factory: Any, jwks_url: str) -> Hub:
    """Secret and JWKS, audience and issuer checked."""
    hub: Hub = await hub_factory(jwt_jwks_url=jwks_url, jwt_aud=AUD, jwt_iss=ISS)
    return hub


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "mallory",
        "exp": now + 300,
        "aud": AUD,
        "iss": ISS,
        "scopes": ["publish:**"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], payload: dict[str, Any], signer: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(signer(signing_input.encode()))}"


def _tampered(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scopes"] = ["publish:**", "subscribe:**", "ops:write"]
    return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"


Keys = tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
ATTACKS: dict[str, tuple[Callable[[Keys, str], str], str, int]] = {
    "alg none": (
        lambda k, s: _forge({"alg": "none", "typ": "JWT"}, _claims(), lambda m: b""),
        "jwt_invalid",
        4001,
    ),
    "HS256 signed with the RSA public key PEM": (
        lambda k, s: _forge(
            {"alg": "HS256", "typ": "JWT", "kid": "k1"},
            _claims(),
            lambda m: hmac.new(
                k[0]
                .public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                m,
                hashlib.sha256,
            ).digest(),
        ),
        "jwt_invalid",
        4001,
    ),
    "expired": (
        lambda k, s: jwt.encode(_claims(exp=int(time.time()) - 120), s, "HS256"),
        "token_expired",
        4003,
    ),
    "nbf in the future": (
        lambda k, s: jwt.encode(_claims(nbf=int(time.time()) + 600), s, "HS256"),
        "jwt_invalid",
        4001,
    ),
    "wrong aud": (lambda k, s: jwt.encode(_claims(aud="someone-else"), s, "HS256"), "jwt_invalid", 4001),
    "wrong iss": (lambda k, s: jwt.encode(_claims(iss="https://evil.test"), s, "HS256"), "jwt_invalid", 4001),
    "unknown kid": (
        lambda k, s: jwt.encode(_claims(), k[1], "RS256", headers={"kid": "k-unknown"}),
        "jwt_invalid",
        4001,
    ),
    "known kid, signed by another key": (
        lambda k, s: jwt.encode(_claims(), k[1], "RS256", headers={"kid": "k1"}),
        "jwt_invalid",
        4001,
    ),
    "tampered payload": (lambda k, s: _tampered(jwt.encode(_claims(), s, "HS256")), "jwt_invalid", 4001),
    "missing exp": (lambda k, s: jwt.encode(_claims(exp=None), s, "HS256"), "jwt_invalid", 4001),
    "garbage": (lambda k, s: "this-is.not-a.jwt", "jwt_invalid", 4001),
    "empty token": (lambda k, s: "", "no_token", 4001),
}


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_corpus_is_refused_and_closed(
    name: str, strict_hub: Hub, ws_connect: Any, rsa_keys: Keys
) -> None:
    build, code, close_code = ATTACKS[name]
    assert strict_hub.jwt_secret is not None
    c = await ws_connect(strict_hub.ws_url)
    await c.send({"op": "AUTH", "token": build(rsa_keys, strict_hub.jwt_secret), "rid": "a"})
    err = await c.recv()
    assert err["op"] == "ERR" and err["rid"] == "a" and err["code"] == code, err
    assert err["msg"]
    assert await c.wait_closed() == close_code


async def test_valid_tokens_of_both_kinds_are_accepted(
    strict_hub: Hub, ws_connect: Any, rsa_keys: Keys
) -> None:
    assert strict_hub.jwt_secret is not None
    for tok in (
        jwt.encode(_claims(), strict_hub.jwt_secret, "HS256"),
        jwt.encode(_claims(), rsa_keys[0], "RS256", headers={"kid": "k1"}),
    ):
        c = await ws_connect(strict_hub.ws_url)
        ok = await c.auth(tok)
        assert ok["sub"] == "mallory"
        assert (await c.request("PUBLISH", topic="a.b", payload=1))["op"] == "OK"


async def test_failed_re_auth_closes_an_authenticated_connection(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    await c.send({"op": "AUTH", "token": "garbage"})
    err = await c.recv()
    assert err["code"] == "jwt_invalid" and "rid" not in err
    assert await c.wait_closed() == 4001


@pytest.mark.parametrize(
    "bad_token", [12, {"jwt": "x"}, ["x"], True], ids=["number", "object", "array", "bool"]
)
async def test_auth_with_a_token_that_is_not_a_string_fails_and_closes(
    hub: Hub, ws_connect: Any, token: Any, bad_token: Any
) -> None:
    """A failed AUTH (PROTOCOL.md): ERR no_token, as the verifier calls it, then close 4001, also for an
    authenticated connection re-AUTHing."""
    for authed in (False, True):
        c = await ws_connect(hub.ws_url, token=token() if authed else None)
        await c.send({"op": "AUTH", "token": bad_token, "rid": "a"})
        err = await c.recv()
        assert (err["op"], err["code"], err["rid"]) == ("ERR", "no_token", "a"), err
        assert err["msg"].startswith("AUTH.token: must be a string")
        assert await c.wait_closed() == 4001


async def test_other_connections_are_unaffected_by_attacks(
    strict_hub: Hub, ws_connect: Any, rsa_keys: Keys
) -> None:
    assert strict_hub.jwt_secret is not None
    good = await ws_connect(strict_hub.ws_url, token=jwt.encode(_claims(), strict_hub.jwt_secret, "HS256"))
    for build, _, _ in ATTACKS.values():
        bad = await ws_connect(strict_hub.ws_url)
        await bad.send({"op": "AUTH", "token": build(rsa_keys, strict_hub.jwt_secret)})
        await bad.wait_closed()
    assert (await good.request("PUBLISH", topic="still.up", payload=1))["op"] == "OK"


async def test_token_expiry_while_connected_and_re_auth_in_time(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(jwt_leeway_s=0)
    short = token(ttl_s=2)
    lapsing = await ws_connect(hub.ws_url, token=short)
    renewed = await ws_connect(hub.ws_url, token=short)
    assert (await renewed.auth(token(ttl_s=300)))["op"] == "OK"

    # bounded wait for the server-side timer; no assertion on how long it took
    err = await lapsing.recv(wait_s=15)
    assert err["op"] == "ERR" and err["code"] == "token_expired" and "rid" not in err
    assert await lapsing.wait_closed() == 4003

    # `short` has expired by now; the connection that re-AUTHed in time keeps working
    assert (await renewed.request("PUBLISH", topic="a.b", payload=1))["op"] == "OK"
    await asyncio.sleep(0)
    assert not renewed.ws.closed


async def test_a_connection_that_does_not_auth_in_time_is_closed(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(auth_timeout_s=0.5)
    # AUTHed first, so its own AUTH timer (had it not been cancelled) would fire before the silent one's
    authed = await ws_connect(hub.ws_url, token=token())
    silent = await ws_connect(hub.ws_url)

    err = await silent.recv(wait_s=15)
    assert (err["op"], err["code"]) == ("ERR", "no_token") and "rid" not in err, err
    assert "no AUTH within 0.5s" in err["msg"]
    assert await silent.wait_closed() == 4001

    assert (await authed.request("PUBLISH", topic="a.b", payload=1))["op"] == "OK"
    assert not authed.others and not authed.ws.closed


async def test_auth_timeout_zero_disables_it(hub_factory: Any, ws_connect: Any, token: Any) -> None:
    unlimited = await hub_factory(auth_timeout_s=0)
    limited = await hub_factory(auth_timeout_s=0.5)
    waiting = await ws_connect(unlimited.ws_url)
    probe = await ws_connect(limited.ws_url)  # connected later, so its timer is due later
    assert await probe.wait_closed(wait_s=15) == 4001

    assert (await waiting.auth(token()))["op"] == "OK"
    assert not waiting.others and not waiting.ws.closed
