"""``outboxhub publish`` and ``outboxhub tail``: the command-line client over :mod:`outboxhub.client`.

Both read ``--url`` / ``OUTBOXHUB_URL`` (default ``ws://127.0.0.1:8090/``) and ``--token`` /
``OUTBOXHUB_TOKEN``. Bad input (JSON, a header, a start position, no token) prints one ``error:`` line and
exits with status 2; a failure of the hub or the link prints one ``error:`` line and exits with status 1.
:func:`register` adds the two commands to the ``outboxhub`` Typer app.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Final, TextIO

import msgspec
import typer
from rich.console import Console
from rich.text import Text

from outboxhub.cli.common import TokenOption, UrlOption, fail, need_token, run_command
from outboxhub.client import DEFAULT_URL, HubClient, Message, PublishResult
from outboxhub.model import StartPosition
from outboxhub.protocol.codec import wire_event

__all__ = ["main", "publish_command", "register", "tail_command"]

_json_decoder: Final = msgspec.json.Decoder()
_json_encoder: Final = msgspec.json.Encoder()


def _client(url: str, token: str) -> HubClient:
    try:
        return HubClient(url, token)
    except ValueError as exc:
        fail(str(exc))


def _parse_json(text: str, where: str) -> Any:
    try:
        return _json_decoder.decode(text)
    except msgspec.DecodeError as exc:
        fail(f"{where} is not valid JSON: {exc}")


def _parse_headers(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"--header {item!r} must look like name=value")
        headers[name.strip()] = value
    return headers


# -- publish ----------------------------------------------------------------------------------------------


def publish_command(
    topic: Annotated[str, typer.Argument(help="Concrete topic, e.g. process.state.")],
    data: Annotated[
        str | None,
        typer.Argument(
            help="JSON payload, or - to read NDJSON (one payload per line) from stdin.", show_default=False
        ),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Event key (latest-by-key, per-key ordering).")] = None,
    header: Annotated[list[str] | None, typer.Option(help="Header name=value (repeatable).")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Publish one event (JSON argument; none means null) or NDJSON lines from stdin (-), pipelined.

    Prints one confirmation per event, in input order: {"id": ..., "seq": ..., "duplicate": ...}.
    """
    headers = _parse_headers(header)
    auth = need_token(token)
    if data == "-":
        run_command(_publish_lines(_client(url, auth), topic, sys.stdin, key, headers))
    else:
        payload = None if data is None else _parse_json(data, "the payload")
        run_command(_publish_one(_client(url, auth), topic, payload, key, headers))


def _print_result(result: PublishResult) -> None:
    sys.stdout.write(_json_encoder.encode(result).decode() + "\n")
    sys.stdout.flush()


async def _publish_one(
    client: HubClient, topic: str, payload: Any, key: str | None, headers: dict[str, str] | None
) -> None:
    async with client:
        _print_result(await client.publish(topic, payload, key=key, headers=headers))


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, 1):
        if line.strip():
            yield number, line


async def _read_lines(stream: TextIO) -> AsyncIterator[tuple[int, str]]:
    """Lines of ``stream`` without blocking the loop (confirmations keep flowing while stdin waits)."""
    loop = asyncio.get_running_loop()
    lines = _lines(stream)
    while True:
        item = await loop.run_in_executor(None, next, lines, None)
        if item is None:
            return
        yield item


async def _publish_lines(
    client: HubClient, topic: str, stream: TextIO, key: str | None, headers: dict[str, str] | None
) -> None:
    window: deque[asyncio.Task[PublishResult]] = deque()
    bad: str | None = None
    async with client:
        try:
            async for number, line in _read_lines(stream):
                try:
                    payload = _json_decoder.decode(line)
                except msgspec.DecodeError as exc:
                    bad = f"stdin line {number} is not valid JSON: {exc}"
                    break
                window.append(asyncio.create_task(client.publish(topic, payload, key=key, headers=headers)))
                while window and window[0].done():
                    _print_result(window.popleft().result())
                if len(window) >= 1024:
                    _print_result(await window.popleft())
            while window:
                _print_result(await window.popleft())
        finally:
            for task in window:
                task.cancel()
    if bad is not None:
        fail(bad)


# -- tail -------------------------------------------------------------------------------------------------


def _parse_start(value: str | None) -> str | int | None:
    if value is None:
        return None
    start: str | int = int(value) if value.isdigit() else value
    try:
        StartPosition.parse(start)
    except ValueError as exc:
        fail(f"--from: {exc}")
    return start


def tail_command(
    pattern: Annotated[str, typer.Argument(help="Topic pattern: * is one segment, ** any number.")],
    group: Annotated[
        str | None, typer.Option(help="Consumer group: read its backlog and ACK as events are printed.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="Where a new group starts: earliest, latest (default) or a seq number."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print each event as one JSON line (NDJSON).")] = False,
    count: Annotated[
        int | None, typer.Option(min=1, help="Exit after printing this many events.", show_default=False)
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Print events matching PATTERN as they arrive, one line each (Ctrl-C to stop).

    Without --group only live events are shown; with one, the group's backlog too, each event ACKed once
    printed (so a second tail with the same group continues where this one stopped).
    """
    position = _parse_start(start)
    if group is None and position not in (None, "latest"):
        fail("--from needs --group: without a group only live events are delivered")
    auth = need_token(token)
    client = _client(url, auth)
    try:
        stream = client.messages(pattern, group, start=position)
    except ValueError as exc:  # pattern or group name
        fail(str(exc))
    run_command(_tail(client, stream, json, count))


async def _tail(client: HubClient, stream: Any, as_json: bool, count: int | None) -> None:
    out = Console(highlight=False, soft_wrap=True)
    seen = 0
    async with client, stream:
        async for msg in stream:
            if as_json:
                sys.stdout.write(_json_encoder.encode(wire_event(msg.event)).decode() + "\n")
                sys.stdout.flush()
            else:
                out.print(_event_line(msg))
            await msg.ack()
            seen += 1
            if count is not None and seen >= count:
                return


def _event_line(msg: Message[Any]) -> Text:
    event = msg.event
    when = datetime.fromtimestamp(event.ts / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    line = Text.assemble((when, "dim"), " ", (f"#{event.seq}", "cyan"), " ", (event.topic, "bold"))
    if event.key is not None:
        line.append(f" key={event.key}", "magenta")
    if msg.redelivered:
        line.append(f" attempt={msg.attempt}", "yellow")
    line.append(" ")
    line.append(_json_encoder.encode(event.payload).decode())
    if event.headers:
        line.append(" " + " ".join(f"{k}={v}" for k, v in event.headers.items()), "dim")
    return line


# -- wiring -----------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``publish`` and ``tail`` to the ``outboxhub`` app."""
    app.command("publish")(publish_command)
    app.command("tail")(tail_command)


def main() -> None:
    """Run just these two commands (``python -m outboxhub.cli.client publish|tail ...``)."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
