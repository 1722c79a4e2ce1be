"""``outboxhub doctor`` against healthy and broken setups of each store, run as the console script."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from outboxhub import outbox
from outboxhub.app import Hub

GOOD_SECRET = "s" * 40


async def _doctor(*args: str, **env: str) -> tuple[int, dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOXHUB_", "JWT_"))}
    base.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli",
        "doctor",
        "--json",
        *args,
        env=base,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    assert out, err.decode()
    return proc.returncode, json.loads(out)


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in doc["checks"]}


@pytest.fixture
def ports(unused_tcp_port_factory: Callable[[], int]) -> dict[str, str]:
    return {
        "OUTBOXHUB_WS_PORT": str(unused_tcp_port_factory()),
        "OUTBOXHUB_OPS_PORT": str(unused_tcp_port_factory()),
        "OUTBOXHUB_JWT_SECRET": GOOD_SECRET,
    }


def _sqlite_outbox(path: Path) -> str:
    url = f"sqlite:///{path}"
    outbox.ensure_schema(url)
    return url


# -- SQLite ------------------------------------------------------------------------------------------------


async def test_healthy_sqlite_setup_passes_every_check(tmp_path: Path, ports: dict[str, str]) -> None:
    store = f"sqlite:///{tmp_path / 'hub.db'}"
    sqlite3.connect(tmp_path / "hub.db").close()
    app_outbox = _sqlite_outbox(tmp_path / "app.db")
    code, doc = await _doctor("--store", store, "--outbox", app_outbox, **ports)
    assert code == 0, doc
    assert doc["ok"] is True
    checks = _by_name(doc)
    assert "schema version" in checks["store"]["detail"]
    assert "present" in checks[f"outbox {app_outbox}"]["detail"]
    assert checks["ws port"]["ok"] and checks["ops port"]["ok"]


async def test_sqlite_outbox_without_its_table_fails_with_the_fix(
    tmp_path: Path, ports: dict[str, str]
) -> None:
    sqlite3.connect(tmp_path / "app.db").close()  # the database exists, the outbox table does not
    url = f"sqlite:///{tmp_path / 'app.db'}"
    code, doc = await _doctor("--outbox", url, "--store", f"sqlite:///{tmp_path / 'hub.db'}", **ports)
    assert code == 1 and doc["ok"] is False
    check = _by_name(doc)[f"outbox {url}"]
    assert not check["ok"] and "does not exist" in check["detail"]
    assert "ensure_schema" in check["fix"] and "docs/outbox.md" in check["fix"]
    assert not (tmp_path / "hub.db").exists(), "doctor created the store file"


async def test_short_secret_fails_and_names_the_fix(tmp_path: Path, ports: dict[str, str]) -> None:
    env = {**ports, "OUTBOXHUB_JWT_SECRET": "short"}
    code, doc = await _doctor("--store", f"sqlite:///{tmp_path / 'hub.db'}", **env)
    assert code == 1
    check = _by_name(doc)["jwt"]
    assert not check["ok"] and "5 bytes" in check["detail"] and "32" in check["detail"]
    assert "OUTBOXHUB_JWT_SECRET" in check["fix"]


async def test_no_auth_configured_is_reported_as_development_mode(
    tmp_path: Path, ports: dict[str, str]
) -> None:
    env = {k: v for k, v in ports.items() if k != "OUTBOXHUB_JWT_SECRET"}
    code, doc = await _doctor("--store", f"sqlite:///{tmp_path / 'hub.db'}", **env)
    assert code == 1 and "development mode" in _by_name(doc)["jwt"]["detail"]


async def test_a_taken_port_fails_naming_the_flag(tmp_path: Path, ports: dict[str, str]) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        env = {**ports, "OUTBOXHUB_WS_PORT": str(port)}
        code, doc = await _doctor("--store", f"sqlite:///{tmp_path / 'hub.db'}", **env)
    finally:
        server.close()
        await server.wait_closed()
    assert code == 1
    check = _by_name(doc)["ws port"]
    assert not check["ok"] and "--ws-port" in check["fix"]


# -- JWKS -------------------------------------------------------------------------------------------------


@pytest.fixture
async def jwks_url(unused_tcp_port: int) -> AsyncIterator[str]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    jwk["kid"] = "k1"

    async def keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/jwks.json", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        yield f"http://127.0.0.1:{unused_tcp_port}/jwks.json"
    finally:
        await runner.cleanup()


async def test_reachable_jwks_with_aud_and_iss_passes(
    tmp_path: Path, ports: dict[str, str], jwks_url: str
) -> None:
    env = {k: v for k, v in ports.items() if k != "OUTBOXHUB_JWT_SECRET"}
    env |= {"OUTBOXHUB_JWT_JWKS_URL": jwks_url, "OUTBOXHUB_JWT_AUD": "hub", "OUTBOXHUB_JWT_ISS": "idp"}
    code, doc = await _doctor("--store", f"sqlite:///{tmp_path / 'hub.db'}", **env)
    assert code == 0, doc
    assert "k1 (ES256)" in _by_name(doc)["jwks"]["detail"]


async def test_unreachable_jwks_and_missing_aud_fail(
    tmp_path: Path, ports: dict[str, str], unused_tcp_port: int
) -> None:
    env = {k: v for k, v in ports.items() if k != "OUTBOXHUB_JWT_SECRET"}
    env["OUTBOXHUB_JWT_JWKS_URL"] = f"http://127.0.0.1:{unused_tcp_port}/jwks.json"  # nothing listens
    code, doc = await _doctor("--store", f"sqlite:///{tmp_path / 'hub.db'}", **env)
    assert code == 1
    checks = _by_name(doc)
    assert not checks["jwks"]["ok"] and "OUTBOXHUB_JWT_JWKS_URL" in checks["jwks"]["fix"]
    assert not checks["jwt aud/iss"]["ok"] and "OUTBOXHUB_JWT_AUD" in checks["jwt aud/iss"]["fix"]


# -- a running hub and a token ------------------------------------------------------------------------------


async def test_token_rights_as_the_hub_reads_them_and_the_running_hub(
    hub: Hub, token: Callable[..., str]
) -> None:
    minted = token(sub="alice", scopes=["publish:orders.**", "subscribe:orders.*", "ops:read"])
    env = {"OUTBOXHUB_JWT_SECRET": hub.settings.jwt_secret or ""}
    code, doc = await _doctor("--url", hub.ws_url, "--token", minted, **env)
    assert code == 0, doc
    checks = _by_name(doc)
    assert "accepts the token" in checks["hub"]["detail"] and "alice" in checks["hub"]["detail"]
    rights = checks["token"]["detail"]
    assert (
        "allow publish orders.**" in rights and "allow subscribe orders.*" in rights and "ops:read" in rights
    )
    assert "store" not in checks  # --url alone: the hub's store is not this machine's business


async def test_a_token_for_another_secret_is_refused_by_doctor_and_the_hub(
    hub: Hub, token: Callable[..., str]
) -> None:
    forged = token(sub="mallory", secret="z" * 40)
    env = {"OUTBOXHUB_JWT_SECRET": hub.settings.jwt_secret or ""}
    code, doc = await _doctor("--url", hub.ws_url, "--token", forged, **env)
    assert code == 1
    checks = _by_name(doc)
    assert not checks["token"]["ok"] and "signature" in checks["token"]["detail"]
    assert not checks["hub"]["ok"]


# -- PostgreSQL -------------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_healthy_store_and_outbox_pass(ports: dict[str, str]) -> None:
    from outboxhub.testing.postgres import throwaway_schema

    async with throwaway_schema("doctor") as store_url:
        table = f"outbox_{uuid.uuid4().hex[:12]}"
        outbox_url = f"{store_url.split('?')[0]}?table={table}"
        await outbox.ensure_schema_async(outbox_url)
        try:
            code, doc = await _doctor("--store", store_url, "--outbox", outbox_url, **ports)
        finally:
            await _drop_table(table)
    assert code == 0, doc
    assert "schema version" in _by_name(doc)["store"]["detail"]


async def _drop_table(table: str) -> None:
    import psycopg

    from outboxhub.testing.postgres import base_url

    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.postgres
async def test_postgres_wrong_credentials_and_missing_outbox_table_fail(ports: dict[str, str]) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from outboxhub.testing.postgres import require_postgres

    base = await require_postgres()
    parts = urlsplit(base)
    # The test server trusts local connections, so a wrong password alone would get in: a user that does
    # not exist is the credential error it does refuse.
    bad = urlunsplit(parts._replace(netloc=f"no_such_user:wrong@{parts.hostname}:{parts.port or 5432}"))
    missing = f"{base.split('?')[0]}?table=outbox_missing_{uuid.uuid4().hex[:8]}"
    code, doc = await _doctor("--store", bad, "--outbox", missing, **ports)
    assert code == 1
    checks = _by_name(doc)
    assert not checks["store"]["ok"] and "no_such_user" in checks["store"]["detail"]
    assert "wrong" not in checks["store"]["detail"], "the password was printed"
    assert "user and password" in checks["store"]["fix"]
    outbox_check = next(c for name, c in checks.items() if name.startswith("outbox "))
    assert not outbox_check["ok"] and "does not exist" in outbox_check["detail"]


# -- MongoDB (the nx-27017 stand-in) ------------------------------------------------------------------------


@pytest.mark.mongo
async def test_mongo_healthy_store_and_outbox_pass(mongo_server: Any, ports: dict[str, str]) -> None:
    from outboxhub.testing.mongo import database_url

    store_url = database_url(mongo_server.base_url, f"doctor_{uuid.uuid4().hex[:8]}")
    outbox_url = database_url(mongo_server.base_url, f"doctorapp_{uuid.uuid4().hex[:8]}")
    code, doc = await _doctor("--store", store_url, "--outbox", outbox_url, **ports)
    assert code == 0, doc
    assert "reachable" in _by_name(doc)["store"]["detail"]


@pytest.mark.mongo
async def test_mongo_unreachable_server_fails(unused_tcp_port: int, ports: dict[str, str]) -> None:
    url = f"mongodb://127.0.0.1:{unused_tcp_port}/doctor?serverSelectionTimeoutMS=1000"
    code, doc = await _doctor("--store", url, **ports)
    assert code == 1
    check = _by_name(doc)["store"]
    assert not check["ok"] and check["fix"]
