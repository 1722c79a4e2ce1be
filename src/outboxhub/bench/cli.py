"""``outboxhub bench publish|consume|e2e|fanout|outbox|idle|replay`` (a hub subprocess, optionally NATS
side by side), ``inproc|drainers`` (in this process, against naive baselines) and ``inbox`` (SDK
consumers with and without the inbox): :func:`register`.

The hub scenario commands take the same options, and refuse (exit 2) those they cannot use instead of
ignoring them (``--clients`` outside publish, consume, e2e and idle). Only this module is imported when
the CLI starts; the harness (and its extra dependencies: hdrhistogram, psutil, nats-py) is imported when
a command runs, and a missing one is named with the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.console import Console
from rich.markup import escape

from outboxhub._extras import missing_extra, needs_extra

if TYPE_CHECKING:
    from outboxhub.bench.options import Scenario

__all__ = ["register"]

_HELP: Final[dict[Scenario, str]] = {
    "publish": "Confirmed publish: one at a time and pipelined (--clients × --window), 100 B and 4 KiB.",
    "consume": "One consumer group (--clients members, default 1) reads --events prefilled events and "
    "ACKs each one.",
    "e2e": "End-to-end latency (publish → EVENT, acked) at fixed rates (--rate; default 1,000 and 5,000/s), "
    "shared by --clients publishers (default 1).",
    "fanout": "One pipelined publisher, --groups consumer groups (default 10), every group gets every event.",
    "outbox": "Drain --events outbox records (SQLite outbox) into the hub with the outbox drainer.",
    "idle": "Open --clients idle connections (default 1,000): server memory per connection.",
    "replay": "Replay --events events (default 1,000,000) as NDJSON through the ops API GET /replay.",
}


def _missing_driver(err: Console, exc: ModuleNotFoundError) -> typer.Exit:
    """Print which extra provides the missing module (``bench`` unless it is a database driver)."""
    extra = missing_extra(exc) or "bench"
    what = "the bench" if extra == "bench" else f"this bench run ({exc.name})"
    err.print(f"[red]error:[/red] {escape(needs_extra(what, extra))}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _command(scenario: Scenario) -> Any:
    def command(
        store: Annotated[
            str | None,
            typer.Option(help="Store URL of the hub to start (default: a new SQLite file in a temp dir)."),
        ] = None,
        url: Annotated[
            str | None, typer.Option(help="Benchmark a running hub at this ws:// URL instead.")
        ] = None,
        token: Annotated[str | None, typer.Option(help="JWT for --url (publish:**, subscribe:**).")] = None,
        ops_url: Annotated[str | None, typer.Option(help="Ops base URL of the --url hub (replay).")] = None,
        clients: Annotated[
            int | None,
            typer.Option(
                help="Connections: publish (pipelined case, default 4), consume (group members, 1), "
                "e2e (publishers sharing the rate, 1), idle (1000). Refused by the other scenarios."
            ),
        ] = None,
        size: Annotated[
            list[int] | None, typer.Option(help="Payload size in bytes (repeatable; publish: 100 and 4096).")
        ] = None,
        duration: Annotated[float, typer.Option(help="Seconds per measured case (publish, e2e).")] = 5.0,
        warmup: Annotated[float, typer.Option(help="Warm-up seconds before each case.")] = 1.0,
        events: Annotated[
            int | None, typer.Option(help="Events moved by consume/fanout/outbox/replay.")
        ] = None,
        window: Annotated[int, typer.Option(help="Publishes in flight per pipelined connection.")] = 256,
        rate: Annotated[
            list[float] | None, typer.Option(help="e2e publish rate in events/s (repeatable).")
        ] = None,
        groups: Annotated[int, typer.Option(help="Consumer groups of the fanout scenario.")] = 10,
        peer: Annotated[
            str | None, typer.Option(help="Run the same workload against a peer: nats (JetStream).")
        ] = None,
        nats_url: Annotated[str, typer.Option(help="NATS server for --peer nats.")] = "nats://127.0.0.1:4222",
        nats_replicas: Annotated[
            int, typer.Option(min=1, max=5, help="Replicas of the --peer nats stream (a JetStream cluster).")
        ] = 1,
        ws_server: Annotated[
            str | None,
            typer.Option(help="WebSocket server of the started hub: aiohttp or picows (default: the hub's)."),
        ] = None,
        sdk: Annotated[
            bool, typer.Option(help="publish: add rows through the Python SDK (HubClient).")
        ] = False,
        repeat: Annotated[
            int, typer.Option(help="Rounds (hub then peer in each); every row reports its median round.")
        ] = 1,
        json_path: Annotated[
            Path | None, typer.Option("--json", help="Write the results as JSON to this file.")
        ] = None,
        quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    ) -> None:
        err = Console(stderr=True)
        if peer not in (None, "nats"):
            err.print(f"[red]error:[/red] --peer {peer!r}: the only peer is 'nats'", highlight=False)
            raise typer.Exit(2)
        if ws_server not in (None, "aiohttp", "picows"):
            err.print(f"[red]error:[/red] --ws-server {ws_server!r}: aiohttp or picows", highlight=False)
            raise typer.Exit(2)
        try:
            from outboxhub.bench.options import DEFAULT_E2E_RATES, BenchOptions

            options = BenchOptions(
                store=store,
                url=url,
                token=token,
                ops_url=ops_url,
                clients=clients,
                sizes=tuple(size or ()),
                duration_s=duration,
                warmup_s=warmup,
                events=events,
                window=window,
                rates=tuple(rate or DEFAULT_E2E_RATES),
                groups=groups,
                peer="nats" if peer == "nats" else None,
                nats_url=nats_url,
                nats_replicas=nats_replicas,
                ws_server="picows" if ws_server == "picows" else "aiohttp" if ws_server else None,
                sdk=sdk,
                repeat=repeat,
            )
            options.check_scenario(scenario)
        except ValueError as exc:
            err.print(
                f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True
            )  # one line, even in a pipe
            raise typer.Exit(2) from None
        try:
            from outboxhub.bench.runner import run_bench
        except ModuleNotFoundError as exc:
            raise _missing_driver(err, exc) from None
        try:
            result = _run(run_bench(scenario, options, console=None if quiet else err))
        except ModuleNotFoundError as exc:
            raise _missing_driver(err, exc) from None
        except (RuntimeError, OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] bench {scenario} failed: {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        _output(result, json_path)

    command.__doc__ = _HELP[scenario]
    return command


def inproc(
    store: Annotated[
        str | None,
        typer.Option(
            help="A postgresql:// URL (a throwaway schema per case); default: SQLite in a temp dir."
        ),
    ] = None,
    events: Annotated[int, typer.Option(help="Events of the pipelined, batch and consume cases.")] = 100_000,
    serial_events: Annotated[
        int, typer.Option(help="Events of the one-commit-per-event cases (naive, batch-1).")
    ] = 10_000,
    big: Annotated[int, typer.Option(help="Events of the memory run (0: no memory run).")] = 1_000_000,
    cross_events: Annotated[int, typer.Option(help="Events of the PostgreSQL cross-node case.")] = 1_000,
    window: Annotated[int, typer.Option(help="Publishes in flight when pipelining.")] = 1_000,
    repeat: Annotated[int, typer.Option(help="Rounds; every row reports its median round.")] = 3,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON to this file.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
) -> None:
    """In-process bus and store (no WebSocket): confirmed publish batch-1 / pipelined / publish_batch,
    consume + ack, flat RSS, against plain sqlite3 at one transaction per event; --store postgresql://…
    adds cross-node wake-up latency."""
    err = Console(stderr=True)

    def harness() -> Coroutine[Any, Any, Any]:
        from outboxhub.bench.inproc import InprocOptions, run_inproc

        options = InprocOptions(
            store=store,
            events=events,
            serial_events=serial_events,
            big=big,
            cross_events=cross_events,
            window=window,
            repeat=repeat,
        )
        return run_inproc(options, console=None if quiet else err)

    _output(_run_in_process("inproc", harness, err), json_path)


def drainers(
    database: Annotated[
        list[str] | None,
        typer.Option(
            help="Outbox database: sqlite, postgres, mongo, mysql (repeatable; default: the first three)."
        ),
    ] = None,
    records: Annotated[int, typer.Option(help="Records per Drainer run.")] = 50_000,
    naive_records: Annotated[int, typer.Option(help="Records per naive drainer run.")] = 2_000,
    repeat: Annotated[int, typer.Option(help="Rounds; every drain row reports its median round.")] = 3,
    latency_samples: Annotated[int, typer.Option(help="Records committed one at a time.")] = 300,
    latency_rate: Annotated[float, typer.Option(help="Commits per second of the latency case.")] = 100.0,
    pg_url: Annotated[
        str | None, typer.Option(help="PostgreSQL server (default OUTBOXHUB_TEST_PG_URL or local).")
    ] = None,
    mongo_url: Annotated[
        str | None,
        typer.Option(
            help="MongoDB server (default: the nx-27017 stand-in, started in memory; not a real one)."
        ),
    ] = None,
    mysql_url: Annotated[
        str | None,
        typer.Option(help="MySQL/MariaDB server (default OUTBOXHUB_TEST_MYSQL_URL or local, db test)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON to this file.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
) -> None:
    """Outbox drain records/s and commit → publish latency on SQLite, PostgreSQL and MongoDB: outboxhub's
    Drainer against a naive one-record-at-a-time drainer."""
    err = Console(stderr=True)

    def harness() -> Coroutine[Any, Any, Any]:
        from outboxhub.bench.drainers import DrainersOptions, run_drainers_bench

        options = DrainersOptions(
            databases=tuple(database or ("sqlite", "postgres", "mongo")),  # type: ignore[arg-type]
            records=records,
            naive_records=naive_records,
            repeat=repeat,
            latency_samples=latency_samples,
            latency_rate=latency_rate,
            pg_url=pg_url,
            mongo_url=mongo_url,
            mysql_url=mysql_url,
        )
        return run_drainers_bench(options, console=None if quiet else err)

    _output(_run_in_process("drainers", harness, err), json_path)


def _run_in_process(name: str, harness: Callable[[], Coroutine[Any, Any, Any]], err: Console) -> Any:
    """Run the coroutine ``harness()`` returns (it imports the harness and checks the options) and turn
    its failures into exits: a missing module names its extra and a refused option exits 2, a failed
    run exits 1."""
    try:
        return _run(harness())
    except ModuleNotFoundError as exc:
        raise _missing_driver(err, exc) from None
    except ValueError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (RuntimeError, OSError) as exc:
        err.print(f"[red]error:[/red] bench {name} failed: {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None


def _output(result: Any, json_path: Path | None) -> None:
    from outboxhub.bench import report as report_mod

    console = Console()
    if not console.is_terminal:  # a file or a pipe: do not wrap the table at 80 columns
        console = Console(width=200)
    report_mod.render(result, console)
    if json_path is not None:
        report_mod.write_json(result, json_path)
        console.print(f"wrote {json_path}", highlight=False)


def inbox(
    database: Annotated[
        list[str] | None,
        typer.Option(help="Consumer database: sqlite, postgres (repeatable; default both)."),
    ] = None,
    events: Annotated[int, typer.Option(help="Events consumed per case.")] = 2_000,
    repeat: Annotated[int, typer.Option(help="Rounds; every row reports its median round.")] = 3,
    pg_url: Annotated[
        str | None, typer.Option(help="PostgreSQL server (default OUTBOXHUB_TEST_PG_URL or local).")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON to this file.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
) -> None:
    """The consumer inbox's cost per event: SDK consumers with a plain handler, a write committed per
    event, and the same write with the inbox (exactly-once), on SQLite and PostgreSQL."""
    err = Console(stderr=True)
    try:
        from outboxhub.bench.inbox import InboxBenchOptions, run_inbox_bench

        options = InboxBenchOptions(
            databases=tuple(database or ("sqlite", "postgres")),  # type: ignore[arg-type]
            events=events,
            repeat=repeat,
            pg_url=pg_url,
        )
        result = _run(run_inbox_bench(options, console=None if quiet else err))
    except ModuleNotFoundError as exc:
        raise _missing_driver(err, exc) from None
    except ValueError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (RuntimeError, OSError) as exc:
        err.print(f"[red]error:[/red] bench inbox failed: {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    _output(result, json_path)


def _run(coro: Any) -> Any:
    import asyncio

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.Runner()
    with runner:
        return runner.run(coro)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group (one command per scenario) to ``app``."""
    bench = typer.Typer(
        name="bench",
        help="Benchmarks: throughput, latency percentiles, server CPU and RSS; --peer nats for JetStream.",
        no_args_is_help=True,
    )
    for scenario in _HELP:
        bench.command(name=scenario)(_command(scenario))
    bench.command(name="inproc")(inproc)
    bench.command(name="drainers")(drainers)
    bench.command(name="inbox")(inbox)
    app.add_typer(bench, name="bench")
