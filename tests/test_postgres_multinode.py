"""Two ``outboxhub serve`` processes on one PostgreSQL schema, with WebSocket clients on both.

Publishers on both hubs; one group (``work``) with members on both hubs; two fan-out groups, one member
each, on different hubs. At the end every event is delivered and acked exactly once per group, and every
group's lag is zero. Delivery to a member on the other hub depends on cross-process wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from outboxhub.auth.jwt import mint_token
from outboxhub.store import open_store
from outboxhub.testing.postgres import throwaway_schema

pytestmark = pytest.mark.postgres

SECRET = "multinode-test-secret-" + "0123456789abcdef" * 3
PATTERN = "mn.**"
PUBLISHERS_PER_HUB = 2
EVENTS_PER_PUBLISHER = 60
WAIT_S = 60.0
"""Safety bound for start-up and for the whole exchange; never a performance threshold."""


class HubProcess:
    """One ``outboxhub serve`` child process; ``ws_url`` is read from its start-up lines.

    Both of its output streams are read to the end in the background for as long as it runs: a pipe that
    nobody reads fills up (64 KiB of log lines) and then blocks the hub in its next write. The last lines
    are kept for :meth:`report`, which a failing test shows with the process's exit status.
    """

    KEPT_LINES = 40

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ws_url = ""
        self.output: deque[str] = deque(maxlen=self.KEPT_LINES)
        self._started = asyncio.Event()  # the ``dashboard:`` line was printed, or stdout ended
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, "out")),
            asyncio.create_task(self._read(proc.stderr, "err")),
        ]

    async def _read(self, stream: asyncio.StreamReader, name: str) -> None:
        try:
            while line := (await stream.readline()).decode(errors="replace"):
                self.output.append(f"{name}: {line.rstrip()[:500]}")
                if name == "out" and line.startswith("ws: "):
                    self.ws_url = line[4:].strip()
                elif name == "out" and line.startswith("dashboard:"):
                    self._started.set()
        finally:
            if name == "out":
                self._started.set()

    def report(self) -> str:
        """The process's state (running or its exit status) and its last output lines."""
        code = self.proc.returncode
        state = "running" if code is None else f"exited with status {code}"
        return f"outboxhub serve (pid {self.proc.pid}) {state}; last output:\n" + "\n".join(self.output)

    @classmethod
    async def start(cls, store_url: str) -> HubProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
        env.update(
            OUTBOXHUB_STORE=store_url,
            OUTBOXHUB_JWT_SECRET=SECRET,
            OUTBOXHUB_HOST="127.0.0.1",
            OUTBOXHUB_WS_PORT="0",
            OUTBOXHUB_OPS_PORT="0",
            OUTBOXHUB_LOG_LEVEL="warning",
        )
        script = Path(sys.executable).with_name("outboxhub")
        command = (
            [str(script)]
            if script.exists()
            else [sys.executable, "-c", "from outboxhub.cli.app import main; main()"]
        )
        proc = await asyncio.create_subprocess_exec(
            *command, "serve", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        hub = cls(proc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S):
                await hub._started.wait()
        if not hub.ws_url or proc.returncode is not None:
            await hub.stop()
            pytest.fail(f"outboxhub serve did not start: {hub.report()}", pytrace=False)
        return hub

    async def stop(self) -> None:
        """SIGTERM (SIGKILL after 20 s), then the rest of its output."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def running(*hubs: HubProcess) -> AsyncIterator[None]:
    """Stop ``hubs`` at the end. A failure inside gets each hub's state and last output as notes; a hub
    that exited before it was stopped fails the test (a hub must outlive anything its store goes through).
    """
    try:
        yield
    except BaseException as exc:
        for hub in hubs:
            with contextlib.suppress(TimeoutError):  # let a dead hub's exit status be collected
                await asyncio.wait_for(asyncio.shield(hub.proc.wait()), 1)
            exc.add_note(hub.report())
        raise
    finally:
        died = [hub.report() for hub in hubs if hub.proc.returncode is not None]
        for hub in hubs:
            await hub.stop()
    if died:
        pytest.fail("a hub exited during the test: " + "\n".join(died), pytrace=False)


@pytest.fixture
async def hubs() -> AsyncIterator[tuple[str, list[HubProcess]]]:
    async with throwaway_schema("multinode") as url:
        outcomes = await asyncio.gather(HubProcess.start(url), HubProcess.start(url), return_exceptions=True)
        started = [hub for hub in outcomes if isinstance(hub, HubProcess)]
        async with running(*started):
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            yield url, started


async def test_two_hub_processes_share_groups_over_postgres(
    hubs: tuple[str, list[HubProcess]], ws_connect: Callable[..., Awaitable[Any]]
) -> None:
    store_url, (hub_a, hub_b) = hubs
    token = mint_token(SECRET, sub="mn", scopes=["publish:**", "subscribe:**"])
    received: dict[str, Counter[str]] = {"work": Counter(), "fan_a": Counter(), "fan_b": Counter()}
    published: set[str] = set()
    total = 2 * PUBLISHERS_PER_HUB * EVENTS_PER_PUBLISHER
    everything = asyncio.Event()

    async def member(url: str, group: str) -> None:
        client = await ws_connect(url, token=token)
        reply = await client.request("SUBSCRIBE", topic=PATTERN, group=group, opts={"start": "earliest"})
        assert reply["op"] == "OK", reply
        ready.release()
        while True:
            frame = await client.next_event(WAIT_S)
            event_id = frame["event"]["id"]
            received[group][event_id] += 1
            await client.send({"op": "ACK", "topic": PATTERN, "group": group, "id": event_id})
            if len(published) == total and all(set(c) >= published for c in received.values()):
                everything.set()

    async def publisher(url: str, p: int) -> None:
        client = await ws_connect(url, token=token)
        for i in range(EVENTS_PER_PUBLISHER):
            reply = await client.request("PUBLISH", topic=f"mn.p{p}.t{i % 3}", payload={"p": p, "i": i})
            assert reply["op"] == "OK", reply
            published.add(reply["id"])

    members = [(hub_a.ws_url, "work"), (hub_a.ws_url, "work"), (hub_b.ws_url, "work"), (hub_b.ws_url, "work")]
    members += [(hub_a.ws_url, "fan_a"), (hub_b.ws_url, "fan_b")]
    ready = asyncio.Semaphore(0)
    member_tasks = [asyncio.create_task(member(url, group)) for url, group in members]
    try:
        async with asyncio.timeout(WAIT_S):
            for _ in members:
                await ready.acquire()
            await asyncio.gather(
                *(
                    publisher(hub.ws_url, p + offset)
                    for hub, offset in ((hub_a, 0), (hub_b, PUBLISHERS_PER_HUB))
                    for p in range(PUBLISHERS_PER_HUB)
                )
            )
            if not all(set(c) >= published for c in received.values()):
                await everything.wait()
    finally:
        for task in member_tasks:
            task.cancel()
        for task in member_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert len(published) == total
    for group, counts in received.items():
        assert set(counts) == published, group
        assert max(counts.values()) == 1, f"{group}: an event was delivered twice"
    store = await open_store(store_url)
    try:
        async with asyncio.timeout(WAIT_S):
            for group in received:
                # ACKs are fire-and-forget: wait for the last ones to land (polling the store).
                while (lag := await store.lag(PATTERN, group)) is None or lag.lag_count:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        assert await store.count(PATTERN) == total
    finally:
        await store.close()
