"""What this process knows about one ``(pattern, group)`` with local members: who they are, which of them
holds which delivery (by seq), the group's next deadline as far as it is known without a store read, and
the ack batcher. The members are group members (``member.py``); this module knows them only
through ``LocalMember``, what the group's bookkeeping calls on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from outboxhub.bus.acks import AckBatcher
from outboxhub.model import GroupOptions
from outboxhub.store.base import EventRef, Store

__all__ = ["GroupState", "LocalMember"]


class LocalMember(Protocol):
    """What ``GroupState`` asks of a member."""

    @property
    def options(self) -> GroupOptions: ...

    def wake(self) -> None: ...

    def released(self) -> None: ...

    def wake_for_commit(self, seq: int) -> None: ...

    def forget(self, seq: int) -> None: ...


M = TypeVar("M", bound=LocalMember)


class GroupState(Generic[M]):
    """What this process knows about one ``(pattern, group)``: its local members and who holds what."""

    __slots__ = (
        "_deadline",
        "_deadline_epoch",
        "_deadline_until",
        "acks",
        "group",
        "holders",
        "members",
        "options",
        "pattern",
    )

    def __init__(self, store: Store, pattern: str, group: str, options: GroupOptions) -> None:
        self.pattern = pattern
        self.group = group
        self.options = options
        self.members: dict[str, M] = {}
        self.holders: dict[int, M] = {}  # seq -> the local member holding that delivery
        self.acks = AckBatcher(store, pattern, group, is_local=self.holders.__contains__, on_acked=self.acked)
        self._deadline: int | None = None  # a lower bound of the group's next deadline (None: none pending)
        self._deadline_until = 0  # ms: trust _deadline until then (0: unknown)
        # Bumped by every local change to the deadlines: a store read that started before one is not learned.
        self._deadline_epoch = 0

    def known_deadline(self, now: int) -> tuple[bool, int | None]:
        """(True, the group's next deadline or None) when it is known without a store read."""
        deadline = self._deadline
        if now < self._deadline_until and (deadline is None or deadline > now):
            return True, deadline
        return False, None

    @property
    def deadline_epoch(self) -> int:
        """Changes whenever a NACK, release or local claim changes the group's deadlines."""
        return self._deadline_epoch

    def learn_deadline(self, deadline: int | None, valid_until: int, epoch: int) -> None:
        """The store's answer to ``next_deadline`` (read from ``epoch`` on), trusted until ``valid_until``
        (ms). Ignored when the deadlines changed meanwhile: the answer may predate a NACK, and a stale bound
        would leave the redelivery waiting for the safety poll."""
        if epoch != self._deadline_epoch:
            return
        self._deadline = deadline
        self._deadline_until = valid_until

    def claimed(self, earliest: int) -> None:
        """A local member claimed deliveries due at ``earliest`` at the soonest."""
        self._deadline_epoch += 1
        if self._deadline is None or earliest < self._deadline:
            self._deadline = earliest

    def forget_deadline(self) -> None:
        self._deadline_epoch += 1
        self._deadline_until = 0

    def acked(self, refs: Sequence[EventRef]) -> None:
        """Deliveries were acked: free their holders' capacity and wake those that were saturated. With key
        ordering an ack may also free a key that any member could now claim, so the whole group is woken.
        (An ack only removes deadlines, so the known next deadline stays a valid lower bound.)"""
        holders = {
            holder for ref in refs if ref.seq is not None and (holder := self._release(ref.seq)) is not None
        }
        if any(member.options.ordered_by_key for member in self.members.values()):
            self.wake_all()
        else:
            for holder in holders:
                holder.released()

    def nacked(self, seq: int | None) -> None:
        """A delivery was nacked: its redelivery time is earlier than some members' next wake-up."""
        if seq is not None:
            self._release(seq)
        self.forget_deadline()
        self.wake_all()

    def committed(self, seq: int) -> None:
        """Events up to ``seq`` were committed: wake the members that have not already claimed past it."""
        for member in self.members.values():
            member.wake_for_commit(seq)

    def _release(self, seq: int) -> M | None:
        holder = self.holders.pop(seq, None)
        if holder is not None:
            holder.forget(seq)
        return holder

    def wake_all(self) -> None:
        for member in self.members.values():
            member.wake()

    @property
    def idle(self) -> bool:
        return not self.members and not self.acks.busy
