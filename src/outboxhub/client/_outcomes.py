"""Handler outcomes a handler raises to say what becomes of its event (besides returning: ACK, or any
other exception: NACK for a retry)."""

from __future__ import annotations

__all__ = ["Terminate"]


class Terminate(Exception):
    """Raise in a handler to dead-letter the event at once, with ``reason``, and never retry it (a
    terminal ``NACK``: it goes to ``dlq.<group>.<topic>`` whatever attempt this is)."""

    def __init__(self, reason: str = "terminated by the handler") -> None:
        super().__init__(reason)
        self.reason = reason
