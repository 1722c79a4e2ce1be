"""Settings that ``start_hub`` hands on to the parts it builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from outboxhub.cli.app import app
from outboxhub.config import Settings
from outboxhub.model import NewEvent


async def test_poll_interval_s_reaches_the_bus(
    hub_factory: Any, ws_connect: Any, token: Any, tmp_path: Path
) -> None:
    """Two hubs on one SQLite file stand for two processes: a waiting member of one learns of the other's
    commits only through its bus's safety poll, whose interval is the ``poll_interval_s`` setting."""
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    publisher = await hub_factory(store=store)
    consumer = await hub_factory(store=store, poll_interval_s=0.05)
    # the interval itself is private to the bus; nothing observable tells 0.05 s from the 1 s default
    # without timing the delivery
    assert publisher.bus._poll_interval_s == 1.0
    assert consumer.bus._poll_interval_s == 0.05

    sub = await ws_connect(consumer.ws_url, token=token())
    assert (await sub.request("SUBSCRIBE", topic="orders.*", group="billing"))["op"] == "OK"
    await publisher.bus.publish_batch([NewEvent(topic="orders.paid", payload={"order": 1})])
    event = await sub.next_event(wait_s=15)
    assert event["event"]["payload"] == {"order": 1}


def test_serve_flags_set_the_poll_interval_and_the_auth_timeout(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[Settings] = []
    monkeypatch.setattr("outboxhub.app.serve", lambda settings: captured.append(settings))
    result = CliRunner().invoke(app, ["serve", "--poll-interval-s", "0.2", "--auth-timeout-s", "3"])
    assert result.exit_code == 0, result.output
    (settings,) = captured
    assert (settings.poll_interval_s, settings.auth_timeout_s) == (0.2, 3.0)


def test_serve_flags_set_the_tenant_limits(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[Settings] = []
    monkeypatch.setattr("outboxhub.app.serve", lambda settings: captured.append(settings))
    args = [
        "serve",
        "--send-queue-max-bytes",
        "1048576",
        "--max-auth-frame-bytes",
        "4096",
        "--max-subscriptions-per-principal",
        "9",
        "--max-groups-per-principal",
        "4",
        "--header-timeout-s",
        "3",
        "--max-connections",
        "100",
        "--max-connections-per-ip",
        "10",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (s,) = captured
    assert (s.send_queue_max_bytes, s.max_auth_frame_bytes) == (1_048_576, 4096)
    assert (s.max_subscriptions_per_principal, s.max_groups_per_principal) == (9, 4)
    assert (s.header_timeout_s, s.max_connections, s.max_connections_per_ip) == (3.0, 100, 10)


async def test_send_queue_max_bytes_reaches_each_connection(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(send_queue_max_bytes=100_000)
    await ws_connect(hub.ws_url, token=token())
    (conn,) = hub.gateway.connections
    assert conn.out._max_bytes == 100_000
