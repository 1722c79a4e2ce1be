"""A 3-node JetStream cluster started by each test on loopback ports (``nats-server -c`` with a generated
config) and a stream with 3 replicas on it:

* two stores (each connected to another node): the group's work is shared exactly once, and a SIGKILL of
  the stream leader under a pipelined publisher loses no confirmed event;
* two ``outboxhub serve`` processes with WebSocket members of one group on both: every event exactly once
  per group.

Every process and directory is removed afterwards.

Without the ``nats-server`` binary the test is skipped, or fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nats_server import throwaway_stream
from outboxhub.auth.jwt import mint_token
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.testing import unavailable
from test_postgres_multinode import SECRET, WAIT_S, HubProcess, running  # serve-process helpers

pytestmark = [pytest.mark.nats, pytest.mark.timeout(240)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    command: list[str]
    log: Path

    def restart(self) -> None:
        """Start the node again on its config and data directory (after a kill)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    binary = shutil.which("nats-server")
    if binary is None:
        unavailable("the NATS cluster test needs the nats-server binary on PATH")
    ports = [(_free_port(), _free_port()) for _ in range(3)]
    routes = ", ".join(f"nats-route://127.0.0.1:{cport}" for _, cport in ports)
    nodes: list[Node] = []
    try:
        for index, (port, cport) in enumerate(ports):
            name = f"n{index + 1}"
            config = tmp_path / f"{name}.conf"
            config.write_text(
                f'server_name: {name}\nlisten: "127.0.0.1:{port}"\n'
                f'jetstream {{ store_dir: "{tmp_path / name}" }}\n'
                f'cluster {{ name: obtest, listen: "127.0.0.1:{cport}", routes: [{routes}] }}\n'
            )
            command = [binary, "-c", str(config)]
            log_path = tmp_path / f"{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            nodes.append(Node(name, port, process, command, log_path))
        yield nodes
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        shutil.rmtree(tmp_path, ignore_errors=True)


def _list(nodes: list[Node]) -> list[str]:
    return [f"nats://127.0.0.1:{n.port}" for n in nodes]


def _servers(nodes: list[Node]) -> str:
    return "nats://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)


