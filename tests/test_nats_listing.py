"""The JetStream store lists a stream's consumers page by page (``store/nats/listing.py``): past the server's
page (256 infos per ``CONSUMER.LIST``, 1,024 names per ``CONSUMER.NAMES`` on nats-server 2.9), and
correctly when a consumer is deleted between two pages (a scan's throwaway consumer ending, a reset
elsewhere deleting an old incarnation), which shifts the later pages down by one.
Real JetStream (127.0.0.1:4222 or OUTBOXHUB_TEST_NATS_URL), one throwaway stream per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js.api import AckPolicy, ConsumerConfig

from nats_server import claim, stream_fixture
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import Store, open_store
from outboxhub.store.nats.listing import one_pass
from outboxhub.store.nats.url import parse_url

pytestmark = pytest.mark.nats
url = stream_fixture()
LATEST = StartPosition(kind="latest")


async def _fillers(url: str, count: int) -> Callable[[str, str | None], Awaitable[None]]:
    """``count`` consumers named ``A0000``… that are no group (they sort before every group's consumer,
    whose name starts with ``g``); returns a function deleting one of them by name and creating another
    consumer (no group either) when given its name."""
    nc = await nats.connect(url.split("?")[0])
    js, options = nc.jetstream(), parse_url(url)
    stream = options.stream
    config = {
        "ack_policy": AckPolicy.EXPLICIT,
        "mem_storage": True,
        "filter_subject": f"{options.prefix}.no.>",
    }
    for start in range(0, count, 128):
        await asyncio.gather(
            *(
                js.add_consumer(stream, ConsumerConfig(durable_name=f"A{i:04}", **config))  # type: ignore[arg-type]
                for i in range(start, min(count, start + 128))
            )
        )

    async def change(delete: str, create: str | None = None) -> None:
        try:
            await js.delete_consumer(stream, delete)
            if create is not None:
                await js.add_consumer(stream, ConsumerConfig(durable_name=create, **config))  # type: ignore[arg-type]
        finally:
            await nc.close()

    return change


def _after_first_page(store: Store, kind: str, action: Callable[[], Awaitable[None]]) -> None:
    """Run ``action`` once, right after the store's first ``CONSUMER.<kind>`` request was answered (the
    store's own connection to the real server; nothing is simulated)."""
    nc = store._conn.nc  # type: ignore[attr-defined]
    request = nc.request
    done = False

    async def wrapped(subject: str, *args: Any, **kw: Any) -> Any:
        nonlocal done
        answer = await request(subject, *args, **kw)
        if not done and subject.startswith(f"$JS.API.CONSUMER.{kind}."):
            done = True
            await action()
        return answer

    nc.request = wrapped


@pytest.mark.parametrize(
    "created",
    [None, "z-not-a-group"],
    ids=["deleted", "deleted-and-created"],
)
async def test_groups_lists_every_group_when_consumers_change_between_pages(
    url: str, created: str | None
) -> None:
    """300 groups and one other consumer, deleted after the first page of 256 infos (and, with ``created``,
    another consumer created after the groups' names, so that ``total`` stays 302): every group is listed
    (offset paging alone skipped the group that moved from the second page onto the first; a pager that
    trusted an unchanged ``total`` skipped it too)."""
    store = await open_store(url)
    try:
        names = [f"g{i:03}" for i in range(300)]
        await asyncio.gather(*(store.ensure_group("t.*", name, LATEST) for name in names))
        change = await _fillers(url, 1)
        _after_first_page(store, "LIST", lambda: change("A0000", created))
        assert [g.group for g in await store.groups()] == names
    finally:
        await store.close()


@pytest.mark.parametrize(
    "created",
    [None, "z-not-a-group"],
    ids=["deleted", "deleted-and-created"],
)
async def test_a_hub_finds_a_group_past_the_names_page_when_consumers_change_between_pages(
    url: str, created: str | None
) -> None:
    """1,024 other consumers sort before the group's, so its name is on the second page of
    ``CONSUMER.NAMES``; one of them is deleted after the first page (and, with ``created``, a consumer is
    created after the group's: the same ``total`` on both pages). Another hub still finds the group and
    claims its event (offset paging alone missed the group: ``no group 'g'``)."""
    one = await open_store(url)
    two = await open_store(url)
    try:
        change = await _fillers(url, 1024)
        await one.ensure_group("t.*", "g", LATEST)
        sent = await one.publish(NewEvent(topic="t.a", payload=1))
        _after_first_page(two, "NAMES", lambda: change("A0000", created))
        assert [d.event.seq for d in await claim(two)] == [sent.seq]
    finally:
        await one.close()
        await two.close()


_NAME = st.text("abcdef", min_size=1, max_size=3)


@given(
    start=st.sets(_NAME, max_size=40),
    limit=st.integers(1, 7),  # 1: a pass can only start again (the server pages 256 or 1,024)
    gaps=st.lists(st.lists(st.tuples(st.booleans(), _NAME), max_size=3), max_size=8),
)
@settings(max_examples=500, deadline=None)
def test_a_pass_lists_each_lasting_consumer_once_or_starts_again(
    start: set[str], limit: int, gaps: list[list[tuple[bool, str]]]
) -> None:
    """The pager against the server's paging (names sorted, ``limit`` a page, ``total``), with consumers
    created (True) or deleted between two pages (each gap's changes before the next page): a pass either
    reports a shift (None) or lists every consumer that existed throughout exactly once, and nothing that
    never existed."""
    names = set(start)
    ever = set(start)
    pending = list(gaps)

    async def fetch(offset: int) -> dict[str, object]:
        if offset and pending:
            for create, name in pending.pop(0):
                if create:
                    names.add(name)
                    ever.add(name)
                else:
                    names.discard(name)
        ordered = sorted(names)
        return {"total": len(ordered), "consumers": ordered[offset : offset + limit]}

    listed = asyncio.run(one_pass("test", fetch))
    if listed is None:
        return
    lasting = set(start) - {name for gap in gaps for create, name in gap if not create}
    assert len(listed) == len(set(listed))
    assert lasting <= set(listed) <= ever
