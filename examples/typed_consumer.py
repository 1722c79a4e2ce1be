"""Consume typed events in a consumer group: ``python examples/typed_consumer.py`` (Ctrl-C to stop).

export OUTBOXHUB_TOKEN=$(outboxhub token --sub ops --scope 'subscribe:process.**')
"""

from __future__ import annotations

import asyncio
import os

from process_state import PROCESS_STATE, ProcessState

from outboxhub.client import DEFAULT_URL, HubClient, SubscribeContext


async def on_state(state: ProcessState, ctx: SubscribeContext) -> None:
    """Returning ACKs the event; raising NACKs it (redelivered, dead-lettered after max_deliver)."""
    if state.state == "down" and ctx.attempt < 3:
        raise RuntimeError(f"{state.name} is down; try again later")
    print(f"#{ctx.seq} {state.name}: {state.state} (pid {state.pid}, attempt {ctx.attempt})")


async def iterate(hub: HubClient) -> None:
    """The same, as an async iterator with explicit acks."""
    async with hub.messages(PROCESS_STATE, "ops-audit", start="earliest") as stream:
        async for msg in stream:
            state: ProcessState = msg.payload
            print(f"audit: {state.name} is {state.state}")
            await msg.ack()


async def main() -> None:
    url = os.environ.get("OUTBOXHUB_URL", DEFAULT_URL)
    async with HubClient(url, os.environ["OUTBOXHUB_TOKEN"]) as hub:
        await hub.subscribe(PROCESS_STATE, "ops", on_state, start="earliest", max_deliver=5)
        await iterate(hub)


if __name__ == "__main__":
    asyncio.run(main())
