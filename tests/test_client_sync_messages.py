"""``SyncHubClient.messages``: consuming from a plain thread against a real hub (SQLite file, real sockets).

Each test runs its blocking part in a worker thread (``asyncio.to_thread``): the hub serves on the test's
own loop, the sync client on its background thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from outboxhub.app import Hub
from outboxhub.client import ClientClosed, SyncHubClient, SyncMessage, Topic, connect_sync

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

ALL = ("publish:**", "subscribe:**")


class Job(msgspec.Struct):
    n: int


JOBS = Topic("jobs.run", Job)


def _until(check: Callable[[], bool], what: str, wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    while not check():
        assert time.monotonic() < deadline, f"not within {wait_s} s: {what}"
        time.sleep(0.01)


def _take(stream: Any, n: int) -> list[SyncMessage[Any]]:
    taken = [stream.receive(timeout_s=10) for _ in range(n)]
    assert all(msg is not None for msg in taken)
    return taken


async def _in_thread(hub: Hub, token: Callable[..., str], body: Callable[[SyncHubClient], Any]) -> Any:
    def run() -> Any:
        with connect_sync(hub.ws_url, token(scopes=ALL)) as sync_hub:
            return body(sync_hub)

    return await asyncio.to_thread(run)


async def test_a_group_consumes_typed_messages_and_acks_them(hub: Hub, token: Callable[..., str]) -> None:
    def body(sync_hub: SyncHubClient) -> list[int]:
        for n in range(5):
            sync_hub.publish(JOBS, Job(n=n))
        seen: list[int] = []
        with sync_hub.messages(JOBS, "workers", start="earliest") as stream:
            for msg in stream:
                seen.append(msg.payload.n)
                if len(seen) < 5:
                    msg.ack()
                else:
                    msg.double_ack()  # confirmed: the hub's state shows every ACK now
                    break
        return seen

    assert await _in_thread(hub, token, body) == [0, 1, 2, 3, 4]
    lag = await hub.store.lag("jobs.run", "workers")
    assert lag is not None and lag.lag_count == 0


async def test_a_nack_is_redelivered(hub: Hub, token: Callable[..., str]) -> None:
    def body(sync_hub: SyncHubClient) -> None:
        published = sync_hub.publish("jobs.retry", {"n": 1})
        with sync_hub.messages("jobs.*", "workers", start="earliest") as stream:
            (first,) = _take(stream, 1)
            assert (first.event.id, first.attempt, first.redelivered) == (published.id, 1, False)
            first.nack(reason="not yet", delay_ms=0)
            (again,) = _take(stream, 1)
            assert (again.event.id, again.attempt, again.redelivered) == (published.id, 2, True)
            again.double_ack()

    await _in_thread(hub, token, body)
    lag = await hub.store.lag("jobs.*", "workers")
    assert lag is not None and lag.lag_count == 0


async def test_a_slow_consumer_buffers_at_most_max_in_flight(hub: Hub, token: Callable[..., str]) -> None:
    """Back-pressure is the group's credit: the hub sends no more than ``max_in_flight`` unsettled
    deliveries, so a consumer that holds one message buffers at most ``max_in_flight - 1`` more, however
    many wait in the group."""

    def body(sync_hub: SyncHubClient) -> list[int]:
        for n in range(40):
            sync_hub.publish("slow.job", n)
        with sync_hub.messages("slow.*", "workers", start="earliest", max_in_flight=4) as stream:
            (held,) = _take(stream, 1)
            _until(lambda: stream.buffered == 3, "the group's credit filled")
            sync_hub.publish("slow.job", 40)  # a round trip on the same connection; a pause to let more come
            time.sleep(0.2)
            assert stream.buffered == 3
            seen, most = [held.payload], stream.buffered
            held.ack()
            while len(seen) < 41:
                msg = stream.receive(timeout_s=10)
                assert msg is not None
                most = max(most, stream.buffered)
                seen.append(msg.payload)
                msg.ack()
            assert most <= 3
            return seen

    assert sorted(await _in_thread(hub, token, body)) == list(range(41))


async def test_close_from_another_thread_ends_a_waiting_iterator(hub: Hub, token: Callable[..., str]) -> None:
    def body(sync_hub: SyncHubClient) -> None:
        stream = sync_hub.messages("quiet.*", "workers")
        stream.subscribe()
        ended: list[BaseException] = []

        def consume() -> None:
            try:
                for _ in stream:
                    pass
            except BaseException as exc:
                ended.append(exc)

        consumer = threading.Thread(target=consume)
        consumer.start()
        time.sleep(0.1)  # let it block in the wait (it raises the same either way)
        sync_hub.close()
        consumer.join(10)
        assert not consumer.is_alive()
        assert len(ended) == 1 and isinstance(ended[0], ClientClosed), ended
        with pytest.raises(ClientClosed):
            stream.receive(timeout_s=1)
        stream.unsubscribe()  # nothing to do after the close

    await _in_thread(hub, token, body)


async def test_unsubscribe_from_another_thread_ends_the_iteration(
    hub: Hub, token: Callable[..., str]
) -> None:
    def body(sync_hub: SyncHubClient) -> None:
        stream = sync_hub.messages("quiet.*", "workers")
        stream.subscribe()
        stopper = threading.Timer(0.1, stream.unsubscribe)
        stopper.start()
        assert list(stream) == []  # ends, no error
        stopper.join()
        assert stream.receive(timeout_s=1) is None

    await _in_thread(hub, token, body)


async def test_a_receive_that_times_out_loses_nothing(hub: Hub, token: Callable[..., str]) -> None:
    def body(sync_hub: SyncHubClient) -> None:
        with sync_hub.messages("late.*", "workers") as stream:
            with pytest.raises(TimeoutError):
                stream.receive(timeout_s=0.05)
            published = sync_hub.publish("late.one", 1)
            msg = stream.receive(timeout_s=10)  # the wait that timed out is taken up again
            assert msg is not None and msg.event.id == published.id
            msg.double_ack()

    await _in_thread(hub, token, body)


async def test_acks_from_the_consuming_thread_while_others_publish_and_settle(
    hub: Hub, token: Callable[..., str]
) -> None:
    """Every verb runs on the client's loop thread: acks from the consuming thread interleave with
    publishes from another thread, and of two threads settling one message exactly one does."""

    def body(sync_hub: SyncHubClient) -> int:
        total = 60
        publisher = threading.Thread(target=lambda: [sync_hub.publish("mix.job", n) for n in range(total)])
        with sync_hub.messages("mix.*", "workers", start="earliest", max_in_flight=8) as stream:
            publisher.start()
            outcomes: list[str] = []
            lock = threading.Lock()
            for count, msg in enumerate(stream, 1):
                racers = [threading.Thread(target=_settle, args=(msg, outcomes, lock)) for _ in range(2)]
                for racer in racers:
                    racer.start()
                for racer in racers:
                    racer.join()
                if count == total:
                    break
            publisher.join()
            assert outcomes.count("acked") == total and outcomes.count("refused") == total
            return count

    assert await _in_thread(hub, token, body) == 60
    for _ in range(100):  # plain ACKs are not confirmed: wait for the hub to have applied them
        lag = await hub.store.lag("mix.*", "workers")
        if lag is not None and lag.lag_count == 0:
            break
        await asyncio.sleep(0.05)
    assert lag is not None and lag.lag_count == 0


def _settle(msg: SyncMessage[Any], outcomes: list[str], lock: threading.Lock) -> None:
    try:
        msg.ack()
        outcome = "acked"
    except RuntimeError:  # "already acked; settle it once"
        outcome = "refused"
    with lock:
        outcomes.append(outcome)


async def test_after_close_publishing_and_settling_raise_client_closed(
    hub: Hub, token: Callable[..., str]
) -> None:
    def run() -> None:
        sync_hub = connect_sync(hub.ws_url, token(scopes=ALL))
        sync_hub.publish(JOBS, Job(n=1))
        stream = sync_hub.messages(JOBS, "late", start="earliest")
        (msg,) = _take(stream, 1)
        sync_hub.close()
        with pytest.raises(ClientClosed):
            sync_hub.publish(JOBS, Job(n=2))
        with pytest.raises(ClientClosed):
            msg.ack()
        assert not msg.settled

    await asyncio.to_thread(run)
