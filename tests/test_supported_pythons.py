"""What pyproject.toml claims about Python versions is what ``make test`` tests.

The Makefile's ``SUPPORTED_PYTHONS`` is the list ``make test`` runs the suite on; the ``Programming Language
:: Python :: X.Y`` classifiers must name exactly those, ``requires-python`` must start at the oldest, and
ruff and mypy must check against the oldest (so that no newer syntax or stdlib API slips in).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _makefile_pythons() -> list[str]:
    found = re.search(r"^SUPPORTED_PYTHONS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile defines no SUPPORTED_PYTHONS"
    return found[1].split()


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_classifiers_name_exactly_the_pythons_make_test_runs() -> None:
    classifiers = _pyproject()["project"]["classifiers"]
    pattern = re.compile(r"Programming Language :: Python :: (3\.\d+)")
    named = [m[1] for c in classifiers if (m := pattern.fullmatch(c))]
    assert named == _makefile_pythons()
    assert "Programming Language :: Python :: 3 :: Only" in classifiers


def test_requires_python_and_the_checkers_start_at_the_oldest_tested() -> None:
    pyproject = _pyproject()
    oldest = min(_makefile_pythons(), key=_key)
    assert pyproject["project"]["requires-python"] == f">={oldest}"
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")
    assert pyproject["tool"]["mypy"]["python_version"] == oldest


def test_the_pythons_are_consecutive_minor_versions() -> None:
    """No gap: a version between two tested ones would be allowed by requires-python but never run."""
    minors = sorted(_key(v)[1] for v in _makefile_pythons())
    assert minors == list(range(minors[0], minors[-1] + 1))
