"""``outboxhub doctor``: check what a hub or a drainer needs before it runs, one ✓/✗ line per check with the
fix to apply, exit status 0 only when every check passes (1 otherwise; 2 for a bad flag or setting).

What is checked (the checks are in :mod:`outboxhub.cli.checks`):

* the store (``--store`` / ``OUTBOXHUB_STORE``): it opens, and its schema version — skipped when only
  ``--url`` is given (a drainer or client whose hub runs elsewhere);
* each outbox (``--outbox`` / ``OUTBOXHUB_OUTBOX``): its table exists and can be read;
* the JWT settings (``OUTBOXHUB_JWT_*``): a secret of at least 32 bytes or a JWKS URL that answers with a
  usable key, and aud/iss when tokens come from a JWKS;
* without ``--url``: ``serve``'s WebSocket and ops ports are free, or a hub already answers on them; with
  ``--url``: the hub answers there (and accepts ``--token``);
* ``--token``: verified as the hub would, and its rights printed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.text import Text

from outboxhub.cli.checks import (
    Check,
    check_hub,
    check_jwks,
    check_jwt,
    check_outbox,
    check_ports,
    check_store,
    check_token,
)
from outboxhub.cli.common import FAILED, USAGE, complete_store_url, fail
from outboxhub.config import Settings, load_settings
from outboxhub.errors import ConfigError

__all__ = ["doctor_command", "register", "run_checks"]


def doctor_command(
    store: Annotated[
        str | None,
        typer.Option(
            help="Hub store URL to check (default: OUTBOXHUB_STORE, else sqlite:///outboxhub.db).",
            autocompletion=complete_store_url,
            show_default=False,
        ),
    ] = None,
    outbox: Annotated[
        list[str] | None,
        typer.Option(
            help="Outbox database URL to check (repeatable; default: OUTBOXHUB_OUTBOX).",
            autocompletion=complete_store_url,
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="Check the hub running at this ws:// URL instead of serve's ports.", show_default=False
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="OUTBOXHUB_TOKEN",
            show_envvar=True,
            help="Verify this JWT and print its rights.",
            show_default=False,
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the checks as one JSON document.")] = False,
) -> None:
    """Check what a hub or a drainer needs before it runs: store, outbox tables, JWT settings, ports or
    the running hub, a token's rights.

    Reads the same settings as serve (OUTBOXHUB_* environment variables); prints one line per check,
    ✓ or ✗ with the fix to apply. Exit status 0 when every check passes, 1 otherwise.
    """
    try:
        settings = load_settings(store=store, outbox=outbox or None)
    except ConfigError as exc:
        fail(str(exc), USAGE)
    checks = asyncio.run(run_checks(settings, store_given=store is not None, url=url, token=token))
    if json:
        doc = {"ok": all(c.ok for c in checks), "checks": [dataclasses.asdict(c) for c in checks]}
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
    else:
        _print(checks)
    if not all(c.ok for c in checks):
        raise typer.Exit(FAILED)


async def run_checks(
    settings: Settings, *, store_given: bool, url: str | None, token: str | None
) -> list[Check]:
    """Every check that applies, in report order."""
    checks: list[Check] = []
    if url is None or store_given:
        checks.append(await check_store(settings.store))
    for outbox_url in settings.outbox:
        checks.append(await check_outbox(outbox_url))
    if url is None or not settings.dev_mode:
        checks.extend(check_jwt(settings))
        if settings.jwt_jwks_url:
            checks.append(await check_jwks(settings))
    if url is None:
        checks.extend(await check_ports(settings))
    else:
        checks.append(await check_hub(url, token))
    if token is not None and (url is None or not settings.dev_mode):
        checks.append(await check_token(settings, token))
    return checks


def _print(checks: list[Check]) -> None:
    out = Console(highlight=False, soft_wrap=True)
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = ("✓", "green") if check.ok else ("✗", "red")
        out.print(Text.assemble(mark, " ", (check.name.ljust(width), "bold"), "  ", check.detail))
        if check.fix:
            out.print(Text.assemble(" " * (width + 4), ("fix: ", "yellow"), check.fix))
    failed = sum(not c.ok for c in checks)
    summary = "all checks passed" if not failed else f"{failed} of {len(checks)} checks failed"
    out.print(Text(summary, "green" if not failed else "red"))


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the ``outboxhub`` app."""
    app.command("doctor")(doctor_command)
