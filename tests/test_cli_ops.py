"""``outboxhub groups | group reset | dlq list|redrive|purge | connections`` as subprocesses against a real
hub's ops API: tables, ``--json``, confirmation, and the API's errors as one ``error:`` line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from outboxhub.app import Hub
from outboxhub.model import NewEvent, StartPosition

WRITE = ["ops:read", "ops:write", "subscribe:**", "publish:**"]


def _env(hub: Hub, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env.update(OUTBOXHUB_OPS_URL=hub.ops_url, OUTBOXHUB_TOKEN=token, COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env


async def _cli(*args: str, env: dict[str, str], stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate(stdin)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _dead_letters(hub: Hub, topic: str, n: int) -> list[str]:
    results = await hub.bus.publish_batch([NewEvent(topic=topic, payload={"i": i}) for i in range(n)])
    await hub.store.ensure_group(topic, "billing", StartPosition(kind="earliest"))
    for d in await hub.store.claim(topic, "billing", "m", limit=n, ack_timeout_ms=60_000, max_deliver=1):
        await hub.store.nack(topic, "billing", d.event.id, max_deliver=1, reason="boom")
    return [e.id for e in await hub.store.scan(f"dlq.billing.{topic}")][: len(results)]


async def test_groups_and_dlq_round_trip(hub: Hub, token: Any) -> None:
    env = _env(hub, token(scopes=WRITE))
    ids = await _dead_letters(hub, "orders.paid", 2)
    code, out, err = await _cli("groups", env=env)
    assert code == 0, err
    assert "orders.paid" in out and "billing" in out
    code, out, err = await _cli("groups", "--json", env=env)
    assert {g["group"] for g in json.loads(out)["groups"]} == {"billing"}

    code, out, err = await _cli("dlq", "list", "billing", env=env)
    assert code == 0, err
    assert ids[0] in out and "boom" in out
    code, out, _ = await _cli("dlq", "list", "billing", "--json", env=env)
    assert [x["id"] for x in json.loads(out)["deadLetters"]] == ids

    code, out, err = await _cli("dlq", "redrive", "billing", ids[0], env=env, stdin=b"n\n")
    assert code == 1 and await hub.store.count("orders.paid") == 2  # declined: nothing published
    code, out, err = await _cli("dlq", "redrive", "billing", "--all", "--yes", env=env)
    assert code == 0, err
    assert "redrove 2" in out and await hub.store.count("orders.paid") == 4
    code, out, err = await _cli("dlq", "redrive", "billing", "--all", "--yes", env=env)
    assert "redrove 0" in out and "2 already redriven" in out

    code, out, err = await _cli("dlq", "purge", "billing", "--yes", env=env)
    assert code == 0 and "purged 2" in out
    code, out, _ = await _cli("dlq", "list", "billing", "--json", env=env)
    assert json.loads(out)["deadLetters"] == []


async def test_group_reset_and_connections(hub: Hub, token: Any, ws_connect: Any) -> None:
    env = _env(hub, token(scopes=WRITE))
    await hub.bus.publish_batch([NewEvent(topic="jobs.a", payload=i) for i in range(3)])
    await hub.store.ensure_group("jobs.*", "w", StartPosition(kind="latest"))
    code, out, err = await _cli("group", "reset", "jobs.*", "w", "--to", "earliest", "--yes", env=env)
    assert code == 0, err
    assert "reset to earliest" in out and (await hub.store.lag("jobs.*", "w")).lag_count == 3  # type: ignore[union-attr]

    client = await ws_connect(hub.ws_url, token=token(sub="dave", scopes=["subscribe:**"]))
    await client.request("SUBSCRIBE", topic="jobs.*")
    code, out, err = await _cli("connections", env=env)
    assert code == 0 and "dave" in out and "jobs.*" in out
    code, out, _ = await _cli("connections", "--json", env=env)
    [conn] = json.loads(out)["connections"]
    assert conn["sub"] == "dave"


async def test_api_errors_are_one_line(hub: Hub, token: Any) -> None:
    env = _env(hub, token(scopes=["ops:read", "subscribe:**"]))
    code, _, err = await _cli("group", "reset", "jobs.*", "w", "--to", "soon", "--yes", env=env)
    assert code == 1 and "HTTP 403" in err and "ops:write" in err
    env = _env(hub, token(scopes=WRITE))
    code, _, err = await _cli("group", "reset", "jobs.*", "w", "--to", "soon", "--yes", env=env)
    assert code == 1 and "HTTP 400: to: " in err and len(err.strip().splitlines()) == 1
    code, _, err = await _cli("dlq", "list", "bad.group", env=env)
    assert code == 1 and "group: " in err
    env["OUTBOXHUB_OPS_URL"] = "http://127.0.0.1:9/"
    code, _, err = await _cli("groups", env=env)
    assert code == 1 and "cannot reach the ops API" in err
    env.pop("OUTBOXHUB_TOKEN")
    code, _out, err = await _cli("groups", env=env)
    assert code == 2 and "no token" in err
