"""The typed topic shared by ``typed_producer.py`` and ``typed_consumer.py``."""

from __future__ import annotations

from typing import Literal

import msgspec

from outboxhub.client import Topic

__all__ = ["PROCESS_STATE", "ProcessState"]


class ProcessState(msgspec.Struct, frozen=True):
    """The state of one supervised process (a dataclass or a pydantic model would do as well)."""

    name: str
    state: Literal["starting", "up", "down"]
    pid: int | None = None


PROCESS_STATE = Topic("process.state", ProcessState)
