"""The checks of ``outboxhub doctor``, each one :class:`Check` (passed or not, what was found, the fix).

They go through the same code the hub and the drainers run: ``open_store``, ``open_outbox``,
``AuthConfig`` / ``TokenVerifier`` / ``JwksCache`` and the ACL policy, so a check passes exactly when that
part of ``serve`` or ``drain`` would start. No check writes anything except what ``serve`` itself would do
on start (``open_store`` brings an existing store's schema to the current version); a store or outbox
SQLite file that does not exist is reported, not created.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

import aiohttp

from outboxhub.auth.acl import Policy
from outboxhub.auth.jwks import JwksCache
from outboxhub.auth.jwt import TokenVerifier
from outboxhub.config import Settings
from outboxhub.errors import OutboxhubError
from outboxhub.store.base import mask_url

__all__ = [
    "TIMEOUT_S",
    "Check",
    "check_hub",
    "check_jwks",
    "check_jwt",
    "check_outbox",
    "check_ports",
    "check_store",
    "check_token",
    "describe_policy",
]

TIMEOUT_S: Final = 10.0
"""The longest one check waits for a server (a database, the JWKS endpoint, the hub)."""

_SECRET_FIX: Final = "set OUTBOXHUB_JWT_SECRET to at least 32 random bytes, e.g. $(openssl rand -hex 32)"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: ``name`` (what was checked), ``ok``, ``detail`` (what was found) and, when
    it failed, ``fix`` (what to do)."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def _bounded(work: Awaitable[_T], what: str) -> _T:
    try:
        async with asyncio.timeout(TIMEOUT_S):
            return await work
    except TimeoutError:
        raise OutboxhubError(f"{what}: no answer within {TIMEOUT_S:g} s") from None


# -- store and outboxes -----------------------------------------------------------------------------------


def _schema_version(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from outboxhub.store.sqlite.schema import SCHEMA_VERSION
    elif scheme in ("postgresql", "postgres"):
        from outboxhub.store.postgres.schema import SCHEMA_VERSION
    else:
        return "collections and indexes ready"
    return f"schema version {SCHEMA_VERSION} (current)"


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a ``sqlite:`` store URL whose file does not exist (None otherwise)."""
    if not url.lower().startswith("sqlite:"):
        return None
    from outboxhub.store.sqlite.store import parse_sqlite_url

    path, _options = parse_sqlite_url(url)
    return None if path == ":memory:" or os.path.exists(path) else path


async def check_store(url: str) -> Check:
    """The hub store opens (reachable, credentials accepted, schema current or brought to current)."""
    from outboxhub.store import open_store

    shown = mask_url(url)
    name = "store"
    try:
        missing = _missing_sqlite_file(url)
        if missing is not None:
            return Check(name, True, f"{shown}: {missing} does not exist yet; serve creates it")
        store = await _bounded(open_store(url), f"store {shown}")
    except OutboxhubError as exc:
        return Check(name, False, _first_line(exc), _store_fix(url, str(exc)))
    await store.close()
    return Check(name, True, f"{shown} reachable, {_schema_version(url)}")


def _store_fix(url: str, message: str) -> str:
    lowered = message.lower()
    if "scheme" in lowered or "malformed" in lowered or ("url" in lowered and "expected" in lowered):
        return "use sqlite:///path.db, postgresql://user:password@host:5432/db or mongodb://host:27017/db"
    if "extra" in lowered:
        return message[message.find("pip install") :] if "pip install" in message else "install the extra"
    if "password" in lowered or "authentication" in lowered or "role" in lowered:
        return "correct the user and password in the URL (or in PGPASSWORD / ~/.pgpass)"
    if "newer" in lowered:
        return "upgrade outboxhub to the version that wrote this database"
    return "check the host, port and database name in the URL, and that the server is running"


