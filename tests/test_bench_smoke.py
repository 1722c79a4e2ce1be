"""``outboxhub bench``: every scenario runs end to end for a tiny size, on a real hub subprocess and on the
local NATS JetStream; the report, the JSON and the CLI wiring hold together. No performance assertions."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from outboxhub.bench import stats
from outboxhub.bench.cli import register
from outboxhub.bench.hubproc import start_hub_process
from outboxhub.bench.options import CLIENT_SCENARIOS, SCENARIOS, BenchOptions, Scenario
from outboxhub.bench.report import ratio, to_json
from outboxhub.bench.results import HUB, NATS, Measurement
from outboxhub.bench.runner import run_bench
from outboxhub.bench.stats import LatencyHistogram

NATS_URL = "nats://127.0.0.1:4222"

TINY = {
    "duration_s": 0.2,
    "warmup_s": 0.1,
    "events": 200,
    "window": 16,
    "rates": (200.0,),
    "groups": 2,
    "sizes": (100,),
}


def _nats_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def nats_peer() -> None:
    if _nats_up():
        return
    message = (
        "NATS JetStream is not running at 127.0.0.1:4222 "
        "(start it: nats-server -a 127.0.0.1 -p 4222 -js -sd DIR)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _clients(scenario: Scenario) -> int | None:
    return 20 if scenario == "idle" else None


@pytest.mark.nats
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_scenario_runs_on_hub_and_peer(scenario: Scenario, nats_peer: None) -> None:
    options = BenchOptions(**TINY, clients=_clients(scenario), peer="nats", nats_url=NATS_URL)  # type: ignore[arg-type]
    report = await run_bench(scenario, options)

    systems = {m.system for m in report.measurements}
    assert systems == {HUB, NATS}
    hub_cases = [m.case for m in report.measurements if m.system == HUB]
    nats_cases = [m.case for m in report.measurements if m.system == NATS]
    assert hub_cases == nats_cases  # the side-by-side join key matches
    for m in report.measurements:
        assert m.scenario == scenario
        assert m.count > 0
        assert m.value > 0 or m.unit == "KiB/conn"
        assert m.server is not None, f"{m.system} {m.case}: the server process was not watched"
    decoded = json.loads(to_json(report))
    assert decoded["scenario"] == scenario
    if scenario != "idle":  # RSS growth of 20 connections can be lost in the noise (even negative)
        assert all("ratio_to_nats" in m for m in decoded["measurements"] if m["system"] == HUB)


@pytest.mark.nats
async def test_consume_with_two_members_on_hub_and_peer(nats_peer: None) -> None:
    options = BenchOptions(**TINY, clients=2, peer="nats", nats_url=NATS_URL)  # type: ignore[arg-type]
    report = await run_bench("consume", options)

    assert [(m.case, m.system) for m in report.measurements] == [
        ("consume 200 × 100 B, 1 group × 2 members, ack each", HUB),
        ("consume 200 × 100 B, 1 group × 2 members, ack each", NATS),
    ]
    for m in report.measurements:
        assert m.count == 200
        assert m.extra["members"] == 2
        per_member = m.extra["per_member"]
        assert len(per_member) == 2 and sum(per_member) == 200  # who gets how many is the server's call


@pytest.mark.nats
async def test_e2e_publishers_share_the_rate(nats_peer: None) -> None:
    options = BenchOptions(**TINY, clients=3, peer="nats", nats_url=NATS_URL)  # type: ignore[arg-type]
    report = await run_bench("e2e", options)

    assert [(m.case, m.system) for m in report.measurements] == [
        ("end-to-end @ 200/s, 100 B, 3 publishers", HUB),
        ("end-to-end @ 200/s, 100 B, 3 publishers", NATS),
    ]
    for m in report.measurements:
        assert m.extra["publishers"] == 3
        assert m.count == 40  # rate × duration, however many connections sent them


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s not in CLIENT_SCENARIOS])
async def test_run_bench_refuses_clients_where_it_does_not_apply(scenario: Scenario) -> None:
    with pytest.raises(ValueError, match=f"--clients does not apply to {scenario}"):
        await run_bench(scenario, BenchOptions(**TINY, clients=3))  # type: ignore[arg-type]


async def test_publish_cases_and_latency() -> None:
    report = await run_bench("publish", BenchOptions(**TINY, clients=2, sdk=True))  # type: ignore[arg-type]
    cases = [(m.case, m.system) for m in report.measurements]
    assert cases == [
        ("publish 100 B, 1 in flight", "outboxhub"),
        ("publish 100 B, 1 in flight", "outboxhub (SDK)"),
        ("publish 100 B, 2×16", "outboxhub"),
        ("publish 100 B, 2×16", "outboxhub (SDK)"),
    ]
    for m in report.measurements:
        assert m.latency is not None and m.latency.count == m.count
        assert m.latency.p50_ms <= m.latency.p99_ms <= m.latency.max_ms


async def test_against_a_running_hub_by_url(tmp_path: Path) -> None:
    async with start_hub_process(f"sqlite:///{tmp_path / 'hub.db'}", workdir=tmp_path) as hub:
        options = BenchOptions(
            **TINY,  # type: ignore[arg-type]
            url=hub.ws_url,
            token=hub.token,
            ops_url=hub.ops_url,
        )
        report = await run_bench("replay", options)
    [m] = report.measurements
    assert m.count == 200  # prefilled over WebSocket, then read back through GET /replay
    assert m.server is not None and m.server.pid == hub.pid  # found by its listening port


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None: ...

    register(app)
    return app


def test_cli_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    result = CliRunner().invoke(
        _app(),
        [
            "bench",
            "e2e",
            "--duration",
            "0.2",
            "--warmup",
            "0",
            "--rate",
            "100",
            "--quiet",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "end-to-end @ 100/s" in result.output
    data = json.loads(out.read_text())
    assert [m["unit"] for m in data["measurements"]] == ["ms p99"]
    assert data["machine"]["cpus"] >= 1


def test_cli_consume_with_two_clients(tmp_path: Path) -> None:
    out = tmp_path / "consume.json"
    args = ["bench", "consume", "--clients", "2", "--events", "200", "--quiet", "--json", str(out)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "1 group × 2 members" in result.output
    [m] = json.loads(out.read_text())["measurements"]
    assert m["count"] == 200 and m["extra"]["members"] == 2


@pytest.mark.parametrize("scenario", ["fanout", "outbox", "replay"])
def test_cli_refuses_clients_where_it_does_not_apply(scenario: str) -> None:
    result = CliRunner().invoke(_app(), ["bench", scenario, "--clients", "3", "--events", "10", "--quiet"])
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()  # one clear line, and nothing ran
    assert line == (
        f"error: --clients does not apply to {scenario}; it is taken by publish, consume, e2e and idle"
    )


def test_cli_names_bad_options() -> None:
    app = _app()
    runner = CliRunner()
    for args, needle in (
        (["bench", "publish", "--url", "ws://127.0.0.1:1/"], "--token"),
        (["bench", "publish", "--size", "4"], "--size"),
        (["bench", "idle", "--peer", "kafka"], "--peer"),
        (["bench", "e2e", "--rate", "0"], "--rate"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output


def test_ratio_direction() -> None:
    def m(system: str, value: float, higher: bool) -> Measurement:
        return Measurement(
            scenario="x",
            case="c",
            system=system,  # type: ignore[arg-type]
            value=value,
            unit="u",
            higher_is_better=higher,
            count=1,
            elapsed_s=1.0,
        )

    assert ratio(m(HUB, 30, True), m(NATS, 20, True)) == "1.50× ↑"
    assert ratio(m(HUB, 5, False), m(NATS, 10, False)) == "0.50× ↓"
    assert ratio(m(HUB, 5, False), None) == ""


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1_000, max_value=10_000_000_000), min_size=1, max_size=300))
def test_histogram_percentiles_match_sorted_values(values_ns: list[int]) -> None:
    hist = LatencyHistogram()
    for v in values_ns:
        hist.record_ns(v)
    summary = hist.summary()
    assert summary is not None and summary.count == len(values_ns)
    ordered = sorted(v // 1000 for v in values_ns)  # recorded in whole microseconds
    for pct, got_ms in ((50, summary.p50_ms), (99, summary.p99_ms), (100, summary.max_ms)):
        rank = max(1, -(-pct * len(ordered) // 100))  # nearest-rank percentile
        want_us = ordered[rank - 1]
        assert abs(got_ms * 1000 - want_us) <= want_us * 0.001 + 1, (pct, got_ms, want_us)


def test_histogram_empty_and_merge() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    assert a.summary() is None
    a.record_ns(1_000_000)
    b.record_ns(3_000_000)
    a.merge(b)
    summary = a.summary()
    assert summary is not None and summary.count == 2
    assert summary.max_ms == pytest.approx(3.0, rel=1e-3)


def test_histogram_records_into_a_buffer_until_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorded latency costs an append while a case is measured; the histogram's pure-Python bookkeeping
    runs when it is read, or when the buffer is full. Values are clamped to 1 µs–60 s either way."""
    monkeypatch.setattr(stats, "_BUFFERED", 5, raising=False)
    hist = LatencyHistogram()
    for ns in (0, 2_000_000, 2_000_400, 4_000_000):
        hist.record_ns(ns)
    assert hist._h.get_total_count() == 0 and hist.count == 4
    hist.record_ns(10**15)  # the fifth: the buffer is folded
    assert hist._h.get_total_count() == 5 and hist.count == 5
    hist.record_ns(1_000_000)
    summary = hist.summary()
    assert summary is not None and summary.count == 6 and hist._h.get_total_count() == 6
    assert summary.max_ms == pytest.approx(60_000.0, rel=1e-3)
    assert summary.p50_ms == pytest.approx(2.0, rel=1e-3)
    assert hist._h.get_min_value() == 1


