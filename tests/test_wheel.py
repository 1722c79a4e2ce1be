"""The built wheel on every supported Python, as a user installs it.

``python -m build`` makes an sdist and, from it, a wheel, once per run; then for each supported Python (the
``Programming Language :: Python :: X.Y`` classifiers of pyproject.toml), all at once, a fresh venv made
from that interpreter (found by ``scripts/find-python.sh``: pyenv's build, else ``pythonX.Y`` on PATH) gets
the wheel — not an editable install, with no ``PYTHONPATH`` — and ``outboxhub serve`` from it runs on a
temporary SQLite file and OS-chosen ports. ``/healthz`` must answer 200, and the dashboard page and every
file it references, plus the browser client, must be served. A missing interpreter skips its case, or fails
it under ``CI=true``.

Marked ``wheel``: ``make test`` runs it once, in the full run, rather than again on every Python.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

# solo: `python -m build` makes its release tree in the checkout, so two builds at once collide; one
# process runs the module, after the xdist workers (see the Makefile).
pytestmark = [pytest.mark.wheel, pytest.mark.solo, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
FIND_PYTHON = ROOT / "scripts" / "find-python.sh"
START_TIMEOUT_S = 90.0  # a cold venv on a loaded 2-core machine imports slowly
_WHERE = "import sys, outboxhub; print(sys.version_info[:2], outboxhub.__file__)"
_CLASSIFIER = re.compile(r"Programming Language :: Python :: (3\.\d+)$")


def supported_pythons() -> list[str]:
    """The X.Y versions pyproject.toml's classifiers name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [m[1] for c in project["classifiers"] if (m := _CLASSIFIER.match(c))]


def _clean_env() -> dict[str, str]:
    """This process's environment without what would let the source tree or our settings leak in."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith("OUTBOXHUB_") and not k.startswith("JWT_")
    }


def _run(cmd: list[str | Path], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``python -m build`` makes (via the sdist) of this checkout."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out)
    wheels = sorted(out.glob("outboxhub-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}: {sorted(p.name for p in out.iterdir())}"
    return wheels[0]


@dataclass(frozen=True)
class Installed:
    """A venv with the wheel (``bin``), or why there is none (``missing``: the interpreter is not here)."""

    bin: Path | None = None
    missing: str | None = None


def _install(version: str, wheel: Path, root: Path) -> Installed:
    found = subprocess.run([str(FIND_PYTHON), version], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return Installed(missing=found.stderr.strip() or f"Python {version} not found")
    venv = root / f"venv-{version}"
    _run([found.stdout.strip(), "-m", "venv", venv], cwd=root)
    # --no-compile: the hub compiles what it imports; compiling every dependency costs more CPU than the rest
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", wheel], cwd=root)
    where = _run([venv / "bin" / "python", "-c", _WHERE], cwd=root)
    major, minor = version.split(".")
    assert where.startswith(f"({major}, {minor}) {venv}"), f"not the wheel in {venv} on {version}: {where}"
    return Installed(bin=venv / "bin")


@pytest.fixture(scope="module")
def venvs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Future[Installed]]:
    """Per supported Python, a fresh venv with the wheel installed, made concurrently (pip mostly waits)."""
    root = tmp_path_factory.mktemp("venvs")
    with ThreadPoolExecutor() as pool:
        futures = {version: pool.submit(_install, version, wheel, root) for version in supported_pythons()}
        wait(futures.values())
    return futures


@pytest.fixture(params=supported_pythons())
def installed(request: pytest.FixtureRequest, venvs: dict[str, Future[Installed]]) -> Path:
    """The bin directory of the venv on the Python ``request.param``."""
    result = venvs[request.param].result()  # re-raises that install's failure in this case only
    if result.missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{result.missing} (CI=true: every supported Python must be tested)", pytrace=False)
        pytest.skip(result.missing)
    assert result.bin is not None
    return result.bin


async def _read_until_dashboard(proc: asyncio.subprocess.Process) -> str:
    """The ops URL from ``serve``'s ``dashboard: URL`` line (the last of its start-up lines)."""
    assert proc.stdout is not None
    seen: list[str] = []
    while line := (await proc.stdout.readline()).decode():
        seen.append(line)
        if line.startswith("dashboard: "):
            return line.removeprefix("dashboard: ").strip().rstrip("/")
    raise AssertionError(f"outboxhub serve exited ({await proc.wait()}) before serving:\n{''.join(seen)}")


async def test_the_wheel_serves_healthz_and_the_dashboard(installed: Path, tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    proc = await asyncio.create_subprocess_exec(
        str(installed / "outboxhub"),
        "serve",
        *("--store", f"sqlite:///{db}", "--host", "127.0.0.1", "--ws-port", "0", "--ops-port", "0"),
        cwd=tmp_path,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ops = await asyncio.wait_for(_read_until_dashboard(proc), START_TIMEOUT_S)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{ops}/healthz") as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"{ops}/") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/html"
                page = await resp.text()
            referenced = re.findall(r'(?:src|href)="(/[^"]*)"', page)
            assert "/dashboard.js" in referenced, page  # the page is the dashboard, not an error page
            for path in [*referenced, "/outboxhub.js", "/outboxhub.d.ts"]:
                async with http.get(f"{ops}{path}") as resp:
                    body = await resp.read()
                    assert resp.status == 200 and body, f"GET {path}: {resp.status}"
        assert db.exists()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