async def check_outbox(url: str) -> Check:
    """The outbox table (collection) exists in the application's database and can be read."""
    from outboxhub.outbox import open_outbox, parse_outbox_url

    shown = mask_url(url)
    name = f"outbox {shown}"
    create = (
        f"create it: python -c \"from outboxhub.outbox import ensure_schema; ensure_schema('{shown}')\" or "
        "apply the DDL in docs/outbox.md"
    )
    try:
        parsed = parse_outbox_url(url)
        if parsed.kind == "sqlite" and not os.path.exists(parsed.target):  # noqa: ASYNC240 - a stat
            return Check(name, False, f"database file {parsed.target} does not exist", create)
        outbox = await _bounded(open_outbox(url), f"outbox {shown}")
    except OutboxhubError as exc:
        return Check(name, False, _first_line(exc), _store_fix(url, str(exc)))
    try:
        stats = await _bounded(outbox.stats(), f"outbox {shown}")
    except OutboxhubError as exc:
        message = _first_line(exc)
        fix = create if "does not exist" in message else _store_fix(url, message)
        return Check(name, False, message, fix)
    finally:
        await outbox.close()
    return Check(name, True, f"table {outbox.table!r} present: {stats.pending} pending, {stats.dead} dead")


# -- JWT configuration and tokens -------------------------------------------------------------------------


def check_jwt(settings: Settings) -> list[Check]:
    """The JWT settings: a secret long enough or a JWKS URL; aud and iss when tokens come from a JWKS."""
    if settings.dev_mode:
        return [
            Check(
                "jwt",
                False,
                "no JWT secret or JWKS URL: serve would run in development mode (a new random secret "
                "each run, every token invalid after a restart)",
                f"{_SECRET_FIX}, or set OUTBOXHUB_JWT_JWKS_URL to your identity provider's JWKS",
            )
        ]
    from outboxhub.app import auth_config  # what serve checks tokens with (imported only for doctor)

    try:
        auth_config(settings)
    except OutboxhubError as exc:
        fix = _SECRET_FIX if "secret" in str(exc) else "correct the setting named in the message"
        return [Check("jwt", False, _first_line(exc), fix)]
    checks = []
    if settings.jwt_secret:
        size = len(settings.jwt_secret.encode())
        algs = ", ".join(alg for alg, need in (("HS256", 32), ("HS384", 48), ("HS512", 64)) if size >= need)
        checks.append(Check("jwt", True, f"shared secret of {size} bytes: verifies {algs}"))
    if settings.jwt_jwks_url:
        missing = [
            env
            for env, value in (
                ("OUTBOXHUB_JWT_AUD", settings.jwt_aud),
                ("OUTBOXHUB_JWT_ISS", settings.jwt_iss),
            )
            if not value
        ]
        if missing:
            checks.append(
                Check(
                    "jwt aud/iss",
                    False,
                    "tokens come from a JWKS but no audience/issuer is required: any token that identity "
                    "provider signs, for any application, would be accepted",
                    "set " + " and ".join(missing),
                )
            )
        else:
            checks.append(
                Check("jwt aud/iss", True, f"audience {settings.jwt_aud!r}, issuer {settings.jwt_iss!r}")
            )
    return checks


async def check_jwks(settings: Settings) -> Check:
    """The JWKS URL answers with a key set and at least one key is usable."""
    url = settings.jwt_jwks_url or ""
    cache = JwksCache(
        url=url,
        issuer=settings.jwt_iss or url,
        timeout_s=TIMEOUT_S,
        cooldown_s=0,
        session=None,
        clock=asyncio.get_running_loop().time,
    )
    try:
        keys, refused = await cache.fetch_keys()
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as exc:
        return Check(
            "jwks",
            False,
            f"{url}: {_first_line(exc) if str(exc) else 'timed out'}",
            "check OUTBOXHUB_JWT_JWKS_URL (http(s) URL of the key set, reachable from this host)",
        )
    finally:
        await cache.close()
    refusals = "; ".join(f"{kid}: {why}" for kid, why in sorted(refused.items()))
    if not keys:
        detail = f"{url}: no usable key" + (f" ({refusals})" if refusals else "")
        return Check("jwks", False, detail, "publish RSA (2048+ bits), EC or OKP keys with a kid in the JWKS")
    found = ", ".join(f"{k.kid} ({'/'.join(sorted(k.algorithms))})" for k in keys)
    detail = f"{url}: {len(keys)} usable key(s): {found}" + (f"; refused {refusals}" if refusals else "")
    return Check("jwks", True, detail)


