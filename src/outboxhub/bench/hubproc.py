"""The hub under test: a subprocess started for the run, or a running hub named by ``--url``.

The subprocess is ``outboxhub serve`` on free ports (``OUTBOXHUB_WS_PORT=0``), signed tokens from a
secret made for the run (``OUTBOXHUB_JWT_SECRET``), no per-connection publish rate limit, and warning-level
logs. It prints its bound URLs (``ws: …``, ``dashboard: …``), which is how the harness learns the ports.
Server and clients are separate processes, so each has its own core and event loop, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import msgspec

from outboxhub.auth.jwt import mint_token
from outboxhub.bench.options import BenchOptions
from outboxhub.bench.procstats import find_listener
from outboxhub.store.base import mask_url

__all__ = ["BENCH_SCOPES", "HubTarget", "describe", "hub_target", "start_hub_process"]

BENCH_SCOPES: Final = ("publish:**", "subscribe:**", "ops:read")
_SERVE: Final = (
    "from outboxhub.config import load_settings; from outboxhub.app import serve; serve(load_settings())"
)
_START_TIMEOUT_S: Final = 60.0
_STOP_TIMEOUT_S: Final = 30.0


class HubTarget(msgspec.Struct, frozen=True, kw_only=True):
    """Where the clients connect, with what token; ``pid`` to watch (None when unknown); ``store_url`` is
    set when the harness owns the hub (then events may be prefilled through the store directly)."""

    ws_url: str
    ops_url: str | None
    token: str
    pid: int | None
    store_url: str | None
    store_label: str


def _store_label(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    return {"postgres": "postgresql"}.get(scheme, scheme) or "?"


_BENCH_MAX_CONNECTIONS = 100_000


@contextlib.asynccontextmanager
async def start_hub_process(
    store_url: str, *, workdir: Path, ws_server: str | None = None
) -> AsyncIterator[HubTarget]:
    """Run ``outboxhub serve`` on ``store_url`` (with ``ws_server`` when given) until the block ends
    (then SIGTERM, then SIGKILL)."""
    secret = secrets.token_urlsafe(48)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env.update(
        OUTBOXHUB_STORE=store_url,
        OUTBOXHUB_HOST="127.0.0.1",
        OUTBOXHUB_WS_PORT="0",
        OUTBOXHUB_OPS_PORT="0",
        OUTBOXHUB_JWT_SECRET=secret,
        OUTBOXHUB_LOG_LEVEL="warning",
        OUTBOXHUB_PUBLISH_RATE="0",
        # every bench client connects from 127.0.0.1: the per-IP limit (256 by default) would refuse the
        # idle scenario's 1,000 connections, which measure memory, not the limit
        OUTBOXHUB_MAX_CONNECTIONS=str(_BENCH_MAX_CONNECTIONS),
        OUTBOXHUB_MAX_CONNECTIONS_PER_IP=str(_BENCH_MAX_CONNECTIONS),
    )
    if ws_server is not None:
        env["OUTBOXHUB_WS_SERVER"] = ws_server
    log_path = workdir / "hub.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SERVE, env=env, stdout=asyncio.subprocess.PIPE, stderr=log
        )
        try:
            ws_url, ops_url = await _read_urls(proc, log_path)
            token = mint_token(secret, sub="bench", scopes=BENCH_SCOPES, ttl_s=24 * 3600)
            yield HubTarget(
                ws_url=ws_url,
                ops_url=ops_url,
                token=token,
                pid=proc.pid,
                store_url=store_url,
                store_label=_store_label(store_url),
            )
        finally:
            await _stop(proc)


async def _read_urls(proc: asyncio.subprocess.Process, log_path: Path) -> tuple[str, str]:
    assert proc.stdout is not None
    ws_url = ""
    try:
        async with asyncio.timeout(_START_TIMEOUT_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    await proc.wait()
                    tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:].strip()
                    raise RuntimeError(f"the hub exited during start-up (status {proc.returncode}): {tail}")
                key, _, value = line.strip().partition(": ")
                if key == "ws":
                    ws_url = value
                elif key == "dashboard":
                    return ws_url, value
    except TimeoutError:
        raise RuntimeError(f"the hub did not report its ports within {_START_TIMEOUT_S:g} s") from None


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    if proc.stdout is not None:
        with contextlib.suppress(Exception):
            await proc.stdout.read()


@contextlib.asynccontextmanager
async def hub_target(options: BenchOptions, *, store: str | None, workdir: Path) -> AsyncIterator[HubTarget]:
    """The hub of this run: ``--url`` as given (its pid found by its port when it is local), else a
    subprocess over ``store``."""
    if options.url is not None or store is None:
        if options.url is None or options.token is None:
            raise ValueError("a hub target needs a store URL, or --url with --token")
        parts = urlsplit(options.url)
        pid = None
        if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
            pid = find_listener(parts.port)
        yield HubTarget(
            ws_url=options.url,
            ops_url=options.ops_url,
            token=options.token,
            pid=pid,
            store_url=None,
            store_label="remote",
        )
        return
    async with start_hub_process(store, workdir=workdir, ws_server=options.ws_server) as target:
        yield target


def describe(target: HubTarget) -> str:
    """One line naming the hub (password masked)."""
    where = mask_url(target.store_url) if target.store_url else target.ws_url
    return f"{target.store_label} ({where})"
