"""Token verification: algorithm pinning, claims, the attack corpus, the JWKS cache over real HTTP,
policy extraction, minting and TTL parsing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from outboxhub.auth.jwt import AuthConfig, TokenVerifier, acl, mint_token, parse_ttl
from outboxhub.errors import AuthError, ConfigError, PolicyError

SECRET = "0123456789abcdef" * 4  # 64 bytes: long enough for HS512 (RFC 7518 §3.2)
AUD = "outboxhub"
ISS = "https://idp.example"


# ---------------------------------------------------------------- keys and a real JWKS endpoint


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa2: rsa.RSAPrivateKey
    p256: ec.EllipticCurvePrivateKey
    p384: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: rsa1, ec256, ec384, ed1 (rsa2 is deliberately absent)."""
        return {
            "keys": [
                _jwk(RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "rsa1"),
                _jwk(ECAlgorithm.to_jwk(self.p256.public_key(), as_dict=True), "ec256"),
                _jwk(ECAlgorithm.to_jwk(self.p384.public_key(), as_dict=True), "ec384"),
                _jwk(OKPAlgorithm.to_jwk(self.ed.public_key(), as_dict=True), "ed1"),
            ]
        }


def _jwk(jwk: Mapping[str, Any], kid: str, **extra: Any) -> dict[str, Any]:
    return {**jwk, "kid": kid, **extra}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa2=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        p256=ec.generate_private_key(ec.SECP256R1()),
        p384=ec.generate_private_key(ec.SECP384R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
    )


class JwksServer:
    """A tiny JWKS endpoint on 127.0.0.1 that counts requests and can hold them until released."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.requests = 0
        self.hold: asyncio.Event | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.hold is not None:
            await self.hold.wait()
        return web.json_response(self.jwks)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks.json", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/jwks.json"

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def server(keys: Keys) -> AsyncIterator[JwksServer]:
    srv = JwksServer(keys.jwks())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


class Clock:
    """A monotonic clock the test moves by hand (it only paces JWKS refetches)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def verifier(server: JwksServer, clock: Clock) -> AsyncIterator[TokenVerifier]:
    """Secret and JWKS both configured, with audience and issuer checks."""
    cfg = AuthConfig(secret=SECRET, jwks_url=server.url, audience=AUD, issuer=ISS, jwks_cooldown_s=30.0)
    async with TokenVerifier(cfg, clock=clock) as v:
        yield v


