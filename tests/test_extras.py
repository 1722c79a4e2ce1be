"""The optional drivers (pyproject.toml extras): without psycopg and pymongo, the SQLite hub, the SQLite
outbox and the SDK work, and asking for PostgreSQL or MongoDB is one error naming the extra to install.

Each check runs in a fresh interpreter whose prelude puts ``None`` into ``sys.modules`` for the drivers, so
any ``import psycopg`` (etc.) on the way fails as it would where the package is not installed; the driver
really is installed here, so a second check proves the shared paths do not even import it when present.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DRIVERS = ("psycopg", "psycopg_pool", "pymongo", "bson")
BENCH = ("hdrh", "psutil", "nats")
SHARED = (
    "import outboxhub, outboxhub.client, outboxhub.outbox, outboxhub.store, outboxhub.app, outboxhub.cli.app"
)


def _run(
    body: str, *, shared: bool = False, block: tuple[str, ...] = DRIVERS, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    prelude = f"import sys\nfor _name in {block!r}:\n    sys.modules[_name] = None\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the outboxhub under test
    return subprocess.run(
        [sys.executable, "-c", prelude + (SHARED + "\n" if shared else "") + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def test_the_prelude_really_blocks_the_drivers() -> None:
    result = _run("import psycopg")
    assert result.returncode == 1 and "ModuleNotFoundError" in result.stderr


def test_shared_paths_do_not_import_the_drivers_even_when_installed() -> None:
    out = _ok(
        _run(
            "import outboxhub.bench.cli, outboxhub.ops.api, outboxhub.cli.drain\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{(*DRIVERS, *BENCH)!r}))",
            block=(),
            shared=True,
        )
    )
    assert out.strip() == "[]"


def test_sqlite_hub_outbox_and_sdk_work_without_the_drivers(tmp_path: Path) -> None:
    out = _ok(
        _run(
            """
            import asyncio, sqlite3
            from outboxhub import outbox
            from outboxhub.bus.core import Bus
            from outboxhub.model import NewEvent
            from outboxhub.store import open_store

            async def main():
                store = await open_store("sqlite:///hub.db")
                try:
                    async with Bus(store) as bus:
                        result = await bus.publish(NewEvent(topic="a.b", payload={"n": 1}))
                        print("published", result.seq)
                        outbox.ensure_schema("sqlite:///app.db")
                        conn = sqlite3.connect("app.db")
                        with conn:
                            outbox.add(conn, "orders.paid", {"order": 7}, key="7")
                        conn.close()
                        box = await outbox.open_outbox("sqlite:///app.db")
                        try:
                            await outbox.Drainer(box, bus, outbox.DrainerSettings()).run_until_idle()
                            stats = await box.stats()
                            print("outbox pending", stats.pending, "dead", stats.dead)
                        finally:
                            await box.close()
                finally:
                    await store.close()

            asyncio.run(main())
            """,
            cwd=tmp_path,
            shared=True,
        )
    )
    assert "published 1" in out
    assert "outbox pending 0 dead 0" in out


def test_postgres_and_mongo_urls_name_the_extra() -> None:
    out = _ok(
        _run(
            """
            import asyncio
            from outboxhub import outbox
            from outboxhub.errors import OutboxError, StoreURLError
            from outboxhub.store import open_store

            async def main():
                checks = [
                    open_store("postgresql://u:hunter2@db/x"),
                    open_store("mongodb://db/x"),
                    outbox.open_outbox("postgresql://u:hunter2@db/x"),
                    outbox.open_outbox("mongodb://db/x"),
                    outbox.ensure_schema_async("mongodb://db/x"),
                ]
                for check in checks:
                    try:
                        await check
                    except StoreURLError as exc:
                        print(exc)
                for sync in (
                    lambda: outbox.ensure_schema("postgresql://db/x"),
                    lambda: outbox.PostgresOutbox,
                ):
                    try:
                        sync()
                    except (OutboxError, StoreURLError) as exc:
                        print(exc)

            asyncio.run(main())
            """
        )
    )
    pg = "needs the 'postgres' extra: pip install 'outboxhub[postgres]'"
    mongo = "needs the 'mongo' extra: pip install 'outboxhub[mongo]'"
    assert out.splitlines() == [
        f"the PostgreSQL store {pg} (for postgresql://u:***@db/x)",
        f"the MongoDB store {mongo} (for mongodb://db/x)",
        f"the PostgreSQL outbox {pg} (for postgresql://u:***@db/x)",
        f"the MongoDB outbox {mongo} (for mongodb://db/x)",
        f"the MongoDB outbox {mongo} (for mongodb://db/x)",
        f"ensure_schema on a PostgreSQL URL {pg} (for postgresql://db/x)",
        f"the PostgreSQL outbox {pg}",
    ]


@pytest.mark.parametrize("argv", [["bench", "publish"], ["bench", "outbox"]])
def test_bench_without_its_extra_names_it(argv: list[str]) -> None:
    result = _run(
        f"import sys\nfrom outboxhub.cli.app import main\nsys.argv = ['outboxhub', *{argv!r}]\nmain()",
        block=(*DRIVERS, *BENCH),
    )
    assert result.returncode == 2, result.stderr
    assert "the bench needs the 'bench' extra: pip install 'outboxhub[bench]'" in " ".join(
        result.stderr.split()
    )
