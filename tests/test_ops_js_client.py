"""The npm package ``clients/js`` (``@outboxhub/client``): its Node tests against a real ``outboxhub serve``.

``make test`` reaches the Node tests through here: a hub is started as a subprocess on free ports with a
known JWT secret, and ``node --test`` runs ``clients/js/test`` with the URLs and tokens in the environment
(clients/js/test/helpers.mjs lists them). The restart test SIGKILLs a second hub it starts itself; the
SQLite file of that hub is then checked here. Also: the committed build (``clients/js/dist``, served by the
hub and shipped in the wheel) is what ``npm run build`` makes from the sources, byte for byte, and the
``npm pack`` tarball installs into a scratch project that talks to a hub.

The Node dev dependencies are installed with ``npm ci`` when missing. Without node or npm the tests are
skipped, except under ``CI=true``, where they fail naming what is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from outboxhub.auth.jwt import mint_token

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

ROOT = Path(__file__).parents[1]
PKG = ROOT / "clients" / "js"
_CI = os.environ.get("CI") == "true"
_SECRET = "outboxhub-js-test-secret-" + "fedcba9876543210" * 3
_LEGACY_ENV = ("MONGO_URL", "WS_PORT", "OPS_PORT", "JWT_SECRET", "JWT_JWKS_URL", "JWT_AUD", "JWT_ISS")


def _missing(what: str) -> None:
    if _CI:
        pytest.fail(f"{what} (CI=true, so this is a failure, not a skip)")
    pytest.skip(what)


@dataclass(frozen=True)
class NodeTools:
    node: str
    npm: str


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    """node and npm, with clients/js/node_modules installed from package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _missing("node and npm are needed to test the JS client (clients/js): install Node.js >= 20")
    assert node is not None and npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        _missing(f"Node.js >= 20 is needed for node --test and the JS client; found {version}")
    deps = ("ws", "typescript", "@types/node")
    if not all((PKG / "node_modules" / dep / "package.json").exists() for dep in deps):
        cmd = [npm, "ci", "--no-audit", "--no-fund"]
        done = subprocess.run(cmd, cwd=PKG, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} in {PKG} failed:\n{done.stdout}\n{done.stderr}")
    return NodeTools(node, npm)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServeHub:
    argv: list[str]
    ws_url: str
    ops_url: str
    db: Path


def _serve(tmp: Path, name: str) -> ServeHub:
    ws, ops = _free_port(), _free_port()
    db = tmp / f"{name}.db"
    argv = [
        sys.executable,
        "-m",
        "outboxhub.cli",
        "serve",
        f"--store=sqlite:///{db}",
        f"--ws-port={ws}",
        f"--ops-port={ops}",
        "--jwt-leeway-s=0",
        "--log-level=warning",
    ]
    return ServeHub(argv, f"ws://127.0.0.1:{ws}/", f"http://127.0.0.1:{ops}/", db)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_") and k not in _LEGACY_ENV}
    env["OUTBOXHUB_JWT_SECRET"] = _SECRET
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _wait_healthy(ops_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"outboxhub serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(ops_url + "healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"outboxhub serve did not answer {ops_url}healthz within 60 s")
        time.sleep(0.05)


@pytest.fixture
def serve_hub(tmp_path: Path) -> Iterator[ServeHub]:
    """A running ``outboxhub serve`` subprocess (SQLite in tmp_path, HS256 secret ``_SECRET``)."""
    hub = _serve(tmp_path, "main")
    proc = subprocess.Popen(hub.argv, env=_child_env(), stdout=subprocess.DEVNULL)
    try:
        _wait_healthy(hub.ops_url, proc)
        yield hub
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _token(*scopes: str) -> str:
    return mint_token(_SECRET, sub="js-tests", scopes=scopes)


