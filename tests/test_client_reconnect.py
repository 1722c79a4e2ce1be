"""Reconnects and tokens: the hub stops (gracefully, or killed with SIGKILL) and restarts on the same port
and database while a client publishes; tokens that expire are refreshed by a provider."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from outboxhub.app import Hub
from outboxhub.auth.jwt import mint_token
from outboxhub.client import (
    Backoff,
    HubClient,
    HubConnectionError,
    PublishResult,
    SubscribeContext,
    TokenExpired,
)
from outboxhub.model import Event
from outboxhub.store import open_store

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

ALL = ("publish:**", "subscribe:**")
KILL_SECRET = "client-kill-test-secret-" + "fedcba9876543210" * 3
FAST = Backoff(initial_s=0.02, max_s=0.3)

SERVE = "from outboxhub.config import load_settings; from outboxhub.app import serve; serve(load_settings())"


class Producers:
    """``workers`` tasks publishing in a loop (each waits for its confirmation) until stopped."""

    def __init__(self, client: HubClient, topic: str, workers: int) -> None:
        self.client = client
        self.topic = topic
        self.confirmed: list[PublishResult] = []
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks = [asyncio.create_task(self._work(w)) for w in range(workers)]

    async def _work(self, worker: int) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                self.confirmed.append(await self.client.publish(self.topic, {"w": worker, "i": i}))
            except Exception as exc:  # any error is a test failure, reported below
                self.errors.append(exc)
                self._progress.set()
                return
            self._progress.set()
            i += 1

    async def wait_for(self, total: int, wait_s: float = 30.0) -> None:
        async with asyncio.timeout(wait_s):
            while len(self.confirmed) < total and not self.errors:
                self._progress.clear()
                await self._progress.wait()
        assert not self.errors, self.errors

    async def stop(self) -> None:
        self._stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*self._tasks)
        assert not self.errors, self.errors


async def _check_log(store_url: str, topic: str, confirmed: list[PublishResult]) -> None:
    """Every confirmed event is in the log exactly once, and nothing else is."""
    store = await open_store(store_url)
    try:
        events = await store.scan(topic, limit=1_000_000)
    finally:
        await store.close()
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), "an event id is in the log twice"
    by_id = {e.id: e.seq for e in events}
    for result in confirmed:
        assert by_id.get(result.id) == result.seq, f"confirmed event {result.id} missing or moved"
    assert len({r.id for r in confirmed}) == len(confirmed) == len(events)


async def test_graceful_restart_while_publishing_loses_nothing_and_stores_nothing_twice(
    hub_factory: Callable[..., Awaitable[Hub]], token: Callable[..., str]
) -> None:
    first = await hub_factory()
    store_url, port = first.settings.store, first.ws_port
    async with HubClient(first.ws_url, token(scopes=ALL), backoff=FAST) as client:
        producers = Producers(client, "load.restart", workers=16)
        await producers.wait_for(300)
        await first.close()
        second = await hub_factory(store=store_url, ws_port=port)
        before = len(producers.confirmed)
        await producers.wait_for(before + 300)
        await producers.stop()
        assert client.reconnects >= 1
        await second.close()
    await _check_log(store_url, "load.restart", producers.confirmed)


class CutProxy:
    """A TCP proxy in front of the hub that can stop passing the hub's replies on (``freeze``) and then
    drop every connection (``cut``): the hub stores publishes whose confirmations never reach the client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links.append((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer, down=False), self._pump(up_reader, writer, down=True)
        )

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, down: bool) -> None:
        try:
            while data := await src.read(65536):
                if down and self.frozen:
                    continue  # the hub's replies vanish
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()

    def cut(self) -> None:
        self.frozen = False
        links, self._links = self._links, []
        for client_side, hub_side in links:
            client_side.transport.abort()
            hub_side.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_unconfirmed_publishes_are_resent_with_their_ids_and_deduplicated(
    hub: Hub, token: Callable[..., str]
) -> None:
    proxy = CutProxy(hub.ws_port)
    port = await proxy.start()
    workers = 40
    try:
        async with HubClient(f"ws://127.0.0.1:{port}/", token(scopes=ALL), backoff=FAST) as client:
            producers = Producers(client, "load.proxy", workers=workers)
            await producers.wait_for(200)
            proxy.frozen = True
            # Each worker has one publish outstanding; wait until the hub has stored all of them.
            async with asyncio.timeout(10):
                while True:
                    if await hub.store.count("load.proxy") >= len(producers.confirmed) + workers:
                        break
                    await asyncio.sleep(0.01)
            stored_unconfirmed = await hub.store.count("load.proxy") - len(producers.confirmed)
            assert stored_unconfirmed == workers
            proxy.cut()
            before = len(producers.confirmed)
            await producers.wait_for(before + 200)
            await producers.stop()
            assert client.reconnects == 1
    finally:
        await proxy.close()
    # the re-sent copies were recognised by their ids: the hub answered duplicate=True with the first seq
    assert sum(r.duplicate for r in producers.confirmed) == workers
    await _check_log(hub.settings.store, "load.proxy", producers.confirmed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _serve(env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise AssertionError(f"serve exited early: {err.decode(errors='replace')}")
                if line.startswith(b"dashboard:"):
                    return proc
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


async def test_sigkill_while_publishing_loses_no_confirmed_event_and_stores_none_twice(
    tmp_path: Path,
) -> None:
    port = _free_port()
    store_url = f"sqlite:///{tmp_path / 'killed.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env.update(
        OUTBOXHUB_STORE=store_url,
        OUTBOXHUB_HOST="127.0.0.1",
        OUTBOXHUB_WS_PORT=str(port),
        OUTBOXHUB_OPS_PORT="0",
        OUTBOXHUB_JWT_SECRET=KILL_SECRET,
        OUTBOXHUB_LOG_LEVEL="error",
    )
    proc = await _serve(env)
    try:
        jwt = mint_token(KILL_SECRET, sub="killer", scopes=ALL)
        async with HubClient(f"ws://127.0.0.1:{port}/", jwt, backoff=FAST) as client:
            producers = Producers(client, "load.killed", workers=32)
            await producers.wait_for(500)
            proc.send_signal(signal.SIGKILL)  # no graceful anything: replies in flight are lost
            await proc.wait()
            proc = await _serve(env)
            before = len(producers.confirmed)
            await producers.wait_for(before + 500)
            await producers.stop()
            assert client.reconnects >= 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await proc.wait()
    await _check_log(store_url, "load.killed", producers.confirmed)


async def test_subscriptions_resume_after_a_restart(
    hub_factory: Callable[..., Awaitable[Hub]], token: Callable[..., str]
) -> None:
    first = await hub_factory()
    store_url, port = first.settings.store, first.ws_port
    got: asyncio.Queue[int] = asyncio.Queue()

    def handler(event: Event, ctx: SubscribeContext) -> None:
        got.put_nowait(event.payload)

    async with (
        HubClient(first.ws_url, token(scopes=ALL), backoff=FAST) as consumer,
        HubClient(first.ws_url, token(scopes=ALL), backoff=FAST) as producer,
    ):
        await consumer.subscribe("resume.*", "g", handler, start="earliest")
        await producer.publish("resume.a", 1)
        async with asyncio.timeout(10):
            assert await got.get() == 1
        await first.close()
        await hub_factory(store=store_url, ws_port=port)
        await producer.publish("resume.a", 2)  # waits for the reconnect, then goes through
        async with asyncio.timeout(10):
            # at least once: 1 comes again if its ACK was still on the way when the hub went down
            while (payload := await got.get()) != 2:
                assert payload == 1
        assert consumer.reconnects >= 1


# -- tokens --------------------------------------------------------------------------------------------


async def test_token_provider_refreshes_before_expiry_on_the_open_connection(
    hub_factory: Callable[..., Awaitable[Hub]], token: Callable[..., str]
) -> None:
    hub = await hub_factory(jwt_leeway_s=0)  # the hub closes the connection right at exp
    calls = 0
    third_call = asyncio.Event()

    async def provider() -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            third_call.set()
        return token(scopes=ALL, ttl_s=3)  # refreshed about 1 s before it expires

    async with HubClient(hub.ws_url, provider) as client:
        first_exp = client.exp
        assert first_exp is not None
        async with asyncio.timeout(20):
            await third_call.wait()  # connect, then two refreshes
        # the first token has expired by now; the connection lives on with refreshed tokens
        await asyncio.sleep(max(0.0, first_exp + 0.5 - time.time()))
        assert (await client.publish("after.refresh", 1)).seq >= 1
        assert client.reconnects == 0
        assert client.exp is not None and client.exp > first_exp
    assert calls >= 3


async def test_a_fixed_token_that_expires_ends_the_client_with_token_expired(
    hub_factory: Callable[..., Awaitable[Hub]], token: Callable[..., str]
) -> None:
    hub = await hub_factory(jwt_leeway_s=0)
    async with HubClient(hub.ws_url, token(scopes=ALL, ttl_s=2)) as client:
        stream = client.messages("x.*", "g")
        await stream.__aenter__()
        with pytest.raises(TokenExpired, match="token_expired"):
            async with asyncio.timeout(10):
                await anext(stream)
        with pytest.raises(TokenExpired):
            await client.publish("x.y", 1)


async def test_a_sync_provider_is_asked_again_at_reconnect(
    hub_factory: Callable[..., Awaitable[Hub]], token: Callable[..., str]
) -> None:
    first = await hub_factory()
    store_url, port = first.settings.store, first.ws_port
    calls = 0

    def provider() -> str:
        nonlocal calls
        calls += 1
        return token(scopes=ALL, sub=f"svc-{calls}")

    async with HubClient(first.ws_url, provider, backoff=FAST) as client:
        assert client.subject == "svc-1"
        await first.close()
        await hub_factory(store=store_url, ws_port=port)
        await client.publish("again.x", 1)
        assert calls >= 2 and client.subject == f"svc-{calls}"


# -- when reconnecting is not wanted or does not work ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [({"reconnect": False}, "reconnect is off"), ({"max_reconnect_attempts": 2}, "gave up reconnecting")],
)
async def test_a_link_that_cannot_come_back_fails_every_waiting_call(
    hub_factory: Callable[..., Awaitable[Hub]],
    token: Callable[..., str],
    options: dict[str, object],
    message: str,
) -> None:
    hub = await hub_factory()
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=FAST, **options) as client:  # type: ignore[arg-type]
        stream = client.messages("gone.*", "g")
        await stream.__aenter__()
        await hub.close()
        with pytest.raises(HubConnectionError, match=message):
            async with asyncio.timeout(10):
                await anext(stream)
        with pytest.raises(HubConnectionError, match=message):
            await client.publish("gone.x", 1)
        assert not client.connected


async def test_drain_lets_running_handlers_finish_and_ack(hub: Hub, token: Callable[..., str]) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    async def slow(event: Event, ctx: SubscribeContext) -> None:
        started.set()
        await release.wait()
        finished.append(event.payload)

    client = HubClient(hub.ws_url, token(scopes=ALL))
    await client.connect()
    await client.subscribe("drain.*", "d", slow, start="earliest")
    await client.publish("drain.x", 1)
    async with asyncio.timeout(10):
        await started.wait()
    draining = asyncio.create_task(client.drain())
    await asyncio.sleep(0.05)
    assert not draining.done()  # waiting for the handler
    release.set()
    async with asyncio.timeout(10):
        await draining
    assert finished == [1]
    lag = await hub.store.lag("drain.*", "d")
    assert lag is not None and lag.lag_count == 0  # the handler's ACK went out before the close
