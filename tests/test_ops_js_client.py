"""outboxhub.js in Node: ``node --test tests/js`` against a real hub (the ``ws`` package as WebSocket).

The Node dependencies (``ws``, ``typescript`` for the ``.d.ts`` check) are installed into
``tests/js/node_modules`` with npm when missing. Without node or npm the test is skipped, except under
``CI=true``, where it fails naming what is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from outboxhub.app import Hub

JS_DIR = Path(__file__).parent / "js"
CLIENT = Path(__file__).parents[1] / "src" / "outboxhub" / "ops" / "static" / "outboxhub.js"
_NODE_DEPS = ("ws", "typescript")
_CI = os.environ.get("CI") == "true"


def _missing(what: str) -> None:
    if _CI:
        pytest.fail(f"{what} (CI=true, so this is a failure, not a skip)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with tests/js/node_modules installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _missing("node and npm are needed to test outboxhub.js in Node: install Node.js >= 20")
    assert node is not None and npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        _missing(f"Node.js >= 20 is needed for node --test and ES module detection; found {version}")
    if not all((JS_DIR / "node_modules" / dep / "package.json").exists() for dep in _NODE_DEPS):
        cmd = [npm, "ci" if (JS_DIR / "package-lock.json").exists() else "install", "--no-audit", "--no-fund"]
        done = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} in {JS_DIR} failed:\n{done.stdout}\n{done.stderr}")
    return node


@pytest.mark.node
async def test_outboxhub_js_passes_its_node_tests(node: str, hub: Hub, token: object) -> None:
    make = token  # the conftest's token factory
    assert callable(make)
    env = {
        **os.environ,
        "OUTBOXHUB_WS_URL": hub.ws_url,
        "OUTBOXHUB_TOKEN": make(scopes=["publish:**", "subscribe:**"]),
        "OUTBOXHUB_LIMITED_TOKEN": make(scopes=["publish:js.allowed.**", "subscribe:**"]),
        "NODE_OPTIONS": "",
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        "--test",
        "--test-reporter=spec",
        "outboxhub.test.mjs",
        cwd=JS_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("node --test did not finish within 120 s")
    report = out.decode(errors="replace")
    assert proc.returncode == 0, f"node --test failed:\n{report}"
    counts = dict(re.findall(r"^(?:\S+ )?(pass|fail) (\d+)$", report, re.MULTILINE))
    assert counts == {"pass": "10", "fail": "0"}, f"expected 10 passing Node tests:\n{report}"


def test_the_hub_serves_the_client_it_tests() -> None:
    """The file the Node test imports is the one the hub serves at /outboxhub.js."""
    from outboxhub.ops.static import STATIC_DIR, STATIC_FILES

    assert STATIC_DIR / STATIC_FILES["/outboxhub.js"][0] == CLIENT
    assert (STATIC_DIR / STATIC_FILES["/outboxhub.d.ts"][0]).exists()