@pytest.mark.node
def test_node_tests_pass_against_a_real_hub(tools: NodeTools, serve_hub: ServeHub, tmp_path: Path) -> None:
    kill = _serve(tmp_path, "kill")
    kill_topic, kill_report = "js.kill.pipelined", tmp_path / "kill.json"
    env = {
        **_child_env(),
        "OUTBOXHUB_WS_URL": serve_hub.ws_url,
        "OUTBOXHUB_OPS_URL": serve_hub.ops_url,
        "OUTBOXHUB_TOKEN": _token("publish:**", "subscribe:**"),
        "OUTBOXHUB_LIMITED_TOKEN": _token("publish:js.allowed.**", "subscribe:**"),
        "OUTBOXHUB_SERVE_ARGV": json.dumps(kill.argv),
        "OUTBOXHUB_SERVE_WS_URL": kill.ws_url,
        "OUTBOXHUB_SERVE_OPS_URL": kill.ops_url,
        "OUTBOXHUB_KILL_TOPIC": kill_topic,
        "OUTBOXHUB_KILL_REPORT": str(kill_report),
        "NODE_OPTIONS": "",
    }
    tests = sorted(str(p.relative_to(PKG)) for p in (PKG / "test").glob("*.test.mjs"))
    cmd = [tools.node, "--test", "--test-concurrency=1", "--test-reporter=spec", *tests]
    try:
        done = subprocess.run(cmd, cwd=PKG, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("node --test did not finish within 300 s")
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"node --test failed:\n{report}"
    counts = dict(re.findall(r"^(?:\S+ )?(pass|fail) (\d+)$", report, re.MULTILINE))
    assert counts.get("fail") == "0" and int(counts.get("pass", "0")) >= 16, report
    # The store of the SIGKILLed hub: every confirmed publish is there, once.
    count = json.loads(kill_report.read_text())["total"]
    assert count >= 1000
    with sqlite3.connect(kill.db) as db:
        rows = db.execute(
            "SELECT count(*), count(DISTINCT e.id), count(DISTINCT e.payload) FROM events e "
            "JOIN topics t ON t.topic_id = e.topic_id WHERE t.topic = ?",
            (kill_topic,),
        ).fetchone()
    assert rows == (count, count, count)


@pytest.mark.node
def test_the_committed_build_is_what_the_sources_build_to(tools: NodeTools, tmp_path: Path) -> None:
    """clients/js/dist (served by the hub, shipped in the wheel) cannot drift from clients/js/src."""
    out = tmp_path / "dist"
    tsc = PKG / "node_modules" / "typescript" / "bin" / "tsc"
    cmd = [tools.node, str(tsc), "-p", str(PKG / "tsconfig.json"), "--outDir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    built, committed = files(out), files(PKG / "dist")
    assert sorted(built) == sorted(committed), "run `npm run build` in clients/js and commit dist/"
    stale = [name for name in built if built[name] != committed[name]]
    assert stale == [], f"clients/js/dist is stale ({stale}): run `npm run build` in clients/js"


def test_the_hub_serves_the_package_build() -> None:
    from outboxhub.ops.static import JS_CLIENT_DIR, STATIC_FILES

    assert JS_CLIENT_DIR.resolve() == (PKG / "dist").resolve()
    served = {path: file.resolve() for path, (file, _) in STATIC_FILES.items()}
    assert served["/outboxhub.js"] == (PKG / "dist" / "outboxhub.js").resolve()
    assert served["/outboxhub.d.ts"] == (PKG / "dist" / "outboxhub.d.ts").resolve()
    # every module the entry imports is served under the path the browser resolves it to
    entry = (PKG / "dist" / "outboxhub.js").read_text()
    for module in set(re.findall(r'from "\./(outboxhub/[a-z]+\.js)"', entry)):
        assert f"/{module}" in served, module


_SCRATCH = """
import { connect, Forbidden } from "@outboxhub/client";
const [url, token] = [process.env.HUB_URL, process.env.HUB_TOKEN];
const hub = await connect(url, { token }); // the global WebSocket (node --experimental-websocket)
const got = [];
await hub.subscribe("scratch.*", "scratch", (e) => void got.push(e.payload), { start: "earliest" });
const { seq } = await hub.publish("scratch.hello", { from: "npm pack" });
while (got.length === 0) await new Promise((r) => setTimeout(r, 10));
console.log(JSON.stringify({ seq, got, forbidden: typeof Forbidden }));
await hub.close();
"""


@pytest.mark.node
def test_npm_pack_installs_into_a_scratch_project_that_talks_to_a_hub(
    tools: NodeTools, serve_hub: ServeHub, tmp_path: Path
) -> None:
    packed = subprocess.run(
        [tools.npm, "pack", "--json", "--pack-destination", str(tmp_path)],
        cwd=PKG,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert packed.returncode == 0, packed.stderr
    (info,) = json.loads(packed.stdout)
    names = {f["path"] for f in info["files"]}
    assert {"package.json", "dist/outboxhub.js", "dist/outboxhub.d.ts", "dist/outboxhub/client.js"} <= names
    assert not any(n.startswith(("src/", "test/", "node_modules/")) for n in names), names
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "package.json").write_text('{"name": "scratch", "private": true, "type": "module"}\n')
    (scratch / "main.mjs").write_text(_SCRATCH)
    install = [tools.npm, "install", "--no-audit", "--no-fund", "--offline", str(tmp_path / info["filename"])]
    done = subprocess.run(install, cwd=scratch, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    env = {**_child_env(), "HUB_URL": serve_hub.ws_url, "HUB_TOKEN": _token("publish:**", "subscribe:**")}
    run = subprocess.run(
        [tools.node, "--experimental-websocket", "--no-warnings", "main.mjs"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["got"] == [{"from": "npm pack"}] and result["seq"] >= 1
    assert result["forbidden"] == "function"