# ---------------------------------------------------------------- token builders


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the `verifier` fixture; an override of None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 300, "aud": AUD, "iss": ISS}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, alg: str, kid: str | None = None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: Mapping[str, Any], payload: Mapping[str, Any], signer: Callable[[bytes], bytes]) -> str:
    """A token assembled by hand, signed by ``signer`` over the signing input — for attacks PyJWT refuses
    to produce."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signer(signing_input.encode()))}"


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_with(secret: bytes, kid: str | None = None, **overrides: Any) -> str:
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    return forge(header, claims(**overrides), lambda m: hmac.new(secret, m, hashlib.sha256).digest())


def tamper(token: str, **changes: Any) -> str:
    """Replace claims in the payload segment, keeping the original header and signature."""
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{head}.{b64(json.dumps(data).encode())}.{sig}"


def reheader(token: str, **changes: Any) -> str:
    """Replace header fields, keeping the original payload and signature."""
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    data.update(changes)
    return f"{b64(json.dumps(data).encode())}.{payload}.{sig}"


async def refused(v: TokenVerifier, token: object) -> AuthError:
    with pytest.raises(AuthError) as info:
        await v.verify(token)
    return info.value


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


# ---------------------------------------------------------------- valid tokens


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_tokens_verify(verifier: TokenVerifier, server: JwksServer, alg: str) -> None:
    token = sign(SECRET, alg, sub="bob")
    p = await verifier.verify(token)
    assert p.sub == "bob"
    assert p.exp == jwt.decode(token, options={"verify_signature": False})["exp"]
    assert p.claims["aud"] == AUD
    assert server.requests == 0  # HS* never touches the JWKS


@pytest.mark.parametrize(
    ("alg", "key_name", "kid"),
    [
        ("RS256", "rsa", "rsa1"),
        ("RS512", "rsa", "rsa1"),
        ("PS256", "rsa", "rsa1"),
        ("PS384", "rsa", "rsa1"),
        ("ES256", "p256", "ec256"),
        ("ES384", "p384", "ec384"),
        ("EdDSA", "ed", "ed1"),
    ],
)
async def test_jwks_tokens_verify(
    verifier: TokenVerifier, keys: Keys, alg: str, key_name: str, kid: str
) -> None:
    p = await verifier.verify(sign(getattr(keys, key_name), alg, kid, sub=f"user-{alg}"))
    assert p.sub == f"user-{alg}"
    assert p.claims["iss"] == ISS


async def test_surrounding_whitespace_is_ignored(verifier: TokenVerifier) -> None:
    assert (await verifier.verify(f"  {sign(SECRET, 'HS256')}\n")).sub == "alice"


async def test_audience_and_issuer_are_not_checked_when_not_configured() -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET)) as v:
        p = await v.verify(sign(SECRET, "HS256", aud="someone-else", iss="anyone"))
    assert p.claims["aud"] == "someone-else"


async def test_audience_list_containing_ours_is_accepted(verifier: TokenVerifier) -> None:
    assert (await verifier.verify(sign(SECRET, "HS256", aud=["other", AUD]))).sub == "alice"


# ---------------------------------------------------------------- the attack corpus

Build = Callable[[Keys], object]


def _none_alg(alg: str) -> Build:
    return lambda k: forge({"alg": alg, "typ": "JWT"}, claims(), lambda m: b"")


def _ago(seconds: int) -> int:
    return int(time.time()) - seconds


# (name, token builder, expected code, fragment the message must contain), against the `verifier` fixture
CORPUS: list[tuple[str, Build, str, str]] = [
    ("alg none", _none_alg("none"), "jwt_invalid", "algorithm 'none' is not allowed"),
    ("alg None", _none_alg("None"), "jwt_invalid", "is not allowed"),
    ("alg NONE", _none_alg("NONE"), "jwt_invalid", "is not allowed"),
    (
        "HS256 signed with the RSA public key PEM",
        lambda k: hs256_with(public_pem(k.rsa), kid="rsa1"),
        "jwt_invalid",
        "signature verification failed",
    ),
    ("expired", lambda k: sign(SECRET, "HS256", exp=_ago(60)), "token_expired", "token expired at 20"),
    ("nbf in the future", lambda k: sign(SECRET, "HS256", nbf=_ago(-120)), "jwt_invalid", "not valid before"),
    (
        "iat in the future",
        lambda k: sign(SECRET, "HS256", iat=_ago(-120)),
        "jwt_invalid",
        "issued in the future",
    ),
    ("wrong aud", lambda k: sign(SECRET, "HS256", aud="billing"), "jwt_invalid", "audience mismatch"),
    ("no aud", lambda k: sign(SECRET, "HS256", aud=None), "jwt_invalid", "missing required claim 'aud'"),
    (
        "wrong iss",
        lambda k: sign(SECRET, "HS256", iss="https://evil.example"),
        "jwt_invalid",
        "issuer mismatch",
    ),
    ("no iss", lambda k: sign(SECRET, "HS256", iss=None), "jwt_invalid", "missing required claim 'iss'"),
    ("unknown kid", lambda k: sign(k.rsa2, "RS256", "nope"), "jwt_invalid", "unknown key id 'nope'"),
    ("other key behind a known kid", lambda k: sign(k.rsa2, "RS256", "rsa1"), "jwt_invalid", "signature"),
    (
        "tampered payload (RS256)",
        lambda k: tamper(sign(k.rsa, "RS256", "rsa1"), sub="admin"),
        "jwt_invalid",
        "signature verification failed",
    ),
    (
        "tampered payload (HS256)",
        lambda k: tamper(sign(SECRET, "HS256"), scopes=["*:**"]),
        "jwt_invalid",
        "signature verification failed",
    ),
    ("missing exp", lambda k: sign(SECRET, "HS256", exp=None), "jwt_invalid", "missing required claim 'exp'"),
    ("exp not a number", lambda k: sign(SECRET, "HS256", exp="tomorrow"), "jwt_invalid", "exp"),
    ("sub not a string", lambda k: sign(SECRET, "HS256", sub=42), "jwt_invalid", "Subject"),
    ("garbage", lambda k: "this is not a token", "jwt_invalid", "malformed token"),
    ("three garbage segments", lambda k: "a.b.c", "jwt_invalid", "malformed token"),
    ("header not JSON", lambda k: f"{b64(b'{nope')}.{b64(b'{}')}.", "jwt_invalid", "malformed token"),
    ("no alg", lambda k: forge({"typ": "JWT"}, claims(), lambda m: b"x"), "jwt_invalid", "no 'alg'"),
    (
        "unsupported alg",
        lambda k: reheader(sign(k.rsa, "RS256", "rsa1"), alg="RS1"),
        "jwt_invalid",
        "'RS1' is not supported",
    ),
    ("RS256 without kid", lambda k: sign(k.rsa, "RS256"), "jwt_invalid", "no 'kid'"),
    (
        "RS256 header on an EC key",
        lambda k: reheader(sign(k.rsa, "RS256", "rsa1"), kid="ec256"),
        "jwt_invalid",
        "not allowed for key id 'ec256'",
    ),
    (
        "ES256 header on a P-384 key",
        lambda k: reheader(sign(k.p384, "ES384", "ec384"), alg="ES256"),
        "jwt_invalid",
        "not allowed for key id 'ec384'",
    ),
    (
        "HS256 header on an RSA kid",
        lambda k: reheader(sign(k.rsa, "RS256", "rsa1"), alg="HS256"),
        "jwt_invalid",
        "signature verification failed",
    ),
    ("oversized", lambda k: "a" * 70_000, "jwt_invalid", "characters long"),
    ("empty", lambda k: "", "no_token", "empty"),
    ("blank", lambda k: "  \t", "no_token", "empty"),
    ("None", lambda k: None, "no_token", "no token"),
    ("int", lambda k: 12345, "no_token", "must be a string"),
    ("bytes", lambda k: sign(SECRET, "HS256").encode(), "no_token", "must be a string"),
    ("dict", lambda k: {"token": "x"}, "no_token", "must be a string"),
]


@pytest.mark.parametrize(("build", "code", "fragment"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
async def test_attack_corpus(
    verifier: TokenVerifier, keys: Keys, build: Build, code: str, fragment: str
) -> None:
    err = await refused(verifier, build(keys))
    assert err.code == code, err
    assert fragment in err.msg, err


async def test_hs256_signed_with_public_key_is_refused_when_only_jwks_is_configured(
    server: JwksServer, keys: Keys
) -> None:
    async with TokenVerifier(AuthConfig(jwks_url=server.url)) as v:
        for token in (hs256_with(public_pem(keys.rsa), kid="rsa1"), hs256_with(public_pem(keys.rsa))):
            err = await refused(v, token)
            assert err.code == "jwt_invalid"
            assert "needs a shared secret and none is configured" in err.msg
        assert (await v.verify(sign(keys.rsa, "RS256", "rsa1"))).sub == "alice"


async def test_jwks_algorithms_are_refused_when_only_a_secret_is_configured(keys: Keys) -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET)) as v:
        err = await refused(v, sign(keys.rsa, "RS256", "rsa1"))
    assert err.code == "jwt_invalid"
    assert "no jwks_url is configured" in err.msg


async def test_hmac_algorithm_needing_a_longer_secret_is_refused() -> None:
    short = "k" * 32  # enough for HS256, not for HS512
    async with TokenVerifier(AuthConfig(secret=short)) as v:
        assert (await v.verify(sign(short, "HS256"))).sub == "alice"
        err = await refused(
            v, forge({"alg": "HS512"}, claims(), lambda m: hmac.new(b"k" * 32, m, "sha512").digest())
        )
    assert err.code == "jwt_invalid"
    assert "'HS512' needs a secret of at least 64 bytes" in err.msg


# ---------------------------------------------------------------- leeway


async def test_leeway_accepts_exp_just_past_and_refuses_beyond() -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET)) as v:
        assert (await v.verify(sign(SECRET, "HS256", exp=_ago(3)))).sub == "alice"
        err = await refused(v, sign(SECRET, "HS256", exp=_ago(10)))
        assert err.code == "token_expired"
        assert (await v.verify(sign(SECRET, "HS256", nbf=_ago(-3)))).sub == "alice"
        assert (await refused(v, sign(SECRET, "HS256", nbf=_ago(-10)))).code == "jwt_invalid"


async def test_leeway_is_configurable() -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET, leeway_s=0)) as v:
        assert (await refused(v, sign(SECRET, "HS256", exp=_ago(3)))).code == "token_expired"
    async with TokenVerifier(AuthConfig(secret=SECRET, leeway_s=60)) as v:
        assert (await v.verify(sign(SECRET, "HS256", exp=_ago(30)))).sub == "alice"


async def test_expired_message_names_the_time() -> None:
    async with TokenVerifier(AuthConfig(secret=SECRET)) as v:
        err = await refused(v, sign(SECRET, "HS256", exp=1_700_000_000))
    assert err.code == "token_expired"
    assert err.msg == "token expired at 2023-11-14T22:13:20Z"


# ---------------------------------------------------------------- the JWKS cache


async def test_known_kid_is_served_from_the_cache(
    verifier: TokenVerifier, server: JwksServer, keys: Keys
) -> None:
    await verifier.verify(sign(keys.rsa, "RS256", "rsa1"))
    assert server.requests == 1
    await verifier.verify(sign(keys.rsa, "RS256", "rsa1"))
    await verifier.verify(sign(keys.ed, "EdDSA", "ed1"))  # every key of the set came with the first fetch
    assert server.requests == 1


async def test_unknown_kid_refetches_at_most_once_per_cooldown(
    verifier: TokenVerifier, server: JwksServer, keys: Keys, clock: Clock
) -> None:
    await verifier.verify(sign(keys.rsa, "RS256", "rsa1"))
    assert server.requests == 1
    # Within the cooldown of the first fetch an unknown kid does not refetch.
    assert "unknown key id 'k2'" in (await refused(verifier, sign(keys.rsa2, "RS256", "k2"))).msg
    assert server.requests == 1

    clock.now += 31
    assert (await refused(verifier, sign(keys.rsa2, "RS256", "k2"))).code == "jwt_invalid"
    assert server.requests == 2
    assert (await refused(verifier, sign(keys.rsa2, "RS256", "k3"))).code == "jwt_invalid"
    assert server.requests == 2  # a second unknown kid within the cooldown: no new request

    # The issuer rotates in k3; once the cooldown has passed the next unknown kid picks it up.
    server.jwks["keys"].append(_jwk(RSAAlgorithm.to_jwk(keys.rsa2.public_key(), as_dict=True), "k3"))
    clock.now += 29
    assert (await refused(verifier, sign(keys.rsa2, "RS256", "k3"))).code == "jwt_invalid"
    assert server.requests == 2
    clock.now += 2
    assert (await verifier.verify(sign(keys.rsa2, "RS256", "k3"))).sub == "alice"
    assert server.requests == 3
    await verifier.verify(sign(keys.rsa, "RS256", "rsa1"))
    assert server.requests == 3


async def test_a_refetch_drops_keys_the_issuer_removed(
    verifier: TokenVerifier, server: JwksServer, keys: Keys, clock: Clock
) -> None:
    await verifier.verify(sign(keys.rsa, "RS256", "rsa1"))
    server.jwks = {"keys": [k for k in server.jwks["keys"] if k["kid"] != "rsa1"]}
    clock.now += 31
    await refused(verifier, sign(keys.rsa2, "RS256", "other"))  # triggers the refetch
    err = await refused(verifier, sign(keys.rsa, "RS256", "rsa1"))
    assert "unknown key id 'rsa1'" in err.msg
    assert server.requests == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    verifier: TokenVerifier, server: JwksServer, keys: Keys
) -> None:
    server.hold = asyncio.Event()
    tokens = [
        sign(keys.rsa, "RS256", "rsa1"),
        sign(keys.p256, "ES256", "ec256"),
        sign(keys.ed, "EdDSA", "ed1"),
    ]
    tasks = [asyncio.create_task(verifier.verify(t)) for t in tokens * 3]
    await until(lambda: server.requests == 1)
    assert not any(t.done() for t in tasks)
    server.hold.set()
    principals = await asyncio.gather(*tasks)
    assert [p.sub for p in principals] == ["alice"] * 9
    assert server.requests == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    verifier: TokenVerifier, server: JwksServer, keys: Keys
) -> None:
    server.hold = asyncio.Event()
    first = asyncio.create_task(verifier.verify(sign(keys.rsa, "RS256", "rsa1")))
    second = asyncio.create_task(verifier.verify(sign(keys.rsa, "RS256", "rsa1")))
    await until(lambda: server.requests == 1)
    first.cancel()
    await asyncio.wait((first,))
    server.hold.set()
    assert (await second).sub == "alice"
    assert first.cancelled()
    assert server.requests == 1


async def test_jwks_down_fails_unknown_kids_and_keeps_cached_ones(
    verifier: TokenVerifier, server: JwksServer, keys: Keys, clock: Clock
) -> None:
    cached = sign(keys.rsa, "RS256", "rsa1")
    await verifier.verify(cached)
    await server.stop()  # connection refused from now on
    clock.now += 31
    err = await refused(verifier, sign(keys.rsa2, "RS256", "x"))
    assert err.code == "jwt_invalid"
    assert err.msg.startswith("unknown key id 'x' (JWKS fetch failed: ")
    assert (await verifier.verify(cached)).sub == "alice"
    # Within the cooldown the failure is reported again without another attempt.
    err = await refused(verifier, sign(keys.rsa2, "RS256", "y"))
    assert err.msg.startswith("unknown key id 'y' (JWKS fetch failed: ")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_jwks_never_reachable_fails_with_jwt_invalid(keys: Keys) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/jwks.json"
    async with TokenVerifier(AuthConfig(jwks_url=url, jwks_timeout_s=30)) as v:
        err = await refused(v, sign(keys.rsa, "RS256", "rsa1"))
    assert err.code == "jwt_invalid"
    assert "unknown key id 'rsa1' (JWKS fetch failed: " in err.msg
    assert "Cannot connect" in err.msg or "Connect" in err.msg


async def test_slow_jwks_times_out_without_blocking_cached_kids(
    server: JwksServer, keys: Keys, clock: Clock
) -> None:
    cfg = AuthConfig(jwks_url=server.url, jwks_timeout_s=0.2, jwks_cooldown_s=30)
    async with TokenVerifier(cfg, clock=clock) as v:
        cached = sign(keys.rsa, "RS256", "rsa1")
        await v.verify(cached)
        server.hold = asyncio.Event()  # the endpoint now hangs until the test ends
        clock.now += 31
        slow = asyncio.create_task(v.verify(sign(keys.rsa2, "RS256", "new")))
        await until(lambda: server.requests == 2)  # the refetch is in flight
        assert (await v.verify(cached)).sub == "alice"
        assert not slow.done()  # the cached kid did not wait for the fetch
        with pytest.raises(AuthError) as info:
            await slow
    assert info.value.code == "jwt_invalid"
    assert info.value.msg == "unknown key id 'new' (JWKS fetch failed: timed out after 0.2 s)"


async def test_bad_jwks_documents_are_reported(keys: Keys, clock: Clock) -> None:
    async def serve(body: bytes, status: int = 200) -> tuple[web.AppRunner, str]:
        async def handle(request: web.Request) -> web.Response:
            return web.Response(body=body, status=status, content_type="application/json")

        app = web.Application()
        app.router.add_get("/jwks", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return runner, f"http://{host}:{port}/jwks"

    cases = [
        (b"not json", 200, "not JSON"),
        (b'{"keys": 1}', 200, "no 'keys' list"),
        (b"[]", 200, "no 'keys' list"),
        (b"{}", 503, "HTTP 503"),
    ]
    for body, status, fragment in cases:
        runner, url = await serve(body, status)
        try:
            async with TokenVerifier(AuthConfig(jwks_url=url), clock=clock) as v:
                err = await refused(v, sign(keys.rsa, "RS256", "rsa1"))
        finally:
            await runner.cleanup()
        assert err.code == "jwt_invalid"
        assert "JWKS fetch failed" in err.msg and fragment in err.msg, err.msg


async def test_unusable_jwks_keys_are_refused_with_a_reason(server: JwksServer, keys: Keys) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_jwk = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True)
    server.jwks = {
        "keys": [
            _jwk(rsa_jwk, "rs256-only", alg="RS256"),
            _jwk(rsa_jwk, "enc", use="enc"),
            _jwk(rsa_jwk, "wrong-alg", alg="ES256"),
            _jwk(RSAAlgorithm.to_jwk(weak.public_key(), as_dict=True), "weak"),
            {"kty": "oct", "k": b64(SECRET.encode()), "kid": "sym"},
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            {"kty": "XYZ", "kid": "odd"},
            _jwk(
                ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256K1()).public_key(), as_dict=True), "k1"
            ),
            "not an object",
        ]
    }
    async with TokenVerifier(AuthConfig(jwks_url=server.url)) as v:
        assert (await v.verify(sign(keys.rsa, "RS256", "rs256-only"))).sub == "alice"
        err = await refused(v, sign(keys.rsa, "PS256", "rs256-only"))
        assert "'PS256' is not allowed for key id 'rs256-only' (allowed: RS256)" in err.msg
        expectations = {
            "enc": "'use' is 'enc'",
            "wrong-alg": "declares alg 'ES256'",
            "weak": "1024 bits",
            "sym": "symmetric keys are not taken from a JWKS",
            "broken": "not usable",
            "odd": "'XYZ' is not supported",
            "k1": "EC curve 'secp256k1' is not supported",
        }
        for kid, fragment in expectations.items():
            err = await refused(v, sign(keys.rsa, "RS256", kid))
            assert err.code == "jwt_invalid"
            assert f"key id {kid!r} in the JWKS is not usable" in err.msg and fragment in err.msg, err.msg
        hs = forge(
            {"alg": "HS256", "kid": "sym"},
            claims(),
            lambda m: hmac.new(SECRET.encode(), m, "sha256").digest(),
        )
        assert "needs a shared secret" in (await refused(v, hs)).msg
    assert server.requests == 1


async def test_a_given_session_is_left_open_and_verify_after_close_raises(
    server: JwksServer, keys: Keys
) -> None:
    async with aiohttp.ClientSession() as session:
        v = TokenVerifier(AuthConfig(jwks_url=server.url), session=session)
        await v.verify(sign(keys.rsa, "RS256", "rsa1"))
        await v.close()
        assert not session.closed
        with pytest.raises(RuntimeError, match="after close"):
            await v.verify(sign(keys.rsa, "RS256", "rsa1"))


# ---------------------------------------------------------------- policy extraction

POLICY = {"rules": [{"effect": "allow", "action": "publish", "topics": ["orders.**"]}], "ops": ["read"]}


async def hs(v: TokenVerifier, **overrides: Any) -> Any:
    return await v.verify(sign(SECRET, "HS256", **overrides))


async def test_policy_claim_becomes_the_policy(verifier: TokenVerifier) -> None:
    p = await hs(verifier, policy=POLICY, scopes=["subscribe:**"])
    assert p.policy == acl.parse_policy(POLICY)
    assert acl.is_allowed(p.policy, "publish", "orders.eu.new")
    assert not acl.is_allowed(p.policy, "subscribe", "orders.eu.new")  # the scopes claim is not used
    assert p.policy.ops == frozenset({"read"})
    assert p.scopes == ()


async def test_scopes_list_becomes_the_policy(verifier: TokenVerifier) -> None:
    p = await hs(verifier, scopes=["publish:orders.*", "subscribe:orders.**"])
    assert p.scopes == ("publish:orders.*", "subscribe:orders.**")
    assert p.policy == acl.scopes_to_policy(["publish:orders.*", "subscribe:orders.**"])
    assert acl.is_allowed(p.policy, "publish", "orders.new")
    assert not acl.is_allowed(p.policy, "publish", "billing.new")


async def test_oauth_scope_string_keeps_only_our_scopes(verifier: TokenVerifier) -> None:
    p = await hs(verifier, scope="openid profile read:user publish:orders.* email subscribe:orders.**")
    assert p.scopes == ("publish:orders.*", "subscribe:orders.**")
    assert p.policy == acl.scopes_to_policy(["publish:orders.*", "subscribe:orders.**"])
    assert acl.is_allowed(p.policy, "subscribe", "orders.eu.new")


async def test_scopes_list_wins_over_scope_string(verifier: TokenVerifier) -> None:
    p = await hs(verifier, scopes=["publish:a"], scope="publish:b")
    assert p.scopes == ("publish:a",)


async def test_only_foreign_scopes_give_no_rights(verifier: TokenVerifier) -> None:
    for foreign in ("openid read:user", ["openid", "read:user"], ["email", 1, None]):
        p = await hs(verifier, scopes=foreign)
        assert p.scopes == ()
        assert p.policy == acl.scopes_to_policy([])


async def test_ops_scopes_are_kept(verifier: TokenVerifier) -> None:
    p = await hs(verifier, scope="openid ops:read")
    assert p.scopes == ("ops:read",)
    assert p.policy.ops == frozenset({"read"})


async def test_no_policy_claims_give_a_valid_token_with_no_rights(verifier: TokenVerifier) -> None:
    p = await hs(verifier)
    assert p.scopes == ()
    assert p.policy == acl.scopes_to_policy([])
    assert not acl.is_allowed(p.policy, "publish", "orders.new")
    assert not acl.is_allowed(p.policy, "subscribe", "orders.new")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"scopes": ["openid", "publish:orders..x"]}, "'publish:orders..x'"),
        ({"scope": "openid subscribe:orders..x"}, "'subscribe:orders..x'"),
        ({"scopes": "publish:a..b"}, "'publish:a..b'"),
        ({"scopes": 7}, "'scopes' claim must be"),
        ({"scope": {"publish": "x"}}, "'scope' claim must be"),
        ({"policy": {"allow": "everything"}}, "bad 'policy' claim: policy: unknown key(s) 'allow'"),
        (
            {"policy": {"rules": [{"effect": "allow", "action": "publish", "topics": ["a..b"]}]}},
            "rules[0].topics[0]",
        ),
        ({"policy": "publish:x"}, "bad 'policy' claim"),
    ],
)
async def test_bad_policy_or_scope_claims_fail_auth(
    verifier: TokenVerifier, overrides: dict[str, Any], fragment: str
) -> None:
    err = await refused(verifier, sign(SECRET, "HS256", **overrides))
    assert err.code == "jwt_invalid"
    assert fragment in err.msg, err.msg


async def test_claims_are_read_only(verifier: TokenVerifier) -> None:
    p = await hs(verifier, custom={"a": 1})
    assert p.claims["custom"] == {"a": 1}
    with pytest.raises(TypeError):
        p.claims["sub"] = "mallory"  # type: ignore[index]


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"secret": ""}, "non-empty"),
        ({"secret": "s3cret"}, "secret is 6 bytes; HS256 needs at least 32"),
        (
            {"secret": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq" + "A" * 40 + "\n-----END PUBLIC KEY-----"},
            "PEM",
        ),
        ({"secret": "ssh-rsa AAAAB3NzaC1yc2E" + "A" * 40}, "SSH"),
        ({"jwks_url": "ftp://idp.example/jwks"}, "jwks_url"),
        ({"jwks_url": "https:///jwks"}, "jwks_url"),
        ({"secret": SECRET, "audience": ""}, "audience"),
        ({"secret": SECRET, "issuer": ""}, "issuer"),
        ({"secret": SECRET, "leeway_s": -1}, "leeway_s"),
        ({"secret": SECRET, "leeway_s": float("nan")}, "leeway_s"),
        ({"secret": SECRET, "jwks_timeout_s": 0}, "jwks_timeout_s"),
        ({"secret": SECRET, "jwks_cooldown_s": float("inf")}, "jwks_cooldown_s"),
    ],
)
def test_bad_config_is_refused_naming_the_setting(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        AuthConfig(**kwargs)


def test_a_verifier_needs_a_secret_or_a_jwks_url() -> None:
    with pytest.raises(ConfigError, match="secret or a jwks_url"):
        TokenVerifier(AuthConfig())


# ---------------------------------------------------------------- minting and TTLs


async def test_mint_token_round_trips_through_verify() -> None:
    policy = {"rules": [{"effect": "allow", "action": "publish", "topics": ["orders.**"]}]}
    async with TokenVerifier(AuthConfig(secret=SECRET, audience=AUD, issuer=ISS)) as v:
        before = int(time.time())
        p = await v.verify(
            mint_token(
                SECRET, sub="svc", scopes=["publish:orders.*", "openid"], ttl_s=120, audience=AUD, issuer=ISS
            )
        )
        assert p.sub == "svc"
        assert p.scopes == ("publish:orders.*",)
        assert before + 120 <= p.exp <= int(time.time()) + 120
        assert acl.is_allowed(p.policy, "publish", "orders.new")
        assert not acl.is_allowed(p.policy, "subscribe", "orders.new")

        p = await v.verify(
            mint_token(SECRET, sub="svc", policy=policy, audience=AUD, issuer=ISS, algorithm="HS512")
        )
        assert acl.is_allowed(p.policy, "publish", "orders.eu.new")
        assert p.scopes == ()
        assert p.claims["policy"] == policy

        p = await v.verify(
            mint_token(SECRET, sub="svc", scopes="publish:a subscribe:b", audience=AUD, issuer=ISS)
        )
        assert p.scopes == ("publish:a", "subscribe:b")


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"algorithm": "RS256"}, ValueError, "'RS256' is not one of"),
        ({"algorithm": "none"}, ValueError, "'none' is not one of"),
        ({"secret": "short"}, ValueError, "secret is 5 bytes"),
        ({"secret": "k" * 40, "algorithm": "HS512"}, ValueError, "HS512 needs at least 64"),
        ({"ttl_s": 0}, ValueError, "ttl_s"),
        ({"ttl_s": True}, ValueError, "ttl_s"),
        ({"sub": ""}, ValueError, "sub"),
        ({"scopes": ["publish:orders..x"]}, PolicyError, "orders"),
        ({"policy": {"rules": "everything"}}, PolicyError, "rules"),
    ],
)
def test_mint_token_refuses_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    args: dict[str, Any] = {"secret": SECRET, "sub": "svc", **kwargs}
    secret = args.pop("secret")
    with pytest.raises(error, match=fragment):
        mint_token(secret, **args)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("1", 1),
        ("45s", 45),
        ("30m", 1800),
        ("1h", 3600),
        ("2d", 172_800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93_784),
        (" 10M ", 600),
    ],
)
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    "text", ["", " ", "0", "0s", "-5", "1.5h", "1w", "h", "1 h", "10x", "٣", "1h-", "abc"]
)
def test_parse_ttl_refuses_naming_the_input(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("\\", "\\\\").replace(".", r"\.")):
        parse_ttl(text)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhd")), min_size=1, max_size=4))
def test_parse_ttl_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    text = "".join(f"{n}{u}" for n, u in parts)
    total = sum(n * mult[u] for n, u in parts)
    if total == 0:
        with pytest.raises(ValueError):
            parse_ttl(text)
    else:
        assert parse_ttl(text) == total


@given(st.text(max_size=12))
def test_parse_ttl_returns_a_positive_int_or_raises_value_error(text: str) -> None:
    try:
        value = parse_ttl(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
    else:
        assert isinstance(value, int) and value > 0