async def _ready(nodes: list[Node]) -> None:
    """Wait until the cluster has a JetStream meta leader (a stream can be created)."""
    import nats

    deadline = time.monotonic() + 30
    while True:
        try:
            nc = await nats.connect(_list(nodes), connect_timeout=1, max_reconnect_attempts=1)
            try:
                await nc.jetstream().account_info()
                return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_two_hubs_share_a_group_and_a_leader_kill_loses_no_confirmed_event(cluster: list[Node]) -> None:
    await _ready(cluster)
    async with throwaway_stream(_servers(cluster), replicas=3, options="&timeout_s=15") as url:
        first = await open_store(url)
        # The second hub lists the servers in another order, so it talks to another node.
        query = url.split("?", 1)[1]
        second = await open_store(_servers(cluster[::-1]) + "?" + query)
        try:
            earliest = StartPosition(kind="earliest")
            await first.ensure_group("w.*", "workers", earliest)
            await second.ensure_group("w.*", "workers", earliest)
            sent = await first.publish_batch([NewEvent(topic="w.job", payload=i) for i in range(200)])

            # 1. One group, two hubs: every event once, split between them.
            async def work(store: object, member: str, seen: list[str]) -> None:
                assert hasattr(store, "claim")
                idle = 0
                while idle < 10:
                    got = await store.claim(
                        "w.*", "workers", member, limit=7, ack_timeout_ms=30_000, max_deliver=5
                    )  # type: ignore[attr-defined]
                    if not got:
                        idle += 1
                        await asyncio.sleep(0.05)
                        continue
                    idle = 0
                    seen.extend(d.event.id for d in got)
                    await store.ack("w.*", "workers", [d.event.id for d in got])  # type: ignore[attr-defined]

            seen_one: list[str] = []
            seen_two: list[str] = []
            # Each hub's first claim comes before either works on (a loaded machine must not let one
            # worker take everything before the other starts), then both work concurrently.
            for store, seen in ((first, seen_one), (second, seen_two)):
                got = await store.claim("w.*", "workers", "x", limit=7, ack_timeout_ms=30_000, max_deliver=5)
                seen.extend(d.event.id for d in got)
                await store.ack("w.*", "workers", [d.event.id for d in got])
            assert len(seen_one) == len(seen_two) == 7
            await asyncio.gather(work(first, "a", seen_one), work(second, "b", seen_two))
            assert sorted(seen_one + seen_two) == sorted(r.id for r in sent)  # every event exactly once

            # 2. SIGKILL the stream leader while a pipelined publisher runs.
            import nats

            nc = await nats.connect(_list(cluster))
            info = await nc.jetstream().stream_info(query.split("&")[0].split("=")[1])
            await nc.close()
            assert info.cluster is not None and info.cluster.leader is not None
            leader = next(n for n in cluster if n.name == info.cluster.leader)
            confirmed: list[str] = []
            stop = asyncio.Event()

            async def publisher() -> None:
                batch_no = 0
                while not stop.is_set():
                    batch = [NewEvent(topic="w.kill", id=f"k-{batch_no}-{i}", payload=i) for i in range(20)]
                    try:
                        results = await first.publish_batch(batch)
                    except Exception:  # unconfirmed: may or may not be stored; not counted
                        await asyncio.sleep(0.05)
                        continue
                    confirmed.extend(r.id for r in results)
                    batch_no += 1

            task = asyncio.create_task(publisher())
            while len(confirmed) < 200:  # noqa: ASYNC110 - polling a list the publisher task fills
                await asyncio.sleep(0.02)
            leader.process.send_signal(signal.SIGKILL)
            leader.process.wait()
            before_kill = len(confirmed)
            deadline = time.monotonic() + 30
            while len(confirmed) < before_kill + 200 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            stop.set()
            await task
            assert len(confirmed) >= before_kill + 200, "publishing did not resume after the leader died"
            stored = [e.id for e in await second.scan("w.kill", limit=1_000_000)]
            assert set(confirmed) <= set(stored)
            assert len(stored) == len(set(stored))  # retried publishes were deduplicated

            # 3. The killed node restarts; a store connected to it alone reads every confirmed event.
            leader.restart()
            alone = await open_store(f"nats://127.0.0.1:{leader.port}?{query}")
            try:
                deadline = time.monotonic() + 30
                while True:
                    present = {e.id for e in await alone.scan("w.kill", limit=1_000_000)}
                    if set(confirmed) <= present or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert set(confirmed) <= present
            finally:
                await alone.close()
        finally:
            await first.close()
            await second.close()


async def test_joining_a_group_whose_consumer_leader_stopped_waits_for_the_new_leader(
    cluster: list[Node],
) -> None:
    """A second hub joins a group (``ensure_group``, what SUBSCRIBE does) while the node leading the group's
    R3 consumer is stopped (SIGSTOP: it neither answers nor closes its connections): the request is lost,
    and the store asks again until another node leads (before: StoreUnavailable after one lost request,
    which a SUBSCRIBE during a leader election answered with an ERROR)."""
    await _ready(cluster)
    async with throwaway_stream(_servers(cluster), replicas=3, options="&timeout_s=30") as url:
        query = url.split("?", 1)[1]
        first = await open_store(url)
        try:
            earliest = StartPosition(kind="earliest")
            await first.ensure_group("g.*", "joiners", earliest)
            import nats

            nc = await nats.connect(_list(cluster))
            try:
                stream = query.split("&")[0].split("=")[1]
                consumers = await nc.jetstream().consumers_info(stream)
            finally:
                await nc.close()
            (consumer,) = [
                c for c in consumers if c.config.durable_name and "joiners" in str(c.config.description)
            ]
            assert consumer.cluster is not None and consumer.cluster.leader is not None
            leader = next(n for n in cluster if n.name == consumer.cluster.leader)
            others = [n for n in cluster if n is not leader]
            second = await open_store(_servers(others) + "?" + query)
            leader.process.send_signal(signal.SIGSTOP)
            try:
                info = await second.ensure_group("g.*", "joiners", earliest)
                assert info.group == "joiners"
            finally:
                leader.process.send_signal(signal.SIGCONT)
                await second.close()
        finally:
            await first.close()


