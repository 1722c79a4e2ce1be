"""The incarnations of a group's durable consumer: each ``reset_group`` creates a new consumer under a new
name, so an ACK sent to the old one (its ack subject ``$JS.ACK.<stream>.<consumer>.…`` names it) can never
settle a delivery of the new one.

Names: generation 0 is ``consumer_name(pattern, group)`` (the only name before incarnations, so a stream
made by earlier versions keeps its groups), generation ``n >= 1`` is that name with ``-<n>``. The hub picks
the generation (one more than the newest it finds); clients never name consumers.

The current incarnation is the newest generation that exists on the stream, found by listing the stream's
consumer names. A hub that creates one (``ensure_group``, ``reset_group``) lists again afterwards
(``settle``): when a newer generation exists it deletes its own and adopts the newer one; otherwise it
deletes the older ones. Two resets at once compute the same next generation: the first create wins, the
second fails (another start) or finds the same config, and adopts the winner's consumer.
"""

from __future__ import annotations

import contextlib
import json

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, ReplayPolicy

from outboxhub.errors import StoreError, StoreUnavailable
from outboxhub.model import StartPosition
from outboxhub.store.nats.conn import NatsConn
from outboxhub.store.nats.listing import consumer_listing
from outboxhub.store.nats.subjects import consumer_name, pattern_filter

__all__ = ["Incarnations", "ack_floor", "generation_of", "incarnation_name"]

_SEP = "-"
_LOOKUPS = 5
_MAX_KNOWN = 10_000
_DEFAULT_ACK_WAIT_MS = 30_000


def incarnation_name(pattern: str, group: str, generation: int) -> str:
    """The consumer name of generation ``generation`` of the group ``(pattern, group)``."""
    base = consumer_name(pattern, group)
    return base if generation == 0 else f"{base}{_SEP}{generation}"


def generation_of(base: str, name: str) -> int | None:
    """The generation of consumer ``name`` if it is an incarnation of the group named ``base``, else None."""
    if name == base:
        return 0
    head, sep, tail = name.rpartition(_SEP)
    if sep and head == base and tail.isdigit() and not tail.startswith("0"):
        return int(tail)
    return None


def _deliver_policy(start: StartPosition) -> dict[str, object]:
    if start.kind == "earliest":
        return {"deliver_policy": DeliverPolicy.ALL}
    if start.kind == "seq":
        return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start.value + 1}
    return {"deliver_policy": DeliverPolicy.NEW}


