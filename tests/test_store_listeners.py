"""``CommitListeners`` (store/listeners.py), the one commit-listener registry of every store backend."""

from __future__ import annotations

import logging

import pytest

from outboxhub.store.listeners import CommitListeners


def test_listeners_are_called_in_order_and_a_failing_one_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[tuple[str, int]] = []
    registry = CommitListeners(logging.getLogger("test.listeners"), newer_only=False)

    def boom(seq: int) -> None:
        raise RuntimeError("listener bug")

    def first(seq: int) -> None:
        heard.append(("first", seq))

    def second(seq: int) -> None:
        heard.append(("second", seq))

    for listener in (first, boom, second):
        registry.add(listener)
    with caplog.at_level(logging.ERROR, logger="test.listeners"):
        registry.notify(3)
    assert heard == [("first", 3), ("second", 3)]
    assert "commit listener" in caplog.text
    registry.remove(boom)
    registry.remove(boom)  # unknown: ignored
    registry.notify(3)  # not newer_only: the same seq is passed on again
    assert heard[2:] == [("first", 3), ("second", 3)] and len(registry) == 2


def test_newer_only_drops_seqs_not_above_the_last() -> None:
    heard: list[int] = []
    registry = CommitListeners(logging.getLogger("test.listeners"), newer_only=True)
    registry.last = 10
    registry.add(heard.append)
    for seq in (9, 10, 12, 11, 12, 13):
        registry.notify(seq)
    assert heard == [12, 13] and registry.last == 13


def test_a_listener_may_remove_itself_while_being_called() -> None:
    heard: list[int] = []
    registry = CommitListeners(logging.getLogger("test.listeners"), newer_only=False)

    def once(seq: int) -> None:
        heard.append(seq)
        registry.remove(once)

    registry.add(once)
    registry.notify(1)
    registry.notify(2)
    assert heard == [1]