async def test_two_serve_processes_on_the_cluster_share_work_exactly_once(
    cluster: list[Node], ws_connect: Callable[..., Awaitable[Any]]
) -> None:
    """Two ``outboxhub serve`` processes, each on another node of the cluster (R3 stream): one group with
    members on both hubs gets every event exactly once; a fan-out group per hub gets every event too."""
    await _ready(cluster)
    async with throwaway_stream(_servers(cluster), replicas=3, options="&timeout_s=15") as url:
        query = url.split("?", 1)[1]
        hub_a = await HubProcess.start(url)
        async with running(hub_a):
            hub_b = await HubProcess.start(_servers(cluster[::-1]) + "?" + query)
            async with running(hub_b):
                await _share(hub_a, hub_b, ws_connect)


async def _share(hub_a: HubProcess, hub_b: HubProcess, ws_connect: Callable[..., Awaitable[Any]]) -> None:
    token = mint_token(SECRET, sub="js", scopes=["publish:**", "subscribe:**"])
    received: dict[str, Counter[str]] = {"work": Counter(), "fan_a": Counter(), "fan_b": Counter()}
    published: set[str] = set()
    total = 2 * 2 * 50
    everything = asyncio.Event()
    ready = asyncio.Semaphore(0)
    # Every request waits as long as the whole exchange may: the hub answers within the store's timeout_s
    # per JetStream request (15 s here), and a SUBSCRIBE that creates a replicated consumer on a loaded
    # cluster takes several of those (WsClient's default wait of 10 s failed such a SUBSCRIBE).
    wait_s = WAIT_S

    async def member(url: str, group: str) -> None:
        client = await ws_connect(url, token=token)
        opts = {"start": "earliest"}
        reply = await client.request("SUBSCRIBE", wait_s, topic="js.**", group=group, opts=opts)
        assert reply["op"] == "OK", reply
        ready.release()
        while True:
            frame = await client.next_event(wait_s)
            event_id = frame["event"]["id"]
            received[group][event_id] += 1
            await client.send({"op": "ACK", "topic": "js.**", "group": group, "id": event_id})
            if len(published) == total and all(set(c) >= published for c in received.values()):
                everything.set()

    async def publisher(url: str, p: int) -> None:
        client = await ws_connect(url, token=token)
        for i in range(50):
            reply = await client.request(
                "PUBLISH", wait_s, topic=f"js.p{p}.t{i % 3}", payload={"p": p, "i": i}
            )
            assert reply["op"] == "OK", reply
            published.add(reply["id"])

    async def all_ready() -> None:
        for _ in members:
            await ready.acquire()

    async def until(step: Awaitable[object]) -> None:
        """Await ``step`` while the members run; a member that fails ends the wait with its own error (it
        would otherwise show only when the exchange timed out)."""
        waiter = asyncio.ensure_future(step)
        try:
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()  # a member ends only by failing
        finally:
            if not waiter.done():
                waiter.cancel()
        await waiter

    members = [(hub_a, "work"), (hub_a, "work"), (hub_b, "work"), (hub_b, "work"), (hub_a, "fan_a")]
    members.append((hub_b, "fan_b"))
    tasks = [asyncio.create_task(member(hub.ws_url, group)) for hub, group in members]
    try:
        async with asyncio.timeout(2 * WAIT_S):
            await until(all_ready())
            publishers = (publisher(hub.ws_url, p) for p, hub in enumerate((hub_a, hub_a, hub_b, hub_b)))
            await until(asyncio.gather(*publishers))
            if not all(set(c) >= published for c in received.values()):
                await until(everything.wait())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(published) == total
    for group, counts in received.items():
        assert set(counts) == published, group
        assert max(counts.values()) == 1, f"{group}: an event was delivered twice"
