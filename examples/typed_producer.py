"""Publish typed events: ``python examples/typed_producer.py`` (hub URL and token from the environment).

export OUTBOXHUB_TOKEN=$(outboxhub token --sub producer --scope 'publish:process.**')
"""

from __future__ import annotations

import asyncio
import os

from process_state import PROCESS_STATE, ProcessState

from outboxhub.client import DEFAULT_URL, HubClient, PublishResult


async def main() -> None:
    url = os.environ.get("OUTBOXHUB_URL", DEFAULT_URL)
    async with HubClient(url, os.environ["OUTBOXHUB_TOKEN"]) as hub:
        # Pipelined: all three are in flight at once; each returns once the hub has stored it.
        results: list[PublishResult] = await asyncio.gather(
            *(
                hub.publish(PROCESS_STATE, ProcessState(name=name, state="up", pid=pid), key=name)
                for pid, name in enumerate(["db", "api", "worker"], start=100)
            )
        )
        for result in results:
            print(f"stored {result.id} at seq {result.seq}")
        # hub.publish(PROCESS_STATE, {"name": "db"})  # mypy: incompatible type "dict[str, str]"


if __name__ == "__main__":
    asyncio.run(main())