def describe_policy(policy: Policy) -> str:
    """The rights of a token as the hub reads them: its ACL rules and ops scopes."""
    rules = [rule.describe() for rule in policy.rules]
    if policy.ops:
        rules.append("ops:" + ",".join(sorted(policy.ops)))
    return "; ".join(rules) if rules else "no rights (every publish and subscribe is refused)"


async def check_token(settings: Settings, token: str) -> Check:
    """Verify ``token`` as the hub would and print its rights."""
    if settings.dev_mode:
        return Check(
            "token",
            False,
            "cannot verify the token: no JWT secret or JWKS URL is configured here",
            "set the hub's OUTBOXHUB_JWT_SECRET or OUTBOXHUB_JWT_JWKS_URL (and aud/iss) before doctor",
        )
    from outboxhub.app import auth_config

    try:
        verifier = TokenVerifier(auth_config(settings))
    except OutboxhubError as exc:
        return Check(
            "token", False, f"cannot verify the token: {_first_line(exc)}", "fix the jwt check first"
        )
    try:
        principal = await _bounded(verifier.verify(token), "token verification")
    except OutboxhubError as exc:
        return Check("token", False, _first_line(exc), "mint a new one: outboxhub token --sub NAME --scope …")
    finally:
        await verifier.close()
    expires = datetime.fromtimestamp(principal.exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Check(
        "token",
        True,
        f"sub {principal.sub!r}, expires {expires}, rights: {describe_policy(principal.policy)}",
    )


# -- ports and a running hub ------------------------------------------------------------------------------


async def _answers(url: str) -> bool:
    """Does an outboxhub-like server answer at ``url`` (a WebSocket handshake, or HTTP 200 on /healthz)?"""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if url.startswith("ws"):
                async with session.ws_connect(url):
                    return True
            async with session.get(url) as resp:
                return resp.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


def _bind_error(host: str, port: int) -> OSError | None:
    with contextlib.closing(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


async def check_ports(settings: Settings) -> list[Check]:
    """``serve``'s two ports are free, or a hub already answers on them."""
    host = settings.host
    checks = []
    for what, port, flag, probe in (
        ("ws port", settings.ws_port, "--ws-port / OUTBOXHUB_WS_PORT", f"ws://{host}:{settings.ws_port}/"),
        (
            "ops port",
            settings.ops_port,
            "--ops-port / OUTBOXHUB_OPS_PORT",
            f"http://{host}:{settings.ops_port}/healthz",
        ),
    ):
        if port == 0:
            checks.append(Check(what, True, "0: the system picks a free port"))
            continue
        error = _bind_error(host, port)
        if error is None:
            checks.append(Check(what, True, f"{host}:{port} is free"))
        elif await _answers(probe):
            checks.append(Check(what, True, f"{host}:{port} is taken by a hub that answers ({probe})"))
        else:
            checks.append(
                Check(
                    what,
                    False,
                    f"cannot bind {host}:{port}: {error.strerror or error}",
                    f"choose another port: {flag}",
                )
            )
    return checks


async def check_hub(url: str, token: str | None) -> Check:
    """The hub at ``url`` answers; with a token, it accepts it (its AUTH verdict, not ours)."""
    from outboxhub.client import HubClient

    if token is None:
        if await _answers(url):
            return Check("hub", True, f"{url} answers (pass --token to check AUTH too)")
        return Check(
            "hub", False, f"{url} does not answer", "start the hub, or correct --url / OUTBOXHUB_URL"
        )
    try:
        client = HubClient(url, token, reconnect=False, connect_timeout_s=TIMEOUT_S)
    except ValueError as exc:
        return Check("hub", False, _first_line(exc), "use ws://host:port/ or wss://host/")
    try:
        await _bounded(client.connect(), f"hub {url}")
    except OutboxhubError as exc:
        return Check("hub", False, f"{url}: {_first_line(exc)}", "start the hub, or mint a token it accepts")
    finally:
        await client.close()
    return Check("hub", True, f"{url} answers and accepts the token (sub {client.subject!r})")
