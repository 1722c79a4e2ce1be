"""JWT verification for AUTH, and minting of HS* tokens.

The gateway hands every AUTH token to :meth:`TokenVerifier.verify` and gets back a :class:`Principal`
(subject, expiry, scopes and the ACL policy) or an :class:`~outboxhub.errors.AuthError` whose ``code`` is
``no_token``, ``jwt_invalid`` or ``token_expired`` (``docs/protocol.md``).

Algorithms are pinned by key family, and the token header only chooses *which* family:

* ``HS256/384/512`` verify with the configured shared secret, and only with it. Symmetric keys are never
  taken from a JWKS, so a public key can never be used as an HMAC secret.
* ``RS*``/``PS*``, ``ES*`` and ``EdDSA`` verify with a key from the JWKS, found by the header's ``kid``,
  and only with the algorithms that key allows (:mod:`outboxhub.auth.jwks` fetches, caches and loads
  the keys).
* ``none`` and anything else is refused.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

import aiohttp
import jwt
from jwt.utils import is_pem_format, is_ssh_key

from outboxhub.auth import acl
from outboxhub.auth.decide import rule_count
from outboxhub.auth.jwks import JWKS_ALGS, JwksCache, PublicKey
from outboxhub.errors import AuthError, ConfigError, PolicyError
from outboxhub.ids import new_id

__all__ = [
    "DEFAULT_JWKS_TTL_S",
    "DEFAULT_MAX_POLICY_RULES",
    "MAX_TIME_CLAIM",
    "AuthConfig",
    "Principal",
    "TokenVerifier",
    "mint_token",
    "parse_ttl",
]

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_SECRET_BYTES: Final[Mapping[str, int]] = {"HS256": 32, "HS384": 48, "HS512": 64}
_MAX_TOKEN_CHARS: Final = 65_536
MAX_TIME_CLAIM: Final = 253_402_300_799
"""The largest ``exp``/``nbf``/``iat`` accepted: 9999-12-31T23:59:59Z (larger values overflow timers and
64-bit fields, so they are refused with ``jwt_invalid`` naming the claim)."""
DEFAULT_MAX_POLICY_RULES: Final = 256
DEFAULT_JWKS_TTL_S: Final = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """How tokens are verified.

    ``secret`` enables HS256/384/512; ``jwks_url`` enables RS*/PS*/ES*/EdDSA with keys from that URL.
    ``audience`` and ``issuer``, when set, must match the token's ``aud`` and ``iss``. ``leeway_s`` is
    the clock tolerance for ``exp``, ``nbf`` and ``iat``. ``jwks_timeout_s`` bounds one JWKS fetch and
    ``jwks_cooldown_s`` is the least time between two fetches. ``jwks_ttl_s`` is how long fetched keys are
    trusted before the JWKS is fetched again in the background (a ``Cache-Control: max-age`` of the JWKS
    response shortens it); ``max_policy_rules`` bounds a token's policy (one per topic pattern of every
    rule or scope): a larger one is refused with ``jwt_invalid`` naming the limit.

    Raises :class:`~outboxhub.errors.ConfigError` naming the setting when a value is unusable, e.g. a
    secret shorter than 32 bytes (RFC 7518 §3.2) or a PEM key given as the secret.
    """

    secret: str | None = None
    jwks_url: str | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 5.0
    jwks_timeout_s: float = 3.0
    jwks_cooldown_s: float = 30.0
    jwks_ttl_s: float = DEFAULT_JWKS_TTL_S
    max_policy_rules: int = DEFAULT_MAX_POLICY_RULES

    def __post_init__(self) -> None:
        if self.secret is not None:
            _check_secret(self.secret, "HS256", ConfigError)
        if self.jwks_url is not None:
            parts = urlsplit(self.jwks_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"jwks_url {self.jwks_url!r} is not an http(s) URL with a host")
        for name in ("audience", "issuer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string or unset, got {value!r}")
        _check_seconds("leeway_s", self.leeway_s, allow_zero=True)
        _check_seconds("jwks_timeout_s", self.jwks_timeout_s, allow_zero=False)
        _check_seconds("jwks_cooldown_s", self.jwks_cooldown_s, allow_zero=True)
        _check_seconds("jwks_ttl_s", self.jwks_ttl_s, allow_zero=False)
        rules = self.max_policy_rules
        if isinstance(rules, bool) or not isinstance(rules, int) or rules < 1:
            raise ConfigError(f"max_policy_rules must be a whole number >= 1, got {rules!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a verified token speaks for.

    ``scopes`` are the token's outboxhub scopes that built ``policy`` (foreign scopes such as ``openid``
    are dropped); it is empty when the policy came from a ``policy`` claim. ``claims`` is the whole
    verified payload, read-only (empty in the principal a gateway connection keeps:
    :meth:`for_session`).
    """

    sub: str | None
    exp: int
    scopes: tuple[str, ...]
    policy: acl.Policy
    claims: Mapping[str, Any]

    def for_session(self, policy: acl.Policy | None = None) -> Principal:
        """What a long-lived session keeps: this principal without the decoded claims (nothing reads them
        after AUTH; ≈ 1 KB per connection), with ``policy`` (an equal policy shared with other sessions)
        in place of its own when given."""
        if policy is not None and policy != self.policy:
            raise ValueError("for_session: the policy must be equal to the token's own")
        return replace(self, claims=_NO_CLAIMS, policy=self.policy if policy is None else policy)


