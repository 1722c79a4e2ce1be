"""Checks of the arguments of :class:`~outboxhub.client.HubClient` and its subscribe options.

Nothing here is public (``tests/test_client_exports.py`` pins the SDK's names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict
from urllib.parse import urlsplit

from outboxhub.protocol.codec import SubscribeOpts

__all__: list[str] = []


class PublishOptions(TypedDict, total=False):
    """The keyword options of ``HubClient.publish``, so its overloads (typed topic or name) share them."""

    id: str | None
    key: str | None
    headers: Mapping[str, str] | None
    tags: Sequence[str] | None
    caused_by: Sequence[str] | None


class SubscribeOptions(TypedDict, total=False):
    """The SUBSCRIBE options shared by ``HubClient.subscribe`` and ``HubClient.messages``."""

    start: str | int | None
    max_in_flight: int | None
    ack_timeout_ms: int | None
    max_deliver: int | None
    ordered_by_key: bool | None


class HandlerOptions(SubscribeOptions, total=False):
    """The keyword options of ``HubClient.subscribe``, shared by its overloads."""

    concurrency: int
    nack_delay_ms: int | None


class StreamOptions(SubscribeOptions, total=False):
    """The keyword options of ``HubClient.messages``, shared by its overloads."""

    max_pending: int


def check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"hub URL {url!r} cannot be parsed: {exc}") from None
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ValueError(f"hub URL {url!r} must look like ws://host:port/ (or wss://, http://, https://)")
    return url


def positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def subscribe_opts(
    start: str | int | None,
    max_in_flight: int | None,
    ack_timeout_ms: int | None,
    max_deliver: int | None,
    ordered_by_key: bool | None,
) -> SubscribeOpts | None:
    positive("max_in_flight", max_in_flight)
    positive("ack_timeout_ms", ack_timeout_ms)
    positive("max_deliver", max_deliver)
    if (start, max_in_flight, ack_timeout_ms, max_deliver, ordered_by_key) == (None,) * 5:
        return None
    try:
        return SubscribeOpts(
            start=start,
            max_in_flight=max_in_flight,
            ack_timeout_ms=ack_timeout_ms,
            max_deliver=max_deliver,
            ordered_by_key=ordered_by_key,
        )
    except ValueError as exc:  # "start: ..." from the frame's own check
        raise ValueError(str(exc)) from None


def str_list(name: str, values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of str, not a str")
    return list(values)
