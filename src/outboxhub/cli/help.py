"""How every ``outboxhub`` command's ``--help`` reads: one place, applied to the whole command tree.

typer builds the click command tree from the decorated functions; :func:`polish` then walks it once and
gives every command the same layout:

* plain click help (no rich panels), wrapped to the terminal up to :data:`MAX_WIDTH` columns, so option
  names and examples are never cut and the description's paragraphs wrap where the text says;
* a placeholder that names the value (``URL``, ``N``, ``SECONDS``, ``PATTERN`` …) instead of the Python
  type, chosen by :func:`metavar_for` from the option's name and type;
* each default shown once, as ``[default: …]`` — for ``serve``, read from :class:`~outboxhub.config.Settings`
  (the flags default to "not given" so that the environment can speak), so help and behaviour cannot drift;
* an "Examples" section at the end, from :data:`EXAMPLES` (``tests/test_cli_help.py`` fails for a command
  without one).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from outboxhub.config import Settings

__all__ = ["CONTEXT_SETTINGS", "EXAMPLES", "MAX_WIDTH", "metavar_for", "polish", "walk"]

MAX_WIDTH: Final = 100
"""Help is wrapped to the terminal width, but never wider than this (long lines are hard to read)."""

CONTEXT_SETTINGS: Final[Mapping[str, Any]] = {
    "max_content_width": MAX_WIDTH,
    "help_option_names": ["--help", "-h"],
}
"""The root command's context settings; click hands them down to every subcommand's context."""

_BY_NAME: Final[Mapping[str, str]] = {
    "store": "URL",
    "outbox": "URL",
    "url": "URL",
    "token": "JWT",
    "jwt_secret": "SECRET",
    "host": "ADDRESS",
    "ws_port": "PORT",
    "ops_port": "PORT",
    "allowed_origin": "ORIGIN",
    "quota": "PATTERN=RATE/s[:BURST]",
    "topic_quota": "PATTERN=RATE/s[:BURST]",
    "log_level": "LEVEL",
    "scope": "SCOPE",
    "ttl": "DURATION",
    "sub": "SUBJECT",
    "aud": "AUDIENCE",
    "iss": "ISSUER",
    "jwt_aud": "AUDIENCE",
    "jwt_iss": "ISSUER",
    "key": "KEY",
    "header": "NAME=VALUE",
    "group": "GROUP",
    "start": "POSITION",
    "pattern": "PATTERN",
    "topic": "TOPIC",
    "data": "JSON",
    "peer": "PEER",
    "database": "DATABASE",
    "json_path": "FILE",
    "max_frame_bytes": "BYTES",
    "size": "BYTES",
    "publish_rate": "PER_S",
    "rate": "PER_S",
    "latency_rate": "PER_S",
    "ws_server": "SERVER",
    "to": "POSITION",
    "ids": "ID",
}


_SETTING_OF: Final[Mapping[str, str]] = {
    "allowed_origin": "allowed_origins",
    "quota": "quotas",
    "topic_quota": "topic_quotas",
}
"""Repeatable serve flags whose setting has a plural name."""


def metavar_for(name: str, type_name: str) -> str:
    """The placeholder shown for a value: by name (``--store URL``, ``--ttl DURATION``), then by the name's
    ending (``--jwt-leeway-s SECONDS``, ``--pg-url URL``), then by type (``N`` for an integer, ``NUMBER``
    for a float, ``FILE`` for a path, ``TEXT`` otherwise)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.endswith("_url"):
        return "URL"
    if name.endswith("_s") or name in ("duration", "warmup"):
        return "SECONDS"
    if name.endswith("_ms"):
        return "MS"
    lowered = type_name.lower()
    if "int" in lowered:
        return "N"
    if "float" in lowered:
        return "NUMBER"
    if "path" in lowered:
        return "FILE"
    return "TEXT"


def _settings_default(name: str) -> str | None:
    field = Settings.model_fields.get(_SETTING_OF.get(name, name))
    if field is None or field.default is None or field.default_factory is not None:
        return None
    default = field.default
    if isinstance(default, bool):
        return name.replace("_", "-") if default else "no-" + name.replace("_", "-")
    return f"{default:g}" if isinstance(default, float) else str(default)


