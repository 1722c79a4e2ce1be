"""``outboxhub publish`` and ``outboxhub tail``: in a subprocess against a running hub; their input errors."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import msgspec
import pytest
import typer
from typer.testing import CliRunner

from outboxhub.app import Hub
from outboxhub.cli.client import register

ALL = ("publish:**", "subscribe:**")


def _env(url: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env.update(OUTBOXHUB_URL=url, OUTBOXHUB_TOKEN=token, COLUMNS="200")
    return env


async def _cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None, wait_s: float = 30.0
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli.client",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(wait_s):
            out, err = await proc.communicate(stdin)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_publish_one_event_and_ndjson_from_stdin(hub: Hub, token: Callable[..., str]) -> None:
    env = _env(hub.ws_url, token(scopes=ALL))
    code, out, err = await _cli(
        "publish",
        "cli.orders",
        '{"n": 1}',
        "--key",
        "o-1",
        "--header",
        "src=cli",
        "--header",
        "x=a=b",
        env=env,
    )
    assert code == 0, err
    result = msgspec.json.decode(out)
    assert set(result) == {"id", "seq", "duplicate"}
    stored = await hub.store.get_event(result["id"])
    assert stored is not None
    assert (stored.payload, stored.key, stored.headers) == ({"n": 1}, "o-1", {"src": "cli", "x": "a=b"})

    lines = b"".join(msgspec.json.encode({"i": i}) + b"\n" for i in range(200)) + b"\n"  # a blank line too
    code, out, err = await _cli("publish", "cli.bulk", "-", env=env, stdin=lines)
    assert code == 0, err
    results = [msgspec.json.decode(line) for line in out.splitlines()]
    assert len(results) == 200
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs)
    events = await hub.store.scan("cli.bulk", limit=1000)
    assert [e.payload["i"] for e in events] == list(range(200))  # printed and stored in input order
    assert [e.id for e in events] == [r["id"] for r in results]


async def test_tail_prints_events_and_acks_them_in_its_group(hub: Hub, token: Callable[..., str]) -> None:
    env = _env(hub.ws_url, token(scopes=ALL))
    published = []
    for i in range(3):
        published.append(await _publish(hub, token, "cli.tail.x", {"i": i}, key=f"k{i}"))

    code, out, err = await _cli(
        "tail", "cli.tail.*", "--group", "t", "--from", "earliest", "--json", "--count", "3", env=env
    )
    assert code == 0, err
    events = [msgspec.json.decode(line) for line in out.splitlines()]
    assert [e["payload"] for e in events] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [e["id"] for e in events] == published
    lag = await hub.store.lag("cli.tail.*", "t")
    assert lag is not None and lag.lag_count == 0  # all three were acked

    # the rich form: one line per event with seq, topic, key and payload
    published.append(await _publish(hub, token, "cli.tail.x", {"i": 3}, key="k3"))
    code, out, err = await _cli("tail", "cli.tail.*", "--group", "t", "--count", "1", env=env)
    assert code == 0, err
    (line,) = out.splitlines()
    assert "cli.tail.x" in line and "key=k3" in line and '{"i":3}' in line and "#" in line


async def test_tail_without_group_shows_live_events(hub: Hub, token: Callable[..., str]) -> None:
    env = _env(hub.ws_url, token(scopes=ALL))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli.client",
        "tail",
        "live.**",
        "--json",
        "--count",
        "1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            # ephemeral: only events published after the subscription; keep publishing until one shows
            reader = asyncio.ensure_future(proc.communicate())
            i = 0
            while not reader.done():
                await _publish(hub, token, "live.ping", {"i": i})
                i += 1
                await asyncio.wait([reader], timeout=0.2)
            out, err = reader.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    assert msgspec.json.decode(out)["topic"] == "live.ping"


async def _publish(
    hub: Hub, token: Callable[..., str], topic: str, payload: object, key: str | None = None
) -> str:
    from outboxhub.client import HubClient

    async with HubClient(hub.ws_url, token(scopes=ALL)) as client:
        return (await client.publish(topic, payload, key=key)).id


async def test_hub_refusal_is_one_error_line_and_status_1(hub: Hub, token: Callable[..., str]) -> None:
    env = _env(hub.ws_url, token(scopes=["publish:orders.**"]))
    code, out, err = await _cli("publish", "billing.x", "{}", env=env)
    assert code == 1 and out == ""
    assert err.strip().startswith("error: forbidden:") and len(err.strip().splitlines()) == 1


# -- input errors: exit 2 before any connection (in-process) -------------------------------------------------


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str]]:
    for name in list(os.environ):
        if name.startswith("OUTBOXHUB_"):
            monkeypatch.delenv(name)
    app = typer.Typer()
    register(app)
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None, **env: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), input=stdin, env=env or None)
        return result.exit_code, result.output

    return run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "a.b", "{nope"), "the payload is not valid JSON"),
        (("publish", "a.b", "1", "--header", "novalue"), "--header 'novalue' must look like name=value"),
        (("publish", "a.b", "1", "--header", "=v"), "must look like name=value"),
        (("tail", "a.*", "--group", "g", "--from", "yesterday"), "--from: start 'yesterday'"),
        (("tail", "a.*", "--from", "earliest"), "--from needs --group"),
        (("tail", "a..b"), "segment"),
        (("tail", "a.*", "--group", "bad group"), "group"),
        (("publish", "a.b", "1", "--url", "localhost:1"), "must look like ws://host:port/"),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(
    run_cli: Callable[..., tuple[int, str]], args: tuple[str, ...], message: str
) -> None:
    code, output = run_cli(*args, OUTBOXHUB_TOKEN="some.jwt.token")
    assert code == 2, output
    assert output.startswith("error: ") and message in output and len(output.strip().splitlines()) == 1


def test_missing_token_is_a_clear_error(run_cli: Callable[..., tuple[int, str]]) -> None:
    for args in (("publish", "a.b", "1"), ("tail", "a.*")):
        code, output = run_cli(*args)
        assert code == 2 and "no token: pass --token or set OUTBOXHUB_TOKEN" in output


async def test_bad_ndjson_line_is_named(hub: Hub, token: Callable[..., str]) -> None:
    env = _env(hub.ws_url, token(scopes=ALL))
    code, out, err = await _cli("publish", "cli.nd", "-", env=env, stdin=b'{"ok": 1}\n{oops\n{"ok": 3}\n')
    assert code == 2
    assert "stdin line 2 is not valid JSON" in err
    assert len(out.splitlines()) == 1  # the line before it was published and confirmed
    assert await hub.store.count("cli.nd") == 1


async def test_unreachable_hub_is_status_1(token: Callable[..., str], unused_tcp_port: int) -> None:
    env = _env(f"ws://127.0.0.1:{unused_tcp_port}/", token(scopes=ALL))
    code, out, err = await _cli("publish", "a.b", "1", env=env)
    assert code == 1 and out == "" and "error: connection: cannot connect" in err
