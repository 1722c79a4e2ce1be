"""The ``outboxhub`` command line: serve, token (and publish, tail, drain, bench as they land).

Every command reads the same settings as the server (environment ``OUTBOXHUB_*`` and the seed's names);
flags override them. A bad setting prints one line naming it and exits with status 2.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from .config import Settings, load_settings
from .errors import ConfigError

__all__ = ["app", "main"]

app = typer.Typer(
    name="outboxhub",
    help="Durable event hub with a transactional outbox.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def serve(
    store: Annotated[
        str | None, typer.Option(help="Store URL: sqlite:///path, postgresql://…, mongodb://…")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    ws_port: Annotated[int | None, typer.Option(help="WebSocket port (default 8090).")] = None,
    ops_port: Annotated[int | None, typer.Option(help="Ops API and dashboard port (default 8082).")] = None,
    outbox: Annotated[
        list[str] | None, typer.Option(help="Outbox database URL to drain into this hub (repeatable).")
    ] = None,
) -> None:
    """Start the hub: WebSocket gateway, ops API and dashboard, and outbox drainers.

    With no JWT secret or JWKS URL configured, a random secret is generated for this run and a dev token
    is printed (development mode).
    """
    settings = _settings(store=store, host=host, ws_port=ws_port, ops_port=ops_port, outbox=outbox or None)
    from .server import serve as run_server

    run_server(settings)


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="Subject (who the token is for).")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Scope such as publish:orders.**, subscribe:*.state, ops:read (repeatable)."),
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 3600, 45s, 30m, 1h, 2d.")] = "1h",
    aud: Annotated[str | None, typer.Option(help="Audience claim (default: the configured JWT_AUD).")] = None,
    iss: Annotated[str | None, typer.Option(help="Issuer claim (default: the configured JWT_ISS).")] = None,
) -> None:
    """Mint an HS256 token signed with the configured secret (OUTBOXHUB_JWT_SECRET / JWT_SECRET)."""
    from .acl import scopes_to_policy
    from .auth import mint_token, parse_ttl
    from .errors import PolicyError

    settings = _settings()
    if not settings.jwt_secret:
        err_console.print("[red]error:[/red] no secret configured: set OUTBOXHUB_JWT_SECRET (or JWT_SECRET)")
        raise typer.Exit(2)
    scopes = list(scope or [])
    try:
        scopes_to_policy(scopes)
        minted = mint_token(
            settings.jwt_secret,
            sub=sub,
            scopes=scopes,
            ttl_s=parse_ttl(ttl),
            audience=aud or settings.jwt_aud,
            issuer=iss or settings.jwt_iss,
        )
    except (ValueError, PolicyError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(minted)


def _register_subcommands() -> None:
    from .bench.cli import register as register_bench_commands
    from .cli_client import register as register_client_commands
    from .cli_drain import register as register_drain_command

    register_client_commands(app)
    register_drain_command(app)
    register_bench_commands(app)


_register_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
