"""The server process: ``serve`` in a subprocess (dev mode banner, SIGTERM with publishes in flight), and
``Hub.close`` with connected clients."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from outboxhub.app import Hub
from outboxhub.store import open_store

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

SERVE = "from outboxhub.config import load_settings; from outboxhub.app import serve; serve(load_settings())"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OUTBOXHUB_") and k not in ("JWT_SECRET", "JWT_JWKS_URL", "WS_PORT", "OPS_PORT")
    }
    env.update(
        OUTBOXHUB_STORE=f"sqlite:///{tmp_path / 'served.db'}",
        OUTBOXHUB_WS_PORT="0",
        OUTBOXHUB_OPS_PORT="0",
        OUTBOXHUB_HOST="127.0.0.1",
        OUTBOXHUB_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


async def _start(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    try:
        async with asyncio.timeout(30):
            while "dashboard" not in lines:  # the last line of the banner
                raw = await proc.stdout.readline()
                if not raw:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise AssertionError(f"serve exited early: {err.decode(errors='replace')}")
                key, _, value = raw.decode().strip().partition(": ")
                lines[key] = value
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, lines


async def test_serve_dev_mode_prints_a_token_and_shuts_down_gracefully_on_sigterm(tmp_path: Path) -> None:
    proc, lines = await _start(_env(tmp_path))
    try:
        assert lines["ws"].startswith("ws://127.0.0.1:") and lines["ws"].endswith("/")
        assert lines["dashboard"].startswith("http://127.0.0.1:")
        assert "development mode" in lines["warning"]
        token = lines["token"]

        n = 3000
        replies: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(lines["ws"]) as ws:
            await ws.send_json({"op": "AUTH", "token": token, "rid": "auth"})
            ok = await ws.receive_json(timeout=10)
            assert ok["op"] == "OK" and ok["sub"] == "dev"
            assert set(ok["scopes"]) == {"publish:**", "subscribe:**", "ops:read", "ops:write"}
            for i in range(n):
                await ws.send_json({"op": "PUBLISH", "topic": "shutdown.test", "payload": i, "rid": i})
            replies.append(await ws.receive_json(timeout=10))  # publishes are in flight now
            proc.send_signal(signal.SIGTERM)
            while True:
                msg = await ws.receive(timeout=20)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                replies.append(msg.json())
            close_code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert close_code == 1001
    # every publish the hub read was answered, in order: OK (durable) or ERR unavailable (shutting down)
    rids = [r["rid"] for r in replies]
    assert rids == list(range(len(rids)))
    oks = [r for r in replies if r["op"] == "OK"]
    assert oks, "no publish was confirmed before the shutdown"
    assert all(r["op"] == "OK" or r["code"] == "unavailable" for r in replies)
    store = await open_store(f"sqlite:///{tmp_path / 'served.db'}")
    try:
        assert await store.count("shutdown.test") == len(oks)
    finally:
        await store.close()


async def test_serve_with_a_secret_prints_no_token(tmp_path: Path) -> None:
    proc, lines = await _start(_env(tmp_path, OUTBOXHUB_JWT_SECRET="s" * 40))
    try:
        assert "token" not in lines and "warning" not in lines
        async with aiohttp.ClientSession() as http, http.get(f"{lines['dashboard']}healthz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_with_a_jwks_url_prints_no_token(tmp_path: Path) -> None:
    """A JWKS URL alone (no secret) is a configured verifier, not development mode: no dev token, no
    warning, and tokens signed with a key of that JWKS are accepted."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "use": "sig"}

    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/jwks.json", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        jwks_url = f"http://127.0.0.1:{site.port}/jwks.json"
        proc, lines = await _start(_env(tmp_path, OUTBOXHUB_JWT_JWKS_URL=jwks_url))
        try:
            assert "token" not in lines and "warning" not in lines, lines
            claims = {"sub": "svc", "exp": int(time.time()) + 300, "scopes": ["publish:**"]}
            good = jwt.encode(claims, key, "ES256", headers={"kid": "k1"})
            async with aiohttp.ClientSession() as http, http.ws_connect(lines["ws"]) as ws:
                await ws.send_json({"op": "AUTH", "token": good, "rid": 1})
                ok = await ws.receive_json(timeout=10)
                assert ok["op"] == "OK" and ok["sub"] == "svc", ok
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await runner.cleanup()


async def test_serve_reports_a_bad_store_and_exits_1(tmp_path: Path) -> None:
    env = _env(tmp_path, OUTBOXHUB_STORE="nosuch://x")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert b"error:" in err and b"nosuch" in err


async def test_hub_close_answers_in_flight_publishes_and_closes_with_1001(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub: Hub = await hub_factory()
    c = await ws_connect(hub.ws_url, token=token())
    sub = await ws_connect(hub.ws_url, token=token())
    assert (await sub.request("SUBSCRIBE", topic="x.*", group="g"))["op"] == "OK"
    n = 500
    for i in range(n):
        await c.send({"op": "PUBLISH", "topic": "x.y", "payload": i, "rid": i})
    first = await c.recv()
    await hub.close()
    assert await c.wait_closed() == 1001
    replies = [first, *c.others]
    assert [r["rid"] for r in replies] == list(range(len(replies)))
    assert all(r["op"] == "OK" or r["code"] == "unavailable" for r in replies)
    assert await sub.wait_closed() == 1001
    with pytest.raises(aiohttp.ClientConnectionError):
        await ws_connect(hub.ws_url)