class TokenVerifier:
    """Verifies AUTH tokens against an :class:`AuthConfig`.

    ``session`` is an aiohttp session for JWKS fetches; without one the verifier opens its own and
    :meth:`close` closes it. ``clock`` (monotonic seconds) only paces JWKS refetches; token times are
    checked against the wall clock.
    """

    def __init__(
        self,
        config: AuthConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.secret is None and config.jwks_url is None:
            raise ConfigError("auth needs a secret or a jwks_url; neither is set")
        self._config = config
        self._jwks = (
            JwksCache(
                url=config.jwks_url,
                issuer=config.issuer or config.jwks_url,
                timeout_s=config.jwks_timeout_s,
                cooldown_s=config.jwks_cooldown_s,
                ttl_s=config.jwks_ttl_s,
                session=session,
                clock=clock,
            )
            if config.jwks_url is not None
            else None
        )
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop any JWKS fetch and close the HTTP session if the verifier opened it."""
        self._closed = True
        if self._jwks is not None:
            await self._jwks.close()

    async def verify(self, token: object) -> Principal:
        """Verify ``token`` and return its :class:`Principal`.

        Raises :class:`~outboxhub.errors.AuthError`: ``no_token`` when the token is missing, empty or
        not a string; ``token_expired`` when ``exp`` has passed (beyond the leeway); ``jwt_invalid`` for
        everything else, with a message naming the problem.
        """
        if self._closed:
            raise RuntimeError("TokenVerifier.verify() called after close()")
        if token is None:
            raise AuthError("no_token", "no token given")
        if not isinstance(token, str):
            raise AuthError("no_token", f"token must be a string, got {type(token).__name__}")
        token = token.strip()
        if not token:
            raise AuthError("no_token", "token is empty")
        if len(token) > _MAX_TOKEN_CHARS:
            raise _invalid(f"token is {len(token)} characters long; the limit is {_MAX_TOKEN_CHARS}")

        header = _unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise _invalid("token header has no 'alg'")
        if alg.lower() == "none":
            raise _invalid(f"algorithm {alg!r} is not allowed")

        key: str | PublicKey
        if alg in _HMAC_MIN_SECRET_BYTES:
            key = self._secret_for(alg)
        elif alg in JWKS_ALGS:
            key = await self._jwks_key_for(alg, header.get("kid"))
        else:
            raise _invalid(f"algorithm {alg!r} is not supported (allowed: {', '.join(self._allowed_algs())})")
        claims = self._decode(token, key, alg)
        principal = _principal(claims)
        size = rule_count(principal.policy)
        if size > self._config.max_policy_rules:
            raise _invalid(
                f"the token's policy has {size} rules (counting each topic pattern); "
                f"the limit is {self._config.max_policy_rules} (max_policy_rules)"
            )
        return principal

    def _allowed_algs(self) -> list[str]:
        algs: list[str] = []
        if self._config.secret is not None:
            algs += sorted(_HMAC_MIN_SECRET_BYTES)
        if self._jwks is not None:
            algs += sorted(JWKS_ALGS)
        return algs

    def _secret_for(self, alg: str) -> str:
        secret = self._config.secret
        if secret is None:
            raise _invalid(f"algorithm {alg!r} needs a shared secret and none is configured")
        need = _HMAC_MIN_SECRET_BYTES[alg]
        have = len(secret.encode())
        if have < need:
            raise _invalid(
                f"algorithm {alg!r} needs a secret of at least {need} bytes; the configured one has {have}"
            )
        return secret

    async def _jwks_key_for(self, alg: str, kid: object) -> PublicKey:
        if self._jwks is None:
            raise _invalid(f"algorithm {alg!r} needs a JWKS and no jwks_url is configured")
        if not isinstance(kid, str) or not kid:
            raise _invalid(f"token header has no 'kid'; algorithm {alg!r} needs one to find its JWKS key")
        found = await self._jwks.get(kid)
        if alg not in found.algorithms:
            allowed = ", ".join(sorted(found.algorithms))
            raise _invalid(f"algorithm {alg!r} is not allowed for key id {kid!r} (allowed: {allowed})")
        return found.key

    def _decode(self, token: str, key: str | PublicKey, alg: str) -> dict[str, Any]:
        cfg = self._config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": ["exp"], "verify_aud": cfg.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            # The signature checked out (PyJWT verifies it before the claims), so the payload is genuine.
            raise AuthError("token_expired", f"token expired at {_iso(_payload(token).get('exp'))}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"missing required claim '{exc.claim}'") from None
        except jwt.InvalidAudienceError:
            got = _payload(token).get("aud")
            raise _invalid(f"audience mismatch: expected {cfg.audience!r}, token has {got!r}") from None
        except jwt.InvalidIssuerError:
            got = _payload(token).get("iss")
            raise _invalid(f"issuer mismatch: expected {cfg.issuer!r}, token has {got!r}") from None
        except jwt.ImmatureSignatureError as exc:
            payload = _payload(token)
            if "(iat)" in str(exc):
                raise _invalid(f"token issued in the future (iat {_iso(payload.get('iat'))})") from None
            raise _invalid(f"token not valid before {_iso(payload.get('nbf'))}") from None
        except jwt.InvalidSignatureError:
            raise _invalid("signature verification failed") from None
        except jwt.DecodeError as exc:
            raise _invalid(f"malformed token: {exc}") from None
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc)) from None
        except (OverflowError, ValueError, TypeError) as exc:  # a time claim PyJWT could not compare
            raise _invalid(f"a time claim (exp, nbf, iat) is out of range: {exc}") from None
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is not None and not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and 0 <= value <= MAX_TIME_CLAIM
            ):
                raise _invalid(
                    f"claim '{name}' is out of range: {str(value)[:40]!r} "
                    f"(a NumericDate from 0 to {MAX_TIME_CLAIM}, year 9999)"
                )
        return claims


_NO_CLAIMS: Final[Mapping[str, Any]] = MappingProxyType({})


def _principal(claims: dict[str, Any]) -> Principal:
    exp = int(claims["exp"])  # PyJWT has checked that it is an integer date
    sub = claims.get("sub")  # PyJWT has checked that it is a string when present
    scopes: tuple[str, ...] = ()
    if claims.get("policy") is not None:
        try:
            policy = acl.parse_policy(claims["policy"])
        except PolicyError as exc:
            raise _invalid(f"bad 'policy' claim: {exc}") from None
    else:
        if claims.get("scopes") is not None:
            scopes = tuple(_scope_claim("scopes", claims["scopes"]))
        elif claims.get("scope") is not None:
            scopes = tuple(_scope_claim("scope", claims["scope"]))
        policy = _scopes_policy(scopes)
    return Principal(sub=sub, exp=exp, scopes=scopes, policy=policy, claims=MappingProxyType(claims))


def _scope_claim(name: str, value: object) -> list[str]:
    if isinstance(value, str | list):
        return acl.filter_foreign_scopes(value)  # non-string entries are foreign too, and dropped
    raise _invalid(f"'{name}' claim must be a list of strings or a space-separated string")


def _scopes_policy(scopes: Sequence[str]) -> acl.Policy:
    try:
        return acl.scopes_to_policy(scopes)
    except PolicyError as exc:
        for scope in scopes:  # name the culprit whatever the acl message says
            try:
                acl.scopes_to_policy([scope])
            except PolicyError as one:
                text = str(one) if repr(scope) in str(one) else f"scope {scope!r}: {one}"
                raise _invalid(f"invalid {text}") from None
        raise _invalid(f"invalid scopes: {exc}") from None


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _invalid(f"malformed token: {exc}") from None


def _payload(token: str) -> dict[str, Any]:
    """The payload without checks, only for naming values in error messages."""
    try:
        payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return payload


def _iso(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            pass
    return repr(value)


def _invalid(msg: str) -> AuthError:
    return AuthError("jwt_invalid", msg)


def _check_seconds(name: str, value: float, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value!r}")


def _check_secret(secret: object, algorithm: str, error: type[Exception]) -> None:
    if not isinstance(secret, str) or not secret:
        raise error("secret must be a non-empty string")
    data = secret.encode()
    if is_pem_format(data) or is_ssh_key(data):
        raise error(
            "secret looks like a PEM or SSH key; HS* needs a random shared secret "
            "(public keys belong in the JWKS)"
        )
    need = _HMAC_MIN_SECRET_BYTES[algorithm]
    if len(data) < need:
        raise error(f"secret is {len(data)} bytes; {algorithm} needs at least {need} (RFC 7518 §3.2)")


def mint_token(
    secret: str,
    *,
    sub: str,
    scopes: Sequence[str] = (),
    ttl_s: int = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    policy: Mapping[str, Any] | None = None,
    algorithm: str = "HS256",
) -> str:
    """Sign a token with the shared secret that :class:`TokenVerifier` accepts.

    ``scopes`` go into the ``scopes`` claim (a string is split on spaces), ``policy`` into the ``policy``
    claim; both are checked first, so a token that AUTH would refuse is never minted. Raises
    ``ValueError`` (``PolicyError`` for scopes and policy) naming the bad argument.
    """
    if algorithm not in _HMAC_MIN_SECRET_BYTES:
        raise ValueError(f"algorithm {algorithm!r} is not one of {', '.join(_HMAC_MIN_SECRET_BYTES)}")
    _check_secret(secret, algorithm, ValueError)
    if not isinstance(sub, str) or not sub:
        raise ValueError(f"sub must be a non-empty string, got {sub!r}")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive whole number of seconds, got {ttl_s!r}")
    scope_list = acl.split_scopes(scopes) if isinstance(scopes, str) else list(scopes)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_s, "jti": new_id()}
    if scope_list:
        acl.scopes_to_policy(acl.filter_foreign_scopes(scope_list))
        claims["scopes"] = scope_list
    if policy is not None:
        acl.parse_policy(policy)
        claims["policy"] = dict(policy)
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)


_TTL_UNITS: Final[Mapping[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_TTL_PART = re.compile(r"(\d+)([smhd])")


def parse_ttl(text: str) -> int:
    """Seconds in a TTL: ``"3600"``, ``"45s"``, ``"30m"``, ``"1h"``, ``"2d"`` or a sum like ``"1h30m"``.

    Raises ``ValueError`` naming the input when it is not one of those or is zero.
    """
    if not isinstance(text, str):
        raise ValueError(f"TTL must be a string, got {type(text).__name__}")
    spec = text.strip().lower()
    total: int | None = None
    if spec.isascii() and spec.isdigit():
        total = int(spec)
    elif spec and _TTL_PART.sub("", spec) == "":
        total = sum(int(n) * _TTL_UNITS[u] for n, u in _TTL_PART.findall(spec))
    if total is None:
        raise ValueError(
            f"invalid TTL {text!r}: expected seconds or a duration like '45s', '30m', '1h', '2d'"
        )
    if total <= 0:
        raise ValueError(f"invalid TTL {text!r}: must be more than zero seconds")
    return total