def _type_name(param: Any) -> str:
    """The value's type as text (``int``, ``list[float]``, ``Path``): typer keeps it in ``type_descriptor``,
    older typer releases in click's ``param.type``."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        annotation = descriptor.annotation
        return getattr(annotation, "__name__", None) or str(annotation)
    return str(getattr(getattr(param, "type", None), "name", ""))


def _examples(lines: tuple[str, ...]) -> str:
    # "\b" keeps click from re-wrapping the paragraph that follows.
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def walk(command: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every command of the tree under ``command`` (itself first) with its path, e.g. ``"bench publish"``."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, f"{path} {name}".strip())


def polish(root: Any) -> Any:
    """Apply the help conventions above to every command under ``root`` (a click command built by typer)
    and return it."""
    for path, command in walk(root):
        if path in EXAMPLES:
            command.epilog = _examples(EXAMPLES[path])
        if path in SUMMARIES:
            command.short_help = SUMMARIES[path]
        for param in command.params:
            if param.name in ("help", "install_completion", "show_completion"):
                continue
            if path == "serve" and param.default is None:
                shown = _settings_default(param.name)
                if shown is not None:  # the flag's own default is None ("not given"): show the setting's
                    param.help = f"{param.help}  [default: {shown}]"
            if getattr(param, "is_flag", False):
                continue
            if param.metavar is None:
                param.metavar = metavar_for(param.name, _type_name(param))
            if getattr(param, "param_type_name", "") == "argument":
                # typer prints an argument's Python type after its name ("TOPIC <str>"); the metavar
                # already says what the value is.
                param.display_type_rich = _no_type
    return root


def _no_type(ctx: object) -> None:
    return None


SUMMARIES: Final[Mapping[str, str]] = {
    "serve": "Start the hub (gateway, ops API, outbox drainers).",
    "token": "Mint an HS256 token with the configured secret.",
    "doctor": "Check a hub's or drainer's setup before it runs.",
    "publish": "Publish an event, or NDJSON lines from stdin.",
    "tail": "Print the events matching a topic pattern.",
    "drain": "Drain outboxes into a hub that runs elsewhere.",
    "bench": "Benchmarks, optionally against NATS JetStream.",
    "groups": "List consumer groups with lag (ops API).",
    "group": "Act on one consumer group (ops API).",
    "group reset": "Move a group's cursor; in-flight released.",
    "dlq": "A group's dead letters (ops API).",
    "dlq list": "List a group's dead letters.",
    "dlq redrive": "Republish dead letters (idempotent).",
    "dlq purge": "Stop listing dead letters up to a seq.",
    "connections": "List live WebSocket connections (ops API).",
    "bench publish": "Confirmed publish throughput and latency.",
    "bench consume": "One consumer group reads and ACKs events.",
    "bench e2e": "End-to-end latency at fixed publish rates.",
    "bench fanout": "One publisher, every event to N groups.",
    "bench outbox": "Drain an SQLite outbox into the hub.",
    "bench idle": "Server memory per idle connection.",
    "bench replay": "Replay events as NDJSON through the ops API.",
    "bench inproc": "In-process bus and store against plain sqlite3.",
    "bench drainers": "Outbox drainers on SQLite, PostgreSQL, MongoDB.",
    "bench inbox": "The consumer inbox's cost per event.",
}
"""The one-line summary of each command in its parent's command list (short enough for 80 columns)."""

EXAMPLES: Final[Mapping[str, tuple[str, ...]]] = {
    "": (
        "outboxhub serve              # a hub on SQLite, dev token printed",
        "outboxhub doctor --store postgresql://hub@db/hub",
        "outboxhub tail 'orders.**' --token $T",
        "outboxhub --install-completion   # bash, zsh or fish",
    ),
    "serve": (
        "outboxhub serve",
        "outboxhub serve --store postgresql://hub:pw@db/hub --ws-port 9000",
        "export OUTBOXHUB_JWT_SECRET=$(openssl rand -hex 32)",
        "outboxhub serve --outbox sqlite:///app.db",
    ),
    "token": (
        "outboxhub token --sub alice --scope 'publish:orders.**'",
        "outboxhub token --sub bob --scope 'subscribe:orders.*' --ttl 30m",
        "outboxhub token --sub ops --scope ops:read --json",
    ),
    "doctor": (
        "outboxhub doctor",
        "outboxhub doctor --store postgresql://hub:pw@db/hub",
        "outboxhub doctor --outbox sqlite:///app.db --outbox mongodb://db/app",
        "outboxhub doctor --url ws://hub:8090/ --token $T --json",
    ),
    "publish": (
        "outboxhub publish orders.paid '{\"order\": 42}' --key 42",
        "cat events.ndjson | outboxhub publish orders.paid -",
    ),
    "tail": (
        "outboxhub tail 'orders.**'",
        "outboxhub tail 'orders.*' --group audit --from earliest --json",
    ),
    "drain": (
        "outboxhub drain --outbox sqlite:///app.db --url ws://hub:8090/",
        "outboxhub drain --outbox postgresql://app@db/app \\",
        "    --store postgresql://hub@db/hub",
    ),
    "groups": ("outboxhub groups --ops-url http://hub:8082/ --token $T", "outboxhub groups --json"),
    "group": ("outboxhub group reset 'orders.*' billing --to earliest",),
    "group reset": (
        "outboxhub group reset 'orders.*' billing --to earliest",
        "outboxhub group reset 'orders.*' billing --to ts:1767225600000 --yes",
    ),
    "dlq": ("outboxhub dlq list billing", "outboxhub dlq redrive billing --all"),
    "dlq list": ("outboxhub dlq list billing", "outboxhub dlq list billing --pattern 'orders.*' --json"),
    "dlq redrive": ("outboxhub dlq redrive billing ID1 ID2", "outboxhub dlq redrive billing --all --yes"),
    "dlq purge": ("outboxhub dlq purge billing", "outboxhub dlq purge billing --through-seq 1200 --yes"),
    "connections": ("outboxhub connections --token $T", "outboxhub connections --json"),
    "bench": (
        "outboxhub bench publish --duration 10",
        "outboxhub bench e2e --peer nats --json e2e.json",
    ),
    "bench publish": (
        "outboxhub bench publish --clients 8 --size 100",
        "outboxhub bench publish --peer nats --repeat 3",
    ),
    "bench consume": ("outboxhub bench consume --events 200000 --clients 4",),
    "bench e2e": ("outboxhub bench e2e --rate 1000 --rate 5000",),
    "bench fanout": ("outboxhub bench fanout --groups 20",),
    "bench outbox": ("outboxhub bench outbox --events 100000",),
    "bench idle": ("outboxhub bench idle --clients 5000",),
    "bench replay": ("outboxhub bench replay --events 100000",),
    "bench inproc": (
        "outboxhub bench inproc --quiet",
        "outboxhub bench inproc --store postgresql://postgres@127.0.0.1/test",
    ),
    "bench drainers": ("outboxhub bench drainers --database sqlite --records 20000",),
    "bench inbox": (
        "outboxhub bench inbox --database sqlite --events 2000",
        "outboxhub bench inbox --database sqlite --database postgres --repeat 3",
    ),
}
"""Examples per command path (``""`` is ``outboxhub`` itself); shown at the end of its ``--help``."""
