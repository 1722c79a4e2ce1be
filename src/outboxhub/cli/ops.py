"""Operator commands over the ops API: ``groups``, ``group reset``, ``dlq list|redrive|purge``,
``connections``.

They speak HTTP to a running hub's ops port (``--ops-url`` / ``OUTBOXHUB_OPS_URL``, default
``http://127.0.0.1:8082/``) with a bearer token (``--token`` / ``OUTBOXHUB_TOKEN``) holding ``ops:read``
(and ``ops:write`` for the actions), so they see and do exactly what the dashboard does, under the same
rights. Each prints a rich table, or the API's JSON with ``--json``. The API's answer to a bad input
(``400 {"error": "<field>: <problem>"}``) or a refusal (401/403/404) is printed as one ``error:`` line with
exit status 1; an unreachable hub likewise.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import urlencode

import aiohttp
import msgspec
import typer
from rich.console import Console
from rich.table import Table

from outboxhub.cli.common import FAILED, TokenOption, fail, need_token, run_command

__all__ = ["DEFAULT_OPS_URL", "register"]

DEFAULT_OPS_URL: Final = "http://127.0.0.1:8082/"
_TIMEOUT: Final = aiohttp.ClientTimeout(total=30)

OpsUrlOption = Annotated[
    str,
    typer.Option("--ops-url", envvar="OUTBOXHUB_OPS_URL", help="The hub's ops API URL.", show_envvar=True),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]

stdout = Console(highlight=False, soft_wrap=True)


async def _call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    base = url if url.endswith("/") else url + "/"
    if not base.startswith(("http://", "https://")):
        fail(f"--ops-url must be an http:// or https:// URL, got {url!r}")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT) as session,
            session.request(method, base + path.lstrip("/"), json=body, headers=headers) as response,
        ):
            raw = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        fail(f"cannot reach the ops API at {base}: {exc or type(exc).__name__}", FAILED)
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        fail(f"{method} {path}: HTTP {status}, not JSON: {raw[:200]!r}", FAILED)
    if status != 200:
        message = data.get("error") if isinstance(data, dict) else None
        fail(f"{method} {path}: HTTP {status}: {message or data}", FAILED)
    return data


def _run(url: str, token: str | None, method: str, path: str, body: Any, show: Any, as_json: bool) -> None:
    jwt = need_token(token)

    async def go() -> None:
        data = await _call(url, jwt, method, path, body)
        if as_json:
            sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
        else:
            show(data)

    run_command(go())


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


# -- groups -------------------------------------------------------------------------------------------------


def _show_groups(data: Any) -> None:
    table = Table("pattern", "group", "members", "in flight", "lag", "lag ms", "dead letters")
    for g in data["groups"]:
        table.add_row(
            g["pattern"],
            g["group"],
            str(g["members"]),
            str(g["inFlight"]),
            _cell(g["lagCount"]),
            _cell(g["lagMs"]),
            str(g["deadLetters"]),
        )
    stdout.print(table)


def groups_command(
    ops_url: OpsUrlOption = DEFAULT_OPS_URL, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """List consumer groups: members, in flight, lag and dead letters (GET /groups)."""
    _run(ops_url, token, "GET", "groups", None, _show_groups, as_json)


group_app = typer.Typer(no_args_is_help=True, help="Act on one consumer group.")


@group_app.command("reset")
def group_reset_command(
    pattern: Annotated[str, typer.Argument(help="The group's topic pattern, as subscribed.")],
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    to: Annotated[
        str, typer.Option("--to", help='Where to: earliest, latest, a seq, "seq:N" or "ts:MS".')
    ] = "latest",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ops_url: OpsUrlOption = DEFAULT_OPS_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a group's cursor (POST /groups/reset); its in-flight deliveries are released and its members
    read again from there. Needs ops:write."""
    target: Any = int(to) if to.isdigit() else to
    if not yes:
        typer.confirm(f"Reset group {group!r} on {pattern!r} to {to}?", abort=True)

    def show(data: Any) -> None:
        stdout.print(
            f"group {data['group']!r} on {data['pattern']!r} reset to {data['to']}: "
            f"frontier {data['frontier']}, ack floor {data['ackFloor']}"
        )

    body = {"pattern": pattern, "group": group, "to": target}
    _run(ops_url, token, "POST", "groups/reset", body, show, as_json)


# -- dead letters -------------------------------------------------------------------------------------------

dlq_app = typer.Typer(no_args_is_help=True, help="List, redrive and purge a group's dead letters.")


