"""JWKS keys for :class:`~outboxhub.auth.jwt.TokenVerifier`: fetching, caching and loading them.

Keys are cached by (issuer, kid). An unknown kid refetches the JWKS at most once per cooldown; the fetch is
a single task shared by every waiting caller, so a slow or dead endpoint only delays tokens whose kid is
not cached yet. Fetched keys are trusted for ``ttl_s`` (shortened by a ``Cache-Control: max-age`` on the
JWKS response); a token whose kid is cached but stale is verified with the cached key at once while the
JWKS is refetched in the background (at most once per cooldown), and a successful refetch replaces the
whole key set, so a key removed upstream stops being trusted. A failed refetch keeps the last keys: a
down JWKS endpoint never blocks a cached kid. Fetch errors name the URL without its query or password
(:func:`outboxhub.urls.mask_url`).

Each key allows only its own algorithms: RSA → RS*/PS*, EC → the ES* of its curve, OKP → EdDSA; a JWK
that declares ``alg`` narrows that to the one algorithm. Symmetric (``oct``) keys are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from outboxhub.errors import AuthError
from outboxhub.urls import mask_url

__all__ = ["JWKS_ALGS", "JwksCache", "JwksKey", "PublicKey", "cache_max_age", "load_jwk"]

_RSA_ALGS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALG_BY_CURVE: Final[Mapping[str, str]] = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES: Final = frozenset({"Ed25519", "Ed448"})
JWKS_ALGS: Final = _RSA_ALGS | frozenset(_EC_ALG_BY_CURVE.values()) | {"EdDSA"}
"""The algorithms verified with a JWKS key."""
_MIN_RSA_BITS: Final = 2048
_MAX_JWKS_BYTES: Final = 1 << 20

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey


@dataclass(frozen=True, slots=True)
class JwksKey:
    kid: str
    algorithms: frozenset[str]
    key: PublicKey


class JwksCache:
    """The JWKS keys of one issuer, refetched on an unknown kid at most once per cooldown."""

    def __init__(
        self,
        *,
        url: str,
        issuer: str,
        timeout_s: float,
        cooldown_s: float,
        ttl_s: float = 600.0,
        session: aiohttp.ClientSession | None,
        clock: Callable[[], float],
    ) -> None:
        self._url = url
        self._issuer = issuer
        self._timeout_s = timeout_s
        self._cooldown_s = cooldown_s
        self._ttl_s = ttl_s
        self._expires_at: float | None = None  # clock time after which the keys are refetched
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._keys: dict[tuple[str, str], JwksKey] = {}
        self._refused: dict[str, str] = {}  # kid -> why the last JWKS document's key was not taken
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._inflight: asyncio.Task[None] | None = None

    async def get(self, kid: str) -> JwksKey:
        found = self._keys.get((self._issuer, kid))
        if found is not None:
            if self._expires_at is not None and self._clock() >= self._expires_at:
                self._start_refresh()  # in the background: a cached kid never waits for the endpoint
            return found
        await self._refresh()
        found = self._keys.get((self._issuer, kid))
        if found is not None:
            return found
        if kid in self._refused:
            raise AuthError("jwt_invalid", f"key id {kid!r} in the JWKS is not usable: {self._refused[kid]}")
        if self._last_error is not None:
            raise AuthError("jwt_invalid", f"unknown key id {kid!r} (JWKS fetch failed: {self._last_error})")
        raise AuthError("jwt_invalid", f"unknown key id {kid!r}")

    async def fetch_keys(self) -> tuple[list[JwksKey], dict[str, str]]:
        """Download the JWKS now, bypassing the cache and the cooldown (``outboxhub doctor``): the usable
        keys, and by kid why each other key was refused. Raises ``TimeoutError``, ``aiohttp.ClientError``
        or ``ValueError`` (not HTTP 200, too large, not a JWKS document)."""
        keys, refused, _max_age = await self._download()
        return keys, refused

    def _start_refresh(self) -> asyncio.Task[None] | None:
        """The running fetch, or a new one unless the last attempt is within the cooldown."""
        task = self._inflight
        if task is None:
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self._cooldown_s:
                return None
            self._last_attempt = now
            task = self._inflight = asyncio.create_task(self._fetch(), name="outboxhub-jwks-fetch")
        return task

    async def _refresh(self) -> None:
        task = self._start_refresh()
        if task is not None:
            # wait() rather than await: a caller that is cancelled must not cancel the shared fetch.
            await asyncio.wait((task,))

    async def _fetch(self) -> None:
        try:
            keys, refused, max_age = await self._download()
        except TimeoutError:
            self._last_error = f"timed out after {self._timeout_s:g} s"
        except Exception as exc:  # any failure of the fetch becomes the message of the refusals it causes
            # The message reaches unauthenticated clients: never the URL's query, user or password (an
            # aiohttp error may quote the whole URL).
            text = str(exc).replace(self._url, mask_url(self._url))
            self._last_error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        else:
            self._keys = {(self._issuer, k.kid): k for k in keys}
            self._refused = refused
            self._last_error = None
            ttl = self._ttl_s if max_age is None else min(self._ttl_s, max_age)
            self._expires_at = self._clock() + ttl
        finally:
            self._inflight = None

    async def _download(self) -> tuple[list[JwksKey], dict[str, str], float | None]:
        async with asyncio.timeout(self._timeout_s):
            if self._session is None:
                self._session = aiohttp.ClientSession()
            async with self._session.get(self._url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status} from {mask_url(self._url)}")
                max_age = cache_max_age(resp.headers.get("Cache-Control"))
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65_536):
                    body += chunk
                    if len(body) > _MAX_JWKS_BYTES:
                        raise ValueError(f"JWKS document is larger than {_MAX_JWKS_BYTES} bytes")
        try:
            doc = msgspec.json.decode(bytes(body))
        except msgspec.DecodeError as exc:
            raise ValueError(f"JWKS document is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("JWKS document has no 'keys' list")
        keys: list[JwksKey] = []
        refused: dict[str, str] = {}
        for jwk in doc["keys"]:
            kid = jwk.get("kid") if isinstance(jwk, dict) else None
            if not isinstance(kid, str) or not kid:
                continue  # a token must name its key, so a key without a kid can never be chosen
            try:
                keys.append(load_jwk(kid, jwk))
            except ValueError as exc:
                refused[kid] = str(exc)
        return keys, refused, max_age

    async def close(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def cache_max_age(header: str | None) -> float | None:
    """Seconds of ``max-age`` in a ``Cache-Control`` header (0 for ``no-cache``/``no-store``), or None."""
    if not header:
        return None
    for directive in header.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-cache", "no-store"):
            return 0.0
        if name == "max-age":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                return float(min(int(value), 10**9))
    return None


def load_jwk(kid: str, jwk: dict[str, Any]) -> JwksKey:
    """Build a verification key from one JWK, with the algorithms its type allows; ValueError if unusable."""
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"'use' is {use!r}, not 'sig'")
    kty = jwk.get("kty")
    algs: frozenset[str]
    if kty == "RSA":
        algs = _RSA_ALGS
    elif kty == "EC":
        crv = jwk.get("crv")
        alg = _EC_ALG_BY_CURVE.get(crv) if isinstance(crv, str) else None
        if alg is None:
            raise ValueError(f"EC curve {crv!r} is not supported (supported: {', '.join(_EC_ALG_BY_CURVE)})")
        algs = frozenset({alg})
    elif kty == "OKP":
        if jwk.get("crv") not in _OKP_CURVES:
            raise ValueError(f"OKP curve {jwk.get('crv')!r} is not supported (supported: Ed25519, Ed448)")
        algs = frozenset({"EdDSA"})
    elif kty == "oct":
        raise ValueError("symmetric keys are not taken from a JWKS; configure the shared secret instead")
    else:
        raise ValueError(f"key type {kty!r} is not supported")
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in algs:
            raise ValueError(f"declares alg {declared!r}, which a {kty} key cannot use")
        algs = frozenset({declared})
    try:
        raw = jwt.PyJWK(jwk, algorithm=min(algs)).key
    except jwt.PyJWTError as exc:
        raise ValueError(str(exc)) from None
    if isinstance(raw, RSAPrivateKey | EllipticCurvePrivateKey | Ed25519PrivateKey | Ed448PrivateKey):
        raw = raw.public_key()
    if not isinstance(raw, PublicKey):
        raise ValueError(f"JWK did not give a public key but {type(raw).__name__}")
    if isinstance(raw, RSAPublicKey) and raw.key_size < _MIN_RSA_BITS:
        raise ValueError(f"RSA key has {raw.key_size} bits; at least {_MIN_RSA_BITS} are required")
    return JwksKey(kid=kid, algorithms=algs, key=raw)
