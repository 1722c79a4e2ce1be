"""``outboxhub drain``: drain application outboxes into a hub that runs elsewhere.

The sink is a remote hub through the SDK (``--url``/``--token``, publishing with that token's rights) or,
with ``--store``, a hub store written directly (for example the PostgreSQL database that hub nodes share).
Either way event id = outbox record id, so a batch re-published after a crash is deduplicated.

SIGTERM or SIGINT (Ctrl-C) stops the drainers gracefully: each finishes or releases the batch it holds, so
no record stays claimed, and the command exits with status 0. A second signal stops waiting for that
(status 1; a batch still in flight is released as its drainer is cancelled).

Progress (:mod:`outboxhub.cli.progress`): on a terminal a live line on stderr (records/s, published,
pending, dead), updated every second; otherwise an INFO log line ``drain: ...`` every 30 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from outboxhub.cli.common import (
    FAILED,
    TokenOption,
    UrlOption,
    complete_store_url,
    fail,
    need_token,
    run_command,
)
from outboxhub.cli.progress import DrainProgress
from outboxhub.model import NewEvent, PublishResult
from outboxhub.outbox import DrainerSettings, Sink, run_drainers

if TYPE_CHECKING:
    from outboxhub.client import HubClient

__all__ = ["drain_command", "register"]


def drain_command(
    outbox: Annotated[
        list[str],
        typer.Option(
            help="Outbox database URL: sqlite:///app.db, postgresql://…, mongodb://… (repeatable).",
            autocompletion=complete_store_url,
        ),
    ],
    url: UrlOption = "ws://127.0.0.1:8090/",
    token: TokenOption = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Publish straight into this hub store URL instead of --url.",
            autocompletion=complete_store_url,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Records claimed per batch.")] = 500,
    max_attempts: Annotated[int, typer.Option(min=1, help="Attempts before a record is dead.")] = 10,
    ordered_by_key: Annotated[
        bool, typer.Option(help="Never publish a key's record while an earlier one is unsent.")
    ] = False,
) -> None:
    """Drain outbox records into a hub until SIGTERM or Ctrl-C, which stop the drainers gracefully (every
    batch is finished or released: no record stays claimed)."""
    if not outbox:
        fail("--outbox is required (repeat it to drain several databases)")
    settings = DrainerSettings(
        batch_size=batch_size, max_attempts=max_attempts, ordered_by_key=ordered_by_key
    )
    hub_token = None if store else need_token(token)
    run_command(_until_signalled(_drain(outbox, url, hub_token, store, settings)))


async def _until_signalled(work: Awaitable[None]) -> None:
    """Run ``work`` until it ends or SIGTERM/SIGINT arrives. The first signal cancels it, which makes
    ``run_drainers`` stop its drainers gracefully; a second one cancels that graceful wait too."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        task.cancel()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        await task
    except asyncio.CancelledError:
        if not signals:
            raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    if signals > 1:
        fail("stopped before the graceful shutdown finished", FAILED)


async def _drain(
    urls: list[str], url: str, token: str | None, store_url: str | None, settings: DrainerSettings
) -> None:
    progress = DrainProgress()
    try:
        if store_url is not None:
            from outboxhub.store import open_store

            store = await open_store(store_url)
            try:
                await run_drainers(urls, store, settings, on_start=progress.on_start)
            finally:
                await store.close()
            return
        from outboxhub.client import HubClient

        assert token is not None
        async with HubClient(url, token) as client:
            sink: Sink = _HubSink(client, keep_key_order=settings.ordered_by_key)
            await run_drainers(urls, sink, settings, on_start=progress.on_start)
    finally:
        await progress.stop()


class _HubSink:
    """A hub client as a drain sink; it pays for per-key order only when the drainer asks for it."""

    def __init__(self, client: HubClient, *, keep_key_order: bool) -> None:
        self._client = client
        self._keep_key_order = keep_key_order

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        return await self._client.publish_batch(events, keep_key_order=self._keep_key_order)


def register(app: typer.Typer) -> None:
    """Add ``drain`` to the ``outboxhub`` app."""
    app.command("drain")(drain_command)