class Incarnations:
    """Finding, creating and settling the incarnations of the groups of one stream (module docstring)."""

    def __init__(self, conn: NatsConn) -> None:
        self._conn = conn
        self._known: dict[str, str] = {}
        """By the name of a group's generation 0: its current incarnation's, as this hub last saw it
        (bounded, oldest dropped); forgotten on a reset announced and when that consumer is gone."""

    async def current(self, pattern: str, group: str) -> ConsumerInfo | None:
        """The group's current incarnation: the one this hub knows of while it exists (one info request),
        else the newest on the stream (a listing of the stream's consumers)."""
        base = consumer_name(pattern, group)
        known = self._known.get(base)
        if known is not None:
            info = await self.info(known)
            if info is not None:
                return info
            self._known.pop(base, None)  # deleted: reset by another hub, its announcement lost
        found = await self.newest(pattern, group)
        if found is None:
            return None
        self.remember(pattern, group, found[1].name)
        return found[1]

    def remember(self, pattern: str, group: str, name: str) -> None:
        base = consumer_name(pattern, group)
        self._known.pop(base, None)
        self._known[base] = name
        if len(self._known) > _MAX_KNOWN:
            del self._known[next(iter(self._known))]

    def forget(self, base: str) -> None:
        """Forget the incarnation known for the group whose generation 0 is named ``base``."""
        self._known.pop(base, None)

    async def names(self) -> list[str]:
        """Every consumer name on the stream (``listing.consumer_listing``)."""
        return [str(name) for name in await consumer_listing(self._conn, "NAMES")]

    async def generations(self, pattern: str, group: str) -> list[tuple[int, str]]:
        """The group's incarnations on the stream, oldest first."""
        base = consumer_name(pattern, group)
        found = [(gen, name) for name in await self.names() if (gen := generation_of(base, name)) is not None]
        return sorted(found)

    async def info(self, name: str) -> ConsumerInfo | None:
        """The consumer's info, None when it does not exist. Retried like every JetStream request
        (``NatsConn.call``): a request sent while the consumer elects a leader is never answered."""
        conn = self._conn

        async def get() -> ConsumerInfo | None:
            try:
                info: ConsumerInfo = await conn.js.consumer_info(conn.stream, name)
                return info
            except nats.js.errors.NotFoundError:
                return None

        return await conn.call("group info", get)

    async def newest(self, pattern: str, group: str) -> tuple[int, ConsumerInfo] | None:
        """The current incarnation and its generation; None when the group has none."""
        for _ in range(_LOOKUPS):
            gens = await self.generations(pattern, group)
            if not gens:
                return None
            gen, name = gens[-1]
            info = await self.info(name)
            if info is not None:
                return gen, info
            # deleted between the listing and the info: a reset elsewhere settled; list again
        raise StoreUnavailable(
            f"NATS store {self._conn.shown}: group {group!r} on {pattern!r}: its consumer changed under"
            f" {_LOOKUPS} lookups in a row (resets in a loop?)"
        )

    async def create(self, pattern: str, group: str, generation: int, start: StartPosition) -> ConsumerInfo:
        """Create generation ``generation`` at ``start``; when that fails on an API error (it exists with
        another config: another hub made this generation first) the existing one."""
        conn = self._conn
        config = self.config(pattern, group, generation, start)
        try:
            return await conn.call("create group", lambda: conn.js.add_consumer(conn.stream, config))
        except StoreUnavailable:
            raise
        except StoreError as exc:
            info = await self.info(str(config.durable_name))
            if info is None:
                raise StoreError(
                    f"NATS store {conn.shown}: cannot create group {group!r}: {exc.__cause__}"
                ) from exc
            return info

    def config(self, pattern: str, group: str, generation: int, start: StartPosition) -> ConsumerConfig:
        """The consumer of generation ``generation`` starting at ``start`` (a seq, not a ts)."""
        conn = self._conn
        return ConsumerConfig(
            durable_name=incarnation_name(pattern, group, generation),
            description=json.dumps({"pattern": pattern, "group": group, "generation": generation}),
            filter_subject=pattern_filter(conn.prefix, pattern).subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=_DEFAULT_ACK_WAIT_MS / 1000,
            max_deliver=-1,
            max_ack_pending=conn.options.max_ack_pending,
            replay_policy=ReplayPolicy.INSTANT,
            **_deliver_policy(start),  # type: ignore[arg-type]
        )

    async def delete(self, name: str) -> None:
        conn = self._conn

        async def drop() -> None:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # deleted by another hub meanwhile
                await conn.js.delete_consumer(conn.stream, name)

        await conn.call("delete group", drop)

    async def settle(
        self, pattern: str, group: str, generation: int, info: ConsumerInfo
    ) -> tuple[int, ConsumerInfo]:
        """After creating (or finding) generation ``generation``: the newest generation wins (see the
        module docstring). Returns the current incarnation."""
        gens = await self.generations(pattern, group)
        if any(gen > generation for gen, _ in gens):
            await self.delete(info.name)  # the loser deletes its own
            found = await self.newest(pattern, group)
            if found is None:
                raise StoreError(f"NATS store {self._conn.shown}: group {group!r} vanished while created")
            return found
        for gen, name in gens:
            if gen < generation:
                await self.delete(name)
        return generation, info


def ack_floor(info: ConsumerInfo) -> int:
    """The group's ack floor from its consumer: JetStream's ack floor, or the delivered seq when nothing is
    awaiting an ack (a new consumer reports 0 while it starts past the log's end), never below the start."""
    delivered = int(info.delivered.stream_seq if info.delivered else 0)
    if not info.num_ack_pending:
        return delivered
    floor = int(info.ack_floor.stream_seq if info.ack_floor else 0)
    return max(floor, int(info.config.opt_start_seq or 1) - 1)
