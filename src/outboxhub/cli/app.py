"""The ``outboxhub`` command line: serve, token, publish, tail, drain, bench.

Every command reads the same settings as the server (environment ``OUTBOXHUB_*`` and the legacy
names of the original TypeScript hub, listed in ``config.py``);
flags override them. A bad setting prints one line naming it (its flag, or its environment variable) and
exits with status 2; so does a usage error (a flag value that does not parse, an unknown option), which
:func:`main` reports as one ``error:`` line instead of typer's usage box.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from outboxhub.cli.common import complete_store_url
from outboxhub.cli.help import CONTEXT_SETTINGS, polish
from outboxhub.config import Settings, load_settings
from outboxhub.errors import ConfigError

__all__ = ["PROG_NAME", "app", "build_command", "main"]

PROG_NAME = "outboxhub"

app = typer.Typer(
    name="outboxhub",
    help="Durable event hub with a transactional outbox.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: nothing cut at 80 columns (see cli/help.py)
    context_settings=dict(CONTEXT_SETTINGS),
)
err_console = Console(stderr=True, soft_wrap=True)


def _error(message: str) -> None:
    """Print ``error: message`` on stderr (the message is not read as rich markup)."""
    err_console.print(Text.assemble(("error:", "red"), " ", message), highlight=False)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        _error(str(exc))
        raise typer.Exit(2) from None


@app.command()
def serve(
    store: Annotated[
        str | None,
        typer.Option(
            help="Store URL: sqlite:///path, postgresql://…, mongodb://…, nats://…",
            autocompletion=complete_store_url,
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    ws_port: Annotated[int | None, typer.Option(help="WebSocket port.")] = None,
    ops_port: Annotated[int | None, typer.Option(help="Ops API and dashboard port.")] = None,
    outbox: Annotated[
        list[str] | None,
        typer.Option(
            help="Outbox database URL to drain into this hub (repeatable).", autocompletion=complete_store_url
        ),
    ] = None,
    outbox_drain: Annotated[
        bool | None, typer.Option("--outbox-drain/--no-outbox-drain", help="Drain the --outbox URLs.")
    ] = None,
    outbox_batch_size: Annotated[
        int | None, typer.Option(help="Outbox records claimed per batch (at most 10000).")
    ] = None,
    outbox_max_attempts: Annotated[
        int | None, typer.Option(help="Attempts before an outbox record is dead.")
    ] = None,
    outbox_ordered_by_key: Annotated[
        bool | None,
        typer.Option(
            "--outbox-ordered-by-key/--no-outbox-ordered-by-key",
            help="Never publish a key's outbox record while an earlier one is unsent.",
        ),
    ] = None,
    jwt_secret: Annotated[
        str | None, typer.Option(help="HS256/384/512 secret (prefer the environment: flags show in ps).")
    ] = None,
    jwt_jwks_url: Annotated[str | None, typer.Option(help="JWKS URL for RS/PS/ES/EdDSA tokens.")] = None,
    jwt_aud: Annotated[str | None, typer.Option(help="Required audience.")] = None,
    jwt_iss: Annotated[str | None, typer.Option(help="Required issuer.")] = None,
    jwt_leeway_s: Annotated[float | None, typer.Option(help="Clock tolerance in seconds.")] = None,
    jwks_cooldown_s: Annotated[
        float | None, typer.Option(help="Minimum seconds between JWKS refetches.")
    ] = None,
    auth_timeout_s: Annotated[
        float | None,
        typer.Option(help="Seconds a connection has to AUTH before it is closed (0 = no limit)."),
    ] = None,
    max_frame_bytes: Annotated[int | None, typer.Option(help="Largest accepted frame.")] = None,
    publish_rate: Annotated[
        float | None, typer.Option(help="Publishes per second per connection (0 = unlimited).")
    ] = None,
    publish_burst: Annotated[int | None, typer.Option(help="Publish token-bucket size.")] = None,
    max_subscriptions: Annotated[int | None, typer.Option(help="Subscriptions per connection.")] = None,
    send_queue_max: Annotated[
        int | None, typer.Option(help="Frames queued per connection before delivery pauses.")
    ] = None,
    send_queue_max_bytes: Annotated[
        int | None,
        typer.Option(help="Bytes queued per connection (events and replies) before delivery pauses."),
    ] = None,
    max_auth_frame_bytes: Annotated[
        int | None,
        typer.Option(help="Largest frame before a successful AUTH; a larger one closes with 1009."),
    ] = None,
    max_subscriptions_per_principal: Annotated[
        int | None, typer.Option(help="Subscriptions per token subject, over all its connections.")
    ] = None,
    max_groups_per_principal: Annotated[
        int | None, typer.Option(help="Consumer groups per token subject, over all its connections.")
    ] = None,
    ws_server: Annotated[
        str | None,
        typer.Option(help="WebSocket server of the WS port: aiohttp or picows."),
    ] = None,
    header_timeout_s: Annotated[
        float | None,
        typer.Option(help="Seconds to send a request's headers (and keep-alive idle) on both ports."),
    ] = None,
    ops_body_timeout_s: Annotated[
        float | None,
        typer.Option(help="Seconds an ops API request has to send its whole body; then 408 and close."),
    ] = None,
    max_connections: Annotated[
        int | None, typer.Option(help="Open connections per port; more are closed at once.")
    ] = None,
    max_connections_per_ip: Annotated[
        int | None, typer.Option(help="Open connections per client IP and port.")
    ] = None,
    allowed_origin: Annotated[
        list[str] | None, typer.Option(help="Browser origin allowed to connect (repeatable; default any).")
    ] = None,
    ops_open_metrics: Annotated[
        bool | None,
        typer.Option("--ops-open-metrics/--no-ops-open-metrics", help="Serve /metrics without a token."),
    ] = None,
    quota: Annotated[
        list[str] | None,
        typer.Option(help="Publish quota per principal (repeatable)."),
    ] = None,
    topic_quota: Annotated[
        list[str] | None,
        typer.Option(help="Publish quota per topic, all publishers together (repeatable)."),
    ] = None,
    quota_max_buckets: Annotated[
        int | None, typer.Option(help="Quota buckets kept in memory, least recently used dropped.")
    ] = None,
    poll_interval_s: Annotated[
        float | None,
        typer.Option(help="Bus safety poll in seconds, for what other processes change (> 0)."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    max_policy_rules: Annotated[
        int | None, typer.Option(help="Most rules (topic patterns) in a token's policy.")
    ] = None,
    jwks_ttl_s: Annotated[
        float | None, typer.Option(help="Seconds JWKS keys are trusted before a background refetch.")
    ] = None,
) -> None:
    """Start the hub: WebSocket gateway, ops API and dashboard, and outbox drainers.

    Every flag overrides its environment variable (see the README's configuration table). With no JWT
    secret or JWKS URL configured, a random secret is generated for this run and a dev token is printed
    (development mode).
    """
    settings = _settings(
        store=store,
        host=host,
        ws_port=ws_port,
        ops_port=ops_port,
        outbox=outbox or None,
        outbox_drain=outbox_drain,
        outbox_batch_size=outbox_batch_size,
        outbox_max_attempts=outbox_max_attempts,
        outbox_ordered_by_key=outbox_ordered_by_key,
        jwt_secret=jwt_secret,
        jwt_jwks_url=jwt_jwks_url,
        jwt_aud=jwt_aud,
        jwt_iss=jwt_iss,
        jwt_leeway_s=jwt_leeway_s,
        jwks_cooldown_s=jwks_cooldown_s,
        auth_timeout_s=auth_timeout_s,
        max_frame_bytes=max_frame_bytes,
        publish_rate=publish_rate,
        publish_burst=publish_burst,
        max_subscriptions=max_subscriptions,
        send_queue_max=send_queue_max,
        send_queue_max_bytes=send_queue_max_bytes,
        max_auth_frame_bytes=max_auth_frame_bytes,
        max_subscriptions_per_principal=max_subscriptions_per_principal,
        max_groups_per_principal=max_groups_per_principal,
        ws_server=ws_server,
        header_timeout_s=header_timeout_s,
        ops_body_timeout_s=ops_body_timeout_s,
        max_connections=max_connections,
        max_connections_per_ip=max_connections_per_ip,
        allowed_origins=allowed_origin or None,
        ops_open_metrics=ops_open_metrics,
        quotas=quota or None,
        topic_quotas=topic_quota or None,
        quota_max_buckets=quota_max_buckets,
        poll_interval_s=poll_interval_s,
        log_level=log_level,
        max_policy_rules=max_policy_rules,
        jwks_ttl_s=jwks_ttl_s,
    )
    from outboxhub.app import serve as run_server

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
    json: Annotated[
        bool, typer.Option("--json", help="Print {token, sub, scopes, exp} as one JSON document.")
    ] = False,
) -> None:
    """Mint an HS256 token signed with the configured secret (OUTBOXHUB_JWT_SECRET / JWT_SECRET).

    Prints the token alone (for $(…) in a shell), or with --json the token and what it grants.
    """
    from outboxhub.auth.acl import scopes_to_policy
    from outboxhub.auth.jwt import mint_token, parse_ttl
    from outboxhub.errors import PolicyError

    settings = _settings()
    if not settings.jwt_secret:
        _error("no secret configured: set OUTBOXHUB_JWT_SECRET (or JWT_SECRET)")
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
        _error(str(exc))
        raise typer.Exit(2) from None
    if not json:
        typer.echo(minted)
        return
    import jwt as pyjwt
    import msgspec

    exp = pyjwt.decode(minted, options={"verify_signature": False})["exp"]
    doc = {"token": minted, "sub": sub, "scopes": scopes, "exp": exp}
    typer.echo(msgspec.json.encode(doc).decode())


def _register_subcommands() -> None:
    from outboxhub.bench.cli import register as register_bench_commands
    from outboxhub.cli.client import register as register_client_commands
    from outboxhub.cli.doctor import register as register_doctor_command
    from outboxhub.cli.drain import register as register_drain_command
    from outboxhub.cli.ops import register as register_ops_commands

    register_doctor_command(app)
    register_client_commands(app)
    register_drain_command(app)
    register_ops_commands(app)
    register_bench_commands(app)


_register_subcommands()


def build_command() -> Any:
    """The click command tree of :data:`app`, its help laid out by :func:`outboxhub.cli.help.polish`."""
    return polish(typer.main.get_command(app))


def _usage_message(exc: typer.TyperException) -> str:
    """One line for a usage error: typer's message naming the flag, the value when it did not parse, and
    where the help is."""
    message = exc.format_message()
    cause = exc.__cause__
    if isinstance(exc, typer.BadParameter) and exc.param is not None and isinstance(cause, ValidationError):
        errors = cause.errors()
        if errors and "input" in errors[0]:
            detail = exc.message[:1].lower() + exc.message[1:]
            message = f"Invalid value for {exc.param.get_error_hint()}: {errors[0]['input']!r}: {detail}"
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message.replace("\n", " ")


def main() -> None:
    """Console-script entry point.

    Runs the app outside typer's standalone mode so that a usage error (a flag value that does not parse,
    an unknown option or command, a missing option) prints one ``error:`` line on stderr, exit status 2.
    ``--help`` and the commands' exit codes are as in standalone mode.
    """
    try:
        result = build_command().main(prog_name=PROG_NAME, standalone_mode=False)
    except typer.Abort:
        err_console.print("Aborted!", highlight=False)
        raise SystemExit(1) from None
    except typer.TyperException as exc:  # click's ClickException family: UsageError, BadParameter, …
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without a command: its help, on stdout
            typer.echo(exc.format_message())
        else:
            _error(_usage_message(exc))
        raise SystemExit(exc.exit_code) from None
    # typer.Exit(code) (and --help: 0) comes back as the code; a command that returns gives None
    if isinstance(result, int) and result:
        raise SystemExit(result)


if __name__ == "__main__":
    main()
