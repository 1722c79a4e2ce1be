"""``python -m outboxhub.bench.idlefloor`` runs and reports every bare server (no numbers are asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux and glibc")


def test_idlefloor_reports_every_server(capsys: pytest.CaptureFixture[str]) -> None:
    from outboxhub.bench.idlefloor import main

    main(["--connections", "5", "--rounds", "1"])
    out = capsys.readouterr().out
    for server in ("aiohttp", "aiohttp-asyncio", "picows-2k"):
        row = [line.split() for line in out.splitlines() if line.split()[:1] == [server]]
        assert len(row) == 1 and len(row[0]) == 6, out