def test_options_defaults_per_scenario() -> None:
    o = BenchOptions()
    assert o.clients_for("publish") == 4 and o.clients_for("idle") == 1000
    assert o.events_for("replay") == 1_000_000
    assert o.sizes_for("publish") == (100, 4096) and o.sizes_for("e2e") == (100,)
    assert asyncio.iscoroutinefunction(run_bench)


# -- inproc: the bus and a store in this process, against plain sqlite3 ------------------------------------

_INPROC_TINY = ["--events", "300", "--serial-events", "50", "--big", "500", "--window", "16", "--repeat", "1"]


def test_cli_inproc_on_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "inproc.json"
    result = CliRunner().invoke(_app(), ["bench", "inproc", *_INPROC_TINY, "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = {(m["system"], m["case"]): m for m in data["measurements"]}
    assert ("naive baseline", "1 txn/event, synchronous=NORMAL") in rows
    assert ("outboxhub", "confirmed publish, 16 in flight") in rows
    assert ("outboxhub", "consume + ack, 1 group, 4 members") in rows
    memory = rows[("outboxhub", "memory run, 16 in flight")]
    assert len(memory["extra"]["rss_by_tenth_mib"]) == 10
    assert all(m["count"] > 0 and m["value"] > 0 for m in data["measurements"])
    assert any("pipelined ÷ naive sqlite3 (NORMAL)" in note for note in data["notes"])


@pytest.mark.postgres
async def test_inproc_on_postgres_adds_cross_node() -> None:
    from outboxhub.bench.inproc import InprocOptions, run_inproc
    from outboxhub.testing.postgres import require_postgres

    url = await require_postgres()
    options = InprocOptions(
        store=url, events=300, serial_events=50, big=0, cross_events=20, window=16, repeat=1
    )
    report = await run_inproc(options)
    cases = [m.case for m in report.measurements]
    assert "1 txn/event, synchronous=NORMAL" not in cases  # the naive baseline is SQLite's
    cross = next(m for m in report.measurements if m.case.startswith("cross-node"))
    assert cross.count == 20 and cross.latency is not None and cross.latency.count == 20


def test_cli_inproc_refuses_a_sqlite_store_url() -> None:
    result = CliRunner().invoke(_app(), ["bench", "inproc", "--store", "sqlite:///x.db", "--quiet"])
    assert result.exit_code == 2
    assert "postgresql://" in result.output


# -- drainers: outboxhub's Drainer against a naive one-record-at-a-time drainer -----------------------------


def test_cli_drainers_on_sqlite_and_the_mongo_stand_in(tmp_path: Path) -> None:
    out = tmp_path / "drainers.json"
    args = ["bench", "drainers", "--database", "sqlite", "--database", "mongo", "--records", "200"]
    args += ["--naive-records", "50", "--repeat", "1", "--latency-samples", "5", "--latency-rate", "200"]
    result = CliRunner().invoke(_app(), [*args, "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    cases = [(m["system"], m["case"]) for m in data["measurements"]]
    for db in ("sqlite", "mongo (stand-in)"):
        assert ("naive baseline", f"{db}: naive drainer → hub") in cases
        assert ("outboxhub", f"{db}: Drainer → hub") in cases
        assert ("outboxhub", f"{db}: Drainer → null sink") in cases
        latency = [m for m in data["measurements"] if m["case"].startswith(f"{db}: commit → published")]
        assert len(latency) == 1 and latency[0]["latency"]["count"] == 5
    assert any("the naive drainer" in note for note in data["notes"])


@pytest.mark.postgres
async def test_drainers_on_postgres() -> None:
    from outboxhub.bench.drainers import DrainersOptions, run_drainers_bench
    from outboxhub.testing.postgres import require_postgres

    url = await require_postgres()
    options = DrainersOptions(
        databases=("postgres",), records=200, naive_records=50, repeat=1, latency_samples=5, pg_url=url
    )
    report = await run_drainers_bench(options)
    assert [m.case for m in report.measurements][:3] == [
        "postgres: naive drainer → hub",
        "postgres: Drainer → hub",
        "postgres: Drainer → null sink",
    ]


def test_cli_drainers_refuses_an_unknown_database() -> None:
    result = CliRunner().invoke(_app(), ["bench", "drainers", "--database", "oracle", "--quiet"])
    assert result.exit_code == 2
    assert "sqlite, postgres, mongo" in result.output


# -- inbox: SDK consumers with and without the inbox ---------------------------------------------------------


@pytest.mark.postgres
def test_cli_inbox_on_sqlite_and_postgres(tmp_path: Path) -> None:
    out = tmp_path / "inbox.json"
    args = ["bench", "inbox", "--events", "30", "--repeat", "1", "--quiet", "--json", str(out)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    cases = [m["case"] for m in data["measurements"]]
    assert cases[0] == "sdk handler, no database"
    for db in ("sqlite", "postgres"):
        if any(note.startswith("PostgreSQL at") for note in data["notes"]) and db == "postgres":
            assert os.environ.get("CI") != "true", "PostgreSQL must be reachable in CI"
            continue
        assert f"{db} write, commit per event" in cases
        assert f"{db} write + inbox, commit per event" in cases
        assert any(note.startswith(f"inbox cost on {db}:") for note in data["notes"])


def test_cli_inbox_refuses_an_unknown_database() -> None:
    result = CliRunner().invoke(_app(), ["bench", "inbox", "--database", "mysql"])
    assert result.exit_code == 2 and "--database takes sqlite, postgres" in result.output


async def test_the_bench_hub_accepts_more_connections_than_the_default_per_ip_limit(tmp_path: Path) -> None:
    """The idle scenario opens 1,000 connections from 127.0.0.1; the served hub's per-IP default is 256."""
    import aiohttp

    async with (
        start_hub_process(f"sqlite:///{tmp_path / 'ip.db'}", workdir=tmp_path) as target,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        sockets = [await session.ws_connect(target.ws_url) for _ in range(300)]
        try:
            assert all(not ws.closed for ws in sockets)
            await sockets[-1].send_str("{}")  # the 300th is served (an ERR reply), not refused or closed
            assert (await sockets[-1].receive(timeout=10)).type is aiohttp.WSMsgType.TEXT
        finally:
            for ws in sockets:
                await ws.close()


def test_wsfloor_reports_every_server(capsys: pytest.CaptureFixture[str]) -> None:
    from outboxhub.bench.wsfloor import main

    main(["--seconds", "0.2", "--idle", "3", "--rounds", "1"])
    out = capsys.readouterr().out
    for server in ("aiohttp", "picows", "picows-2k"):
        assert any(line.split()[:1] == [server] for line in out.splitlines()), out


def test_memprobe_reports_allocations_per_connection(capsys: pytest.CaptureFixture[str]) -> None:
    from outboxhub.bench.memprobe import main

    main(["--connections", "5", "--top", "3"])
    out = capsys.readouterr().out
    assert out.startswith("5 idle connections: "), out
    assert "-- by filename" in out and "-- by lineno" in out
