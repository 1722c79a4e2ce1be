"""Waiting, in tests, until plain state (a counter, a list) reaches a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

WAIT_S = 30.0
"""How long "soon" may take: an upper bound that only a hung test reaches, never a measured threshold."""


async def until(
    predicate: Callable[[], bool], what: str, *, timeout_s: float = WAIT_S, interval_s: float = 0.005
) -> None:
    """Poll ``predicate`` every ``interval_s`` until it holds; fail the test naming ``what`` after
    ``timeout_s``."""

    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - plain state, nothing to await on
            await asyncio.sleep(interval_s)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")