def _show_letters(data: Any) -> None:
    table = Table("seq", "id", "topic", "attempts", "last error", "payload", "redriven")
    for x in data["deadLetters"]:
        table.add_row(
            str(x["seq"]),
            x["id"],
            _cell(x["topic"]),
            _cell(x["attempts"]),
            _cell(x["lastError"]),
            x["preview"],
            "yes" if x["redriven"] else "",
        )
    stdout.print(table)
    notes = [f"purged through seq {data['purgedThrough']}"] if data["purgedThrough"] else []
    if data["hidden"]:
        notes.append(f"{data['hidden']} not readable with this token")
    if data["nextAfterSeq"] is not None:
        notes.append(f"more: --after-seq {data['nextAfterSeq']}")
    if notes:
        stdout.print("; ".join(notes))


@dlq_app.command("list")
def dlq_list_command(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    pattern: Annotated[str | None, typer.Option(help="Only dead letters of these original topics.")] = None,
    after_seq: Annotated[int, typer.Option(help="List dead letters after this seq.")] = 0,
    limit: Annotated[int, typer.Option(help="Most to list (at most 1000).")] = 100,
    ops_url: OpsUrlOption = DEFAULT_OPS_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a group's dead letters: original topic, attempts, last error, payload preview (GET /dlq)."""
    params = {"group": group, "after_seq": str(after_seq), "limit": str(limit)}
    if pattern:
        params["pattern"] = pattern
    path = "dlq?" + urlencode(params)
    _run(ops_url, token, "GET", path, None, _show_letters, as_json)


@dlq_app.command("redrive")
def dlq_redrive_command(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (none: use --all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Redrive all of the group's dead letters.")] = False,
    pattern: Annotated[str | None, typer.Option(help="With --all: only these original topics.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ops_url: OpsUrlOption = DEFAULT_OPS_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Republish dead letters to their original topic (POST /dlq/redrive). Idempotent: a dead letter is
    redriven once however often this runs. Needs ops:write."""
    if bool(ids) == all_:
        fail("give dead letter ids or --all (not both)")
    body: dict[str, Any] = {"group": group, "ids": "all" if all_ else list(ids or [])}
    if pattern:
        if not all_:
            fail("--pattern goes with --all")
        body["pattern"] = pattern
    if not yes:
        what = "all dead letters" if all_ else f"{len(ids or [])} dead letter(s)"
        typer.confirm(f"Redrive {what} of group {group!r}?", abort=True)

    def show(data: Any) -> None:
        stdout.print(f"redrove {data['published']} dead letter(s); {data['duplicates']} already redriven")

    _run(ops_url, token, "POST", "dlq/redrive", body, show, as_json)


@dlq_app.command("purge")
def dlq_purge_command(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    through_seq: Annotated[int | None, typer.Option(help="Purge up to this seq (default: all).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ops_url: OpsUrlOption = DEFAULT_OPS_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop listing a group's dead letters up to a seq (POST /dlq/purge). The log keeps them (replay still
    reads them). Needs ops:write."""
    body: dict[str, Any] = {"group": group}
    if through_seq is not None:
        body["through_seq"] = through_seq
    if not yes:
        typer.confirm(f"Purge the dead letters of group {group!r}?", abort=True)

    def show(data: Any) -> None:
        stdout.print(f"purged {data['purged']} dead letter(s) through seq {data['purgedThrough']}")

    _run(ops_url, token, "POST", "dlq/purge", body, show, as_json)


# -- connections --------------------------------------------------------------------------------------------


def _show_connections(data: Any) -> None:
    table = Table("id", "sub", "remote", "since", "subscriptions", "queue", "pub/s", "deliver/s")
    for c in data["connections"]:
        subs = [s["pattern"] + (f" ({s['group']})" if s["group"] else "") for s in c["subscriptions"]]
        if c["hiddenSubscriptions"]:
            subs.append(f"+{c['hiddenSubscriptions']} hidden")
        table.add_row(
            c["id"],
            _cell(c["sub"]),
            _cell(c["remote"]),
            _when(c["connectedAt"]),
            ", ".join(subs),
            str(c["queueDepth"]),
            _cell(c["publishRate"]),
            _cell(c["deliverRate"]),
        )
    stdout.print(table)


def connections_command(
    ops_url: OpsUrlOption = DEFAULT_OPS_URL, token: TokenOption = None, as_json: JsonOption = False
) -> None:
    """List live WebSocket connections: subject, address, subscriptions, queue depth, rates."""
    _run(ops_url, token, "GET", "connections", None, _show_connections, as_json)


def register(app: typer.Typer) -> None:
    """Add ``groups``, ``group``, ``dlq`` and ``connections`` to the ``outboxhub`` app."""
    app.command("groups")(groups_command)
    app.add_typer(group_app, name="group")
    app.add_typer(dlq_app, name="dlq")
    app.command("connections")(connections_command)
