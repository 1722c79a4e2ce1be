"""What the client-side commands (``publish``, ``tail``, ``drain``) share: the ``--url``/``--token`` options
and one way to fail.

Bad input prints one ``error:`` line and exits with status 2 (``USAGE``); a failure of the hub or the link
prints one ``error:`` line and exits with status 1 (``FAILED``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, Final, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from outboxhub.errors import OutboxhubError

__all__ = [
    "FAILED",
    "STORE_URL_SCHEMES",
    "USAGE",
    "TokenOption",
    "UrlOption",
    "complete_store_url",
    "fail",
    "need_token",
    "run_command",
    "stderr",
]

USAGE: Final = 2
FAILED: Final = 1

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

UrlOption = Annotated[
    str, typer.Option("--url", envvar="OUTBOXHUB_URL", help="Hub WebSocket URL.", show_envvar=True)
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="OUTBOXHUB_TOKEN", help="JWT to connect with.", show_envvar=True),
]

STORE_URL_SCHEMES: Final = ("sqlite:///", "postgresql://", "mongodb://", "mongodb+srv://")
"""What a store or outbox URL starts with (``outboxhub.store.open_store``, ``open_outbox``)."""


def complete_store_url(incomplete: str) -> list[str]:
    """Shell completion for ``--store`` and ``--outbox``: the URL schemes that ``incomplete`` can still
    become (all of them for an empty word)."""
    return [scheme for scheme in STORE_URL_SCHEMES if scheme.startswith(incomplete)]


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    stderr.print(Text.assemble(("error:", "red"), " ", message))
    raise typer.Exit(code)


def need_token(token: str | None) -> str:
    """The token, or fail saying how to get one."""
    if not token:
        fail(
            "no token: pass --token or set OUTBOXHUB_TOKEN (`outboxhub token --sub me --scope ...` mints one)"
        )
    return token


def run_command(coro: Coroutine[Any, Any, None]) -> None:
    """Run the command's coroutine; hub failures become one error line and status 1."""
    try:
        asyncio.run(coro)
    except (OutboxhubError, ValueError, TypeError) as exc:  # HubError: "<code>: <message>"
        fail(str(exc), FAILED)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
