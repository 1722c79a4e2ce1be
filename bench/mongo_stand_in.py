"""Start the ``nx-27017`` MongoDB stand-in for a bench script, as ``tests/mongo_server.py`` does for tests.

In memory, on a free port of 127.0.0.1, with its own temporary directory for pid and log files; told to
die with the bench process. (The tests' module is not imported: it needs pytest and a test session.)
The stand-in speaks MongoDB's wire protocol over SQLite: its numbers are not a real MongoDB's.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["stand_in"]

START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _executable() -> str:
    beside = Path(sys.executable).parent / "nx-27017"
    found = str(beside) if beside.exists() else shutil.which("nx-27017")
    if found is None:
        raise RuntimeError("the nx-27017 MongoDB stand-in is not installed (pip install nx-27017)")
    return found


@contextlib.contextmanager
def stand_in() -> Iterator[str]:
    """Run the stand-in for the ``with`` block; yield its base URL (``mongodb://127.0.0.1:PORT/``)."""
    workdir = Path(tempfile.mkdtemp(prefix="outboxhub-bench-nx27017-"))
    port = _free_port()
    args = [_executable(), "--db", "memory", "--host", "127.0.0.1", "-p", str(port)]
    args += ["--pid-file", str(workdir / "nx-27017.pid"), "--log-file", str(workdir / "nx-27017.log")]
    with (workdir / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                output = (workdir / "stdout.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"nx-27017 exited with code {process.returncode}: {output}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nx-27017 did not listen on 127.0.0.1:{port}") from None
                time.sleep(0.05)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
