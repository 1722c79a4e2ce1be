"""Counting the asyncio tasks that code starts, for the paths that must run without one (no tests here)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any

__all__ = ["tasks_started"]


@contextlib.contextmanager
def tasks_started() -> Iterator[list[str]]:
    """While inside, the running loop's task factory records the ``__qualname__`` of each task's coroutine in
    the list yielded; the loop's own factory is put back on the way out."""
    loop = asyncio.get_running_loop()
    started: list[str] = []

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        started.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)

    previous = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        yield started
    finally:
        loop.set_task_factory(previous)
